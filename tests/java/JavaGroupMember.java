// A Kafka Java-client group member for Flumen's mixed-group tests, run as a single-file
// source: java -cp <kafka classpath> JavaGroupMember.java <bootstrap> <topic> <group> <stop-file> [assignor]
// Prints ASSIGNED/REVOKED lines on rebalances and one RECORD line per record; commits
// after each non-empty poll; exits (leaving the group) once <stop-file> exists.
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class JavaGroupMember {
    static String names(Collection<TopicPartition> tps) {
        return tps.stream().map(tp -> tp.topic() + ":" + tp.partition()).sorted().collect(Collectors.joining(","));
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("group.id", args[2]);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        p.put("heartbeat.interval.ms", "500");
        p.put("session.timeout.ms", "10000");
        p.put("partition.assignment.strategy",
            args.length > 4 && args[4].equals("cooperative-sticky")
                ? "org.apache.kafka.clients.consumer.CooperativeStickyAssignor"
                : "org.apache.kafka.clients.consumer.RangeAssignor");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of(args[1]), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                    System.out.println("REVOKED " + names(tps));
                    System.out.flush();
                }
                public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                    System.out.println("ASSIGNED " + names(c.assignment()));
                    System.out.flush();
                }
            });
            while (!Files.exists(Paths.get(args[3]))) {
                ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(100));
                for (ConsumerRecord<String, String> r : records) {
                    System.out.println("RECORD " + r.topic() + " " + r.partition() + " " + r.offset());
                }
                if (!records.isEmpty()) {
                    c.commitSync();
                }
                System.out.flush();
            }
        }
        System.out.println("CLOSED");
        System.out.flush();
    }
}
