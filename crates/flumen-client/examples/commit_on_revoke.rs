//! A group consumer that hands its partitions over without re-reads: it commits what it has
//! processed when partitions are revoked, through `RebalanceListener::commit_on_revoke`.
//!
//! With auto-commit off, the application commits what it has processed. Offsets processed
//! but not yet committed when a rebalance takes a partition away would be read again by the
//! partition's next owner; the listener hands them to the consumer, which commits them while
//! the partitions are still this member's (an eager rebalance revokes every partition first;
//! `close` revokes too).
//!
//! Run against a local broker (`cargo run -p flumen-testcontainers -- up`):
//!
//! ```sh
//! cargo run -p flumen-client --example commit_on_revoke -- -b localhost:9092 visits billing
//! ```
//!
//! It prints `partition offset value` for each record, commits every 5 s and on revocation,
//! and stops after `--max-records N` records, or when no record came for `--idle-ms` (default:
//! never), with a commit on the way out.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flumen_client::TopicPartition;
use flumen_client::consumer::{
    CommitOnRevoke, Consumer, ConsumerConfig, OffsetAndMetadata, RebalanceListener,
};

/// The offset after the last record processed, per owned partition; shared by the poll loop
/// (which adds to it) and the listener (which takes the revoked partitions' offsets out).
#[derive(Clone, Default)]
struct Processed(Arc<Mutex<BTreeMap<TopicPartition, OffsetAndMetadata>>>);

impl Processed {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, OffsetAndMetadata>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, partitions: &[TopicPartition]) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        let mut done = self.lock();
        partitions
            .iter()
            .filter_map(|tp| done.remove_entry(tp))
            .collect()
    }
}

impl RebalanceListener for Processed {
    fn commit_on_revoke(&mut self, partitions: &[TopicPartition]) -> Option<CommitOnRevoke> {
        // Work still in flight (a producer to flush, say) could be awaited in this future.
        let offsets = self.take(partitions);
        Some(Box::pin(async move { offsets }))
    }

    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        // Another member may own them already: forget them, commit nothing.
        self.take(partitions);
    }
}

struct Args {
    bootstrap: String,
    topic: String,
    group: String,
    max_records: u64,
    idle: Option<Duration>,
}

const USAGE: &str =
    "usage: commit_on_revoke -b HOST:PORT TOPIC GROUP [--max-records N] [--idle-ms MS]";

fn parse_args() -> Result<Args, String> {
    let mut bootstrap = None;
    let mut positional = Vec::new();
    let mut max_records = u64::MAX;
    let mut idle = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-b" | "--bootstrap" => bootstrap = Some(value("-b")?),
            "--max-records" => {
                max_records = value("--max-records")?
                    .parse()
                    .map_err(|e| format!("--max-records: {e}"))?;
            }
            "--idle-ms" => {
                let ms: u64 = value("--idle-ms")?
                    .parse()
                    .map_err(|e| format!("--idle-ms: {e}"))?;
                idle = Some(Duration::from_millis(ms));
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ => positional.push(arg),
        }
    }
    let [topic, group]: [String; 2] = positional
        .try_into()
        .map_err(|_| "expected a topic and a group".to_owned())?;
    Ok(Args {
        bootstrap: bootstrap.ok_or("-b HOST:PORT is required")?,
        topic,
        group,
        max_records,
        idle,
    })
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = ConsumerConfig::from_properties([
        ("bootstrap.servers", args.bootstrap.as_str()),
        ("group.id", args.group.as_str()),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
    ])?;
    let mut consumer = Consumer::connect(config).await?;
    let processed = Processed::default();
    consumer.set_rebalance_listener(processed.clone());
    consumer.subscribe(&[args.topic.as_str()])?;

    let mut count = 0u64;
    let mut last_commit = Instant::now();
    let mut last_record = Instant::now();
    while count < args.max_records && args.idle.is_none_or(|idle| last_record.elapsed() < idle) {
        let mut records = consumer.poll(Duration::from_millis(200)).await?;
        for part in records.partitions_mut() {
            let tp = part.topic_partition().clone();
            let mut next = None;
            for record in part.iter() {
                let record = record?;
                let value = String::from_utf8_lossy(record.value().unwrap_or_default());
                println!("{} {} {value}", record.partition(), record.offset());
                next = Some(record.offset() + 1);
                last_record = Instant::now();
                count += 1;
                if count == args.max_records {
                    break;
                }
            }
            // Processed means printed: the output is flushed before its offset can be handed
            // to a commit.
            std::io::Write::flush(&mut std::io::stdout())?;
            if let Some(next) = next {
                processed.lock().insert(tp, OffsetAndMetadata::new(next));
            }
            if count == args.max_records {
                break;
            }
        }
        if last_commit.elapsed() >= Duration::from_secs(5) {
            let offsets = processed.lock().clone();
            if !offsets.is_empty() {
                consumer.commit_offsets_sync(offsets).await?;
            }
            last_commit = Instant::now();
        }
    }
    // Leaving the group revokes every partition: the listener's offsets are committed.
    consumer.close().await?;
    eprintln!("processed {count} record(s)");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commit_on_revoke: {e}");
            ExitCode::FAILURE
        }
    }
}
