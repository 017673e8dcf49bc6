// kafkago drives github.com/segmentio/kafka-go (0.4.x) against a broker for the pytest suite.
//
//	kafkago create -topic T -topic2 U         Conn.CreateTopics (T, 3 partitions) and
//	                                          Client.CreateTopics (U, 2 partitions), then
//	                                          Conn.ReadPartitions and Client.Metadata of both
//	kafkago produce -topic T -n N -tag TAG    Writer, acks=all, hash balancer
//	kafkago consume -topic T -group G -n N    Reader in a group, explicit commits
//
// Each prints one JSON object; any failed step exits 1 with "FAIL: ..." on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"sluice.test/go/current/internal/check"
)

var (
	bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	topic     = flag.String("topic", "", "topic")
	topic2    = flag.String("topic2", "", "second topic (create)")
	group     = flag.String("group", "", "consumer group")
	n         = flag.Int("n", 100, "records")
	tag       = flag.String("tag", "kafkago", "value prefix")
	clientID  = flag.String("client-id", "go-kafka-go", "client id")
	timeout   = flag.Duration("timeout", 60*time.Second, "deadline for the whole command")
)

func main() {
	if len(os.Args) < 2 {
		check.Fail("usage: kafkago create|produce|consume [flags]")
	}
	cmd := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	time.AfterFunc(*timeout+5*time.Second, func() { check.Fail("%s still running after %v", cmd, *timeout) })
	switch cmd {
	case "create":
		create(ctx)
	case "produce":
		produce(ctx)
	case "consume":
		consume(ctx)
	default:
		check.Fail("unknown command %q", cmd)
	}
}

func dialer() *kafka.Dialer {
	return &kafka.Dialer{ClientID: *clientID, Timeout: 10 * time.Second}
}

// logger prints the client's own error log to stderr, so a failure says what went wrong.
var logger = kafka.LoggerFunc(func(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kafka-go: "+format+"\n", args...)
})

func create(ctx context.Context) {
	conn, err := dialer().DialContext(ctx, "tcp", *bootstrap)
	check.FailOn(err, "dialing")
	defer conn.Close()
	controller, err := conn.Controller()
	check.FailOn(err, "finding the controller")
	cc, err := dialer().DialContext(ctx, "tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	check.FailOn(err, "dialing the controller")
	defer cc.Close()
	check.FailOn(cc.CreateTopics(kafka.TopicConfig{Topic: *topic, NumPartitions: 3, ReplicationFactor: 1}),
		"Conn.CreateTopics")

	cl := &kafka.Client{Addr: kafka.TCP(*bootstrap), Timeout: 10 * time.Second,
		Transport: &kafka.Transport{ClientID: *clientID}}
	created, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: *topic2, NumPartitions: 2, ReplicationFactor: 1}}})
	check.FailOn(err, "Client.CreateTopics")
	for name, e := range created.Errors {
		check.FailOn(e, "Client.CreateTopics of "+name)
	}

	parts, err := conn.ReadPartitions(*topic, *topic2)
	check.FailOn(err, "Conn.ReadPartitions")
	connCounts := map[string]int{}
	for _, p := range parts {
		if p.Leader.Port == 0 {
			check.Fail("partition %s[%d] has no leader", p.Topic, p.ID)
		}
		connCounts[p.Topic]++
	}
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{*topic, *topic2}})
	check.FailOn(err, "Client.Metadata")
	clientCounts := map[string]int{}
	for _, t := range md.Topics {
		check.FailOn(t.Error, "Client.Metadata of "+t.Name)
		clientCounts[t.Name] = len(t.Partitions)
	}
	check.Emit(map[string]any{"conn_partitions": connCounts, "client_partitions": clientCounts,
		"brokers": len(md.Brokers)})
}

func produce(ctx context.Context) {
	w := &kafka.Writer{
		Addr:         kafka.TCP(*bootstrap),
		Topic:        *topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
		Transport:    &kafka.Transport{ClientID: *clientID},
		ErrorLogger:  logger,
	}
	msgs := make([]kafka.Message, *n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(check.Key(i)), Value: []byte(check.Value(*tag, i))}
	}
	check.FailOn(w.WriteMessages(ctx, msgs...), "Writer.WriteMessages")
	check.FailOn(w.Close(), "closing the writer")
	check.Emit(map[string]any{"written": len(msgs)})
}

func consume(ctx context.Context) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     []string{*bootstrap},
		GroupID:     *group,
		Topic:       *topic,
		Dialer:      dialer(),
		MinBytes:    1,
		MaxBytes:    1 << 20,
		MaxWait:     500 * time.Millisecond,
		StartOffset: kafka.FirstOffset,
		ErrorLogger: logger,
	})
	var got []check.Record
	for len(got) < *n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			check.Fail("fetched %d of %d records: %v", len(got), *n, err)
		}
		got = append(got, check.Record{Partition: int32(m.Partition), Offset: m.Offset, Key: string(m.Key), Value: string(m.Value)})
		check.FailOn(r.CommitMessages(ctx, m), "Reader.CommitMessages")
	}
	check.FailOn(r.Close(), "closing the reader")
	check.Distinct(got, "group reader")
	check.Emit(map[string]any{"records": check.Sorted(got)})
}
