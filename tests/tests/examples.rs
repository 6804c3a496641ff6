//! The client's example programs run against the real broker: each takes `-b`, exits 0 and
//! prints what it should. A new file in `crates/flumen-client/examples/` fails
//! `every_client_example_is_run_here` until a test here runs it.

mod cli_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use cli_support::{bootstrap, example_bin, flumen_with_input, new_topic, wait_with_timeout};
use flumen_client::admin::{IsolationLevel, OffsetSpec};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_testcontainers::KafkaCluster;

/// The examples the tests below run.
const RUN_HERE: &[&str] = &["commit_on_revoke"];

#[test]
fn every_client_example_is_run_here() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/flumen-client/examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    found.sort();
    assert_eq!(
        found, RUN_HERE,
        "examples without a test in tests/tests/examples.rs"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn commit_on_revoke_example_prints_every_record_and_commits_them_when_it_leaves() {
    const RECORDS: usize = 300;
    let topic = new_topic("ex-commit-revoke", 3);
    let group = KafkaCluster::unique_topic("ex-commit-revoke-group");
    let input: String = (0..RECORDS).map(|i| format!("k{i}:v{i}\n")).collect();
    flumen_with_input(
        &[
            "-b",
            &bootstrap(),
            "produce",
            &topic,
            "--key-separator",
            ":",
        ],
        input.as_bytes(),
        Duration::from_secs(120),
    )
    .ok();

    let child = Command::new(example_bin("flumen-client", "commit_on_revoke"))
        .args(["-b", &bootstrap(), &topic, &group, "--max-records"])
        .arg(RECORDS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example");
    let out = wait_with_timeout(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("processed {RECORDS} record(s)")),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let mut values: Vec<usize> = stdout
        .lines()
        .map(|l| {
            let value = l.split(' ').nth(2).unwrap_or_else(|| panic!("line {l:?}"));
            value[1..].parse().unwrap_or_else(|_| panic!("line {l:?}"))
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..RECORDS).collect::<Vec<_>>());

    // Everything it printed is committed once it has left (its listener's offsets, committed
    // when `close` revokes the partitions, after any 5 s periodic commit).
    let admin = Admin::connect(
        ClientConfig::from_properties([("bootstrap.servers", bootstrap().as_str())])
            .expect("config"),
    )
    .await
    .expect("admin");
    let partitions: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new(&topic, p)).collect();
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
        let expected = (end > 0).then_some(end);
        assert_eq!(at, expected, "{tp}");
    }
}

#[test]
fn commit_on_revoke_example_refuses_a_missing_bootstrap_with_usage() {
    let out = Command::new(example_bin("flumen-client", "commit_on_revoke"))
        .args(["topic", "group"])
        .output()
        .expect("run the example");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("-b HOST:PORT"), "{stderr}");
}
