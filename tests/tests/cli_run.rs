//! `flumen run PIPELINE.toml`: the runtime's example jobs as pipeline files
//! (`crates/flumen-runtime/examples/pipelines/`) run bounded against the real broker with the
//! same expected outputs as the Rust examples; `--check`, `--set`, and errors naming the
//! file's line and step, in TOML and YAML.

mod cli_support;
mod runtime_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cli_support::{Run, flumen_with_input};
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_testcontainers::KafkaCluster;
use runtime_support::{kafka, read_all, read_committed, recent, topic};

fn pipeline(name: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "crates",
        "flumen-runtime",
        "examples",
        "pipelines",
        name,
    ]
    .iter()
    .collect();
    p.to_string_lossy().into_owned()
}

fn flumen(args: &[&str]) -> Run {
    flumen_with_input(args, b"", Duration::from_secs(180))
}

/// `(partition, key, value, timestamp)` records.
async fn produce(topic: &str, records: &[(i32, Option<String>, String, i64)]) {
    let producer = Producer::connect(
        ProducerConfig::from_properties([("bootstrap.servers", kafka().bootstrap().as_str())])
            .expect("config"),
    )
    .await
    .expect("producer");
    for (i, (p, key, value, ts)) in records.iter().enumerate() {
        let seq = i.to_string();
        let headers = [(b"seq".as_slice(), Some(seq.as_bytes()))];
        let mut record = ProducerRecord::new(topic)
            .value(value.as_bytes())
            .headers(&headers);
        if let Some(k) = key {
            record = record.key(k.as_bytes());
        }
        record.partition = Some(*p);
        record.timestamp = Some(*ts);
        let _delivery = producer.send(record).await.expect("send");
    }
    producer.flush().await.expect("flush");
    assert_eq!(producer.failed_records(), 0);
}

#[test]
fn check_prints_the_operator_graph_without_connecting() {
    let out = flumen(&["run", "--check", &pipeline("word_count.toml")]).ok();
    assert_eq!(
        out.stdout_text(),
        "sub-topology 0: lines -> process -> key_by(words)\n\
         sub-topology 1: <words-repartition> -> window tumbling(5000 ms) -> flat_map -> to(word-counts)\n"
    );
    let out = flumen(&["run", "--check", &pipeline("uppercase.toml")]).ok();
    assert_eq!(
        out.stdout_text(),
        "sub-topology 0: input -> process -> to(output)\n"
    );
    // The same pipeline in YAML.
    let out = flumen(&["run", "--check", &pipeline("uppercase.yaml")]).ok();
    assert_eq!(
        out.stdout_text(),
        "sub-topology 0: input -> process -> to(output)\n"
    );
    let out = flumen(&["run", "--check", &pipeline("visit_analytics.toml")]).ok();
    assert_eq!(
        out.stdout_text(),
        "sub-topology 0: visits -> key_by(by-url)\n\
         sub-topology 1: <by-url-repartition> -> window tumbling(60000 ms) lateness 10000 ms \
         late->late-visits -> flat_map -> divert(url-stats,alerts) -> key_by(by-window)\n\
         sub-topology 2: <by-window-repartition> -> window tumbling(60000 ms) lateness 10000 ms \
         -> flat_map -> to(top-urls)\n"
    );
}

#[test]
fn set_overrides_any_key_by_its_dotted_path() {
    let out = flumen(&[
        "run",
        "--check",
        &pipeline("word_count.toml"),
        "--set",
        "source.topics=a,b",
        "--set",
        "steps.4.size=10s",
        "--set",
        "sink.topic=counts",
        "--set",
        "application_id=counts-v2",
    ])
    .ok();
    assert_eq!(
        out.stdout_text(),
        "sub-topology 0: a,b -> process -> key_by(words)\n\
         sub-topology 1: <words-repartition> -> window tumbling(10000 ms) -> flat_map -> to(counts)\n"
    );
    // A one-element array from a value without a comma, where the file has an array.
    let out = flumen(&[
        "run",
        "--check",
        &pipeline("uppercase.toml"),
        "--set",
        "source.topics=visits",
    ])
    .ok();
    assert!(out.stdout_text().starts_with("sub-topology 0: visits -> "));
    let err = flumen(&[
        "run",
        "--check",
        &pipeline("word_count.toml"),
        "--set",
        "steps.9.size=1s",
    ])
    .one_line_error();
    assert!(err.contains("there are 6 steps, not 9"), "{err}");
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
    f
}

const BAD: &str = r#"application_id = "bad"

[source]
topics = ["in"]

[[steps]]
kind = "filter"
path = "status"
op = ">="
value = 500

[[steps]]
kind = "window"
type = "tumbling"
size = "5 parsecs"

[[steps]]
kind = "aggregate"
aggregations = [{ name = "n", fn = "count" }]

[sink]
topic = "out"
"#;

/// Runs `--check` on `text` and returns its one-line error, without the file name.
fn check_error(text: &str) -> String {
    let f = write(text);
    let path = f.path().to_string_lossy().into_owned();
    let line = flumen(&["run", "--check", &path]).one_line_error();
    line.replace(&path, "FILE")
}

#[test]
fn a_yaml_file_takes_set_and_its_errors_name_the_line_and_the_step() {
    let out = flumen(&[
        "run",
        "--check",
        &pipeline("uppercase.yaml"),
        "--set",
        "source.topics=a,b",
        "--set",
        "sink.topic=upper",
    ])
    .ok();
    assert_eq!(
        out.stdout_text(),
        "sub-topology 0: a,b -> process -> to(upper)\n"
    );
    let text = std::fs::read_to_string(pipeline("uppercase.yaml"))
        .expect("uppercase.yaml")
        .replace("upper: true", "upper: 3");
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
    let path = f.path().to_string_lossy().into_owned();
    let line = text
        .lines()
        .position(|l| l.contains("upper: 3"))
        .expect("the changed line")
        + 1;
    assert_eq!(
        flumen(&["run", "--check", &path])
            .one_line_error()
            .replace(&path, "FILE"),
        format!(
            "flumen: FILE:{line}: step 1 (map): expected a field path, or true for the whole value"
        )
    );
}

#[test]
fn errors_in_the_file_name_the_line_the_step_and_what_was_expected() {
    assert_eq!(
        check_error(BAD),
        "flumen: FILE:15: step 2 (window): \"5 parsecs\" is not a duration such as 500ms, 5s \
         or 2m (units: ms, s, m, h)"
    );
    let good = BAD.replace("5 parsecs", "5s");
    flumen(&["run", "--check", &write(&good).path().to_string_lossy()]).ok();
    assert_eq!(
        check_error(&good.replace("op = \">=\"", "op = \"=~\"")),
        "flumen: FILE:9: step 1 (filter): op \"=~\": expected one of == != < <= > >="
    );
    assert_eq!(
        check_error(&good.replace("size = \"5s\"", "siz = \"5s\"")),
        "flumen: FILE:15: step 2 (window): `siz` is not a key of a window step (expected \
         type, size, slide, gap, time, allowed_lateness)"
    );
    assert_eq!(
        check_error(&good.replace("kind = \"window\"", "kind = \"windw\"")),
        "flumen: FILE:13: step 2 (windw): unknown kind \"windw\": expected filter, map, split, \
         also_to, key_by, window, aggregate or join"
    );
    assert_eq!(
        check_error(&good.replace("\"count\" }", "\"median\" }")),
        "flumen: FILE:19: step 3 (aggregate): fn \"median\": expected count, sum, min, max, \
         avg, distinct_count, percentiles or top_n"
    );
    assert_eq!(
        check_error(&good.replace("size = \"5s\"", "size = 5")),
        "flumen: FILE:15: step 2 (window): invalid type: integer `5`, expected a string"
    );
    assert_eq!(
        check_error(&good.replace(
            "[[steps]]\nkind = \"aggregate\"",
            "[[steps]]\nkind = \"map\"\nupper = true\n[[steps]]\nkind = \"aggregate\""
        )),
        "flumen: FILE:18: step 3 (map): expected an aggregate step right after the window step"
    );
    assert_eq!(
        check_error(&format!("guarantee = \"twice\"\n{good}")),
        "flumen: FILE:1: guarantee \"twice\": expected \"at_least_once\" or \"exactly_once\""
    );
    assert_eq!(
        check_error(&good.replace("topic = \"out\"", "topc = \"out\"")),
        "flumen: FILE:22: unknown field `topc`, expected one of `topic`, `format`, `monitor`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_toml_upper_cases_every_value_keeping_keys_and_headers() {
    let input = topic("run-up-in", 3).await;
    let output = topic("run-up-out", 3).await;
    let app = KafkaCluster::unique_topic("run-up-app");
    let start = recent();
    let records: Vec<(i32, Option<String>, String, i64)> = (0..300)
        .map(|i| {
            (
                i % 3,
                Some(format!("k{}", i % 7)),
                format!("visit-{i}-ok"),
                start + i64::from(i),
            )
        })
        .collect();
    produce(&input, &records).await;
    let out = flumen(&[
        "-b",
        &kafka().bootstrap(),
        "-X",
        "pin.workers=false",
        "run",
        &pipeline("uppercase.toml"),
        "--set",
        &format!("source.topics={input}"),
        "--set",
        &format!("sink.topic={output}"),
        "--set",
        &format!("application_id={app}"),
        "--set",
        "workers=2",
        "--exit-at-end",
    ])
    .ok();
    assert!(
        out.stderr.contains("run: 300 records processed, 0 late"),
        "{}",
        out.stderr
    );
    // `run` logs the runtime's lifecycle at info by default: every task's start, on stderr.
    let started: std::collections::BTreeSet<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("task started"))
        .filter_map(|l| l.split("task=").nth(1))
        .collect();
    assert_eq!(started.len(), 3, "{}", out.stderr);
    let read = read_all(&output, records.len());
    assert_eq!(read.len(), records.len());
    // Keys and headers kept (the sink partitions by key, as the Rust example does).
    let expected: BTreeMap<String, String> = records
        .iter()
        .enumerate()
        .map(|(i, (_, k, v, _))| {
            (
                format!("{}\tseq={i}", v.to_uppercase()),
                k.clone().unwrap_or_default(),
            )
        })
        .collect();
    let actual: BTreeMap<String, String> = read
        .iter()
        .map(|r| (format!("{}\t{}", r.value, r.headers), r.key.clone()))
        .collect();
    assert_eq!(actual, expected);
}

const WORDS: [&str; 6] = ["kafka", "Stream", "window", "EVENT", "time", "rust"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_toml_counts_every_word_of_every_window_exactly_once() {
    word_count_toml_case("at_least_once").await;
}

/// The same under `--guarantee exactly_once`: outputs and window state in transactions, the
/// outputs read back as a read_committed reader; the window state in on-disk stores
/// (`-X state.store=disk`) behind a 4 KiB cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_toml_under_exactly_once_with_state_on_disk_gives_the_same_counts() {
    word_count_toml_case("exactly_once").await;
}

async fn word_count_toml_case(guarantee: &str) {
    let input = topic("run-wc-in", 4).await;
    let output = topic("run-wc-out", 4).await;
    let app = KafkaCluster::unique_topic("run-wc-app");
    // 1 s windows over 10 s of event time, in order within each partition.
    let start = recent() + 250;
    let mut records = Vec::new();
    for p in 0..4 {
        for i in 0..200i64 {
            let n = (i as usize + p as usize) % 4 + 1;
            let line: Vec<&str> = (0..n)
                .map(|j| WORDS[(i as usize * 7 + j * 3 + p as usize) % WORDS.len()])
                .collect();
            records.push((p, None, line.join(" "), start + i * 50));
        }
    }
    produce(&input, &records).await;
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state_dir_flag = format!("state.dir={}", state_dir.path().display());
    let on_disk = guarantee == "exactly_once";
    let disk = [
        "-X",
        "state.store=disk",
        "-X",
        &state_dir_flag,
        "-X",
        "state.cache.max.bytes=4096",
    ];
    let bootstrap = kafka().bootstrap();
    let head = [
        &["-b", &bootstrap, "-X", "pin.workers=false"][..],
        if on_disk { &disk } else { &[] },
    ]
    .concat();
    let out = flumen(
        &[
            &head[..],
            &[
                "run",
                &pipeline("word_count.toml"),
                "--set",
                &format!("source.topics={input}"),
                "--set",
                &format!("sink.topic={output}"),
                "--set",
                &format!("application_id={app}"),
                "--set",
                "steps.4.size=1s",
                "--set",
                "workers=2",
                "--guarantee",
                guarantee,
                "--exit-at-end",
            ],
        ]
        .concat(),
    )
    .ok();
    if on_disk {
        let files = std::fs::read_dir(state_dir.path().join(&app))
            .expect("the application's state dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("state.redb").exists())
            .count();
        assert!(files >= 4, "{files} window store files");
    }
    // Lines, then words read back from the repartition topic.
    let words: usize = records.iter().map(|r| r.2.split_whitespace().count()).sum();
    let processed = format!("run: {} records processed, 0 late", 800 + words);
    assert!(out.stderr.contains(&processed), "{}", out.stderr);
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (_, _, line, ts) in &records {
        for word in line.split_whitespace() {
            *expected
                .entry((word.to_lowercase(), ts - ts.rem_euclid(1_000)))
                .or_default() += 1;
        }
    }
    let read = read_committed(&output, expected.len());
    let mut actual: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for r in &read {
        let v: serde_json::Value = serde_json::from_str(&r.value).expect("JSON value");
        let window_start = v["window_start"].as_i64().expect("window_start");
        assert_eq!(
            v,
            serde_json::json!({
                "window_start": window_start,
                "window_end": window_start + 1_000,
                "count": v["count"],
            }),
            "the Rust example's fields, no others"
        );
        assert_eq!(
            r.value,
            format!(
                r#"{{"window_start":{window_start},"window_end":{},"count":{}}}"#,
                window_start + 1_000,
                v["count"]
            ),
            "the Rust example's key order"
        );
        let previous = actual.insert(
            (r.key.clone(), window_start),
            v["count"].as_u64().expect("count"),
        );
        assert!(
            previous.is_none(),
            "two results for {} at {window_start}",
            r.key
        );
    }
    assert_eq!(read.len(), expected.len(), "one record per word and window");
    assert_eq!(actual, expected);
}

mod visit_analytics {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use flumen_runtime::testing::visits::{Visit, VisitGen};
    use flumen_testcontainers::KafkaCluster;
    use serde_json::Value;

    use super::{flumen, pipeline, produce, write};
    use crate::runtime_support::{
        VisitStats, expected_alerts, expected_top, kafka, parse_alert, parse_top, percentile,
        read_all, recent, run_example, topic, visit_stats,
    };

    const WINDOW: i64 = 10_000;

    fn visits(start: i64) -> Vec<Visit> {
        VisitGen::new(11)
            .users(300)
            .url_count(25)
            .start_ms(start)
            .events_per_sec(150.0)
            .error_share(0.01)
            .error_burst("/url-3", start + 20_000, start + 30_000, 0.5)
            .out_of_order_ms(3_000)
            .visits()
            .take(6_000)
            .collect()
    }

    /// Checks every statistic of `stats` against `expected`; returns each window's result.
    fn check(stats: &str, expected: &BTreeMap<(String, i64), VisitStats>) -> Vec<Value> {
        let read = read_all(stats, expected.len());
        assert_eq!(
            read.len(),
            expected.len(),
            "one statistic per URL and window"
        );
        let mut seen = BTreeSet::new();
        let mut all = Vec::new();
        for r in &read {
            let s: Value = serde_json::from_str(&r.value).expect("JSON");
            let ws = s["window_start"].as_i64().expect("window_start");
            let url = s["url"].as_str().expect("url").to_owned();
            assert_eq!(r.key, url);
            assert!(seen.insert((url.clone(), ws)), "twice: {url} {ws}");
            let e = expected
                .get(&(url.clone(), ws))
                .expect("an expected window");
            assert_eq!(
                (
                    s["window_end"].as_i64(),
                    s["views"].as_u64(),
                    s["users"].as_u64(),
                    s["errors"].as_u64(),
                    s["p50_ms"].as_u64(),
                    s["p99_ms"].as_u64(),
                ),
                (
                    Some(ws + WINDOW),
                    Some(e.views),
                    Some(e.users.len() as u64),
                    Some(e.errors),
                    Some(percentile(&e.latency, 0.5)),
                    Some(percentile(&e.latency, 0.99)),
                ),
                "{url} at {ws}"
            );
            all.push(s);
        }
        all
    }

    /// `(key, value)` of every record of `topic` (at least `n`), sorted.
    fn keyed_values(topic: &str, n: usize) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = read_all(topic, n)
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect();
        all.sort();
        all
    }

    /// The keys of a flat JSON object as written (`serde_json::Value` may sort them).
    fn keys_in_order(object: &str) -> Vec<&str> {
        object
            .match_indices("\":")
            .filter_map(|(end, _)| {
                let start = object[..end].rfind('"')? + 1;
                Some(&object[start..end])
            })
            .collect()
    }

    /// [`keyed_values`] with each value parsed: the same JSON, whatever its key order.
    fn keyed_json(topic: &str, n: usize) -> Vec<(String, Value)> {
        keyed_values(topic, n)
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(&v).expect("JSON")))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visit_analytics_toml_writes_the_rust_examples_stats_top_lists_and_alerts() {
        let input = topic("run-va-in", 6).await;
        let (stats, top, alerts, late) = (
            topic("run-va-stats", 3).await,
            topic("run-va-top", 3).await,
            topic("run-va-alerts", 3).await,
            topic("run-va-late", 3).await,
        );
        let app = KafkaCluster::unique_topic("run-va-app");
        let visits = visits(recent());
        let records: Vec<_> = visits
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let json = String::from_utf8(v.to_json()).expect("utf-8");
                ((i % 6) as i32, None, json, v.ts)
            })
            .collect();
        produce(&input, &records).await;
        let out = flumen(&[
            "-b",
            &kafka().bootstrap(),
            "-X",
            "pin.workers=false",
            "run",
            &pipeline("visit_analytics.toml"),
            "--set",
            &format!("source.topics={input}"),
            "--set",
            &format!("steps.4.topic={stats}"),
            "--set",
            &format!("steps.5.topic={alerts}"),
            "--set",
            &format!("sink.topic={top}"),
            "--set",
            &format!("late.topic={late}"),
            "--set",
            &format!("application_id={app}"),
            "--set",
            "steps.2.size=10s",
            "--set",
            "steps.7.size=10s",
            "--set",
            "workers=2",
            "--exit-at-end",
        ])
        .ok();
        let expected = visit_stats(&visits, &BTreeMap::new(), WINDOW);
        // Visits, visits re-keyed by URL, statistics re-keyed by window.
        let processed = format!(
            "run: {} records processed, 0 late",
            2 * visits.len() + expected.len()
        );
        assert!(out.stderr.contains(&processed), "{}", out.stderr);
        check(&stats, &expected);
        for r in read_all(&stats, expected.len()) {
            assert_eq!(
                keys_in_order(&r.value),
                [
                    "window_start",
                    "window_end",
                    "url",
                    "views",
                    "users",
                    "errors",
                    "p50_ms",
                    "p99_ms"
                ]
            );
        }

        // Top 10 per window, keyed by the window's start: views descending, then URL.
        let by_window = expected_top(&expected);
        let read = read_all(&top, by_window.len());
        assert_eq!(read.len(), by_window.len(), "one top list per window");
        for r in &read {
            let ws: i64 = r.key.parse().expect("key = window start");
            assert_eq!(parse_top(&r.value), by_window[&ws], "top of {ws}");
        }

        // Alerts, keyed by URL: error rate above 5 % with at least 20 views.
        let want = expected_alerts(&expected);
        assert!(!want.is_empty(), "the error burst raises alerts");
        let read = read_all(&alerts, want.len());
        let got: BTreeSet<(String, i64, u64, u64)> = read.iter().map(parse_alert).collect();
        assert_eq!(read.len(), want.len());
        assert_eq!(got, want);
        assert!(read_all(&late, 0).is_empty(), "nothing was late");

        // The Rust example on the same input writes the same records.
        let (rust_stats, rust_top, rust_alerts) = (
            topic("run-va-rs-stats", 3).await,
            topic("run-va-rs-top", 3).await,
            topic("run-va-rs-alerts", 3).await,
        );
        let rust_app = KafkaCluster::unique_topic("run-va-rs-app");
        let out = run_example(
            "visit_analytics",
            &[
                "-b",
                &kafka().bootstrap(),
                "--input",
                &input,
                "--output-stats",
                &rust_stats,
                "--output-top",
                &rust_top,
                "--output-alerts",
                &rust_alerts,
                "--window",
                "10s",
                "--application-id",
                &rust_app,
                "--workers",
                "2",
                "--exit-at-end",
            ],
            Duration::from_secs(180),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "visit_analytics failed:\n{stderr}");
        // Byte for byte for the statistics and top lists (serialized from Rust structs
        // there); the example's alerts go through a serde_json::Value, whose key order
        // depends on the features serde_json was built with.
        for (ours, theirs, n) in [
            (&stats, &rust_stats, expected.len()),
            (&top, &rust_top, by_window.len()),
        ] {
            assert_eq!(
                keyed_values(ours, n),
                keyed_values(theirs, n),
                "{ours} vs {theirs}"
            );
        }
        assert_eq!(
            keyed_json(&alerts, want.len()),
            keyed_json(&rust_alerts, want.len())
        );
        for r in read_all(&alerts, want.len()) {
            assert_eq!(
                keys_in_order(&r.value),
                [
                    "window_start",
                    "window_end",
                    "url",
                    "views",
                    "errors",
                    "error_rate"
                ]
            );
        }
    }

    /// The `--users` variant: visits re-keyed by user, left-joined with the profiles table,
    /// re-keyed by URL; the countries of a window counted by a `top_n` without `by`.
    const WITH_USERS: &str = r#"application_id = "visit-analytics-users"

[source]
topics = ["visits"]
timestamp = "ts"
max_out_of_orderness = "5s"

[[steps]]
kind = "key_by"
path = "user"
name = "by-user"

[[steps]]
kind = "join"
table = "users"
type = "left"
as = "profile"

[[steps]]
kind = "key_by"
path = "url"
name = "by-url"

[[steps]]
kind = "window"
type = "tumbling"
size = "10s"
allowed_lateness = "10s"

[[steps]]
kind = "aggregate"
key_as = "url"
aggregations = [
    { name = "views", fn = "count" },
    { name = "users", fn = "distinct_count", field = "user" },
    { name = "errors", fn = "count", where = { path = "status", op = ">=", value = 500 } },
    { fn = "percentiles", field = "latency_ms", quantiles = [0.5, 0.99], names = ["p50_ms", "p99_ms"] },
    { name = "countries", fn = "top_n", field = "profile.country", n = 10 },
]

[sink]
topic = "url-stats"
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_join_step_enriches_visits_with_the_users_table() {
        let input = topic("run-vj-in", 6).await;
        let users_topic = topic("run-vj-users", 6).await;
        let stats = topic("run-vj-stats", 3).await;
        let app = KafkaCluster::unique_topic("run-vj-app");
        let visits = visits(recent() + 120_000);
        let records: Vec<_> = visits
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let json = String::from_utf8(v.to_json()).expect("utf-8");
                ((i % 6) as i32, None, json, v.ts)
            })
            .collect();
        produce(&input, &records).await;
        let countries = ["CN", "FR", "BR", "US"];
        let profiles: BTreeMap<String, &str> = (0..300)
            .filter(|u| u % 3 != 2)
            .map(|u| (format!("u{u}"), countries[u % 4]))
            .collect();
        let producer = flumen_client::producer::Producer::connect(
            flumen_client::producer::ProducerConfig::from_properties([(
                "bootstrap.servers",
                kafka().bootstrap().as_str(),
            )])
            .expect("config"),
        )
        .await
        .expect("producer");
        for (u, c) in &profiles {
            let value = format!(r#"{{"country":"{c}"}}"#);
            let record = flumen_client::producer::ProducerRecord::new(&users_topic)
                .key(u.as_bytes())
                .value(value.as_bytes());
            let _delivery = producer.send(record).await.expect("send");
        }
        producer.flush().await.expect("flush");

        let file = write(WITH_USERS);
        let path = file.path().to_string_lossy().into_owned();
        let graph = flumen(&["run", "--check", &path]).ok();
        assert_eq!(
            graph.stdout_text(),
            "sub-topology 0: visits -> key_by(by-user)\n\
             sub-topology 1: <by-user-repartition> + table users -> left_join_table(users) -> key_by(by-url)\n\
             sub-topology 2: <by-url-repartition> -> window tumbling(10000 ms) lateness 10000 ms -> flat_map -> to(url-stats)\n"
        );
        let out = flumen(&[
            "-b",
            &kafka().bootstrap(),
            "-X",
            "pin.workers=false",
            "run",
            &path,
            "--set",
            &format!("source.topics={input}"),
            "--set",
            &format!("steps.2.table={users_topic}"),
            "--set",
            &format!("sink.topic={stats}"),
            "--set",
            &format!("application_id={app}"),
            "--set",
            "workers=2",
            "--exit-at-end",
        ])
        .ok();
        assert!(out.stderr.contains(", 0 late"), "{}", out.stderr);
        let expected = visit_stats(&visits, &profiles, WINDOW);
        for s in check(&stats, &expected) {
            let url = s["url"].as_str().expect("url").to_owned();
            let ws = s["window_start"].as_i64().expect("window_start");
            let counted: BTreeMap<String, u64> = s["countries"]
                .as_array()
                .expect("countries")
                .iter()
                .map(|c| {
                    (
                        c["country"].as_str().expect("country").to_owned(),
                        c["count"].as_u64().expect("count"),
                    )
                })
                .collect();
            assert_eq!(
                counted,
                expected[&(url.clone(), ws)].countries,
                "{url} at {ws}"
            );
        }
    }
}

/// `dead` holds one record: `{not json`, with the error header saying why.
fn assert_not_json_dead_letter(dead: &str) {
    let dead = read_all(dead, 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, "{not json");
    assert!(
        dead[0].headers.contains("flumen.error=invalid JSON"),
        "{}",
        dead[0].headers
    );
}

/// Runs the pipeline file bounded (one worker, unpinned) on `input`, with its sink, dead-letter
/// topic and application id set on the command line; it must succeed.
fn run_bounded(
    file: &tempfile::NamedTempFile,
    input: &str,
    output: &str,
    dead: &str,
    app: &str,
) -> Run {
    flumen(&[
        "-b",
        &kafka().bootstrap(),
        "-X",
        "pin.workers=false",
        "run",
        &file.path().to_string_lossy(),
        "--set",
        &format!("source.topics={input}"),
        "--set",
        &format!("sink.topic={output}"),
        "--set",
        &format!("dead_letter.topic={dead}"),
        "--set",
        &format!("application_id={app}"),
        "--exit-at-end",
    ])
    .ok()
}

/// Filter and map over JSON, a record that is not JSON sent to the dead-letter topic.
const ERRORS: &str = r#"application_id = "errors"
guarantee = "at_least_once"
workers = 1

[source]
topics = ["visits"]

[[steps]]
kind = "filter"
path = "status"
op = ">="
value = 500

[[steps]]
kind = "map"
fields = ["url", "status"]
rename = { status = "code" }
set = { alert = true }

[sink]
topic = "errors"

[dead_letter]
topic = "bad-visits"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_and_map_steps_and_a_dead_letter_topic() {
    let input = topic("run-err-in", 1).await;
    let output = topic("run-err-out", 1).await;
    let dead = topic("run-err-dead", 1).await;
    let app = KafkaCluster::unique_topic("run-err-app");
    let t = recent();
    let values = [
        r#"{"url":"/a","status":200,"user":"u1"}"#,
        r#"{"url":"/b","status":503,"user":"u2"}"#,
        "{not json",
        r#"{"url":"/c","status":500,"user":"u3"}"#,
    ];
    let records: Vec<_> = values
        .iter()
        .map(|v| (0, None, (*v).to_owned(), t))
        .collect();
    produce(&input, &records).await;
    let file = write(ERRORS);
    let out = run_bounded(&file, &input, &output, &dead, &app);
    assert!(
        out.stderr.contains("run: 4 records processed"),
        "{}",
        out.stderr
    );
    let read: Vec<String> = read_all(&output, 2).into_iter().map(|r| r.value).collect();
    assert_eq!(
        read,
        [
            r#"{"url":"/b","code":503,"alert":true}"#,
            r#"{"url":"/c","code":500,"alert":true}"#
        ]
    );
    assert_not_json_dead_letter(&dead);
}

/// A first stage that only re-keys JSON: the records go to the repartition topic as they
/// came (same bytes, spacing included), a record that is not JSON still goes to the
/// dead-letter topic, and the counts after the repartition are those of the parsed records.
const REKEY: &str = r#"application_id = "rekey"
guarantee = "at_least_once"
workers = 1

[source]
topics = ["visits"]
timestamp = "ts"

[[steps]]
kind = "key_by"
path = "url"
name = "by-url"

[[steps]]
kind = "window"
type = "tumbling"
size = "1m"

[[steps]]
kind = "aggregate"
key_as = "url"
aggregations = [{ name = "views", fn = "count" }, { name = "users", fn = "distinct_count", field = "user" }]

[sink]
topic = "counts"

[dead_letter]
topic = "bad-visits"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_stage_that_only_rekeys_forwards_the_records_bytes() {
    let input = topic("run-rekey-in", 2).await;
    let output = topic("run-rekey-out", 1).await;
    let dead = topic("run-rekey-dead", 1).await;
    let app = KafkaCluster::unique_topic("run-rekey-app");
    // A minute-aligned window start, well in the past so nothing is late.
    let start = (recent() / 60_000) * 60_000;
    let values = [
        format!(r#"{{"url":"/a","user":"u1","ts":{}}}"#, start + 1),
        format!(
            r#"  {{ "user" : "u2" , "url" : "/a", "ts" : {} }}"#,
            start + 2
        ),
        "{not json".to_owned(),
        format!(r#"{{"url":"/b","user":"u\u0031","ts":{}}}"#, start + 3),
        format!(r#"{{"url":"/a","user":"u1","ts":{}}}"#, start + 4),
    ];
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| ((i % 2) as i32, None, v.clone(), start))
        .collect();
    produce(&input, &records).await;
    let file = write(REKEY);
    let out = run_bounded(&file, &input, &output, &dead, &app);
    assert!(out.stderr.contains("run: "), "{}", out.stderr);
    // Besides the records, the repartition carries the runtime's watermark markers (no value).
    let mut forwarded: Vec<(String, String)> = read_all(&format!("{app}-by-url-repartition"), 4)
        .into_iter()
        .filter(|r| !r.value.is_empty())
        .map(|r| (r.key, r.value))
        .collect();
    forwarded.sort();
    let mut want: Vec<(String, String)> = [0, 1, 4, 3]
        .iter()
        .map(|&i| {
            let url = if i == 3 { "/b" } else { "/a" };
            (url.to_owned(), values[i].clone())
        })
        .collect();
    want.sort();
    assert_eq!(forwarded, want, "the repartition holds the input bytes");
    let mut counts: Vec<String> = read_all(&output, 2).into_iter().map(|r| r.value).collect();
    counts.sort();
    let window = |url: &str, views: u64, users: u64| {
        format!(
            r#"{{"window_start":{start},"window_end":{},"url":"{url}","views":{views},"users":{users}}}"#,
            start + 60_000
        )
    };
    assert_eq!(counts, [window("/a", 3, 2), window("/b", 1, 1)]);
    assert_not_json_dead_letter(&dead);
}
