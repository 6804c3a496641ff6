// Prints murmur2 test vectors computed by the Java client's own Utils.murmur2, for
// tests/tests/producer_partitioner.rs. Run:
//   java -cp <kafka-clients jar>:<slf4j-api jar> \
//        tests/java/Murmur2Vectors.java > tests/data/murmur2_vectors.txt
// Output, one vector per line: <key as hex, "-" for empty> <murmur2> <partition for 1..=16 and 100, 997>
import org.apache.kafka.common.utils.Utils;
import java.nio.charset.StandardCharsets;
import java.util.Random;

public class Murmur2Vectors {
    public static void main(String[] args) {
        java.util.List<byte[]> keys = new java.util.ArrayList<>();
        keys.add(new byte[0]);
        for (String s : new String[] {"a", "ab", "abc", "abcd", "abcde", "key-0", "key-1", "order-42",
                "21", "foobar", "hello world", "\u00e9t\u00e9", "kafka", "flumen"}) {
            keys.add(s.getBytes(StandardCharsets.UTF_8));
        }
        // Bytes >= 0x80 exercise Java's signed-byte tail handling.
        keys.add(new byte[] {(byte) 0x80});
        keys.add(new byte[] {(byte) 0xff, (byte) 0xfe});
        keys.add(new byte[] {(byte) 0xff, (byte) 0xfe, (byte) 0xfd});
        keys.add(new byte[] {(byte) 0xf0, 1, (byte) 0x90, 2, (byte) 0xa0});
        Random random = new Random(42);
        for (int i = 0; i < 200; i++) {
            byte[] k = new byte[random.nextInt(40)];
            random.nextBytes(k);
            keys.add(k);
        }
        int[] counts = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 100, 997};
        for (byte[] k : keys) {
            StringBuilder line = new StringBuilder();
            if (k.length == 0) {
                line.append('-');
            }
            for (byte b : k) {
                line.append(String.format("%02x", b));
            }
            int h = Utils.murmur2(k);
            line.append(' ').append(h);
            for (int n : counts) {
                line.append(' ').append(Utils.toPositive(h) % n);
            }
            System.out.println(line);
        }
    }
}
