//! The runtime's monitoring endpoint against a real broker: a running `word_count` serves
//! `/health`, `/metrics` in Prometheus' text format with the records its tasks read, the
//! latency and commit histograms, and the live page; `/health` says 503 while a second
//! instance joining the application moves partitions.

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
        if let Some((status, body)) = get(&addr, "/health") {
            assert!(status == 200 || status == 503, "health answered {status}");
            if status == 503 {
                assert!(body.contains("worker "), "503 without a reason: {body}");
            }
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
        "# TYPE flumen_end_to_end_latency_seconds histogram",
        "# TYPE flumen_commit_seconds histogram",
        "# TYPE flumen_worker_phase gauge",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    // The words went through the repartition topic: its sink sampled their latency (the
    // records carry the time they were produced, so well under a minute). Commits happened.
    let repartition = "-words-repartition\"";
    let samples = sum(
        &metrics,
        "flumen_end_to_end_latency_seconds_count",
        repartition,
    );
    assert!(samples > 0.0, "no latency sample:\n{metrics}");
    assert_eq!(
        sum(
            &metrics,
            "flumen_end_to_end_latency_seconds_bucket",
            &format!("{repartition},le=\"+Inf\"")
        ),
        samples
    );
    let under_a_minute = sum(
        &metrics,
        "flumen_end_to_end_latency_seconds_bucket",
        &format!("{repartition},le=\"60\"}}"),
    );
    assert_eq!(under_a_minute, samples, "{metrics}");
    assert!(
        sum(
            &metrics,
            "flumen_end_to_end_latency_seconds_sum",
            repartition
        ) > 0.0,
        "{metrics}"
    );
    // Commits come every 5 s (commit.interval.ms); each is timed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sum(&metrics, "flumen_worker_commits_total", "") == 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        metrics = get(&addr, "/metrics").expect("metrics").1;
    }
    let commits = sum(&metrics, "flumen_worker_commits_total", "");
    assert!(commits > 0.0, "{metrics}");
    assert_eq!(
        sum(&metrics, "flumen_commit_seconds_count", ""),
        commits,
        "{metrics}"
    );
    assert_eq!(
        sum(&metrics, "flumen_worker_phase", "phase=\"running\""),
        2.0,
        "{metrics}"
    );
    let (status, body) = get(&addr, "/health").expect("health");
    assert_eq!(
        (status, body.as_str()),
        (200, "ok: 2 of 2 workers running\n")
    );
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

/// `uppercase` with the monitoring endpoint on a free port: the child and the address.
fn uppercase(input: &str, output: &str, app: &str) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(example("uppercase"))
        .args([
            "-b",
            &kafka().bootstrap(),
            "--input",
            input,
            "--output",
            output,
        ])
        .args(["--application-id", app, "--workers", "1"])
        .args(["-X", &format!("metrics.addr={addr}")])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start uppercase");
    (child, addr)
}

/// Waits until `/health` on `addr` answers 200.
fn until_healthy(addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while get(addr, "/health").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "{addr} never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_naming_the_rebalancing_worker_while_a_second_instance_joins() {
    let input = topic("rebalance-in", 4).await;
    let output = topic("rebalance-out", 4).await;
    let app = KafkaCluster::unique_topic("rebalance-app");
    let (first, first_addr) = uppercase(&input, &output, &app);
    until_healthy(&first_addr, Duration::from_secs(60));

    let (second, second_addr) = uppercase(&input, &output, &app);
    // The first instance's worker gives partitions up to the second: from the revocation
    // until its poll returns (a whole join round, the second member's included) it says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rebalancing = None;
    while Instant::now() < deadline {
        if let Some((503, body)) = get(&first_addr, "/health") {
            rebalancing = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let body = rebalancing.expect("the first instance never answered 503 during the join");
    assert_eq!(body, "0 of 1 workers running\nworker 0: rebalancing\n");
    // Both instances run once the rebalance is over, and the first counted it.
    until_healthy(&first_addr, Duration::from_secs(60));
    until_healthy(&second_addr, Duration::from_secs(60));
    let metrics = get(&first_addr, "/metrics").expect("metrics").1;
    assert!(
        sum(&metrics, "flumen_worker_rebalances_total", "") >= 1.0,
        "{metrics}"
    );
    for child in [first, second] {
        terminate(&child);
        let out = wait(child, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
