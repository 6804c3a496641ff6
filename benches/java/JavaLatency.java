// The Java client's end-to-end latency on `compare pipeline --latency-engine none`'s
// workload, for the peer figure: run as a single-file source with the harness's Kafka jars,
//   java -cp '<kafka libs>/*' JavaLatency.java BOOTSTRAP TOPIC PARTITIONS RATE SECONDS SIZE
// A producer thread (linger.ms=0, otherwise the Java defaults, as `offer`) sends RATE records
// per second of SIZE bytes whose value starts with the send time in microseconds (16
// digits); a consumer assigned to every partition (fetch.max.wait.ms=100, as
// `read_latencies`) reads them. Records sent in the first 3 s are not measured. Prints one
// JSON line: records, p50_ms, p99_ms, p999_ms, max_ms.
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaLatency {
    static long micros() {
        Instant now = Instant.now();
        return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        long rate = Long.parseLong(args[3]);
        long seconds = Long.parseLong(args[4]);
        int size = Math.max(16, Integer.parseInt(args[5]));

        Properties pp = new Properties();
        pp.put("bootstrap.servers", bootstrap);
        pp.put("linger.ms", "0");
        pp.put("key.serializer", ByteArraySerializer.class.getName());
        pp.put("value.serializer", ByteArraySerializer.class.getName());
        Thread writer = new Thread(() -> {
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
                long total = rate * (seconds + 3);
                long start = System.nanoTime();
                for (long i = 0; i < total; i++) {
                    long due = start + (long) (i * 1e9 / rate);
                    long ahead = due - System.nanoTime();
                    if (ahead > 1_000_000L) {
                        LockSupport.parkNanos(ahead);
                    }
                    byte[] value = new byte[size];
                    Arrays.fill(value, (byte) 'x');
                    byte[] stamp = String.format("%016d", micros()).getBytes();
                    System.arraycopy(stamp, 0, value, 0, 16);
                    producer.send(new ProducerRecord<>(topic, value));
                }
                producer.flush();
            }
        });

        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("fetch.max.wait.ms", "100");
        cp.put("auto.offset.reset", "earliest");
        cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cp.put("value.deserializer", ByteArrayDeserializer.class.getName());
        long expected = rate * seconds;
        long[] latencies = new long[(int) expected];
        int n = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            consumer.assign(tps);
            // Positions looked up before the first record is sent.
            for (TopicPartition tp : tps) {
                consumer.position(tp);
            }
            writer.start();
            long measureFrom = micros() + 3_000_000L;
            long end = System.nanoTime() + (seconds + 3 + 10) * 1_000_000_000L;
            while (System.nanoTime() < end && n < expected) {
                var records = consumer.poll(Duration.ofMillis(50));
                long now = micros();
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    long sent = Long.parseLong(new String(r.value(), 0, 16).trim());
                    if (sent >= measureFrom && n < expected) {
                        latencies[n++] = Math.max(1, now - sent);
                    }
                }
            }
        }
        writer.join();
        long[] got = Arrays.copyOf(latencies, n);
        Arrays.sort(got);
        System.out.printf(
            "{\"records\":%d,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"p999_ms\":%.2f,\"max_ms\":%.2f}%n",
            n, q(got, 0.5), q(got, 0.99), q(got, 0.999), n == 0 ? 0.0 : got[n - 1] / 1000.0);
    }

    static double q(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0.0;
        }
        int i = (int) Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
        return sorted[Math.max(0, i)] / 1000.0;
    }
}
