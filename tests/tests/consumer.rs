//! The consumer against the real broker: resets, seek, pause/resume, commits, lag, groups
//! of Flumen members, mixed groups with Kafka's Java consumer, cooperative and static
//! membership, KIP-848, and read_committed over real transactions.
//!
//! Records are written with `kcat` (librdkafka) or Kafka's own Java producer, so the
//! consumer is checked against producers nobody on the project wrote.

mod consumer_support;

use std::collections::BTreeMap;
use std::time::Duration;

use flumen_client::TopicPartition;
use flumen_client::consumer::OffsetAndMetadata;
use flumen_testcontainers::KafkaCluster;

use consumer_support::*;

#[tokio::test(flavor = "current_thread")]
async fn assigned_partition_is_read_from_earliest_in_order_with_lag_reaching_zero() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-earliest", 1, 1).await;
    let sent = values("e", 500);
    produce(kafka, &topic, 0, &sent);
    let tp = TopicPartition::new(&topic, 0);
    let mut c = consumer(kafka, &[("auto.offset.reset", "earliest")]).await;
    c.assign([tp.clone()]).expect("assign");
    let seen = read_n(&mut c, 500, Duration::from_secs(30)).await;
    let got = &seen[&tp];
    assert_eq!(got.len(), 500, "nothing duplicated");
    for (i, (offset, value)) in got.iter().enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(value, &sent[i]);
    }
    assert_eq!(c.position(&tp).await.expect("position"), 500);
    assert_eq!(c.lag(&tp), Some(0));
}

#[tokio::test(flavor = "current_thread")]
async fn latest_reset_skips_old_records_and_reads_new_ones_with_lag_before_polling() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-latest", 1, 1).await;
    produce(kafka, &topic, 0, &values("old", 20));
    let tp = TopicPartition::new(&topic, 0);
    let mut c = consumer(kafka, &[("auto.offset.reset", "latest")]).await;
    c.assign([tp.clone()]).expect("assign");
    assert_eq!(c.position(&tp).await.expect("position"), 20);
    // Nothing new yet: polls come back empty.
    let mut seen = Seen::new();
    assert_eq!(
        drain_for(&mut c, Duration::from_millis(600), &mut seen).await,
        0
    );
    produce(kafka, &topic, 0, &values("new", 5));
    let seen = read_n(&mut c, 5, Duration::from_secs(30)).await;
    let got: Vec<&str> = seen[&tp].iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(got, ["new-0", "new-1", "new-2", "new-3", "new-4"]);
    assert_eq!(seen[&tp][0].0, 20);
}

#[tokio::test(flavor = "current_thread")]
async fn seek_rereads_from_the_given_offset_and_seek_to_end_skips_the_rest() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-seek", 1, 1).await;
    produce(kafka, &topic, 0, &values("s", 100));
    let tp = TopicPartition::new(&topic, 0);
    let mut c = consumer(kafka, &[("auto.offset.reset", "earliest")]).await;
    c.assign([tp.clone()]).expect("assign");
    read_n(&mut c, 100, Duration::from_secs(30)).await;
    c.seek(&tp, 42).expect("seek");
    let seen = read_n(&mut c, 58, Duration::from_secs(30)).await;
    assert_eq!(seen[&tp].first().map(|(o, _)| *o), Some(42));
    assert_eq!(seen[&tp].len(), 58);
    c.seek_to_beginning(std::slice::from_ref(&tp))
        .expect("seek to beginning");
    assert_eq!(c.position(&tp).await.expect("position"), 0);
    c.seek_to_end(std::slice::from_ref(&tp))
        .expect("seek to end");
    assert_eq!(c.position(&tp).await.expect("position"), 100);
    let mut seen = Seen::new();
    assert_eq!(
        drain_for(&mut c, Duration::from_millis(500), &mut seen).await,
        0
    );
}

#[tokio::test(flavor = "current_thread")]
async fn paused_partition_yields_nothing_until_resumed_and_then_everything() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-pause", 2, 1).await;
    produce(kafka, &topic, 0, &values("p0", 50));
    produce(kafka, &topic, 1, &values("p1", 50));
    let (tp0, tp1) = (
        TopicPartition::new(&topic, 0),
        TopicPartition::new(&topic, 1),
    );
    let mut c = consumer(kafka, &[("auto.offset.reset", "earliest")]).await;
    c.assign([tp0.clone(), tp1.clone()]).expect("assign");
    c.pause(std::slice::from_ref(&tp0));
    assert_eq!(c.paused(), vec![tp0.clone()]);
    let seen = read_n(&mut c, 50, Duration::from_secs(30)).await;
    assert!(
        !seen.contains_key(&tp0),
        "paused partition delivered: {seen:?}"
    );
    // Still nothing from the paused partition after a while.
    let mut more = Seen::new();
    drain_for(&mut c, Duration::from_millis(500), &mut more).await;
    assert!(!more.contains_key(&tp0));
    // Re-assigning keeps it paused (the pause survives assignment changes).
    c.assign([tp0.clone()]).expect("reassign");
    c.assign([tp0.clone(), tp1.clone()]).expect("reassign");
    assert_eq!(c.paused(), vec![tp0.clone()]);
    c.resume(std::slice::from_ref(&tp0));
    assert!(c.paused().is_empty());
    let seen = read_n(&mut c, 50, Duration::from_secs(30)).await;
    let got = &seen[&tp0];
    assert_eq!(got.len(), 50);
    assert_eq!(got[0], (0, "p0-0".to_owned()));
}

#[tokio::test(flavor = "current_thread")]
async fn sync_and_async_commits_are_read_back_with_the_leader_epoch() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-commit", 1, 1).await;
    produce(kafka, &topic, 0, &values("c", 30));
    let tp = TopicPartition::new(&topic, 0);
    let group = format!("{topic}-g");
    let mut c = consumer(
        kafka,
        &[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .await;
    c.assign([tp.clone()]).expect("assign");
    assert!(
        c.committed(std::slice::from_ref(&tp))
            .await
            .expect("committed")
            .is_empty()
    );
    read_n(&mut c, 30, Duration::from_secs(30)).await;
    c.commit_sync().await.expect("commit");
    let committed = c
        .committed(std::slice::from_ref(&tp))
        .await
        .expect("committed");
    assert_eq!(committed[&tp].offset, 30);
    assert_eq!(
        committed[&tp].leader_epoch,
        Some(0),
        "epoch of the last record"
    );

    let mut offsets = BTreeMap::new();
    offsets.insert(tp.clone(), OffsetAndMetadata::new(12));
    c.commit_offsets_async(offsets)
        .expect("start async commit")
        .await
        .expect("task")
        .expect("async commit");
    assert_eq!(
        c.committed(std::slice::from_ref(&tp))
            .await
            .expect("committed")[&tp]
            .offset,
        12
    );

    // A new consumer of the group starts at the committed offset.
    drop(c);
    let mut c = consumer(
        kafka,
        &[("group.id", &group), ("auto.offset.reset", "latest")],
    )
    .await;
    c.assign([tp.clone()]).expect("assign");
    assert_eq!(c.position(&tp).await.expect("position"), 12);
    let seen = read_n(&mut c, 18, Duration::from_secs(30)).await;
    assert_eq!(seen[&tp][0], (12, "c-12".to_owned()));
}

#[tokio::test(flavor = "current_thread")]
async fn lag_is_the_high_watermark_minus_the_position() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-lag", 1, 1).await;
    produce(kafka, &topic, 0, &values("l", 40));
    let tp = TopicPartition::new(&topic, 0);
    let mut c = consumer(kafka, &[("auto.offset.reset", "earliest")]).await;
    c.assign([tp.clone()]).expect("assign");
    read_n(&mut c, 40, Duration::from_secs(30)).await;
    c.seek(&tp, 10).expect("seek");
    assert_eq!(c.lag(&tp), Some(30));
    assert_eq!(c.lags()[&tp], 30);
}

#[tokio::test(flavor = "current_thread")]
async fn auto_offset_reset_none_is_an_error_naming_the_partition() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-none", 1, 1).await;
    let tp = TopicPartition::new(&topic, 0);
    let mut c = consumer(kafka, &[("auto.offset.reset", "none")]).await;
    c.assign([tp.clone()]).expect("assign");
    let err = c
        .poll(Duration::from_millis(500))
        .await
        .expect_err("no offset");
    assert!(err.to_string().contains(&tp.to_string()), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn stream_yields_record_batches() {
    use futures::StreamExt;
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-stream", 1, 1).await;
    produce(kafka, &topic, 0, &values("st", 10));
    let mut c = consumer(kafka, &[("auto.offset.reset", "earliest")]).await;
    c.assign([TopicPartition::new(&topic, 0)]).expect("assign");
    let mut total = 0;
    let mut stream = Box::pin(c.stream());
    while total < 10 {
        let mut batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("records within 30 s")
            .expect("stream does not end")
            .expect("no error");
        let owned: Vec<_> = batch
            .iter()
            .map(|r| r.expect("record").to_owned())
            .collect();
        for r in &owned {
            assert_eq!(
                r.value.as_deref(),
                Some(format!("st-{}", r.offset).as_bytes())
            );
        }
        total += owned.len();
    }
    assert_eq!(total, 10);
}

/// Offsets read per partition across members; panics on a record read twice.
fn record_once(
    all: &mut BTreeMap<TopicPartition, std::collections::BTreeSet<i64>>,
    who: &str,
    records: &[(TopicPartition, i64)],
) {
    for (tp, offset) in records {
        assert!(
            all.entry(tp.clone()).or_default().insert(*offset),
            "{tp}@{offset} consumed twice (second time by {who})"
        );
    }
}

fn complete(
    all: &BTreeMap<TopicPartition, std::collections::BTreeSet<i64>>,
    topic: &str,
    partitions: i32,
    per_partition: i64,
) -> bool {
    (0..partitions).all(|p| {
        all.get(&TopicPartition::new(topic, p)).is_some_and(|s| {
            s.len() as i64 == per_partition && s.last() == Some(&(per_partition - 1))
        })
    })
}

#[tokio::test(flavor = "current_thread")]
async fn two_members_split_partitions_read_each_record_once_and_lose_nothing_when_one_leaves() {
    let _log = log_group_events();
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-group", 4, 1).await;
    let group = format!("{topic}-g");
    let props = [
        ("group.id", group.as_str()),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("partition.assignment.strategy", "range"),
        ("heartbeat.interval.ms", "500"),
        ("session.timeout.ms", "10000"),
    ];
    let mut c1 = consumer(kafka, &props).await;
    c1.subscribe(&[&topic]).expect("subscribe");
    let mut c2 = consumer(kafka, &props).await;
    c2.subscribe(&[&topic]).expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop1_tx, stop1) = tokio::sync::watch::channel(false);
    let (stop2_tx, stop2) = tokio::sync::watch::channel(false);
    let h1 = spawn_member("flumen-1", c1, tx.clone(), stop1);
    let h2 = spawn_member("flumen-2", c2, tx.clone(), stop2);

    // Both members end up with two partitions each, disjoint.
    let mut latest: BTreeMap<&str, Vec<TopicPartition>> = BTreeMap::new();
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        latest.insert(r.member, r.assignment);
        latest.len() == 2 && latest.values().all(|a| a.len() == 2) && {
            let mut all: Vec<_> = latest.values().flatten().collect();
            all.sort();
            all.dedup();
            all.len() == 4
        }
    })
    .await;

    for p in 0..4 {
        produce(kafka, &topic, p, &values(&format!("g{p}"), 40));
    }
    let mut all = BTreeMap::new();
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        record_once(&mut all, r.member, &r.records);
        complete(&all, &topic, 4, 40)
    })
    .await;

    // Member 2 leaves; member 1 takes over everything and reads what comes next.
    stop2_tx.send(true).expect("stop");
    let c2 = h2.await.expect("member 2 task");
    c2.close().await.expect("close");
    while let Ok(r) = rx.try_recv() {
        record_once(&mut all, r.member, &r.records);
    }
    for p in 0..4 {
        produce(kafka, &topic, p, &values(&format!("h{p}"), 20));
    }
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        record_once(&mut all, r.member, &r.records);
        complete(&all, &topic, 4, 60)
    })
    .await;
    stop1_tx.send(true).expect("stop");
    let c1 = h1.await.expect("member 1 task");
    assert_eq!(c1.assignment().len(), 4);
    c1.close().await.expect("close");
}

#[tokio::test(flavor = "current_thread")]
async fn mixed_group_with_the_java_consumer_splits_partitions_and_loses_nothing_when_java_leaves() {
    let _log = log_group_events();
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-mixed", 4, 1).await;
    let group = format!("{topic}-g");
    let mut flumen = consumer(
        kafka,
        &[
            ("group.id", group.as_str()),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("partition.assignment.strategy", "range"),
            ("heartbeat.interval.ms", "500"),
            ("session.timeout.ms", "10000"),
        ],
    )
    .await;
    flumen.subscribe(&[&topic]).expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let handle = spawn_member("flumen", flumen, tx.clone(), stop);
    let java = JavaMember::start(kafka, &topic, &group, "range", tx.clone());

    let mut latest: BTreeMap<&str, Vec<TopicPartition>> = BTreeMap::new();
    until_reports(&mut rx, Duration::from_secs(90), |r| {
        latest.insert(r.member, r.assignment);
        latest.len() == 2 && latest.values().all(|a| a.len() == 2) && {
            let mut all: Vec<_> = latest.values().flatten().collect();
            all.sort();
            all.dedup();
            all.len() == 4
        }
    })
    .await;

    for p in 0..4 {
        produce(kafka, &topic, p, &values(&format!("m{p}"), 30));
    }
    let mut all = BTreeMap::new();
    let mut by_member: BTreeMap<&str, usize> = BTreeMap::new();
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        *by_member.entry(r.member).or_default() += r.records.len();
        record_once(&mut all, r.member, &r.records);
        complete(&all, &topic, 4, 30)
    })
    .await;
    assert_eq!(by_member.get("java"), Some(&60), "{by_member:?}");
    assert_eq!(by_member.get("flumen"), Some(&60), "{by_member:?}");

    // The Java member leaves: Flumen takes over its partitions from the committed offsets.
    tokio::task::spawn_blocking(move || java.stop())
        .await
        .expect("java stopped");
    for p in 0..4 {
        produce(kafka, &topic, p, &values(&format!("n{p}"), 10));
    }
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        record_once(&mut all, r.member, &r.records);
        complete(&all, &topic, 4, 40)
    })
    .await;
    stop_tx.send(true).expect("stop");
    let flumen = handle.await.expect("flumen task");
    assert_eq!(flumen.assignment().len(), 4);
    flumen.close().await.expect("close");
}

/// Records every listener call as `("revoked" | "assigned" | "lost", partitions)`.
type Calls = Vec<(&'static str, Vec<TopicPartition>)>;

#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Calls>>);

impl flumen_client::consumer::RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(("revoked", partitions.to_vec()));
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(("assigned", partitions.to_vec()));
    }
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().push(("lost", partitions.to_vec()));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn cooperative_rebalance_revokes_only_the_partitions_that_move() {
    let _log = log_group_events();
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-coop", 4, 1).await;
    let group = format!("{topic}-g");
    let props = [
        ("group.id", group.as_str()),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("heartbeat.interval.ms", "500"),
        ("session.timeout.ms", "10000"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Recorder::default();
    let mut c1 = consumer(kafka, &props).await;
    c1.set_rebalance_listener(recorder.clone());
    c1.subscribe(&[&topic]).expect("subscribe");
    let (stop1_tx, stop1) = tokio::sync::watch::channel(false);
    let h1 = spawn_member("flumen-1", c1, tx.clone(), stop1);
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        r.assignment.len() == 4
    })
    .await;
    for p in 0..4 {
        produce(kafka, &topic, p, &values("x", 10));
    }

    let mut c2 = consumer(kafka, &props).await;
    c2.subscribe(&[&topic]).expect("subscribe");
    let (stop2_tx, stop2) = tokio::sync::watch::channel(false);
    let h2 = spawn_member("flumen-2", c2, tx.clone(), stop2);
    let mut latest: BTreeMap<&str, Vec<TopicPartition>> = BTreeMap::new();
    let mut all = BTreeMap::new();
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        record_once(&mut all, r.member, &r.records);
        latest.insert(r.member, r.assignment);
        latest.len() == 2 && latest.values().all(|a| a.len() == 2)
    })
    .await;
    let calls = recorder.0.lock().unwrap().clone();
    let revoked: Vec<TopicPartition> = calls
        .iter()
        .filter(|(k, _)| *k == "revoked")
        .flat_map(|(_, v)| v.clone())
        .collect();
    let mut revoked_sorted = revoked.clone();
    revoked_sorted.sort();
    assert_eq!(
        revoked_sorted, latest["flumen-2"],
        "only moved partitions are revoked: {calls:?}"
    );
    assert!(
        latest["flumen-1"].iter().all(|tp| !revoked.contains(tp)),
        "kept partitions were never revoked: {calls:?}"
    );
    assert!(calls.iter().all(|(k, _)| *k != "lost"), "{calls:?}");
    stop1_tx.send(true).expect("stop");
    stop2_tx.send(true).expect("stop");
    h1.await.expect("task").close().await.expect("close");
    h2.await.expect("task").close().await.expect("close");
}

async fn static_member(
    kafka: &KafkaCluster,
    topic: &str,
    group: &str,
    instance: &str,
) -> flumen_client::Consumer {
    let mut c = consumer(
        kafka,
        &[
            ("group.id", group),
            ("group.instance.id", instance),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("partition.assignment.strategy", "range"),
            ("heartbeat.interval.ms", "500"),
            ("session.timeout.ms", "20000"),
        ],
    )
    .await;
    c.subscribe(&[topic]).expect("subscribe");
    c
}

#[tokio::test(flavor = "current_thread")]
async fn static_member_restarting_within_the_session_timeout_causes_no_rebalance() {
    let _log = log_group_events();
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-static", 4, 1).await;
    let group = format!("{topic}-g");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_a_tx, stop_a) = tokio::sync::watch::channel(false);
    let (stop_b_tx, stop_b) = tokio::sync::watch::channel(false);
    let ha = spawn_member(
        "a",
        static_member(kafka, &topic, &group, "a").await,
        tx.clone(),
        stop_a,
    );
    let hb = spawn_member(
        "b",
        static_member(kafka, &topic, &group, "b").await,
        tx.clone(),
        stop_b,
    );
    let mut latest: BTreeMap<&str, (Vec<TopicPartition>, i32)> = BTreeMap::new();
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        latest.insert(r.member, (r.assignment, r.generation));
        latest.len() == 2
            && latest.values().all(|(a, _)| a.len() == 2)
            && latest["a"].1 == latest["b"].1
    })
    .await;
    let (a_parts, generation) = latest["a"].clone();
    let b_parts = latest["b"].0.clone();

    // Member a stops (a static member does not leave) and comes back with the same id.
    stop_a_tx.send(true).expect("stop");
    ha.await.expect("task").close().await.expect("close");
    let (stop_a2_tx, stop_a2) = tokio::sync::watch::channel(false);
    let ha2 = spawn_member(
        "a2",
        static_member(kafka, &topic, &group, "a").await,
        tx.clone(),
        stop_a2,
    );
    until_reports(&mut rx, Duration::from_secs(60), |r| {
        if r.member == "b" {
            assert_eq!(r.assignment, b_parts, "b's assignment never changes");
            assert_eq!(r.generation, generation, "no new generation for b");
        }
        r.member == "a2" && !r.assignment.is_empty()
    })
    .await;
    until_reports(&mut rx, Duration::from_secs(10), |r| r.member == "a2").await;
    stop_a2_tx.send(true).expect("stop");
    stop_b_tx.send(true).expect("stop");
    let a2 = ha2.await.expect("task");
    assert_eq!(
        a2.assignment(),
        a_parts,
        "the restarted member gets its partitions back"
    );
    assert_eq!(
        a2.group_metadata().expect("group").generation_id,
        generation,
        "the generation is unchanged"
    );
    a2.close().await.expect("close");
    hb.await.expect("task").close().await.expect("close");
}

#[tokio::test(flavor = "current_thread")]
async fn kip848_member_joins_and_gets_every_partition() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-848", 3, 1).await;
    for p in 0..3 {
        produce(kafka, &topic, p, &values("k", 5));
    }
    let group = format!("{topic}-g");
    let mut c = consumer(
        kafka,
        &[
            ("group.id", group.as_str()),
            ("group.protocol", "consumer"),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .await;
    c.subscribe(&[&topic]).expect("subscribe");
    let seen = read_n(&mut c, 15, Duration::from_secs(60)).await;
    assert_eq!(seen.len(), 3);
    assert_eq!(c.assignment().len(), 3);
    assert!(
        c.group_metadata().expect("group").generation_id > 0,
        "member epoch"
    );
    c.commit_sync().await.expect("commit with the member epoch");
    let tp = TopicPartition::new(&topic, 0);
    assert_eq!(
        c.committed(std::slice::from_ref(&tp))
            .await
            .expect("committed")[&tp]
            .offset,
        5
    );
    c.close().await.expect("close");
}

/// Runs tests/java/JavaTxnProducer.java: committed "c1-*", aborted "a-*", committed "c2-*".
fn produce_transactions(kafka: &KafkaCluster, topic: &str) {
    let classpath = kafka.kafka_classpath().expect("Kafka classpath");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/JavaTxnProducer.java");
    let out = std::process::Command::new("java")
        .arg("-cp")
        .arg(classpath)
        .arg(source)
        .args([&kafka.bootstrap(), topic, &format!("{topic}-txn")])
        .output()
        .expect("run java");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DONE"),
        "transactional producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn read_committed_skips_aborted_transactions_and_read_uncommitted_sees_them() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-txn", 1, 1).await;
    let t = topic.clone();
    tokio::task::spawn_blocking(move || produce_transactions(KafkaCluster::shared(), &t))
        .await
        .expect("producer ran");
    let tp = TopicPartition::new(&topic, 0);
    let read = |isolation: &'static str, want: usize| {
        let tp = tp.clone();
        async move {
            let mut c = consumer(
                kafka,
                &[
                    ("auto.offset.reset", "earliest"),
                    ("isolation.level", isolation),
                ],
            )
            .await;
            c.assign([tp.clone()]).expect("assign");
            let mut seen = read_n(&mut c, want, Duration::from_secs(30)).await;
            // Nothing more arrives (control records never reach the application).
            drain_for(&mut c, Duration::from_millis(500), &mut seen).await;
            seen.remove(&tp).unwrap_or_default()
        }
    };
    let committed = read("read_committed", 10).await;
    let values: Vec<&str> = committed.iter().map(|(_, v)| v.as_str()).collect();
    let expected: Vec<String> = values_of(&["c1", "c2"]);
    assert_eq!(
        values,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let uncommitted = read("read_uncommitted", 15).await;
    let values: Vec<&str> = uncommitted.iter().map(|(_, v)| v.as_str()).collect();
    let expected: Vec<String> = values_of(&["c1", "a", "c2"]);
    assert_eq!(
        values,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // Offsets skip the commit/abort markers: 5 records, a marker, 5, a marker, 5, a marker.
    let offsets: Vec<i64> = uncommitted.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets[5], 6);
    assert_eq!(offsets[10], 12);
}

fn values_of(prefixes: &[&str]) -> Vec<String> {
    prefixes.iter().flat_map(|p| values(p, 5)).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn paused_partitions_stay_paused_across_rebalances_and_resume_works() {
    let _log = log_group_events();
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-pause-group", 2, 1).await;
    let group = format!("{topic}-g");
    let props = [
        ("group.id", group.as_str()),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("partition.assignment.strategy", "range"),
        ("heartbeat.interval.ms", "500"),
        ("session.timeout.ms", "10000"),
    ];
    let mut c1 = consumer(kafka, &props).await;
    c1.subscribe(&[&topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Seen::new();
    while c1.assignment().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never assigned");
        poll_into(&mut c1, &mut seen).await;
    }
    let both = c1.assignment();
    c1.pause(&both);

    // A second member comes and goes: c1 loses a partition, then gets it back (eager
    // rebalances revoke and re-add everything).
    let mut c2 = consumer(kafka, &props).await;
    c2.subscribe(&[&topic]).expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let h2 = spawn_member("flumen-2", c2, tx, stop);
    let mut c2_parts = 0;
    while !(c1.assignment().len() == 1 && c2_parts == 1) {
        assert!(tokio::time::Instant::now() < deadline, "never split");
        poll_into(&mut c1, &mut seen).await;
        while let Ok(r) = rx.try_recv() {
            c2_parts = r.assignment.len();
        }
    }
    stop_tx.send(true).expect("stop");
    h2.await.expect("task").close().await.expect("close");
    while c1.assignment().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got both back"
        );
        poll_into(&mut c1, &mut seen).await;
    }
    assert_eq!(c1.paused(), both, "both partitions are still paused");
    produce(kafka, &topic, 0, &values("q0", 10));
    produce(kafka, &topic, 1, &values("q1", 10));
    assert_eq!(
        drain_for(&mut c1, Duration::from_millis(800), &mut seen).await,
        0
    );
    c1.resume(&both);
    let seen = read_n(&mut c1, 20, Duration::from_secs(30)).await;
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 20);
    c1.close().await.expect("close");
}

/// `close()` sends LeaveGroup, so the member is gone at once instead of after the session
/// timeout (45 s by default here): the next member does not wait for a dead one.
#[tokio::test(flavor = "current_thread")]
async fn closing_a_member_leaves_the_group_without_waiting_for_the_session_timeout() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-leave", 2, 1).await;
    let group = format!("{topic}-g");
    let mut c = consumer(
        kafka,
        &[
            ("group.id", group.as_str()),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .await;
    c.subscribe(&[&topic]).expect("subscribe");
    let joined = tokio::time::Instant::now() + Duration::from_secs(60);
    while c.assignment().is_empty() {
        assert!(tokio::time::Instant::now() < joined, "never joined");
        c.poll(Duration::from_millis(200)).await.expect("poll");
    }
    let member_id = c.group_metadata().expect("in a group").member_id;
    assert!(!member_id.is_empty());
    c.close().await.expect("close");

    let admin = admin(kafka).await;
    let left = std::time::Instant::now();
    loop {
        let described = admin.describe_groups(&[&group]).await.expect("describe");
        let description = described[&group].as_ref().expect("group described");
        if description.members.iter().all(|m| m.member_id != member_id) {
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(15),
            "the closed member is still in the group: {description:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records each revocation and asks for fixed offsets: the committed offsets then show whether
/// the listener's offsets, not the positions, were committed.
#[derive(Clone)]
struct FixedCommitOnRevoke {
    revoked: std::sync::Arc<std::sync::Mutex<Vec<TopicPartition>>>,
    offsets: BTreeMap<TopicPartition, i64>,
}

impl flumen_client::consumer::RebalanceListener for FixedCommitOnRevoke {
    fn commit_on_revoke(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Option<flumen_client::consumer::CommitOnRevoke> {
        self.revoked
            .lock()
            .expect("revoked")
            .extend(partitions.iter().cloned());
        let offsets: BTreeMap<_, _> = partitions
            .iter()
            .filter_map(|tp| {
                let at = self.offsets.get(tp)?;
                Some((tp.clone(), OffsetAndMetadata::new(*at)))
            })
            .collect();
        // The consumer waits for the future, which may itself wait (here: one yield).
        Some(Box::pin(async move {
            tokio::task::yield_now().await;
            offsets
        }))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn commit_on_revoke_offsets_are_committed_when_an_eager_rebalance_revokes_everything() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-commit-revoke", 2, 1).await;
    produce(kafka, &topic, 0, &values("a", 10));
    produce(kafka, &topic, 1, &values("b", 10));
    let group = KafkaCluster::unique_topic("g-commit-revoke");
    let (p0, p1) = (
        TopicPartition::new(&topic, 0),
        TopicPartition::new(&topic, 1),
    );
    let props = [
        ("group.id", group.as_str()),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("partition.assignment.strategy", "range"),
        ("heartbeat.interval.ms", "300"),
    ];
    let revoked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut a = consumer(kafka, &props).await;
    a.set_rebalance_listener(FixedCommitOnRevoke {
        revoked: revoked.clone(),
        offsets: BTreeMap::from([(p0.clone(), 3), (p1.clone(), 7)]),
    });
    a.subscribe(&[topic.as_str()]).expect("subscribe");
    let mut seen = Seen::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while a.assignment().len() < 2 || seen.values().map(Vec::len).sum::<usize>() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "a: {seen:?}");
        poll_into(&mut a, &mut seen).await;
    }
    assert!(revoked.lock().expect("revoked").is_empty());

    // A second member joins: the eager rebalance revokes both of a's partitions first.
    let mut b = consumer(kafka, &props).await;
    b.subscribe(&[topic.as_str()]).expect("subscribe");
    let b_task = tokio::spawn(async move {
        let mut seen = Seen::new();
        while seen.is_empty() {
            poll_into(&mut b, &mut seen).await;
        }
        (b, seen)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !b_task.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "b read nothing");
        a.poll(Duration::from_millis(100)).await.expect("a polls");
    }
    let (b, b_seen) = b_task.await.expect("b");
    let mut got = revoked.lock().expect("revoked").clone();
    got.sort();
    assert_eq!(got, [p0.clone(), p1.clone()], "eager: everything revoked");

    let committed = admin(kafka)
        .await
        .list_group_offsets(&group, Some(&[p0.clone(), p1.clone()]))
        .await
        .expect("committed offsets");
    let offset = |tp: &TopicPartition| {
        committed
            .get(tp)
            .and_then(|r| r.as_ref().ok())
            .map(|o| o.offset)
    };
    assert_eq!(offset(&p0), Some(3), "{committed:?}");
    assert_eq!(offset(&p1), Some(7), "{committed:?}");
    // The new owner starts where the listener said.
    for (tp, records) in &b_seen {
        let start = if *tp == p0 { 3 } else { 7 };
        assert_eq!(records[0].0, start, "{tp}: {records:?}");
    }
    b.close().await.expect("close b");
    a.close().await.expect("close a");
}

/// As with the Java client, a group's leader rebalances when a subscribed topic appears
/// after the assignment or gains partitions: records written there are read, without a
/// member joining or leaving.
#[tokio::test(flavor = "current_thread")]
async fn a_group_reads_a_topic_created_after_it_joined_and_partitions_added_later() {
    let kafka = KafkaCluster::shared();
    let name = KafkaCluster::unique_topic("c-late");
    let mut c = consumer(
        kafka,
        &[
            ("group.id", &format!("{name}-g")),
            ("auto.offset.reset", "earliest"),
            ("metadata.max.age.ms", "1000"),
        ],
    )
    .await;
    c.subscribe(&[name.as_str()]).expect("subscribe");
    let mut seen = Seen::new();
    // Joined and assigned nothing: the topic does not exist yet.
    drain_for(&mut c, Duration::from_secs(1), &mut seen).await;
    assert!(c.assignment().is_empty(), "{:?}", c.assignment());
    admin(kafka)
        .await
        .create_topic(
            flumen_client::admin::NewTopic::new(&name)
                .partitions(1)
                .replication_factor(1),
        )
        .await
        .expect("create topic");
    produce(kafka, &name, 0, &values("a", 10));
    let got = read_n(&mut c, 10, Duration::from_secs(30)).await;
    assert_eq!(got[&TopicPartition::new(&name, 0)].len(), 10);

    let grown = admin(kafka)
        .await
        .create_partitions(&[(name.as_str(), 3)], false)
        .await
        .expect("create partitions");
    grown[&name].as_ref().expect("grown");
    produce(kafka, &name, 2, &values("c", 5));
    let got = read_n(&mut c, 5, Duration::from_secs(30)).await;
    assert_eq!(got[&TopicPartition::new(&name, 2)].len(), 5, "{got:?}");
    let mut assigned = c.assignment();
    assigned.sort();
    assert_eq!(
        assigned,
        (0..3)
            .map(|p| TopicPartition::new(&name, p))
            .collect::<Vec<_>>()
    );
    c.close().await.expect("close");
}
