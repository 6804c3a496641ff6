//! `compare restore`: how long a task takes to restore window state from its changelog.
//!
//! A count per key over a one-hour tumbling window (nothing closes during the run) reads
//! `--keys` distinct keys from a 1-partition topic, so one task holds them all; the run stops
//! cleanly (its last checkpoint logged every key). A second run of the same application
//! then restores that task: the figure is the restore's own duration, as the runtime reports
//! it (`flumen_task_restore_seconds`), with the records and bytes it read. There is no peer
//! in this harness; Kafka Streams restores through the same kind of changelog topic.
//!
//! With `--state disk` the window store is a redb file per task: each round restores it
//! twice, once with the state directory emptied (the whole changelog streamed into the file)
//! and once with the directory the last run left (its checkpoint: only the tail is read).

use std::time::{Duration, Instant};

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_runtime::format::Bytes;
use flumen_runtime::window::Windows;
use flumen_runtime::{Guarantee, Kafka, Pipeline, Runtime, RuntimeConfig, StateStore};
use flumen_testcontainers::KafkaCluster;
use serde::Serialize;

use super::Broker;

/// `compare restore` arguments.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Distinct keys of window state to restore.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// `at_least_once` or `exactly_once` (the restore reads read_committed).
    #[arg(long, default_value = "at_least_once")]
    pub guarantee: Guarantee,
    /// Restores to time (the state is built once).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Print one JSON object per round.
    #[arg(long)]
    pub json: bool,
    /// `memory` or `disk` (`state.store`).
    #[arg(long, default_value = "memory")]
    pub state: StateStore,
}

/// One restore.
#[derive(Debug, Serialize)]
pub struct RestoreResult {
    /// `memory` or `disk`.
    pub state: &'static str,
    /// Whether the state directory the last run left was kept (disk: only the tail is read).
    pub kept_dir: bool,
    /// Keys of state.
    pub keys: u64,
    /// Changelog records read.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Seconds the restore took.
    pub seconds: f64,
    /// Changelog records per second.
    pub records_per_s: f64,
}

fn pipeline(input: &str, output: &str) -> Pipeline {
    let mut p = Pipeline::new();
    p.source(Kafka::topic(input).format(Bytes))
        .window(Windows::tumbling(Duration::from_secs(3_600)))
        .count()
        .map(|w| w.value.to_string())
        .to(output, flumen_runtime::format::Utf8);
    p
}

fn config(broker: &Broker, app: &str, args: &RestoreArgs, dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig::new(&broker.bootstrap, app)
        .workers(1)
        .pin_workers(false)
        .guarantee(args.guarantee)
        .state_store(args.state)
        .state_dir(dir)
}

/// Runs the job until `done` says so (checked every 50 ms, at most `limit`), then stops it
/// cleanly; returns its last metrics.
fn run_until(
    runtime: Runtime,
    limit: Duration,
    done: impl Fn(&flumen_runtime::RuntimeMetrics) -> bool + Send + 'static,
) -> Result<flumen_runtime::RuntimeMetrics, String> {
    let stop = runtime.shutdown_handle();
    let read = runtime.metrics_reader();
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        loop {
            let m = read();
            if done(&m) || Instant::now() >= deadline {
                stop.shutdown();
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    runtime.run().map_err(|e| e.to_string())?;
    watcher
        .join()
        .map_err(|_| "the watcher thread panicked".to_owned())
}

/// Builds the state once, then restores it `rounds` times.
pub fn run(args: &RestoreArgs, broker: &Broker) -> Result<Vec<RestoreResult>, String> {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let input = current.block_on(broker.create_topic("restore-in", 1))?;
    let output = current.block_on(broker.create_topic("restore-out", 1))?;
    current.block_on(fill(broker, &input, args.keys))?;
    let app = KafkaCluster::unique_topic("restore-app");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let keys = args.keys;
    let started = Instant::now();
    let built = run_until(
        Runtime::new(
            config(broker, &app, args, dir.path()),
            pipeline(&input, &output),
        ),
        Duration::from_secs(600),
        move |m| m.tasks.iter().map(|t| t.counters.records_in).sum::<u64>() >= keys,
    )?;
    let state_keys: u64 = built
        .tasks
        .iter()
        .flat_map(|t| t.operators.iter())
        .map(|o| o.state_keys)
        .sum();
    eprintln!(
        "state built: {state_keys} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut results = Vec::new();
    let state = args.state.name();
    let restarts: &[bool] = match args.state {
        StateStore::Disk => &[false, true],
        _ => &[false],
    };
    for round in 0..args.rounds {
        for &kept_dir in restarts {
            if !kept_dir {
                let app_dir = dir.path().join(&app);
                if app_dir.exists() {
                    std::fs::remove_dir_all(&app_dir).map_err(|e| e.to_string())?;
                }
            }
            // Stops as soon as the task is restored (it then has nothing new to read).
            let m = run_until(
                Runtime::new(
                    config(broker, &app, args, dir.path()),
                    pipeline(&input, &output),
                ),
                Duration::from_secs(600),
                |m| m.tasks.iter().any(|t| t.restore.is_some()),
            )?;
            let r = m
                .tasks
                .iter()
                .find_map(|t| t.restore.clone())
                .ok_or("no task restored within 600 s")?;
            let seconds = r.duration.as_secs_f64();
            eprintln!(
                "round {round} ({state}{}): {} keys restored from {} records ({:.1} MB) in \
                 {seconds:.2} s",
                if kept_dir { ", state dir kept" } else { "" },
                r.keys,
                r.records,
                r.bytes as f64 / 1e6
            );
            results.push(RestoreResult {
                state,
                kept_dir,
                keys: r.keys,
                records: r.records,
                bytes: r.bytes,
                seconds,
                records_per_s: r.records as f64 / seconds.max(1e-9),
            });
        }
    }
    current.block_on(broker.delete_topic(&input));
    current.block_on(broker.delete_topic(&output));
    Ok(results)
}

async fn fill(broker: &Broker, topic: &str, keys: u64) -> Result<(), String> {
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", broker.bootstrap.as_str()),
            ("linger.ms", "5"),
            ("batch.size", "1000000"),
        ])
        .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for i in 0..keys {
        let key = format!("key-{i:09}");
        drop(
            producer
                .send(
                    ProducerRecord::new(topic)
                        .key(key.as_bytes())
                        .value(b"1")
                        .timestamp(now),
                )
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    producer.flush().await.map_err(|e| e.to_string())?;
    if producer.failed_records() > 0 {
        return Err(format!(
            "{} input records failed",
            producer.failed_records()
        ));
    }
    Ok(())
}

/// Prints the rounds, as text or JSON lines.
pub fn print(results: &[RestoreResult], json: bool) {
    for r in results {
        if json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!(
                "restore ({}{}): {} keys, {} records, {:.1} MB in {:.2} s ({:.0} records/s)",
                r.state,
                if r.kept_dir { ", state dir kept" } else { "" },
                r.keys,
                r.records,
                r.bytes as f64 / 1e6,
                r.seconds,
                r.records_per_s
            );
        }
    }
}
