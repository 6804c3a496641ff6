//! A corrupt batch served by the real broker: the consumer checks each batch's CRC when its
//! iteration reaches the batch, delivers the records before it, names the partition and the
//! batch's base offset, and never moves past it on its own.
//!
//! The broker checks CRCs when it accepts records, so the corruption is made afterwards, in
//! the partition's log segment on disk; the broker serves fetches from those bytes as they are.

mod consumer_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use flumen_client::TopicPartition;
use flumen_client::consumer::{Consumer, ConsumerError};
use flumen_protocol::record::{RecordBatches, RecordError};
use flumen_testcontainers::KafkaCluster;
use tokio::time::Instant;

use consumer_support::*;

/// The active segment of `topic`/`partition` under the cluster's work directory.
fn segment(kafka: &KafkaCluster, topic: &str, partition: i32) -> PathBuf {
    fn find(dir: &Path, name: &str) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == name) {
                return Some(path.join("00000000000000000000.log"));
            }
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
        None
    }
    let root = kafka
        .work_dir()
        .expect("a harness-managed broker (its log directory is on this machine)");
    find(root, &format!("{topic}-{partition}"))
        .unwrap_or_else(|| panic!("no log directory for {topic}-{partition} under {root:?}"))
}

/// Flips one bit in the last byte of the batch whose base offset is `base` (inside the bytes
/// the CRC covers, so only the CRC check can notice).
fn corrupt_batch(kafka: &KafkaCluster, topic: &str, base: i64) {
    use std::io::{Seek, SeekFrom, Write};
    let path = segment(kafka, topic, 0);
    let log = Bytes::from(std::fs::read(&path).expect("read the segment"));
    let mut batches = RecordBatches::new(log.clone());
    let mut end = None;
    while let Some(batch) = batches.next() {
        let batch = batch.expect("the segment's batches are well framed");
        if batch.base_offset() == base {
            end = Some(batches.position());
            break;
        }
    }
    let end = end.unwrap_or_else(|| panic!("no batch starts at offset {base} in {path:?}"));
    let at = end - 1;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open the segment for writing");
    file.seek(SeekFrom::Start(at as u64)).expect("seek");
    file.write_all(&[log[at] ^ 0x01]).expect("write");
    file.sync_all().expect("sync");
}

/// Polls until an iteration or a poll reports an error; returns the offsets delivered before.
async fn read_until_error(c: &mut Consumer, timeout: Duration) -> (Vec<i64>, ConsumerError) {
    let deadline = Instant::now() + timeout;
    let mut offsets = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no error within {timeout:?}; delivered {offsets:?}"
        );
        let mut records = match c.poll(Duration::from_millis(200)).await {
            Ok(r) => r,
            Err(e) => return (offsets, e),
        };
        for r in records.iter() {
            match r {
                Ok(r) => offsets.push(r.offset()),
                Err(e) => return (offsets, e),
            }
        }
    }
}

fn assert_corrupt_at(err: &ConsumerError, tp: &TopicPartition, base: i64) {
    match err {
        ConsumerError::Corrupt {
            tp: at,
            offset,
            source,
        } => {
            assert_eq!(at, tp, "{err}");
            assert_eq!(*offset, base, "{err}");
            assert!(matches!(source, RecordError::CrcMismatch { .. }), "{err}");
        }
        other => panic!("expected a corrupt batch, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(&tp.to_string()), "{text}");
    assert!(text.contains(&format!("offset {base}")), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn corrupt_batch_is_reported_after_the_records_before_it_and_again_until_seeked_past() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-corrupt", 1, 1).await;
    // Three producer runs: offsets 0..10, 10..20 and 20..30, the second starting a batch at 10.
    for round in 0..3 {
        produce(kafka, &topic, 0, &values(&format!("r{round}"), 10));
    }
    corrupt_batch(kafka, &topic, 10);
    let tp = TopicPartition::new(&topic, 0);
    let mut c = consumer(kafka, &[("auto.offset.reset", "earliest")]).await;
    c.assign([tp.clone()]).expect("assign");

    let (delivered, err) = read_until_error(&mut c, Duration::from_secs(30)).await;
    assert_eq!(
        delivered,
        (0..10).collect::<Vec<i64>>(),
        "records before it"
    );
    assert_corrupt_at(&err, &tp, 10);
    assert_eq!(c.position(&tp).await.expect("position"), 10, "not skipped");

    // Like the Java client, the next polls report the same batch again.
    for _ in 0..2 {
        let (delivered, err) = read_until_error(&mut c, Duration::from_secs(30)).await;
        assert!(delivered.is_empty(), "delivered again: {delivered:?}");
        assert_corrupt_at(&err, &tp, 10);
    }

    // The application may step over it.
    c.seek(&tp, 20).expect("seek");
    let seen = read_n(&mut c, 10, Duration::from_secs(30)).await;
    let offsets: Vec<i64> = seen[&tp].iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (20..30).collect::<Vec<i64>>());
    assert_eq!(seen[&tp][0].1, "r2-0");
}
