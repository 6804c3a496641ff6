//! `flumen demo`: the seed's case, live. A local Kafka (unless -b is given), user visits at a
//! steady rate, the `visit_analytics` pipeline file running on them, and each window's top
//! URLs and the alerts shown as they come out.
//!
//! One process does it all: the traffic task and the reader share the command's
//! current-thread runtime; the pipeline runs on the runtime's own threads, built by `flumen
//! run`'s code from the file embedded here, with the demo's topics and 10-second windows set
//! over it. The job's group and internal topics are named after the run
//! (`flumen-demo-<ms>`), and its input is read from the end: on a cluster given with -b, what
//! earlier runs left in the topics is never counted again.

mod screen;
mod traffic;
mod windows;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use flumen_client::admin::{IsolationLevel, OffsetSpec};
use flumen_client::{Admin, TopicPartition};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};
use serde_json::Value;

use crate::commands::run::{Job, execute, late_records};
use crate::commands::topics::ensure_topic;
use crate::config::{Origin, Settings};
use crate::error::{CliError, Result};
use screen::{Screen, Status};
use traffic::Traffic;
use windows::Book;

/// The job: `crates/flumen-runtime/examples/pipelines/visit_analytics.toml`.
const PIPELINE: &str =
    include_str!("../../../../flumen-runtime/examples/pipelines/visit_analytics.toml");
/// The name of the embedded file in error messages.
const PIPELINE_NAME: &str = "visit_analytics.toml (embedded)";

/// The demo's window size, in the `--set` syntax and in ms.
const WINDOW: &str = "10s";
const WINDOW_MS: i64 = 10_000;
/// How far out of order the job lets visits be (the traffic's disorder is 1 s).
const OUT_OF_ORDERNESS: &str = "2s";
const OUT_OF_ORDERNESS_MS: i64 = 2_000;
/// After `--duration`, how long the demo waits at most for the windows the last visits close
/// (on a busy machine the job may lag behind the traffic).
const DRAIN: Duration = Duration::from_secs(10);

/// The demo's input topic; each topic the file writes becomes `flumen-demo-<its name>`.
const VISITS: &str = "flumen-demo-visits";
const PREFIX: &str = "flumen-demo-";
/// The file's topics the demo reads (before the prefix): per-URL statistics, top URLs,
/// alerts.
const FILE_STATS: &str = "url-stats";
const FILE_TOP: &str = "top-urls";
const FILE_ALERTS: &str = "alerts";

/// `flumen demo`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Visits per second.
    #[arg(long, default_value_t = 2_000, value_name = "VISITS")]
    pub rate: u32,
    /// Stop after this many seconds of traffic (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Serve the job's metrics (`/metrics`, `/health` and a live page at `/`) here; port 0
    /// picks a free one.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Partitions of the demo's topics (when it creates them).
    #[arg(short = 'P', long, default_value_t = 3)]
    pub partitions: i32,
    /// Seed of the synthetic visits.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The topics the job writes, with the demo's names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outputs {
    /// Per-URL statistics of each window.
    stats: String,
    /// The top URLs of each window, when the file writes them.
    top: Option<String>,
    /// Error-rate alerts.
    alerts: String,
    /// Every topic the job writes (the three above, late visits, ...).
    all: Vec<String>,
}

/// The `--set` overrides of the pipeline file `text` for this run, and the outputs it then
/// has.
fn overrides(text: &str, application_id: &str) -> Result<(Vec<String>, Outputs)> {
    let bad = |what: String| CliError::Pipeline(format!("{PIPELINE_NAME}: {what}"));
    let doc: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
    let topic_of = |t: Option<&toml::Value>| {
        t.and_then(|t| t.get("topic"))
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
    };
    let mut sets = vec![
        format!("application_id={application_id}"),
        format!("source.topics={VISITS}"),
        format!("source.max_out_of_orderness={OUT_OF_ORDERNESS}"),
    ];
    let mut outputs = Outputs::default();
    let mut output = |key: String, topic: String, sets: &mut Vec<String>| {
        let ours = format!("{PREFIX}{topic}");
        sets.push(format!("{key}={ours}"));
        match topic.as_str() {
            FILE_STATS => outputs.stats = ours.clone(),
            FILE_TOP => outputs.top = Some(ours.clone()),
            FILE_ALERTS => outputs.alerts = ours.clone(),
            _ => {}
        }
        outputs.all.push(ours);
    };
    for table in ["sink", "late", "dead_letter"] {
        if let Some(topic) = topic_of(doc.get(table)) {
            output(format!("{table}.topic"), topic, &mut sets);
        }
    }
    let steps = doc
        .get("steps")
        .and_then(toml::Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    // `steps.N` counts from 1.
    for (i, step) in steps.iter().enumerate() {
        match step.get("kind").and_then(toml::Value::as_str) {
            Some("window") => sets.push(format!("steps.{}.size={WINDOW}", i + 1)),
            Some(_) => {
                if let Some(topic) = topic_of(Some(step)) {
                    output(format!("steps.{}.topic", i + 1), topic, &mut sets);
                }
            }
            None => {}
        }
    }
    for (topic, ours) in [(FILE_STATS, &outputs.stats), (FILE_ALERTS, &outputs.alerts)] {
        if ours.is_empty() {
            return Err(bad(format!("no step or sink writes {topic:?}")));
        }
    }
    Ok((sets, outputs))
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The address the metrics endpoint will listen on: a free port for port 0. Binding it here
/// also reports a port in use before anything starts.
fn metrics_addr(addr: SocketAddr) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| CliError::Io {
        context: format!("listening for metrics on {addr} (--metrics-addr changes it)"),
        source,
    })?;
    listener.local_addr().map_err(|source| CliError::Io {
        context: "reading the metrics address".to_owned(),
        source,
    })
}

/// Stops the job when dropped.
struct StopJob(flumen_runtime::ShutdownHandle);

impl Drop for StopJob {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Why the demo stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// `--duration` passed.
    Duration,
    /// Ctrl-C.
    Interrupted,
    /// The job stopped by itself (SIGTERM, or an error).
    JobEnded,
}

/// Runs `demo`.
pub async fn run(args: DemoArgs, mut settings: Settings) -> Result<ExitCode> {
    // Kept alive until the end of the demo; dropping it stops the broker.
    let mut local = None;
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
        local = Some(cluster);
    }
    let result = live(&args, settings, local.is_none()).await;
    if let Some(cluster) = local {
        eprintln!("Stopping the local Kafka.");
        drop(cluster);
    }
    result
}

/// Everything after the broker is there; on a cluster of the user's (`tidy`), the run's
/// group and internal topics are deleted at the end.
async fn live(args: &DemoArgs, settings: Settings, tidy: bool) -> Result<ExitCode> {
    let bootstrap = settings
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_owned();
    let metrics = metrics_addr(args.metrics_addr)?;
    let application_id = format!("flumen-demo-{}", now_ms());
    let (sets, outputs) = overrides(PIPELINE, &application_id)?;
    let job = Job::from_text(PIPELINE_NAME, PIPELINE, &sets)?;

    let producer = crate::commands::producer(settings.clone()).await?;
    let admin = Admin::new(producer.cluster().clone());
    ensure_topic(&admin, VISITS, args.partitions).await?;
    let mut start = BTreeMap::new();
    for topic in &outputs.all {
        let count = ensure_topic(&admin, topic, args.partitions).await?;
        let read = [
            Some(&outputs.stats),
            outputs.top.as_ref(),
            Some(&outputs.alerts),
        ];
        if read.contains(&Some(topic)) {
            start.extend(end_offsets(&admin, topic, count).await?);
        }
    }

    // The job reads its input from the end (see the module docs), with one unpinned worker:
    // the machine runs a broker and the traffic too.
    let mut job_settings = settings.clone();
    for (k, v) in [
        ("consumer.auto.offset.reset", "latest"),
        ("num.workers", "1"),
        ("pin.workers", "false"),
    ] {
        job_settings.set(k, v, Origin::Command);
    }
    let runtime = job.runtime(job_settings, Some(metrics))?;
    // Whichever way this function returns, the job stops (the command's runtime would
    // otherwise wait for its thread forever).
    let shutdown = StopJob(runtime.shutdown_handle());
    let mut job_task = tokio::spawn(execute(runtime, false));
    let metrics_url = format!("http://{metrics}/");
    eprintln!(
        "Running visit_analytics ({application_id}) on {bootstrap}: {} visits/s to {VISITS}, \
         {WINDOW} windows; metrics at {metrics_url}",
        args.rate
    );

    let settings_for_cleanup = settings.clone();
    let mut consumer = crate::commands::consumer(settings).await?;
    consumer
        .assign(start.keys().cloned())
        .map_err(CliError::consume)?;
    for (tp, offset) in &start {
        consumer.seek(tp, *offset).map_err(CliError::consume)?;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let (stop_traffic, stop_rx) = tokio::sync::watch::channel(false);
    let traffic_started = Instant::now();
    let mut traffic_task = tokio::spawn(traffic::send(
        producer,
        VISITS.to_owned(),
        Traffic::new(args.seed, args.rate, now_ms()),
        sent.clone(),
        stop_rx,
    ));
    let (interrupt_tx, mut interrupted) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = interrupt_tx.send(true);
        }
    });

    let mut screen = Screen::for_stdout();
    screen.start();
    let mut book = Book::default();
    let (mut windows, mut alerts) = (0u64, 0u64);
    let deadline = args
        .duration
        .map(|s| traffic_started + Duration::from_secs(s));
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut traffic_report = None;
    let mut job_result = None;
    // After the traffic stops, the windows its last visits close are still on their way.
    let mut drain_until: Option<(Instant, i64)> = None;
    let stop = loop {
        if *interrupted.borrow() {
            break Stop::Interrupted;
        }
        if job_task.is_finished() {
            job_result = Some((&mut job_task).await);
            break Stop::JobEnded;
        }
        if traffic_report.is_none() && traffic_task.is_finished() {
            // Before the deadline it only ends on an error.
            let report = (&mut traffic_task)
                .await
                .map_err(|e| CliError::Client(e.to_string()))??;
            traffic_report = Some(report);
        }
        if let Some((until, last_end)) = drain_until {
            if Instant::now() >= until || book.shown_upto(last_end) {
                break Stop::Duration;
            }
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = stop_traffic.send(true);
            if traffic_report.is_none() {
                let report = (&mut traffic_task)
                    .await
                    .map_err(|e| CliError::Client(e.to_string()))??;
                traffic_report = Some(report);
            }
            // The last window the final watermark closes.
            let max_ts = traffic_report.as_ref().and_then(|r| r.max_ts);
            let last_end = max_ts.map_or(i64::MIN, |ts| {
                (ts - OUT_OF_ORDERNESS_MS - 1).div_euclid(WINDOW_MS) * WINDOW_MS
            });
            drain_until = Some((Instant::now() + DRAIN, last_end));
        }
        let polled = tokio::select! {
            polled = consumer.poll(Duration::from_millis(200)) => polled,
            _ = interrupted.changed() => continue,
        };
        let mut polled = polled.map_err(CliError::consume)?;
        let now = Instant::now();
        for record in polled.iter() {
            let record = record.map_err(CliError::consume)?;
            let Ok(value) = serde_json::from_slice::<Value>(record.value().unwrap_or_default())
            else {
                continue;
            };
            let topic = Some(record.topic());
            let mut closed = Vec::new();
            if topic == Some(outputs.stats.as_str()) {
                if let Some((window, stats)) = windows::parse_stats(&value) {
                    closed = book.add_stats(window, stats, now);
                }
            } else if topic == Some(outputs.alerts.as_str()) {
                if let Some(alert) = windows::parse_alert(&value) {
                    alerts += 1;
                    screen.alert(alert);
                }
            } else if topic == outputs.top.as_deref() {
                let key = record.key().and_then(|k| std::str::from_utf8(k).ok());
                if let Some(start) = windows::top_window(key, &value) {
                    closed = book.add_top(start);
                }
            }
            for window in closed {
                windows += 1;
                screen.window(window);
            }
        }
        for closed in book.tick(now) {
            windows += 1;
            screen.window(closed);
        }
        if last_draw.elapsed() >= Duration::from_millis(500) {
            last_draw = Instant::now();
            screen.draw(&Status {
                bootstrap: &bootstrap,
                metrics: &metrics_url,
                rate: args.rate,
                sent: sent.load(Ordering::Relaxed),
                started: traffic_started,
                windows,
                alerts,
            });
        }
    };

    // Stop in order: traffic, job, reader.
    let _ = stop_traffic.send(true);
    let traffic_report = match traffic_report {
        Some(r) => r,
        None => match traffic_task
            .await
            .map_err(|e| CliError::Client(e.to_string()))?
        {
            Ok(r) => r,
            // As for the job below.
            Err(e) if stop == Stop::Interrupted => {
                eprintln!("flumen demo: the traffic stopped with: {e}");
                traffic::Sent::default()
            }
            Err(e) => return Err(e),
        },
    };
    shutdown.0.shutdown();
    let job_result = match job_result {
        Some(r) => r,
        None => match tokio::time::timeout(Duration::from_secs(30), job_task).await {
            Ok(r) => r,
            Err(_) => {
                return Err(CliError::Runtime(
                    "the job did not stop within 30 s".to_owned(),
                ));
            }
        },
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
    if tidy {
        let cleanup = remove_job_leftovers(settings_for_cleanup, &application_id);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), cleanup).await {
            eprintln!(
                "flumen demo: could not delete the group and topics of {application_id}: {e}"
            );
        }
    }
    screen.draw(&Status {
        bootstrap: &bootstrap,
        metrics: &metrics_url,
        rate: args.rate,
        sent: sent.load(Ordering::Relaxed),
        started: traffic_started,
        windows,
        alerts,
    });
    let job_result = job_result.map_err(|e| CliError::Runtime(e.to_string()))?;
    let summary = match (job_result, &stop) {
        (Ok(summary), _) => Some(summary),
        // Ctrl-C reaches a local broker too, which may go before the job's last commit.
        (Err(e), Stop::Interrupted) => {
            eprintln!("flumen demo: the job stopped with: {e}");
            None
        }
        (Err(e), _) => return Err(e),
    };
    eprintln!(
        "Sent {} visits ({} failed); windows closed: {windows}, alerts: {alerts}{}.",
        sent.load(Ordering::Relaxed),
        traffic_report.failed,
        summary.map_or(String::new(), |s| format!(
            "; the job processed {} records ({} late)",
            s.records_in(),
            late_records(&s)
        ))
    );
    if book.ignored > 0 {
        eprintln!(
            "{} statistics rows updated windows already shown (late visits).",
            book.ignored
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes the group `application_id` and its internal topics (`<application_id>-...`).
async fn remove_job_leftovers(mut settings: Settings, application_id: &str) -> Result<()> {
    let admin = Admin::connect(settings.take_client()?)
        .await
        .map_err(CliError::client)?;
    let prefix = format!("{application_id}-");
    let topics: Vec<String> = admin
        .list_topics(false)
        .await?
        .into_iter()
        .filter(|t| t.starts_with(&prefix))
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    if !topics.is_empty() {
        for (topic, r) in admin.delete_topics(&topics).await? {
            r.map_err(|e| CliError::during(format!("deleting topic {topic}"), e))?;
        }
    }
    for (group, r) in admin.delete_groups(&[application_id]).await? {
        r.map_err(|e| CliError::during(format!("deleting group {group}"), e))?;
    }
    Ok(())
}

/// The end offset of each partition of `topic`: where this run's outputs start.
async fn end_offsets(
    admin: &Admin,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let specs: Vec<_> = (0..partitions)
        .map(|p| (TopicPartition::new(topic, p), OffsetSpec::Latest))
        .collect();
    let mut out = BTreeMap::new();
    for (tp, r) in admin
        .list_offsets(&specs, IsolationLevel::ReadUncommitted)
        .await?
    {
        let offset = r
            .map_err(|e| CliError::during(format!("listing offsets of {tp}"), e))?
            .offset;
        out.insert(tp, offset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_file_takes_the_demo_overrides() {
        let (sets, outputs) = overrides(PIPELINE, "flumen-demo-1").expect("overrides");
        assert_eq!(outputs.stats, "flumen-demo-url-stats");
        assert!(
            outputs.all.iter().all(|t| t.starts_with(PREFIX)),
            "{outputs:?}"
        );
        assert!(sets.iter().any(|s| s.ends_with(".size=10s")), "{sets:?}");
        let job = Job::from_text(PIPELINE_NAME, PIPELINE, &sets);
        assert!(job.is_ok(), "{:?}", job.err());
    }

    #[test]
    fn outputs_of_steps_and_sinks_get_the_demo_prefix_and_every_window_the_demo_size() {
        let text = "application_id = \"a\"\n[source]\ntopics = [\"visits\"]\n\
                    [[steps]]\nkind = \"key_by\"\npath = \"url\"\n\
                    [[steps]]\nkind = \"window\"\ntype = \"tumbling\"\nsize = \"1m\"\n\
                    [[steps]]\nkind = \"also_to\"\ntopic = \"url-stats\"\n\
                    [[steps]]\nkind = \"also_to\"\ntopic = \"alerts\"\n\
                    [[steps]]\nkind = \"window\"\ntype = \"tumbling\"\nsize = \"1m\"\n\
                    [sink]\ntopic = \"top-urls\"\n[late]\ntopic = \"late-visits\"\n";
        let (sets, outputs) = overrides(text, "app").expect("overrides");
        for set in [
            "steps.2.size=10s",
            "steps.3.topic=flumen-demo-url-stats",
            "steps.4.topic=flumen-demo-alerts",
            "steps.5.size=10s",
            "sink.topic=flumen-demo-top-urls",
            "late.topic=flumen-demo-late-visits",
        ] {
            assert!(sets.iter().any(|s| s == set), "{set} not in {sets:?}");
        }
        assert_eq!(outputs.stats, "flumen-demo-url-stats");
        assert_eq!(outputs.top.as_deref(), Some("flumen-demo-top-urls"));
        assert_eq!(outputs.alerts, "flumen-demo-alerts");
        assert_eq!(outputs.all.len(), 4);
    }
}
