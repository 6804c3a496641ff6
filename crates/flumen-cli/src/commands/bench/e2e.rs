//! `flumen bench e2e`: produce-to-consume latency. Each record carries the time it was
//! sent (nanoseconds since the run started, big-endian, in its first 8 bytes); the consumer
//! in the same process reads it back on arrival.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use flumen_client::producer::ProducerRecord;
use flumen_client::{Admin, TopicPartition};
use futures::stream::{FuturesUnordered, StreamExt};

use super::report::{Report, latency_histogram, progress};
use super::{BenchArgs, Pacer};
use crate::commands::topics::ensure_topic;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Give up when no record arrives for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `bench e2e`.
pub async fn run(args: BenchArgs, settings: Settings) -> Result<ExitCode> {
    if args.record_size < 8 {
        return Err(CliError::Usage(
            "bench e2e needs --record-size of at least 8 (the send time is carried in the value)"
                .into(),
        ));
    }
    let mut producer_settings = settings.clone();
    args.apply_producer_options(&mut producer_settings);
    // Latency, not batching, is measured: send at once unless -X linger.ms says otherwise
    // (set before the producer commands' defaults, so their linger.ms does not apply here).
    producer_settings.set_default("linger.ms", "0");
    producer_settings.producer_throughput_defaults();
    let producer = crate::commands::producer(producer_settings).await?;
    let admin = Admin::new(producer.cluster().clone());
    let count = ensure_topic(&admin, &args.topic, args.partitions).await?;
    let partitions: Vec<TopicPartition> = (0..count)
        .map(|p| TopicPartition::new(&args.topic, p))
        .collect();

    let mut consumer = crate::commands::consumer(settings).await?;
    consumer
        .assign(partitions.clone())
        .map_err(CliError::consume)?;
    consumer
        .seek_to_end(&partitions)
        .map_err(CliError::consume)?;
    // Resolve the end positions before sending, so no record of this run is skipped.
    for tp in &partitions {
        consumer.position(tp).await.map_err(CliError::consume)?;
    }

    let base = Instant::now();
    let bar = progress(args.records, "e2e");
    let send = async {
        let pacer = Pacer::new(args.rate);
        let mut value = args.payload();
        let mut pending = FuturesUnordered::new();
        let mut failed = 0u64;
        for i in 0..args.records {
            pacer.wait(i).await;
            let nanos = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            value[..8].copy_from_slice(&nanos.to_be_bytes());
            match producer
                .send(ProducerRecord::new(&args.topic).value(&value))
                .await
            {
                Ok(d) => pending.push(d),
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        eprintln!("flumen: first failed record: {}", CliError::produce(&e));
                    }
                }
            }
            while let Some(Some(r)) = futures::FutureExt::now_or_never(pending.next()) {
                failed += u64::from(r.is_err());
            }
        }
        let _ = producer.flush().await;
        while let Some(r) = pending.next().await {
            failed += u64::from(r.is_err());
        }
        failed
    };
    let receive = async {
        let mut latency = latency_histogram();
        let (mut received, mut bytes) = (0u64, 0u64);
        let mut last_progress = Instant::now();
        while received < args.records {
            let mut polled = consumer
                .poll(Duration::from_millis(100))
                .await
                .map_err(CliError::consume)?;
            let before = received;
            for record in polled.iter() {
                let record = record.map_err(CliError::consume)?;
                let Some(sent) = record.value().and_then(|v| v.get(..8)) else {
                    continue;
                };
                let mut raw = [0u8; 8];
                raw.copy_from_slice(sent);
                let now = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let us = now.saturating_sub(u64::from_be_bytes(raw)) / 1_000;
                latency.saturating_record(us.max(1));
                received += 1;
                bytes += record.value().map_or(0, <[u8]>::len) as u64;
            }
            if received > before {
                last_progress = Instant::now();
                bar.set_position(received);
            } else if last_progress.elapsed() > STALL_TIMEOUT {
                break;
            }
        }
        Ok::<_, CliError>((received, bytes, latency))
    };
    let (failed, received) = tokio::join!(send, receive);
    let (received, bytes, latency) = received?;
    let elapsed = base.elapsed();
    bar.finish_and_clear();
    let _ = producer.close(Duration::from_secs(10)).await;
    let _ = consumer.close().await;
    let report = Report {
        kind: "e2e",
        topic: args.topic.clone(),
        records: received,
        failed: failed + args.records.saturating_sub(received + failed),
        bytes,
        elapsed,
        latency: Some(latency),
    };
    report.print(args.json);
    if report.failed > 0 {
        return Err(CliError::Partial(format!(
            "{} of {} record(s) were not received",
            report.failed, args.records
        )));
    }
    Ok(ExitCode::SUCCESS)
}
