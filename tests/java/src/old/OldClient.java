import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.AppInfoParser;

/**
 * An older Java client (kafka-clients 0.10.2 to 3.9; compiled against each, so it uses only
 * the API all of them share, poll(long) included) produces, consumes in a group and commits:
 *
 * <pre>
 *   OldClient BOOTSTRAP TOPIC PARTITIONS GROUP N
 * </pre>
 *
 * The producer (acks=all) sends N keyed records and checks that each partition's offsets are
 * dense from 0 in send order. A consumer subscribed in GROUP reads them all, each exactly once
 * and as produced, commits synchronously, and reads its committed offsets back: they must be
 * the log end offsets. Prints "produced P O V", "consumed P O V" and "committed P O" lines; a
 * failed expectation prints "FAIL step: why" and exits 1.
 */
public final class OldClient {
    static final long WAIT_MS = 60_000;

    static void check(boolean ok, String format, Object... args) {
        if (!ok) {
            throw new IllegalStateException(String.format(format, args));
        }
    }

    static void out(String format, Object... args) {
        System.out.println(String.format(format, args));
        System.out.flush();
    }

    public static void main(String[] args) {
        if (args.length != 5) {
            System.err.println("usage: OldClient BOOTSTRAP TOPIC PARTITIONS GROUP N");
            System.exit(2);
        }
        String step = "start";
        try {
            String version = AppInfoParser.getVersion();
            out("client %s", version);
            String bootstrap = args[0];
            String topic = args[1];
            int partitions = Integer.parseInt(args[2]);
            String group = args[3];
            int n = Integer.parseInt(args[4]);
            step = "produce";
            Map<String, String> produced = produce(bootstrap, topic, n, version);
            step = "consume";
            consume(bootstrap, topic, partitions, group, produced);
            out("PASSED %s", version);
            System.exit(0);
        } catch (Throwable t) {
            StringBuilder why = new StringBuilder(String.valueOf(t));
            for (Throwable c = t.getCause(); c != null; c = c.getCause()) {
                why.append(" <- ").append(c);
            }
            out("FAIL %s: %s", step, why.toString().replace('\n', ' '));
            t.printStackTrace();
            System.exit(1);
        }
    }

    static Map<String, String> produce(String bootstrap, String topic, int n, String version) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "old-producer-" + version);
        p.put("acks", "all");
        p.put("linger.ms", "5");
        p.put("request.timeout.ms", "20000");
        p.put("max.block.ms", "30000");
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        List<Future<RecordMetadata>> sent = new ArrayList<Future<RecordMetadata>>();
        List<String> values = new ArrayList<String>();
        KafkaProducer<String, String> producer = new KafkaProducer<String, String>(p);
        try {
            for (int i = 0; i < n; i++) {
                String value = "old-" + version + "-" + i;
                values.add(value);
                sent.add(producer.send(new ProducerRecord<String, String>(topic, "key-" + (i % 7), value)));
            }
            producer.flush();
        } finally {
            producer.close();
        }
        Map<String, String> produced = new HashMap<String, String>();
        Map<Integer, Long> next = new TreeMap<Integer, Long>();
        for (int i = 0; i < n; i++) {
            RecordMetadata md = sent.get(i).get(30, TimeUnit.SECONDS);
            Long expected = next.containsKey(md.partition()) ? next.get(md.partition()) : 0L;
            check(md.offset() == expected, "partition %d: record %d got offset %d, expected %d",
                    md.partition(), i, md.offset(), expected);
            next.put(md.partition(), expected + 1);
            produced.put(md.partition() + " " + md.offset(), values.get(i));
            out("produced %d %d %s", md.partition(), md.offset(), values.get(i));
        }
        return produced;
    }

    static void consume(String bootstrap, String topic, int partitions, String group, Map<String, String> produced) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "old-consumer");
        p.put("group.id", group);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("session.timeout.ms", "10000");
        p.put("heartbeat.interval.ms", "1000");
        p.put("request.timeout.ms", "20000");
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        KafkaConsumer<String, String> consumer = new KafkaConsumer<String, String>(p);
        try {
            consumer.subscribe(Collections.singletonList(topic));
            Map<String, String> consumed = new HashMap<String, String>();
            long deadline = System.currentTimeMillis() + WAIT_MS;
            while (consumed.size() < produced.size()) {
                check(System.currentTimeMillis() < deadline, "consumed %d of %d records", consumed.size(), produced.size());
                for (ConsumerRecord<String, String> r : consumer.poll(100)) {
                    String at = r.partition() + " " + r.offset();
                    check(produced.containsKey(at), "consumed %s, which was not produced", at);
                    check(!consumed.containsKey(at), "consumed %s twice", at);
                    check(produced.get(at).equals(r.value()), "at %s: value %s, produced %s", at, r.value(), produced.get(at));
                    consumed.put(at, r.value());
                    out("consumed %d %d %s", r.partition(), r.offset(), r.value());
                }
            }
            consumer.commitSync();
            List<TopicPartition> tps = new ArrayList<TopicPartition>();
            for (int i = 0; i < partitions; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            check(consumer.assignment().containsAll(tps) && consumer.assignment().size() == partitions,
                    "assignment %s", consumer.assignment());
            Map<TopicPartition, Long> end = consumer.endOffsets(tps);
            for (TopicPartition tp : tps) {
                OffsetAndMetadata om = consumer.committed(tp);
                check(om != null && om.offset() == end.get(tp), "partition %d: committed %s, log end %d",
                        tp.partition(), om, end.get(tp));
                out("committed %d %d", tp.partition(), om.offset());
            }
        } finally {
            consumer.close();
        }
    }
}
