//! The default partitioner against vectors computed by the Java client's own `Utils.murmur2`
//! (`tests/java/Murmur2Vectors.java`, output committed in `tests/data/murmur2_vectors.txt`):
//! the same hash, and the same partition for every partition count tried.

use flumen_client::producer::partitioner::{
    DefaultPartitioner, Partitioner, murmur2, partition_for_key,
};

const COUNTS: [i32; 18] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 100, 997,
];

fn hex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn murmur2_and_partition_choice_match_the_java_client_for_every_vector() {
    let text = include_str!("../data/murmur2_vectors.txt");
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 2 + COUNTS.len(), "line {line:?}");
        let key = hex(fields[0]);
        let java_hash: i32 = fields[1].parse().expect("hash");
        assert_eq!(murmur2(&key), java_hash, "murmur2 of {:02x?}", key);
        for (count, expected) in COUNTS.iter().zip(&fields[2..]) {
            let expected: i32 = expected.parse().expect("partition");
            assert_eq!(
                partition_for_key(&key, *count),
                expected,
                "key {key:02x?}, {count} partitions"
            );
            assert_eq!(
                DefaultPartitioner::default().partition("t", Some(&key), *count),
                Some(expected)
            );
        }
        checked += 1;
    }
    assert!(checked > 200, "only {checked} vectors");
}

#[test]
fn keyless_records_are_left_to_the_sticky_choice_and_ignore_keys_spreads_keyed_ones() {
    assert_eq!(DefaultPartitioner::default().partition("t", None, 12), None);
    let ignore = DefaultPartitioner { ignore_keys: true };
    assert_eq!(ignore.partition("t", Some(b"k"), 12), None);
}
