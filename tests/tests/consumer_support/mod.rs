//! Helpers shared by the consumer tests: topics, producing with kcat, consumers, waiting.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use flumen_client::admin::NewTopic;
use flumen_client::consumer::{Consumer, ConsumerConfig};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_testcontainers::KafkaCluster;
use tokio::time::Instant;

pub async fn admin(kafka: &KafkaCluster) -> Admin {
    let config = ClientConfig::from_properties([
        ("bootstrap.servers", kafka.bootstrap().as_str()),
        ("default.api.timeout.ms", "30000"),
    ])
    .expect("config");
    Admin::connect(config).await.expect("admin connects")
}

/// Creates a fresh topic with `partitions` partitions and returns its name.
pub async fn topic(
    kafka: &KafkaCluster,
    prefix: &str,
    partitions: i32,
    replication: i16,
) -> String {
    let name = KafkaCluster::unique_topic(prefix);
    admin(kafka)
        .await
        .create_topic(
            NewTopic::new(&name)
                .partitions(partitions)
                .replication_factor(replication),
        )
        .await
        .expect("create topic");
    name
}

/// Writes `values` (one record each, no key) to `topic`/`partition` with kcat, acks=all.
pub fn produce(kafka: &KafkaCluster, topic: &str, partition: i32, values: &[String]) {
    let mut child = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &kafka.bootstrap(),
            "-t",
            topic,
            "-p",
            &partition.to_string(),
            "-X",
            "acks=all",
            "-X",
            "linger.ms=5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kcat (apt-get install -y kcat): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    for v in values {
        writeln!(stdin, "{v}").expect("write to kcat");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("kcat finishes");
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `prefix-0` .. `prefix-(n-1)`.
pub fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

pub fn config(kafka: &KafkaCluster, extra: &[(&str, &str)]) -> ConsumerConfig {
    let bootstrap = kafka.bootstrap();
    let mut props: Vec<(&str, &str)> = vec![
        ("bootstrap.servers", bootstrap.as_str()),
        ("fetch.max.wait.ms", "100"),
        ("default.api.timeout.ms", "30000"),
    ];
    props.extend_from_slice(extra);
    ConsumerConfig::from_properties(props).expect("consumer config")
}

pub async fn consumer(kafka: &KafkaCluster, extra: &[(&str, &str)]) -> Consumer {
    Consumer::connect(config(kafka, extra))
        .await
        .expect("consumer connects")
}

/// What was read: partition -> (offset, value) in arrival order.
pub type Seen = BTreeMap<TopicPartition, Vec<(i64, String)>>;

/// Polls until `want` records arrived in total (failing after `timeout`).
pub async fn read_n(consumer: &mut Consumer, want: usize, timeout: Duration) -> Seen {
    let mut seen = Seen::new();
    let deadline = Instant::now() + timeout;
    let mut total = 0;
    while total < want {
        assert!(
            Instant::now() < deadline,
            "only {total} of {want} records within {timeout:?}: {seen:?}"
        );
        total += poll_into(consumer, &mut seen).await;
    }
    seen
}

/// One poll (up to 200 ms); returns how many records it added to `seen`.
pub async fn poll_into(consumer: &mut Consumer, seen: &mut Seen) -> usize {
    let mut records = consumer
        .poll(Duration::from_millis(200))
        .await
        .expect("poll");
    let mut n = 0;
    for r in records.iter() {
        let r = r.expect("record decodes");
        let value = String::from_utf8(r.value().unwrap_or_default().to_vec()).expect("utf-8");
        seen.entry(TopicPartition::new(r.topic(), r.partition()))
            .or_default()
            .push((r.offset(), value));
        n += 1;
    }
    n
}

/// Polls `consumer` for `period`, collecting whatever comes.
pub async fn drain_for(consumer: &mut Consumer, period: Duration, seen: &mut Seen) -> usize {
    let end = Instant::now() + period;
    let mut n = 0;
    while Instant::now() < end {
        n += poll_into(consumer, seen).await;
    }
    n
}

/// What a member task reports after each poll.
#[derive(Debug)]
pub struct Report {
    pub member: &'static str,
    pub assignment: Vec<TopicPartition>,
    pub generation: i32,
    pub records: Vec<(TopicPartition, i64)>,
}

/// Runs `consumer` on its own task: poll, commit what was read, report; until `stop` is set.
/// Returns the consumer (for `close`) when stopped.
pub fn spawn_member(
    member: &'static str,
    mut consumer: Consumer,
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !*stop.borrow() {
            let mut records = consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("member poll");
            let mut got = Vec::new();
            for r in records.iter() {
                let r = r.expect("record");
                got.push((TopicPartition::new(r.topic(), r.partition()), r.offset()));
            }
            drop(records);
            if !got.is_empty() {
                consumer.commit_sync().await.expect("commit");
            }
            let generation = consumer.group_metadata().map_or(-1, |m| m.generation_id);
            let _ = tx.send(Report {
                member,
                assignment: consumer.assignment(),
                generation,
                records: got,
            });
        }
        consumer
    })
}

/// Waits for reports until `done` says so (failing after `timeout`), feeding each to `seen`.
/// On timeout the panic lists the last reports, so a failure says where the group stood.
pub async fn until_reports(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Report>,
    timeout: Duration,
    mut step: impl FnMut(Report) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    loop {
        let Ok(report) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            let last: Vec<String> = last.into_iter().collect();
            panic!(
                "condition not reached within {timeout:?}; last reports (member generation \
                 assignment):\n  {}",
                last.join("\n  ")
            );
        };
        let report = report.expect("members running");
        let summary = format!(
            "{} {} {:?}",
            report.member,
            report.generation,
            report
                .assignment
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        if last.back() != Some(&summary) {
            if last.len() == 12 {
                last.pop_front();
            }
            last.push_back(summary);
        }
        if step(report) {
            return;
        }
    }
}

/// Sends the client's group events (joins, syncs, heartbeat answers) to the test's captured
/// output for as long as the guard lives: shown only when the test fails. The group tests
/// run on a current-thread runtime, so every task of theirs logs through it.
pub fn log_group_events() -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "flumen_client::consumer=debug",
        ))
        .with_test_writer()
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_default(subscriber)
}

/// A Kafka Java consumer in the group (tests/java/JavaGroupMember.java), reporting through
/// the same channel as the Flumen members (`member: "java"`).
pub struct JavaMember {
    child: std::process::Child,
    stop_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl JavaMember {
    pub fn start(
        kafka: &KafkaCluster,
        topic: &str,
        group: &str,
        assignor: &str,
        tx: tokio::sync::mpsc::UnboundedSender<Report>,
    ) -> JavaMember {
        let classpath = kafka
            .kafka_classpath()
            .expect("the broker harness knows the Kafka classpath");
        let source =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/JavaGroupMember.java");
        let dir = tempfile::tempdir().expect("temp dir");
        let stop_file = dir.path().join("stop");
        let mut child = Command::new("java")
            .arg("-cp")
            .arg(classpath)
            .arg(&source)
            .args([&kafka.bootstrap(), topic, group])
            .arg(&stop_file)
            .arg(assignor)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let topic = topic.to_owned();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut assignment = Vec::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut records = Vec::new();
                if let Some(list) = line.strip_prefix("ASSIGNED ") {
                    assignment = list
                        .split(',')
                        .filter_map(|s| s.rsplit_once(':'))
                        .filter_map(|(t, p)| Some(TopicPartition::new(t, p.parse().ok()?)))
                        .collect();
                } else if line.starts_with("ASSIGNED") {
                    assignment.clear();
                } else if let Some(rest) = line.strip_prefix("RECORD ") {
                    let parts: Vec<&str> = rest.split(' ').collect();
                    if let [t, p, o] = parts[..]
                        && t == topic
                    {
                        records.push((
                            TopicPartition::new(t, p.parse().expect("partition")),
                            o.parse().expect("offset"),
                        ));
                    }
                } else if line == "CLOSED" {
                    assignment.clear();
                }
                let _ = tx.send(Report {
                    member: "java",
                    assignment: assignment.clone(),
                    generation: -1,
                    records,
                });
            }
        });
        JavaMember {
            child,
            stop_file,
            _dir: dir,
            reader: Some(reader),
        }
    }

    /// Asks the Java member to close (leaving the group) and waits for it to exit.
    pub fn stop(mut self) {
        std::fs::write(&self.stop_file, b"stop").expect("stop file");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "java member failed: {status}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "java member did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for JavaMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
