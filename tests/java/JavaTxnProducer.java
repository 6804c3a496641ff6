// A transactional Kafka Java producer for Flumen's isolation tests, run as a single-file
// source: java -cp <kafka classpath> JavaTxnProducer.java <bootstrap> <topic> <transactional-id>
// Writes three transactions of five records to partition 0: "c1-*" committed, "a-*"
// aborted, "c2-*" committed; prints DONE.
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaTxnProducer {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("transactional.id", args[2]);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            String[][] txns = {{"c1", "commit"}, {"a", "abort"}, {"c2", "commit"}};
            for (String[] t : txns) {
                producer.beginTransaction();
                for (int i = 0; i < 5; i++) {
                    producer.send(new ProducerRecord<>(args[1], 0, null, t[0] + "-" + i)).get();
                }
                if (t[1].equals("commit")) {
                    producer.commitTransaction();
                } else {
                    producer.abortTransaction();
                }
            }
        }
        System.out.println("DONE");
    }
}
