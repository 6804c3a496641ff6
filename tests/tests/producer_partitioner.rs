//! The default partitioner against vectors computed by the Java client's own `Utils.murmur2`
//! (`tests/java/Murmur2Vectors.java`, output committed in `tests/data/murmur2_vectors.txt`):
//! the same hash, and the same partition for every partition count tried. And the keyless
//! choice against a real 3-broker cluster: a stalled leader's partition is avoided after
//! `partitioner.availability.timeout.ms`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flumen_client::admin::NewTopic;
use flumen_client::producer::partitioner::{
    DefaultPartitioner, Partitioner, murmur2, partition_for_key,
};
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_client::{Admin, ClientConfig};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};

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

/// Adaptive partitioning with `partitioner.availability.timeout.ms` (KIP-794): once a
/// partition's leader has had batches ready without taking any for longer than the timeout,
/// keyless records stop going to that partition, so they are delivered while that broker
/// is stalled; the records stuck for it are delivered when it recovers.
#[tokio::test(flavor = "current_thread")]
async fn keyless_records_avoid_a_stalled_leader_after_the_availability_timeout() {
    const PARTITIONS: i32 = 3;
    let kafka = KafkaCluster::start(ClusterSpec::three()).expect("3-broker cluster");
    let admin = Admin::connect(
        ClientConfig::from_properties([("bootstrap.servers", kafka.bootstrap())]).expect("config"),
    )
    .await
    .expect("admin");
    let topic = KafkaCluster::unique_topic("availability");
    admin
        .create_topic(
            NewTopic::new(&topic)
                .partitions(PARTITIONS)
                .replication_factor(1),
        )
        .await
        .expect("create topic");
    let deadline = Instant::now() + Duration::from_secs(60);
    let leaders: Vec<i32> = loop {
        let d = admin.describe_topic(&topic).await;
        if let Ok(d) = &d
            && d.partitions.len() == PARTITIONS as usize
            && d.partitions.iter().all(|p| p.leader.is_some())
        {
            let mut by_partition: Vec<_> = d
                .partitions
                .iter()
                .map(|p| (p.partition, p.leader.unwrap_or(-1)))
                .collect();
            by_partition.sort_unstable();
            break by_partition.into_iter().map(|(_, l)| l).collect();
        }
        assert!(Instant::now() < deadline, "no leaders: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The stalled partition must be the only one its leader leads.
    let stalled = 0;
    assert!(
        leaders.iter().filter(|&&l| l == leaders[stalled]).count() == 1,
        "leaders {leaders:?}"
    );
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka.bootstrap().as_str()),
            ("batch.size", "2000"),
            ("linger.ms", "1"),
            ("partitioner.availability.timeout.ms", "1000"),
            ("request.timeout.ms", "60000"),
            ("delivery.timeout.ms", "120000"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    let value = vec![b'v'; 100];
    // Warm up every partition (connections, first sequences confirmed).
    for p in 0..PARTITIONS {
        producer
            .send(ProducerRecord::new(&topic).partition(p).value(&value))
            .await
            .expect("send")
            .await
            .expect("delivered");
    }

    let broker = usize::try_from(leaders[stalled]).expect("broker ids are small");
    kafka.pause_broker(broker).expect("pause the leader");
    let paused_at = Instant::now();
    let mut early = Vec::new();
    // Keyless records while the timeout runs out: some go to the stalled partition.
    while paused_at.elapsed() < Duration::from_millis(2500) {
        for _ in 0..50 {
            early.push(
                producer
                    .send(ProducerRecord::new(&topic).value(&value))
                    .await
                    .expect("send"),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From now on the stalled partition is out of the choice: every record is delivered
    // while its leader is still paused.
    let mut late = Vec::new();
    for _ in 0..40 {
        for _ in 0..50 {
            late.push(
                producer
                    .send(ProducerRecord::new(&topic).value(&value))
                    .await
                    .expect("send"),
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let late_count = late.len();
    let delivered = tokio::time::timeout(Duration::from_secs(20), async {
        let mut partitions = HashMap::new();
        for f in late {
            let m = f.await.expect("delivered");
            *partitions.entry(m.partition).or_insert(0) += 1;
        }
        partitions
    })
    .await;
    let stuck_early = early.iter().filter(|f| f.try_result().is_none()).count();
    kafka.resume_broker(broker).expect("resume");
    let partitions = delivered.unwrap_or_else(|_| {
        panic!("records sent after the availability timeout still went to the stalled partition")
    });
    assert_eq!(partitions.values().sum::<usize>(), late_count);
    assert!(
        !partitions.contains_key(&(stalled as i32)),
        "{partitions:?}"
    );
    assert!(
        stuck_early > 0,
        "no record went to the stalled partition before the timeout: the test proves nothing"
    );
    // The records held for the stalled broker arrive once it is back.
    for f in early {
        f.await.expect("delivered after the broker resumed");
    }
    producer
        .close(Duration::from_secs(10))
        .await
        .expect("close");
}
