//! Every `Admin` call against the real broker: topics, partitions, configs, offsets,
//! records, groups and the cluster, including per-item errors that name their item.
//!
//! Records are written with `kcat` (librdkafka), a producer nobody on the project wrote.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flumen_client::admin::{
    AlterConfigOp, ConfigResource, ConfigSource, IsolationLevel, NewTopic, OffsetAndMetadata,
    OffsetSpec, TopicDescription,
};
use flumen_client::{Admin, ClientConfig, Error, TopicPartition};
use flumen_protocol::ErrorCode;
use flumen_testcontainers::KafkaCluster;

async fn admin() -> Admin {
    let kafka = KafkaCluster::shared();
    let config = ClientConfig::from_properties([
        ("bootstrap.servers", kafka.bootstrap().as_str()),
        ("client.id", "flumen-admin-test"),
        ("default.api.timeout.ms", "30000"),
    ])
    .expect("config");
    Admin::connect(config).await.expect("admin connects")
}

/// Writes `values` to partition 0 of `topic` with kcat and waits for the acks.
fn produce(topic: &str, values: &[&str]) {
    let kafka = KafkaCluster::shared();
    let mut child = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &kafka.bootstrap(),
            "-t",
            topic,
            "-p",
            "0",
            "-X",
            "acks=all",
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

/// Waits until every broker-side view shows `topic` with `partitions` partitions, each with
/// a leader: CreateTopics and CreatePartitions return once the controller has committed the
/// change, slightly before the broker serving metadata has applied it.
async fn wait_for_partitions(admin: &Admin, topic: &str, partitions: usize) -> TopicDescription {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = admin.describe_topic(topic).await;
        if let Ok(d) = &described
            && d.partitions.len() == partitions
            && d.partitions.iter().all(|p| p.leader.is_some())
        {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never showed {partitions} partitions with leaders: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

#[tokio::test(flavor = "current_thread")]
async fn topics_are_created_described_grown_listed_and_deleted() {
    let admin = admin().await;
    let topic = KafkaCluster::unique_topic("admin-topic");
    let created = admin
        .create_topic(
            NewTopic::new(&topic)
                .partitions(3)
                .replication_factor(1)
                .config("retention.ms", "3600000"),
        )
        .await
        .expect("create");
    assert_eq!(created.num_partitions, 3);
    assert_eq!(created.replication_factor, 1);
    assert!(!created.topic_id.is_nil());

    let described = wait_for_partitions(&admin, &topic, 3).await;
    assert_eq!(described.name, topic);
    assert_eq!(described.topic_id, created.topic_id);
    assert_eq!(
        described
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for p in &described.partitions {
        assert_eq!(p.leader, Some(0));
        assert_eq!(p.replicas, vec![0]);
        assert_eq!(p.isr, vec![0]);
    }

    let grown = admin
        .create_partitions(&[(&topic, 5)], false)
        .await
        .expect("create partitions");
    grown[&topic].as_ref().expect("grow to 5");
    wait_for_partitions(&admin, &topic, 5).await;
    // Shrinking is refused, for that topic.
    let shrink = admin
        .create_partitions(&[(&topic, 2)], false)
        .await
        .expect("request answered");
    let err = shrink[&topic].as_ref().expect_err("cannot shrink");
    assert_eq!(err.code(), Some(ErrorCode::InvalidPartitions), "{err}");
    assert!(err.to_string().contains(&topic), "{err}");

    assert!(
        admin
            .list_topics(false)
            .await
            .expect("list")
            .contains(&topic)
    );

    admin.delete_topic(&topic).await.expect("delete");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.describe_topic(&topic).await {
            Err(Error::UnknownTopic(name)) => {
                assert_eq!(name, topic);
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "topic still there after delete: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn validate_only_creates_nothing_and_existing_topics_fail_alone() {
    let admin = admin().await;
    let validated = KafkaCluster::unique_topic("admin-validate");
    let results = admin
        .create_topics(&[NewTopic::new(&validated).partitions(2)], true)
        .await
        .expect("validate");
    results[&validated].as_ref().expect("valid request");
    assert!(matches!(
        admin.describe_topic(&validated).await,
        Err(Error::UnknownTopic(_))
    ));

    let existing = KafkaCluster::unique_topic("admin-existing");
    admin
        .create_topic(NewTopic::new(&existing))
        .await
        .expect("create");
    let fresh = KafkaCluster::unique_topic("admin-fresh");
    let results = admin
        .create_topics(&[NewTopic::new(&existing), NewTopic::new(&fresh)], false)
        .await
        .expect("batch answered");
    let err = results[&existing].as_ref().expect_err("already exists");
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists));
    assert!(err.to_string().contains(&existing), "{err}");
    results[&fresh]
        .as_ref()
        .expect("the other topic is created");

    let bad = admin
        .create_topics(
            &[NewTopic::new(KafkaCluster::unique_topic("admin-rf")).replication_factor(3)],
            false,
        )
        .await
        .expect("answered");
    let err = bad
        .values()
        .next()
        .expect("one result")
        .as_ref()
        .expect_err("RF 3 on one broker");
    assert_eq!(
        err.code(),
        Some(ErrorCode::InvalidReplicationFactor),
        "{err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_topics_are_named_in_every_error() {
    let admin = admin().await;
    let missing = KafkaCluster::unique_topic("admin-missing");
    match admin.describe_topic(&missing).await {
        Err(Error::UnknownTopic(t)) => assert_eq!(t, missing),
        other => panic!("{other:?}"),
    }
    let err = admin
        .delete_topic(&missing)
        .await
        .expect_err("nothing to delete");
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopicOrPartition));
    assert!(err.to_string().contains(&missing), "{err}");

    let tp = TopicPartition::new(&missing, 0);
    let listed = admin
        .list_offsets(
            &[(tp.clone(), OffsetSpec::Latest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .expect("answered");
    match &listed[&tp] {
        Err(Error::UnknownTopic(t)) => assert_eq!(t, &missing),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn describe_cluster_lists_the_broker() {
    let kafka = KafkaCluster::shared();
    let admin = admin().await;
    let cluster = admin.describe_cluster().await.expect("describe cluster");
    assert!(!cluster.cluster_id.is_empty());
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].addr(), kafka.broker_address(0));
    assert_eq!(cluster.controller_id, Some(0));
}

#[tokio::test(flavor = "current_thread")]
async fn topic_configs_are_described_altered_and_reset() {
    let admin = admin().await;
    let topic = KafkaCluster::unique_topic("admin-configs");
    admin
        .create_topic(NewTopic::new(&topic))
        .await
        .expect("create");
    wait_for_partitions(&admin, &topic, 1).await;
    let resource = ConfigResource::Topic(topic.clone());

    let retention = |entries: &[flumen_client::admin::ConfigEntry]| {
        entries
            .iter()
            .find(|e| e.name == "retention.ms")
            .cloned()
            .expect("retention.ms listed")
    };
    let described = admin
        .describe_configs(std::slice::from_ref(&resource))
        .await
        .expect("describe");
    let before = retention(described[&resource].as_ref().expect("topic configs"));
    assert_eq!(before.source, ConfigSource::Default);

    let validated = admin
        .incremental_alter_configs(
            &[(
                resource.clone(),
                vec![AlterConfigOp::Set("retention.ms".into(), "123456".into())],
            )],
            true,
        )
        .await
        .expect("validate");
    validated[&resource].as_ref().expect("valid");
    let unchanged = admin
        .describe_configs(std::slice::from_ref(&resource))
        .await
        .expect("describe");
    assert_eq!(
        retention(unchanged[&resource].as_ref().expect("configs")).value,
        before.value
    );

    let altered = admin
        .incremental_alter_configs(
            &[(
                resource.clone(),
                vec![AlterConfigOp::Set("retention.ms".into(), "123456".into())],
            )],
            false,
        )
        .await
        .expect("alter");
    altered[&resource].as_ref().expect("altered");
    let after = admin
        .describe_configs(std::slice::from_ref(&resource))
        .await
        .expect("describe");
    let entry = retention(after[&resource].as_ref().expect("configs"));
    assert_eq!(entry.value.as_deref(), Some("123456"));
    assert_eq!(entry.source, ConfigSource::DynamicTopic);

    admin
        .incremental_alter_configs(
            &[(
                resource.clone(),
                vec![AlterConfigOp::Delete("retention.ms".into())],
            )],
            false,
        )
        .await
        .expect("reset")[&resource]
        .as_ref()
        .expect("reset ok");
    let reset = admin
        .describe_configs(std::slice::from_ref(&resource))
        .await
        .expect("describe");
    assert_eq!(
        retention(reset[&resource].as_ref().expect("configs")).source,
        ConfigSource::Default
    );

    // A bad value fails for that resource, with the broker's reason.
    let bad = admin
        .incremental_alter_configs(
            &[(
                resource.clone(),
                vec![AlterConfigOp::Set("retention.ms".into(), "soon".into())],
            )],
            false,
        )
        .await
        .expect("answered");
    let err = bad[&resource].as_ref().expect_err("invalid value");
    assert_eq!(err.code(), Some(ErrorCode::InvalidConfig), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn broker_configs_come_from_the_broker_itself() {
    let admin = admin().await;
    let broker = ConfigResource::Broker(0);
    let described = admin
        .describe_configs(std::slice::from_ref(&broker))
        .await
        .expect("describe");
    let entries = described[&broker].as_ref().expect("broker configs");
    let partitions = entries
        .iter()
        .find(|e| e.name == "num.partitions")
        .expect("num.partitions");
    assert_eq!(partitions.value.as_deref(), Some("1"));
    assert_eq!(partitions.source, ConfigSource::StaticBroker);
    let missing = ConfigResource::Topic(KafkaCluster::unique_topic("admin-no-configs"));
    let described = admin
        .describe_configs(std::slice::from_ref(&missing))
        .await
        .expect("answered");
    let err = described[&missing].as_ref().expect_err("no such topic");
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn offsets_are_listed_by_spec_and_records_deleted() {
    let admin = admin().await;
    let topic = KafkaCluster::unique_topic("admin-offsets");
    admin
        .create_topic(NewTopic::new(&topic).partitions(1))
        .await
        .expect("create");
    wait_for_partitions(&admin, &topic, 1).await;
    let before_produce = now_ms() - 1;
    produce(&topic, &["a", "b", "c", "d"]);
    let tp = TopicPartition::new(&topic, 0);

    let specs = [
        (OffsetSpec::Earliest, 0),
        (OffsetSpec::Latest, 4),
        (OffsetSpec::Timestamp(before_produce), 0),
        (OffsetSpec::Timestamp(now_ms() + 3_600_000), -1),
    ];
    for (spec, expected) in specs {
        let listed = admin
            .list_offsets(&[(tp.clone(), spec)], IsolationLevel::ReadUncommitted)
            .await
            .expect("list offsets");
        assert_eq!(
            listed[&tp].as_ref().expect("offset").offset,
            expected,
            "{spec:?}"
        );
    }
    let max = admin
        .list_offsets(
            &[(tp.clone(), OffsetSpec::MaxTimestamp)],
            IsolationLevel::ReadCommitted,
        )
        .await
        .expect("max timestamp");
    let max = max[&tp].as_ref().expect("offset");
    assert!(
        (0..4).contains(&max.offset) && max.timestamp >= before_produce,
        "{max:?}"
    );

    let deleted = admin
        .delete_records(&[(tp.clone(), 2)])
        .await
        .expect("delete records");
    assert_eq!(*deleted[&tp].as_ref().expect("low watermark"), 2);
    let earliest = admin
        .list_offsets(
            &[(tp.clone(), OffsetSpec::Earliest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .expect("earliest");
    assert_eq!(earliest[&tp].as_ref().expect("offset").offset, 2);

    // A partition that does not exist fails alone.
    let bad = TopicPartition::new(&topic, 7);
    let started = Instant::now();
    let results = admin
        .delete_records(&[(tp.clone(), -1), (bad.clone(), 0)])
        .await
        .expect("answered");
    assert_eq!(*results[&tp].as_ref().expect("to the high watermark"), 4);
    let err = results[&bad].as_ref().expect_err("no partition 7");
    assert!(
        matches!(
            err,
            Error::UnknownPartition {
                partition: 7,
                partitions: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("{topic}-7")), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a missing partition must not be retried until the deadline ({:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn group_offsets_are_altered_listed_deleted_and_the_group_removed() {
    let admin = admin().await;
    let topic = KafkaCluster::unique_topic("admin-group-topic");
    admin
        .create_topic(NewTopic::new(&topic).partitions(2))
        .await
        .expect("create");
    wait_for_partitions(&admin, &topic, 2).await;
    produce(&topic, &["x", "y", "z"]);
    let group = KafkaCluster::unique_topic("admin-group");
    let (p0, p1) = (
        TopicPartition::new(&topic, 0),
        TopicPartition::new(&topic, 1),
    );

    let mut with_metadata = OffsetAndMetadata::new(2);
    with_metadata.metadata = "set by test".into();
    let altered = admin
        .alter_group_offsets(
            &group,
            &[
                (p0.clone(), with_metadata.clone()),
                (p1.clone(), OffsetAndMetadata::new(0)),
            ],
        )
        .await
        .expect("alter group offsets");
    altered[&p0].as_ref().expect("p0 committed");
    altered[&p1].as_ref().expect("p1 committed");

    let listed = admin
        .list_group_offsets(&group, None)
        .await
        .expect("list group offsets");
    let got = listed[&p0].as_ref().expect("p0 offset");
    assert_eq!((got.offset, got.metadata.as_str()), (2, "set by test"));
    assert_eq!(listed[&p1].as_ref().expect("p1 offset").offset, 0);
    let only = admin
        .list_group_offsets(&group, Some(std::slice::from_ref(&p1)))
        .await
        .expect("list one partition");
    assert_eq!(only.len(), 1);

    let groups = admin.list_groups().await.expect("list groups");
    let listing = groups
        .iter()
        .find(|g| g.group_id == group)
        .expect("group listed");
    assert_eq!(listing.state.as_deref(), Some("Empty"));

    let described = admin
        .describe_groups(&[&group])
        .await
        .expect("describe groups");
    let description = described[&group].as_ref().expect("description");
    assert_eq!(description.state, "Empty");
    assert!(description.members.is_empty());
    assert_eq!(description.coordinator.id, 0);

    let deleted = admin
        .delete_group_offsets(&group, std::slice::from_ref(&p1))
        .await
        .expect("delete offsets");
    deleted[&p1].as_ref().expect("p1 offset deleted");
    let listed = admin
        .list_group_offsets(&group, None)
        .await
        .expect("list again");
    assert!(
        listed.contains_key(&p0) && !listed.contains_key(&p1),
        "{listed:?}"
    );

    let removed = admin.delete_groups(&[&group]).await.expect("delete groups");
    removed[&group].as_ref().expect("group deleted");
    let again = admin.delete_groups(&[&group]).await.expect("answered");
    let err = again[&group].as_ref().expect_err("already gone");
    assert_eq!(err.code(), Some(ErrorCode::GroupIdNotFound), "{err}");
    assert!(err.to_string().contains(&group), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn active_group_members_are_described_with_their_assignment() {
    let kafka = KafkaCluster::shared();
    let admin = admin().await;
    let topic = KafkaCluster::unique_topic("admin-members-topic");
    admin
        .create_topic(NewTopic::new(&topic).partitions(2))
        .await
        .expect("create");
    wait_for_partitions(&admin, &topic, 2).await;
    let group = KafkaCluster::unique_topic("admin-members");
    // A real consumer group member: kcat's balanced consumer (librdkafka).
    let mut consumer = Command::new("kcat")
        .args([
            "-b",
            &kafka.bootstrap(),
            "-G",
            &group,
            "-X",
            "client.id=kcat-member",
            &topic,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kcat");
    let deadline = Instant::now() + Duration::from_secs(45);
    let description = loop {
        let described = admin.describe_groups(&[&group]).await.expect("describe");
        if let Ok(d) = &described[&group]
            && d.state == "Stable"
            && d.members.len() == 1
            && d.members[0].assignment.len() == 2
        {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "group never became stable: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let member = &description.members[0];
    assert_eq!(member.client_id, "kcat-member");
    assert_eq!(description.protocol_type, "consumer");
    let mut assigned = member.assignment.clone();
    assigned.sort();
    assert_eq!(
        assigned,
        vec![
            TopicPartition::new(&topic, 0),
            TopicPartition::new(&topic, 1)
        ]
    );

    // Offsets of a group with members cannot be reset from outside.
    let refused = admin
        .alter_group_offsets(
            &group,
            &[(TopicPartition::new(&topic, 0), OffsetAndMetadata::new(0))],
        )
        .await;
    let deleted = admin.delete_groups(&[&group]).await.expect("answered");
    let _ = consumer.kill();
    let _ = consumer.wait();
    match refused {
        Ok(results) => assert!(results.values().all(Result::is_err), "{results:?}"),
        Err(e) => assert!(!e.is_retriable(), "{e}"),
    }
    let err = deleted[&group].as_ref().expect_err("group has a member");
    assert_eq!(err.code(), Some(ErrorCode::NonEmptyGroup), "{err}");
}
