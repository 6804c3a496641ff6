//! `flumen produce`, `consume` and `bench` against the real broker, and interop both
//! ways with kcat (librdkafka): what one writes, the other reads back byte for byte.

mod cli_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use cli_support::{
    args, bootstrap, flumen, flumen_with_input, new_topic, sasl_args, tls_args, wait_with_timeout,
};
use flumen_testcontainers::{KafkaCluster, SaslMechanism};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Lines with keys (split at the first `:`), an empty key, no key, spaces, UTF-8 and a
/// separator inside the value.
const KEYED_LINES: &str = "user-1:clicked /home\nuser-2:ordered: 3 items\n:empty key\nno separator here\nñandú:ünïcödé value\nuser-1:\n";

/// `(key, value)` as kcat prints them: `%K` is -1 for a null key.
fn expected_keyed() -> Vec<(Option<&'static str>, &'static str)> {
    KEYED_LINES
        .lines()
        .map(|l| match l.split_once(':') {
            Some((k, v)) => (Some(k), v),
            None => (None, l),
        })
        .collect()
}

fn kcat(args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kcat (apt-get install -y kcat): {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write to kcat");
    drop(input);
    let out = wait_with_timeout(child, TIMEOUT);
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kcat output is UTF-8")
}

#[test]
fn flumen_produce_is_read_by_kcat_with_the_same_keys_and_values() {
    let b = bootstrap();
    let topic = new_topic("cli-to-kcat", 1);
    let run = flumen_with_input(
        &[
            "-b",
            &b,
            "produce",
            &topic,
            "--key-separator",
            ":",
            "--header",
            "origin=flumen",
        ],
        KEYED_LINES.as_bytes(),
        TIMEOUT,
    )
    .ok();
    assert!(
        run.stderr.contains("Produced 6 record(s)"),
        "{}",
        run.stderr
    );

    let out = kcat(
        &[
            "-C",
            "-b",
            &b,
            "-t",
            &topic,
            "-e",
            "-q",
            "-f",
            "%K|%k|%S|%s|%h\n",
        ],
        b"",
    );
    let got: Vec<(Option<String>, String, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, '|').collect();
            assert_eq!(f.len(), 5, "{l}");
            let key = (f[0] != "-1").then(|| f[1].to_owned());
            assert_eq!(
                f[2].parse::<usize>().expect("value length"),
                f[3].len(),
                "{l}"
            );
            (key, f[3].to_owned(), f[4].to_owned())
        })
        .collect();
    let expected: Vec<(Option<String>, String, String)> = expected_keyed()
        .into_iter()
        .map(|(k, v)| {
            (
                k.map(str::to_owned),
                v.to_owned(),
                "origin=flumen".to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn kcat_produce_is_printed_exactly_by_flumen_consume() {
    let b = bootstrap();
    let topic = new_topic("kcat-to-cli", 1);
    kcat(
        &[
            "-P",
            "-b",
            &b,
            "-t",
            &topic,
            "-p",
            "0",
            "-K",
            ":",
            "-H",
            "trace=abc",
            "-X",
            "acks=all",
        ],
        KEYED_LINES.as_bytes(),
    );
    // Values exactly as written (kcat writes a line without the separator keyless).
    let run = flumen(&[
        "-b",
        &b,
        "consume",
        &topic,
        "--from-beginning",
        "--exit-at-end",
    ])
    .ok();
    let values: Vec<&str> = expected_keyed().into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        run.stdout_text(),
        values.iter().map(|v| format!("{v}\n")).collect::<String>()
    );

    let run = flumen(&[
        "-b",
        &b,
        "consume",
        &topic,
        "--from-beginning",
        "--exit-at-end",
        "--format",
        "%t|%p|%o|%K|%k|%v|%h\\n",
    ])
    .ok();
    let expected: String = expected_keyed()
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| {
            format!(
                "{topic}|0|{i}|{}|{}|{v}|trace=abc\n",
                k.map_or(-1, |k| k.len() as i64),
                k.unwrap_or("")
            )
        })
        .collect();
    assert_eq!(run.stdout_text(), expected);
}

#[test]
fn consume_positions_by_offset_time_partition_and_max_messages() {
    let b = bootstrap();
    let topic = new_topic("cli-positions", 2);
    let lines: String = (0..10).map(|i| format!("v{i}\n")).collect();
    flumen_with_input(
        &["-b", &b, "produce", &topic, "-p", "1"],
        lines.as_bytes(),
        TIMEOUT,
    )
    .ok();
    let consume = |extra: &[&str]| {
        let mut a = vec!["-b", b.as_str(), "consume", topic.as_str(), "--exit-at-end"];
        a.extend_from_slice(extra);
        flumen(&a).ok().stdout_text()
    };
    assert_eq!(consume(&["--offset", "7"]), "v7\nv8\nv9\n");
    assert_eq!(consume(&["--offset", "-2"]), "v8\nv9\n");
    assert_eq!(consume(&["--from-beginning", "-c", "3"]), "v0\nv1\nv2\n");
    assert_eq!(consume(&["--from-beginning", "-p", "0"]), "");
    assert_eq!(consume(&["--from-time", "-1h"]).lines().count(), 10);
    // Default: from the end, so nothing when asked to stop at the end.
    assert_eq!(consume(&[]), "");
}

#[test]
fn consume_with_a_group_commits_exactly_what_it_printed() {
    let b = bootstrap();
    let topic = new_topic("cli-group-commit", 1);
    let group = KafkaCluster::unique_topic("cli-commit-group");
    let lines: String = (0..5).map(|i| format!("r{i}\n")).collect();
    flumen_with_input(&["-b", &b, "produce", &topic], lines.as_bytes(), TIMEOUT).ok();
    let out = flumen(&[
        "-b",
        &b,
        "consume",
        &topic,
        "-G",
        &group,
        "--from-beginning",
        "-c",
        "3",
    ])
    .ok()
    .stdout_text();
    assert_eq!(out, "r0\nr1\nr2\n");
    let described = flumen(&["-b", &b, "groups", "describe", &group])
        .ok()
        .stdout_text();
    let row = described
        .lines()
        .find(|l| l.starts_with(&topic))
        .unwrap_or_else(|| panic!("no row for {topic}:\n{described}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..5], ["0", "3", "5", "2"], "{described}");
}

#[test]
fn records_round_trip_over_sasl_and_tls() {
    let b = bootstrap();
    let topic = new_topic("cli-secure", 1);
    let sasl = sasl_args(SaslMechanism::ScramSha512, None);
    flumen_with_input(&args(&sasl, &["produce", &topic]), b"over sasl\n", TIMEOUT).ok();
    let tls = tls_args();
    flumen_with_input(&args(&tls, &["produce", &topic]), b"over tls\n", TIMEOUT).ok();
    let read_tls = flumen(&args(&tls, &["consume", &topic, "--from-beginning", "-e"])).ok();
    assert_eq!(read_tls.stdout_text(), "over sasl\nover tls\n");
    let read_plain = flumen(&["-b", &b, "consume", &topic, "--from-beginning", "-e"]).ok();
    assert_eq!(read_plain.stdout_text(), "over sasl\nover tls\n");
}

#[test]
fn a_failed_record_makes_produce_exit_non_zero() {
    let b = bootstrap();
    let topic = new_topic("cli-too-large", 1);
    let big = format!("small\n{}\nafter\n", "x".repeat(50_000));
    let run = flumen_with_input(
        &["-b", &b, "-X", "max.request.size=20000", "produce", &topic],
        big.as_bytes(),
        TIMEOUT,
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("record 2 not delivered"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1 failed"), "{}", run.stderr);
    let read = flumen(&["-b", &b, "consume", &topic, "--from-beginning", "-e"]).ok();
    assert_eq!(read.stdout_text(), "small\nafter\n");
}

#[test]
fn bench_reports_rates_and_latency_percentiles_as_json() {
    let b = bootstrap();
    let topic = KafkaCluster::unique_topic("cli-bench");
    for kind in ["produce", "consume", "e2e"] {
        let run = flumen(&[
            "-b",
            &b,
            "bench",
            kind,
            "--topic",
            &topic,
            "--records",
            "2000",
            "--record-size",
            "64",
            "--partitions",
            "2",
            "--json",
        ])
        .ok();
        let report: serde_json::Value = serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|e| panic!("{kind}: {e}: {}", run.stdout_text()));
        assert_eq!(report["benchmark"], kind);
        assert_eq!(report["records"], 2000, "{report}");
        assert_eq!(report["failed"], 0, "{report}");
        assert!(
            report["records_per_s"].as_f64().is_some_and(|r| r > 0.0),
            "{report}"
        );
        assert!(
            report["mb_per_s"].as_f64().is_some_and(|r| r > 0.0),
            "{report}"
        );
        if kind != "consume" {
            let lat = &report["latency_ms"];
            let p = |k: &str| {
                lat[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{kind}: no {k} in {report}"))
            };
            assert!(p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("p99.9"));
            assert!(p("p99.9") <= p("max") && p("p50") > 0.0, "{report}");
        }
    }
}

#[test]
fn ctrl_c_stops_a_group_consumer_cleanly_and_commits() {
    use std::io::{BufRead, BufReader};

    let b = bootstrap();
    let topic = new_topic("cli-ctrl-c", 1);
    let group = KafkaCluster::unique_topic("cli-ctrl-c-group");
    flumen_with_input(
        &["-b", &b, "produce", &topic],
        b"one\ntwo\nthree\n",
        TIMEOUT,
    )
    .ok();
    let mut child = Command::new(cli_support::flumen_bin())
        .args([
            "-b",
            &b,
            "consume",
            &topic,
            "-G",
            &group,
            "--from-beginning",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flumen consume");
    let pid = child.id().to_string();
    // A consumer that never prints its three records is killed, and the test fails below.
    let watchdog_pid = pid.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(TIMEOUT).is_err() {
            let _ = Command::new("kill").args(["-KILL", &watchdog_pid]).status();
        }
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match lines.next() {
            Some(Ok(line)) => seen.push(line),
            _ => break,
        }
    }
    assert_eq!(seen, ["one", "two", "three"]);
    // The consumer is now idle in poll; SIGINT is what Ctrl-C sends.
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let out = wait_with_timeout(child, TIMEOUT);
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Consumed 3 record(s)"), "{stderr}");
    let described = flumen(&["-b", &b, "groups", "describe", &group])
        .ok()
        .stdout_text();
    let row = described
        .lines()
        .find(|l| l.starts_with(&topic))
        .unwrap_or_else(|| panic!("no committed offset for {topic}:\n{described}"));
    assert_eq!(row.split_whitespace().nth(2), Some("3"), "{described}");
}
