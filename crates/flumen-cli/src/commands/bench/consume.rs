//! `flumen bench consume`: consumer throughput from the start of a topic.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use flumen_client::admin::{IsolationLevel, OffsetSpec};
use flumen_client::{Admin, TopicPartition};

use super::BenchArgs;
use super::report::{Report, progress};
use crate::commands::topics::ensure_topic;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Give up when no record arrives for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `bench consume`: fills the topic up to `--records` if it holds fewer, then reads
/// that many records from the beginning.
pub async fn run(args: BenchArgs, settings: Settings) -> Result<ExitCode> {
    let mut producer_settings = settings.clone();
    args.apply_producer_options(&mut producer_settings);
    producer_settings.producer_throughput_defaults();
    let producer = crate::commands::producer(producer_settings).await?;
    let admin = Admin::new(producer.cluster().clone());
    let count = ensure_topic(&admin, &args.topic, args.partitions).await?;
    let partitions: Vec<TopicPartition> = (0..count)
        .map(|p| TopicPartition::new(&args.topic, p))
        .collect();
    let held = held_records(&admin, &partitions).await?;
    if held < args.records {
        eprintln!(
            "Filling {} with {} record(s) first...",
            args.topic,
            args.records - held
        );
        let fill = super::produce::produce(&producer, &args, args.records - held, true).await?;
        if fill.failed > 0 {
            return Err(CliError::Partial(format!(
                "{} fill record(s) failed",
                fill.failed
            )));
        }
    }
    let _ = producer.close(Duration::from_secs(10)).await;

    let mut consumer = crate::commands::consumer(settings).await?;
    consumer
        .assign(partitions.clone())
        .map_err(CliError::consume)?;
    consumer
        .seek_to_beginning(&partitions)
        .map_err(CliError::consume)?;
    let bar = progress(args.records, "consume");
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.records {
        let mut polled = consumer
            .poll(Duration::from_millis(500))
            .await
            .map_err(CliError::consume)?;
        let before = records;
        for record in polled.iter() {
            let record = record.map_err(CliError::consume)?;
            records += 1;
            bytes += (record.key().map_or(0, <[u8]>::len) + record.value().map_or(0, <[u8]>::len))
                as u64;
            if records == args.records {
                break;
            }
        }
        if records > before {
            last_progress = Instant::now();
            bar.set_position(records);
        } else if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(CliError::Client(format!(
                "no record for {} s after {records} of {}",
                STALL_TIMEOUT.as_secs(),
                args.records
            )));
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let _ = consumer.close().await;
    Report {
        kind: "consume",
        topic: args.topic.clone(),
        records,
        failed: 0,
        bytes,
        elapsed,
        latency: None,
    }
    .print(args.json);
    Ok(ExitCode::SUCCESS)
}

/// Records between the log start and end of every partition.
async fn held_records(admin: &Admin, partitions: &[TopicPartition]) -> Result<u64> {
    let list = |spec: OffsetSpec| {
        let specs: Vec<_> = partitions.iter().map(|tp| (tp.clone(), spec)).collect();
        async move {
            admin
                .list_offsets(&specs, IsolationLevel::ReadUncommitted)
                .await
        }
    };
    let (start, end) = (
        list(OffsetSpec::Earliest).await?,
        list(OffsetSpec::Latest).await?,
    );
    let mut held = 0u64;
    for tp in partitions {
        let lo = start
            .get(tp)
            .and_then(|r| r.as_ref().ok())
            .map_or(0, |o| o.offset);
        let hi = end
            .get(tp)
            .and_then(|r| r.as_ref().ok())
            .map_or(0, |o| o.offset);
        held += u64::try_from(hi - lo).unwrap_or(0);
    }
    Ok(held)
}
