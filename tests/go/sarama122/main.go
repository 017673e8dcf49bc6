// sarama122 drives github.com/Shopify/sarama v1.22.1 (the version Debian 12 packages and
// Burrow 1.2.1 is built with) against a broker for the pytest suite. Unless -version is given
// it keeps sarama's default config, which assumes Kafka 0.8.2: Metadata v0, Produce v0
// (magic 0 messages), Fetch v0, ListOffsets v0, FindCoordinator v0, OffsetCommit v1,
// OffsetFetch v1.
//
//	sarama122 produce -topic T -n N -tag TAG     SyncProducer (acks=1, the default)
//	sarama122 consume -topic T -n N              PartitionConsumer on every partition, oldest first
//	sarama122 offsets -topic T -group G -at P:O,...
//	                                             OffsetManager marks, commits on Close, reads back
//	sarama122 group -topic T -group G -n N       ConsumerGroup (needs -version >= 0.10.2.0)
//
// Each prints one JSON object; any failed step exits 1 with "FAIL: ..." on stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

var (
	bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	topic     = flag.String("topic", "", "topic")
	group     = flag.String("group", "", "consumer group")
	at        = flag.String("at", "", "offsets to commit, PARTITION:OFFSET,...")
	n         = flag.Int("n", 100, "records")
	tag       = flag.String("tag", "sarama122", "value prefix")
	clientID  = flag.String("client-id", "old-sarama", "client id")
	version   = flag.String("version", "", "Kafka version sarama assumes (default: sarama's own, 0.8.2.0)")
	timeout   = flag.Duration("timeout", 30*time.Second, "deadline for the whole command")
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

func sorted(rs []record) []record {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Partition != rs[j].Partition {
			return rs[i].Partition < rs[j].Partition
		}
		return rs[i].Offset < rs[j].Offset
	})
	return rs
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: sarama122 produce|consume|offsets|group [flags]")
	}
	cmd := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	time.AfterFunc(*timeout, func() { fail("%s did not finish within %v", cmd, *timeout) })
	switch cmd {
	case "produce":
		produce()
	case "consume":
		consume()
	case "offsets":
		offsets()
	case "group":
		consumeGroup()
	default:
		fail("unknown command %q", cmd)
	}
}

// config is sarama's default config, with only a client id (which no request's version or
// shape depends on) and, with -version, the Kafka version to assume.
func config() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = *clientID
	if *version != "" {
		v, err := sarama.ParseKafkaVersion(*version)
		failOn(err, "parsing -version")
		cfg.Version = v
	}
	return cfg
}

func produce() {
	cfg := config()
	cfg.Producer.Return.Successes = true // a SyncProducer requires it
	p, err := sarama.NewSyncProducer([]string{*bootstrap}, cfg)
	failOn(err, "creating the producer")
	msgs := make([]*sarama.ProducerMessage, *n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: *topic, Key: sarama.StringEncoder(key(i)),
			Value: sarama.StringEncoder(value(i))}
	}
	if err := p.SendMessages(msgs); err != nil {
		if errs, ok := err.(sarama.ProducerErrors); ok && len(errs) > 0 {
			fail("producing: %d of %d messages failed, first: %v", len(errs), len(msgs), errs[0].Err)
		}
		fail("producing: %v", err)
	}
	failOn(p.Close(), "closing the producer")
	outs := make([]record, len(msgs))
	for i, m := range msgs {
		outs[i] = record{m.Partition, m.Offset, key(i), value(i)}
	}
	emit(map[string]interface{}{"records": outs})
}

// consume reads every partition from the oldest offset until n records have arrived.
func consume() {
	cfg := config()
	cfg.Consumer.Return.Errors = true
	c, err := sarama.NewConsumer([]string{*bootstrap}, cfg)
	failOn(err, "creating the consumer")
	parts, err := c.Partitions(*topic)
	failOn(err, "listing partitions")
	msgs := make(chan *sarama.ConsumerMessage)
	errs := make(chan *sarama.ConsumerError)
	var pcs []sarama.PartitionConsumer
	for _, p := range parts {
		pc, err := c.ConsumePartition(*topic, p, sarama.OffsetOldest)
		failOn(err, fmt.Sprintf("ConsumePartition(%s, %d, oldest)", *topic, p))
		pcs = append(pcs, pc)
		go func(pc sarama.PartitionConsumer) {
			for m := range pc.Messages() {
				msgs <- m
			}
		}(pc)
		go func(pc sarama.PartitionConsumer) {
			for e := range pc.Errors() {
				errs <- e
			}
		}(pc)
	}
	var got []record
	seen := map[[2]int64]bool{}
	for len(got) < *n {
		select {
		case m := <-msgs:
			k := [2]int64{int64(m.Partition), m.Offset}
			if seen[k] {
				fail("partition %d offset %d delivered twice", m.Partition, m.Offset)
			}
			seen[k] = true
			got = append(got, record{m.Partition, m.Offset, string(m.Key), string(m.Value)})
		case e := <-errs:
			fail("consuming %s[%d]: %v", e.Topic, e.Partition, e.Err)
		}
	}
	for _, pc := range pcs {
		pc.AsyncClose()
	}
	emit(map[string]interface{}{"records": sorted(got), "partitions": len(parts)})
}

// offsets commits the offsets given by -at through an OffsetManager (which commits when it is
// closed), then reads them back through a new one.
func offsets() {
	want := map[int32]int64{}
	for _, item := range strings.Split(*at, ",") {
		parts := strings.SplitN(item, ":", 2)
		if len(parts) != 2 {
			fail("bad -at item %q", item)
		}
		p, err1 := strconv.Atoi(parts[0])
		o, err2 := strconv.ParseInt(parts[1], 10, 64)
		if err1 != nil || err2 != nil {
			fail("bad -at item %q", item)
		}
		want[int32(p)] = o
	}
	cfg := config()
	cfg.Consumer.Return.Errors = true
	client, err := sarama.NewClient([]string{*bootstrap}, cfg)
	failOn(err, "creating the client")
	defer client.Close()

	om, err := sarama.NewOffsetManagerFromClient(*group, client)
	failOn(err, "creating the offset manager")
	var mu sync.Mutex
	var commitErrs []string
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for p, o := range want {
		pom, err := om.ManagePartition(*topic, p)
		failOn(err, fmt.Sprintf("ManagePartition(%d)", p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range pom.Errors() {
				mu.Lock()
				if !seen[e.Error()] {
					seen[e.Error()] = true
					commitErrs = append(commitErrs, e.Error())
				}
				mu.Unlock()
			}
		}()
		pom.MarkOffset(o, "")
		pom.AsyncClose()
	}
	// Closing the manager flushes the marked offsets (retrying Consumer.Offsets.Retry.Max
	// times), then releases the partitions, which closes their error channels.
	failOn(om.Close(), "closing the offset manager")
	wg.Wait()
	if len(commitErrs) > 0 {
		fail("committing: %s", strings.Join(commitErrs, "; "))
	}

	check, err := sarama.NewOffsetManagerFromClient(*group, client)
	failOn(err, "creating the second offset manager")
	got := map[string]int64{}
	for p := range want {
		pom, err := check.ManagePartition(*topic, p)
		failOn(err, fmt.Sprintf("ManagePartition(%d) again", p))
		next, _ := pom.NextOffset()
		got[fmt.Sprint(p)] = next
		pom.AsyncClose()
	}
	failOn(check.Close(), "closing the second offset manager")
	for p, o := range want {
		if got[fmt.Sprint(p)] != o {
			fail("partition %d: committed %d, read back %d", p, o, got[fmt.Sprint(p)])
		}
	}
	emit(map[string]interface{}{"committed": got})
}

type handler struct {
	mu     sync.Mutex
	got    []record
	want   int
	cancel context.CancelFunc
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.got = append(h.got, record{m.Partition, m.Offset, string(m.Key), string(m.Value)})
		s.MarkMessage(m, "")
		if len(h.got) >= h.want {
			h.cancel()
		}
		h.mu.Unlock()
	}
	return nil
}

// consumeGroup reads n records as a group member; the session commits what was marked when
// it ends, and a fresh offset manager reads the commits back.
func consumeGroup() {
	cfg := config()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Return.Errors = true
	cg, err := sarama.NewConsumerGroup([]string{*bootstrap}, *group, cfg)
	failOn(err, "creating the consumer group")
	ctx, cancel := context.WithCancel(context.Background())
	h := &handler{want: *n, cancel: cancel}
	go func() {
		for err := range cg.Errors() {
			fail("consumer group error: %v", err)
		}
	}()
	for ctx.Err() == nil {
		failOn(cg.Consume(ctx, []string{*topic}, h), "consuming")
	}
	failOn(cg.Close(), "closing the consumer group")
	if len(h.got) != *n {
		fail("consumed %d records, expected %d", len(h.got), *n)
	}
	ends := map[int32]int64{}
	for _, r := range h.got {
		if r.Offset+1 > ends[r.Partition] {
			ends[r.Partition] = r.Offset + 1
		}
	}
	client, err := sarama.NewClient([]string{*bootstrap}, cfg)
	failOn(err, "creating the client")
	defer client.Close()
	om, err := sarama.NewOffsetManagerFromClient(*group, client)
	failOn(err, "creating the offset manager")
	committed := map[string]int64{}
	for p, end := range ends {
		pom, err := om.ManagePartition(*topic, p)
		failOn(err, fmt.Sprintf("ManagePartition(%d)", p))
		next, _ := pom.NextOffset()
		if next != end {
			fail("partition %d: consumed up to %d, committed offset read back is %d", p, end, next)
		}
		committed[fmt.Sprint(p)] = next
		pom.AsyncClose()
	}
	failOn(om.Close(), "closing the offset manager")
	emit(map[string]interface{}{"records": sorted(h.got), "committed": committed})
}
