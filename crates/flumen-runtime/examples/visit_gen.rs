//! Writes synthetic visits (`flumen_runtime::testing::visits`) to a topic: the input of the
//! `visit_analytics` job. Each record's value is one JSON visit and its timestamp the visit's
//! `ts`; the key is the URL, the user, or nothing (`--partitions-by`).
//!
//! ```sh
//! cargo run --release -p flumen-runtime --example visit_gen -- \
//!     -b localhost:9092 --topic visits --count 100000 --rate 5000 \
//!     --out-of-order-ms 2000 --late-share 0.01 --late-by-ms 60000 \
//!     --burst-url /checkout --burst-at-ms 30000 --burst-for-ms 20000
//! ```
//!
//! The same `--seed` and settings give the same visits (with `--start-ms`, the same
//! timestamps too).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use flumen_client::{Producer, ProducerConfig, ProducerRecord};
use flumen_runtime::testing::visits::VisitGen;

/// What a record's key is (and so, with the default partitioner, its partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KeyBy {
    /// The visit's URL.
    Url,
    /// The visit's user.
    User,
    /// No key: the sticky partitioner spreads the records.
    None,
}

/// Writes synthetic visit logs to a Kafka topic.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(short = 'b', long = "bootstrap", env = "FLUMEN_BOOTSTRAP")]
    bootstrap: String,
    /// The topic to write.
    #[arg(long)]
    topic: String,
    /// Number of visits to write.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Number of users (u0, u1, ...).
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Number of URLs, most visited first (Zipf-like popularity).
    #[arg(long, default_value_t = 50)]
    urls: usize,
    /// Exponent of the URL popularity: rank r has weight 1/r^s (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// Records per second of wall-clock time (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Records per second of event time (default: --rate, or 1000 when --rate is 0).
    #[arg(long)]
    events_per_sec: Option<f64>,
    /// Event time of the first visit, ms since the epoch (default: now).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Share of visits that fail with 500 or 503.
    #[arg(long, default_value_t = 0.01)]
    error_share: f64,
    /// An error burst on this URL (see --burst-at-ms, --burst-for-ms, --burst-error-share).
    #[arg(long)]
    burst_url: Option<String>,
    /// Start of the burst, ms of event time after the first visit.
    #[arg(long, default_value_t = 60_000)]
    burst_at_ms: i64,
    /// Length of the burst, ms of event time.
    #[arg(long, default_value_t = 60_000)]
    burst_for_ms: i64,
    /// Share of the burst URL's visits that fail during the burst.
    #[arg(long, default_value_t = 0.5)]
    burst_error_share: f64,
    /// A visit's timestamp may be up to this much older than the largest one before it.
    #[arg(long, default_value_t = 0)]
    out_of_order_ms: i64,
    /// Share of late visits: the largest timestamp so far minus --late-by-ms.
    #[arg(long, default_value_t = 0.0)]
    late_share: f64,
    /// How far behind the largest timestamp so far a late visit is.
    #[arg(long, default_value_t = 60_000)]
    late_by_ms: i64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The record key: url, user or none.
    #[arg(long, value_enum, default_value_t = KeyBy::Url)]
    partitions_by: KeyBy,
    /// A Kafka producer property, KEY=VALUE (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|rt| rt.block_on(run(Args::parse())));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("visit_gen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn generator(args: &Args) -> Result<VisitGen, Box<dyn std::error::Error>> {
    for (name, share) in [
        ("--error-share", args.error_share),
        ("--late-share", args.late_share),
        ("--burst-error-share", args.burst_error_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("{name} must be in [0, 1], not {share}").into());
        }
    }
    if args.rate < 0.0 || !args.rate.is_finite() {
        return Err(format!("--rate must be 0 or more, not {}", args.rate).into());
    }
    let events_per_sec = match args.events_per_sec {
        Some(r) if r > 0.0 && r.is_finite() => r,
        Some(r) => return Err(format!("--events-per-sec must be positive, not {r}").into()),
        None if args.rate > 0.0 => args.rate,
        None => 1000.0,
    };
    let start_ms = match args.start_ms {
        Some(ms) => ms,
        None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64,
    };
    let mut spec = VisitGen::new(args.seed)
        .users(args.users)
        .url_count(args.urls)
        .zipf_exponent(args.zipf_exponent)
        .start_ms(start_ms)
        .events_per_sec(events_per_sec)
        .error_share(args.error_share)
        .out_of_order_ms(args.out_of_order_ms)
        .late(args.late_share, args.late_by_ms);
    if let Some(url) = &args.burst_url {
        if !spec.url_list().contains(url) {
            return Err(format!(
                "--burst-url {url} is not one of the {} URLs ({})",
                args.urls,
                spec.url_list().join(", ")
            )
            .into());
        }
        let from = start_ms + args.burst_at_ms;
        spec = spec.error_burst(url, from, from + args.burst_for_ms, args.burst_error_share);
    }
    Ok(spec)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let visits = generator(&args)?;
    let mut properties = vec![
        ("bootstrap.servers".to_owned(), args.bootstrap.clone()),
        ("linger.ms".to_owned(), "5".to_owned()),
    ];
    for p in &args.properties {
        let (k, v) = p.split_once('=').ok_or("-X takes KEY=VALUE")?;
        properties.push((k.to_owned(), v.to_owned()));
    }
    let producer = Producer::connect(ProducerConfig::from_properties(properties)?).await?;

    let started = Instant::now();
    let mut visits = visits.visits();
    let mut value = Vec::with_capacity(128);
    let (mut errors, mut late) = (0u64, 0u64);
    for i in 0..args.count {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let max_before = visits.max_ts();
        value.clear();
        let visit = visits.next_json(&mut value);
        errors += u64::from(visit.is_error());
        late += u64::from(max_before.is_some_and(|m| visit.ts < m - args.out_of_order_ms));
        let mut record = ProducerRecord::new(&args.topic)
            .value(&value)
            .timestamp(visit.ts);
        record = match args.partitions_by {
            KeyBy::Url => record.key(visit.url.as_bytes()),
            KeyBy::User => record.key(visit.user.as_bytes()),
            KeyBy::None => record,
        };
        // The delivery futures are not kept: flush waits for every record, and the
        // producer counts the ones that failed.
        drop(producer.send(record).await?);
    }
    producer.flush().await?;
    let failed = producer.failed_records();
    let last_failure = producer.last_failure();
    producer.close(Duration::from_secs(10)).await?;
    if failed > 0 {
        let why = last_failure.map_or_else(String::new, |e| format!(": {e}"));
        return Err(format!("{failed} of {} visits were not written{why}", args.count).into());
    }
    eprintln!(
        "visit_gen: {} visits written to {} in {:.1} s ({errors} errors, {late} late)",
        args.count,
        args.topic,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
