//! The live page in a real browser: Debian's chromium, headless, loads the page of a running
//! `uppercase` (a screenshot while records flow), and once the job is idle the numbers the
//! page shows are the ones `/metrics` serves.
//!
//! Needs `chromium` on the PATH (`apt-get install -y chromium`; `.ci/run` installs it): without
//! it the test fails, it never skips.

mod runtime_support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_testcontainers::KafkaCluster;
use runtime_support::{example, kafka, terminate, topic, wait};

/// `GET path` on `addr`: the status code and the body.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The samples of a Prometheus text: series (name and labels, as written) to value.
fn samples(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

fn sum(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s == name || s.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v)
        .sum()
}

/// Debian's chromium (or a `chromium-browser`) on the PATH.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed (no `chromium` on the PATH): the page test needs \
                 it; install it with `apt-get install -y chromium` (.ci/run does)"
            )
        })
}

/// Runs headless chromium on `url` with `args` (a profile of its own, so that runs in
/// parallel do not share one); its stdout.
fn headless(browser: &Path, url: &str, args: &[&str]) -> String {
    let profile = std::env::temp_dir().join(KafkaCluster::unique_topic("flumen-chromium"));
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args([
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// An element of the dumped DOM that mirrors a `/metrics` sample.
#[derive(Debug)]
struct Shown {
    series: String,
    value: Option<f64>,
    text: String,
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// Every element with a `data-series` attribute (before the page's script, which builds
/// them): the series, its `data-value`, its text.
fn shown(dom: &str) -> Vec<Shown> {
    let mut out = Vec::new();
    let mut rest = &dom[..dom.find("<script").unwrap_or(dom.len())];
    while let Some(at) = rest.find(" data-series=\"") {
        let tag_start = rest[..at].rfind('<').expect("inside a tag");
        let tag_len = rest[tag_start..].find('>').expect("tag end");
        let tag = &rest[tag_start..tag_start + tag_len];
        let after = &rest[tag_start + tag_len + 1..];
        let text = unescape(&after[..after.find('<').unwrap_or(after.len())]);
        out.push(Shown {
            series: attribute(tag, "data-series").expect("data-series"),
            value: attribute(tag, "data-value").and_then(|v| v.parse().ok()),
            text,
        });
        rest = after;
    }
    out
}

/// The q-quantile of cumulative buckets as the page computes it (linear in a bucket, the
/// last finite bound above it).
fn quantile(q: f64, cumulative: &[(f64, f64)]) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, n) in cumulative {
        if n >= rank {
            if le.is_infinite() {
                return Some(lo);
            }
            return Some(if n > below {
                lo + (le - lo) * (rank - below) / (n - below)
            } else {
                lo
            });
        }
        (lo, below) = (le, n);
    }
    Some(lo)
}

/// The latency buckets summed over every topic: `(le, cumulative count)`, ascending.
fn latency_buckets(samples: &[(String, f64)]) -> Vec<(f64, f64)> {
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for (series, v) in samples {
        let Some(labels) = series.strip_prefix("flumen_end_to_end_latency_seconds_bucket{") else {
            continue;
        };
        let le = attribute(labels, "le").expect("le");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("bound")
        };
        match by_le.iter_mut().find(|(b, _)| *b == le) {
            Some(entry) => entry.1 += v,
            None => by_le.push((le, *v)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_le
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_in_chromium_shows_what_metrics_says() {
    let browser = chromium();
    let input = topic("page-in", 3).await;
    let output = topic("page-out", 3).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}/");
    let child = Command::new(example("uppercase"))
        .args([
            "-b",
            &kafka().bootstrap(),
            "--input",
            &input,
            "--output",
            &output,
        ])
        .args(["--application-id", &KafkaCluster::unique_topic("page-app")])
        .args(["--workers", "2", "-X", &format!("metrics.addr={addr}")])
        // The output as a monitored topic: its last records are the page's "Last alerts".
        .args(["-X", &format!("monitor.topics={output}")])
        // Commits soon after the last record, so that the idle job's numbers settle.
        .args(["-X", "commit.interval.ms=200"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start uppercase");
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&addr, "/health").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Records flow (timestamped when sent, so latencies are real) while chromium takes the
    // screenshot.
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka().bootstrap().as_str()),
            ("linger.ms", "0"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("monitor.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = {
        let (browser, url, screenshot) = (browser.clone(), url.clone(), screenshot.clone());
        let shot_arg = format!("--screenshot={}", screenshot.display());
        tokio::task::spawn_blocking(move || {
            // Three seconds of traffic first, so the page's first refresh has samples.
            std::thread::sleep(Duration::from_secs(3));
            headless(
                &browser,
                &url,
                &[
                    &shot_arg,
                    "--window-size=1280,900",
                    "--virtual-time-budget=10000",
                ],
            )
        })
    };
    let mut sent = 0u64;
    while !shot.is_finished() {
        for _ in 0..50 {
            let value = format!("visit {sent} of the page test");
            drop(
                producer
                    .send(ProducerRecord::new(&input).value(value.as_bytes()))
                    .await
                    .expect("send"),
            );
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shot.await.expect("screenshot thread");
    producer.flush().await.expect("flush");
    let png = std::fs::read(&screenshot).expect("the screenshot file");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a screenshot: {} bytes",
        png.len()
    );

    // Idle: every record read, no lag, two scrapes a second apart agree.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = Vec::new();
    loop {
        let now = samples(&get(&addr, "/metrics").expect("metrics").1);
        let idle = sum(&now, "flumen_records_in_total") == sent as f64
            && sum(&now, "flumen_partition_lag") == 0.0
            && sum(&now, "flumen_partition_position") == sent as f64;
        if idle && !before.is_empty() && stable(&before, &now) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not idle after 60 s: {} of {sent} records in",
            sum(&now, "flumen_records_in_total")
        );
        before = if idle { now } else { Vec::new() };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let dom = headless(
        &browser,
        &url,
        &["--virtual-time-budget=3000", "--dump-dom"],
    );
    let metrics = samples(&get(&addr, "/metrics").expect("metrics").1);
    assert!(stable(&before, &metrics), "the job was not idle");

    // Every number the page shows for these series is the one /metrics has.
    let compared = [
        "flumen_records_in_total",
        "flumen_operator_records_in_total",
        "flumen_partition_position",
        "flumen_partition_lag",
        "flumen_task_watermark_ms",
        "flumen_worker_commits_total",
        "flumen_end_to_end_latency_seconds_count",
    ];
    let shown = shown(&dom);
    for name in compared {
        let of_name: Vec<&Shown> = shown
            .iter()
            .filter(|s| s.series == name || s.series.starts_with(&format!("{name}{{")))
            .collect();
        let expected = metrics
            .iter()
            .filter(|(s, _)| s == name || s.starts_with(&format!("{name}{{")))
            .count();
        assert_eq!(of_name.len(), expected, "{name}: page shows {of_name:?}");
        assert!(expected > 0, "{name} missing from /metrics");
        for s in of_name {
            let want = value(&metrics, &s.series).expect("a series /metrics has");
            let text: Option<f64> = s.text.parse().ok();
            let got = s.value.or(text);
            assert_eq!(got, Some(want), "{s:?}");
            if name != "flumen_task_watermark_ms" {
                assert_eq!(text, Some(want), "{s:?} shows another number");
            }
        }
    }
    // 3 tasks of two operators each saw every record.
    assert_eq!(
        sum(&metrics, "flumen_operator_records_in_total"),
        2.0 * sent as f64
    );

    // Latency: the sample count, and p50/p99 of everything since the start (the page's first
    // refresh; the later ones saw no new sample).
    let count = sum(&metrics, "flumen_end_to_end_latency_seconds_count");
    assert!(count > 0.0, "no latency sample");
    assert!(
        dom.contains(&format!("id=\"latency-count\">{count}<")),
        "latency count {count} not shown"
    );
    let buckets = latency_buckets(&metrics);
    for (id, q) in [("latency-p50", 0.5), ("latency-p99", 0.99)] {
        let at = dom.find(&format!("id=\"{id}\"")).expect(id);
        let tag_start = dom[..at].rfind('<').expect("tag");
        let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').expect("tag end")];
        let shown: f64 = attribute(tag, "data-value")
            .expect("a percentile value")
            .parse()
            .expect("a number");
        let want = quantile(q, &buckets).expect("samples");
        assert!(
            (shown - want).abs() < 1e-9,
            "{id}: page {shown}, /metrics {want}"
        );
    }
    assert!(dom.contains("id=\"latency-p50-line\""), "no p50 line drawn");

    // Last alerts: the rows are /recent's records, newest first, each an uppercased input.
    let (status, recent) = get(&addr, "/recent").expect("recent");
    assert_eq!(status, 200);
    let recent: serde_json::Value = serde_json::from_str(&recent).expect("/recent is JSON");
    assert_eq!(recent["topics"], serde_json::json!([output]));
    let records = recent["records"].as_array().expect("records");
    assert_eq!(records.len() as u64, sent.min(20), "{recent}");
    let rows = recent_rows(&dom);
    assert_eq!(rows.len(), records.len(), "page rows {rows:?}");
    for (row, record) in rows.iter().zip(records) {
        assert_eq!(row.0, output);
        assert_eq!(Some(row.1), record["timestamp"].as_i64());
        let value = record["value"].as_str().expect("value");
        assert!(
            value.starts_with("VISIT ") && value.ends_with(" OF THE PAGE TEST"),
            "{value}"
        );
        assert!(row.2.contains(value), "row {row:?} does not show {value}");
    }

    terminate(&child);
    let out = wait(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The page's "Last alerts" rows: `(data-topic, data-timestamp, the row's text)`.
fn recent_rows(dom: &str) -> Vec<(String, i64, String)> {
    let body = &dom[..dom.find("<script").unwrap_or(dom.len())];
    body.match_indices("<tr class=\"recent\"")
        .map(|(at, _)| {
            let tag = &body[at..at + body[at..].find('>').expect("tag end")];
            let end = at + body[at..].find("</tr>").expect("row end");
            let text = unescape(
                &body[at..end]
                    .replace("</td>", " ")
                    .split('<')
                    .map(|p| p.split_once('>').map_or(p, |(_, t)| t))
                    .collect::<String>(),
            );
            (
                attribute(tag, "data-topic").expect("data-topic"),
                attribute(tag, "data-timestamp")
                    .and_then(|t| t.parse().ok())
                    .expect("data-timestamp"),
                text,
            )
        })
        .collect()
}

/// Whether the series that do not move in an idle job (all but processing time and busy
/// ratio) agree.
fn stable(a: &[(String, f64)], b: &[(String, f64)]) -> bool {
    let steady = |s: &&(String, f64)| {
        !s.0.starts_with("flumen_worker_busy_ratio")
            && !s.0.starts_with("flumen_task_processing_seconds_total")
    };
    a.iter().filter(steady).eq(b.iter().filter(steady))
}
