//! The runtime's event-time windows against a real broker: the `word_count` example, bounded,
//! with two workers, on out-of-order input spread over six partitions; every output record is
//! checked against counts computed here.

mod runtime_support;

use std::collections::BTreeMap;
use std::time::Duration;

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_testcontainers::KafkaCluster;
use runtime_support::{kafka, read_all, run_example, topic};

const WORDS: [&str; 12] = [
    "kafka", "stream", "window", "event", "time", "count", "rust", "flink", "state", "key",
    "topic", "late",
];

/// A line of one to four words, chosen by a small deterministic generator.
struct Lines(u64);

impl Lines {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn line(&mut self) -> String {
        let n = 1 + self.next() % 4;
        (0..n)
            .map(|_| WORDS[(self.next() % WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `(partition, timestamp, line)`: per partition, timestamps rising over `span_ms` with
/// jitter of up to `jitter_ms` backwards from the newest so far (on time for an
/// out-of-orderness of `jitter_ms`).
fn input(
    partitions: i32,
    per_partition: usize,
    start: i64,
    span_ms: i64,
    jitter_ms: i64,
) -> Vec<(i32, i64, String)> {
    let mut g = Lines(42);
    let mut out = Vec::new();
    for p in 0..partitions {
        let mut newest = start;
        for i in 0..per_partition {
            let base = start + span_ms * i as i64 / per_partition as i64;
            let back = (g.next() % (jitter_ms as u64 + 1)) as i64;
            let ts = (base.max(newest) - back).max(newest - jitter_ms);
            newest = newest.max(ts);
            out.push((p, ts, g.line()));
        }
    }
    out
}

async fn produce(topic: &str, records: &[(i32, i64, String)]) {
    let producer = Producer::connect(
        ProducerConfig::from_properties([("bootstrap.servers", kafka().bootstrap().as_str())])
            .expect("config"),
    )
    .await
    .expect("producer");
    for (p, ts, line) in records {
        let mut record = ProducerRecord::new(topic).value(line.as_bytes());
        record.partition = Some(*p);
        record.timestamp = Some(*ts);
        let _delivery = producer.send(record).await.expect("send");
    }
    producer.flush().await.expect("flush");
    assert_eq!(producer.failed_records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_counts_every_word_of_every_window_exactly_once() {
    let input_topic = topic("wc-in", 6).await;
    let output = topic("wc-out", 6).await;
    let app = KafkaCluster::unique_topic("wc-app");
    // 1 s windows over 20 s of event time, out of order by up to 1.5 s within a partition.
    let start = 1_700_000_000_000i64 + 250;
    let records = input(6, 400, start, 20_000, 1_500);
    produce(&input_topic, &records).await;

    let out = run_example(
        "word_count",
        &[
            "-b",
            &kafka().bootstrap(),
            "--input",
            &input_topic,
            "--output",
            &output,
            "--application-id",
            &app,
            "--workers",
            "2",
            "--window",
            "1s",
            "--max-out-of-orderness",
            "1500ms",
            "--exit-at-end",
        ],
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "word_count failed:\n{stderr}");
    assert!(stderr.contains("records processed, 0 late"), "{stderr}");

    // What the output must hold, computed from the input directly.
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (_, ts, line) in &records {
        for word in line.split_whitespace() {
            *expected
                .entry((word.to_owned(), ts - ts.rem_euclid(1_000)))
                .or_default() += 1;
        }
    }
    let read = read_all(&output, expected.len());
    let mut actual: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for r in &read {
        let v: serde_json::Value = serde_json::from_str(&r.value).expect("JSON value");
        let window_start = v["window_start"].as_i64().expect("window_start");
        assert_eq!(v["window_end"].as_i64(), Some(window_start + 1_000), "{v}");
        let count = v["count"].as_u64().expect("count");
        let previous = actual.insert((r.key.clone(), window_start), count);
        assert!(
            previous.is_none(),
            "two results for {} at {window_start}",
            r.key
        );
    }
    assert_eq!(read.len(), expected.len(), "one record per word and window");
    assert_eq!(actual, expected);
}
