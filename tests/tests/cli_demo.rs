//! `flumen demo` as a user runs it: no -b, so it starts its own Kafka, sends visits, runs
//! the visit_analytics pipeline file and prints each closed window and the alerts, with the
//! job's metrics served at the address it prints; it ends after --duration or at Ctrl-C with
//! exit 0, and its broker is gone afterwards.

mod cli_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{flumen_bin, flumen_with_input, wait_with_timeout};

/// Broker start, 20 s of traffic, draining and stopping, on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The `host:port` of the broker the demo started (its stderr says "Kafka is up at ...").
fn broker_address(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("Kafka is up at "))
        .unwrap_or_else(|| panic!("no broker address in:\n{stderr}"));
    line["Kafka is up at ".len()..]
        .split_whitespace()
        .next()
        .expect("an address")
        .to_owned()
}

/// Asserts that nothing listens at `addr` any more (the broker is stopped).
fn assert_broker_gone(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(
        &addr.parse().expect("socket address"),
        Duration::from_secs(1),
    )
    .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the demo's broker at {addr} still answers after the demo ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The answer to `GET path` at the `http://host:port/` the demo printed.
fn get(stderr: &str, path: &str) -> String {
    let at = stderr
        .find("metrics at http://")
        .unwrap_or_else(|| panic!("no metrics address in:\n{stderr}"));
    let addr = stderr[at + "metrics at http://".len()..]
        .split('/')
        .next()
        .expect("host:port");
    let mut conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    assert!(
        answer.lines().next().is_some_and(|l| l.contains(" 200")),
        "{answer}"
    );
    answer
}

/// The numbers of a window's title line:
/// `window 10:00:10-10:00:20 UTC: 19,998 views, 20 URLs, 312 errors (1.6%)`.
fn window_views(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("UTC: ")?;
    rest.split(" views").next()?.replace(',', "").parse().ok()
}

#[test]
fn demo_runs_the_pipeline_on_its_own_broker_and_shows_windows_and_alerts() {
    let started = Instant::now();
    let run = flumen_with_input(
        &["demo", "--duration", "20", "--metrics-addr", "127.0.0.1:0"],
        b"",
        TIMEOUT,
    );
    let out = run.stdout_text();
    assert_eq!(
        run.code,
        Some(0),
        "after {:?}; stderr:\n{}\nstdout:\n{out}",
        started.elapsed(),
        run.stderr
    );
    assert!(
        run.stderr.contains("metrics at http://127.0.0.1:"),
        "{}",
        run.stderr
    );
    // A closed window: its title with its views, then the column names and a row per URL
    // (views, users, errors, error rate, p50 and p99), most viewed first.
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("window "))
        .unwrap_or_else(|| panic!("no closed window in:\n{out}"));
    assert!(
        window_views(lines[at]).is_some_and(|v| v > 0),
        "{}",
        lines[at]
    );
    assert!(lines[at + 1].contains("p99 ms"), "{out}");
    let row: Vec<&str> = lines[at + 2].split_whitespace().collect();
    assert_eq!(row.len(), 7, "{}", lines[at + 2]);
    assert!(row[0].starts_with('/'), "{}", lines[at + 2]);
    for n in [row[1], row[2], row[3], row[5], row[6]] {
        assert!(
            n.replace(',', "").parse::<u64>().is_ok(),
            "{}",
            lines[at + 2]
        );
    }
    assert!(row[4].ends_with('%'), "{}", lines[at + 2]);
    // The traffic's first burst makes a URL fail for 20 s: at least one alert.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("alert ") && l.contains("error rate")),
        "no alert in:\n{out}"
    );
    assert!(
        run.stderr.contains("Stopping the local Kafka."),
        "{}",
        run.stderr
    );
    assert_broker_gone(&broker_address(&run.stderr));
}

#[test]
fn a_running_demo_serves_metrics_and_ctrl_c_stops_it_and_its_broker_with_exit_zero() {
    let mut child = Command::new(flumen_bin())
        .args(["demo", "--rate", "500", "--metrics-addr", "127.0.0.1:0"])
        .env_remove("FLUMEN_BOOTSTRAP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flumen demo");
    let pid = child.id().to_string();
    // A demo that never shows a window is killed, and the test fails below.
    let watchdog_pid = pid.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(TIMEOUT).is_err() {
            let _ = Command::new("kill").args(["-KILL", &watchdog_pid]).status();
        }
    });
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (err_tx, err_lines) = std::sync::mpsc::channel::<String>();
    let stderr_reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // A closed window and an alert (the traffic's first burst makes a URL fail).
    let (mut window, mut alert) = (false, false);
    let mut line = String::new();
    while !(window && alert) && stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
        window |= line.starts_with("window ");
        alert |= line.starts_with("alert ");
        line.clear();
    }
    assert!(window && alert, "no window and alert before the end");
    // The job's metrics, on by default, at the address printed at the start.
    let mut stderr_lines = String::new();
    while let Ok(line) = err_lines.recv_timeout(Duration::from_millis(100)) {
        stderr_lines.push_str(&line);
        stderr_lines.push('\n');
    }
    let metrics = get(&stderr_lines, "/metrics");
    assert!(metrics.contains("flumen_records_in_total"), "{metrics}");
    // The alerts topic is monitored (the pipeline file's `monitor = true`): the page's last
    // alerts hold the one printed.
    let recent = get(&stderr_lines, "/recent");
    let body = recent.split_once("\r\n\r\n").expect("a body").1;
    let recent: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(recent["topics"], serde_json::json!(["flumen-demo-alerts"]));
    let records = recent["records"].as_array().expect("records");
    assert!(
        records.iter().any(|r| r["topic"] == "flumen-demo-alerts"
            && r["value"]
                .as_str()
                .is_some_and(|v| v.contains("\"error_rate\""))),
        "{recent}"
    );
    // SIGINT to the demo alone (a terminal's Ctrl-C would reach its broker too).
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        rest
    });
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let _ = drain.join();
    let _ = stderr_reader.join();
    let mut stderr = stderr_lines;
    for line in err_lines.try_iter() {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Stopping the local Kafka."), "{stderr}");
    assert_broker_gone(&broker_address(&stderr));
}
