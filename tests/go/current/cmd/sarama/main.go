// sarama drives github.com/IBM/sarama against a broker for the pytest suite.
//
//	sarama produce -topic T -n N -tag TAG     SyncProducer, acks=all, idempotent
//	sarama consume -topic T -group G -n N     ConsumerGroup member reads N records, commits
//	sarama admin -topic T -group G            ClusterAdmin: topics, configs, groups, offsets
//
// -version picks the Kafka version sarama assumes ("" keeps sarama's default). Each command
// prints one JSON object; any failed step exits 1 with "FAIL: ..." on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"sluice.test/go/current/internal/check"
)

var (
	bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	topic     = flag.String("topic", "", "topic")
	group     = flag.String("group", "", "consumer group")
	n         = flag.Int("n", 100, "records")
	tag       = flag.String("tag", "sarama", "value prefix")
	clientID  = flag.String("client-id", "go-sarama", "client id")
	version   = flag.String("version", "", "Kafka version sarama assumes (default: sarama's own)")
	timeout   = flag.Duration("timeout", 60*time.Second, "deadline for the whole command")
)

func main() {
	if len(os.Args) < 2 {
		check.Fail("usage: sarama produce|consume|admin [flags]")
	}
	cmd := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// Nothing here may outlive the deadline, whatever sarama is blocked on.
	time.AfterFunc(*timeout+5*time.Second, func() { check.Fail("%s still running after %v", cmd, *timeout) })
	switch cmd {
	case "produce":
		produce()
	case "consume":
		consume(ctx)
	case "admin":
		admin(ctx)
	default:
		check.Fail("unknown command %q", cmd)
	}
}

func config() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = *clientID
	if *version != "" {
		v, err := sarama.ParseKafkaVersion(*version)
		check.FailOn(err, "parsing -version")
		cfg.Version = v
	}
	return cfg
}

func producerConfig() *sarama.Config {
	cfg := config()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	return cfg
}

func produce() {
	p, err := sarama.NewSyncProducer([]string{*bootstrap}, producerConfig())
	check.FailOn(err, "creating the producer")
	msgs := make([]*sarama.ProducerMessage, *n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: *topic, Key: sarama.StringEncoder(check.Key(i)),
			Value: sarama.StringEncoder(check.Value(*tag, i))}
	}
	check.FailOn(p.SendMessages(msgs), "producing")
	check.FailOn(p.Close(), "closing the producer")
	outs := make([]check.Record, len(msgs))
	for i, m := range msgs {
		outs[i] = check.Record{Partition: m.Partition, Offset: m.Offset, Key: check.Key(i), Value: check.Value(*tag, i)}
	}
	check.Emit(map[string]any{"records": outs})
}

// handler collects records until want, marking each, and commits when its session ends.
type handler struct {
	mu     sync.Mutex
	got    []check.Record
	want   int
	cancel context.CancelFunc
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	return nil
}

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.got = append(h.got, check.Record{Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Value: string(m.Value)})
		s.MarkMessage(m, "")
		if len(h.got) >= h.want {
			h.cancel()
		}
		h.mu.Unlock()
	}
	return nil
}

// consumeGroup runs a group member on t until it has read want records and committed them.
func consumeGroup(ctx context.Context, t, g string, want int) []check.Record {
	cfg := config()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Return.Errors = true
	cg, err := sarama.NewConsumerGroup([]string{*bootstrap}, g, cfg)
	check.FailOn(err, "creating the consumer group")
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	h := &handler{want: want, cancel: stop}
	go func() {
		for err := range cg.Errors() {
			check.Fail("consumer group error: %v", err)
		}
	}()
	for runCtx.Err() == nil {
		check.FailOn(cg.Consume(runCtx, []string{t}, h), "consuming")
	}
	if ctx.Err() != nil {
		check.Fail("consumed %d of %d records before the deadline", len(h.got), want)
	}
	check.FailOn(cg.Close(), "closing the consumer group")
	if len(h.got) != want {
		check.Fail("consumed %d records, expected %d", len(h.got), want)
	}
	check.Distinct(h.got, "consumer group")
	return check.Sorted(h.got)
}

func consume(ctx context.Context) {
	got := consumeGroup(ctx, *topic, *group, *n)
	check.Emit(map[string]any{"records": got})
}

func admin(ctx context.Context) {
	adm, err := sarama.NewClusterAdmin([]string{*bootstrap}, config())
	check.FailOn(err, "creating the cluster admin")
	defer adm.Close()
	t := *topic
	res := map[string]any{}

	retention := "3600000"
	check.FailOn(adm.CreateTopic(t, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &retention}}, false), "creating the topic")

	topics := listUntil(adm, t, true)
	detail, ok := topics[t]
	if !ok {
		check.Fail("created topic %s not listed", t)
	}
	res["listed_partitions"] = detail.NumPartitions
	if v := detail.ConfigEntries["retention.ms"]; v != nil {
		res["listed_retention"] = *v
	}

	described, err := adm.DescribeTopics([]string{t})
	check.FailOn(err, "describing the topic")
	if len(described) != 1 {
		check.Fail("described %d topics, expected 1", len(described))
	}
	if described[0].Err != sarama.ErrNoError {
		check.Fail("describing the topic: %v", described[0].Err)
	}
	res["described_partitions"] = len(described[0].Partitions)

	newRetention := "7200000"
	check.FailOn(adm.IncrementalAlterConfig(sarama.TopicResource, t, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &newRetention},
	}, false), "altering the topic's config")
	// Kafka's brokers describe an alteration shortly after answering it (sluice at once).
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: t,
			ConfigNames: []string{"retention.ms"}})
		check.FailOn(err, "describing the topic's config")
		value := ""
		for _, e := range entries {
			if e.Name == "retention.ms" {
				value = e.Value
				res["retention_altered"] = map[string]any{"value": e.Value, "source": e.Source.String()}
			}
		}
		if value == newRetention || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 10 records in partition 0, 5 in partition 1, then a group reads and commits them all.
	pcfg := producerConfig()
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer([]string{*bootstrap}, pcfg)
	check.FailOn(err, "creating the producer")
	var msgs []*sarama.ProducerMessage
	for i := 0; i < 15; i++ {
		part := int32(0)
		if i >= 10 {
			part = 1
		}
		msgs = append(msgs, &sarama.ProducerMessage{Topic: t, Partition: part,
			Key: sarama.StringEncoder(check.Key(i)), Value: sarama.StringEncoder(check.Value(*tag, i))})
	}
	check.FailOn(p.SendMessages(msgs), "producing")
	check.FailOn(p.Close(), "closing the producer")
	consumeGroup(ctx, t, *group, len(msgs))

	groups, err := adm.ListConsumerGroups()
	check.FailOn(err, "listing groups")
	protocolType, ok := groups[*group]
	if !ok {
		check.Fail("group %s not listed", *group)
	}
	res["listed_group_protocol_type"] = protocolType

	descs, err := adm.DescribeConsumerGroups([]string{*group})
	check.FailOn(err, "describing the group")
	if len(descs) != 1 {
		check.Fail("described %d groups, expected 1", len(descs))
	}
	if descs[0].Err != sarama.ErrNoError {
		check.Fail("describing the group: %v", descs[0].Err)
	}
	res["described_group"] = map[string]any{"state": descs[0].State,
		"protocol_type": descs[0].ProtocolType, "members": len(descs[0].Members)}

	offsets, err := adm.ListConsumerGroupOffsets(*group, map[string][]int32{t: {0, 1}})
	check.FailOn(err, "listing the group's offsets")
	if offsets.Err != sarama.ErrNoError {
		check.Fail("listing the group's offsets: %v", offsets.Err)
	}
	groupOffsets := map[string]int64{}
	for part, block := range offsets.Blocks[t] {
		if block.Err != sarama.ErrNoError {
			check.Fail("offset of partition %d: %v", part, block.Err)
		}
		groupOffsets[fmt.Sprint(part)] = block.Offset
	}
	res["group_offsets"] = groupOffsets

	check.FailOn(adm.DeleteRecords(t, map[int32]int64{0: 4}), "deleting records")
	client, err := sarama.NewClient([]string{*bootstrap}, config())
	check.FailOn(err, "creating a client")
	starts := map[string]int64{}
	for _, part := range []int32{0, 1} {
		o, err := client.GetOffset(t, part, sarama.OffsetOldest)
		check.FailOn(err, fmt.Sprintf("listing the start offset of partition %d", part))
		starts[fmt.Sprint(part)] = o
	}
	check.FailOn(client.Close(), "closing the client")
	res["start_offsets"] = starts
	check.FailOn(adm.DeleteTopic(t), "deleting the topic")
	_, still := listUntil(adm, t, false)[t]
	res["listed_after_delete"] = still
	check.Emit(res)
}

// listUntil lists topics until t is listed (or, with present false, is not), for at most
// ten seconds: Kafka's metadata catches up with a create or delete shortly after answering
// it (sluice's at once). It returns the last listing.
func listUntil(adm sarama.ClusterAdmin, t string, present bool) map[string]sarama.TopicDetail {
	deadline := time.Now().Add(10 * time.Second)
	for {
		topics, err := adm.ListTopics()
		check.FailOn(err, "listing topics")
		if _, ok := topics[t]; ok == present || time.Now().After(deadline) {
			return topics
		}
		time.Sleep(100 * time.Millisecond)
	}
}
