import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownMemberIdException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Java client (kafka-clients 4.x) against a broker, one scenario per run:
 *
 * <pre>
 *   JavaClients idempotent   BOOTSTRAP TOPIC N
 *   JavaClients transactions BOOTSTRAP TOPIC GROUP
 *   JavaClients group        BOOTSTRAP TOPIC GROUP range|cooperative-sticky
 *   JavaClients admin        BOOTSTRAP
 * </pre>
 *
 * Every scenario checks its own expectations and also prints what it observed, one fact per
 * line, for the pytest module to check against the broker from another client. A failed
 * expectation prints "FAIL step: why"; the exit status is then 1 (2 for bad arguments).
 */
public final class JavaClients {
    static final Duration POLL = Duration.ofMillis(100);
    static final long WAIT_S = 30;
    static final long DEADLINE_MS = 60_000;

    /** A failed expectation. */
    static final class Failed extends RuntimeException {
        Failed(String message) {
            super(message);
        }
    }

    static void check(boolean ok, String format, Object... args) {
        if (!ok) {
            throw new Failed(String.format(format, args));
        }
    }

    static void out(String format, Object... args) {
        System.out.println(String.format(format, args));
        System.out.flush();
    }

    static <T> T get(Future<T> f) throws Exception {
        return f.get(WAIT_S, TimeUnit.SECONDS);
    }

    /** Runs `f`, which must fail with `expected` (directly or as the cause); returns that. */
    static Throwable expectFailure(Class<? extends Throwable> expected, Callable f) {
        return expectFailure(List.of(expected), f);
    }

    /** Runs `f`, which must fail with one of `expected` (directly or as the cause). */
    static Throwable expectFailure(List<Class<? extends Throwable>> expected, Callable f) {
        String names = expected.stream().map(Class::getSimpleName).collect(Collectors.joining(" or "));
        try {
            f.call();
        } catch (Throwable t) {
            for (Throwable c = t; c != null; c = c.getCause()) {
                for (Class<? extends Throwable> e : expected) {
                    if (e.isInstance(c)) {
                        return c;
                    }
                }
            }
            throw new Failed("expected " + names + ", got " + t);
        }
        throw new Failed("expected " + names + ", but it succeeded");
    }

    interface Callable {
        void call() throws Exception;
    }

    private static final List<String> failures = new ArrayList<>();

    /** One independent check of a scenario: a failure is printed and the next step runs. */
    static void step(String name, Callable body) {
        try {
            body.call();
            out("ok %s", name);
        } catch (Throwable t) {
            failures.add(name);
            out("FAIL %s: %s", name, describe(t));
            t.printStackTrace();
        }
    }

    static String describe(Throwable t) {
        StringBuilder sb = new StringBuilder(String.valueOf(t));
        for (Throwable c = t.getCause(); c != null; c = c.getCause()) {
            sb.append(" <- ").append(c);
        }
        return sb.toString().replace('\n', ' ');
    }

    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: JavaClients idempotent|transactions|group|admin BOOTSTRAP ...");
            System.exit(2);
        }
        String scenario = args[0];
        try {
            switch (scenario) {
                case "idempotent":
                    idempotent(args[1], args[2], Integer.parseInt(args[3]));
                    break;
                case "transactions":
                    transactions(args[1], args[2], args[3]);
                    break;
                case "group":
                    group(args[1], args[2], args[3], args[4]);
                    break;
                case "admin":
                    admin(args[1]);
                    break;
                default:
                    System.err.println("unknown scenario " + scenario);
                    System.exit(2);
            }
        } catch (Throwable t) {
            failures.add(scenario);
            out("FAIL %s: %s", scenario, describe(t));
            t.printStackTrace();
        }
        if (!failures.isEmpty()) {
            out("FAILED %s", String.join(",", failures));
            System.exit(1);
        }
        out("PASSED %s", scenario);
        // The clients' threads are all closed by now; exit explicitly all the same.
        System.exit(0);
    }

    // -- configuration ----------------------------------------------------------------------

    static Properties common(String bootstrap, String clientId) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", clientId);
        p.put("request.timeout.ms", "20000");
        p.put("default.api.timeout.ms", "30000");
        return p;
    }

    static KafkaProducer<String, String> producer(String bootstrap, String clientId, Properties extra) {
        Properties p = common(bootstrap, clientId);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("acks", "all");
        p.put("linger.ms", "5");
        p.put("delivery.timeout.ms", "30000");
        p.put("max.block.ms", "30000");
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(String bootstrap, String clientId, Properties extra) {
        Properties p = common(bootstrap, clientId);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    static Admin admin(String bootstrap, String clientId) {
        Properties p = common(bootstrap, clientId);
        return Admin.create(p);
    }

    static Properties props(String... kv) {
        Properties p = new Properties();
        for (int i = 0; i < kv.length; i += 2) {
            p.put(kv[i], kv[i + 1]);
        }
        return p;
    }

    static String partitions(Collection<TopicPartition> tps) {
        return tps.stream().map(TopicPartition::partition).sorted().map(String::valueOf)
                .collect(Collectors.joining(","));
    }

    // -- idempotent producer ----------------------------------------------------------------

    /**
     * An idempotent producer (acks=all, five requests in flight, small batches so several
     * are in flight per partition) sends N keyed records; every send is acknowledged, and in
     * each partition the offsets are dense from 0 in send order.
     */
    static void idempotent(String bootstrap, String topic, int n) throws Exception {
        Properties extra = props("enable.idempotence", "true",
                "max.in.flight.requests.per.connection", "5", "batch.size", "1024");
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = producer(bootstrap, "java-idempotent", extra)) {
            for (int i = 0; i < n; i++) {
                String value = String.format("idem-%06d", i);
                sent.add(producer.send(new ProducerRecord<>(topic, "key-" + (i % 17), value)));
            }
            producer.flush();
        }
        Map<Integer, List<Long>> offsets = new TreeMap<>();
        for (int i = 0; i < n; i++) {
            RecordMetadata md = get(sent.get(i));
            offsets.computeIfAbsent(md.partition(), k -> new ArrayList<>()).add(md.offset());
            out("produced %d %d idem-%06d", md.partition(), md.offset(), i);
        }
        for (Map.Entry<Integer, List<Long>> e : offsets.entrySet()) {
            List<Long> got = e.getValue();
            for (int i = 0; i < got.size(); i++) {
                check(got.get(i) == i, "partition %d: send %d got offset %d", e.getKey(), i, got.get(i));
            }
        }
        out("ok idempotent-produce");
    }

    // -- transactions -----------------------------------------------------------------------

    /**
     * Three transactions from one transactional.id over two partitions: committed, aborted
     * (after its records were acknowledged, so they are in the log), and committed with the
     * group's offset (sendOffsetsToTransaction). Then a second producer with the same
     * transactional.id fences the first (whose transaction fails with a fencing error and
     * writes nothing), and commits a fourth. A read_committed consumer
     * reads only the committed records, a read_uncommitted one every record; both are printed
     * with their offsets. The group's offset is the one committed in the transaction.
     */
    static void transactions(String bootstrap, String topic, String group) throws Exception {
        Properties txn = props("transactional.id", "java-txn", "transaction.timeout.ms", "60000");
        KafkaProducer<String, String> first = producer(bootstrap, "java-txn-1", txn);
        try {
            first.initTransactions();
            sendTxn(first, topic, "commit1", 10, true, null, null);
            sendTxn(first, topic, "abort", 10, false, null, null);
            sendTxn(first, topic, "commit2", 10, true, Map.of(new TopicPartition(topic, 0),
                    new OffsetAndMetadata(7, "in-txn")), group);
            out("ok commit-abort-commit");

            KafkaProducer<String, String> second = producer(bootstrap, "java-txn-2", txn);
            try {
                second.initTransactions();
                // PRODUCER_FENCED from AddPartitionsToTxn (transaction protocol v1), or
                // INVALID_PRODUCER_EPOCH from Produce where the partition is added implicitly
                // (KIP-890, transaction.version 2, as Kafka 4 answers).
                Throwable fenced = expectFailure(List.of(ProducerFencedException.class,
                        InvalidProducerEpochException.class), () -> {
                    first.beginTransaction();
                    Future<RecordMetadata> f = first.send(new ProducerRecord<>(topic, 0, "k", "zombie"));
                    first.commitTransaction();
                    get(f);
                });
                out("fenced %s", fenced.getClass().getSimpleName());
                sendTxn(second, topic, "commit3", 4, true, null, null);
                out("ok fenced-then-commit");
            } finally {
                second.close(Duration.ofSeconds(10));
            }
        } finally {
            first.close(Duration.ZERO);
        }

        for (String isolation : List.of("read_committed", "read_uncommitted")) {
            readAll(bootstrap, topic, 2, isolation);
        }
        try (Admin admin = admin(bootstrap, "java-txn-admin")) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                    get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            for (Map.Entry<Integer, OffsetAndMetadata> e : byPartition(committed).entrySet()) {
                out("committed %d %d %s", e.getKey(), e.getValue().offset(), e.getValue().metadata());
            }
        }
    }

    static Map<Integer, OffsetAndMetadata> byPartition(Map<TopicPartition, OffsetAndMetadata> m) {
        Map<Integer, OffsetAndMetadata> out = new TreeMap<>();
        m.forEach((tp, om) -> out.put(tp.partition(), om));
        return out;
    }

    static void sendTxn(KafkaProducer<String, String> p, String topic, String label, int n, boolean commit,
                        Map<TopicPartition, OffsetAndMetadata> offsets, String group) throws Exception {
        p.beginTransaction();
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            sent.add(p.send(new ProducerRecord<>(topic, i % 2, "k" + i, label + "-" + i)));
        }
        // Every record is acknowledged (in the log) before the transaction ends.
        p.flush();
        for (Future<RecordMetadata> f : sent) {
            get(f);
        }
        if (offsets != null) {
            p.sendOffsetsToTransaction(offsets, new ConsumerGroupMetadata(group));
        }
        if (commit) {
            p.commitTransaction();
        } else {
            p.abortTransaction();
        }
    }

    /** Reads every partition from the beginning to its end offset and prints each record. */
    static void readAll(String bootstrap, String topic, int partitions, String isolation) {
        try (KafkaConsumer<String, String> c = consumer(bootstrap, "java-" + isolation,
                props("isolation.level", isolation))) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            out("end %s %s", isolation, tps.stream().map(tp -> tp.partition() + "=" + end.get(tp))
                    .collect(Collectors.joining(",")));
            long deadline = System.currentTimeMillis() + DEADLINE_MS;
            while (!tps.stream().allMatch(tp -> c.position(tp) >= end.get(tp))) {
                check(System.currentTimeMillis() < deadline, "%s: did not reach the end offsets %s", isolation, end);
                for (ConsumerRecord<String, String> r : c.poll(POLL)) {
                    out("record %s %d %d %s", isolation, r.partition(), r.offset(), r.value());
                }
            }
            for (TopicPartition tp : tps) {
                check(c.position(tp) == end.get(tp), "%s: position %d past end %d",
                        isolation, c.position(tp), end.get(tp));
            }
        }
    }

    // -- consumer groups --------------------------------------------------------------------

    /** One group member, driven from the main thread; prints its rebalance events. */
    static final class Member implements ConsumerRebalanceListener {
        final String name;
        final KafkaConsumer<String, String> consumer;
        final Set<Integer> owned = new TreeSet<>();
        final Map<TopicPartition, OffsetAndMetadata> pending = new HashMap<>();
        final Map<String, String> consumed;
        boolean closed;

        Member(String name, String bootstrap, String group, String assignor, Map<String, String> consumed) {
            this.name = name;
            this.consumed = consumed;
            this.consumer = consumer(bootstrap, "java-group-" + name, props(
                    "group.id", group,
                    "partition.assignment.strategy", assignor,
                    "session.timeout.ms", "10000",
                    "heartbeat.interval.ms", "300",
                    "max.poll.records", "5"));
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> parts) {
            if (!parts.isEmpty()) {
                out("event %s revoked %s", name, partitions(parts));
            }
            // Hand the partitions over with their offsets committed.
            Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
            for (TopicPartition tp : parts) {
                if (pending.containsKey(tp)) {
                    commit.put(tp, pending.remove(tp));
                }
            }
            if (!commit.isEmpty()) {
                consumer.commitSync(commit);
            }
            for (TopicPartition tp : parts) {
                owned.remove(tp.partition());
            }
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> parts) {
            if (!parts.isEmpty()) {
                out("event %s assigned %s", name, partitions(parts));
            }
            for (TopicPartition tp : parts) {
                check(owned.add(tp.partition()), "%s was assigned %s, which it already owned", name, tp);
            }
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> parts) {
            out("event %s lost %s", name, partitions(parts));
            throw new Failed(name + " lost partitions " + parts);
        }

        void poll() {
            ConsumerRecords<String, String> records = consumer.poll(POLL);
            for (ConsumerRecord<String, String> r : records) {
                String at = r.partition() + " " + r.offset();
                String before = consumed.put(at, name);
                check(before == null, "%s consumed %s, which %s had consumed", name, at, before);
                check(owned.contains(r.partition()), "%s got a record of partition %d, which it does not own",
                        name, r.partition());
                out("consumed %s %d %d %s", name, r.partition(), r.offset(), r.value());
                pending.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
            }
            commitPending();
        }

        void close() {
            if (!closed) {
                closed = true;
                consumer.close(Duration.ofSeconds(10));
            }
        }

        void commitPending() {
            if (pending.isEmpty()) {
                return;
            }
            try {
                consumer.commitSync(new HashMap<>(pending));
                pending.clear();
            } catch (RebalanceInProgressException e) {
                // Committed from onPartitionsRevoked, or after the next poll.
                out("note %s commit during a rebalance: %s", name, e.getClass().getSimpleName());
            }
        }
    }

    /**
     * Two consumers in one group over a four-partition topic, driven alternately from one
     * thread. A joins alone and owns everything; B joins and the partitions are split; B
     * leaves (close: LeaveGroup) and A owns everything again. Records are produced in every
     * phase; each is consumed exactly once across the group, offsets are committed as they
     * are consumed (and on revocation), and the group's committed offsets end at the log end.
     * Rebalance events are printed per phase for the caller to check the assignor's protocol
     * (eager or cooperative).
     */
    static void group(String bootstrap, String topic, String group, String assignorName) throws Exception {
        String assignor;
        switch (assignorName) {
            case "range":
                assignor = RangeAssignor.class.getName();
                break;
            case "cooperative-sticky":
                assignor = CooperativeStickyAssignor.class.getName();
                break;
            default:
                throw new Failed("unknown assignor " + assignorName);
        }
        final int partitions = 4;
        Set<Integer> all = new TreeSet<>(List.of(0, 1, 2, 3));
        Map<String, String> consumed = new HashMap<>();
        int produced = 0;
        try (KafkaProducer<String, String> producer = producer(bootstrap, "java-group-producer", new Properties());
             Admin admin = admin(bootstrap, "java-group-admin")) {
            Member a = new Member("A", bootstrap, group, assignor, consumed);
            Member b = new Member("B", bootstrap, group, assignor, consumed);
            try {
                out("phase 1");
                produced += produceRound(producer, topic, partitions, 1);
                a.consumer.subscribe(List.of(topic), a);
                final int want1 = produced;
                pollUntil("A owns every partition and consumed phase 1",
                        () -> a.owned.equals(all) && consumed.size() == want1, a);

                out("phase 2");
                b.consumer.subscribe(List.of(topic), b);
                produced += produceRound(producer, topic, partitions, 2);
                final int want2 = produced;
                pollUntil("A and B split the partitions and consumed phase 2", () -> {
                    Set<Integer> union = new TreeSet<>(a.owned);
                    union.addAll(b.owned);
                    return !a.owned.isEmpty() && !b.owned.isEmpty() && union.equals(all)
                            && a.owned.size() + b.owned.size() == partitions && consumed.size() == want2;
                }, a, b);
                out("owned A %s", a.owned.stream().map(String::valueOf).collect(Collectors.joining(",")));
                out("owned B %s", b.owned.stream().map(String::valueOf).collect(Collectors.joining(",")));

                out("phase 3");
                b.commitPending();
                b.close();
                produced += produceRound(producer, topic, partitions, 3);
                final int want3 = produced;
                pollUntil("A owns every partition again and consumed phase 3",
                        () -> a.owned.equals(all) && consumed.size() == want3, a);
                a.commitPending();
                check(a.pending.isEmpty(), "A has offsets it could not commit: %s", a.pending);
                out("phase end");
            } finally {
                a.close();
                b.close();
            }
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            Map<TopicPartition, OffsetAndMetadata> committed =
                    get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            for (TopicPartition tp : tps) {
                OffsetAndMetadata om = committed.get(tp);
                out("committed %d %s", tp.partition(), om == null ? "none" : String.valueOf(om.offset()));
            }
        }
    }

    /** Sends two records to every partition and waits for their acknowledgements. */
    static int produceRound(KafkaProducer<String, String> producer, String topic, int partitions, int phase)
            throws Exception {
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        List<String> values = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            for (int i = 0; i < 2; i++) {
                String value = "phase" + phase + "-p" + p + "-" + i;
                values.add(value);
                sent.add(producer.send(new ProducerRecord<>(topic, p, "k", value)));
            }
        }
        producer.flush();
        for (int i = 0; i < sent.size(); i++) {
            RecordMetadata md = get(sent.get(i));
            out("produced %d %d %s", md.partition(), md.offset(), values.get(i));
        }
        return sent.size();
    }

    interface Condition {
        boolean holds();
    }

    static void pollUntil(String what, Condition done, Member... members) {
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        while (!done.holds()) {
            check(System.currentTimeMillis() < deadline, "timed out waiting until %s", what);
            for (Member m : members) {
                m.poll();
            }
        }
    }

    // -- admin ------------------------------------------------------------------------------

    /**
     * The Admin client's topic, config, group, offset and record calls, each an independent
     * step that prints what it saw.
     */
    @SuppressWarnings("deprecation")
    static void admin(String bootstrap) throws Exception {
        try (Admin admin = admin(bootstrap, "java-admin")) {
            Map<String, Node> self = new HashMap<>();

            step("createTopics", () -> {
                get(admin.createTopics(List.of(
                        new NewTopic("adm-a", 3, (short) 1).configs(Map.of("retention.ms", "3600000")),
                        new NewTopic("adm-b", 1, (short) 1),
                        new NewTopic("adm-cfg", 2, (short) 1))).all());
                expectFailure(TopicExistsException.class,
                        () -> get(admin.createTopics(List.of(new NewTopic("adm-a", 3, (short) 1))).all()));
                out("created adm-a adm-b adm-cfg");
            });

            step("listTopics", () -> {
                Set<String> names = new TreeSet<>(get(admin.listTopics().names()));
                check(names.containsAll(List.of("adm-a", "adm-b", "adm-cfg")), "listTopics: %s", names);
                check(names.stream().noneMatch(n -> n.startsWith("__")), "internal topics listed: %s", names);
                out("topics %s", String.join(",", names));
            });

            step("describeCluster", () -> {
                DescribeClusterResult c = admin.describeCluster();
                Collection<Node> nodes = get(c.nodes());
                Node controller = get(c.controller());
                String clusterId = get(c.clusterId());
                check(nodes.size() == 1, "nodes: %s", nodes);
                Node node = nodes.iterator().next();
                self.put("node", node);
                check(clusterId != null && !clusterId.isEmpty(), "cluster id %s", clusterId);
                check(controller != null && controller.id() == node.id(), "controller %s, node %s", controller, node);
                out("cluster %s node %d %s:%d controller %d", clusterId, node.id(), node.host(), node.port(),
                        controller.id());
            });

            step("describeTopics", () -> {
                TopicDescription d = get(admin.describeTopics(List.of("adm-a")).allTopicNames()).get("adm-a");
                check(d.name().equals("adm-a") && !d.isInternal(), "description %s", d);
                check(d.partitions().size() == 3, "partitions %s", d.partitions());
                for (int i = 0; i < 3; i++) {
                    TopicPartitionInfo p = d.partitions().get(i);
                    check(p.partition() == i, "partition %d at %d", p.partition(), i);
                    check(p.leader() != null && p.replicas().equals(List.of(p.leader()))
                            && p.isr().equals(List.of(p.leader())), "partition %s", p);
                    Node node = self.get("node");
                    check(node == null || p.leader().id() == node.id(), "leader %s is not node %s", p.leader(), node);
                }
                out("described adm-a partitions %d leader %d topic-id %s", d.partitions().size(),
                        d.partitions().get(0).leader().id(), d.topicId());
                expectFailure(UnknownTopicOrPartitionException.class,
                        () -> get(admin.describeTopics(List.of("adm-missing")).allTopicNames()));
            });

            ConfigResource cfg = new ConfigResource(ConfigResource.Type.TOPIC, "adm-cfg");
            step("describeConfigs", () -> {
                get(admin.incrementalAlterConfigs(Map.of(cfg, List.of(new AlterConfigOp(
                        new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET)))).all());
                Config c = get(admin.describeConfigs(List.of(cfg)).all()).get(cfg);
                ConfigEntry retention = c.get("retention.ms");
                check(retention != null && retention.value().equals("3600000")
                        && retention.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                        "retention.ms %s", retention);
                ConfigEntry maxBytes = c.get("max.message.bytes");
                check(maxBytes != null && maxBytes.source() == ConfigEntry.ConfigSource.DEFAULT_CONFIG,
                        "max.message.bytes %s", maxBytes);
                out("config adm-cfg retention.ms %s %s", retention.value(), retention.source());
                Node node = self.get("node");
                check(node != null, "no node id from describeCluster");
                ConfigResource br = new ConfigResource(ConfigResource.Type.BROKER, String.valueOf(node.id()));
                Config bc = get(admin.describeConfigs(List.of(br)).all()).get(br);
                ConfigEntry np = bc.get("num.partitions");
                check(np != null && np.value() != null, "broker num.partitions %s", np);
                out("broker-config num.partitions %s", np.value());
            });

            step("incrementalAlterConfigs", () -> {
                get(admin.incrementalAlterConfigs(Map.of(cfg, List.of(
                        new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET),
                        new AlterConfigOp(new ConfigEntry("retention.ms", null), AlterConfigOp.OpType.DELETE),
                        new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND)
                ))).all());
                Config c = get(admin.describeConfigs(List.of(cfg)).all()).get(cfg);
                for (String name : List.of("max.message.bytes", "retention.ms", "cleanup.policy")) {
                    ConfigEntry e = c.get(name);
                    check(e != null, "%s missing", name);
                    out("config adm-cfg %s %s %s", name, e.value(), e.source());
                }
                check(c.get("max.message.bytes").value().equals("2000000")
                        && c.get("max.message.bytes").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                        "SET max.message.bytes: %s", c.get("max.message.bytes"));
                check(c.get("retention.ms").source() == ConfigEntry.ConfigSource.DEFAULT_CONFIG
                        && c.get("retention.ms").value().equals("604800000"),
                        "DELETE retention.ms: %s", c.get("retention.ms"));
                check(c.get("cleanup.policy").value().equals("delete,compact")
                        && c.get("cleanup.policy").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                        "APPEND cleanup.policy: %s", c.get("cleanup.policy"));
            });

            TopicPartition b0 = new TopicPartition("adm-b", 0);
            KafkaConsumer<String, String> live = consumer(bootstrap, "adm-live-client", props("group.id", "adm-live"));
            try {
                step("produce-and-join", () -> {
                    try (KafkaProducer<String, String> p = producer(bootstrap, "java-admin-producer", new Properties())) {
                        List<Future<RecordMetadata>> sent = new ArrayList<>();
                        for (int i = 0; i < 10; i++) {
                            sent.add(p.send(new ProducerRecord<>("adm-b", 0, "k", "adm-" + i)));
                        }
                        p.flush();
                        for (Future<RecordMetadata> f : sent) {
                            get(f);
                        }
                    }
                    live.subscribe(List.of("adm-b"));
                    int got = 0;
                    long deadline = System.currentTimeMillis() + DEADLINE_MS;
                    while (got < 10) {
                        check(System.currentTimeMillis() < deadline, "adm-live consumed %d of 10", got);
                        got += live.poll(POLL).count();
                    }
                    live.commitSync();
                    check(live.assignment().equals(Set.of(b0)), "adm-live assignment %s", live.assignment());
                });

                step("listConsumerGroupOffsets", () -> {
                    Map<TopicPartition, OffsetAndMetadata> m =
                            get(admin.listConsumerGroupOffsets("adm-live").partitionsToOffsetAndMetadata());
                    check(m.size() == 1 && m.get(b0) != null && m.get(b0).offset() == 10, "adm-live offsets %s", m);
                    out("group-offset adm-live adm-b 0 %d", m.get(b0).offset());
                });

                step("alterConsumerGroupOffsets", () -> {
                    // Refused while the group has members (UNKNOWN_MEMBER_ID), as in Kafka.
                    expectFailure(UnknownMemberIdException.class, () -> get(admin.alterConsumerGroupOffsets(
                            "adm-live", Map.of(b0, new OffsetAndMetadata(1))).all()));
                    // Allowed for a group with no members, which it creates.
                    get(admin.alterConsumerGroupOffsets("adm-offsets",
                            Map.of(b0, new OffsetAndMetadata(4, "set-by-admin"))).all());
                    Map<TopicPartition, OffsetAndMetadata> m =
                            get(admin.listConsumerGroupOffsets("adm-offsets").partitionsToOffsetAndMetadata());
                    check(m.size() == 1 && m.get(b0) != null && m.get(b0).offset() == 4
                            && "set-by-admin".equals(m.get(b0).metadata()), "adm-offsets offsets %s", m);
                    out("group-offset adm-offsets adm-b 0 %d %s", m.get(b0).offset(), m.get(b0).metadata());
                });

                step("listConsumerGroups", () -> {
                    Map<String, String> states = new TreeMap<>();
                    for (ConsumerGroupListing l : get(admin.listConsumerGroups().all())) {
                        states.put(l.groupId(), l.groupState().map(GroupState::toString).orElse("?"));
                        check(!l.groupId().equals("adm-live") || !l.isSimpleConsumerGroup(),
                                "adm-live listed as a simple group");
                    }
                    check("Stable".equals(states.get("adm-live")), "adm-live listed as %s", states.get("adm-live"));
                    check("Empty".equals(states.get("adm-offsets")), "adm-offsets listed as %s", states.get("adm-offsets"));
                    out("groups %s", states.entrySet().stream().map(e -> e.getKey() + "=" + e.getValue())
                            .collect(Collectors.joining(",")));
                });

                step("describeConsumerGroups", () -> {
                    ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of("adm-live")).all()).get("adm-live");
                    check(d.groupState() == GroupState.STABLE, "state %s", d.groupState());
                    check("range".equals(d.partitionAssignor()), "assignor %s", d.partitionAssignor());
                    check(d.members().size() == 1, "members %s", d.members());
                    MemberDescription m = d.members().iterator().next();
                    check(m.clientId().equals("adm-live-client"), "client id %s", m.clientId());
                    check(m.assignment().topicPartitions().equals(Set.of(b0)), "assignment %s", m.assignment());
                    Node node = self.get("node");
                    check(node == null || d.coordinator().id() == node.id(), "coordinator %s", d.coordinator());
                    out("described-group adm-live %s %s members 1 client %s assignment %s", d.groupState(),
                            d.partitionAssignor(), m.clientId(), m.assignment().topicPartitions());
                });
            } finally {
                live.close(Duration.ofSeconds(10));
            }

            step("describeConsumerGroups-after-leave", () -> {
                ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of("adm-live")).all()).get("adm-live");
                check(d.groupState() == GroupState.EMPTY && d.members().isEmpty(),
                        "after close: state %s members %s", d.groupState(), d.members());
                out("described-group adm-live %s members 0", d.groupState());
            });

            step("listOffsets-and-deleteRecords", () -> {
                long earliest = get(admin.listOffsets(Map.of(b0, OffsetSpec.earliest())).partitionResult(b0)).offset();
                long latest = get(admin.listOffsets(Map.of(b0, OffsetSpec.latest())).partitionResult(b0)).offset();
                check(earliest == 0 && latest == 10, "before: earliest %d latest %d", earliest, latest);
                long low = get(admin.deleteRecords(Map.of(b0, RecordsToDelete.beforeOffset(3))).lowWatermarks().get(b0))
                        .lowWatermark();
                check(low == 3, "deleteRecords low watermark %d", low);
                long after = get(admin.listOffsets(Map.of(b0, OffsetSpec.earliest())).partitionResult(b0)).offset();
                check(after == 3, "earliest after deleteRecords %d", after);
                out("deleted-records adm-b 0 low-watermark %d", low);
            });

            step("deleteTopics", () -> {
                get(admin.deleteTopics(List.of("adm-a")).all());
                long deadline = System.currentTimeMillis() + DEADLINE_MS;
                while (get(admin.listTopics().names()).contains("adm-a")) {
                    check(System.currentTimeMillis() < deadline, "adm-a still listed after deleteTopics");
                    Thread.sleep(50);
                }
                expectFailure(UnknownTopicOrPartitionException.class,
                        () -> get(admin.describeTopics(List.of("adm-a")).allTopicNames()));
                expectFailure(UnknownTopicOrPartitionException.class,
                        () -> get(admin.deleteTopics(List.of("adm-a")).all()));
                out("deleted adm-a");
            });
        }
    }
}
