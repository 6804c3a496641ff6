//! `flumen bench produce`: producer throughput and send-to-acknowledgement latency.

use std::process::ExitCode;
use std::time::Instant;

use flumen_client::Admin;
use flumen_client::producer::{ProduceError, Producer, ProducerRecord, RecordMetadata};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;

use super::report::{Report, latency_histogram, progress};
use super::{BenchArgs, Pacer};
use crate::commands::topics::ensure_topic;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Deliveries awaited together before the loop waits for the oldest.
const MAX_PENDING: usize = 100_000;

/// Runs `bench produce`.
pub async fn run(args: BenchArgs, mut settings: Settings) -> Result<ExitCode> {
    args.apply_producer_options(&mut settings);
    settings.producer_throughput_defaults();
    let producer = crate::commands::producer(settings).await?;
    ensure_topic(
        &Admin::new(producer.cluster().clone()),
        &args.topic,
        args.partitions,
    )
    .await?;
    let report = produce(&producer, &args, args.records, true).await?;
    let _ = producer.close(std::time::Duration::from_secs(10)).await;
    report.print(args.json);
    if report.failed > 0 {
        return Err(CliError::Partial(format!(
            "{} record(s) failed",
            report.failed
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends `count` records of `args.record_size` bytes and waits for every acknowledgement.
pub async fn produce(
    producer: &Producer,
    args: &BenchArgs,
    count: u64,
    show_progress: bool,
) -> Result<Report> {
    let payload = args.payload();
    let bar = progress(count, "produce");
    if !show_progress {
        bar.finish_and_clear();
    }
    let pacer = Pacer::new(args.rate);
    let mut latency = latency_histogram();
    let mut done = Done::default();
    let mut pending = FuturesUnordered::new();
    let started = Instant::now();
    for i in 0..count {
        pacer.wait(i).await;
        let sent = Instant::now();
        let record = ProducerRecord::new(&args.topic).value(&payload);
        match producer.send(record).await {
            Ok(delivery) => pending.push(delivery.map(move |r| (sent, r))),
            Err(e) => done.failure(&e),
        }
        while pending.len() >= MAX_PENDING {
            if let Some((sent, r)) = pending.next().await {
                done.record(sent, r, &mut latency);
            }
        }
        while let Some(Some((sent, r))) = pending.next().now_or_never() {
            done.record(sent, r, &mut latency);
        }
        if i % 1024 == 0 {
            bar.set_position(done.ok + done.failed);
        }
    }
    let flushed = producer.flush().await;
    while let Some((sent, r)) = pending.next().await {
        done.record(sent, r, &mut latency);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    if let Err(e) = flushed
        && done.failed == 0
    {
        return Err(CliError::produce(&e));
    }
    Ok(Report {
        kind: "produce",
        topic: args.topic.clone(),
        records: done.ok,
        failed: done.failed,
        bytes: done.ok * args.record_size as u64,
        elapsed,
        latency: Some(latency),
    })
}

#[derive(Default)]
struct Done {
    ok: u64,
    failed: u64,
    first_error: bool,
}

impl Done {
    fn record(
        &mut self,
        sent: Instant,
        result: std::result::Result<RecordMetadata, ProduceError>,
        latency: &mut Histogram<u64>,
    ) {
        match result {
            Ok(_) => {
                self.ok += 1;
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(us.max(1));
            }
            Err(e) => self.failure(&e),
        }
    }

    fn failure(&mut self, e: &ProduceError) {
        self.failed += 1;
        if !self.first_error {
            self.first_error = true;
            eprintln!("flumen: first failed record: {}", CliError::produce(e));
        }
    }
}
