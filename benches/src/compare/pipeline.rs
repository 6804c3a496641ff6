//! `compare pipeline`: one job run by the runtime and by a hand-written loop over the same
//! `Consumer` and `Producer`, on the same pre-loaded input, each in a child process of its
//! own (`compare-child-pipeline`) so that CPU time and peak RSS are its alone.
//!
//! The job is the seed's `uppercase`: read every record, upper-case its value, write it with
//! its key to an output topic, commit. The runtime runs it bounded (`run_until_end`); the
//! loop polls, upper-cases, sends, and stops when it has handled every input record, then
//! flushes and commits, as the runtime does. Each run reads with a fresh group and writes to
//! a fresh topic. Timing covers the whole run: connecting, joining the group, processing,
//! the last flush and commit.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use flumen_client::TopicPartition;
use flumen_client::consumer::{Consumer, ConsumerConfig, OffsetAndMetadata};
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_testcontainers::KafkaCluster;
use serde::Serialize;

use super::{Broker, WorkloadArgs, cpu_time};

/// Arguments of `compare pipeline`.
#[derive(Args, Clone, Debug)]
pub struct PipelineArgs {
    /// The job: `uppercase` (the runtime against a hand-written loop), `word_count` or
    /// `visit_analytics` (the runtime's example programs, bounded, on input of their kind).
    #[arg(long, default_value = "uppercase")]
    pub job: String,
    /// Input records.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Worker counts to run (each engine runs with each).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Runs per engine and worker count (alternating engines).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Engines of `word_count` and `visit_analytics`: `flumen-runtime` (the Rust example
    /// program) and `flumen-run` (the same job's pipeline file,
    /// `crates/flumen-runtime/examples/pipelines/<job>.toml`, run by `flumen run`). Rounds
    /// alternate the engines' order.
    #[arg(long, value_delimiter = ',', default_value = "flumen-runtime")]
    pub engines: Vec<String>,
    /// Print one JSON object per engine and worker count.
    #[arg(long)]
    pub json: bool,
    /// Instead of throughput: offer this many records per second to a running (unbounded)
    /// `uppercase` and measure the time from each input's send to its output being read.
    #[arg(long)]
    pub latency_rate: Option<u64>,
    /// How long the latency run offers records, seconds.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// The engine the latency run measures: `flumen-runtime`, `raw-loop`, `none` (the
    /// reader reads the input topic: the floor of the harness itself), or `java` (`none`'s
    /// writer and reader written with Kafka's Java client, `benches/java/JavaLatency.java`:
    /// the peer of `none`).
    #[arg(long, default_value = "flumen-runtime")]
    pub latency_engine: String,
    /// `--job word_count|visit_analytics`: the delivery guarantees to run each with
    /// (`at_least_once`, `exactly_once`), rounds alternating between them.
    #[arg(long, value_delimiter = ',', default_value = "at_least_once")]
    pub guarantees: Vec<String>,
}

/// End-to-end latency of the runtime under a steady offered rate.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    /// `flumen-runtime`.
    pub engine: String,
    /// Worker threads.
    pub workers: usize,
    /// Records offered per second.
    pub offered_per_s: u64,
    /// Records measured.
    pub records: u64,
    /// Median latency, input send to output read, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: f64,
    /// Largest, milliseconds.
    pub max_ms: f64,
}

/// Runs `uppercase` unbounded in a child process, offers `rate` records/s of 100 bytes whose
/// value starts with the send time, and reads the output: each record's latency is the time
/// from its send call to the moment the reading consumer sees it.
pub fn latency(
    args: &PipelineArgs,
    broker: &Broker,
    rate: u64,
) -> Result<Vec<LatencyResult>, String> {
    let program = super::consume::child_program_named("compare-child-pipeline")?;
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for &workers in &args.workers {
        let input = current.block_on(broker.create_topic("latency-in", args.partitions))?;
        let output = current.block_on(broker.create_topic("latency-out", args.partitions))?;
        let (engine, records) = match args.latency_engine.as_str() {
            "flumen-runtime" => ("flumen-runtime-unbounded", 0),
            "raw-loop" => ("raw-loop", u64::MAX),
            // No job: the reader reads the input itself (the harness's own floor).
            "none" => ("none", 0),
            "java" => ("java", 0),
            other => return Err(format!("unknown engine {other}")),
        };
        if engine == "java" {
            let result = java_latency(args, broker, &input, rate);
            current.block_on(broker.delete_topic(&input));
            current.block_on(broker.delete_topic(&output));
            results.push(result?);
            continue;
        }
        if engine == "none" {
            let histogram = current.block_on(offer_and_read(args, broker, &input, &input, rate))?;
            let q = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
            results.push(LatencyResult {
                engine: "none".to_owned(),
                workers: 0,
                offered_per_s: rate,
                records: histogram.len(),
                p50_ms: q(0.5),
                p99_ms: q(0.99),
                p999_ms: q(0.999),
                max_ms: histogram.max() as f64 / 1000.0,
            });
            current.block_on(broker.delete_topic(&input));
            current.block_on(broker.delete_topic(&output));
            continue;
        }
        let mut child = Command::new(&program)
            .args([engine, &workers.to_string(), &records.to_string()])
            .args([&broker.bootstrap, &input, &output])
            .arg(KafkaCluster::unique_topic("latency-app"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let measured = current.block_on(offer_and_read(args, broker, &input, &output, rate));
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        let histogram = measured?;
        // The hand-written loop has no signal handler: SIGTERM simply ends it.
        if !status.success() && engine != "raw-loop" {
            return Err(format!(
                "the runtime exited with {status} after the latency run"
            ));
        }
        let q = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        results.push(LatencyResult {
            engine: args.latency_engine.clone(),
            workers,
            offered_per_s: rate,
            records: histogram.len(),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        });
        current.block_on(broker.delete_topic(&input));
        current.block_on(broker.delete_topic(&output));
    }
    Ok(results)
}

/// `none` with Kafka's Java client: `benches/java/JavaLatency.java` (the same writer and
/// reader settings, the same warm-up) run with the pinned release's jars.
fn java_latency(
    args: &PipelineArgs,
    broker: &Broker,
    topic: &str,
    rate: u64,
) -> Result<LatencyResult, String> {
    use flumen_testcontainers::KafkaVersion;
    let (java, classpath) = flumen_testcontainers::java_and_classpath(KafkaVersion::pinned())
        .map_err(|e| e.to_string())?;
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/JavaLatency.java");
    let out = Command::new(&java)
        .arg("-cp")
        .arg(&classpath)
        .arg(&source)
        .args([&broker.bootstrap, topic])
        .args([
            args.partitions.to_string(),
            rate.to_string(),
            args.latency_seconds.to_string(),
            args.record_size.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot start {}: {e}", java.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with('{'));
    let (true, Some(line)) = (out.status.success(), line) else {
        return Err(format!(
            "{} failed ({}): {}",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let num = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    Ok(LatencyResult {
        engine: "java".to_owned(),
        workers: 0,
        offered_per_s: rate,
        records: num("records") as u64,
        p50_ms: num("p50_ms"),
        p99_ms: num("p99_ms"),
        p999_ms: num("p999_ms"),
        max_ms: num("max_ms"),
    })
}

fn micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The writer and the reader run on threads (and runtimes) of their own, so that neither
/// waits for the other: a late read would count as latency.
async fn offer_and_read(
    args: &PipelineArgs,
    broker: &Broker,
    input: &str,
    output: &str,
    rate: u64,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    let bootstrap = broker.bootstrap.clone();
    let (input, seconds, size) = (input.to_owned(), args.latency_seconds, args.record_size);
    let writer = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(offer(&bootstrap, &input, rate, seconds, size))
    });
    let read = read_latencies(args, broker, output, rate).await;
    writer
        .join()
        .map_err(|_| "the writer thread panicked".to_owned())??;
    read
}

async fn offer(
    bootstrap: &str,
    input: &str,
    rate: u64,
    seconds: u64,
    size: usize,
) -> Result<(), String> {
    let producer = Producer::connect(
        ProducerConfig::from_properties([("bootstrap.servers", bootstrap), ("linger.ms", "0")])
            .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    let total = rate * (seconds + 3);
    let start = Instant::now();
    let mut value = vec![b'x'; size.max(16)];
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            tokio::time::sleep(due - now).await;
        }
        let stamp = format!("{:016}", micros_now());
        value[..16].copy_from_slice(stamp.as_bytes());
        // The delivery is not awaited: the reader sees the record.
        drop(
            producer
                .send(ProducerRecord::new(input).value(&value))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    producer.flush().await.map_err(|e| e.to_string())
}

async fn read_latencies(
    args: &PipelineArgs,
    broker: &Broker,
    output: &str,
    rate: u64,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    let mut consumer = Consumer::connect(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", broker.bootstrap.as_str()),
            ("fetch.max.wait.ms", "100"),
        ])
        .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    consumer
        .assign((0..args.partitions).map(|p| TopicPartition::new(output, p)))
        .map_err(|e| e.to_string())?;
    let mut histogram = super::new_histogram();
    // Warm-up: records sent before the runtime owns every partition are not measured.
    let measure_from = micros_now() + 3_000_000;
    let end = Instant::now() + Duration::from_secs(args.latency_seconds + 3 + 10);
    let expected = rate * args.latency_seconds;
    while Instant::now() < end && histogram.len() < expected {
        let mut polled = consumer
            .poll(Duration::from_millis(50))
            .await
            .map_err(|e| e.to_string())?;
        let now = micros_now();
        for record in polled.iter() {
            let record = record.map_err(|e| e.to_string())?;
            let value = record.value().unwrap_or_default();
            let sent: u64 = std::str::from_utf8(&value[..value.len().min(16)])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            if sent >= measure_from {
                let _ = histogram.record(now.saturating_sub(sent).max(1));
            }
        }
    }
    Ok(histogram)
}

/// What one engine achieved.
#[derive(Clone, Debug, Serialize)]
pub struct EngineResult {
    /// `flumen-runtime` or `raw-loop`.
    pub engine: String,
    /// The job.
    pub job: String,
    /// Worker threads.
    pub workers: usize,
    /// Input records per second, over the whole run.
    pub records_per_s: f64,
    /// CPU seconds (user + system, the whole child process) per million input records.
    pub cpu_s_per_million: f64,
    /// Peak resident set size of the child process, MB.
    pub peak_rss_mb: f64,
}

const ENGINES: [&str; 2] = ["flumen-runtime", "raw-loop"];

/// Runs the comparison.
pub fn run(args: &PipelineArgs, broker: &Broker) -> Result<Vec<EngineResult>, String> {
    match args.job.as_str() {
        "uppercase" => {}
        "word_count" | "visit_analytics" => return super::jobs::run(args, broker),
        other => {
            return Err(format!(
                "unknown job {other:?} (expected uppercase, word_count or visit_analytics)"
            ));
        }
    }
    let program = super::consume::child_program_named("compare-child-pipeline")?;
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let input = current.block_on(broker.create_topic("pipeline-in", args.partitions))?;
    let fill_args = WorkloadArgs {
        records: args.records,
        record_size: args.record_size,
        partitions: args.partitions,
        clients: Vec::new(),
        rounds: 1,
        batch_size: 1_000_000,
        latency_sample: 64,
        compression: "none".to_owned(),
        json: false,
    };
    current.block_on(super::consume::fill(&fill_args, broker, &input))?;
    let mut results = Vec::new();
    for &workers in &args.workers {
        // (seconds, cpu seconds, peak) summed per engine over the rounds.
        let mut sums = [(0.0f64, 0.0f64, 0.0f64); 2];
        for round in 0..args.rounds {
            let mut order = [0usize, 1];
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let output =
                    current.block_on(broker.create_topic("pipeline-out", args.partitions))?;
                let r = run_child(&program, ENGINES[i], workers, args, broker, &input, &output)?;
                eprintln!(
                    "round {round} {} x{workers}: {:.0} records/s, cpu {:.2} s/M, peak RSS {:.1} MB",
                    ENGINES[i], r.records_per_s, r.cpu_s_per_million, r.peak_rss_mb
                );
                sums[i].0 += args.records as f64 / r.records_per_s;
                sums[i].1 += r.cpu_s_per_million;
                sums[i].2 = sums[i].2.max(r.peak_rss_mb);
                current.block_on(broker.delete_topic(&output));
            }
        }
        for (i, (secs, cpu, peak)) in sums.into_iter().enumerate() {
            results.push(EngineResult {
                engine: ENGINES[i].to_owned(),
                job: args.job.clone(),
                workers,
                records_per_s: args.records as f64 * f64::from(args.rounds) / secs,
                cpu_s_per_million: cpu / f64::from(args.rounds),
                peak_rss_mb: peak,
            });
        }
    }
    current.block_on(broker.delete_topic(&input));
    Ok(results)
}

fn run_child(
    program: &std::path::Path,
    engine: &str,
    workers: usize,
    args: &PipelineArgs,
    broker: &Broker,
    input: &str,
    output: &str,
) -> Result<EngineResult, String> {
    let out = Command::new(program)
        .args([engine, &workers.to_string(), &args.records.to_string()])
        .args([&broker.bootstrap, input, output])
        .arg(KafkaCluster::unique_topic("pipeline-app"))
        .output()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{engine} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{engine} printed no result: {stdout}"))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let num = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    Ok(EngineResult {
        engine: engine.to_owned(),
        job: args.job.clone(),
        workers,
        records_per_s: num("records_per_s"),
        cpu_s_per_million: num("cpu_s_per_million"),
        peak_rss_mb: num("peak_rss_mb"),
    })
}

/// Prints the results, one JSON object per line or a table with the ratio per worker count.
pub fn print(results: &[EngineResult], json: bool) {
    if json {
        return super::print_json_lines(results);
    }
    println!(
        "{:<16} {:>7} {:>14} {:>14} {:>10}",
        "engine", "workers", "records/s", "CPU s/M rec", "peak MB"
    );
    for r in results {
        println!(
            "{:<16} {:>7} {:>14.0} {:>14.3} {:>10.1}",
            r.engine, r.workers, r.records_per_s, r.cpu_s_per_million, r.peak_rss_mb
        );
    }
    for pair in results.chunks(2) {
        if let [a, b] = pair
            && a.engine != b.engine
        {
            println!(
                "{} vs {} ({} workers): {:.2}x records/s, {:.2}x CPU per record",
                a.engine,
                b.engine,
                a.workers,
                a.records_per_s / b.records_per_s,
                a.cpu_s_per_million / b.cpu_s_per_million
            );
        }
    }
}

/// The child program's main: `ENGINE WORKERS RECORDS BOOTSTRAP INPUT OUTPUT APP_ID`.
pub fn child_main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [engine, workers, records, bootstrap, input, output, app] = a.as_slice() else {
        eprintln!(
            "usage: compare-child-pipeline ENGINE WORKERS RECORDS BOOTSTRAP INPUT OUTPUT APP_ID"
        );
        std::process::exit(2);
    };
    let workers: usize = workers.parse().unwrap_or(1);
    let records: u64 = records.parse().unwrap_or(0);
    let started = Instant::now();
    let cpu0 = cpu_time();
    let result = match engine.as_str() {
        "flumen-runtime" => runtime_uppercase(bootstrap, input, output, app, workers, true),
        "flumen-runtime-unbounded" => {
            runtime_uppercase(bootstrap, input, output, app, workers, false)
        }
        "raw-loop" => raw_loop(bootstrap, input, output, app, workers, records),
        other => Err(format!("unknown engine {other}")),
    };
    if let Err(e) = result {
        eprintln!("{engine}: {e}");
        std::process::exit(1);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let r = EngineResult {
        engine: engine.clone(),
        job: "uppercase".to_owned(),
        workers,
        records_per_s: records as f64 / secs,
        cpu_s_per_million: cpu / (records.max(1) as f64 / 1e6),
        peak_rss_mb: super::consume::proc_status_mb("VmHWM:").unwrap_or(f64::NAN),
    };
    println!("{}", serde_json::to_string(&r).unwrap_or_default());
}

fn runtime_uppercase(
    bootstrap: &str,
    input: &str,
    output: &str,
    app: &str,
    workers: usize,
    bounded: bool,
) -> Result<(), String> {
    use flumen_runtime::format::Bytes;
    use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig};
    let mut pipeline = Pipeline::new();
    pipeline
        .source(Kafka::topic(input).format(Bytes))
        .map(|v: &[u8]| v.to_ascii_uppercase())
        .to(output, Bytes);
    let pin = std::env::var("FLUMEN_PIN_WORKERS").map_or(true, |v| v != "false");
    let config = RuntimeConfig::new(bootstrap, app)
        .workers(workers)
        .pin_workers(pin);
    let runtime = Runtime::new(config, pipeline);
    let result = if bounded {
        runtime.run_until_end()
    } else {
        runtime.run()
    };
    result.map(|_| ()).map_err(|e| e.to_string())
}

/// The loop a user would write with the client alone: one thread per worker, each with its
/// own consumer (same group) and producer, the same settings as the runtime's workers.
fn raw_loop(
    bootstrap: &str,
    input: &str,
    output: &str,
    app: &str,
    workers: usize,
    records: u64,
) -> Result<(), String> {
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|i| {
            let (bootstrap, input, output, app) = (
                bootstrap.to_owned(),
                input.to_owned(),
                output.to_owned(),
                app.to_owned(),
            );
            let done = done.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(raw_worker(
                        i, &bootstrap, &input, &output, &app, &done, records,
                    ))
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "a loop thread panicked".to_owned())??;
    }
    Ok(())
}

async fn raw_worker(
    index: usize,
    bootstrap: &str,
    input: &str,
    output: &str,
    app: &str,
    done: &AtomicU64,
    records: u64,
) -> Result<(), String> {
    let consumer_config = ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap),
        ("group.id", app),
        ("client.id", &format!("{app}-loop-{index}")),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("partition.assignment.strategy", "cooperative-sticky"),
    ])
    .map_err(|e| e.to_string())?;
    let producer_config = ProducerConfig::from_properties([
        ("bootstrap.servers", bootstrap),
        ("linger.ms", "5"),
        ("batch.size", "262144"),
    ])
    .map_err(|e| e.to_string())?;
    let mut consumer = Consumer::connect(consumer_config)
        .await
        .map_err(|e| e.to_string())?;
    let producer = Producer::connect(producer_config)
        .await
        .map_err(|e| e.to_string())?;
    producer
        .partitions_for(output)
        .await
        .map_err(|e| e.to_string())?;
    consumer.subscribe(&[input]).map_err(|e| e.to_string())?;
    let mut positions: std::collections::BTreeMap<TopicPartition, OffsetAndMetadata> =
        Default::default();
    let mut last_commit = Instant::now();
    while done.load(Ordering::Relaxed) < records {
        let mut polled = consumer
            .poll(Duration::from_millis(100))
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        for part in polled.partitions_mut() {
            let tp = part.topic_partition().clone();
            for record in part.iter() {
                let record = record.map_err(|e| e.to_string())?;
                let upper = record.value().unwrap_or_default().to_ascii_uppercase();
                let mut out = ProducerRecord::new(output).value(&upper);
                out.key = record.key();
                out.timestamp = Some(record.timestamp());
                // As the runtime does: no await per record, a flush before each commit.
                drop(producer.send(out).await.map_err(|e| e.to_string())?);
                n += 1;
            }
            positions.insert(tp, OffsetAndMetadata::new(part.next_offset()));
        }
        done.fetch_add(n, Ordering::Relaxed);
        if last_commit.elapsed() >= Duration::from_secs(5) {
            producer.flush().await.map_err(|e| e.to_string())?;
            consumer
                .commit_offsets_sync(std::mem::take(&mut positions))
                .await
                .map_err(|e| e.to_string())?;
            last_commit = Instant::now();
        }
    }
    producer.flush().await.map_err(|e| e.to_string())?;
    if producer.failed_records() > 0 {
        return Err(format!("{} records failed", producer.failed_records()));
    }
    let owned = consumer.assignment();
    positions.retain(|tp, _| owned.contains(tp));
    if !positions.is_empty() {
        consumer
            .commit_offsets_sync(positions)
            .await
            .map_err(|e| e.to_string())?;
    }
    consumer.close().await.map_err(|e| e.to_string())?;
    Ok(())
}
