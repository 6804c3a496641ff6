//! What the runtime's broker tests share: the examples built on demand, the broker, topics,
//! reading a topic back with kcat, and running an example with a timeout.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flumen_client::admin::NewTopic;
use flumen_client::{Admin, ClientConfig};
use flumen_testcontainers::KafkaCluster;

/// The runtime's examples, built on first use into this test's target directory and profile.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target directory");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace)
            .args(["build", "--quiet", "-p", "flumen-runtime", "--examples"])
            .arg("--target-dir")
            .arg(target_dir);
        if release {
            build.arg("--release");
        }
        assert!(
            build.status().expect("cargo build").success(),
            "building the runtime's examples failed"
        );
        profile_dir.join("examples")
    });
    dir.join(name)
}

pub fn kafka() -> &'static KafkaCluster {
    KafkaCluster::shared()
}

pub async fn admin() -> Admin {
    Admin::connect(
        ClientConfig::from_properties([("bootstrap.servers", kafka().bootstrap())])
            .expect("config"),
    )
    .await
    .expect("admin")
}

pub async fn topic(prefix: &str, partitions: i32) -> String {
    let name = KafkaCluster::unique_topic(prefix);
    admin()
        .await
        .create_topic(
            NewTopic::new(&name)
                .partitions(partitions)
                .replication_factor(1),
        )
        .await
        .expect("create topic");
    name
}

/// One output record as kcat reads it.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub key: String,
    pub value: String,
    pub headers: String,
}

/// Reads the whole topic with kcat until it holds at least `at_least` records (or 60 s).
pub fn read_all(topic: &str, at_least: usize) -> Vec<Read> {
    read_with(topic, at_least, "read_uncommitted")
}

/// [`read_all`] as a `read_committed` reader (records of open or aborted transactions
/// left out).
pub fn read_committed(topic: &str, at_least: usize) -> Vec<Read> {
    read_with(topic, at_least, "read_committed")
}

fn read_with(topic: &str, at_least: usize, isolation: &str) -> Vec<Read> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let isolation = format!("isolation.level={isolation}");
    loop {
        let out = Command::new("kcat")
            .args(["-b", &kafka().bootstrap(), "-C", "-t", topic, "-e", "-q"])
            .args(["-X", &isolation])
            .args(["-f", "%p\t%k\t%s\t%h\n"])
            .output()
            .expect("run kcat");
        assert!(
            out.status.success(),
            "kcat: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let records: Vec<Read> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, '\t').collect();
                Read {
                    partition: f[0].parse().expect("partition"),
                    key: f[1].to_owned(),
                    value: f.get(2).copied().unwrap_or_default().to_owned(),
                    headers: f.get(3).copied().unwrap_or_default().to_owned(),
                }
            })
            .collect();
        if records.len() >= at_least || Instant::now() >= deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn run_example(name: &str, args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(example(name))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start example");
    wait(child, timeout)
}

pub fn wait(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "example still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to a child.
pub fn terminate(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
}

/// Sends SIGKILL to a child.
pub fn kill9(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 9) }, 0);
}

/// Kills a running job with SIGKILL, waits for it to end, and counts the results committed
/// on `output` at that moment.
pub fn kill9_counting_committed(child: Child, output: &str) -> usize {
    kill9(&child);
    let _ = wait(child, Duration::from_secs(10));
    read_committed(output, 0).len()
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// An event time an hour ago, on a whole minute: input timestamps start from it. Records years
/// old would be deleted by the broker's 7-day time retention when its first check runs, 30 s
/// after it starts.
pub fn recent() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    now - now.rem_euclid(60_000) - 3_600_000
}

/// Nearest rank: the smallest value with at least `q` of the values at or below it.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// What `visit_analytics` must report for one URL and window.
#[derive(Debug, Default)]
pub struct VisitStats {
    pub views: u64,
    pub users: std::collections::BTreeSet<String>,
    pub errors: u64,
    /// Sorted.
    pub latency: Vec<u64>,
    pub countries: std::collections::BTreeMap<String, u64>,
}

/// The statistics per `(url, window start)` of `visits` in windows of `window` ms, with the
/// countries of `profiles` (user -> country).
pub fn visit_stats(
    visits: &[flumen_runtime::testing::visits::Visit],
    profiles: &std::collections::BTreeMap<String, &str>,
    window: i64,
) -> std::collections::BTreeMap<(String, i64), VisitStats> {
    let mut expected: std::collections::BTreeMap<(String, i64), VisitStats> = Default::default();
    for v in visits {
        assert!(v.latency_ms < 2048, "percentiles are exact below 2048");
        let e = expected
            .entry((v.url.clone(), v.ts - v.ts.rem_euclid(window)))
            .or_default();
        e.views += 1;
        e.users.insert(v.user.clone());
        e.errors += u64::from(v.status >= 500);
        e.latency.push(u64::from(v.latency_ms));
        if let Some(c) = profiles.get(&v.user) {
            *e.countries.entry((*c).to_owned()).or_default() += 1;
        }
    }
    for e in expected.values_mut() {
        e.latency.sort_unstable();
    }
    expected
}

/// Per window start, the top 10 URLs of `expected` by views (then URL), as visit_analytics
/// writes them.
pub fn expected_top(
    expected: &std::collections::BTreeMap<(String, i64), VisitStats>,
) -> std::collections::BTreeMap<i64, Vec<(String, u64)>> {
    let mut by_window: std::collections::BTreeMap<i64, Vec<(String, u64)>> = Default::default();
    for ((url, ws), e) in expected {
        by_window
            .entry(*ws)
            .or_default()
            .push((url.clone(), e.views));
    }
    for want in by_window.values_mut() {
        want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        want.truncate(10);
    }
    by_window
}

/// A top list as visit_analytics writes it: `[{"url", "views"}, ...]`, nothing else.
pub fn parse_top(value: &str) -> Vec<(String, u64)> {
    serde_json::from_str::<Vec<serde_json::Value>>(value)
        .expect("JSON list")
        .iter()
        .map(|t| {
            assert_eq!(t.as_object().map(|o| o.len()), Some(2), "{t}");
            (
                t["url"].as_str().expect("url").to_owned(),
                t["views"].as_u64().expect("views"),
            )
        })
        .collect()
}

/// The alerts `expected` raises: error rate above 5 % with at least 20 views, as
/// `(url, window start, views, errors)`.
pub fn expected_alerts(
    expected: &std::collections::BTreeMap<(String, i64), VisitStats>,
) -> std::collections::BTreeSet<(String, i64, u64, u64)> {
    expected
        .iter()
        .filter(|(_, e)| e.views >= 20 && e.errors as f64 / e.views as f64 > 0.05)
        .map(|((url, ws), e)| (url.clone(), *ws, e.views, e.errors))
        .collect()
}

/// An alert as visit_analytics writes it, keyed by URL: `(url, window start, views, errors)`
/// once its six fields and its error rate are checked.
pub fn parse_alert(read: &Read) -> (String, i64, u64, u64) {
    let a: serde_json::Value = serde_json::from_str(&read.value).expect("JSON");
    let (views, errors) = (
        a["views"].as_u64().expect("views"),
        a["errors"].as_u64().expect("errors"),
    );
    assert_eq!(a["error_rate"].as_f64(), Some(errors as f64 / views as f64));
    assert_eq!(a.as_object().map(|o| o.len()), Some(6), "{a}");
    let url = a["url"].as_str().expect("url").to_owned();
    assert_eq!(read.key, url);
    (
        url,
        a["window_start"].as_i64().expect("start"),
        views,
        errors,
    )
}

/// Waits (up to 60 s) until `group` has committed offsets of at least `partitions`
/// partitions of the topics `of` accepts: a runtime job has committed them, with a
/// checkpoint of its state.
pub async fn wait_for_group_commit(group: &str, of: impl Fn(&str) -> bool, partitions: usize) {
    let admin = admin().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = admin
            .list_group_offsets(group, None)
            .await
            .map(|o| {
                o.iter()
                    .filter(|(tp, r)| of(&tp.topic) && r.is_ok())
                    .count()
            })
            .unwrap_or(0);
        if committed >= partitions {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} committed {committed} partitions in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
