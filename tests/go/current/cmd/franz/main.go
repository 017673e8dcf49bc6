// franz drives github.com/twmb/franz-go (kgo, kadm) against a broker for the pytest suite.
//
//	franz produce -topic T -n N -tag TAG      keyed records, acks=all, idempotent (the default)
//	franz consume -topic T -group G -n N      a group member reads N records and commits them
//	franz txn -topic T -txid ID -n N          one committed and one aborted transaction
//	franz eos -in T -out U -group G -txid ID -n N
//	                                          GroupTransactSession: consume, transform, produce
//	franz admin -topic T -group G             kadm: topics, configs, groups, offsets, records
//	franz delete -topic T                     kadm: delete a topic, list topics again
//
// Each prints one JSON object; any failed step exits 1 with "FAIL: ..." on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice.test/go/current/internal/check"
)

var (
	bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "broker address")
	topic     = flag.String("topic", "", "topic")
	group     = flag.String("group", "", "consumer group")
	txid      = flag.String("txid", "", "transactional id")
	in        = flag.String("in", "", "input topic (eos)")
	out       = flag.String("out", "", "output topic (eos)")
	n         = flag.Int("n", 100, "records")
	tag       = flag.String("tag", "franz", "value prefix")
	clientID  = flag.String("client-id", "go-franz", "client id")
	timeout   = flag.Duration("timeout", 60*time.Second, "deadline for the whole command")
)

func main() {
	if len(os.Args) < 2 {
		check.Fail("usage: franz produce|consume|txn|eos|admin|delete [flags]")
	}
	cmd := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch cmd {
	case "produce":
		produce(ctx)
	case "consume":
		consume(ctx)
	case "txn":
		txn(ctx)
	case "eos":
		eos(ctx)
	case "admin":
		admin(ctx)
	case "delete":
		deleteTopic(ctx)
	default:
		check.Fail("unknown command %q", cmd)
	}
}

func client(opts ...kgo.Opt) *kgo.Client {
	base := []kgo.Opt{kgo.SeedBrokers(*bootstrap), kgo.ClientID(*clientID)}
	cl, err := kgo.NewClient(append(base, opts...)...)
	check.FailOn(err, "creating the client")
	return cl
}

func records(prefix string, count int) []*kgo.Record {
	rs := make([]*kgo.Record, count)
	for i := range rs {
		rs[i] = &kgo.Record{Key: []byte(check.Key(i)), Value: []byte(check.Value(prefix, i))}
	}
	return rs
}

func asRecords(rs []*kgo.Record) []check.Record {
	outs := make([]check.Record, len(rs))
	for i, r := range rs {
		outs[i] = check.Record{Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: string(r.Value)}
	}
	return outs
}

// produceSync produces and fails on the first error.
func produceSync(ctx context.Context, cl *kgo.Client, rs []*kgo.Record, step string) {
	check.FailOn(cl.ProduceSync(ctx, rs...).FirstErr(), step)
}

func produce(ctx context.Context) {
	cl := client(kgo.DefaultProduceTopic(*topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	defer cl.Close()
	rs := records(*tag, *n)
	produceSync(ctx, cl, rs, "producing")
	check.Emit(map[string]any{"records": asRecords(rs)})
}

// readGroup polls as a member of the group until it has want records; it fails on more.
func readGroup(ctx context.Context, cl *kgo.Client, want int) []check.Record {
	var got []check.Record
	for len(got) < want {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			check.Fail("consumed %d of %d records before the deadline", len(got), want)
		}
		for _, e := range fetches.Errors() {
			check.Fail("fetch error on %s[%d]: %v", e.Topic, e.Partition, e.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			got = append(got, asRecords([]*kgo.Record{r})...)
		})
	}
	if len(got) != want {
		check.Fail("consumed %d records, expected %d", len(got), want)
	}
	check.Distinct(got, "group consumer")
	return check.Sorted(got)
}

func committedOf(cl *kgo.Client, t string) map[string]int64 {
	outs := map[string]int64{}
	for p, eo := range cl.CommittedOffsets()[t] {
		outs[fmt.Sprint(p)] = eo.Offset
	}
	return outs
}

func consume(ctx context.Context) {
	cl := client(
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	got := readGroup(ctx, cl, *n)
	check.FailOn(cl.CommitUncommittedOffsets(ctx), "committing offsets")
	committed := committedOf(cl, *topic)
	check.FailOn(cl.LeaveGroupContext(ctx), "leaving the group")
	cl.Close()
	check.Emit(map[string]any{"records": got, "committed": committed})
}

// txn writes one transaction that commits and one that aborts, n records each.
func txn(ctx context.Context) {
	cl := client(kgo.TransactionalID(*txid), kgo.DefaultProduceTopic(*topic))
	defer cl.Close()
	result := map[string]any{}
	for _, end := range []struct {
		name string
		try  kgo.TransactionEndTry
	}{{"committed", kgo.TryCommit}, {"aborted", kgo.TryAbort}} {
		check.FailOn(cl.BeginTransaction(), "beginning the "+end.name+" transaction")
		rs := records(*tag+"-"+end.name, *n)
		produceSync(ctx, cl, rs, "producing in the "+end.name+" transaction")
		check.FailOn(cl.EndTransaction(ctx, end.try), "ending the "+end.name+" transaction")
		result[end.name] = asRecords(rs)
	}
	check.Emit(result)
}

// eos copies n records from -in to -out ("eos:" before each value) in transactions that also
// commit the group's offsets; only records of committed transactions count.
func eos(ctx context.Context) {
	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(*bootstrap),
		kgo.ClientID(*clientID),
		kgo.TransactionalID(*txid),
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(*in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.DefaultProduceTopic(*out),
	)
	check.FailOn(err, "creating the transact session")
	copied, transactions, aborted := 0, 0, 0
	for copied < *n {
		fetches := sess.PollFetches(ctx)
		if ctx.Err() != nil {
			check.Fail("copied %d of %d records before the deadline", copied, *n)
		}
		for _, e := range fetches.Errors() {
			check.Fail("fetch error on %s[%d]: %v", e.Topic, e.Partition, e.Err)
		}
		if fetches.NumRecords() == 0 {
			continue
		}
		check.FailOn(sess.Begin(), "beginning a transaction")
		var outs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			outs = append(outs, &kgo.Record{Key: r.Key, Value: append([]byte("eos:"), r.Value...)})
		})
		check.FailOn(sess.ProduceSync(ctx, outs...).FirstErr(), "producing in the transaction")
		committed, err := sess.End(ctx, kgo.TryCommit)
		check.FailOn(err, "ending the transaction")
		if committed {
			copied += len(outs)
			transactions++
		} else {
			aborted++
		}
	}
	check.FailOn(sess.Client().LeaveGroupContext(ctx), "leaving the group")
	sess.Close()
	if copied != *n {
		check.Fail("copied %d records, expected %d", copied, *n)
	}
	check.Emit(map[string]any{"copied": copied, "transactions": transactions, "aborted": aborted})
}

func offsetsOf(l kadm.ListedOffsets, t string) map[string]int64 {
	outs := map[string]int64{}
	for p, o := range l[t] {
		if o.Err != nil {
			check.Fail("listing offsets of %s[%d]: %v", t, p, o.Err)
		}
		outs[fmt.Sprint(p)] = o.Offset
	}
	return outs
}

func configValue(rcs kadm.ResourceConfigs, err error, name string) map[string]any {
	check.FailOn(err, "describing configs")
	if len(rcs) != 1 {
		check.Fail("described %d resources, expected 1", len(rcs))
	}
	check.FailOn(rcs[0].Err, "describing the topic's configs")
	for _, c := range rcs[0].Configs {
		if c.Key == name {
			if c.Value == nil {
				check.Fail("config %s has no value", name)
			}
			return map[string]any{"value": *c.Value, "source": c.Source.String()}
		}
	}
	check.Fail("config %s not described", name)
	return nil
}

// admin: create a topic with a config, list and describe it, alter its config, fill it, let a
// group consume and commit, list and describe the group and its offsets, commit an offset
// as an admin, delete records.
func admin(ctx context.Context) {
	cl := client()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	t := *topic
	res := map[string]any{}

	retention := "3600000"
	created, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"retention.ms": &retention}, t)
	check.FailOn(err, "creating the topic")
	check.FailOn(created.Err, "creating the topic ("+created.ErrMessage+")")
	res["created_partitions"] = created.NumPartitions

	listed := listUntil(ctx, adm, t, true)
	detail, ok := listed[t]
	if !ok {
		check.Fail("created topic %s not listed (listed: %v)", t, listed.Names())
	}
	check.FailOn(detail.Err, "listing the topic")
	res["listed_partitions"] = len(detail.Partitions)

	rcs, err := adm.DescribeTopicConfigs(ctx, t)
	res["retention_created"] = configValue(rcs, err, "retention.ms")

	newRetention, policy := "7200000", "compact,delete"
	alters, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: &newRetention},
		{Op: kadm.SetConfig, Name: "cleanup.policy", Value: &policy},
	}, t)
	check.FailOn(err, "altering configs")
	for _, a := range alters {
		check.FailOn(a.Err, "altering configs of "+a.Name+" ("+a.ErrMessage+")")
	}
	// Kafka's brokers describe an alteration shortly after answering it (sluice at once).
	deadline := time.Now().Add(10 * time.Second)
	for {
		rcs, err = adm.DescribeTopicConfigs(ctx, t)
		res["retention_altered"] = configValue(rcs, err, "retention.ms")
		res["cleanup_policy_altered"] = configValue(rcs, err, "cleanup.policy")
		if res["retention_altered"].(map[string]any)["value"] == newRetention || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 10 records in partition 0, 5 in partition 1.
	var rs []*kgo.Record
	for i := 0; i < 15; i++ {
		p := int32(0)
		if i >= 10 {
			p = 1
		}
		rs = append(rs, &kgo.Record{Topic: t, Partition: p, Key: []byte(check.Key(i)), Value: []byte(check.Value(*tag, i))})
	}
	producer := client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceSync(ctx, producer, rs, "producing")
	producer.Close()

	ends, err := adm.ListEndOffsets(ctx, t)
	check.FailOn(err, "listing end offsets")
	res["end_offsets"] = offsetsOf(ends, t)

	member := client(kgo.ConsumerGroup(*group), kgo.ConsumeTopics(t),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	readGroup(ctx, member, len(rs))
	check.FailOn(member.CommitUncommittedOffsets(ctx), "committing offsets")
	check.FailOn(member.LeaveGroupContext(ctx), "leaving the group")
	member.Close()

	// ListTopics leaves out the topics the broker marks internal (by now __consumer_offsets
	// exists, and the caller made sure __transaction_state does).
	listed, err = adm.ListTopics(ctx)
	check.FailOn(err, "listing topics again")
	listedInternal := []string{}
	for _, name := range listed.Names() {
		if strings.HasPrefix(name, "__") {
			listedInternal = append(listedInternal, name)
		}
	}
	res["listed_double_underscore_topics"] = listedInternal
	all, err := adm.ListTopicsWithInternal(ctx)
	check.FailOn(err, "listing topics with internal ones")
	internal := []string{}
	for _, name := range all.Names() {
		if all[name].IsInternal {
			internal = append(internal, name)
		}
	}
	res["internal_topics"] = internal

	groups, err := adm.ListGroups(ctx)
	check.FailOn(err, "listing groups")
	lg, ok := groups[*group]
	if !ok {
		check.Fail("group %s not listed (listed: %v)", *group, groups.Groups())
	}
	res["listed_group"] = map[string]any{"protocol_type": lg.ProtocolType, "state": lg.State}

	described, err := adm.DescribeGroups(ctx, *group)
	check.FailOn(err, "describing groups")
	dg := described[*group]
	check.FailOn(dg.Err, "describing the group")
	res["described_group"] = map[string]any{
		"state": dg.State, "protocol_type": dg.ProtocolType, "members": len(dg.Members),
	}

	fetched, err := adm.FetchOffsets(ctx, *group)
	check.FailOn(err, "fetching offsets")
	check.FailOn(fetched.Error(), "fetching offsets")
	groupOffsets := map[string]int64{}
	fetched.Each(func(o kadm.OffsetResponse) {
		if o.Topic == t {
			groupOffsets[fmt.Sprint(o.Partition)] = o.At
		}
	})
	res["group_offsets"] = groupOffsets

	// An admin rewinds partition 1 of the (empty) group.
	rewind := kadm.Offsets{}
	rewind.Add(kadm.Offset{Topic: t, Partition: 1, At: 2, LeaderEpoch: -1})
	committed, err := adm.CommitOffsets(ctx, *group, rewind)
	check.FailOn(err, "committing offsets as an admin")
	check.FailOn(committed.Error(), "committing offsets as an admin")
	lags, err := adm.Lag(ctx, *group)
	check.FailOn(err, "computing lag")
	lag := lags[*group]
	check.FailOn(lag.Error(), "computing lag")
	perPartition := map[string]int64{}
	for p, l := range lag.Lag[t] {
		check.FailOn(l.Err, "lag of a partition")
		perPartition[fmt.Sprint(p)] = l.Lag
	}
	res["lag_after_rewind"] = perPartition

	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: t, Partition: 0, At: 4})
	deleted, err := adm.DeleteRecords(ctx, del)
	check.FailOn(err, "deleting records")
	dr, ok := deleted.Lookup(t, 0)
	if !ok {
		check.Fail("no delete-records result for %s[0]", t)
	}
	check.FailOn(dr.Err, "deleting records of partition 0")
	res["low_watermark"] = dr.LowWatermark
	starts, err := adm.ListStartOffsets(ctx, t)
	check.FailOn(err, "listing start offsets")
	res["start_offsets"] = offsetsOf(starts, t)

	check.Emit(res)
}

// deleteTopic deletes the topic with kadm and lists topics again.
func deleteTopic(ctx context.Context) {
	cl := client()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deleted, err := adm.DeleteTopics(ctx, *topic)
	check.FailOn(err, "deleting the topic")
	check.FailOn(deleted.Error(), "deleting the topic")
	_, still := listUntil(ctx, adm, *topic, false)[*topic]
	check.Emit(map[string]any{"listed_after_delete": still})
}

// listUntil lists topics until t is listed (or, with present false, is not), for at most
// ten seconds: Kafka's metadata catches up with a create or delete shortly after answering
// it (sluice's at once). It returns the last listing.
func listUntil(ctx context.Context, adm *kadm.Client, t string, present bool) kadm.TopicDetails {
	deadline := time.Now().Add(10 * time.Second)
	for {
		listed, err := adm.ListTopics(ctx)
		check.FailOn(err, "listing topics")
		if _, ok := listed[t]; ok == present || time.Now().After(deadline) {
			return listed
		}
		time.Sleep(100 * time.Millisecond)
	}
}
