//! `flumen consume --group` members print every record exactly once between them across
//! rebalances: each member commits what it printed when its partitions are revoked (the
//! listener's `commit_on_revoke`), so the next owner starts right after it. Two members start
//! together and a third joins while records are still arriving, with the default (eager)
//! assignor and with cooperative-sticky.

mod cli_support;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cli_support::{bootstrap, flumen_bin, flumen_with_input, new_topic};
use flumen_client::admin::{IsolationLevel, OffsetSpec};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_testcontainers::KafkaCluster;

const PARTITIONS: i32 = 6;
const RECORDS: usize = 60_000;
const TIMEOUT: Duration = Duration::from_secs(180);

/// One `flumen consume --group` process and the lines it has printed so far.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
}

impl Member {
    fn start(group: &str, topic: &str, client_id: &str, extra: &[&str]) -> Member {
        let b = bootstrap();
        let mut args = vec![
            "-b",
            &b,
            "consume",
            topic,
            "--group",
            group,
            "--from-beginning",
            "--format",
            "%v %p/%o\\n",
            "-X",
            "heartbeat.interval.ms=500",
        ];
        let client = format!("client.id={client_id}");
        args.extend(["-X", &client]);
        args.extend_from_slice(extra);
        let mut child = Command::new(flumen_bin())
            .args(&args)
            .env_remove("FLUMEN_BOOTSTRAP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flumen consume");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        Member {
            child,
            lines,
            reader,
        }
    }

    /// Ctrl-C, then the exit status, stderr and every line printed.
    fn stop(mut self) -> (Option<i32>, String, Vec<String>) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT {pid}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll flumen") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait for killed flumen");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        self.reader.join().expect("stdout reader");
        let lines = std::mem::take(&mut *self.lines.lock().expect("lines"));
        (status.code(), stderr, lines)
    }

    fn printed(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }
}

/// Produces records `from..to` (value `i`, key `k{i}`, so they spread over every partition).
fn produce(topic: &str, from: usize, to: usize) {
    let input: String = (from..to).map(|i| format!("k{i}:{i}\n")).collect();
    flumen_with_input(
        &["-b", &bootstrap(), "produce", topic, "--key-separator", ":"],
        input.as_bytes(),
        Duration::from_secs(120),
    )
    .ok();
}

/// How many distinct values the members have printed between them.
fn distinct(members: &[&Member]) -> usize {
    let mut seen = HashSet::new();
    for m in members {
        for line in m.lines.lock().expect("lines").iter() {
            seen.insert(line.split(' ').next().unwrap_or_default().to_owned());
        }
    }
    seen.len()
}

async fn admin() -> Admin {
    let b = bootstrap();
    let config = ClientConfig::from_properties([
        ("bootstrap.servers", b.as_str()),
        ("default.api.timeout.ms", "30000"),
    ])
    .expect("config");
    Admin::connect(config).await.expect("admin connects")
}

/// Waits until the group is stable with the member named `client_id` owning partitions.
async fn wait_for_assignment(admin: &Admin, group: &str, client_id: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let described = admin.describe_groups(&[group]).await.expect("describe");
        if let Some(Ok(g)) = described.get(group)
            && g.state == "Stable"
            && g.members
                .iter()
                .any(|m| m.client_id == client_id && !m.assignment.is_empty())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{client_id} got no partitions of {group}: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn members_print_every_record_once(extra: &[&str]) {
    let topic = new_topic("cli-rebalance", PARTITIONS as u32);
    let group = KafkaCluster::unique_topic("cli-rebalance-group");
    let admin = admin().await;
    produce(&topic, 0, RECORDS / 2);

    let a = Member::start(&group, &topic, "member-a", extra);
    let b = Member::start(&group, &topic, "member-b", extra);
    let started = Instant::now();
    while distinct(&[&a, &b]) == 0 {
        assert!(started.elapsed() < TIMEOUT, "nothing printed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The third member joins while records are still being read and written.
    let c = Member::start(&group, &topic, "member-c", extra);
    for chunk in 0..4 {
        let from = RECORDS / 2 + chunk * RECORDS / 12;
        produce(&topic, from, from + RECORDS / 12);
    }
    // Records written once the third member owns partitions (keys reach every partition), so
    // it prints some of them.
    wait_for_assignment(&admin, &group, "member-c").await;
    produce(&topic, RECORDS * 5 / 6, RECORDS);

    let members = [&a, &b, &c];
    while distinct(&members) < RECORDS {
        assert!(
            started.elapsed() < TIMEOUT,
            "only {} of {RECORDS} records printed",
            distinct(&members)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Time for a duplicate to show up, had anything been read twice.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!c.printed().is_empty(), "the third member printed nothing");

    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_member = Vec::new();
    for (name, m) in [("a", a), ("b", b), ("c", c)] {
        let (code, stderr, lines) = m.stop();
        assert_eq!(code, Some(0), "member {name}: {stderr}");
        per_member.push((name, lines.len()));
        for line in lines {
            *count
                .entry(line.split(' ').next().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    let duplicated: Vec<_> = count.iter().filter(|&(_, &n)| n > 1).take(10).collect();
    assert!(
        duplicated.is_empty(),
        "printed more than once (of {per_member:?}): {duplicated:?}"
    );
    let expected: HashSet<String> = (0..RECORDS).map(|i| i.to_string()).collect();
    let printed: HashSet<String> = count.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&printed).take(10).collect();
    assert!(missing.is_empty(), "never printed: {missing:?}");
    assert_eq!(printed.len(), RECORDS, "unexpected values printed");

    // What was printed is what is committed: every partition up to its end.
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(&topic, p))
        .collect();
    let specs: Vec<_> = partitions
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends = admin
        .list_offsets(&specs, IsolationLevel::ReadUncommitted)
        .await
        .expect("end offsets");
    let committed = admin
        .list_group_offsets(&group, Some(&partitions))
        .await
        .expect("committed offsets");
    for (tp, end) in ends {
        let end = end.expect("end offset").offset;
        let at = committed
            .get(&tp)
            .and_then(|r| r.as_ref().ok())
            .map(|o| o.offset);
        assert_eq!(at, Some(end), "{tp}: committed {at:?}, end {end}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn group_members_print_every_record_once_across_eager_rebalances() {
    members_print_every_record_once(&[]).await;
}

#[tokio::test(flavor = "current_thread")]
async fn group_members_print_every_record_once_across_cooperative_rebalances() {
    members_print_every_record_once(&["-X", "partition.assignment.strategy=cooperative-sticky"])
        .await;
}
