//! The runtime's monitoring endpoint against a real broker: a running `word_count` serves
//! `/health`, `/metrics` in Prometheus' text format with the records its tasks read, and the
//! live page.

mod runtime_support;

use std::io::{Read, Write};
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

/// The sum of the samples of `name` whose labels contain `filter`.
fn sum(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_serves_health_metrics_and_its_page() {
    let input = topic("http-in", 3).await;
    let output = topic("http-out", 3).await;
    let producer = Producer::connect(
        ProducerConfig::from_properties([("bootstrap.servers", kafka().bootstrap().as_str())])
            .expect("config"),
    )
    .await
    .expect("producer");
    let lines = 2_000;
    for i in 0..lines {
        let line = format!("alpha beta w{}", i % 10);
        drop(
            producer
                .send(ProducerRecord::new(&input).value(line.as_bytes()))
                .await
                .expect("send"),
        );
    }
    producer.flush().await.expect("flush");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(example("word_count"))
        .args([
            "-b",
            &kafka().bootstrap(),
            "--input",
            &input,
            "--output",
            &output,
        ])
        .args(["--application-id", &KafkaCluster::unique_topic("http-app")])
        .args(["--workers", "2", "--metrics-addr", &addr])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start word_count");

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut healthy = false;
    let mut metrics = String::new();
    while Instant::now() < deadline {
        if let Some((status, _)) = get(&addr, "/health") {
            assert!(status == 200 || status == 503, "health answered {status}");
            healthy |= status == 200;
        }
        if let Some((200, body)) = get(&addr, "/metrics") {
            metrics = body;
            if healthy && sum(&metrics, "flumen_task_records_in_total", "task=\"0_") >= lines as f64
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(healthy, "never healthy");
    // Every input line was read by the first sub-topology's tasks, and every word by the
    // second's: 3 words a line.
    assert_eq!(
        sum(&metrics, "flumen_task_records_in_total", "task=\"0_"),
        lines as f64,
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sum(&metrics, "flumen_task_records_in_total", "task=\"1_") < 3.0 * lines as f64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        metrics = get(&addr, "/metrics").expect("metrics").1;
    }
    assert_eq!(
        sum(&metrics, "flumen_task_records_in_total", "task=\"1_"),
        3.0 * lines as f64
    );
    for family in [
        "# TYPE flumen_operator_records_in_total counter",
        "# TYPE flumen_partition_lag gauge",
        "# TYPE flumen_task_watermark_ms gauge",
        "# TYPE flumen_worker_busy_ratio gauge",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(
        sum(&metrics, "flumen_operator_state_keys", "window") >= 12.0,
        "{metrics}"
    );
    let (status, page) = get(&addr, "/").expect("page");
    assert_eq!(status, 200);
    assert!(page.contains("<title>Flumen pipeline</title>") && page.contains("/metrics"));
    assert_eq!(get(&addr, "/nothing").map(|r| r.0), Some(404));
    terminate(&child);
    let out = wait(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
