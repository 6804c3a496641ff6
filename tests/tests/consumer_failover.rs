//! The consumer survives the loss of a partition leader in a 3-broker cluster: it follows
//! the new leader and continues from its position, skipping and repeating nothing.

mod consumer_support;

use std::time::Duration;

use flumen_client::TopicPartition;
use flumen_testcontainers::{ClusterSpec, KafkaCluster};
use tokio::time::Instant;

use consumer_support::*;

#[tokio::test(flavor = "current_thread")]
async fn killing_the_leader_mid_consumption_skips_and_repeats_nothing() {
    let kafka = KafkaCluster::start(ClusterSpec::three()).expect("3-broker cluster");
    let topic = topic(&kafka, "c-kill", 1, 3).await;
    let tp = TopicPartition::new(&topic, 0);
    let admin = admin(&kafka).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let d = admin.describe_topic(&topic).await;
        if let Ok(d) = &d
            && let Some(p) = d.partitions.first()
            && p.isr.len() == 3
            && let Some(leader) = p.leader
        {
            break leader;
        }
        assert!(Instant::now() < deadline, "ISR never reached 3: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    produce(&kafka, &topic, 0, &values("before", 300));

    let group = format!("{topic}-g");
    let mut c = consumer(
        &kafka,
        &[
            ("group.id", group.as_str()),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("max.partition.fetch.bytes", "2048"),
            ("request.timeout.ms", "5000"),
        ],
    )
    .await;
    c.assign([tp.clone()]).expect("assign");
    let mut seen = Seen::new();
    while seen.get(&tp).map_or(0, Vec::len) < 100 {
        poll_into(&mut c, &mut seen).await;
    }
    c.commit_sync().await.expect("commit before the kill");

    kafka
        .kill_broker(usize::try_from(leader).expect("small id"))
        .expect("kill the leader");
    let k = &kafka;
    let t = topic.clone();
    std::thread::scope(|s| {
        s.spawn(|| produce(k, &t, 0, &values("after", 100)));
    });
    let read = read_n_more(&mut c, &mut seen, &tp, 400, Duration::from_secs(90)).await;
    assert_eq!(read.len(), 400, "nothing repeated");
    for (i, (offset, value)) in read.iter().enumerate() {
        assert_eq!(*offset, i as i64, "nothing skipped");
        let expected = if i < 300 {
            format!("before-{i}")
        } else {
            format!("after-{}", i - 300)
        };
        assert_eq!(value, &expected);
    }
    c.commit_sync().await.expect("commit after the kill");
    assert_eq!(
        c.committed(std::slice::from_ref(&tp))
            .await
            .expect("committed")[&tp]
            .offset,
        400
    );
}

async fn read_n_more(
    c: &mut flumen_client::Consumer,
    seen: &mut Seen,
    tp: &TopicPartition,
    want: usize,
    timeout: Duration,
) -> Vec<(i64, String)> {
    let deadline = Instant::now() + timeout;
    while seen.get(tp).map_or(0, Vec::len) < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} after the kill",
            seen.get(tp).map_or(0, Vec::len)
        );
        poll_into(c, seen).await;
    }
    seen[tp].clone()
}
