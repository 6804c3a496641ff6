//! The side-by-side comparison harness: the same workload through several Kafka clients on one broker.
//!
//! Shared by the `produce` and `consume` subcommands of the `compare` binary: the command-line
//! arguments, the client list, the cluster (`FLUMEN_KAFKA_BOOTSTRAP` or a local broker started
//! by `flumen-testcontainers`), topic creation, alternating rounds, CPU time and peak RSS
//! measurement, latency percentiles and the result lines (text or JSON).
//!
//! Rounds alternate between clients (A B C, A B C, ...) so that a slow phase of the broker
//! (log roll, page cache) does not land on one client only. Each round uses a fresh topic.

pub mod cli;
pub mod consume;
pub mod jobs;
pub mod pipeline;
pub mod produce;
pub mod restore;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use flumen_client::admin::{IsolationLevel, NewTopic, OffsetSpec};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};
use hdrhistogram::Histogram;
use serde::Serialize;

/// A client under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// This project's client.
    Flumen,
    /// This project's client awaiting every record's delivery future from its own task
    /// (`FuturesUnordered`), as users of rust-rdkafka's `FutureProducer` do. Produce only.
    FlumenFutures,
    /// rust-rdkafka (librdkafka, vendored and built with cmake).
    Rdkafka,
    /// rust-rdkafka's `FutureProducer`, every record's delivery future awaited through a
    /// `FuturesUnordered`: `flumen-futures`'s peer. Produce only.
    RdkafkaFutures,
    /// rskafka (pure Rust, minimal).
    Rskafka,
}

impl ClientKind {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Flumen => "flumen",
            ClientKind::FlumenFutures => "flumen-futures",
            ClientKind::Rdkafka => "rdkafka",
            ClientKind::RdkafkaFutures => "rdkafka-futures",
            ClientKind::Rskafka => "rskafka",
        }
    }
}

impl FromStr for ClientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "flumen" => Ok(ClientKind::Flumen),
            "flumen-futures" => Ok(ClientKind::FlumenFutures),
            "rdkafka" => Ok(ClientKind::Rdkafka),
            "rdkafka-futures" => Ok(ClientKind::RdkafkaFutures),
            "rskafka" => Ok(ClientKind::Rskafka),
            other => Err(format!(
                "unknown client {other:?} (expected flumen, flumen-futures, rdkafka, rdkafka-futures or rskafka)"
            )),
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The flags shared by `produce` and `consume`.
#[derive(Args, Clone, Debug)]
pub struct WorkloadArgs {
    /// Records per round and client.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value size in bytes (records are keyless: the value is the whole record).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Partitions of each round's topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Comma-separated clients to compare (`flumen-futures`, `rdkafka-futures`: produce only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "flumen,flumen-futures,rdkafka,rdkafka-futures,rskafka"
    )]
    pub clients: Vec<ClientKind>,
    /// Rounds per client (alternating between clients).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Batch size in bytes, the same for every client (`batch.size`; rskafka's aggregator
    /// size). The default is librdkafka's own default, so rdkafka runs as shipped and the
    /// others are given the same setting (the Java client and Flumen default to 16384).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: usize,
    /// Produce: delivery latency is measured on every Nth record (the same records for
    /// every client), so that the harness's own clock reads do not dominate the CPU measured.
    #[arg(long, default_value_t = 64)]
    pub latency_sample: u64,
    /// Compression codec (none, gzip, snappy, lz4, zstd).
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Print one JSON object per client instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `compare produce`.
pub type ProduceArgs = WorkloadArgs;
/// Arguments of `compare consume` (the same flags as `produce`).
pub type ConsumeArgs = WorkloadArgs;

/// What one client achieved over all its rounds (throughput from the summed time, latency
/// percentiles from the merged histogram).
#[derive(Clone, Debug, Serialize)]
pub struct ClientResult {
    /// Client name.
    pub client: String,
    /// Records per second.
    pub records_per_s: f64,
    /// Megabytes (10^6 bytes of record values) per second.
    pub mb_per_s: f64,
    /// Client CPU seconds (user + system) per million records.
    pub cpu_s_per_million: f64,
    /// Median delivery latency (produce: send to acknowledgement), milliseconds.
    pub p50_ms: f64,
    /// 99th percentile delivery latency, milliseconds.
    pub p99_ms: f64,
    /// Consume: peak resident set size of the program running this client, MB (10^6
    /// bytes). Absent for produce, whose clients share one process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
    /// Consume: the peak RSS minus the RSS of the same program just before it created the
    /// client (its code, libraries and runtime), MB; the client's own growth. Absent for produce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_rss_mb: Option<f64>,
    /// The producer settings every client ran with (produce only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<ProduceSettings>,
    /// Records per second of each measured round, in order. Round `k` of every client ran
    /// in the same pass over the clients, so the ratio of two clients' round `k` compares
    /// runs minutes apart at most, against a broker in the same state.
    pub round_records_per_s: Vec<f64>,
}

/// The settings of the produce comparison: identical for every client.
#[derive(Clone, Debug, Serialize)]
pub struct ProduceSettings {
    /// `acks`.
    pub acks: &'static str,
    /// `enable.idempotence`.
    pub idempotence: bool,
    /// `linger.ms`.
    pub linger_ms: u64,
    /// `batch.size` in bytes (rskafka: the aggregator's size).
    pub batch_size: usize,
    /// `max.in.flight.requests.per.connection` (rskafka has no such setting).
    pub max_in_flight: u32,
    /// `compression.type`.
    pub compression: String,
    /// Latency is measured on one record in this many.
    pub latency_sample: u64,
}

impl fmt::Display for ProduceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acks={} enable.idempotence={} linger.ms={} batch.size={} \
             max.in.flight.requests.per.connection={} compression.type={} \
             latency sampled on 1 record in {}",
            self.acks,
            self.idempotence,
            self.linger_ms,
            self.batch_size,
            self.max_in_flight,
            self.compression,
            self.latency_sample
        )
    }
}

/// One round's raw figures.
#[derive(Debug)]
pub struct RoundResult {
    /// Records moved.
    pub records: u64,
    /// Value bytes moved.
    pub bytes: u64,
    /// Wall time of the round.
    pub elapsed: Duration,
    /// CPU time (user + system) of the round.
    pub cpu: Duration,
    /// Latencies in microseconds (empty when the workload has none).
    pub latency_us: Histogram<u64>,
}

/// Accumulates rounds of one client into a [`ClientResult`].
#[derive(Debug)]
pub struct Tally {
    client: ClientKind,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    cpu: Duration,
    latency_us: Histogram<u64>,
    rounds: Vec<f64>,
}

impl Tally {
    /// An empty tally for `client`.
    pub fn new(client: ClientKind) -> Self {
        Tally {
            client,
            records: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            cpu: Duration::ZERO,
            latency_us: new_histogram(),
            rounds: Vec::new(),
        }
    }

    /// Adds one round.
    pub fn add(&mut self, round: &RoundResult) {
        self.records += round.records;
        self.bytes += round.bytes;
        self.elapsed += round.elapsed;
        self.cpu += round.cpu;
        self.rounds
            .push(round.records as f64 / round.elapsed.as_secs_f64().max(1e-9));
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&round.latency_us);
    }

    /// The summary.
    pub fn result(&self) -> ClientResult {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let q = |q: f64| {
            if self.latency_us.is_empty() {
                f64::NAN
            } else {
                self.latency_us.value_at_quantile(q) as f64 / 1000.0
            }
        };
        ClientResult {
            client: self.client.name().to_owned(),
            records_per_s: self.records as f64 / secs,
            mb_per_s: self.bytes as f64 / 1e6 / secs,
            cpu_s_per_million: self.cpu.as_secs_f64() / (self.records.max(1) as f64 / 1e6),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            peak_rss_mb: None,
            client_rss_mb: None,
            settings: None,
            round_records_per_s: self.rounds.clone(),
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Fixed, valid bounds: cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// The process's CPU time so far (user + system), from `getrusage(RUSAGE_SELF)`.
///
/// Process-wide on purpose: librdkafka does its work on its own threads, and a fair
/// comparison counts them.
pub fn cpu_time() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// User + system time from `getrusage(who)`.
pub(crate) fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Where the broker is: an external cluster or one we started (kept alive by this value).
pub struct Broker {
    /// `host:port` list.
    pub bootstrap: String,
    _local: Option<KafkaCluster>,
}

impl Broker {
    /// `FLUMEN_KAFKA_BOOTSTRAP` if set, else a local 1-broker cluster whose JVM runs as
    /// Kafka's start scripts set it up (C2 JIT, G1, 1 GiB heap), not the harness's
    /// fast-starting test settings (C1 only), which would make the broker the bottleneck
    /// sooner and squeeze the differences between clients.
    pub fn get() -> Result<Broker, String> {
        if let Ok(bootstrap) = std::env::var("FLUMEN_KAFKA_BOOTSTRAP") {
            return Ok(Broker {
                bootstrap,
                _local: None,
            });
        }
        eprintln!("starting a local 1-broker Kafka cluster ...");
        let cluster = KafkaCluster::start(ClusterSpec::single().with_production_jvm())
            .map_err(|e| e.to_string())?;
        Ok(Broker {
            bootstrap: cluster.bootstrap(),
            _local: Some(cluster),
        })
    }

    /// An admin client on this broker.
    async fn admin(&self) -> Result<Admin, String> {
        let config =
            ClientConfig::from_properties([("bootstrap.servers", self.bootstrap.as_str())])
                .map_err(|e| e.to_string())?;
        Admin::connect(config).await.map_err(|e| e.to_string())
    }

    /// Deletes a round's topic once every client is done with it, so that long runs against
    /// one broker do not fill its disk. A failure is reported, not fatal.
    pub async fn delete_topic(&self, name: &str) {
        let result = async {
            let answers = self
                .admin()
                .await?
                .delete_topics(&[name])
                .await
                .map_err(|e| e.to_string())?;
            answers
                .into_values()
                .try_for_each(|r| r.map_err(|e| e.to_string()))
        }
        .await;
        if let Err(e) = result {
            eprintln!("warning: could not delete topic {name}: {e}");
        }
    }

    /// Creates a fresh topic with `partitions` partitions (replication factor 1) for one round.
    pub async fn create_topic(&self, prefix: &str, partitions: i32) -> Result<String, String> {
        let name = KafkaCluster::unique_topic(prefix);
        let admin = self.admin().await?;
        admin
            .create_topic(
                NewTopic::new(&name)
                    .partitions(partitions)
                    .replication_factor(1),
            )
            .await
            .map_err(|e| e.to_string())?;
        // Every partition's leader must be serving before the clock starts: a fresh
        // partition answers NOT_LEADER for a moment, which librdkafka's idempotent
        // producer treats as fatal.
        let spec: Vec<(TopicPartition, OffsetSpec)> = (0..partitions)
            .map(|p| (TopicPartition::new(&name, p), OffsetSpec::Latest))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match admin
                .list_offsets(&spec, IsolationLevel::ReadUncommitted)
                .await
            {
                Ok(answers) => answers.len() == spec.len() && answers.values().all(Result::is_ok),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "partitions of {name} did not get a leader within 30 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And a little longer: the leader may list offsets before it takes produce requests.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(name)
    }
}

/// The payload every client sends: `size` bytes, not all zero (so compression has some work).
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b"flumen-compare-"[i % 15]).collect()
}

/// Prints one JSON object per line (`--json`).
pub fn print_json_lines<T: Serialize>(results: &[T]) {
    for r in results {
        // Structs of numbers and strings: serialisation cannot fail.
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    }
}

/// Prints the results, as a table or one JSON object per line.
pub fn print_results(results: &[ClientResult], json: bool) {
    if json {
        return print_json_lines(results);
    }
    if let Some(settings) = results.iter().find_map(|r| r.settings.as_ref()) {
        println!("settings (every client): {settings}");
    }
    println!(
        "{:<14} {:>10} {:>10} {:>14} {:>9} {:>9} {:>10}",
        "client", "records/s", "MB/s", "CPU s/M rec", "p50 ms", "p99 ms", "peak MB"
    );
    for r in results {
        println!(
            "{:<14} {:>10.0} {:>10.1} {:>14.3} {:>9.2} {:>9.2} {:>10}",
            r.client,
            r.records_per_s,
            r.mb_per_s,
            r.cpu_s_per_million,
            r.p50_ms,
            r.p99_ms,
            r.peak_rss_mb.map_or("-".to_owned(), |m| format!("{m:.1}"))
        );
    }
    if let Some(base) = results.iter().find(|r| r.client == "rdkafka") {
        for r in results.iter().filter(|r| r.client != "rdkafka") {
            println!(
                "{} vs rdkafka: {}, {:.2}x CPU per record",
                r.client,
                throughput_ratio(r, base),
                r.cpu_s_per_million / base.cpu_s_per_million,
            );
            if let (Some(a), Some(b)) = (r.peak_rss_mb, base.peak_rss_mb) {
                println!("{} vs rdkafka: {:.2}x peak RSS", r.client, a / b);
            }
            if let (Some(a), Some(b)) = (r.client_rss_mb, base.client_rss_mb) {
                println!(
                    "{} vs rdkafka: {:.2}x RSS growth over the program before the client ({a:.1} vs {b:.1} MB)",
                    r.client,
                    a / b
                );
            }
        }
    }
    // The pattern users of both write: a future per record, awaited.
    let find = |name: &str| results.iter().find(|r| r.client == name);
    if let (Some(f), Some(base)) = (find("flumen-futures"), find("rdkafka-futures")) {
        println!(
            "flumen-futures vs rdkafka-futures: {}, {:.2}x CPU per record",
            throughput_ratio(f, base),
            f.cpu_s_per_million / base.cpu_s_per_million,
        );
    }
    // What awaiting a future per record costs against looking at the oldest one.
    if let (Some(f), Some(base)) = (find("flumen-futures"), find("flumen")) {
        println!(
            "flumen-futures vs flumen: {}, {:.2}x CPU per record",
            throughput_ratio(f, base),
            f.cpu_s_per_million / base.cpu_s_per_million,
        );
    }
}

/// `a`'s records/s over `b`'s, overall and round by round: round `k` of both ran in the
/// same pass over the clients, so the spread of the per-round ratios shows how much of the
/// overall one is the broker's mood (a measured round runs up to 2x slower than another
/// on these shared 2-core machines, for every client alike).
pub fn throughput_ratio(a: &ClientResult, b: &ClientResult) -> String {
    let rounds: Vec<String> = a
        .round_records_per_s
        .iter()
        .zip(&b.round_records_per_s)
        .map(|(x, y)| format!("{:.2}", x / y))
        .collect();
    let overall = a.records_per_s / b.records_per_s;
    if rounds.len() < 2 {
        format!("{overall:.2}x records/s")
    } else {
        format!("{overall:.2}x records/s (by round: {})", rounds.join(" "))
    }
}
