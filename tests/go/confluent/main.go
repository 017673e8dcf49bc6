// confluentgo drives github.com/confluentinc/confluent-kafka-go/v2 (librdkafka, linked in
// statically) against a broker for the pytest suite. It is a module of its own so that the
// other Go programs build without it.
//
//	confluentgo produce -topic T -n N -tag TAG   acks=all, idempotent, delivery reports
//	confluentgo consume -topic T -group G -n N   subscribe, read N records, commit, close
//
// Each prints one JSON object; any failed step exits 1 with "FAIL: ..." on stderr.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

var (
	bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	topic     = flag.String("topic", "", "topic")
	group     = flag.String("group", "", "consumer group")
	n         = flag.Int("n", 100, "records")
	tag       = flag.String("tag", "confluentgo", "value prefix")
	clientID  = flag.String("client-id", "go-confluent", "client id")
	timeout   = flag.Duration("timeout", 60*time.Second, "deadline for the whole command")
)

type record struct {
	Partition int32  `json:"p"`
	Offset    int64  `json:"o"`
	Key       string `json:"k"`
	Value     string `json:"v"`
}

func key(i int) string   { return fmt.Sprintf("k-%d", i%17) }
func value(i int) string { return fmt.Sprintf("%s-%06d", *tag, i) }

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func failOn(err error, step string) {
	if err != nil {
		fail("%s: %v", step, err)
	}
}

func emit(v any) {
	out, err := json.Marshal(v)
	failOn(err, "encoding the result")
	fmt.Println(string(out))
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: confluentgo produce|consume [flags]")
	}
	cmd := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	time.AfterFunc(*timeout+5*time.Second, func() { fail("%s still running after %v", cmd, *timeout) })
	switch cmd {
	case "produce":
		produce()
	case "consume":
		consume()
	default:
		fail("unknown command %q", cmd)
	}
}

func produce() {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":  *bootstrap,
		"client.id":          *clientID,
		"acks":               "all",
		"enable.idempotence": true,
		"message.timeout.ms": int(timeout.Milliseconds()),
	})
	failOn(err, "creating the producer")
	defer p.Close()
	reports := make(chan kafka.Event, *n)
	for i := 0; i < *n; i++ {
		err := p.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: topic, Partition: kafka.PartitionAny},
			Key:            []byte(key(i)), Value: []byte(value(i)),
		}, reports)
		failOn(err, "producing")
	}
	outs := make([]record, 0, *n)
	for len(outs) < *n {
		m, ok := (<-reports).(*kafka.Message)
		if !ok {
			fail("unexpected delivery event")
		}
		failOn(m.TopicPartition.Error, "delivery of "+string(m.Value))
		outs = append(outs, record{m.TopicPartition.Partition, int64(m.TopicPartition.Offset), string(m.Key), string(m.Value)})
	}
	if left := p.Flush(int(timeout.Milliseconds())); left != 0 {
		fail("%d messages still queued after flush", left)
	}
	emit(map[string]any{"records": outs})
}

func consume() {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":  *bootstrap,
		"client.id":          *clientID,
		"group.id":           *group,
		"auto.offset.reset":  "earliest",
		"enable.auto.commit": false,
	})
	failOn(err, "creating the consumer")
	failOn(c.SubscribeTopics([]string{*topic}, nil), "subscribing")
	deadline := time.Now().Add(*timeout)
	var got []record
	seen := map[[2]int64]bool{}
	for len(got) < *n {
		left := time.Until(deadline)
		if left <= 0 {
			fail("consumed %d of %d records before the deadline", len(got), *n)
		}
		m, err := c.ReadMessage(left)
		if err != nil {
			if e, ok := err.(kafka.Error); ok && e.IsTimeout() {
				continue
			}
			fail("reading: %v", err)
		}
		k := [2]int64{int64(m.TopicPartition.Partition), int64(m.TopicPartition.Offset)}
		if seen[k] {
			fail("partition %d offset %d delivered twice", k[0], k[1])
		}
		seen[k] = true
		got = append(got, record{m.TopicPartition.Partition, int64(m.TopicPartition.Offset), string(m.Key), string(m.Value)})
	}
	committed, err := c.Commit()
	failOn(err, "committing")
	offsets := map[string]int64{}
	for _, tp := range committed {
		failOn(tp.Error, "committing a partition")
		offsets[fmt.Sprint(tp.Partition)] = int64(tp.Offset)
	}
	failOn(c.Close(), "closing the consumer")
	sort.Slice(got, func(i, j int) bool {
		if got[i].Partition != got[j].Partition {
			return got[i].Partition < got[j].Partition
		}
		return got[i].Offset < got[j].Offset
	})
	emit(map[string]any{"records": got, "committed": offsets})
}
