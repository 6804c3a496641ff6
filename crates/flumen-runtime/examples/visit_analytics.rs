//! The seed's job: real-time analysis of user-visit logs.
//!
//! Input: JSON visits `{"ts": ms, "user": "u42", "url": "/cart", "status": 200,
//! "latency_ms": 35}` (event time = `ts`, out of order by up to `--max-out-of-orderness`).
//! Per URL and tumbling event-time window (`--window`, default 1 minute):
//!
//! - `--output-stats`: key = URL, value = `{"window_start", "window_end", "url", "views",
//!   "users", "errors", "p50_ms", "p99_ms"}` (plus `"countries": {"CN": n, ...}` with
//!   `--users`);
//! - `--output-top`: key = window start, value = the window's top 10 URLs by views,
//!   `[{"url", "views"}, ...]`;
//! - `--output-alerts`: when a URL's error rate in a window exceeds `--alert-error-rate` with
//!   at least `--alert-min-views` views: `{"window_start", "window_end", "url", "views",
//!   "errors", "error_rate"}`;
//! - `--output-late`: visits later than the window's close plus `--allowed-lateness`,
//!   unchanged. Within the lateness a late visit updates its window, whose results are
//!   emitted again.
//!
//! `--users TOPIC` (compacted; key = user, value = `{"country": ...}`) joins each visit with
//! its user's country: visits are re-keyed by user, joined, then re-keyed by URL.
//!
//! ```sh
//! cargo run --release -p flumen-runtime --example visit_analytics -- -b localhost:9092 \
//!     --input visits --output-stats url-stats --output-top top-urls \
//!     --output-alerts alerts --output-late late-visits --exit-at-end
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;

#[path = "common/mod.rs"]
mod common;
use flumen_runtime::aggregate::{self, Aggregate};
use flumen_runtime::format::{Encode, FormatError, Json, Owned};
use flumen_runtime::join::{JoinKind, Table};
use flumen_runtime::testing::visits::Visit;
use flumen_runtime::time::{Watermarks, parse_duration};
use flumen_runtime::window::Windows;
use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig};
use serde::{Deserialize, Serialize};

/// Per-URL visit statistics, top URLs and error alerts per event-time window.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(short = 'b', long = "bootstrap", env = "FLUMEN_BOOTSTRAP")]
    bootstrap: String,
    /// The topic of JSON visits.
    #[arg(long)]
    input: String,
    /// Per-URL statistics per window.
    #[arg(long)]
    output_stats: String,
    /// The top 10 URLs of each window.
    #[arg(long)]
    output_top: String,
    /// Error-rate alerts.
    #[arg(long)]
    output_alerts: String,
    /// Visits too late for their window (default: counted and logged).
    #[arg(long)]
    output_late: Option<String>,
    /// A compacted topic of user profiles (`{"country": ...}` keyed by user).
    #[arg(long)]
    users: Option<String>,
    /// The window size (`60s`, `10s`, `500ms`, `1m`).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    window: Duration,
    /// How far out of order visits may arrive.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    max_out_of_orderness: Duration,
    /// How long after its close a window still takes late visits.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    allowed_lateness: Duration,
    /// A partition with no visits for this long stops holding the windows back.
    #[arg(long, value_parser = parse_duration)]
    idleness: Option<Duration>,
    /// The error rate above which a URL's window raises an alert.
    #[arg(long, default_value_t = 0.05)]
    alert_error_rate: f64,
    /// The views a URL needs in a window for an alert.
    #[arg(long, default_value_t = 20)]
    alert_min_views: u64,
    /// The application id.
    #[arg(long, default_value = "visit-analytics")]
    application_id: String,
    /// Worker threads in this process.
    #[arg(long)]
    workers: Option<usize>,
    /// Process what the input holds now, close every window, commit, and exit.
    #[arg(long)]
    exit_at_end: bool,
    /// Serve `/metrics` (Prometheus), `/health` and a live page at this address.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    run: common::RunFlags,
}

/// A user profile from the `--users` table.
#[derive(Clone, Debug, Deserialize)]
struct Profile {
    country: String,
}

/// A visit and its user's country (when the job joins the profiles).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Enriched {
    visit: Visit,
    country: Option<String>,
}

/// Writes only the visit of an [`Enriched`], as it was read: the late output's format.
#[derive(Clone, Copy, Debug)]
struct VisitOnly;

impl Encode<Owned<Enriched>> for VisitOnly {
    fn encode<'b>(
        &self,
        e: &'b Enriched,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], FormatError> {
        e.visit.write_json(scratch);
        Ok(scratch)
    }
}

/// One URL's statistics for one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stats {
    window_start: i64,
    window_end: i64,
    url: String,
    views: u64,
    users: u64,
    errors: u64,
    p50_ms: u64,
    p99_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    countries: Option<BTreeMap<String, u64>>,
}

/// An error-rate alert.
#[derive(Serialize)]
struct Alert<'a> {
    window_start: i64,
    window_end: i64,
    url: &'a str,
    views: u64,
    errors: u64,
    error_rate: f64,
}

/// One entry of a window's top list.
#[derive(Serialize)]
struct Top {
    url: String,
    views: u64,
}

fn main() -> std::process::ExitCode {
    common::main("visit_analytics", || run(Args::parse()))
}

/// Views, distinct users, errors, latency percentiles (p50, p99) and views per country.
type StatsAcc = (u64, u64, u64, Vec<u64>, BTreeMap<String, u64>);

/// How [`StatsAcc`] is computed.
fn stats_aggregate() -> impl Aggregate<Owned<Enriched>, Out = StatsAcc> {
    (
        aggregate::count(),
        aggregate::distinct_count_by_ref(|e: &Enriched| e.visit.user.as_str()),
        aggregate::sum(|e: &Enriched| u64::from(e.visit.is_error())),
        aggregate::percentiles(&[0.5, 0.99], |e: &Enriched| u64::from(e.visit.latency_ms)),
        aggregate::from_fns(
            BTreeMap::<String, u64>::new,
            |acc: &mut BTreeMap<String, u64>, e: &Enriched| {
                if let Some(c) = &e.country {
                    match acc.get_mut(c) {
                        Some(n) => *n += 1,
                        None => {
                            acc.insert(c.clone(), 1);
                        }
                    }
                }
            },
            |into: &mut BTreeMap<String, u64>, other: BTreeMap<String, u64>| {
                for (c, n) in other {
                    *into.entry(c).or_default() += n;
                }
            },
            BTreeMap::clone,
        )
        .logged(),
    )
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut watermarks = Watermarks::bounded(args.max_out_of_orderness);
    if let Some(idle) = args.idleness {
        watermarks = watermarks.idleness(idle);
    }
    let source = Kafka::topic(&args.input)
        .format(Json::<Visit>::new())
        .timestamps(|v: &Visit| v.ts)
        .watermarks(watermarks);
    let mut pipeline = Pipeline::new();
    let by_url = |e: &Enriched| e.visit.url.clone();
    let visits = match &args.users {
        Some(users) => {
            let profiles = Table::new(Kafka::topic(users).format(Json::<Profile>::new()));
            pipeline
                .source(source)
                .key_by("by-user", |v: &Visit| v.user.clone(), Json::<Visit>::new())
                .join_table(
                    &profiles,
                    JoinKind::Left,
                    |visit: Visit, p: Option<&Profile>| Enriched {
                        visit,
                        country: p.map(|p| p.country.clone()),
                    },
                )
                .key_by("by-url", by_url, Json::<Enriched>::new())
        }
        None => pipeline
            .source(source)
            .map(|visit: Visit| Enriched {
                visit,
                country: None,
            })
            .key_by("by-url", by_url, Json::<Enriched>::new()),
    };
    let windowed = visits
        .window(Windows::tumbling(args.window))
        .allowed_lateness(args.allowed_lateness);
    let with_countries = args.users.is_some();
    let (rate, min_views) = (args.alert_error_rate, args.alert_min_views);
    let to_stats = move |w: flumen_runtime::window::Windowed<'_, StatsAcc>| {
        let url = w.key_str().into_owned();
        let (views, users, errors, latency, countries) = w.value;
        Stats {
            window_start: w.start,
            window_end: w.end,
            url,
            views,
            users,
            errors,
            p50_ms: latency[0],
            p99_ms: latency[1],
            countries: with_countries.then_some(countries),
        }
    };
    let alert = move |s: &Stats| {
        let error_rate = s.errors as f64 / s.views.max(1) as f64;
        (s.views >= min_views && error_rate > rate).then(|| {
            serde_json::json!(Alert {
                window_start: s.window_start,
                window_end: s.window_end,
                url: &s.url,
                views: s.views,
                errors: s.errors,
                error_rate,
            })
        })
    };
    let stats = match &args.output_late {
        Some(late) => windowed
            .late_to(late, VisitOnly)
            .aggregate(stats_aggregate())
            .map(to_stats)
            .also_to(&args.output_stats, Json::<Stats>::new(), |s: &Stats| {
                Some(s.clone())
            })
            .also_to(&args.output_alerts, Json::<serde_json::Value>::new(), alert)
            .key_by(
                "by-window",
                |s: &Stats| s.window_start.to_string(),
                Json::<Stats>::new(),
            ),
        None => windowed
            .aggregate(stats_aggregate())
            .map(to_stats)
            .also_to(&args.output_stats, Json::<Stats>::new(), |s: &Stats| {
                Some(s.clone())
            })
            .also_to(&args.output_alerts, Json::<serde_json::Value>::new(), alert)
            .key_by(
                "by-window",
                |s: &Stats| s.window_start.to_string(),
                Json::<Stats>::new(),
            ),
    };
    stats
        .window(Windows::tumbling(args.window))
        .allowed_lateness(args.allowed_lateness)
        .aggregate(aggregate::top_n(10, |s: &Stats| (s.url.clone(), s.views)))
        .map(|w| {
            w.value
                .into_iter()
                .map(|(url, views)| Top { url, views })
                .collect::<Vec<Top>>()
        })
        .to(&args.output_top, Json::<Vec<Top>>::new());

    let mut config = RuntimeConfig::new(&args.bootstrap, &args.application_id);
    if let Some(n) = args.workers {
        config = config.workers(n);
    }
    if let Some(addr) = args.metrics_addr {
        // The page's "Last alerts" shows the alerts as they are written.
        config = config
            .metrics_addr(addr)
            .monitor_topics([args.output_alerts.as_str()]);
    }
    config = args.run.apply(config)?;
    let runtime = Runtime::new(config, pipeline);
    let summary = common::run(runtime, args.exit_at_end)?;
    let late: u64 = summary
        .metrics()
        .tasks
        .iter()
        .flat_map(|t| &t.operators)
        .map(|o| o.records_late)
        .sum();
    eprintln!(
        "visit_analytics: {} records processed, {late} late",
        summary.records_in()
    );
    Ok(())
}
