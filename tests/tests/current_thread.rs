//! The client runs on a tokio current-thread runtime without starting OS threads of its own
//! (the processing runtime gives each core its own client). Alone in its test binary so that
//! no other test's threads disturb the count.

use flumen_client::admin::{IsolationLevel, NewTopic, OffsetSpec};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_testcontainers::KafkaCluster;

/// This process's thread count, from `/proc/self/status`.
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: line")
}

#[test]
fn admin_and_metadata_calls_start_no_threads_on_a_current_thread_runtime() {
    let kafka = KafkaCluster::shared();
    let bootstrap = kafka.bootstrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    let before = threads();
    let during = runtime.block_on(async {
        let config = ClientConfig::from_properties([("bootstrap.servers", bootstrap.as_str())])
            .expect("config");
        let admin = Admin::connect(config).await.expect("connect");
        let topic = KafkaCluster::unique_topic("current-thread");
        admin
            .create_topic(NewTopic::new(&topic).partitions(2))
            .await
            .expect("create");
        // CreateTopics returns once the controller committed; wait for the broker's view.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !admin.describe_topic(&topic).await.is_ok_and(|d| {
            d.partitions.len() == 2 && d.partitions.iter().all(|p| p.leader.is_some())
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "{topic} never became visible"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let tp = TopicPartition::new(&topic, 1);
        let listed = admin
            .list_offsets(
                &[(tp.clone(), OffsetSpec::Latest)],
                IsolationLevel::ReadUncommitted,
            )
            .await
            .expect("list offsets");
        assert_eq!(listed[&tp].as_ref().expect("offset").offset, 0);
        admin.describe_cluster().await.expect("describe cluster");
        admin
            .list_group_offsets("current-thread-group", None)
            .await
            .expect("group offsets");
        admin.delete_topic(&topic).await.expect("delete");
        threads()
    });
    assert_eq!(
        during,
        before,
        "the client started {} OS thread(s)",
        during.saturating_sub(before)
    );
}
