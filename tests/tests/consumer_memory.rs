//! A slow consumer keeps its memory bounded: with a large backlog and no `poll`, the fetcher
//! stops after one answer (which `prefetch.max.bytes` caps), and the process RSS stays flat.
//!
//! Its own test binary, so no other test's allocations show in this process's RSS.

mod consumer_support;

use std::time::Duration;

use flumen_client::TopicPartition;
use flumen_testcontainers::KafkaCluster;
use tokio::time::Instant;

use consumer_support::*;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "current_thread")]
async fn slow_consumer_memory_stays_within_the_prefetch_bound() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-memory", 4, 1).await;
    let big = "x".repeat(1000);
    let k = kafka;
    let t = topic.clone();
    // A 100 MB backlog: 4 partitions x 25,000 records x 1 KB.
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for p in 0..4 {
                let (t, big) = (&t, &big);
                s.spawn(move || {
                    let vals: Vec<String> = (0..25_000).map(|i| format!("{i}-{big}")).collect();
                    produce(k, t, p, &vals);
                });
            }
        });
    })
    .await
    .expect("backlog written");

    // Four partitions could return 4 x 4 MiB in one answer; the prefetch bound caps it at 8.
    let bound = 8 * MIB;
    let mut c = consumer(
        kafka,
        &[
            ("auto.offset.reset", "earliest"),
            ("prefetch.max.bytes", &bound.to_string()),
            ("max.partition.fetch.bytes", &(4 * MIB).to_string()),
        ],
    )
    .await;
    c.assign((0..4).map(|p| TopicPartition::new(&topic, p)))
        .expect("assign");
    let before = rss_bytes();
    // One short poll starts the fetchers; the records it returns are dropped at once.
    drop(c.poll(Duration::from_millis(1)).await.expect("poll"));

    // The application now stops polling: one answer arrives, and then nothing more is fetched.
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.buffered_bytes() < 2 * MIB {
        assert!(
            Instant::now() < deadline,
            "no answer buffered: {}",
            c.buffered_bytes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let buffered = c.buffered_bytes();
    assert!(
        buffered <= bound + MIB,
        "one answer of {buffered} bytes exceeds the {bound}-byte prefetch bound"
    );
    let mut peak = 0;
    let hold = Instant::now() + Duration::from_secs(2);
    while Instant::now() < hold {
        peak = peak.max(rss_bytes());
        assert_eq!(
            c.buffered_bytes(),
            buffered,
            "the fetcher went on fetching while an answer waited for poll"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growth = peak.saturating_sub(before);
    println!(
        "RSS before {} MiB, peak {} MiB, growth {} MiB with a 100 MB backlog",
        before / MIB,
        peak / MIB,
        growth / MIB
    );
    assert!(
        growth < bound + 24 * MIB,
        "RSS grew {} MiB with a {} MiB prefetch bound",
        growth / MIB,
        bound / MIB
    );

    // The buffered data is real: the next poll returns records at once.
    let mut seen = Seen::new();
    assert!(poll_into(&mut c, &mut seen).await > 0);
}
