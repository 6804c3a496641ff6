//! The client against other Apache Kafka releases than the pinned one: the newest 3.x
//! (3.9.1) and the newest 4.x that Maven Central serves (4.4.0). For each, one broker of that
//! release (PLAINTEXT + SASL) is started once for this test binary, and the same smoke suite
//! runs on it: produce/consume round trip, a classic consumer group, the KIP-848 group
//! protocol (working on 4.x, a typed error naming the feature and the broker on 3.9, which
//! has it only as early access and off), transactions under read_committed (the classic
//! protocol on 3.9, KIP-890's transaction protocol v2 on 4.x), admin (topics and
//! configs), and SASL PLAIN/SCRAM logins.
//!
//! Both brokers start in parallel at the first test; the tests then share them.

use std::collections::BTreeMap;
use std::sync::Once;
use std::time::{Duration, Instant};

use flumen_client::admin::{AlterConfigOp, ConfigResource, ConfigSource, NewTopic};
use flumen_client::cluster::ConnectionKind;
use flumen_client::consumer::{Consumer, ConsumerConfig, ConsumerError};
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord, TransactionVersion};
use flumen_client::{Admin, ClientConfig, Error, TopicPartition};
use flumen_testcontainers::{KafkaCluster, KafkaVersion, SaslMechanism};

/// The releases checked here besides the pinned one every other test runs.
const VERSIONS: [&str; 2] = ["3.9.1", "4.4.0"];

/// The shared broker of `version`. The first call also starts the other releases' brokers
/// on threads of their own, so that they come up side by side rather than one after the
/// other when the tests get to them.
fn kafka(version: &'static str) -> &'static KafkaCluster {
    static START_ALL: Once = Once::new();
    START_ALL.call_once(|| {
        for other in VERSIONS.into_iter().filter(|v| *v != version) {
            // A failure is kept by the shared cell and reported by the tests of that release.
            std::thread::spawn(move || KafkaCluster::shared_with_version(other));
        }
    });
    KafkaCluster::shared_with_version(version)
}

fn props(pairs: &[(&str, &str)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn admin(kafka: &KafkaCluster) -> Admin {
    let config = ClientConfig::from_properties(props(
        &[
            ("bootstrap.servers", &kafka.bootstrap()),
            ("default.api.timeout.ms", "30000"),
        ],
        &[],
    ))
    .expect("admin config");
    Admin::connect(config).await.expect("admin connects")
}

/// Creates a topic and waits until the broker serving metadata shows every partition with
/// a leader (CreateTopics answers once the controller committed it, a moment earlier).
async fn create_topic(admin: &Admin, topic: NewTopic) -> String {
    let name = topic.name.clone();
    let partitions = topic.num_partitions.unwrap_or(1);
    admin.create_topic(topic).await.expect("create topic");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = admin.describe_topic(&name).await;
        if let Ok(d) = &described
            && i32::try_from(d.partitions.len()).ok() == Some(partitions)
            && d.partitions.iter().all(|p| p.leader.is_some())
        {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never showed {partitions} partitions with leaders: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn topic(kafka: &KafkaCluster, prefix: &str, partitions: i32) -> String {
    let admin = admin(kafka).await;
    create_topic(
        &admin,
        NewTopic::new(KafkaCluster::unique_topic(prefix))
            .partitions(partitions)
            .replication_factor(1),
    )
    .await
}

async fn producer_with(bootstrap: Vec<(String, String)>, extra: &[(&str, &str)]) -> Producer {
    let mut all = bootstrap;
    all.extend(props(&[("acks", "all")], extra));
    Producer::connect(ProducerConfig::from_properties(all).expect("producer config"))
        .await
        .expect("producer connects")
}

async fn producer(kafka: &KafkaCluster, extra: &[(&str, &str)]) -> Producer {
    producer_with(
        props(&[("bootstrap.servers", &kafka.bootstrap())], &[]),
        extra,
    )
    .await
}

async fn consumer_with(bootstrap: Vec<(String, String)>, extra: &[(&str, &str)]) -> Consumer {
    let mut all = bootstrap;
    all.extend(props(
        &[
            ("fetch.max.wait.ms", "100"),
            ("default.api.timeout.ms", "30000"),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
        ],
        extra,
    ));
    Consumer::connect(ConsumerConfig::from_properties(all).expect("consumer config"))
        .await
        .expect("consumer connects")
}

async fn consumer(kafka: &KafkaCluster, extra: &[(&str, &str)]) -> Consumer {
    consumer_with(
        props(&[("bootstrap.servers", &kafka.bootstrap())], &[]),
        extra,
    )
    .await
}

/// One record as read: partition, offset, key, value.
type Read = (i32, i64, Option<String>, String);

fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8(b.to_vec()).expect("utf-8"))
}

/// Polls until `want` records arrived (failing after `timeout`), then polls another
/// `settle` to catch any extra record that should not be there.
async fn read(c: &mut Consumer, want: usize, timeout: Duration, settle: Duration) -> Vec<Read> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    loop {
        if seen.len() >= want {
            let until = *settle_until.get_or_insert_with(|| Instant::now() + settle);
            if Instant::now() >= until {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {want} records within {timeout:?}: {seen:?}",
            seen.len()
        );
        let mut records = c.poll(Duration::from_millis(200)).await.expect("poll");
        for r in records.iter() {
            let r = r.expect("record decodes");
            seen.push((
                r.partition(),
                r.offset(),
                text(r.key()),
                text(r.value()).unwrap_or_default(),
            ));
        }
    }
}

/// Sends `values` (keyed by `key` when given) and waits for every acknowledgement.
async fn send_all(p: &Producer, topic: &str, key: Option<&str>, values: &[String]) {
    let mut deliveries = Vec::with_capacity(values.len());
    for v in values {
        let mut record = ProducerRecord::new(topic).value(v.as_bytes());
        if let Some(k) = key {
            record = record.key(k.as_bytes());
        }
        deliveries.push(p.send(record).await.expect("send"));
    }
    p.flush().await.expect("flush");
    for d in deliveries {
        let meta = d.await.expect("acknowledged");
        assert!(meta.offset >= 0, "{meta:?}");
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn sorted_values(read: &[Read]) -> Vec<String> {
    let mut v: Vec<String> = read.iter().map(|r| r.3.clone()).collect();
    v.sort();
    v
}

/// The broker runs the release asked for: its jars are that release's, and its ApiVersions
/// answer is that of a broker of that major version.
async fn runs_the_release_asked_for(version: &'static str) {
    let kafka = kafka(version);
    let asked = KafkaVersion::parse(version).expect("version");
    assert_eq!(kafka.kafka_version(), Some(asked));
    let classpath = kafka.kafka_classpath().expect("a local JVM broker");
    assert!(
        classpath.contains(&format!("kafka-{version}/")),
        "{classpath}"
    );
    let admin = admin(kafka).await;
    let conn = admin
        .cluster()
        .any_connection(ConnectionKind::Metadata)
        .await
        .expect("connection");
    let estimate = conn.api_versions().expect("negotiated").release_estimate();
    let expected = if asked.major >= 4 {
        "Kafka 4.0 or newer"
    } else {
        "Kafka 3.x or older"
    };
    assert!(estimate.starts_with(expected), "{version}: {estimate}");
}

/// Keyed and unkeyed records, compressed, over three partitions: everything comes back once,
/// each key on one partition, offsets in order per partition.
async fn produce_consume_round_trip(version: &'static str) {
    let kafka = kafka(version);
    let topic = topic(kafka, "v-roundtrip", 3).await;
    let p = producer(kafka, &[("compression.type", "lz4"), ("linger.ms", "5")]).await;
    let keyed = values("keyed", 150);
    let unkeyed = values("plain", 150);
    send_all(&p, &topic, Some("the-key"), &keyed).await;
    send_all(&p, &topic, None, &unkeyed).await;

    let mut c = consumer(kafka, &[]).await;
    c.assign((0..3).map(|i| TopicPartition::new(&topic, i)))
        .expect("assign");
    let got = read(
        &mut c,
        300,
        Duration::from_secs(30),
        Duration::from_millis(300),
    )
    .await;
    let mut expected: Vec<String> = keyed.iter().chain(&unkeyed).cloned().collect();
    expected.sort();
    assert_eq!(sorted_values(&got), expected, "{version}");

    let keyed_partitions: std::collections::BTreeSet<i32> = got
        .iter()
        .filter(|r| r.2.as_deref() == Some("the-key"))
        .map(|r| r.0)
        .collect();
    assert_eq!(keyed_partitions.len(), 1, "one key, one partition");
    let keyed_in_order: Vec<&str> = got
        .iter()
        .filter(|r| r.2.is_some())
        .map(|r| r.3.as_str())
        .collect();
    assert_eq!(keyed_in_order, keyed, "records of one key stay in order");
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, _, _) in &got {
        if let Some(prev) = last.insert(*partition, *offset) {
            assert!(*offset > prev, "{partition}: {offset} after {prev}");
        }
    }
    c.close().await.expect("close");
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// A classic-protocol member reads, commits and leaves; the next member of the group starts
/// at the committed offset.
async fn classic_group_resumes_from_the_commit(version: &'static str) {
    let kafka = kafka(version);
    let topic = topic(kafka, "v-classic", 2).await;
    let group = format!("{topic}-g");
    let p = producer(kafka, &[]).await;
    send_all(&p, &topic, Some("k"), &values("first", 20)).await;

    let group_props = [
        ("group.id", group.as_str()),
        ("group.protocol", "classic"),
        ("partition.assignment.strategy", "cooperative-sticky"),
    ];
    let mut first = consumer(kafka, &group_props).await;
    first.subscribe(&[&topic]).expect("subscribe");
    let got = read(
        &mut first,
        20,
        Duration::from_secs(60),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(sorted_values(&got), {
        let mut v = values("first", 20);
        v.sort();
        v
    });
    assert_eq!(
        first.assignment().len(),
        2,
        "one member owns both partitions"
    );
    assert!(first.group_metadata().expect("group").generation_id > 0);
    first.commit_sync().await.expect("commit");
    let partition = got[0].0;
    let tp = TopicPartition::new(&topic, partition);
    let committed = first
        .committed(std::slice::from_ref(&tp))
        .await
        .expect("committed");
    assert_eq!(committed[&tp].offset, 20);
    first.close().await.expect("close");

    send_all(&p, &topic, Some("k"), &values("second", 5)).await;
    let mut next = consumer(kafka, &group_props).await;
    next.subscribe(&[&topic]).expect("subscribe");
    let got = read(
        &mut next,
        5,
        Duration::from_secs(60),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        got.iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
        values("second", 5),
        "only what came after the commit"
    );
    assert_eq!(got[0].1, 20);
    next.close().await.expect("close");
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// `group.protocol=consumer` (KIP-848): a working group on a broker that has it (4.x); on one
/// without it (3.9), `poll` fails with `UnsupportedFeature` naming the feature, the broker and
/// its release, instead of polling nothing forever.
async fn kip848_group_works_or_fails_clearly(version: &'static str) {
    let kafka = kafka(version);
    let has_kip848 = KafkaVersion::parse(version).expect("version").has_kip848();
    let topic = topic(kafka, "v-848", 3).await;
    let group = format!("{topic}-g");
    let p = producer(kafka, &[]).await;
    for key in ["a", "b", "c", "d", "e", "f"] {
        send_all(&p, &topic, Some(key), &values(key, 2)).await;
    }
    let mut c = consumer(
        kafka,
        &[("group.id", group.as_str()), ("group.protocol", "consumer")],
    )
    .await;
    c.subscribe(&[&topic]).expect("subscribe");

    if has_kip848 {
        let got = read(
            &mut c,
            12,
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(got.len(), 12, "{version}: {got:?}");
        assert_eq!(c.assignment().len(), 3, "{version}");
        assert!(
            c.group_metadata().expect("group").generation_id > 0,
            "{version}: member epoch"
        );
        c.commit_sync().await.expect("commit with the member epoch");
        c.close().await.expect("close");
        return;
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match c.poll(Duration::from_millis(200)).await {
            Err(e) => break e,
            Ok(records) => assert!(
                records.is_empty(),
                "{version}: records without a group assignment"
            ),
        }
        assert!(
            Instant::now() < deadline,
            "{version}: group.protocol=consumer neither worked nor failed within 30 s"
        );
    };
    let message = err.to_string();
    eprintln!("{version}, group.protocol=consumer: {message}");
    let ConsumerError::Client(Error::UnsupportedFeature {
        feature,
        addr,
        release,
        ..
    }) = &err
    else {
        panic!("{version}: expected UnsupportedFeature, got {err:?}");
    };
    assert!(feature.contains("group.protocol=consumer"), "{message}");
    assert!(feature.contains("KIP-848"), "{message}");
    assert_eq!(addr, &kafka.broker_address(0), "{message}");
    assert!(release.starts_with("Kafka 3.x"), "{message}");
    assert!(message.contains("group.protocol=classic"), "{message}");
    assert!(!err.is_retriable(), "{message}");
    // Every later poll says the same; nothing was read.
    let again = c
        .poll(Duration::from_millis(100))
        .await
        .expect_err("still failing");
    assert_eq!(again.to_string(), message);
    assert!(c.assignment().is_empty());
    c.close().await.expect("close");
}

/// Commit, abort, commit: read_committed sees exactly the committed records, read_uncommitted
/// sees the aborted ones too; under the classic protocol on 3.x (no `transaction.version` 2)
/// and KIP-890's transaction protocol v2 on 4.x.
async fn transactions_commit_and_abort(version: &'static str) {
    let kafka = kafka(version);
    let topic = topic(kafka, "v-txn", 2).await;
    let p = producer(
        kafka,
        &[
            (
                "transactional.id",
                &KafkaCluster::unique_topic(&format!("v-txn-{version}")),
            ),
            ("transaction.timeout.ms", "30000"),
        ],
    )
    .await;
    p.init_transactions().await.expect("init_transactions");
    let protocol = if version.starts_with("3.") {
        TransactionVersion::V1
    } else {
        TransactionVersion::V2
    };
    assert_eq!(p.transaction_version(), Some(protocol), "{version}");

    p.begin_transaction().await.expect("begin");
    send_all(&p, &topic, Some("c"), &values("committed", 10)).await;
    p.commit_transaction().await.expect("commit");

    p.begin_transaction().await.expect("begin 2");
    // Acknowledged, so in the log before the abort: the filter has to hide them.
    send_all(&p, &topic, None, &values("aborted", 10)).await;
    p.abort_transaction().await.expect("abort");

    p.begin_transaction().await.expect("begin 3");
    send_all(&p, &topic, None, &values("after", 5)).await;
    p.commit_transaction().await.expect("commit 3");

    let all_partitions = || (0..2).map(|i| TopicPartition::new(&topic, i));
    let mut committed = consumer(kafka, &[("isolation.level", "read_committed")]).await;
    committed.assign(all_partitions()).expect("assign");
    let got = read(
        &mut committed,
        15,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    let mut expected: Vec<String> = values("committed", 10)
        .into_iter()
        .chain(values("after", 5))
        .collect();
    expected.sort();
    assert_eq!(sorted_values(&got), expected, "{version}");

    let mut uncommitted = consumer(kafka, &[("isolation.level", "read_uncommitted")]).await;
    uncommitted.assign(all_partitions()).expect("assign");
    let got = read(
        &mut uncommitted,
        25,
        Duration::from_secs(30),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        got.iter().filter(|r| r.3.starts_with("aborted")).count(),
        10,
        "{version}: the aborted records were written, only hidden"
    );
    committed.close().await.expect("close");
    uncommitted.close().await.expect("close");
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// Describes `resource` until `name` satisfies `done` (an alter is applied by the broker a
/// moment after the controller committed it).
async fn wait_for_config(
    admin: &Admin,
    resource: &ConfigResource,
    name: &str,
    done: impl Fn(&flumen_client::admin::ConfigEntry) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = admin
            .describe_configs(std::slice::from_ref(resource))
            .await
            .expect("describe configs");
        let entry = described[resource]
            .as_ref()
            .expect("configs")
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} listed"));
        if done(&entry) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached the expected state: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create (with a config), describe, alter a config, describe it, delete.
async fn admin_topic_and_config_lifecycle(version: &'static str) {
    let kafka = kafka(version);
    let admin = admin(kafka).await;
    let cluster = admin.describe_cluster().await.expect("describe cluster");
    assert_eq!(cluster.brokers.len(), 1, "{version}");

    let name = KafkaCluster::unique_topic("v-admin");
    let created = admin
        .create_topic(
            NewTopic::new(&name)
                .partitions(2)
                .replication_factor(1)
                .config("retention.ms", "3600000"),
        )
        .await
        .expect("create");
    assert_eq!(created.num_partitions, 2);
    assert!(!created.topic_id.is_nil());
    let deadline = Instant::now() + Duration::from_secs(30);
    let described = loop {
        match admin.describe_topic(&name).await {
            Ok(d) if d.partitions.len() == 2 && d.partitions.iter().all(|p| p.leader.is_some()) => {
                break d;
            }
            other => assert!(Instant::now() < deadline, "{version}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(described.topic_id, created.topic_id);
    assert!(
        admin
            .list_topics(false)
            .await
            .expect("list")
            .contains(&name)
    );

    let resource = ConfigResource::Topic(name.clone());
    wait_for_config(&admin, &resource, "retention.ms", |e| {
        e.value.as_deref() == Some("3600000") && e.source == ConfigSource::DynamicTopic
    })
    .await;
    let altered = admin
        .incremental_alter_configs(
            &[(
                resource.clone(),
                vec![
                    AlterConfigOp::Set("cleanup.policy".into(), "compact".into()),
                    AlterConfigOp::Delete("retention.ms".into()),
                ],
            )],
            false,
        )
        .await
        .expect("alter");
    altered[&resource].as_ref().expect("altered");
    wait_for_config(&admin, &resource, "cleanup.policy", |e| {
        e.value.as_deref() == Some("compact")
    })
    .await;
    wait_for_config(&admin, &resource, "retention.ms", |e| {
        e.source == ConfigSource::Default
    })
    .await;
    // An unknown config is refused with an error for that resource.
    let refused = admin
        .incremental_alter_configs(
            &[(
                resource.clone(),
                vec![AlterConfigOp::Set("no.such.config".into(), "1".into())],
            )],
            false,
        )
        .await
        .expect("answered");
    assert!(refused[&resource].is_err(), "{version}: {refused:?}");

    admin.delete_topic(&name).await.expect("delete");
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin
        .list_topics(false)
        .await
        .expect("list")
        .contains(&name)
    {
        assert!(Instant::now() < deadline, "{version}: {name} not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sasl_props(
    kafka: &KafkaCluster,
    mechanism: SaslMechanism,
    password: Option<&str>,
) -> Vec<(String, String)> {
    let user = kafka.sasl_user(mechanism).expect("a user per mechanism");
    props(
        &[
            (
                "bootstrap.servers",
                &kafka.sasl_bootstrap().expect("SASL listener"),
            ),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", mechanism.name()),
            ("sasl.username", &user.username),
            ("sasl.password", password.unwrap_or(&user.password)),
        ],
        &[],
    )
}

/// Every mechanism logs in, a wrong password is refused, and records written over
/// SCRAM-SHA-512 are read back over PLAIN.
async fn sasl_logins(version: &'static str) {
    let kafka = kafka(version);
    for mechanism in SaslMechanism::ALL {
        let config =
            ClientConfig::from_properties(sasl_props(kafka, mechanism, None)).expect("config");
        let admin = Admin::connect(config)
            .await
            .unwrap_or_else(|e| panic!("{version} {mechanism}: {e}"));
        let cluster = admin
            .describe_cluster()
            .await
            .unwrap_or_else(|e| panic!("{version} {mechanism}: {e}"));
        assert_eq!(cluster.brokers.len(), 1);

        let config =
            ClientConfig::from_properties(sasl_props(kafka, mechanism, Some("not-the-password")))
                .expect("config");
        match Admin::connect(config).await {
            Err(Error::Authentication { .. }) => {}
            Err(other) => {
                panic!("{version} {mechanism}: expected an authentication error, got {other}")
            }
            Ok(admin) => {
                let err = admin
                    .describe_cluster()
                    .await
                    .expect_err("wrong password accepted");
                assert!(
                    matches!(err, Error::Authentication { .. }),
                    "{version} {mechanism}: {err}"
                );
            }
        }
    }

    let topic = topic(kafka, "v-sasl", 1).await;
    let p = producer_with(sasl_props(kafka, SaslMechanism::ScramSha512, None), &[]).await;
    send_all(&p, &topic, None, &values("over-scram", 10)).await;
    let mut c = consumer_with(sasl_props(kafka, SaslMechanism::Plain, None), &[]).await;
    c.assign([TopicPartition::new(&topic, 0)]).expect("assign");
    let got = read(
        &mut c,
        10,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(
        got.iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
        values("over-scram", 10)
    );
    c.close().await.expect("close");
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// One module per release, each running the whole suite against that release's broker.
macro_rules! suite {
    ($($module:ident => $version:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "current_thread")]
            async fn broker_runs_the_release_asked_for() {
                runs_the_release_asked_for($version).await;
            }

            #[tokio::test(flavor = "current_thread")]
            async fn produce_and_consume_round_trip() {
                produce_consume_round_trip($version).await;
            }

            #[tokio::test(flavor = "current_thread")]
            async fn classic_group_member_resumes_from_the_committed_offset() {
                classic_group_resumes_from_the_commit($version).await;
            }

            #[tokio::test(flavor = "current_thread")]
            async fn kip848_group_works_or_fails_naming_feature_and_broker() {
                kip848_group_works_or_fails_clearly($version).await;
            }

            #[tokio::test(flavor = "current_thread")]
            async fn read_committed_sees_only_committed_transactions() {
                transactions_commit_and_abort($version).await;
            }

            #[tokio::test(flavor = "current_thread")]
            async fn admin_creates_describes_configures_and_deletes_a_topic() {
                admin_topic_and_config_lifecycle($version).await;
            }

            #[tokio::test(flavor = "current_thread")]
            async fn sasl_plain_and_scram_log_in_and_wrong_passwords_are_refused() {
                sasl_logins($version).await;
            }
        }
    )*};
}

suite! {
    kafka_3_9_1 => VERSIONS[0],
    kafka_4_4_0 => VERSIONS[1],
}
