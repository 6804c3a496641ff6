//! The producer through a partition leader's death in a 3-broker cluster: with idempotence
//! and acks=all, every record sent is in the log exactly once and in order, as kcat reads it.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use flumen_client::admin::NewTopic;
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_client::{Admin, ClientConfig};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};

#[tokio::test(flavor = "current_thread")]
async fn killing_the_partition_leader_mid_stream_loses_and_duplicates_nothing() {
    const N: usize = 200_000;
    const PARTITIONS: i32 = 6;
    let kafka = KafkaCluster::start(ClusterSpec::three()).expect("3-broker cluster");
    let admin = Admin::connect(
        ClientConfig::from_properties([("bootstrap.servers", kafka.bootstrap())]).expect("config"),
    )
    .await
    .expect("admin");
    let topic = KafkaCluster::unique_topic("failover");
    admin
        .create_topic(
            NewTopic::new(&topic)
                .partitions(PARTITIONS)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await
        .expect("create RF 3 topic");
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let d = admin.describe_topic(&topic).await;
        if let Ok(d) = &d
            && d.partitions.len() == PARTITIONS as usize
            && d.partitions.iter().all(|p| p.isr.len() == 3)
            && let Some(leader) = d.partitions[0].leader
        {
            break leader;
        }
        assert!(Instant::now() < deadline, "ISR never reached 3: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka.bootstrap().as_str()),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("request.timeout.ms", "10000"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    let started = Instant::now();
    let mut futures = Vec::with_capacity(N);
    for i in 0..N {
        if i == N / 3 {
            // Let what is buffered reach the broker first, so the kill hits requests in flight.
            let index = usize::try_from(leader).expect("broker ids are small");
            kafka
                .kill_broker(index)
                .expect("kill the leader of partition 0");
            eprintln!(
                "killed broker {leader} after {i} records, {:?}",
                started.elapsed()
            );
        }
        let key = format!("k{}", i % 1000);
        let value = format!("{i}");
        futures.push(
            producer
                .send(
                    ProducerRecord::new(&topic)
                        .key(key.as_bytes())
                        .value(value.as_bytes()),
                )
                .await
                .expect("send"),
        );
    }
    producer.flush().await.expect("flush");
    for (i, f) in futures.into_iter().enumerate() {
        f.await.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
    }
    eprintln!("all {N} acknowledged after {:?}", started.elapsed());
    producer
        .close(Duration::from_secs(10))
        .await
        .expect("close");

    let out = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &kafka.bootstrap(),
            "-t",
            &topic,
            "-e",
            "-q",
            "-f",
            "%p %s\n",
        ])
        .output()
        .expect("kcat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut seen = vec![false; N];
    let mut last: HashMap<i32, usize> = HashMap::new();
    let mut count = 0;
    for line in text.lines() {
        let (p, v) = line.split_once(' ').expect("partition and value");
        let p: i32 = p.parse().expect("partition");
        let i: usize = v.parse().expect("value");
        assert!(!seen[i], "record {i} duplicated");
        seen[i] = true;
        if let Some(prev) = last.insert(p, i) {
            assert!(prev < i, "partition {p}: {prev} before {i}");
        }
        count += 1;
    }
    let lost: Vec<usize> = (0..N).filter(|i| !seen[*i]).take(10).collect();
    assert!(lost.is_empty(), "lost records, first ones: {lost:?}");
    assert_eq!(count, N);
}
