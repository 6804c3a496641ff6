//! `buffer.memory` backpressure against a paused (SIGSTOPped) broker: `send` blocks, fails
//! after `max.block.ms` with a clear error, and the buffered bytes never exceed the budget;
//! after the broker resumes, everything buffered is delivered.

use std::time::{Duration, Instant};

use flumen_client::admin::NewTopic;
use flumen_client::producer::{ProduceError, Producer, ProducerConfig, ProducerRecord};
use flumen_client::{Admin, ClientConfig};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};

const BUFFER: usize = 1024 * 1024;
const MAX_BLOCK: Duration = Duration::from_millis(1500);

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "current_thread")]
async fn send_blocks_then_fails_after_max_block_against_a_paused_broker_without_growing() {
    let kafka = KafkaCluster::start(ClusterSpec::single()).expect("cluster");
    let admin = Admin::connect(
        ClientConfig::from_properties([("bootstrap.servers", kafka.bootstrap())]).expect("config"),
    )
    .await
    .expect("admin");
    let topic = KafkaCluster::unique_topic("backpressure");
    admin
        .create_topic(NewTopic::new(&topic).partitions(4).replication_factor(1))
        .await
        .expect("create topic");
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka.bootstrap().as_str()),
            ("buffer.memory", &BUFFER.to_string()),
            ("max.block.ms", &MAX_BLOCK.as_millis().to_string()),
            ("request.timeout.ms", "120000"),
            ("delivery.timeout.ms", "300000"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    let value = vec![b'x'; 1000];
    // Warm up: connections and metadata are in place before the pause.
    producer
        .send(ProducerRecord::new(&topic).value(&value))
        .await
        .expect("send")
        .await
        .expect("delivered");

    kafka.pause_broker(0).expect("pause");
    let mut pending = Vec::new();
    let mut sent = 0usize;
    let (blocked_for, err) = loop {
        let started = Instant::now();
        match producer
            .send(ProducerRecord::new(&topic).value(&value))
            .await
        {
            Ok(f) => {
                pending.push(f);
                sent += 1;
                assert!(sent < 10 * BUFFER / value.len(), "send never blocked");
            }
            Err(e) => break (started.elapsed(), e),
        }
    };
    assert!(
        matches!(err, ProduceError::BufferExhausted { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("max.block.ms"), "{err}");
    assert!(
        blocked_for >= MAX_BLOCK - Duration::from_millis(50),
        "gave up after {blocked_for:?}"
    );
    assert!(
        blocked_for < MAX_BLOCK + Duration::from_secs(2),
        "blocked {blocked_for:?}"
    );
    assert!(
        producer.buffered_bytes() <= BUFFER,
        "{} buffered",
        producer.buffered_bytes()
    );
    assert!(
        sent * value.len() >= BUFFER / 2,
        "only {sent} records fit in the buffer"
    );

    let rss_before = rss_bytes();
    for _ in 0..3 {
        let err = producer
            .send(ProducerRecord::new(&topic).value(&value))
            .await
            .expect_err("still full");
        assert!(
            matches!(err, ProduceError::BufferExhausted { .. }),
            "{err:?}"
        );
        assert!(producer.buffered_bytes() <= BUFFER);
    }
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < BUFFER, "RSS grew by {grown} bytes while blocked");

    kafka.resume_broker(0).expect("resume");
    producer.flush().await.expect("flush");
    for f in pending {
        f.await.expect("delivered after the broker resumed");
    }
    assert_eq!(producer.buffered_bytes(), 0);
}
