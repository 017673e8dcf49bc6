import java.time.Duration;
import java.util.Arrays;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Kafka Streams word count for tests/python/test_kafka_streams.py: lines from INPUT are split
 * into lower-case words, re-keyed by word (through the repartition topic APP-words-repartition),
 * counted in the state store "counts" (a RocksDB store backed by the changelog topic
 * APP-counts-changelog), and every new count goes to OUTPUT as word -> count (a big-endian
 * long), all with processing.guarantee=exactly_once_v2.
 *
 *   WordCount BOOTSTRAP APPLICATION_ID STATE_DIR INPUT OUTPUT
 *
 * Prints one fact per line on stdout: "STATE <state>" on every state change, "UNCAUGHT <error>"
 * if a stream thread dies (the client then shuts down, so the test sees ERROR), "CLOSED" once a
 * SIGTERM has closed it cleanly. It runs until it is signalled.
 */
public class WordCount {
  public static void main(String[] args) throws Exception {
    if (args.length != 5) {
      System.err.println("usage: WordCount BOOTSTRAP APPLICATION_ID STATE_DIR INPUT OUTPUT");
      System.exit(2);
    }
    String bootstrap = args[0], appId = args[1], stateDir = args[2];
    String input = args[3], output = args[4];

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    // Commit (and so make output visible to read_committed readers) every 100 ms.
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    // A restarted instance joins while its killed predecessor is still a member: the group
    // waits for that member's session to expire, so keep it short (the broker's minimum).
    p.put(StreamsConfig.consumerPrefix("session.timeout.ms"), 6000);
    p.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), 1000);

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
        .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\s+")))
        .filter((key, word) -> !word.isEmpty())
        .groupBy((key, word) -> word, Grouped.with("words", Serdes.String(), Serdes.String()))
        .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts")
            .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
        .toStream()
        .to(output, Produced.with(Serdes.String(), Serdes.Long()));
    Topology topology = builder.build();

    KafkaStreams streams = new KafkaStreams(topology, p);
    streams.setStateListener((now, before) -> say("STATE " + now));
    streams.setUncaughtExceptionHandler(e -> {
      say("UNCAUGHT " + e.toString().replace('\n', ' '));
      e.printStackTrace();
      return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });

    CountDownLatch closed = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      boolean clean = streams.close(Duration.ofSeconds(30));
      say(clean ? "CLOSED" : "CLOSE_TIMED_OUT");
      closed.countDown();
    }));
    streams.start();
    closed.await();
  }

  private static synchronized void say(String line) {
    System.out.println(line);
    System.out.flush();
  }
}
