//! The monitoring endpoint (`RuntimeConfig::metrics_addr`): `/metrics` in Prometheus' text
//! format, `/health` (200 once every worker of the process processes records, 503 before),
//! and `/`, a small live page that reads `/metrics` every second. Served by the runtime's
//! control thread; the page is embedded (no CDN: it works offline).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use crate::metrics::{MetricsBoard, RuntimeMetrics};

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
        "/health" => {
            let (processing, workers) = board.processing();
            if processing >= workers {
                reply(StatusCode::OK, "text/plain", "ok\n".to_owned())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("starting: {processing} of {workers} workers processing\n"),
                )
            }
        }
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    }
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
    out
}

/// The live page: per-operator rates, lag per partition and watermarks, from `/metrics`.
const PAGE: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"><title>Flumen pipeline</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222 }
h1 { font-size: 1.3em } h2 { font-size: 1.05em; margin-top: 1.5em }
table { border-collapse: collapse } td, th { padding: 2px 10px; text-align: right }
th { border-bottom: 1px solid #999 } td:first-child, th:first-child { text-align: left }
#status { color: #666 }
</style></head><body>
<h1>Flumen pipeline</h1><div id="status">loading…</div>
<h2>Operators</h2><table id="ops"></table>
<h2>Partitions</h2><table id="lag"></table>
<h2>Watermarks</h2><table id="wm"></table>
<script>
let last = null, lastAt = 0;
function parse(text) {
  const m = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    const key = line.slice(0, i), v = Number(line.slice(i + 1));
    const b = key.indexOf("{");
    const name = b < 0 ? key : key.slice(0, b);
    const labels = {};
    if (b >= 0) for (const p of key.slice(b + 1, -1).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    (m[name] = m[name] || []).push({labels, v});
  }
  return m;
}
function table(id, head, rows) {
  const t = document.getElementById(id);
  t.innerHTML = "<tr>" + head.map(h => "<th>" + h + "</th>").join("") + "</tr>" +
    rows.map(r => "<tr>" + r.map(c => "<td>" + c + "</td>").join("") + "</tr>").join("");
}
async function refresh() {
  try {
    const text = await (await fetch("/metrics")).text();
    const m = parse(text), now = Date.now();
    const prev = {};
    if (last) for (const s of last.flumen_operator_records_in_total || []) prev[s.labels.task + "|" + s.labels.operator] = s.v;
    const dt = (now - lastAt) / 1000;
    table("ops", ["task", "operator", "records in", "records/s", "late", "state keys", "state bytes"],
      (m.flumen_operator_records_in_total || []).map(s => {
        const k = s.labels.task + "|" + s.labels.operator;
        const find = n => ((m[n] || []).find(x => x.labels.task == s.labels.task && x.labels.operator == s.labels.operator) || {v: 0}).v;
        const rate = k in prev && dt > 0 ? Math.round((s.v - prev[k]) / dt) : "";
        return [s.labels.task, s.labels.operator, s.v, rate, find("flumen_operator_records_late_total"),
                find("flumen_operator_state_keys"), find("flumen_operator_state_bytes")];
      }));
    table("lag", ["topic", "partition", "position", "lag"],
      (m.flumen_partition_lag || []).map(s => [s.labels.topic, s.labels.partition,
        ((m.flumen_partition_position || []).find(x => x.labels.topic == s.labels.topic && x.labels.partition == s.labels.partition) || {v: ""}).v, s.v]));
    table("wm", ["task", "watermark"], (m.flumen_task_watermark_ms || []).map(s =>
      [s.labels.task, s.v >= 9e18 ? "end" : new Date(s.v).toISOString()]));
    const total = (m.flumen_records_in_total || [{v: 0}])[0].v;
    document.getElementById("status").textContent = total + " records in; updated " + new Date(now).toLocaleTimeString();
    last = m; lastAt = now;
  } catch (e) {
    document.getElementById("status").textContent = "cannot read /metrics: " + e;
  }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"##;
