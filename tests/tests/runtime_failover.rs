//! A runtime job under exactly-once on a 3-broker cluster (replication factor 3) whose
//! partition leader is killed mid-stream: read_committed readers see every result exactly
//! once.

mod runtime_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flumen_client::admin::NewTopic;
use flumen_client::consumer::{Consumer, ConsumerConfig};
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};

use runtime_support::{example, terminate, wait};

async fn admin(kafka: &KafkaCluster) -> Admin {
    Admin::connect(
        ClientConfig::from_properties([("bootstrap.servers", kafka.bootstrap().as_str())])
            .expect("config"),
    )
    .await
    .expect("admin")
}

/// A topic of `partitions` partitions, 3 replicas each, once every replica is in sync.
async fn topic(admin: &Admin, prefix: &str, partitions: i32) -> String {
    let name = KafkaCluster::unique_topic(prefix);
    let created = admin
        .create_topics(
            &[NewTopic::new(&name)
                .partitions(partitions)
                .replication_factor(3)],
            false,
        )
        .await
        .expect("create topic");
    assert!(created[&name].is_ok(), "{created:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(d) = admin.describe_topic(&name).await
            && d.partitions.len() == partitions as usize
            && d.partitions
                .iter()
                .all(|p| p.isr.len() == 3 && p.leader.is_some())
        {
            return name;
        }
        assert!(Instant::now() < deadline, "{name}: replicas never in sync");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn produce(kafka: &KafkaCluster, topic: &str, from: usize, n: usize) {
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka.bootstrap().as_str()),
            ("linger.ms", "5"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    for i in from..from + n {
        let key = format!("key-{}", i % 30);
        let value = format!("value-{i}");
        let _delivery = producer
            .send(
                ProducerRecord::new(topic)
                    .key(key.as_bytes())
                    .value(value.as_bytes()),
            )
            .await
            .expect("send");
    }
    producer.flush().await.expect("flush");
    assert_eq!(producer.failed_records(), 0);
}

/// Every value of `topic` a read_committed reader sees, with how often, once `n` values are
/// there or `timeout` passed.
async fn read_committed(
    kafka: &KafkaCluster,
    topic: &str,
    partitions: i32,
    n: usize,
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let mut consumer = Consumer::connect(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", kafka.bootstrap().as_str()),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
        ])
        .expect("config"),
    )
    .await
    .expect("consumer");
    consumer
        .assign((0..partitions).map(|p| TopicPartition::new(topic, p)))
        .expect("assign");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    let deadline = Instant::now() + timeout;
    while total < n && Instant::now() < deadline {
        let mut records = consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
        for r in records.iter() {
            let r = r.expect("record");
            let v = String::from_utf8_lossy(r.value().unwrap_or_default()).into_owned();
            *seen.entry(v).or_default() += 1;
            total += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_killing_the_partition_leader_mid_stream() {
    let kafka = KafkaCluster::start(ClusterSpec::three()).expect("3-broker cluster");
    let admin = admin(&kafka).await;
    let input = topic(&admin, "fo-in", 3).await;
    let output = topic(&admin, "fo-out", 3).await;
    let app = KafkaCluster::unique_topic("fo-app");
    let bootstrap = kafka.bootstrap();
    let child = Command::new(example("uppercase"))
        .args(["-b", &bootstrap, "--input", &input, "--output", &output])
        .args(["--application-id", &app, "--workers", "2"])
        .args(["--guarantee", "exactly_once", "--instance-id", "node-a"])
        .args(["-X", "pin.workers=false"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start uppercase");
    let (chunks, per_chunk) = (20, 1_000);
    let mut killed = None;
    for i in 0..chunks {
        produce(&kafka, &input, i * per_chunk, per_chunk).await;
        if i == 8 {
            // The leader of the output's partition 0: it is written to in every transaction.
            let d = admin.describe_topic(&output).await.expect("describe");
            let leader = d.partitions[0].leader.expect("a leader");
            kafka
                .kill_broker(usize::try_from(leader).expect("small id"))
                .expect("kill the leader");
            killed = Some(leader);
            eprintln!("killed broker {leader}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let n = chunks * per_chunk;
    let seen = read_committed(&kafka, &output, 3, n, Duration::from_secs(120)).await;
    terminate(&child);
    let out = wait(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let duplicates: Vec<(&String, &usize)> = seen.iter().filter(|(_, c)| **c > 1).collect();
    let missing: Vec<String> = (0..n)
        .map(|i| format!("VALUE-{i}"))
        .filter(|v| !seen.contains_key(v))
        .collect();
    eprintln!(
        "leader {killed:?} killed: {} distinct results of {n}, {} duplicated, {} missing",
        seen.len(),
        duplicates.len(),
        missing.len()
    );
    assert!(
        duplicates.is_empty(),
        "duplicates {:?}\n{stderr}",
        &duplicates[..duplicates.len().min(5)]
    );
    assert!(
        missing.is_empty(),
        "missing {:?}\n{stderr}",
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len(), n);
    assert!(out.status.success(), "the job stops cleanly:\n{stderr}");
}
