import java.util.Collections;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.utils.AppInfoParser;

/**
 * The AdminClient of an older Java client (kafka-clients 0.11 to 3.9, compiled against each):
 *
 * <pre>
 *   OldAdmin BOOTSTRAP TOPIC
 * </pre>
 *
 * creates TOPIC with two partitions, lists and describes it, and describes its configs.
 * Prints "topic NAME PARTITIONS" and "config retention.ms VALUE"; a failed expectation prints
 * "FAIL step: why" and exits 1.
 */
public final class OldAdmin {
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
        if (args.length != 2) {
            System.err.println("usage: OldAdmin BOOTSTRAP TOPIC");
            System.exit(2);
        }
        String step = "start";
        try {
            String version = AppInfoParser.getVersion();
            out("client %s", version);
            Properties p = new Properties();
            p.put("bootstrap.servers", args[0]);
            p.put("client.id", "old-admin-" + version);
            p.put("request.timeout.ms", "20000");
            String topic = args[1];
            AdminClient a = AdminClient.create(p);
            try {
                step = "createTopics";
                a.createTopics(Collections.singleton(new NewTopic(topic, 2, (short) 1))).all().get(30, TimeUnit.SECONDS);
                step = "listTopics";
                Set<String> names = a.listTopics().names().get(30, TimeUnit.SECONDS);
                check(names.contains(topic), "listTopics: %s", names);
                step = "describeTopics";
                TopicDescription d = a.describeTopics(Collections.singleton(topic)).all().get(30, TimeUnit.SECONDS).get(topic);
                check(d.partitions().size() == 2, "partitions %s", d.partitions());
                out("topic %s %d", d.name(), d.partitions().size());
                step = "describeConfigs";
                ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
                Config c = a.describeConfigs(Collections.singleton(r)).all().get(30, TimeUnit.SECONDS).get(r);
                ConfigEntry e = c.get("retention.ms");
                check(e != null && "604800000".equals(e.value()), "retention.ms %s", e);
                out("config retention.ms %s", e.value());
            } finally {
                a.close();
            }
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
}
