//! The stream-processing runtime against a real broker: the `uppercase` and `reroute`
//! examples run as processes (bounded, two workers; a second process joining and leaving;
//! kill -9 and a restart), their output read back by kcat and checked record by record.

mod runtime_support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_testcontainers::KafkaCluster;
use runtime_support::{
    Read, admin, example, kafka, kill9, kill9_counting_committed, read_all, read_committed,
    run_example, terminate, topic, wait,
};

/// Writes `(key, value)` records, each with a header `seq=<index>`.
async fn produce(topic: &str, records: &[(String, String)]) {
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka().bootstrap().as_str()),
            ("linger.ms", "5"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    for (i, (k, v)) in records.iter().enumerate() {
        let seq = i.to_string();
        let headers = [(b"seq".as_slice(), Some(seq.as_bytes()))];
        let _delivery = producer
            .send(
                ProducerRecord::new(topic)
                    .key(k.as_bytes())
                    .value(v.as_bytes())
                    .headers(&headers),
            )
            .await
            .expect("send");
    }
    producer.flush().await.expect("flush");
    assert_eq!(producer.failed_records(), 0);
}

fn input(n: usize, keys: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("key-{}", i % keys), format!("value-{i}-abc")))
        .collect()
}

/// Every input value appears upper-cased in the output with its key and headers, each key's
/// records in input order; returns how many output records were duplicates.
fn check_uppercased(records: &[(String, String)], out: &[Read]) -> usize {
    let mut by_value: HashMap<&str, usize> = HashMap::new();
    for r in out {
        *by_value.entry(r.value.as_str()).or_default() += 1;
    }
    let expected: BTreeMap<String, &(String, String)> =
        records.iter().map(|r| (r.1.to_uppercase(), r)).collect();
    let missing: Vec<&String> = expected
        .keys()
        .filter(|v| !by_value.contains_key(v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} input records missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for r in out {
        let (key, _) = expected
            .get(&r.value)
            .unwrap_or_else(|| panic!("unexpected output value {:?}", r.value));
        assert_eq!(&r.key, key, "key kept for {}", r.value);
        assert!(
            r.headers.starts_with("seq="),
            "headers kept: {:?}",
            r.headers
        );
    }
    // Per key, first occurrences follow input order.
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for r in out {
        if seen.insert(r.value.as_str(), ()).is_some() {
            continue;
        }
        let i: usize = r
            .value
            .split('-')
            .nth(1)
            .expect("index")
            .parse()
            .expect("number");
        if let Some(&prev) = last.get(r.key.as_str()) {
            assert!(
                i > prev || by_value[r.value.as_str()] > 1,
                "key {} out of order: {i} after {prev}",
                r.key
            );
        }
        last.insert(r.key.as_str(), i);
    }
    out.len() - expected.len()
}

#[tokio::test(flavor = "current_thread")]
async fn uppercase_bounded_with_two_workers_writes_every_record_once_with_keys_headers_and_order() {
    let input_topic = topic("upper-in", 6).await;
    let output_topic = topic("upper-out", 6).await;
    let records = input(30_000, 50);
    produce(&input_topic, &records).await;
    let app = KafkaCluster::unique_topic("upper-app");
    let b = kafka().bootstrap();
    let out = run_example(
        "uppercase",
        &[
            "-b",
            &b,
            "--input",
            &input_topic,
            "--output",
            &output_topic,
            "--application-id",
            &app,
            "--workers",
            "2",
            "--exit-at-end",
        ],
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "uppercase failed:\n{stderr}");
    assert!(stderr.contains("30000 records processed"), "{stderr}");
    let read = read_all(&output_topic, records.len());
    assert_eq!(read.len(), records.len(), "exactly one output per input");
    assert_eq!(check_uppercased(&records, &read), 0);
    // The group committed the end of every input partition.
    let committed = admin()
        .await
        .list_group_offsets(&app, None)
        .await
        .expect("offsets");
    let total: i64 = committed
        .iter()
        .filter(|(tp, _)| tp.topic == input_topic)
        .map(|(_, o)| o.as_ref().expect("offset").offset)
        .sum();
    assert_eq!(total, records.len() as i64);
}

#[tokio::test(flavor = "current_thread")]
async fn reroute_rekeys_by_a_json_field_through_a_repartition_topic() {
    let input_topic = topic("reroute-in", 6).await;
    let output_topic = topic("reroute-out", 4).await;
    let records: Vec<(String, String)> = (0..6_000)
        .map(|i| {
            (
                format!("origin-{}", i % 7),
                format!(r#"{{"user":"u{}","n":{i}}}"#, i % 40),
            )
        })
        .collect();
    produce(&input_topic, &records).await;
    let app = KafkaCluster::unique_topic("reroute-app");
    let b = kafka().bootstrap();
    let out = run_example(
        "reroute",
        &[
            "-b",
            &b,
            "--input",
            &input_topic,
            "--output",
            &output_topic,
            "--application-id",
            &app,
            "--workers",
            "2",
            "--exit-at-end",
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "reroute failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = read_all(&output_topic, records.len());
    assert_eq!(read.len(), records.len());
    let mut ns: Vec<i64> = Vec::new();
    let mut partition_of_user: HashMap<String, i32> = HashMap::new();
    // Per input key (origin), records of one user keep their input order.
    let mut last: HashMap<(String, u64), i64> = HashMap::new();
    for r in &read {
        let v: serde_json::Value = serde_json::from_str(&r.value).expect("json");
        let user = v["user"].as_str().expect("user").to_owned();
        let n = v["n"].as_i64().expect("n");
        assert_eq!(r.key, user, "keyed by the user field");
        // Every user's records are in one partition of the output.
        let p = *partition_of_user.entry(user.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "user {user} split over partitions");
        let origin = (n % 7) as u64;
        if let Some(prev) = last.insert((user, origin), n) {
            assert!(n > prev, "order within a user and an origin partition");
        }
        ns.push(n);
    }
    ns.sort_unstable();
    assert_eq!(ns, (0..records.len() as i64).collect::<Vec<_>>());
    let topics = admin().await.list_topics(false).await.expect("topics");
    assert!(
        topics.contains(&format!("{app}-by-field-repartition")),
        "{topics:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_record_that_is_not_json_fails_the_job_or_goes_to_the_dead_letter_topic_or_is_skipped() {
    let input_topic = topic("bad-in", 1).await;
    let output_topic = topic("bad-out", 1).await;
    let dlq = topic("bad-dlq", 1).await;
    let records = vec![
        ("a".to_owned(), r#"{"user":"x"}"#.to_owned()),
        ("b".to_owned(), "not json".to_owned()),
        ("c".to_owned(), r#"{"user":"y"}"#.to_owned()),
    ];
    produce(&input_topic, &records).await;
    let b = kafka().bootstrap();
    // Fail (the default): non-zero exit, the error names topic, partition and offset.
    let app = KafkaCluster::unique_topic("bad-fail");
    let out = run_example(
        "reroute",
        &[
            "-b",
            &b,
            "--input",
            &input_topic,
            "--output",
            &output_topic,
            "--application-id",
            &app,
            "--workers",
            "1",
            "--exit-at-end",
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail:\n{stderr}");
    // The last line (logs come before it) is the one-line error naming the record.
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!(
                "reroute: record at {input_topic}-0 offset 1 does not deserialize: invalid JSON"
            ))),
        "error names the record: {stderr}"
    );
    // Dead letter: the bad record arrives unchanged with the error in a header.
    let app = KafkaCluster::unique_topic("bad-dlq-app");
    let out = run_example(
        "reroute",
        &[
            "-b",
            &b,
            "--input",
            &input_topic,
            "--output",
            &output_topic,
            "--application-id",
            &app,
            "--workers",
            "1",
            "--exit-at-end",
            "--dead-letter",
            &dlq,
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = read_all(&dlq, 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].key.as_str(), dead[0].value.as_str()),
        ("b", "not json")
    );
    assert!(
        dead[0].headers.contains("flumen.error=invalid JSON"),
        "{}",
        dead[0].headers
    );
    assert!(
        dead[0]
            .headers
            .contains(&format!("flumen.source={input_topic}/0@1")),
        "{}",
        dead[0].headers
    );
    // Skip: counted and reported.
    let app = KafkaCluster::unique_topic("bad-skip-app");
    let out = run_example(
        "reroute",
        &[
            "-b",
            &b,
            "--input",
            &input_topic,
            "--output",
            &output_topic,
            "--application-id",
            &app,
            "--workers",
            "1",
            "--exit-at-end",
            "--skip-bad",
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Three input records, and the two good ones again as read from the repartition topic.
    assert!(
        stderr.contains("5 records processed, 1 skipped"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_process_joining_and_leaving_mid_stream_loses_nothing() {
    let input_topic = topic("rebal-in", 6).await;
    let output_topic = topic("rebal-out", 6).await;
    let app = KafkaCluster::unique_topic("rebal-app");
    let b = kafka().bootstrap();
    let start = |workers: &str| {
        Command::new(example("uppercase"))
            .args([
                "-b",
                &b,
                "--input",
                &input_topic,
                "--output",
                &output_topic,
                "--application-id",
                &app,
                "--workers",
                workers,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start uppercase")
    };
    let first = start("1");
    let records = input(60_000, 60);
    produce(&input_topic, &records[..20_000]).await;
    let second = start("1");
    produce(&input_topic, &records[20_000..40_000]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SIGTERM: the second process commits what it did and leaves the group.
    terminate(&second);
    let second = wait(second, Duration::from_secs(60));
    assert!(
        second.status.success(),
        "second process: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    produce(&input_topic, &records[40_000..]).await;
    let read = read_all(&output_topic, records.len());
    terminate(&first);
    let first = wait(first, Duration::from_secs(60));
    assert!(
        first.status.success(),
        "first process: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let duplicates = check_uppercased(&records, &read);
    eprintln!(
        "rebalance: {} outputs for {} inputs, {duplicates} duplicates",
        read.len(),
        records.len()
    );
    // Revoked partitions are flushed and committed before they move: nothing is read twice.
    assert_eq!(duplicates, 0, "duplicates after cooperative hand-overs");
}

/// Runs `uppercase` (2 workers, `guarantee`, static member `node-a`) while 100,000 records
/// arrive, kills it with SIGKILL half-way, and starts it again bounded. Returns the input,
/// what a read_committed reader reads of the output, and how many results it had seen at
/// the kill.
async fn kill_9_mid_stream(guarantee: &str) -> (Vec<(String, String)>, Vec<Read>, usize) {
    let input_topic = topic("kill-in", 6).await;
    let output_topic = topic("kill-out", 6).await;
    let app = KafkaCluster::unique_topic("kill-app");
    let b = kafka().bootstrap();
    let records = input(100_000, 30);
    let mut args: Vec<&str> = vec![
        "-b",
        &b,
        "--input",
        &input_topic,
        "--output",
        &output_topic,
        "--application-id",
        &app,
        "--workers",
        "2",
        "--guarantee",
        guarantee,
        "--instance-id",
        "node-a",
    ];
    let child = Command::new(example("uppercase"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start uppercase");
    // The input arrives while the job runs; it is killed half-way (under exactly-once with
    // transactions open).
    let mut committed_at_kill = 0;
    let mut child = Some(child);
    for (i, chunk) in records.chunks(5_000).enumerate() {
        produce(&input_topic, chunk).await;
        if i == 4 {
            let deadline = Instant::now() + Duration::from_secs(60);
            while read_committed(&output_topic, 0).is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if i == 10 {
            // Some of this chunk's results are sent, not committed.
            tokio::time::sleep(Duration::from_millis(30)).await;
            committed_at_kill =
                kill9_counting_committed(child.take().expect("running"), &output_topic);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        committed_at_kill > 0 && committed_at_kill < records.len(),
        "killed mid-stream ({committed_at_kill} results visible)"
    );
    args.push("--exit-at-end");
    let out = run_example("uppercase", &args, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = read_committed(&output_topic, records.len());
    (records, read, committed_at_kill)
}

#[tokio::test(flavor = "current_thread")]
async fn kill_9_mid_stream_then_a_restart_leaves_nothing_missing() {
    let (records, read, at_kill) = kill_9_mid_stream("at_least_once").await;
    let duplicates = check_uppercased(&records, &read);
    eprintln!(
        "kill -9: {} outputs for {} inputs, {duplicates} duplicates, {at_kill} at the kill \
         (at-least-once)",
        read.len(),
        records.len()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn exactly_once_kill_9_mid_stream_then_a_restart_writes_every_result_once() {
    let (records, read, at_kill) = kill_9_mid_stream("exactly_once").await;
    let duplicates = check_uppercased(&records, &read);
    eprintln!(
        "exactly-once kill -9: {} committed outputs for {} inputs, {duplicates} duplicates, \
         {at_kill} committed at the kill",
        read.len(),
        records.len()
    );
    assert_eq!(duplicates, 0, "read_committed sees each result once");
    assert_eq!(read.len(), records.len());
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_show_every_task_its_operators_lag_and_worker_load() {
    use flumen_runtime::format::Utf8;
    use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig};
    let input_topic = topic("metrics-in", 6).await;
    let output_topic = topic("metrics-out", 6).await;
    let records = input(50_000, 20);
    produce(&input_topic, &records).await;
    let mut pipeline = Pipeline::new();
    pipeline
        .source(Kafka::topic(&input_topic).format(Utf8))
        .filter(|v| !v.ends_with("7-abc"))
        .map(|v| v.to_uppercase())
        .to(&output_topic, Utf8);
    let config = RuntimeConfig::new(
        kafka().bootstrap(),
        KafkaCluster::unique_topic("metrics-app"),
    )
    .workers(2)
    // Small producer buffers: the worker pauses fetching whenever outputs back up.
    .set("producer.buffer.memory", "2097152")
    .set("producer.batch.size", "65536");
    let runtime = Runtime::new(config, pipeline);
    let read = runtime.metrics_reader();
    let run = std::thread::spawn(move || runtime.run_until_end());
    // While it runs, the metrics name tasks as they start.
    let mut seen_running = false;
    while !run.is_finished() {
        if !read().tasks.is_empty() {
            seen_running = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let summary = run.join().expect("runtime thread").expect("bounded run");
    assert!(seen_running, "metrics showed no task while running");
    let m = summary.metrics();
    assert_eq!(summary.records_in(), 50_000);
    assert_eq!(m.records_in, 50_000);
    let mut tasks: Vec<&str> = m.tasks.iter().map(|t| t.task.as_str()).collect();
    tasks.sort_unstable();
    assert_eq!(tasks, ["0_0", "0_1", "0_2", "0_3", "0_4", "0_5"]);
    let kept = records.iter().filter(|r| !r.1.ends_with("7-abc")).count() as u64;
    let mut into_sink = 0;
    for t in &m.tasks {
        let names: Vec<String> = t
            .operators
            .iter()
            .map(|o| o.name.split_once(':').expect("numbered").1.to_owned())
            .collect();
        assert_eq!(names, ["filter", "map", &format!("to:{output_topic}")]);
        assert_eq!(t.operators[0].records_in, t.counters.records_in);
        assert_eq!(t.operators[1].records_in, t.operators[2].records_in);
        into_sink += t.operators[2].records_in;
        assert!(t.counters.processing_ns > 0);
    }
    assert_eq!(into_sink, kept);
    // Lag is listed for the partitions each worker has fetched and still owns; a test broker
    // rebalances at once (no initial delay), so the second worker may join after the first
    // one has read everything.
    assert!(!m.lag.is_empty() && m.lag.len() <= 6, "{:?}", m.lag);
    assert!(
        m.lag.iter().all(|l| l.lag == 0 && l.position > 0),
        "{:?}",
        m.lag
    );
    assert_eq!(m.workers.len(), 2);
    assert!(
        m.workers
            .iter()
            .all(|w| (0.0..=1.0).contains(&w.busy_ratio))
            && m.workers.iter().any(|w| w.busy_ratio > 0.0),
        "{:?}",
        m.workers
    );
    assert!(m.workers.iter().map(|w| w.commits).sum::<u64>() >= 1);
    let out = read_all(&output_topic, kept as usize);
    assert_eq!(out.len() as u64, kept);
}

/// A two-stream join (`join_within`) under exactly-once against the broker: every pair within
/// the interval once in the read_committed output, and its buffers in their changelog topic
/// (records still buffered at a commit, and tombstones once they expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_stream_join_runs_under_exactly_once_with_its_buffers_logged() {
    use flumen_runtime::format::{Json, Utf8};
    use flumen_runtime::join::StreamJoinKind;
    use flumen_runtime::{Guarantee, Kafka, Pipeline, Runtime, RuntimeConfig};
    let clicks = topic("join-clicks", 3).await;
    let views = topic("join-views", 3).await;
    let output = topic("join-out", 3).await;
    let app = KafkaCluster::unique_topic("join-app");
    let changelog = format!("{app}-join-0-changelog");
    // Per key, a click every 50 ms and a view every 70 ms: pairs within 20 ms of each other.
    let t0 = runtime_support::recent();
    let side = |name: &str, every: i64| -> Vec<(String, String, i64)> {
        (0..1200)
            .map(|i| {
                let key = format!("k{}", i % 6);
                (
                    key,
                    format!("\"{name}-{i}\""),
                    t0 + i64::from(i / 6) * every,
                )
            })
            .collect()
    };
    let (c, v) = (side("c", 50), side("v", 70));
    let mut expected: Vec<String> = Vec::new();
    for (ck, cv, ct) in &c {
        for (vk, vv, vt) in &v {
            if ck == vk && (ct - vt).abs() <= 20 {
                expected.push(format!("{}+{}", cv.trim_matches('"'), vv.trim_matches('"')));
            }
        }
    }
    expected.sort();
    assert!(expected.len() > 100, "{} pairs", expected.len());

    let mut pipeline = Pipeline::new();
    pipeline
        .source2(
            Kafka::topic(&clicks).format(Json::<String>::new()),
            Kafka::topic(&views).format(Json::<String>::new()),
        )
        .join_within(
            Duration::from_millis(20),
            StreamJoinKind::Inner,
            |c: Option<&String>, v: Option<&String>| {
                format!(
                    "{}+{}",
                    c.map_or("-", String::as_str),
                    v.map_or("-", String::as_str)
                )
            },
        )
        .to(&output, Utf8);
    let config = RuntimeConfig::new(kafka().bootstrap(), &app)
        .workers(2)
        .guarantee(Guarantee::ExactlyOnce);
    let runtime = Runtime::new(config, pipeline);
    let stop = runtime.shutdown_handle();
    let run = std::thread::spawn(move || runtime.run());

    let producer = Producer::connect(
        ProducerConfig::from_properties([("bootstrap.servers", kafka().bootstrap().as_str())])
            .expect("config"),
    )
    .await
    .expect("producer");
    // The changelog's value sizes (-1: a tombstone); binary keys and values.
    let changelog_sizes = || -> Vec<i64> {
        let out = Command::new("kcat")
            .args([
                "-b",
                &kafka().bootstrap(),
                "-C",
                "-e",
                "-q",
                "-t",
                &changelog,
            ])
            .args(["-X", "isolation.level=read_committed", "-f", "%S\n"])
            .output()
            .expect("run kcat");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    // In halves: the first half's last records stay buffered over a commit, and expire in the
    // second.
    for half in [0..600, 600..1200] {
        let first = half.start == 0;
        for (topic, records) in [(&clicks, &c), (&views, &v)] {
            for (key, value, ts) in &records[half.clone()] {
                drop(
                    producer
                        .send(
                            ProducerRecord::new(topic)
                                .key(key.as_bytes())
                                .value(value.as_bytes())
                                .timestamp(*ts),
                        )
                        .await
                        .expect("send"),
                );
            }
        }
        producer.flush().await.expect("flush");
        if first {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !changelog_sizes().iter().any(|&s| s > 0) {
                assert!(Instant::now() < deadline, "no buffered record logged");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut got: Vec<String> = read_committed(&output, expected.len())
        .into_iter()
        .map(|r| r.value)
        .collect();
    stop.shutdown();
    run.join().expect("runtime thread").expect("clean stop");
    got.sort();
    assert_eq!(got, expected);
    // One value per side and key (6 keys) at each checkpoint its records changed in: the
    // records buffered then, the expired ones gone (a key sees 200 records a side, about
    // 3,200 bytes; logged without their expiry, its last value would hold them all).
    let sizes = changelog_sizes();
    let written = sizes.iter().filter(|&&s| s > 0).count();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(
        written >= 12 && largest < 1_600,
        "the changelog holds {written} values of buffered records, the largest {largest} bytes"
    );
}

/// The tasks a job's log says it runs: started (`task started task=S_P`) and not moved
/// away since, sorted.
fn started_tasks(log: &str) -> Vec<String> {
    let mut tasks = std::collections::BTreeSet::new();
    for l in log.lines() {
        let Some(task) = l
            .split("task=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
        else {
            continue;
        };
        if l.contains("task started") {
            tasks.insert(task.to_owned());
        } else if l.contains("task moved away") {
            tasks.remove(task);
        }
    }
    tasks.into_iter().collect()
}

fn spawn_static(
    name: &str,
    args: &[&str],
    instance: &str,
    log: &std::path::Path,
) -> std::process::Child {
    Command::new(example(name))
        .args(args)
        .args(["--instance-id", instance, "-X", "pin.workers=false"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start the example")
}

fn read_log(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The lines of the log at `p` past its first `skip` that start or move a task away.
fn task_moves_since(p: &std::path::Path, skip: usize) -> Vec<String> {
    read_log(p)
        .lines()
        .skip(skip)
        .filter(|l| l.contains("task moved away") || l.contains("task started"))
        .map(str::to_owned)
        .collect()
}

/// The arguments of an example reading `input` into `output` as application `app` with one
/// worker, and `more`.
fn one_worker_args(input: &str, output: &str, app: &str, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "-b",
        &kafka().bootstrap(),
        "--input",
        input,
        "--output",
        output,
        "--application-id",
        app,
        "--workers",
        "1",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    args.extend(more.iter().map(|a| (*a).to_owned()));
    args
}

/// Two static members, `a` and `b`, of one example program of application `app`, logging to
/// the temp dir (`log_b2`: for `b` started again).
struct StaticPair {
    a: std::process::Child,
    b: std::process::Child,
    log_a: std::path::PathBuf,
    log_b: std::path::PathBuf,
    log_b2: std::path::PathBuf,
}

impl StaticPair {
    fn start(name: &str, args: &[&str], app: &str) -> Self {
        let dir = std::env::temp_dir();
        let (log_a, log_b, log_b2) = (
            dir.join(format!("{app}-a.log")),
            dir.join(format!("{app}-b.log")),
            dir.join(format!("{app}-b2.log")),
        );
        StaticPair {
            a: spawn_static(name, args, "a", &log_a),
            b: spawn_static(name, args, "b", &log_b),
            log_a,
            log_b,
            log_b2,
        }
    }

    /// Writes `next()`'s records to `input` every 300 ms until both members run tasks (for
    /// 90 s at most).
    async fn until_both_run(&self, input: &str, mut next: impl FnMut() -> Vec<(String, String)>) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while started_tasks(&read_log(&self.log_a)).is_empty()
            || started_tasks(&read_log(&self.log_b)).is_empty()
        {
            assert!(Instant::now() < deadline, "both members never ran tasks");
            produce(input, &next()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// A rolling restart of static members (`--instance-id`) within the session timeout moves
/// no task: the restarted process gets its own tasks back, the other keeps its own and hears
/// of no rebalance.
#[tokio::test(flavor = "current_thread")]
async fn restarting_a_static_member_moves_no_task() {
    let input_topic = topic("static-in", 6).await;
    let output_topic = topic("static-out", 6).await;
    let app = KafkaCluster::unique_topic("static-app");
    let args = one_worker_args(&input_topic, &output_topic, &app, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pair = StaticPair::start("uppercase", &args, &app);
    let records = input(60_000, 30);
    // Until both run tasks over the input so far.
    let mut sent = 0;
    pair.until_both_run(&input_topic, || {
        assert!(sent < 30_000, "both members never ran tasks");
        sent += 500;
        records[sent - 500..sent].to_vec()
    })
    .await;
    let StaticPair {
        a,
        b: first_b,
        log_a,
        log_b,
        log_b2,
    } = pair;
    // Every partition has had records since: both members run all their tasks.
    produce(&input_topic, &records[sent..sent + 6_000]).await;
    sent += 6_000;
    let _ = read_all(&output_topic, sent);
    let tasks_a = started_tasks(&read_log(&log_a));
    let tasks_b = started_tasks(&read_log(&log_b));
    let a_lines = read_log(&log_a).lines().count();

    terminate(&first_b);
    let out = wait(first_b, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "b stops cleanly:\n{}",
        read_log(&log_b)
    );
    let second_b = spawn_static("uppercase", &args, "b", &log_b2);
    while sent < records.len() {
        let next = (sent + 3_000).min(records.len());
        produce(&input_topic, &records[sent..next]).await;
        sent = next;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = read_all(&output_topic, records.len());
    terminate(&second_b);
    let _ = wait(second_b, Duration::from_secs(60));
    terminate(&a);
    let _ = wait(a, Duration::from_secs(60));

    let after = task_moves_since(&log_a, a_lines);
    let b_then = tasks_b.clone();
    let b_now = started_tasks(&read_log(&log_b2));
    eprintln!(
        "a runs {tasks_a:?}; b ran {b_then:?}, restarted runs {b_now:?}; {} outputs",
        read.len()
    );
    assert!(
        after.is_empty(),
        "the member that stayed lost or gained tasks:\n{}",
        after.join("\n")
    );
    assert_eq!(b_now, b_then, "the restarted member runs the same tasks");
    assert_eq!(
        tasks_a.len() + tasks_b.len(),
        6,
        "every task runs somewhere"
    );
    check_uppercased(&records, &read);
}

/// One of two static members of `word_count` (state in changelogs) killed with SIGKILL and
/// started again at once: it gets its own tasks back (the survivor keeps its own), restores
/// their state and processes again without waiting for the session timeout (45 s). Prints
/// how long that took, from the restart to every task started.
#[tokio::test(flavor = "current_thread")]
async fn a_static_member_killed_and_restarted_at_once_runs_its_tasks_again_within_seconds() {
    let input_topic = topic("crash-in", 6).await;
    let output_topic = topic("crash-out", 6).await;
    let app = KafkaCluster::unique_topic("crash-app");
    let more = ["--window", "1s", "--commit-interval-ms", "200"];
    let args = one_worker_args(&input_topic, &output_topic, &app, &more);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pair = StaticPair::start("word_count", &args, &app);
    let lines = |from: usize| -> Vec<(String, String)> {
        (from..from + 500)
            .map(|i| {
                (
                    format!("k{}", i % 60),
                    format!("w{} w{} w{}", i % 7, i % 11, i % 13),
                )
            })
            .collect()
    };
    let mut sent = 0;
    pair.until_both_run(&input_topic, || {
        sent += 500;
        lines(sent - 500)
    })
    .await;
    let StaticPair {
        a,
        b: first_b,
        log_a,
        log_b,
        log_b2,
    } = pair;
    // Until every task runs somewhere (each partition has had records).
    let deadline = Instant::now() + Duration::from_secs(60);
    while started_tasks(&read_log(&log_a)).len() + started_tasks(&read_log(&log_b)).len() < 12 {
        assert!(Instant::now() < deadline, "not every task started");
        produce(&input_topic, &lines(sent)).await;
        sent += 500;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks_a = started_tasks(&read_log(&log_a));
    let tasks_b = started_tasks(&read_log(&log_b));
    let a_lines = read_log(&log_a).lines().count();
    assert_eq!(
        tasks_a.len() + tasks_b.len(),
        12,
        "every task (2 sub-topologies of 6 partitions) runs somewhere: {tasks_a:?} {tasks_b:?}"
    );

    kill9(&first_b);
    let _ = wait(first_b, Duration::from_secs(10));
    let restarted = Instant::now();
    let second_b = spawn_static("word_count", &args, "b", &log_b2);
    let deadline = restarted + Duration::from_secs(40);
    let resumed = loop {
        if started_tasks(&read_log(&log_b2)) == tasks_b {
            break restarted.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member did not run its tasks again within 40 s (less than the session \
             timeout):\n{}",
            read_log(&log_b2)
        );
        produce(&input_topic, &lines(sent)).await;
        sent += 500;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let restores: Vec<String> = read_log(&log_b2)
        .lines()
        .filter(|l| l.contains("task state restored"))
        .map(str::to_owned)
        .collect();
    terminate(&second_b);
    let _ = wait(second_b, Duration::from_secs(60));
    terminate(&a);
    let _ = wait(a, Duration::from_secs(60));
    eprintln!(
        "kill -9 of one of two word_count members and a restart: every task of it running again \
         {:.2} s after the restart ({} tasks; restores: {restores:#?})",
        resumed.as_secs_f64(),
        tasks_b.len()
    );
    // The counting sub-topology's tasks (1_*) have state: each restored once.
    let stateful = tasks_b.iter().filter(|t| t.starts_with("1_")).count();
    assert!(stateful > 0, "{tasks_b:?}");
    assert_eq!(
        restores.len(),
        stateful,
        "each task with state restored once"
    );
    let after = task_moves_since(&log_a, a_lines);
    assert!(after.is_empty(), "the survivor's tasks moved: {after:?}");
}

/// A stop stuck behind a worker that does not come back (here a `for_each` blocked for a
/// minute) ends after `shutdown.timeout.ms` with an error saying so, not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_longer_than_the_shutdown_timeout_ends_with_a_clear_error() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use flumen_runtime::format::Utf8;
    use flumen_runtime::{Error, Kafka, Pipeline, Runtime, RuntimeConfig};
    let input_topic = topic("stuck-in", 1).await;
    produce(&input_topic, &input(5, 1)).await;
    let blocked = Arc::new(AtomicBool::new(false));
    let flag = blocked.clone();
    let mut pipeline = Pipeline::new();
    pipeline
        .source(Kafka::topic(&input_topic).format(Utf8))
        .for_each(move |_, _| {
            flag.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_secs(60));
        });
    let config = RuntimeConfig::new(kafka().bootstrap(), KafkaCluster::unique_topic("stuck-app"))
        .workers(1)
        .pin_workers(false)
        .set("shutdown.timeout.ms", "1000");
    let runtime = Runtime::new(config, pipeline);
    let stop = runtime.shutdown_handle();
    let run = std::thread::spawn(move || runtime.run());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blocked.load(Ordering::Acquire) {
        assert!(
            Instant::now() < deadline,
            "the job never reached its for_each"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    stop.shutdown();
    let result = tokio::task::spawn_blocking(move || run.join().expect("run thread"))
        .await
        .expect("join");
    let took = asked.elapsed();
    let err = result.expect_err("the stop cannot finish");
    assert!(matches!(err, Error::ShutdownTimeout(_)), "{err:?}");
    assert!(err.to_string().contains("shutdown.timeout.ms"), "{err}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "gave up after {took:?}"
    );
}

/// A two-stream join (`examples/click_join.rs`, 2 workers, exactly-once) killed with SIGKILL
/// mid-stream, with records waiting for a partner in its buffers, and started again bounded:
/// the read_committed output holds every pair within the interval exactly once. The
/// buffers come back from their changelog as of the last committed transaction.
#[tokio::test(flavor = "current_thread")]
async fn exactly_once_join_killed_mid_stream_then_restarted_writes_every_pair_once() {
    join_killed_mid_stream(false).await;
}

/// The same with the join buffers on disk (`state.store = disk`, a 4 KiB cache): the restart
/// empties the files and restores them from the changelog.
#[tokio::test(flavor = "current_thread")]
async fn exactly_once_join_with_buffers_on_disk_killed_mid_stream_writes_every_pair_once() {
    join_killed_mid_stream(true).await;
}

async fn join_killed_mid_stream(on_disk: bool) {
    let clicks = topic("kj-clicks", 3).await;
    let views = topic("kj-views", 3).await;
    let output = topic("kj-out", 3).await;
    let app = KafkaCluster::unique_topic("kj-app");
    // Per key (6 of them), a click every 50 ms and a view every 70 ms of event time: the
    // pairs are those within 20 ms.
    let t0 = runtime_support::recent();
    let side = |name: &str, every: i64| -> Vec<(String, String, i64)> {
        (0..6_000)
            .map(|i| {
                let key = format!("k{}", i % 6);
                let ts = t0 + i64::from(i / 6) * every;
                (key, format!("\"{name}-{i}\""), ts)
            })
            .collect()
    };
    let (c, v) = (side("c", 50), side("v", 70));
    let mut expected: Vec<String> = Vec::new();
    for (ck, cv, ct) in &c {
        for (vk, vv, _) in v.iter().filter(|(_, _, vt)| (ct - vt).abs() <= 20) {
            if ck == vk {
                expected.push(format!("{}+{}", cv.trim_matches('"'), vv.trim_matches('"')));
            }
        }
    }
    expected.sort();
    assert!(expected.len() > 1_000, "{} pairs", expected.len());
    // Both inputs in event-time order, as they would arrive.
    let mut records: Vec<(&str, &(String, String, i64))> = c
        .iter()
        .map(|r| (clicks.as_str(), r))
        .chain(v.iter().map(|r| (views.as_str(), r)))
        .collect();
    records.sort_by_key(|(_, (_, _, ts))| *ts);

    let b = kafka().bootstrap();
    let mut args: Vec<&str> = vec![
        "-b",
        &b,
        "--clicks",
        &clicks,
        "--views",
        &views,
        "--output",
        &output,
        "--within",
        "20ms",
        "--application-id",
        &app,
        "--workers",
        "2",
        "--guarantee",
        "exactly_once",
        "--instance-id",
        "node-a",
        "-X",
        "pin.workers=false",
    ];
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state_dir_flag = format!("state.dir={}", state_dir.path().display());
    if on_disk {
        args.extend([
            "-X",
            "state.store=disk",
            "-X",
            &state_dir_flag,
            "-X",
            "state.cache.max.bytes=4096",
        ]);
    }
    let log = std::env::temp_dir().join(format!("{app}.log"));
    let child = Command::new(example("click_join"))
        .args(&args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start click_join");
    let producer = Producer::connect(
        ProducerConfig::from_properties([("bootstrap.servers", b.as_str())]).expect("config"),
    )
    .await
    .expect("producer");
    let mut child = Some(child);
    let mut committed_at_kill = 0;
    for (i, chunk) in records.chunks(500).enumerate() {
        for (topic, (key, value, ts)) in chunk {
            drop(
                producer
                    .send(
                        ProducerRecord::new(topic)
                            .key(key.as_bytes())
                            .value(value.as_bytes())
                            .timestamp(*ts),
                    )
                    .await
                    .expect("send"),
            );
        }
        producer.flush().await.expect("flush");
        if i == 6 {
            let deadline = Instant::now() + Duration::from_secs(60);
            while read_committed(&output, 0).is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "no committed pair within 60 s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if i == 12 {
            // Some of this chunk's pairs are sent, not committed.
            tokio::time::sleep(Duration::from_millis(30)).await;
            committed_at_kill = kill9_counting_committed(child.take().expect("running"), &output);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        committed_at_kill > 0 && committed_at_kill < expected.len(),
        "killed mid-stream ({committed_at_kill} of {} pairs visible)",
        expected.len()
    );
    args.push("--exit-at-end");
    let out = run_example("click_join", &args, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = read_committed(&output, expected.len())
        .into_iter()
        .map(|r| r.value)
        .collect();
    got.sort();
    eprintln!(
        "join kill -9 (on disk: {on_disk}): {} pairs, {committed_at_kill} committed at the kill",
        got.len()
    );
    if on_disk {
        let files = std::fs::read_dir(state_dir.path().join(&app))
            .expect("the application's state dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("join-"))
            .filter(|e| e.path().join("state.redb").exists())
            .count();
        assert!(files >= 3, "{files} join store files");
    }
    if got != expected {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for p in &got {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        let twice: Vec<&&str> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, _)| p)
            .collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|p| !counts.contains_key(p.as_str()))
            .collect();
        panic!(
            "{} pairs read, {} expected; {} twice (e.g. {:?}), {} missing (e.g. {:?})",
            got.len(),
            expected.len(),
            twice.len(),
            twice.iter().take(3).collect::<Vec<_>>(),
            missing.len(),
            missing.iter().take(3).collect::<Vec<_>>()
        );
    }
}
