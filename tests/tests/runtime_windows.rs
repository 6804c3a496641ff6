//! The runtime's event-time windows against a real broker: the `word_count` example, bounded,
//! with two workers, on out-of-order input spread over six partitions; every output record is
//! checked against counts computed here.

mod runtime_support;

use std::collections::BTreeMap;
use std::time::Duration;

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_testcontainers::KafkaCluster;
use runtime_support::{example, kafka, read_all, recent, run_example, terminate, topic, wait};

const WORDS: [&str; 12] = [
    "kafka", "stream", "window", "event", "time", "count", "rust", "flink", "state", "key",
    "topic", "late",
];

/// A line of one to four words, chosen by a small deterministic generator.
struct Lines(u64);

impl Lines {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn line(&mut self) -> String {
        let n = 1 + self.next() % 4;
        (0..n)
            .map(|_| WORDS[(self.next() % WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `(partition, timestamp, line)`: per partition, timestamps rising over `span_ms` with
/// jitter of up to `jitter_ms` backwards from the newest so far (on time for an
/// out-of-orderness of `jitter_ms`).
fn input(
    partitions: i32,
    per_partition: usize,
    start: i64,
    span_ms: i64,
    jitter_ms: i64,
) -> Vec<(i32, i64, String)> {
    let mut g = Lines(42);
    let mut out = Vec::new();
    for p in 0..partitions {
        let mut newest = start;
        for i in 0..per_partition {
            let base = start + span_ms * i as i64 / per_partition as i64;
            let back = (g.next() % (jitter_ms as u64 + 1)) as i64;
            let ts = (base.max(newest) - back).max(newest - jitter_ms);
            newest = newest.max(ts);
            out.push((p, ts, g.line()));
        }
    }
    out
}

async fn produce(topic: &str, records: &[(i32, i64, String)]) {
    let producer = Producer::connect(
        ProducerConfig::from_properties([("bootstrap.servers", kafka().bootstrap().as_str())])
            .expect("config"),
    )
    .await
    .expect("producer");
    for (p, ts, line) in records {
        let mut record = ProducerRecord::new(topic).value(line.as_bytes());
        record.partition = Some(*p);
        record.timestamp = Some(*ts);
        let _delivery = producer.send(record).await.expect("send");
    }
    producer.flush().await.expect("flush");
    assert_eq!(producer.failed_records(), 0);
}

/// Reads `topic` until it holds at least `n` records (or 60 s).
fn wait_for(topic: &str, n: usize) -> Vec<runtime_support::Read> {
    let read = read_all(topic, n);
    assert!(read.len() >= n, "{} of {n} records in {topic}", read.len());
    read
}

/// Late records, made deterministic by phases: the job runs unbounded; once its output proves
/// how far the watermark has come, a record within the allowed lateness updates its window
/// (emitted again) and one beyond goes, unchanged, to the late output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_updates_windows_within_the_lateness_and_sends_later_records_aside() {
    let input_topic = topic("wcl-in", 6).await;
    let output = topic("wcl-out", 3).await;
    let late = topic("wcl-late", 3).await;
    let app = KafkaCluster::unique_topic("wcl-app");
    let t = recent();
    // Phase 1: every partition has "alpha" at t + 5.2 s, "probe" at t + 45 s and "final"
    // at t + 60 s. Every window before t + 46 s closes (watermark t + 60 s - 1 at most);
    // the windows of t + 60 s stay open.
    let mut phase1 = Vec::new();
    for p in 0..6 {
        phase1.push((p, t + 5_200, "alpha".to_owned()));
        phase1.push((p, t + 45_000, "probe".to_owned()));
        phase1.push((p, t + 60_000, "final".to_owned()));
    }
    produce(&input_topic, &phase1).await;
    let child = std::process::Command::new(example("word_count"))
        .args(["-b", &kafka().bootstrap(), "--input", &input_topic])
        .args(["--output", &output, "--output-late", &late])
        .args(["--application-id", &app, "--workers", "2", "--window", "1s"])
        .args(["--allowed-lateness", "30s"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start word_count");
    // "probe" counted proves the watermark past t + 46 s - 1 (and below t + 60 s).
    let first = wait_for(&output, 2);
    let first: Vec<(String, String)> = first.into_iter().map(|r| (r.key, r.value)).collect();
    let count = |start: i64, n: u64| {
        format!(
            r#"{{"window_start":{start},"window_end":{},"count":{n}}}"#,
            start + 1_000
        )
    };
    assert!(
        first.contains(&("alpha".to_owned(), count(t + 5_000, 6))),
        "{first:?}"
    );
    assert!(
        first.contains(&("probe".to_owned(), count(t + 45_000, 6))),
        "{first:?}"
    );
    // Phase 2, with the watermark W in [t + 46 s - 1, t + 60 s - 1]:
    // - "beta" at t + 30.5 s: its window [t + 30 s, t + 31 s) has closed (end - 1 <= W) and
    //   is kept until t + 61 s - 1 > W: it is counted and emitted at once;
    // - "alpha gamma" at t + 5.5 s: [t + 5 s, t + 6 s) was dropped at t + 36 s - 1 <= W: both
    //   words go to the late output.
    produce(
        &input_topic,
        &[
            (0, t + 30_500, "beta".to_owned()),
            (1, t + 5_500, "alpha gamma".to_owned()),
        ],
    )
    .await;
    let out = wait_for(&output, 3);
    let lates = wait_for(&late, 1);
    terminate(&child);
    let done = wait(child, Duration::from_secs(60));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let out: Vec<(String, String)> = out.into_iter().map(|r| (r.key, r.value)).collect();
    assert!(
        out.contains(&("beta".to_owned(), count(t + 30_000, 1))),
        "{out:?}"
    );
    assert_eq!(out.len(), 3, "nothing else emitted: {out:?}");
    let lates: Vec<(String, String)> = lates.into_iter().map(|r| (r.key, r.value)).collect();
    // The late record, split into words, keyed by each: both words of the line.
    let mut words: Vec<&str> = lates.iter().map(|(_, v)| v.as_str()).collect();
    words.sort_unstable();
    assert_eq!(words, ["alpha", "gamma"], "{lates:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_counts_every_word_of_every_window_exactly_once() {
    let input_topic = topic("wc-in", 6).await;
    let output = topic("wc-out", 6).await;
    let app = KafkaCluster::unique_topic("wc-app");
    // 1 s windows over 20 s of event time, out of order by up to 1.5 s within a partition.
    let start = recent() + 250;
    let records = input(6, 400, start, 20_000, 1_500);
    produce(&input_topic, &records).await;

    let out = run_example(
        "word_count",
        &[
            "-b",
            &kafka().bootstrap(),
            "--input",
            &input_topic,
            "--output",
            &output,
            "--application-id",
            &app,
            "--workers",
            "2",
            "--window",
            "1s",
            "--max-out-of-orderness",
            "1500ms",
            "--exit-at-end",
        ],
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "word_count failed:\n{stderr}");
    assert!(stderr.contains("records processed, 0 late"), "{stderr}");

    let expected = word_counts(&records);
    assert_eq!(read_word_counts(&output, expected.len()), expected);
}

/// What `word_count` with 1 s windows must write for `records`, computed from them directly:
/// (word, window start) -> count.
fn word_counts(records: &[(i32, i64, String)]) -> BTreeMap<(String, i64), u64> {
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (_, ts, line) in records {
        for word in line.split_whitespace() {
            *expected
                .entry((word.to_owned(), ts - ts.rem_euclid(1_000)))
                .or_default() += 1;
        }
    }
    expected
}

/// The 1 s window counts `word_count` wrote to `output` (at least `n` of them), checking
/// that each (word, window) came once.
fn read_word_counts(output: &str, n: usize) -> BTreeMap<(String, i64), u64> {
    let mut actual: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for r in &read_all(output, n) {
        let v: serde_json::Value = serde_json::from_str(&r.value).expect("JSON value");
        let window_start = v["window_start"].as_i64().expect("window_start");
        assert_eq!(v["window_end"].as_i64(), Some(window_start + 1_000), "{v}");
        let count = v["count"].as_u64().expect("count");
        let previous = actual.insert((r.key.clone(), window_start), count);
        assert!(
            previous.is_none(),
            "two results for {} at {window_start}",
            r.key
        );
    }
    actual
}

mod visit_analytics {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
    use flumen_runtime::testing::visits::{Visit, VisitGen};
    use flumen_testcontainers::KafkaCluster;
    use serde_json::Value;

    use super::runtime_support::{
        example, expected_alerts, expected_top, kafka, kill9_counting_committed, parse_alert,
        parse_top, percentile, read_committed, recent, run_example, terminate, topic, visit_stats,
        wait,
    };

    const WINDOW: i64 = 10_000;

    async fn produce(topic: &str, records: &[(Option<i32>, Option<String>, Vec<u8>)]) {
        let producer = Producer::connect(
            ProducerConfig::from_properties([("bootstrap.servers", kafka().bootstrap().as_str())])
                .expect("config"),
        )
        .await
        .expect("producer");
        for (partition, key, value) in records {
            let mut record = ProducerRecord::new(topic).value(value);
            record.partition = *partition;
            record.key = key.as_deref().map(str::as_bytes);
            let _delivery = producer.send(record).await.expect("send");
        }
        producer.flush().await.expect("flush");
        assert_eq!(producer.failed_records(), 0);
    }

    /// What happens to the job while its input arrives.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Scenario {
        /// Nothing: the input is there, one bounded run reads it.
        Clean,
        /// Exactly-once; the process is killed with SIGKILL half-way and started again.
        Kill9,
        /// The same with the window state in on-disk stores (`state.store = disk`) behind a
        /// 16 KiB cache: the restart empties the files and restores them from the changelogs.
        Kill9Disk,
        /// The same under at-least-once: results emitted after the last commit may come
        /// twice, and a kill between a checkpoint's changelog flush and its offset commit
        /// counts that interval twice; nothing is missing or under-counted.
        Kill9AtLeastOnce,
        /// Exactly-once; a second process joins after a third of the input and leaves
        /// (SIGTERM) after two thirds; the first stops (SIGTERM) and a bounded run finishes.
        ScaleOutAndIn,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visit_analytics_emits_every_window_statistic_top_list_and_alert_exactly() {
        visit_analytics_case(Scenario::Clean).await;
    }

    /// Under exactly-once, growing from one process to two and back while the input flows
    /// moves tasks (cooperatively) with their state: the results stay exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visit_analytics_exactly_once_scales_out_and_in_with_exact_results() {
        visit_analytics_case(Scenario::ScaleOutAndIn).await;
    }

    /// Under exactly-once, a process killed mid-stream and started again (its window state
    /// restored from the changelogs, its open transaction aborted) leaves read_committed
    /// readers exactly the results of a run without failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visit_analytics_exactly_once_survives_kill_9_with_exact_results() {
        visit_analytics_case(Scenario::Kill9).await;
    }

    /// The same with window state on disk, behind a cache far smaller than the state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visit_analytics_exactly_once_with_state_on_disk_survives_kill_9_with_exact_results() {
        visit_analytics_case(Scenario::Kill9Disk).await;
    }

    /// Under at-least-once, the state restored from the changelogs goes with the committed
    /// offsets: after a kill -9 nothing is missing and every number is right.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn visit_analytics_at_least_once_survives_kill_9_with_nothing_missing() {
        visit_analytics_case(Scenario::Kill9AtLeastOnce).await;
    }

    /// Starts the job under exactly-once, as static member `instance` if any; its log goes
    /// to the returned file.
    fn spawn_job(
        args: &[&str],
        guarantee: &str,
        instance: Option<&str>,
    ) -> (std::process::Child, std::path::PathBuf) {
        let log = std::env::temp_dir().join(format!(
            "{}-{}.log",
            KafkaCluster::unique_topic("va-job"),
            instance.unwrap_or("dynamic")
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(example("visit_analytics"))
            .args(args)
            .args(["--guarantee", guarantee])
            .args(instance.map(|i| ["--instance-id", i]).into_iter().flatten())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start visit_analytics");
        (child, log)
    }

    fn log_tail(path: &std::path::Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_for_committed(topic: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while read_committed(topic, 0).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn visit_analytics_case(scenario: Scenario) {
        let input = topic("va-in", 6).await;
        let users_topic = topic("va-users", 6).await;
        let (stats, top, alerts, late) = (
            topic("va-stats", 3).await,
            topic("va-top", 3).await,
            topic("va-alerts", 3).await,
            topic("va-late", 3).await,
        );
        let app = KafkaCluster::unique_topic("va-app");
        let start = recent();
        let visits: Vec<Visit> = VisitGen::new(11)
            .users(300)
            .url_count(25)
            .start_ms(start)
            .events_per_sec(150.0)
            .error_share(0.01)
            .error_burst("/url-3", start + 20_000, start + 30_000, 0.5)
            .out_of_order_ms(3_000)
            .visits()
            .take(9_000)
            .collect();
        // Spread over the partitions in turn: out of order by at most 3 s anywhere, so on
        // time for the job's 5 s bound in every partition.
        let records: Vec<_> = visits
            .iter()
            .enumerate()
            .map(|(i, v)| (Some((i % 6) as i32), None, v.to_json()))
            .collect();
        // Profiles for two users in three; the others join with nothing.
        let countries = ["CN", "FR", "BR", "US"];
        let profiles: BTreeMap<String, &str> = (0..300)
            .filter(|u| u % 3 != 2)
            .map(|u| (format!("u{u}"), countries[u % 4]))
            .collect();
        let users: Vec<_> = profiles
            .iter()
            .map(|(u, c)| {
                (
                    None,
                    Some(u.clone()),
                    format!(r#"{{"country":"{c}"}}"#).into_bytes(),
                )
            })
            .collect();
        produce(&users_topic, &users).await;

        let bootstrap = kafka().bootstrap();
        let mut args = vec![
            "-b",
            &bootstrap,
            "--input",
            &input,
            "--users",
            &users_topic,
            "--output-stats",
            &stats,
            "--output-top",
            &top,
            "--output-alerts",
            &alerts,
            "--output-late",
            &late,
            "--window",
            "10s",
            "--application-id",
            &app,
            "--workers",
            "2",
        ];
        if scenario == Scenario::Kill9AtLeastOnce {
            // Commits (with their state checkpoints) before the kill.
            args.extend(["--commit-interval-ms", "200"]);
        }
        let state_dir = tempfile::tempdir().expect("tempdir");
        let state_dir_flag = format!("state.dir={}", state_dir.path().display());
        if scenario == Scenario::Kill9Disk {
            args.extend([
                "-X",
                "state.store=disk",
                "-X",
                &state_dir_flag,
                "-X",
                "state.cache.max.bytes=16384",
            ]);
        }
        match scenario {
            Scenario::Clean => produce(&input, &records).await,
            Scenario::Kill9 | Scenario::Kill9Disk | Scenario::Kill9AtLeastOnce => {
                let guarantee = if scenario == Scenario::Kill9AtLeastOnce {
                    "at_least_once"
                } else {
                    "exactly_once"
                };
                let mut child = Some(spawn_job(&args, guarantee, Some("node-a")).0);
                for (i, chunk) in records.chunks(1_000).enumerate() {
                    produce(&input, chunk).await;
                    if i == 5 {
                        // Windows have closed and been committed: kill it mid-stream.
                        wait_for_committed(&stats).await;
                        if scenario == Scenario::Kill9AtLeastOnce {
                            // Results are visible before their commit under at-least-once:
                            // wait for a commit (with its checkpoint) of every input partition.
                            super::runtime_support::wait_for_group_commit(&app, |t| t == input, 6)
                                .await;
                        }
                        let committed =
                            kill9_counting_committed(child.take().expect("running"), &stats);
                        assert!(committed > 0, "results committed before the kill");
                        eprintln!("killed with {committed} statistics committed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Scenario::ScaleOutAndIn => {
                // Dynamic members: a static one that stops is only noticed after
                // session.timeout.ms (KIP-345), which this test does not want to wait for.
                let (first, first_log) = spawn_job(&args, "exactly_once", None);
                let mut second = None;
                for (i, chunk) in records.chunks(500).enumerate() {
                    produce(&input, chunk).await;
                    if i == 4 {
                        wait_for_committed(&stats).await;
                        let (b, log) = spawn_job(&args, "exactly_once", None);
                        // Until the second process runs tasks (the group moved some to it).
                        let deadline = std::time::Instant::now() + Duration::from_secs(60);
                        while !std::fs::read_to_string(&log)
                            .unwrap_or_default()
                            .contains("task started")
                            && std::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        second = Some((b, log));
                        eprintln!("second process runs tasks");
                    }
                    if i == 12 {
                        let (b, log) = second.take().expect("running");
                        terminate(&b);
                        let out = wait(b, Duration::from_secs(60));
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        assert!(
                            out.status.success(),
                            "the second process stops cleanly:\n{}",
                            log_tail(&log)
                        );
                        let processed: u64 = text
                            .lines()
                            .find_map(|l| l.strip_prefix("visit_analytics: "))
                            .and_then(|l| l.split_whitespace().next()?.parse().ok())
                            .unwrap_or(0);
                        assert!(processed > 0, "the second process did work:\n{text}");
                        eprintln!("second process stopped after {processed} records");
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                terminate(&first);
                let out = wait(first, Duration::from_secs(60));
                assert!(
                    out.status.success(),
                    "the first process stops cleanly:\n{}",
                    log_tail(&first_log)
                );
            }
        }
        match scenario {
            Scenario::Clean => {}
            Scenario::Kill9 | Scenario::Kill9Disk => {
                args.extend(["--guarantee", "exactly_once", "--instance-id", "node-a"]);
            }
            Scenario::ScaleOutAndIn => args.extend(["--guarantee", "exactly_once"]),
            Scenario::Kill9AtLeastOnce => args.extend(["--instance-id", "node-a"]),
        }
        let once = scenario != Scenario::Kill9AtLeastOnce;
        args.push("--exit-at-end");
        let out = run_example("visit_analytics", &args, Duration::from_secs(180));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "visit_analytics failed:\n{stderr}");
        // Under at-least-once, results the first process emitted after its last commit are
        // emitted again, and come too late for the windows after them that already took
        // them: those are counted as late there, never counted twice.
        assert!(
            stderr.contains("records processed, 0 late") || !once,
            "{stderr}"
        );
        if matches!(scenario, Scenario::Kill9 | Scenario::Kill9Disk) {
            // The restarted process restored window state the first one had logged (under
            // at-least-once a commit may not have happened before the kill, on a slow
            // machine: then everything is read again, which the checks below cover too).
            let restored: u64 = stderr
                .lines()
                .filter(|l| l.contains("task state restored"))
                .filter_map(|l| l.split("records=").nth(1))
                .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
                .sum();
            assert!(restored > 0, "no state restored:\n{stderr}");
        }

        if scenario == Scenario::Kill9Disk {
            // Every window store of every task was kept in a file.
            let files = std::fs::read_dir(state_dir.path().join(&app))
                .expect("the application's state dir")
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("window-"))
                .filter(|e| e.path().join("state.redb").exists())
                .count();
            assert!(files >= 6, "{files} window store files");
        }

        // The expected results, from the visits themselves.
        let expected = visit_stats(&visits, &profiles, WINDOW);

        let read = read_committed(&stats, expected.len());
        if once {
            assert_eq!(
                read.len(),
                expected.len(),
                "one statistic per URL and window"
            );
        }
        let mut seen = BTreeSet::new();
        for r in &read {
            let s: Value = serde_json::from_str(&r.value).expect("JSON");
            let ws = s["window_start"].as_i64().expect("window_start");
            let url = s["url"].as_str().expect("url").to_owned();
            assert_eq!(r.key, url);
            assert!(seen.insert((url.clone(), ws)) || !once, "twice: {url} {ws}");
            let e = expected
                .get(&(url.clone(), ws))
                .expect("an expected window");
            let countries: BTreeMap<String, u64> =
                serde_json::from_value(s["countries"].clone()).expect("countries");
            let (end, users) = (s["window_end"].as_i64(), s["users"].as_u64());
            assert_eq!(end, Some(ws + WINDOW), "{url} at {ws}");
            assert_eq!(users, Some(e.users.len() as u64), "{url} at {ws}");
            let (views, errors) = (s["views"].as_u64(), s["errors"].as_u64());
            if once {
                assert_eq!(
                    (
                        views,
                        errors,
                        s["p50_ms"].as_u64(),
                        s["p99_ms"].as_u64(),
                        &countries
                    ),
                    (
                        Some(e.views),
                        Some(e.errors),
                        Some(percentile(&e.latency, 0.5)),
                        Some(percentile(&e.latency, 0.99)),
                        &e.countries,
                    ),
                    "{url} at {ws}"
                );
            } else {
                // At-least-once: a kill between a checkpoint's changelog flush and its
                // offset commit restores state that already holds the records read again
                // after it, so a count can be over, never under (distinct users are exact).
                assert!(views >= Some(e.views), "{url} at {ws}: {views:?} views");
                assert!(errors >= Some(e.errors), "{url} at {ws}: {errors:?} errors");
                assert!(
                    countries.keys().eq(e.countries.keys())
                        && e.countries.iter().all(|(c, n)| countries[c] >= *n),
                    "{url} at {ws}: {countries:?}"
                );
            }
        }
        assert_eq!(seen.len(), expected.len(), "every URL and window");

        // Top 10 per window: views descending, then URL.
        let by_window = expected_top(&expected);
        let read = read_committed(&top, by_window.len());
        let windows: BTreeSet<&str> = read.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(windows.len(), by_window.len(), "a top list per window");
        if once {
            assert_eq!(read.len(), by_window.len(), "one top list per window");
        }
        for r in &read {
            let ws: i64 = r.key.parse().expect("key = window start");
            let got = parse_top(&r.value);
            if once {
                assert_eq!(got, by_window[&ws], "top of {ws}");
            } else {
                // Counts can be over (above): the list is as long, ordered, and no URL
                // has fewer views than it had.
                assert_eq!(got.len(), by_window[&ws].len(), "top of {ws}");
                assert!(
                    got.windows(2)
                        .all(|p| (p[0].1, &p[1].0) >= (p[1].1, &p[0].0)),
                    "top of {ws} in order: {got:?}"
                );
                for (url, views) in &got {
                    assert!(*views >= expected[&(url.clone(), ws)].views, "{url} {ws}");
                }
            }
        }

        // Alerts: error rate above 5 % with at least 20 views.
        let want = expected_alerts(&expected);
        assert!(!want.is_empty(), "the error burst raises alerts");
        let read = read_committed(&alerts, want.len());
        let got: BTreeSet<(String, i64, u64, u64)> = read.iter().map(parse_alert).collect();
        if once {
            assert_eq!(read.len(), want.len());
            assert_eq!(got, want);
        } else {
            // Over-counts can raise or drop an alert; each one names a real window with
            // at least its true counts and meets the rule for the counts it carries.
            for (url, ws, views, errors) in &got {
                let e = &expected[&(url.clone(), *ws)];
                assert!(*views >= e.views && *errors >= e.errors, "{url} {ws}");
                assert!(*views >= 20 && *errors as f64 / *views as f64 > 0.05);
            }
        }
        let late_read = read_committed(&late, 0);
        if once {
            assert!(late_read.is_empty(), "nothing was late");
        } else {
            // At-least-once: visits the key_by stage read again after the restart (those
            // after its last commit) reach the window stage a second time, after windows that
            // already counted them have closed, so they may be late there: only those.
            let canonical = |b: &[u8]| {
                serde_json::from_slice::<Value>(b)
                    .expect("a visit")
                    .to_string()
            };
            let sent: BTreeSet<String> = records.iter().map(|r| canonical(&r.2)).collect();
            for r in &late_read {
                let visit = canonical(r.value.as_bytes());
                assert!(sent.contains(&visit), "late, never sent: {visit}");
            }
            eprintln!("{} visits late after the restart", late_read.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_is_not_co_partitioned_with_its_stream_is_refused_naming_both() {
    use flumen_runtime::format::{Json, Utf8};
    use flumen_runtime::join::{JoinKind, Table};
    use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig};

    let stream = topic("cp-stream", 6).await;
    let table = topic("cp-table", 4).await;
    let output = topic("cp-out", 1).await;
    let users = Table::new(Kafka::topic(&table).format(Json::<serde_json::Value>::new()));
    let mut pipeline = Pipeline::new();
    pipeline
        .source(Kafka::topic(&stream).format(Utf8))
        .join_table(
            &users,
            JoinKind::Left,
            |v: &str, _: Option<&serde_json::Value>| v.to_owned(),
        )
        .to(&output, Utf8);
    let config = RuntimeConfig::new(kafka().bootstrap(), KafkaCluster::unique_topic("cp-app"));
    let err = tokio::task::spawn_blocking(move || Runtime::new(config, pipeline).run_until_end())
        .await
        .expect("join")
        .expect_err("refused");
    let text = err.to_string();
    for part in [stream.as_str(), table.as_str(), "6 partitions", "4"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
}

/// With `num.standby.replicas=1`, a process keeps a copy of the window state of the tasks
/// the other runs; when the other dies, the takeover reads only the changelog's tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_standby_replica_a_takeover_reads_only_the_changelog_tail() {
    standby_takeover(false, false).await;
}

/// The same with the window state on disk, each process with a state directory of its own:
/// the standby copies are kept in the store files of the tasks they stand by for (not in
/// memory), and the takeover reads only the tail after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_state_on_disk_standby_copies_live_in_task_files_and_only_the_tail_is_read() {
    standby_takeover(true, false).await;
}

/// The same under exactly-once: the copies read committed records only, and the task's
/// start deletes the checkpoint its copy wrote once read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_state_on_disk_standby_copies_live_in_task_files() {
    standby_takeover(true, true).await;
}

async fn standby_takeover(on_disk: bool, exactly_once: bool) {
    let input_topic = topic("sb-in", 4).await;
    let output = topic("sb-out", 4).await;
    let app = KafkaCluster::unique_topic("sb-app");
    let b = kafka().bootstrap();
    let args = [
        "-b",
        &b,
        "--input",
        &input_topic,
        "--output",
        &output,
        "--window",
        "1h",
        "--application-id",
        &app,
        "--workers",
        "1",
        "--commit-interval-ms",
        "200",
        "-X",
        "num.standby.replicas=1",
        "-X",
        "consumer.session.timeout.ms=6000",
        "-X",
        "pin.workers=false",
    ];
    let dir = std::env::temp_dir();
    let state_dirs = tempfile::tempdir().expect("tempdir");
    let spawn = |name: &str| {
        let log = dir.join(format!("{app}-{name}.log"));
        let mut command = std::process::Command::new(example("word_count"));
        command.args(args);
        if exactly_once {
            command.args(["--guarantee", "exactly_once"]);
        }
        if on_disk {
            let state_dir = state_dirs.path().join(name);
            command
                .args(["-X", "state.store=disk", "-X"])
                .arg(format!("state.dir={}", state_dir.display()));
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start word_count");
        (child, log)
    };
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let (a, log_a) = spawn("a");
    let (b_proc, log_b) = spawn("b");
    let records = input(4, 3_000, recent(), 60_000, 0);
    let chunk = records.len() / 30;
    let mut sent = 0;
    // Both run tasks, and their state goes to the changelogs, for a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while sent < records.len() / 2
        || !read(&log_a).contains("task started")
        || !read(&log_b).contains("task started")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "both processes never ran tasks"
        );
        if sent < records.len() {
            produce(&input_topic, &records[sent..sent + chunk]).await;
            sent += chunk;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both have committed, with checkpoints of their state, every partition of the counting
    // stage's input.
    runtime_support::wait_for_group_commit(&app, |t| t.ends_with("-repartition"), 4).await;
    if on_disk {
        // The survivor runs some of the 4 tasks and keeps standby copies of the others in
        // their store files, before anything fails.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !read(&log_b).contains("standby copy kept in the store file") {
            assert!(
                std::time::Instant::now() < deadline,
                "no standby copy in a file:\n{}",
                read(&log_b)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let b_lines = read(&log_b).lines().count();
    runtime_support::kill9(&a);
    let _ = wait(a, Duration::from_secs(10));
    // The survivor takes the dead one's tasks over once its session times out (6 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let restores: Vec<(u64, u64)> = loop {
        let log = read(&log_b);
        let found: Vec<(u64, u64)> = log
            .lines()
            .skip(b_lines)
            .filter(|l| l.contains("task state restored"))
            .map(|l| {
                let field = |name: &str| -> u64 {
                    l.split(&format!(" {name}="))
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0)
                };
                (field("records"), field("standby_records"))
            })
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no takeover:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    terminate(&b_proc);
    let _ = wait(b_proc, Duration::from_secs(60));
    eprintln!(
        "takeover restores, on disk {on_disk}, exactly-once {exactly_once} (tail records, \
         records the standby had): {restores:?}"
    );
    if on_disk {
        // The survivor's own directory holds the files of the tasks it took over.
        let files = std::fs::read_dir(state_dirs.path().join("b").join(&app))
            .expect("the survivor's state dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("state.redb").exists())
            .count();
        assert!(files >= 4, "{files} store files");
    }
    assert!(
        restores.iter().any(|&(_, standby)| standby > 0),
        "the standby copies were used: {restores:?}\n{}",
        read(&log_b)
    );
    for &(tail, standby) in &restores {
        assert!(
            tail <= standby,
            "a takeover read more than the standby had: {restores:?}"
        );
    }
}

/// The same application run as 1, 2 and 3 processes (one worker each, started together,
/// bounded) on the same input: every process runs tasks, and every run writes exactly the
/// same window counts, each once, whichever process ran which task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_as_one_two_or_three_processes_writes_identical_results() {
    let input_topic = topic("wcn-in", 6).await;
    let start = recent() + 250;
    let records = input(6, 3_000, start, 10_000, 1_000);
    produce(&input_topic, &records).await;
    let expected = word_counts(&records);
    let b = kafka().bootstrap();
    for processes in 1..=3 {
        let output = topic(&format!("wcn-out-{processes}"), 6).await;
        let app = KafkaCluster::unique_topic(&format!("wcn-app-{processes}"));
        let args = [
            "-b",
            &b,
            "--input",
            &input_topic,
            "--output",
            &output,
            "--application-id",
            &app,
            "--workers",
            "1",
            "--window",
            "1s",
            "--max-out-of-orderness",
            "1s",
            "-X",
            "pin.workers=false",
            "--exit-at-end",
        ];
        let children: Vec<std::process::Child> = (0..processes)
            .map(|_| {
                std::process::Command::new(example("word_count"))
                    .args(args)
                    .env("RUST_LOG", "info")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("start word_count")
            })
            .collect();
        let mut ran = Vec::new();
        for child in children {
            let out = wait(child, Duration::from_secs(120));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{processes} processes: word_count failed:\n{stderr}"
            );
            ran.push(stderr.matches("task started").count());
        }
        eprintln!("{processes} process(es): tasks started per process {ran:?}");
        assert!(
            ran.iter().all(|&n| n > 0),
            "every process ran tasks: {ran:?}"
        );
        let actual = read_word_counts(&output, expected.len());
        assert_eq!(actual, expected, "{processes} processes");
        eprintln!(
            "{processes} process(es): {} window counts, as expected",
            actual.len()
        );
    }
}
