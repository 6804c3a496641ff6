//! `flumen demo`: a local Kafka (unless -b is given), synthetic user-visit logs written
//! and read back, and a summary of what was read.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use flumen_client::admin::{IsolationLevel, OffsetSpec};
use flumen_client::producer::ProducerRecord;
use flumen_client::{Admin, TopicPartition};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::commands::topics::ensure_topic;
use crate::config::{Origin, Settings};
use crate::error::{CliError, Result};

/// `flumen demo`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of visit records to write.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub records: u64,
    /// Topic to write to (created if missing).
    #[arg(short = 't', long, default_value = "flumen-demo-visits")]
    pub topic: String,
    /// Partitions of the topic.
    #[arg(short = 'P', long, default_value_t = 3)]
    pub partitions: i32,
    /// Seed of the synthetic data (the same seed gives the same records).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const URLS: [&str; 8] = [
    "/",
    "/search",
    "/product/42",
    "/product/7",
    "/cart",
    "/checkout",
    "/login",
    "/api/recommendations",
];

/// One synthetic visit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visit {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// User name.
    pub user: String,
    /// Path visited.
    pub url: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Server latency in milliseconds.
    pub latency_ms: u32,
}

impl Visit {
    /// The log line: `timestamp user url status latency_ms`.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.timestamp_ms, self.user, self.url, self.status, self.latency_ms
        )
    }

    /// Parses a log line written by [`Visit::line`].
    pub fn parse(line: &str) -> Option<(String, u16, u32)> {
        let mut it = line.split(' ');
        let _ts: i64 = it.next()?.parse().ok()?;
        let _user = it.next()?;
        let url = it.next()?.to_owned();
        let status = it.next()?.parse().ok()?;
        let latency = it.next()?.parse().ok()?;
        it.next().is_none().then_some((url, status, latency))
    }
}

/// A small deterministic generator (SplitMix64): the demo needs plausible data, not
/// cryptographic randomness, and the same seed must give the same log.
pub struct Visits {
    state: u64,
    next_ts: i64,
}

impl Visits {
    /// Visits starting at `start_ms`.
    pub fn new(seed: u64, start_ms: i64) -> Visits {
        Visits {
            state: seed,
            next_ts: start_ms,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Iterator for Visits {
    type Item = Visit;

    fn next(&mut self) -> Option<Visit> {
        let r = self.next_u64();
        // Skewed popularity: the first URLs are visited most.
        let rank = ((r % 64) as f64).sqrt() as usize % URLS.len();
        let url = URLS[URLS.len() - 1 - rank];
        let status = match (r >> 8) % 100 {
            0..=89 => 200,
            90..=93 => 302,
            94..=97 => 404,
            _ => 500,
        };
        let base = 5 + (r >> 16) % 60;
        let tail = if (r >> 24) % 50 == 0 {
            200 + (r >> 32) % 800
        } else {
            0
        };
        self.next_ts += 1 + (r >> 40) as i64 % 20;
        Some(Visit {
            timestamp_ms: self.next_ts,
            user: format!("user{}", (r >> 48) % 500),
            url,
            status,
            latency_ms: (base + tail) as u32,
        })
    }
}

/// What the demo prints after reading the visits back.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records read.
    pub records: u64,
    /// Lines that were not visit logs.
    pub malformed: u64,
    /// Count per HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Count per URL.
    pub by_url: BTreeMap<String, u64>,
    /// Latencies, to take percentiles of.
    pub latencies: Vec<u32>,
}

impl Summary {
    /// Adds one consumed log line.
    pub fn add(&mut self, line: &str) {
        self.records += 1;
        match Visit::parse(line) {
            Some((url, status, latency)) => {
                *self.by_status.entry(status).or_default() += 1;
                *self.by_url.entry(url).or_default() += 1;
                self.latencies.push(latency);
            }
            None => self.malformed += 1,
        }
    }

    /// The latency at quantile `q` (0..=1), nearest-rank.
    pub fn latency_quantile(&self, q: f64) -> Option<u32> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return None;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    /// The summary text.
    pub fn render(&self) -> String {
        let mut s = format!("Read {} visits", self.records);
        if self.malformed > 0 {
            s.push_str(&format!(" ({} malformed)", self.malformed));
        }
        s.push_str("\n\nBy status:\n");
        for (status, n) in &self.by_status {
            s.push_str(&format!("  {status}  {n:>8}\n"));
        }
        let mut urls: Vec<(&String, &u64)> = self.by_url.iter().collect();
        urls.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        s.push_str("\nTop URLs:\n");
        for (url, n) in urls.into_iter().take(5) {
            s.push_str(&format!("  {n:>8}  {url}\n"));
        }
        s.push_str("\nLatency (ms):");
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            if let Some(v) = self.latency_quantile(q) {
                s.push_str(&format!(" {name} {v}"));
            }
        }
        s.push('\n');
        s
    }
}

/// Give up reading back when no record arrives for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `demo`.
pub async fn run(args: DemoArgs, mut settings: Settings) -> Result<ExitCode> {
    // Kept alive until the end of the demo; dropping it stops the broker.
    let mut _local = None;
    if !settings.has_bootstrap() {
        eprintln!(
            "Starting a local Kafka {} (the first run resolves its jars with Maven)...",
            flumen_testcontainers::kafka_version()
        );
        let started = Instant::now();
        let cluster = tokio::task::spawn_blocking(|| KafkaCluster::start(ClusterSpec::single()))
            .await
            .map_err(|e| CliError::LocalKafka(e.to_string()))?
            .map_err(|e| CliError::LocalKafka(crate::error::one_line(&e.to_string())))?;
        eprintln!(
            "Kafka is up at {} ({:.1} s).",
            cluster.bootstrap(),
            started.elapsed().as_secs_f64()
        );
        settings.set("bootstrap.servers", cluster.bootstrap(), Origin::Command);
        _local = Some(cluster);
    }

    let producer = crate::commands::producer(settings.clone()).await?;
    let admin = Admin::new(producer.cluster().clone());
    let count = ensure_topic(&admin, &args.topic, args.partitions).await?;
    let partitions: Vec<TopicPartition> = (0..count)
        .map(|p| TopicPartition::new(&args.topic, p))
        .collect();
    // Read back only this run's visits, even when the topic already held some.
    let specs: Vec<_> = partitions
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let mut start = BTreeMap::new();
    for (tp, r) in admin
        .list_offsets(&specs, IsolationLevel::ReadUncommitted)
        .await?
    {
        let offset = r
            .map_err(|e| CliError::during(format!("listing offsets of {tp}"), e))?
            .offset;
        start.insert(tp, offset);
    }

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let produce_started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut failed = 0u64;
    for visit in
        Visits::new(args.seed, now_ms).take(usize::try_from(args.records).unwrap_or(usize::MAX))
    {
        let line = visit.line();
        let record = ProducerRecord::new(&args.topic)
            .key(visit.user.as_bytes())
            .value(line.as_bytes())
            .timestamp(visit.timestamp_ms);
        match producer.send(record).await {
            Ok(d) => pending.push(d),
            Err(e) => return Err(CliError::produce(&e)),
        }
        while let Some(Some(r)) = pending.next().now_or_never() {
            failed += u64::from(r.is_err());
        }
    }
    producer.flush().await.map_err(|e| CliError::produce(&e))?;
    while let Some(r) = pending.next().await {
        failed += u64::from(r.is_err());
    }
    let _ = producer.close(Duration::from_secs(5)).await;
    if failed > 0 {
        return Err(CliError::Partial(format!(
            "{failed} visit(s) were not written"
        )));
    }
    eprintln!(
        "Wrote {} visits to {} ({} partitions) in {:.2} s; reading them back...",
        args.records,
        args.topic,
        count,
        produce_started.elapsed().as_secs_f64()
    );

    let mut consumer = crate::commands::consumer(settings).await?;
    consumer
        .assign(partitions.clone())
        .map_err(CliError::consume)?;
    for (tp, offset) in &start {
        consumer.seek(tp, *offset).map_err(CliError::consume)?;
    }
    let consume_started = Instant::now();
    let mut summary = Summary::default();
    let mut last_progress = Instant::now();
    while summary.records < args.records {
        let mut polled = consumer
            .poll(Duration::from_millis(200))
            .await
            .map_err(CliError::consume)?;
        let before = summary.records;
        for record in polled.iter() {
            let record = record.map_err(CliError::consume)?;
            summary.add(&String::from_utf8_lossy(record.value().unwrap_or_default()));
        }
        if summary.records > before {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(CliError::Client(format!(
                "read back {} of {} visits, then nothing for {} s",
                summary.records,
                args.records,
                STALL_TIMEOUT.as_secs()
            )));
        }
    }
    let _ = consumer.close().await;
    eprintln!(
        "Read them back in {:.2} s.\n",
        consume_started.elapsed().as_secs_f64()
    );
    print!("{}", summary.render());
    if _local.is_some() {
        eprintln!("\nStopping the local Kafka.");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_visits() {
        let a: Vec<Visit> = Visits::new(7, 0).take(100).collect();
        let b: Vec<Visit> = Visits::new(7, 0).take(100).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].timestamp_ms < w[1].timestamp_ms));
    }

    #[test]
    fn summary_counts_what_the_lines_say() {
        let mut s = Summary::default();
        let visits: Vec<Visit> = Visits::new(1, 1_000).take(1000).collect();
        for v in &visits {
            s.add(&v.line());
        }
        s.add("garbage");
        assert_eq!(s.records, 1001);
        assert_eq!(s.malformed, 1);
        let ok = visits.iter().filter(|v| v.status == 200).count() as u64;
        assert_eq!(s.by_status.get(&200), Some(&ok));
        assert_eq!(s.by_url.values().sum::<u64>(), 1000);
        let max = visits.iter().map(|v| v.latency_ms).max();
        assert_eq!(s.latency_quantile(1.0), max);
        assert!(s.render().contains("Top URLs"));
    }
}
