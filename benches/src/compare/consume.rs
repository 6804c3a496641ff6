//! `compare consume`: the same pre-produced records read by each client, rounds alternating.
//!
//! Each round writes N records of S bytes (Flumen's producer, unkeyed, spread over P
//! partitions) to a fresh topic, then every client reads all of it from the beginning, each
//! in a child process of its own: a small program per client (`compare-child-flumen`,
//! `compare-child-rdkafka`, `compare-child-rskafka`) that links that client only, so that
//! peak RSS and CPU time are the client's alone, not those of a binary carrying all three. Fetch settings are equal for all:
//! `fetch.min.bytes` 1, `fetch.max.wait.ms` 500, `max.partition.fetch.bytes` 1 MiB,
//! `fetch.max.bytes` 50 MiB, and a 64 MiB prefetch bound (librdkafka's
//! `queued.max.messages.kbytes` default; Flumen's `prefetch.max.bytes`). rskafka has no
//! prefetch queue: it fetches each partition in a loop with the same per-partition size.
//!
//! Timing starts after the client is created and assigned its partitions, and ends when the
//! last record has been handed to the application (whose work is summing value lengths).

use std::process::Command;
use std::time::{Duration, Instant};

use flumen_client::TopicPartition;
use flumen_client::consumer::{Consumer, ConsumerConfig};
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};

use super::{
    Broker, ClientKind, ClientResult, ConsumeArgs, RoundResult, Tally, cpu_time, new_histogram,
};

/// Set in a child process: the topic to read (the child reads it with one client and prints
/// one JSON result line).
pub const CHILD_ENV: &str = "FLUMEN_COMPARE_CHILD_TOPIC";

const MAX_PARTITION_FETCH_BYTES: &str = "1048576";
const FETCH_MAX_BYTES: &str = "52428800";
const FETCH_MAX_WAIT_MS: &str = "500";
const PREFETCH_BYTES: &str = "67108864";

/// Runs the consume comparison (or, in a child process, one client's round).
pub fn run(args: &ConsumeArgs, broker: &Broker) -> Result<Vec<ClientResult>, String> {
    // `flumen-futures` differs from `flumen` in how the producer is awaited only.
    let clients: Vec<ClientKind> = args
        .clients
        .iter()
        .copied()
        .filter(|c| !matches!(c, ClientKind::FlumenFutures | ClientKind::RdkafkaFutures))
        .collect();
    let args = &ConsumeArgs {
        clients,
        ..args.clone()
    };
    let children = args
        .clients
        .iter()
        .map(|c| child_program(*c))
        .collect::<Result<Vec<_>, _>>()?;
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut tallies: Vec<Tally> = args.clients.iter().map(|c| Tally::new(*c)).collect();
    let mut peaks = vec![0.0f64; tallies.len()];
    let mut growths = vec![0.0f64; tallies.len()];
    for round in 0..args.rounds {
        let topic = current.block_on(broker.create_topic("compare-consume", args.partitions))?;
        current.block_on(fill(args, broker, &topic))?;
        // Alternate the order between rounds too, so no client always reads first.
        let mut order: Vec<usize> = (0..tallies.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let client = args.clients[i];
            let child = run_child(args, broker, &topic, client, &children[i])
                .map_err(|e| format!("{client} round {round}: {e}"))?;
            let elapsed =
                Duration::from_secs_f64(args.records as f64 / child.records_per_s.max(1e-9));
            let cpu = Duration::from_secs_f64(child.cpu_s_per_million * args.records as f64 / 1e6);
            eprintln!(
                "round {round} {client}: {:.0} records/s, cpu {:.2}s, peak RSS {:.1} MB",
                child.records_per_s,
                cpu.as_secs_f64(),
                child.peak_rss_mb.unwrap_or(f64::NAN)
            );
            peaks[i] = peaks[i].max(child.peak_rss_mb.unwrap_or(f64::NAN));
            growths[i] = growths[i].max(child.client_rss_mb.unwrap_or(f64::NAN));
            tallies[i].add(&RoundResult {
                records: args.records,
                bytes: args.records * args.record_size as u64,
                elapsed,
                cpu,
                latency_us: new_histogram(),
            });
        }
        current.block_on(broker.delete_topic(&topic));
    }
    Ok(tallies
        .iter()
        .zip(peaks.into_iter().zip(growths))
        .map(|(t, (peak, growth))| {
            let mut r = t.result();
            r.peak_rss_mb = Some(peak);
            r.client_rss_mb = Some(growth);
            r
        })
        .collect())
}

/// Writes the round's records with Flumen's producer (unkeyed: spread over the partitions).
pub(crate) async fn fill(args: &ConsumeArgs, broker: &Broker, topic: &str) -> Result<(), String> {
    let config = ProducerConfig::from_properties([
        ("bootstrap.servers", broker.bootstrap.as_str()),
        ("acks", "1"),
        ("linger.ms", "5"),
        (
            "compression.type",
            if args.compression.is_empty() {
                "none"
            } else {
                &args.compression
            },
        ),
    ])
    .map_err(|e| e.to_string())?;
    let producer = Producer::connect(config).await.map_err(|e| e.to_string())?;
    let payload = super::payload(args.record_size);
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..args.records {
        let delivery = producer
            .send(ProducerRecord::new(topic).value(&payload))
            .await
            .map_err(|e| e.to_string())?;
        pending.push_back(delivery);
        while pending.front().is_some_and(|d| d.try_result().is_some()) {
            if let Some(Some(Err(e))) = pending.pop_front().map(|d| d.try_result()) {
                return Err(e.to_string());
            }
        }
    }
    while let Some(d) = pending.pop_front() {
        d.await.map_err(|e| e.to_string())?;
    }
    producer
        .close(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The child program that reads with `client`, next to this binary; under `cargo run` it is
/// built (or brought up to date) first, with the same profile.
fn child_program(client: ClientKind) -> Result<std::path::PathBuf, String> {
    child_program_named(&format!("compare-child-{client}"))
}

/// The path of the child program `name` beside this one; under `cargo run`, built first.
pub(crate) fn child_program_named(name: &str) -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = exe
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|d| d == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "flumen-benches", "--bin", name]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| format!("cannot run cargo to build {name}: {e}"))?;
        if !status.success() {
            return Err(format!("building {name} failed ({status})"));
        }
    }
    if !path.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release -p flumen-benches --bins`",
            path.display()
        ));
    }
    Ok(path)
}

/// Runs the child program of one client and parses its JSON result line.
fn run_child(
    args: &ConsumeArgs,
    broker: &Broker,
    topic: &str,
    client: ClientKind,
    program: &std::path::Path,
) -> Result<ClientResult, String> {
    let out = Command::new(program)
        .args([
            "--records",
            &args.records.to_string(),
            "--record-size",
            &args.record_size.to_string(),
            "--partitions",
            &args.partitions.to_string(),
            "--clients",
            client.name(),
            "--rounds",
            "1",
            "--compression",
            &args.compression,
            "--json",
        ])
        .env(CHILD_ENV, topic)
        .env("FLUMEN_KAFKA_BOOTSTRAP", &broker.bootstrap)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("child printed no result: {stdout}"))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let num = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let mut r = Tally::new(client).result();
    r.records_per_s = num("records_per_s");
    r.mb_per_s = num("mb_per_s");
    r.cpu_s_per_million = num("cpu_s_per_million");
    r.peak_rss_mb = Some(num("peak_rss_mb"));
    r.client_rss_mb = Some(num("client_rss_mb"));
    Ok(r)
}

/// The body of a child program: reads the topic named by `FLUMEN_COMPARE_CHILD_TOPIC` from
/// `FLUMEN_KAFKA_BOOTSTRAP` with `read` (one client's reader) and prints one JSON result line.
///
/// Each child program passes its own client's reader, so only that client is linked in.
pub fn child_main(
    client: ClientKind,
    read: impl FnOnce(&ConsumeArgs, &str, &str) -> Result<RoundResult, String>,
) {
    #[derive(clap::Parser)]
    struct ChildCli {
        #[command(flatten)]
        args: ConsumeArgs,
    }
    let cli = <ChildCli as clap::Parser>::parse();
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let before = proc_status_mb("VmRSS:");
    let result = env(CHILD_ENV).and_then(|topic| {
        let bootstrap = env("FLUMEN_KAFKA_BOOTSTRAP")?;
        read(&cli.args, &bootstrap, &topic)
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{client}: {e}");
            std::process::exit(1);
        }
    };
    let mut tally = Tally::new(client);
    tally.add(&result);
    let mut r = tally.result();
    // `ru_maxrss` survives the exec (the child starts on the parent's address space), so
    // the child's own peak comes from its memory map's high-water mark.
    if let Some(hwm) = proc_status_mb("VmHWM:") {
        r.peak_rss_mb = Some(hwm);
        r.client_rss_mb = before.map(|b| hwm - b);
    }
    super::print_results(&[r], true);
}

/// Flumen's reader, on a current-thread runtime.
pub fn read_flumen(
    args: &ConsumeArgs,
    bootstrap: &str,
    topic: &str,
) -> Result<RoundResult, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(flumen(args, bootstrap, topic))
}

/// rskafka's reader, on a two-thread runtime (one task per partition).
pub fn read_rskafka(
    args: &ConsumeArgs,
    bootstrap: &str,
    topic: &str,
) -> Result<RoundResult, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(rskafka(args, bootstrap, topic))
}

/// A size line of `/proc/self/status` (`VmHWM:` is the peak RSS of the current memory map,
/// `VmRSS:` the RSS now), MB (10^6 bytes).
pub(crate) fn proc_status_mb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

async fn flumen(args: &ConsumeArgs, bootstrap: &str, topic: &str) -> Result<RoundResult, String> {
    let config = ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap),
        ("auto.offset.reset", "earliest"),
        ("fetch.min.bytes", "1"),
        ("fetch.max.wait.ms", FETCH_MAX_WAIT_MS),
        ("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES),
        ("fetch.max.bytes", FETCH_MAX_BYTES),
        ("prefetch.max.bytes", PREFETCH_BYTES),
    ])
    .map_err(|e| e.to_string())?;
    let mut consumer = Consumer::connect(config).await.map_err(|e| e.to_string())?;
    consumer
        .assign((0..args.partitions).map(|p| TopicPartition::new(topic, p)))
        .map_err(|e| e.to_string())?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.records {
        let mut batch = consumer.recv().await.map_err(|e| e.to_string())?;
        for r in batch.iter() {
            let r = r.map_err(|e| e.to_string())?;
            bytes += r.value().map_or(0, |v| v.len() as u64);
            records += 1;
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    Ok(RoundResult {
        records,
        bytes,
        elapsed,
        cpu,
        latency_us: new_histogram(),
    })
}

pub fn read_rdkafka(
    args: &ConsumeArgs,
    bootstrap: &str,
    topic: &str,
) -> Result<RoundResult, String> {
    use rdkafka::Message;
    use rdkafka::Offset;
    use rdkafka::TopicPartitionList;
    use rdkafka::config::ClientConfig as RdConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};

    let consumer: BaseConsumer = RdConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-rdkafka"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", FETCH_MAX_WAIT_MS)
        .set("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES)
        .set("fetch.max.bytes", FETCH_MAX_BYTES)
        .set("queued.max.messages.kbytes", "65536")
        .create()
        .map_err(|e| e.to_string())?;
    let mut list = TopicPartitionList::new();
    for p in 0..args.partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&list).map_err(|e| e.to_string())?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.records {
        match consumer.poll(Duration::from_secs(1)) {
            None => {}
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(m)) => {
                bytes += m.payload().map_or(0, |v| v.len() as u64);
                records += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    Ok(RoundResult {
        records,
        bytes,
        elapsed,
        cpu,
        latency_us: new_histogram(),
    })
}

async fn rskafka(args: &ConsumeArgs, bootstrap: &str, topic: &str) -> Result<RoundResult, String> {
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::UnknownTopicHandling;

    let client = ClientBuilder::new(bootstrap.split(',').map(str::to_owned).collect())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let mut partitions = Vec::new();
    for p in 0..args.partitions {
        partitions.push(
            client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let total = args.records;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for pc in partitions {
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let (mut offset, mut bytes) = (0i64, 0u64);
            while counter.load(std::sync::atomic::Ordering::Relaxed) < total {
                let (records, high_watermark) = pc
                    .fetch_records(offset, 1..1_048_576, 500)
                    .await
                    .map_err(|e| e.to_string())?;
                for r in &records {
                    bytes += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
                    offset = r.offset + 1;
                }
                counter.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if offset >= high_watermark && records.is_empty() {
                    break;
                }
            }
            Ok::<u64, String>(bytes)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    Ok(RoundResult {
        records: counter.load(std::sync::atomic::Ordering::Relaxed),
        bytes,
        elapsed,
        cpu,
        latency_us: new_histogram(),
    })
}
