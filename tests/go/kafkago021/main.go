// kafkago021 drives github.com/segmentio/kafka-go v0.2.1 (the version Debian 12 packages)
// against a broker for the pytest suite. It sends fixed request versions: CreateTopics v0,
// Metadata v1, Produce v2 and Fetch v2 (magic 1 message sets), ListOffsets v1, and for groups
// FindCoordinator v0, JoinGroup v1, SyncGroup v0, Heartbeat v0, OffsetCommit v2,
// OffsetFetch v1, LeaveGroup v0.
//
//	kafkago021 create -topic T -partitions P   Conn.CreateTopics, then Conn.ReadPartitions
//	kafkago021 produce -topic T -n N -tag TAG  Writer, hash balancer, acks=all
//	kafkago021 read -topic T -partition P -n N Reader of one partition from the first offset
//	kafkago021 consume -topic T -group G -n N  Reader in a group, explicit commits
//
// Each prints one JSON object; any failed step exits 1 with "FAIL: ..." on stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

var (
	bootstrap  = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	topic      = flag.String("topic", "", "topic")
	group      = flag.String("group", "", "consumer group")
	partitions = flag.Int("partitions", 1, "partitions (create)")
	partition  = flag.Int("partition", 0, "partition (read)")
	n          = flag.Int("n", 100, "records")
	tag        = flag.String("tag", "kafkago021", "value prefix")
	clientID   = flag.String("client-id", "old-kafka-go", "client id")
	timeout    = flag.Duration("timeout", 30*time.Second, "deadline for the whole command")
)

type record struct {
	Partition int32  `json:"p"`
	Offset    int64  `json:"o"`
	Key       string `json:"k"`
	Value     string `json:"v"`
}

func key(i int) string   { return fmt.Sprintf("k-%d", i%17) }
func value(i int) string { return fmt.Sprintf("%s-%06d", *tag, i) }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func failOn(err error, step string) {
	if err != nil {
		fail("%s: %v", step, err)
	}
}

func emit(v interface{}) {
	out, err := json.Marshal(v)
	failOn(err, "encoding the result")
	fmt.Println(string(out))
}

// errorLog prints the client's own error log to stderr, so a failure says what went wrong.
var errorLog = log.New(os.Stderr, "kafka-go: ", 0)

func dialer() *kafka.Dialer {
	return &kafka.Dialer{ClientID: *clientID, Timeout: 10 * time.Second}
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: kafkago021 create|produce|read|consume [flags]")
	}
	cmd := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	time.AfterFunc(*timeout+5*time.Second, func() { fail("%s still running after %v", cmd, *timeout) })
	switch cmd {
	case "create":
		create(ctx)
	case "produce":
		produce(ctx)
	case "read":
		read(ctx)
	case "consume":
		consume(ctx)
	default:
		fail("unknown command %q", cmd)
	}
}

func create(ctx context.Context) {
	conn, err := dialer().DialContext(ctx, "tcp", *bootstrap)
	failOn(err, "dialing")
	defer conn.Close()
	failOn(conn.CreateTopics(kafka.TopicConfig{Topic: *topic, NumPartitions: *partitions, ReplicationFactor: 1}),
		"Conn.CreateTopics")
	parts, err := conn.ReadPartitions(*topic)
	failOn(err, "Conn.ReadPartitions")
	emit(map[string]interface{}{"partitions": len(parts)})
}

func produce(ctx context.Context) {
	w := kafka.NewWriter(kafka.WriterConfig{
		Brokers:      []string{*bootstrap},
		Topic:        *topic,
		Dialer:       dialer(),
		Balancer:     &kafka.Hash{},
		RequiredAcks: -1,
		BatchTimeout: 10 * time.Millisecond,
		MaxAttempts:  3,
		ErrorLogger:  errorLog,
	})
	msgs := make([]kafka.Message, *n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(key(i)), Value: []byte(value(i))}
	}
	failOn(w.WriteMessages(ctx, msgs...), "Writer.WriteMessages")
	failOn(w.Close(), "closing the writer")
	emit(map[string]interface{}{"written": len(msgs)})
}

func collect(ctx context.Context, r *kafka.Reader, commit bool) []record {
	var got []record
	seen := map[[2]int64]bool{}
	for len(got) < *n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			fail("fetched %d of %d records: %v", len(got), *n, err)
		}
		k := [2]int64{int64(m.Partition), m.Offset}
		if seen[k] {
			fail("partition %d offset %d delivered twice", m.Partition, m.Offset)
		}
		seen[k] = true
		got = append(got, record{int32(m.Partition), m.Offset, string(m.Key), string(m.Value)})
		if commit {
			failOn(r.CommitMessages(ctx, m), "Reader.CommitMessages")
		}
	}
	sort.Slice(got, func(i, j int) bool {
		if got[i].Partition != got[j].Partition {
			return got[i].Partition < got[j].Partition
		}
		return got[i].Offset < got[j].Offset
	})
	return got
}

func read(ctx context.Context) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     []string{*bootstrap},
		Topic:       *topic,
		Partition:   *partition,
		Dialer:      dialer(),
		MinBytes:    1,
		MaxBytes:    1 << 20,
		MaxWait:     500 * time.Millisecond,
		ErrorLogger: errorLog,
	})
	failOn(r.SetOffset(kafka.FirstOffset), "Reader.SetOffset(FirstOffset)")
	got := collect(ctx, r, false)
	failOn(r.Close(), "closing the reader")
	emit(map[string]interface{}{"records": got})
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
		ErrorLogger: errorLog,
	})
	got := collect(ctx, r, true)
	failOn(r.Close(), "closing the reader")
	emit(map[string]interface{}{"records": got})
}
