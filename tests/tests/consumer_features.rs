//! Consumer features against the real broker: pattern subscriptions, `max.poll.interval.ms`
//! (KIP-62) and fetching from the closest replica (`client.rack`, KIP-392).
//!
//! Records are written with `kcat` (librdkafka). The follower-fetching tests use a 3-broker
//! cluster with one rack per broker, shared by this binary; they run one at a time because
//! one of them stops a broker.

mod consumer_support;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use flumen_client::consumer::{ConsumerError, RebalanceListener};
use flumen_client::{Admin, TopicPartition};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};
use tokio::time::Instant;

use consumer_support::*;

/// Listener calls as `("revoked" | "assigned" | "lost", partitions)`.
type Calls = Vec<(&'static str, Vec<TopicPartition>)>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Calls>>);

impl Recorder {
    fn calls(&self) -> Calls {
        self.0.lock().expect("recorder lock").clone()
    }

    fn push(&self, what: &'static str, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .expect("recorder lock")
            .push((what, partitions.to_vec()));
    }
}

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.push("revoked", partitions);
    }
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.push("assigned", partitions);
    }
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.push("lost", partitions);
    }
}

async fn create_topic(kafka: &KafkaCluster, name: &str, partitions: i32) {
    admin(kafka)
        .await
        .create_topic(flumen_client::admin::NewTopic::new(name).partitions(partitions))
        .await
        .expect("create topic");
}

#[tokio::test(flavor = "current_thread")]
async fn pattern_subscription_reads_only_matching_topics_and_a_new_match_from_its_start() {
    let kafka = KafkaCluster::shared();
    let base = KafkaCluster::unique_topic("pat");
    let (first, later, other) = (
        format!("{base}-in-a"),
        format!("{base}-in-b"),
        format!("{base}-out"),
    );
    // Contains a match but is not one: the pattern is anchored at both ends, as in Java.
    let decoy = format!("x{first}");
    create_topic(kafka, &first, 2).await;
    create_topic(kafka, &other, 1).await;
    create_topic(kafka, &decoy, 1).await;
    produce(kafka, &first, 0, &values("a0", 20));
    produce(kafka, &first, 1, &values("a1", 20));
    produce(kafka, &other, 0, &values("o", 20));
    produce(kafka, &decoy, 0, &values("d", 20));

    let group = format!("{base}-g");
    let mut c = consumer(
        kafka,
        &[
            ("group.id", group.as_str()),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("metadata.max.age.ms", "500"),
        ],
    )
    .await;
    // The names hold only [a-z0-9-], so they need no escaping in the regex.
    c.subscribe_pattern(&format!("{base}-in-.*"))
        .expect("subscribe");
    let seen = read_n(&mut c, 40, Duration::from_secs(30)).await;
    let tp = |t: &str, p| TopicPartition::new(t, p);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        [tp(&first, 0), tp(&first, 1)],
        "read a topic that does not match"
    );
    assert_eq!(c.assignment(), [tp(&first, 0), tp(&first, 1)]);

    // A matching topic created after the subscription, written before the consumer knows
    // of it: it is picked up with the next metadata refresh and read from its first record.
    create_topic(kafka, &later, 1).await;
    produce(kafka, &later, 0, &values("b", 15));
    produce(kafka, &other, 0, &values("o-more", 5));
    let created = Instant::now();
    let mut seen = Seen::new();
    let deadline = created + Duration::from_secs(30);
    while seen.get(&tp(&later, 0)).map_or(0, Vec::len) < 15 {
        assert!(
            Instant::now() < deadline,
            "the new topic was not read within 30 s: {seen:?}, assignment {:?}",
            c.assignment()
        );
        poll_into(&mut c, &mut seen).await;
    }
    let got = &seen[&tp(&later, 0)];
    assert_eq!(got.len(), 15, "read once: {got:?}");
    for (i, (offset, value)) in got.iter().enumerate() {
        assert_eq!(
            (*offset, value.as_str()),
            (i as i64, format!("b-{i}").as_str())
        );
    }
    assert!(
        !seen.contains_key(&tp(&other, 0)) && !seen.contains_key(&tp(&decoy, 0)),
        "read a topic that does not match: {seen:?}"
    );
    assert_eq!(
        c.assignment(),
        [tp(&first, 0), tp(&first, 1), tp(&later, 0)]
    );
    c.close().await.expect("close");
}

/// KIP-62, classic protocol: heartbeats run on their own, so a member that stops polling keeps
/// its partitions past the session timeout (6 s) until `max.poll.interval.ms` (10 s) has
/// passed; then it leaves the group at once (within 1 s, though heartbeats are 2 s apart), the
/// other member takes everything, a commit of the stale positions fails instead of overwriting
/// the new owner's progress, and the next poll rejoins.
#[tokio::test(flavor = "current_thread")]
async fn member_that_stops_polling_leaves_after_max_poll_interval_and_cannot_commit_stale_positions()
 {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-maxpoll", 4, 1).await;
    let group = format!("{topic}-g");
    let props = [
        ("group.id", group.as_str()),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("partition.assignment.strategy", "range"),
        ("heartbeat.interval.ms", "2000"),
        ("session.timeout.ms", "6000"),
        ("max.poll.interval.ms", "10000"),
    ];
    member_stops_polling(kafka, &topic, &props, Duration::from_secs(10)).await;
}

/// The same with the KIP-848 protocol (`group.protocol=consumer`; the broker's session timeout,
/// `group.consumer.session.timeout.ms`, is 45 s, and its heartbeat interval 5 s, longer than
/// the 4 s `max.poll.interval.ms`: the member still leaves within 1 s of it).
#[tokio::test(flavor = "current_thread")]
async fn kip848_member_that_stops_polling_leaves_after_max_poll_interval_and_cannot_commit_stale_positions()
 {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-maxpoll-848", 4, 1).await;
    let group = format!("{topic}-g");
    let props = [
        ("group.id", group.as_str()),
        ("group.protocol", "consumer"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("max.poll.interval.ms", "4000"),
    ];
    member_stops_polling(kafka, &topic, &props, Duration::from_secs(4)).await;
}

/// Two members of a group reading `topic` (4 partitions); one stops polling. `props` set
/// `max.poll.interval.ms` to `max_poll`.
async fn member_stops_polling(
    kafka: &KafkaCluster,
    topic: &str,
    props: &[(&str, &str)],
    max_poll: Duration,
) {
    let _log = log_group_events();
    let topic = topic.to_owned();
    let props = props.to_vec();
    let mut slow = consumer(kafka, &props).await;
    let lost = Recorder::default();
    slow.set_rebalance_listener(lost.clone());
    slow.subscribe(&[&topic]).expect("subscribe");
    let mut fast = consumer(kafka, &props).await;
    fast.subscribe(&[&topic]).expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let fast = spawn_member("fast", fast, tx, stop);

    // Both members hold two partitions.
    let mut fast_owns = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ignored = Seen::new();
    loop {
        poll_into(&mut slow, &mut ignored).await;
        while let Ok(r) = rx.try_recv() {
            fast_owns = r.assignment;
        }
        if slow.assignment().len() == 2 && fast_owns.len() == 2 {
            let mut all: Vec<_> = slow.assignment();
            all.extend(fast_owns.iter().cloned());
            all.sort();
            all.dedup();
            if all.len() == 4 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the group never split 2/2");
    }
    let slow_owns = slow.assignment();
    for p in 0..4 {
        produce(kafka, &topic, p, &values(&format!("x{p}"), 30));
    }
    // The slow member reads its partitions to the end and commits nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        poll_into(&mut slow, &mut ignored).await;
        let positions = slow.positions();
        if slow_owns
            .iter()
            .all(|tp| positions.get(tp).map(|o| o.offset) == Some(30))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow member stuck at {positions:?}"
        );
    }
    let stale = slow.positions();
    let generation = slow.group_metadata().expect("group").generation_id;
    assert!(generation >= 0);

    // It stops polling. It leaves the group when max.poll.interval.ms has passed: not before
    // (its heartbeats keep it in the group, past the session timeout for the classic
    // protocol), and not a heartbeat interval after (its heartbeat task wakes at the poll
    // deadline; for KIP-848, long before the broker's 45 s session timeout).
    let stopped = Instant::now();
    let deadline = stopped + max_poll + Duration::from_secs(10);
    while slow.group_metadata().expect("group").generation_id > 0 {
        assert!(
            Instant::now() < deadline,
            "the slow member did not leave on its own"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = stopped.elapsed();
    // Its last poll began up to one poll (200 ms) before `stopped`.
    assert!(
        left + Duration::from_millis(500) >= max_poll,
        "the slow member left after {left:?}, before max.poll.interval.ms"
    );
    assert!(
        left <= max_poll + Duration::from_secs(1),
        "the slow member left only after {left:?}, late after max.poll.interval.ms ({max_poll:?})"
    );
    // Then the fast member gets all four partitions.
    until_reports(&mut rx, Duration::from_secs(20), |r| {
        r.assignment.len() == 4
    })
    .await;

    // The fast member reads on past the slow member's positions and commits.
    for p in 0..4 {
        produce(kafka, &topic, p, &values(&format!("y{p}"), 20));
    }
    let mut last: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    until_reports(&mut rx, Duration::from_secs(30), |r| {
        for (tp, offset) in r.records {
            last.insert(tp, offset);
        }
        (0..4).all(|p| last.get(&TopicPartition::new(&topic, p)) == Some(&49))
    })
    .await;

    // The stale commit is refused in the client, and the new owner's offsets stay.
    let err = slow
        .commit_sync()
        .await
        .expect_err("a commit of stale positions after leaving must fail");
    assert!(
        matches!(err, ConsumerError::MemberLost(_)),
        "not MemberLost: {err:?}"
    );
    assert!(!err.is_retriable());
    assert!(
        err.to_string().contains("max.poll.interval.ms"),
        "the error does not say why: {err}"
    );
    let committed = slow.committed(&slow_owns).await.expect("committed");
    for tp in &slow_owns {
        assert_eq!(stale[tp].offset, 30);
        assert_eq!(
            committed.get(tp).map(|o| o.offset),
            Some(50),
            "{tp}: the fast member's progress was overwritten"
        );
    }
    assert!(
        lost.calls().iter().all(|(what, _)| *what != "lost"),
        "partitions reported lost before the next poll: {:?}",
        lost.calls()
    );

    // Polling again: the partitions are reported lost, the member rejoins, and it starts its
    // new partitions at the fast member's commits, not at its stale positions.
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Until its next poll it still shows its old partitions.
    assert_eq!(slow.assignment(), slow_owns);
    loop {
        poll_into(&mut slow, &mut seen).await;
        if slow.group_metadata().expect("group").generation_id > generation
            && slow.assignment().len() == 2
        {
            break;
        }
        while rx.try_recv().is_ok() {}
        assert!(
            Instant::now() < deadline,
            "the slow member did not rejoin: owns {:?}, listener calls {:?}, group {:?}",
            slow.assignment(),
            lost.calls(),
            slow.group_metadata()
        );
    }
    let owns = slow.assignment();
    for tp in &owns {
        assert_eq!(slow.position(tp).await.expect("position"), 50, "{tp}");
    }
    for p in 0..4 {
        produce(kafka, &topic, p, &values(&format!("z{p}"), 10));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !owns.iter().all(|tp| seen.get(tp).map_or(0, Vec::len) >= 10) {
        poll_into(&mut slow, &mut seen).await;
        while rx.try_recv().is_ok() {}
        assert!(
            Instant::now() < deadline,
            "the rejoined member did not read its partitions: {seen:?}"
        );
    }
    for tp in &owns {
        let offsets: Vec<i64> = seen[tp].iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (50..60).collect::<Vec<i64>>(), "{tp}");
    }
    let calls = lost.calls();
    let reported_lost: Vec<&Vec<TopicPartition>> = calls
        .iter()
        .filter(|(what, _)| *what == "lost")
        .map(|(_, tps)| tps)
        .collect();
    assert_eq!(reported_lost, [&slow_owns], "listener calls: {calls:?}");
    assert!(slow.group_metadata().expect("group").generation_id > generation);

    stop_tx.send(true).expect("stop");
    let fast = fast.await.expect("fast member task");
    fast.close().await.expect("close");
    slow.close().await.expect("close");
}

/// Waiting inside `poll` counts as polling (as in the Java client): a poll longer than
/// `max.poll.interval.ms` on an idle topic keeps the membership and the partitions.
#[tokio::test(flavor = "current_thread")]
async fn a_poll_waiting_longer_than_max_poll_interval_keeps_the_membership() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-longpoll", 1, 1).await;
    let group = format!("{topic}-g");
    let mut c = consumer(
        kafka,
        &[
            ("group.id", group.as_str()),
            ("auto.offset.reset", "earliest"),
            ("heartbeat.interval.ms", "300"),
            ("max.poll.interval.ms", "2000"),
        ],
    )
    .await;
    let calls = Recorder::default();
    c.set_rebalance_listener(calls.clone());
    c.subscribe(&[&topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.assignment().is_empty() {
        assert!(Instant::now() < deadline, "never joined");
        c.poll(Duration::from_millis(200)).await.expect("poll");
    }
    let before = c.group_metadata().expect("group");

    let started = Instant::now();
    let records = c.poll(Duration::from_secs(5)).await.expect("long poll");
    assert!(records.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(5));

    let after = c.group_metadata().expect("group");
    assert_eq!(
        (after.generation_id, &after.member_id),
        (before.generation_id, &before.member_id),
        "the member left or was replaced during a long poll"
    );
    assert_eq!(c.assignment(), [TopicPartition::new(&topic, 0)]);
    assert_eq!(
        calls.calls(),
        [("assigned", vec![TopicPartition::new(&topic, 0)])]
    );
    c.close().await.expect("close");
}

/// A fetch position past the log end is out of range: the consumer resets it as
/// `auto.offset.reset` says (`earliest`: everything again from offset 0) instead of leaving the
/// partition unfetched; with `none`, `poll` reports it until the application seeks.
#[tokio::test(flavor = "current_thread")]
async fn position_past_the_log_end_is_reset_by_auto_offset_reset() {
    let kafka = KafkaCluster::shared();
    let topic = topic(kafka, "c-oor", 1, 1).await;
    let tp = TopicPartition::new(&topic, 0);
    let sent = values("v", 30);
    produce(kafka, &topic, 0, &sent);

    let mut c = consumer(kafka, &[("auto.offset.reset", "earliest")]).await;
    c.assign([tp.clone()]).expect("assign");
    c.seek(&tp, 500).expect("seek past the end");
    let seen = read_n(&mut c, 30, Duration::from_secs(30)).await;
    assert_exactly_once(&seen[&tp], &sent);
    assert_eq!(c.positions().get(&tp).map(|o| o.offset), Some(30));

    let mut c = consumer(kafka, &[("auto.offset.reset", "none")]).await;
    c.assign([tp.clone()]).expect("assign");
    c.seek(&tp, 500).expect("seek past the end");
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match c.poll(Duration::from_millis(200)).await {
            Ok(records) => assert!(records.is_empty(), "records from past the log end"),
            Err(e) => break e,
        }
        assert!(Instant::now() < deadline, "out of range never reported");
    };
    assert!(
        matches!(&err, ConsumerError::NoOffset { tp: t } if *t == tp),
        "not NoOffset for {tp}: {err:?}"
    );
    c.seek(&tp, 10).expect("seek back");
    let seen = read_n(&mut c, 20, Duration::from_secs(30)).await;
    let offsets: Vec<i64> = seen[&tp].iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (10..30).collect::<Vec<i64>>());
}

/// The follower-fetching tests share the rack cluster and run one at a time: one of them
/// stops a broker (and starts it again before it lets go).
static RACK_CLUSTER_USE: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

/// A one-partition topic replicated on all three brokers, with its leader and a follower once
/// all three are in sync.
async fn replicated_topic(kafka: &KafkaCluster, prefix: &str) -> (String, i32, i32) {
    let topic = topic(kafka, prefix, 1, 3).await;
    let admin: Admin = admin(kafka).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = admin.describe_topic(&topic).await;
        if let Ok(d) = &d
            && let Some(p) = d.partitions.first()
            && p.isr.len() == 3
            && let Some(leader) = p.leader
            && let Some(&follower) = p.replicas.iter().find(|&&r| r != leader)
        {
            return (topic, leader, follower);
        }
        assert!(Instant::now() < deadline, "ISR never reached 3: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A consumer in `follower`'s rack, reading `tp` from its start; `extra` properties override.
async fn rack_consumer(
    kafka: &KafkaCluster,
    follower: i32,
    tp: &TopicPartition,
    extra: &[(&str, &str)],
) -> flumen_client::Consumer {
    let rack = ClusterSpec::rack_of(usize::try_from(follower).expect("broker id"));
    let mut props = vec![
        ("client.rack", rack.as_str()),
        ("auto.offset.reset", "earliest"),
        ("request.timeout.ms", "10000"),
        ("retry.backoff.max.ms", "500"),
    ];
    props.extend_from_slice(extra);
    let mut c = consumer(kafka, &props).await;
    c.assign([tp.clone()]).expect("assign");
    c
}

/// Reads `tp` until `want` records arrived in total, failing after `timeout`.
async fn read_until(
    c: &mut flumen_client::Consumer,
    seen: &mut Seen,
    tp: &TopicPartition,
    want: usize,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while seen.get(tp).map_or(0, Vec::len) < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} records within {timeout:?}",
            seen.get(tp).map_or(0, Vec::len)
        );
        poll_into(c, seen).await;
    }
}

/// Every offset from 0 once, in order, with the values written.
fn assert_exactly_once(got: &[(i64, String)], expected: &[String]) {
    assert_eq!(got.len(), expected.len(), "records repeated or missing");
    for (i, ((offset, value), want)) in got.iter().zip(expected).enumerate() {
        assert_eq!((*offset, value), (i as i64, want), "record {i}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn consumer_with_client_rack_fetches_from_the_follower_in_its_rack() {
    let _one_at_a_time = RACK_CLUSTER_USE.lock().await;
    let kafka = KafkaCluster::shared_three_with_racks();
    let (topic, leader, follower) = replicated_topic(kafka, "c-rack").await;
    let tp = TopicPartition::new(&topic, 0);
    let mut sent = values("r", 200);
    produce(kafka, &topic, 0, &sent);

    let mut c = rack_consumer(kafka, follower, &tp, &[]).await;
    let mut seen = Seen::new();
    read_until(&mut c, &mut seen, &tp, 200, Duration::from_secs(30)).await;
    assert_eq!(
        c.preferred_read_replica(&tp),
        Some(follower),
        "not fetching from the follower in the consumer's rack (leader {leader})"
    );

    // Later records come from the follower too, each once.
    let more = values("s", 100);
    produce(kafka, &topic, 0, &more);
    read_until(&mut c, &mut seen, &tp, 300, Duration::from_secs(30)).await;
    assert_eq!(c.preferred_read_replica(&tp), Some(follower));
    sent.extend(more);
    assert_exactly_once(&seen[&tp], &sent);
}

#[tokio::test(flavor = "current_thread")]
async fn consumer_falls_back_to_the_leader_when_its_rack_follower_stops() {
    let _one_at_a_time = RACK_CLUSTER_USE.lock().await;
    let kafka = KafkaCluster::shared_three_with_racks();
    let (topic, leader, follower) = replicated_topic(kafka, "c-rack-stop").await;
    let tp = TopicPartition::new(&topic, 0);
    let mut sent = values("before", 150);
    produce(kafka, &topic, 0, &sent);

    let mut c = rack_consumer(kafka, follower, &tp, &[]).await;
    let mut seen = Seen::new();
    read_until(&mut c, &mut seen, &tp, 150, Duration::from_secs(30)).await;
    assert_eq!(c.preferred_read_replica(&tp), Some(follower));

    let broker = usize::try_from(follower).expect("broker id");
    tokio::task::spawn_blocking(move || kafka.stop_broker(broker))
        .await
        .expect("stop task")
        .expect("stop the follower");
    let after = values("after", 100);
    {
        let (t, a) = (topic.clone(), after.clone());
        tokio::task::spawn_blocking(move || produce(kafka, &t, 0, &a))
            .await
            .expect("produce task");
    }
    read_until(&mut c, &mut seen, &tp, 250, Duration::from_secs(40)).await;
    assert_eq!(
        c.preferred_read_replica(&tp),
        None,
        "still not fetching from the leader ({leader})"
    );
    sent.extend(after);
    assert_exactly_once(&seen[&tp], &sent);
    drop(c);

    tokio::task::spawn_blocking(move || kafka.start_broker(broker))
        .await
        .expect("start task")
        .expect("start the follower again");
}

/// KIP-392 with the Java client's expiry: the replica the leader named serves the partition for
/// `metadata.max.age.ms` (3 s here), then the consumer asks the leader again, which names the
/// follower again. The leader is asked once per period, not sooner and not much later, the
/// follower serves the records in between, and every record is read once.
#[tokio::test(flavor = "current_thread")]
async fn preferred_read_replica_expires_after_metadata_max_age_and_the_leader_is_asked_again() {
    let _one_at_a_time = RACK_CLUSTER_USE.lock().await;
    let kafka = KafkaCluster::shared_three_with_racks();
    let (topic, leader, follower) = replicated_topic(kafka, "c-rack-expiry").await;
    let tp = TopicPartition::new(&topic, 0);
    let mut sent = values("e0", 100);
    produce(kafka, &topic, 0, &sent);

    let max_age = Duration::from_secs(3);
    let mut c = rack_consumer(kafka, follower, &tp, &[("metadata.max.age.ms", "3000")]).await;
    let mut seen = Seen::new();
    read_until(&mut c, &mut seen, &tp, 100, Duration::from_secs(30)).await;
    assert_eq!(c.preferred_read_replica(&tp), Some(follower));

    let fetches = |c: &flumen_client::Consumer, broker: i32| {
        c.fetch_requests().get(&broker).copied().unwrap_or(0)
    };
    // One entry per time the leader was seen asked again: (when, follower fetches by then).
    let mut asked_leader: Vec<(Instant, u64)> = Vec::new();
    let mut leader_fetches = fetches(&c, leader);
    // Whether the follower was seen serving the partition since the last leader fetch.
    let mut follower_named_again = true;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut producing: Option<tokio::task::JoinHandle<()>> = None;
    while asked_leader.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the leader was asked again only {} times within 40 s (fetches per broker {:?})",
            asked_leader.len(),
            c.fetch_requests()
        );
        poll_into(&mut c, &mut seen).await;
        if c.preferred_read_replica(&tp) == Some(follower) {
            follower_named_again = true;
        }
        let now_leader = fetches(&c, leader);
        if now_leader == leader_fetches {
            continue;
        }
        let now = Instant::now();
        // The leader answers a consumer in the follower's rack by naming the follower (which
        // has every offset up to the high watermark), so one request each time.
        assert_eq!(
            now_leader,
            leader_fetches + 1,
            "the leader served the partition instead of naming the follower"
        );
        leader_fetches = now_leader;
        assert!(
            follower_named_again,
            "the leader was asked twice without naming the follower in between"
        );
        follower_named_again = false;
        let follower_fetches = fetches(&c, follower);
        if let Some(&(before, follower_before)) = asked_leader.last() {
            let gap = now - before;
            // Each sighting is up to one poll (200 ms) late.
            assert!(
                gap + Duration::from_millis(500) >= max_age,
                "the leader was asked again after {gap:?}, before metadata.max.age.ms"
            );
            assert!(
                gap <= max_age + Duration::from_secs(3),
                "the leader was asked again only after {gap:?}"
            );
            assert!(
                follower_fetches > follower_before,
                "the follower served nothing between two leader fetches"
            );
        }
        asked_leader.push((now, follower_fetches));
        // More records in each period, written without blocking the consumer's runtime.
        if let Some(p) = producing.take() {
            p.await.expect("produce task");
        }
        let batch = values(&format!("e{}", asked_leader.len()), 50);
        sent.extend(batch.iter().cloned());
        let t = topic.clone();
        producing = Some(tokio::task::spawn_blocking(move || {
            produce(kafka, &t, 0, &batch)
        }));
    }
    if let Some(p) = producing.take() {
        p.await.expect("produce task");
    }
    read_until(&mut c, &mut seen, &tp, sent.len(), Duration::from_secs(30)).await;
    assert_exactly_once(&seen[&tp], &sent);
    assert_eq!(c.preferred_read_replica(&tp), Some(follower));
}

/// KIP-392: only the leader says whether an offset is out of range (a follower may lag). A
/// consumer served by a follower that seeks past the end of the log gets OFFSET_OUT_OF_RANGE
/// from the follower, asks the leader, and resets (`auto.offset.reset=latest`) only on the
/// leader's answer; then the leader names the follower again.
#[tokio::test(flavor = "current_thread")]
async fn follower_offset_out_of_range_goes_back_to_the_leader_before_any_reset() {
    let _one_at_a_time = RACK_CLUSTER_USE.lock().await;
    let kafka = KafkaCluster::shared_three_with_racks();
    let (topic, leader, follower) = replicated_topic(kafka, "c-rack-oor").await;
    let tp = TopicPartition::new(&topic, 0);
    let mut sent = values("in", 100);
    produce(kafka, &topic, 0, &sent);

    let mut c = rack_consumer(kafka, follower, &tp, &[("auto.offset.reset", "latest")]).await;
    // `latest` would skip the records written before the first lookup: start at 0.
    c.seek(&tp, 0).expect("seek");
    let mut seen = Seen::new();
    read_until(&mut c, &mut seen, &tp, 100, Duration::from_secs(30)).await;
    assert_eq!(c.preferred_read_replica(&tp), Some(follower));
    let fetches = |c: &flumen_client::Consumer, broker: i32| {
        c.fetch_requests().get(&broker).copied().unwrap_or(0)
    };
    let leader_before = fetches(&c, leader);

    c.seek(&tp, 1_000).expect("seek past the end");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.positions().get(&tp).map(|o| o.offset) != Some(100) {
        assert!(
            Instant::now() < deadline,
            "no reset to the log end: position {:?}, fetches per broker {:?}",
            c.positions().get(&tp),
            c.fetch_requests()
        );
        poll_into(&mut c, &mut seen).await;
    }
    assert!(
        fetches(&c, leader) > leader_before,
        "reset on the follower's word, without asking the leader (fetches per broker {:?})",
        c.fetch_requests()
    );

    // Reading goes on from the log end, from the follower again.
    let more = values("after", 20);
    {
        let (t, m) = (topic.clone(), more.clone());
        tokio::task::spawn_blocking(move || produce(kafka, &t, 0, &m))
            .await
            .expect("produce task");
    }
    read_until(&mut c, &mut seen, &tp, 120, Duration::from_secs(30)).await;
    sent.extend(more);
    assert_exactly_once(&seen[&tp], &sent);
    assert_eq!(c.preferred_read_replica(&tp), Some(follower));
}

/// The co-partitioned assignor places `co.partitioned.standby.replicas` standby copies of
/// each partition number: with three members in three processes and one copy asked for,
/// every number has exactly one standby, never on the member running it, two per member;
/// after one member leaves, each number's standby is on the other member. The standbys
/// travel in the subscription's and assignment's user data through a real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_partitioned_members_get_standby_copies_placed_by_the_leader() {
    let kafka = KafkaCluster::shared();
    let name = KafkaCluster::unique_topic("standby");
    create_topic(kafka, &name, 6).await;
    let group = format!("{name}-g");
    // Member -> (partitions it runs, standby numbers), as of its last poll.
    type View = (Vec<i32>, Vec<i32>);
    type Views = Arc<Mutex<BTreeMap<usize, View>>>;
    let views: Views = Arc::default();
    let mut members = Vec::new();
    for i in 0..3 {
        let process = format!("process-{i}");
        let mut c = consumer(
            kafka,
            &[
                ("group.id", group.as_str()),
                ("partition.assignment.strategy", "co-partitioned"),
                ("co.partitioned.standby.replicas", "1"),
                ("co.partitioned.process.id", process.as_str()),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "500"),
            ],
        )
        .await;
        c.subscribe(&[name.as_str()]).expect("subscribe");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (views, flag) = (views.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                c.poll(Duration::from_millis(100)).await.expect("poll");
                let runs = c.assignment().iter().map(|tp| tp.partition).collect();
                views
                    .lock()
                    .expect("views")
                    .insert(i, (runs, c.standby_partitions()));
            }
            c.close().await.expect("close");
        });
        members.push((stop, task));
    }
    // Views of `members` members that cover every partition once and every standby once,
    // each member running 6 / `members` partitions and keeping standbys of others' only. A
    // rebalance passes through views that mix generations, so this is waited for, for
    // 60 s, and must then hold for a second.
    let placement = |v: &BTreeMap<usize, View>, members: usize| -> bool {
        let live: Vec<&View> = (0..members).filter_map(|i| v.get(&i)).collect();
        let sorted = |f: fn(&View) -> &Vec<i32>| {
            let mut all: Vec<i32> = live.iter().flat_map(|m| f(m).iter().copied()).collect();
            all.sort_unstable();
            all
        };
        live.len() == members
            && sorted(|m| &m.0) == (0..6).collect::<Vec<_>>()
            && sorted(|m| &m.1) == (0..6).collect::<Vec<_>>()
            && live.iter().all(|(runs, standbys)| {
                runs.len() == 6 / members && standbys.iter().all(|n| !runs.contains(n))
            })
    };
    let settled = |members: usize| {
        let views = views.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut since: Option<Instant> = None;
            loop {
                let v = views.lock().expect("views").clone();
                if placement(&v, members) {
                    let t = *since.get_or_insert_with(Instant::now);
                    if t.elapsed() >= Duration::from_secs(1) {
                        return v;
                    }
                } else {
                    since = None;
                }
                assert!(
                    Instant::now() < deadline,
                    "no placement of one standby per partition over {members} members, \
                     none on the member running it: {v:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let v = settled(3).await;
    eprintln!("three members (runs, standbys): {v:?}");
    // The third member leaves: the two left keep each other's partitions.
    let (stop, task) = members.pop().expect("three members");
    stop.store(true, std::sync::atomic::Ordering::Release);
    task.await.expect("member 2 stops");
    views.lock().expect("views").remove(&2);
    let v = settled(2).await;
    let (a, b) = (&v[&0], &v[&1]);
    assert_eq!(a.1, b.0, "member 0 keeps member 1's partitions: {v:?}");
    assert_eq!(b.1, a.0, "member 1 keeps member 0's partitions: {v:?}");
    for (stop, task) in members {
        stop.store(true, std::sync::atomic::Ordering::Release);
        task.await.expect("member stops");
    }
}
