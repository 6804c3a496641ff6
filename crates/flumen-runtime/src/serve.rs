//! The monitoring endpoint (`RuntimeConfig::metrics_addr`): `/metrics` in Prometheus' text
//! format, `/health` (200 while every worker of the process is [`Phase::Running`], 503 with
//! the reason while one is starting, rebalancing or restoring), `/recent` (JSON: the topics of
//! `monitor.topics` and the last records written to them, newest first), and `/`, a small live
//! page that reads `/metrics` and `/recent` every second. Served by the runtime's control thread; the page is
//! embedded (`page.html`, no CDN: it works offline).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use crate::metrics::{Histogram, MetricsBoard, Phase, RecentRecord, RuntimeMetrics};

/// Serves the endpoint on `listener` until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, board: Arc<MetricsBoard>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let board = board.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let board = board.clone();
                async move { Ok::<_, Infallible>(answer(&req, &board)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "a metrics connection ended with an error");
            }
        });
    }
}

fn answer(req: &Request<hyper::body::Incoming>, board: &MetricsBoard) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus(&board.snapshot()),
        ),
        "/health" => match health(&board.phases()) {
            Ok(body) => reply(StatusCode::OK, "text/plain", body),
            Err(body) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body),
        },
        "/recent" => reply(
            StatusCode::OK,
            "application/json",
            recent_json(board.monitored(), &board.snapshot().recent),
        ),
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    }
}

/// `/recent`'s body: `{"topics": [...], "records": [{"topic", "key", "value", "timestamp"},
/// ...]}`, records newest first.
fn recent_json(topics: &[String], recent: &[RecentRecord]) -> String {
    let records: Vec<serde_json::Value> = recent
        .iter()
        .map(|r| {
            serde_json::json!({
                "topic": r.topic,
                "key": r.key,
                "value": r.value,
                "timestamp": r.timestamp,
            })
        })
        .collect();
    serde_json::json!({ "topics": topics, "records": records }).to_string()
}

/// `/health`'s body: `Ok` when every worker runs, else `Err` naming the workers that do not
/// and what they do (`worker 1: rebalancing`).
fn health(phases: &[Phase]) -> Result<String, String> {
    let running = phases.iter().filter(|&&p| p == Phase::Running).count();
    if running == phases.len() {
        return Ok(format!("ok: {running} of {running} workers running\n"));
    }
    let mut body = format!("{running} of {} workers running\n", phases.len());
    for (index, phase) in phases.iter().enumerate() {
        if *phase != Phase::Running {
            let _ = writeln!(body, "worker {index}: {}", phase.name());
        }
    }
    Err(body)
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics in Prometheus' text exposition format.
pub(crate) fn prometheus(m: &RuntimeMetrics) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    family(
        "flumen_records_in_total",
        "counter",
        "Records read by this process's tasks since the start.",
        vec![(String::new(), m.records_in as f64)],
    );
    let task = |t: &crate::TaskMetrics| format!("task=\"{}\"", esc(&t.task));
    let per_task = |f: &dyn Fn(&crate::TaskMetrics) -> f64| {
        m.tasks
            .iter()
            .map(|t| (format!("{{{}}}", task(t)), f(t)))
            .collect::<Vec<_>>()
    };
    family(
        "flumen_task_records_in_total",
        "counter",
        "Records read by a task.",
        per_task(&|t| t.counters.records_in as f64),
    );
    family(
        "flumen_task_records_skipped_total",
        "counter",
        "Records that did not deserialize and were skipped.",
        per_task(&|t| t.counters.records_skipped as f64),
    );
    family(
        "flumen_task_records_dead_lettered_total",
        "counter",
        "Records that did not deserialize and went to the dead-letter topic.",
        per_task(&|t| t.counters.records_dead_lettered as f64),
    );
    family(
        "flumen_task_errors_total",
        "counter",
        "Errors that stopped a task.",
        per_task(&|t| t.counters.errors as f64),
    );
    family(
        "flumen_task_processing_seconds_total",
        "counter",
        "Time a task spent processing records.",
        per_task(&|t| t.counters.processing_ns as f64 / 1e9),
    );
    family(
        "flumen_task_watermark_ms",
        "gauge",
        "A task's event-time watermark (ms since the epoch; absent before the first).",
        m.tasks
            .iter()
            .filter(|t| t.watermark > i64::MIN)
            .map(|t| (format!("{{{}}}", task(t)), t.watermark as f64))
            .collect(),
    );
    let restored = |f: &dyn Fn(&crate::RestoreStats) -> f64| -> Vec<(String, f64)> {
        m.tasks
            .iter()
            .filter_map(|t| {
                t.restore
                    .as_ref()
                    .map(|r| (format!("{{{}}}", task(t)), f(r)))
            })
            .collect()
    };
    family(
        "flumen_task_restore_records",
        "gauge",
        "Changelog records a task read to restore its state when it started.",
        restored(&|r| r.records as f64),
    );
    family(
        "flumen_task_restore_bytes",
        "gauge",
        "Key and value bytes of those changelog records.",
        restored(&|r| r.bytes as f64),
    );
    family(
        "flumen_task_restore_seconds",
        "gauge",
        "How long restoring a task's state took when it started.",
        restored(&|r| r.duration.as_secs_f64()),
    );
    let per_op = |f: &dyn Fn(&crate::OperatorMetrics) -> f64| {
        m.tasks
            .iter()
            .flat_map(|t| {
                t.operators.iter().map(move |o| {
                    (
                        format!("{{{},operator=\"{}\"}}", task(t), esc(&o.name)),
                        f(o),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        "flumen_operator_records_in_total",
        "counter",
        "Items pushed into an operator.",
        per_op(&|o| o.records_in as f64),
    );
    family(
        "flumen_operator_records_late_total",
        "counter",
        "Items too late for every window they belong to.",
        per_op(&|o| o.records_late as f64),
    );
    family(
        "flumen_operator_state_bytes",
        "gauge",
        "Bytes of state an operator holds (an estimate).",
        per_op(&|o| o.state_bytes as f64),
    );
    family(
        "flumen_operator_state_keys",
        "gauge",
        "Keys in an operator's state.",
        per_op(&|o| o.state_keys as f64),
    );
    let per_part = |f: &dyn Fn(&crate::PartitionLag) -> f64| {
        m.lag
            .iter()
            .map(|l| {
                (
                    format!(
                        "{{topic=\"{}\",partition=\"{}\"}}",
                        esc(&l.tp.topic),
                        l.tp.partition
                    ),
                    f(l),
                )
            })
            .collect::<Vec<_>>()
    };
    family(
        "flumen_partition_lag",
        "gauge",
        "Records between a partition's position and its high watermark at the last fetch.",
        per_part(&|l| l.lag as f64),
    );
    family(
        "flumen_partition_position",
        "gauge",
        "The next offset of a partition to process.",
        per_part(&|l| l.position as f64),
    );
    let per_worker = |f: &dyn Fn(&crate::WorkerMetrics) -> f64| {
        m.workers
            .iter()
            .map(|w| (format!("{{worker=\"{}\"}}", w.worker), f(w)))
            .collect::<Vec<_>>()
    };
    family(
        "flumen_worker_busy_ratio",
        "gauge",
        "Share of wall time a worker spent processing records since it started.",
        per_worker(&|w| w.busy_ratio),
    );
    family(
        "flumen_worker_commits_total",
        "counter",
        "Offset commits of a worker.",
        per_worker(&|w| w.commits as f64),
    );
    family(
        "flumen_worker_rebalances_total",
        "counter",
        "Rebalances that moved partitions of a worker.",
        per_worker(&|w| w.rebalances as f64),
    );
    family(
        "flumen_worker_backpressure_pauses_total",
        "counter",
        "Times a worker paused fetching because outputs backed up.",
        per_worker(&|w| w.backpressure_pauses as f64),
    );
    family(
        "flumen_worker_phase",
        "gauge",
        "1 for the phase a worker is in, 0 for the others (starting, rebalancing, restoring, \
         running, stopping).",
        m.workers
            .iter()
            .flat_map(|w| {
                Phase::ALL.map(|p| {
                    (
                        format!("{{worker=\"{}\",phase=\"{}\"}}", w.worker, p.name()),
                        if p == w.phase { 1.0 } else { 0.0 },
                    )
                })
            })
            .collect(),
    );
    histogram(
        &mut out,
        "flumen_end_to_end_latency_seconds",
        "Event time (the output record's timestamp) to the broker's acknowledgement, per sink \
         topic (repartition topics included), over sampled records: at most one in flight per \
         topic and one new sample per 10 ms per worker.",
        m.latency
            .iter()
            .map(|l| (format!("topic=\"{}\"", esc(&l.topic)), &l.histogram))
            .collect(),
    );
    histogram(
        &mut out,
        "flumen_commit_seconds",
        "Duration of a worker's commits: producer flush, then offset commit.",
        m.workers
            .iter()
            .map(|w| (format!("worker=\"{}\"", w.worker), &w.commit_seconds))
            .collect(),
    );
    out
}

/// Writes one histogram family: `_bucket` (cumulative, with `le`), `_sum` and `_count` per
/// label set.
fn histogram(out: &mut String, name: &str, help: &str, series: Vec<(String, &Histogram)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in series {
        for (le, n) in h.cumulative() {
            let le = if le.is_infinite() {
                "+Inf".to_owned()
            } else {
                le.to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

/// The live page: per-operator rates, lag per partition, watermarks and latency percentiles,
/// from `/metrics`.
const PAGE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{SinkLatency, WorkerMetrics};

    #[test]
    fn health_names_the_workers_that_do_not_run() {
        assert_eq!(
            health(&[Phase::Running, Phase::Running]),
            Ok("ok: 2 of 2 workers running\n".to_owned())
        );
        let body = health(&[Phase::Running, Phase::Rebalancing, Phase::Restoring])
            .expect_err("not every worker runs");
        assert_eq!(
            body,
            "1 of 3 workers running\nworker 1: rebalancing\nworker 2: restoring\n"
        );
        assert!(health(&[Phase::Starting]).is_err());
    }

    #[test]
    fn histograms_are_exposed_cumulative_with_sum_and_count() {
        let mut latency = SinkLatency {
            topic: "out".to_owned(),
            ..SinkLatency::default()
        };
        latency.histogram.observe(0.003);
        latency.histogram.observe(0.2);
        let mut worker = WorkerMetrics::default();
        worker.commit_seconds.observe(0.02);
        let m = RuntimeMetrics {
            workers: vec![worker],
            latency: vec![latency],
            ..RuntimeMetrics::default()
        };
        let text = prometheus(&m);
        for line in [
            "# TYPE flumen_end_to_end_latency_seconds histogram",
            "flumen_end_to_end_latency_seconds_bucket{topic=\"out\",le=\"0.0025\"} 0",
            "flumen_end_to_end_latency_seconds_bucket{topic=\"out\",le=\"0.005\"} 1",
            "flumen_end_to_end_latency_seconds_bucket{topic=\"out\",le=\"0.25\"} 2",
            "flumen_end_to_end_latency_seconds_bucket{topic=\"out\",le=\"+Inf\"} 2",
            "flumen_end_to_end_latency_seconds_count{topic=\"out\"} 2",
            "flumen_commit_seconds_bucket{worker=\"0\",le=\"0.025\"} 1",
            "flumen_commit_seconds_count{worker=\"0\"} 1",
            "flumen_worker_phase{worker=\"0\",phase=\"starting\"} 1",
            "flumen_worker_phase{worker=\"0\",phase=\"running\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(
            text.contains("flumen_end_to_end_latency_seconds_sum{topic=\"out\"} 0.203"),
            "{text}"
        );
    }
}
