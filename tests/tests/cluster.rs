//! `Cluster` against a real broker: bootstrap over every listener from Kafka property names,
//! clear errors for unreachable bootstrap servers, pooled connections per purpose,
//! coordinator lookup, and metadata refresh after a partition leader is killed.
//!
//! Every test runs on a tokio current-thread runtime: the client must not need more.

use std::time::{Duration, Instant};

use flumen_client::admin::{IsolationLevel, NewTopic, OffsetSpec};
use flumen_client::cluster::{ConnectionKind, CoordinatorType};
use flumen_client::{Admin, ClientConfig, Cluster, Error, TopicPartition};
use flumen_testcontainers::{ClusterSpec, KafkaCluster, SaslMechanism};

fn plaintext_config(bootstrap: &str) -> ClientConfig {
    ClientConfig::from_properties([
        ("bootstrap.servers", bootstrap),
        ("client.id", "flumen-cluster-test"),
    ])
    .expect("valid config")
}

#[tokio::test(flavor = "current_thread")]
async fn bootstraps_over_plaintext_and_learns_the_broker() {
    let kafka = KafkaCluster::shared();
    let cluster = Cluster::connect(plaintext_config(&kafka.bootstrap()))
        .await
        .expect("bootstrap");
    let metadata = cluster.metadata();
    assert_eq!(metadata.brokers.len(), 1, "{metadata:?}");
    let broker = metadata.brokers.values().next().expect("one broker");
    assert_eq!(broker.addr(), kafka.broker_address(0));
    assert!(metadata.cluster_id.is_some());
}

fn sasl_properties(kafka: &KafkaCluster, mechanism: SaslMechanism) -> Vec<(String, String)> {
    let user = kafka
        .sasl_user(mechanism)
        .expect("harness has a user per mechanism");
    vec![
        (
            "bootstrap.servers".into(),
            kafka.sasl_bootstrap().expect("SASL listener"),
        ),
        ("security.protocol".into(), "SASL_PLAINTEXT".into()),
        ("sasl.mechanism".into(), mechanism.name().into()),
        ("sasl.username".into(), user.username.clone()),
        ("sasl.password".into(), user.password.clone()),
    ]
}

async fn describe_with(properties: Vec<(String, String)>) -> flumen_client::Result<usize> {
    let config = ClientConfig::from_properties(properties)?;
    let admin = Admin::connect(config).await?;
    Ok(admin.describe_cluster().await?.brokers.len())
}

#[tokio::test(flavor = "current_thread")]
async fn librdkafka_style_sasl_properties_authenticate_with_every_mechanism() {
    let kafka = KafkaCluster::shared();
    for mechanism in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        let brokers = describe_with(sasl_properties(kafka, mechanism))
            .await
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(brokers, 1, "{mechanism}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn java_jaas_properties_authenticate_with_every_mechanism() {
    let kafka = KafkaCluster::shared();
    for mechanism in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        let user = kafka.sasl_user(mechanism).expect("user");
        let module = match mechanism {
            SaslMechanism::Plain => "org.apache.kafka.common.security.plain.PlainLoginModule",
            _ => "org.apache.kafka.common.security.scram.ScramLoginModule",
        };
        let properties = vec![
            (
                "bootstrap.servers".to_owned(),
                kafka.sasl_bootstrap().expect("SASL listener"),
            ),
            ("security.protocol".to_owned(), "SASL_PLAINTEXT".to_owned()),
            ("sasl.mechanism".to_owned(), mechanism.name().to_owned()),
            (
                "sasl.jaas.config".to_owned(),
                format!(
                    r#"{module} required username="{}" password="{}";"#,
                    user.username, user.password
                ),
            ),
        ];
        let brokers = describe_with(properties)
            .await
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(brokers, 1, "{mechanism}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_sasl_password_from_properties_is_an_authentication_error() {
    let kafka = KafkaCluster::shared();
    let mut properties = sasl_properties(kafka, SaslMechanism::ScramSha256);
    for (k, v) in &mut properties {
        if k == "sasl.password" {
            *v = "definitely-wrong".into();
        }
    }
    let started = Instant::now();
    let err = describe_with(properties)
        .await
        .expect_err("wrong password accepted");
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ssl_properties_with_a_pem_ca_connect() {
    let kafka = KafkaCluster::shared();
    let ca = kafka
        .ca_pem_path()
        .expect("harness CA")
        .display()
        .to_string();
    let bootstrap = kafka.ssl_bootstrap().expect("SSL listener");
    // librdkafka spelling.
    let librdkafka = vec![
        ("bootstrap.servers".to_owned(), bootstrap.clone()),
        ("security.protocol".to_owned(), "SSL".to_owned()),
        ("ssl.ca.location".to_owned(), ca.clone()),
    ];
    assert_eq!(
        describe_with(librdkafka)
            .await
            .expect("SSL via ssl.ca.location"),
        1
    );
    // Java spelling, with a PEM trust store.
    let java = vec![
        ("bootstrap.servers".to_owned(), bootstrap),
        ("security.protocol".to_owned(), "SSL".to_owned()),
        ("ssl.truststore.location".to_owned(), ca),
        ("ssl.truststore.type".to_owned(), "PEM".to_owned()),
        (
            "ssl.endpoint.identification.algorithm".to_owned(),
            "https".to_owned(),
        ),
    ];
    assert_eq!(
        describe_with(java)
            .await
            .expect("SSL via ssl.truststore.location"),
        1
    );
}

#[tokio::test(flavor = "current_thread")]
async fn config_file_in_toml_connects() {
    let kafka = KafkaCluster::shared();
    let text = format!(
        "\"bootstrap.servers\" = \"{}\"\n\"request.timeout.ms\" = 10000\nclient.id = \"from-file\"\n",
        kafka.bootstrap()
    );
    let config: ClientConfig = toml::from_str(&text).expect("TOML config");
    let admin = Admin::connect(config).await.expect("connect");
    assert_eq!(
        admin
            .describe_cluster()
            .await
            .expect("describe")
            .brokers
            .len(),
        1
    );
}

/// An address nothing listens on: bind a port, then free it.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    addr
}

#[tokio::test(flavor = "current_thread")]
async fn refused_bootstrap_fails_naming_the_address() {
    let addr = closed_port();
    let config = ClientConfig::builder()
        .bootstrap(&addr)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    let err = Cluster::connect(config)
        .await
        .expect_err("nothing listens there");
    assert!(
        err.to_string().contains(&addr),
        "error does not name {addr}: {err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn silent_bootstrap_fails_within_the_connect_timeout() {
    // Accepts TCP connections (the kernel does, from the backlog) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let timeout = Duration::from_millis(700);
    let config = ClientConfig::builder()
        .bootstrap(&addr)
        .connect_timeout(timeout)
        .request_timeout(timeout)
        .build()
        .expect("config");
    let started = Instant::now();
    let err = Cluster::connect(config).await.expect_err("silent peer");
    let took = started.elapsed();
    assert!(
        err.to_string().contains(&addr),
        "error does not name {addr}: {err}"
    );
    assert!(
        took < timeout * 3,
        "took {took:?} with a {timeout:?} connect timeout"
    );
    drop(listener);
}

#[tokio::test(flavor = "current_thread")]
async fn several_dead_bootstrap_servers_are_all_named() {
    let (a, b) = (closed_port(), closed_port());
    let config =
        ClientConfig::from_properties([("bootstrap.servers", format!("{a},{b}"))]).expect("config");
    let err = Cluster::connect(config).await.expect_err("nothing listens");
    let text = err.to_string();
    assert!(text.contains(&a) && text.contains(&b), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_bootstrap_server_is_skipped_for_a_live_one() {
    let kafka = KafkaCluster::shared();
    let bootstrap = format!("{},{}", closed_port(), kafka.bootstrap());
    let cluster = Cluster::connect(plaintext_config(&bootstrap))
        .await
        .expect("second address answers");
    assert_eq!(cluster.metadata().brokers.len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn each_purpose_gets_its_own_connection_and_reuses_it() {
    let kafka = KafkaCluster::shared();
    let cluster = Cluster::connect(plaintext_config(&kafka.bootstrap()))
        .await
        .expect("bootstrap");
    let broker = cluster
        .metadata()
        .brokers
        .values()
        .next()
        .cloned()
        .expect("broker");
    let before = cluster.open_connections();
    for kind in [
        ConnectionKind::Produce,
        ConnectionKind::Fetch,
        ConnectionKind::Group,
    ] {
        cluster.connection(&broker, kind).await.expect("connect");
    }
    assert_eq!(cluster.open_connections(), before + 3);
    // Asking again reuses them.
    cluster
        .connection(&broker, ConnectionKind::Fetch)
        .await
        .expect("reuse");
    cluster
        .connection(&broker, ConnectionKind::Metadata)
        .await
        .expect("reuse");
    assert_eq!(cluster.open_connections(), before + 3);
    // A closed one is replaced on next use.
    let fetch = cluster
        .connection(&broker, ConnectionKind::Fetch)
        .await
        .expect("fetch");
    fetch.close();
    let again = cluster
        .connection(&broker, ConnectionKind::Fetch)
        .await
        .expect("reconnect");
    assert!(!again.is_closed());
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_topic_lookup_names_the_topic() {
    let kafka = KafkaCluster::shared();
    let cluster = Cluster::connect(plaintext_config(&kafka.bootstrap()))
        .await
        .expect("bootstrap");
    let name = KafkaCluster::unique_topic("never-created");
    match cluster.topic(&name).await {
        Err(Error::UnknownTopic(t)) => assert_eq!(t, name),
        other => panic!("expected UnknownTopic({name}), got {other:?}"),
    }
    let err = cluster.leader(&name, 0).await.expect_err("no such topic");
    assert!(err.to_string().contains(&name), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn coordinators_are_found_for_groups_and_transactions() {
    let kafka = KafkaCluster::shared();
    let cluster = Cluster::connect(plaintext_config(&kafka.bootstrap()))
        .await
        .expect("bootstrap");
    let group = cluster
        .coordinator(CoordinatorType::Group, &KafkaCluster::unique_topic("group"))
        .await
        .expect("group coordinator");
    let txn = cluster
        .coordinator(
            CoordinatorType::Transaction,
            &KafkaCluster::unique_topic("txn"),
        )
        .await
        .expect("transaction coordinator");
    assert_eq!(group.addr(), kafka.broker_address(0));
    assert_eq!(txn.addr(), kafka.broker_address(0));
    // Batched lookup: one result per key.
    let keys: Vec<String> = (0..3)
        .map(|i| format!("batch-{i}-{}", std::process::id()))
        .collect();
    let found = cluster
        .find_coordinators(CoordinatorType::Group, &keys)
        .await
        .expect("batched");
    assert_eq!(found.len(), 3);
    for (key, result) in found {
        assert!(keys.contains(&key));
        assert_eq!(result.expect("coordinator").id, 0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn metadata_refresh_finds_the_new_leader_after_the_leader_is_killed() {
    let kafka = KafkaCluster::start(ClusterSpec::three()).expect("3-broker cluster");
    let admin = Admin::connect(plaintext_config(&kafka.bootstrap()))
        .await
        .expect("bootstrap");
    let topic = KafkaCluster::unique_topic("leader-kill");
    admin
        .create_topic(NewTopic::new(&topic).partitions(1).replication_factor(3))
        .await
        .expect("create RF 3 topic");

    // Wait for the three replicas to be in sync, so that a new leader can be elected.
    let deadline = Instant::now() + Duration::from_secs(60);
    let old_leader = loop {
        let description = admin.describe_topic(&topic).await;
        if let Ok(d) = &description
            && let Some(p) = d.partitions.first()
            && p.isr.len() == 3
            && let Some(leader) = p.leader
        {
            break leader;
        }
        assert!(
            Instant::now() < deadline,
            "ISR never reached 3: {description:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let tp = TopicPartition::new(&topic, 0);
    let latest = [(tp.clone(), OffsetSpec::Latest)];
    let before = admin
        .list_offsets(&latest, IsolationLevel::ReadUncommitted)
        .await
        .expect("list offsets");
    assert_eq!(before[&tp].as_ref().expect("offset").offset, 0);

    let index = usize::try_from(old_leader).expect("broker ids are small");
    kafka.kill_broker(index).expect("kill the leader");
    let killed_at = Instant::now();

    // The cached metadata still names the dead leader: the call must hit it, learn, refresh
    // and find the new one, all by itself.
    let after = admin
        .list_offsets(&latest, IsolationLevel::ReadUncommitted)
        .await
        .expect("list offsets");
    let took = killed_at.elapsed();
    assert_eq!(
        after[&tp]
            .as_ref()
            .expect("offset after leader change")
            .offset,
        0
    );
    let new_leader = admin
        .cluster()
        .leader(&topic, 0)
        .await
        .expect("new leader")
        .id;
    assert_ne!(new_leader, old_leader, "leader did not move");
    assert!(
        took < Duration::from_secs(45),
        "took {took:?} to follow the leader"
    );
    eprintln!("leader {old_leader} -> {new_leader}: ListOffsets answered {took:?} after the kill");

    // Metadata calls still work with one broker down.
    let metadata = admin
        .cluster()
        .refresh_metadata()
        .await
        .expect("metadata with a broker down");
    assert!(
        !metadata.brokers.contains_key(&old_leader),
        "dead broker still listed"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn cached_metadata_is_refreshed_once_older_than_metadata_max_age() {
    let kafka = KafkaCluster::shared();
    let admin = Admin::connect(plaintext_config(&kafka.bootstrap()))
        .await
        .expect("admin");
    let topic = KafkaCluster::unique_topic("max-age");
    admin
        .create_topic(NewTopic::new(&topic).partitions(1))
        .await
        .expect("create");

    let connect = |max_age: &str| {
        ClientConfig::from_properties([
            ("bootstrap.servers", kafka.bootstrap().as_str()),
            ("metadata.max.age.ms", max_age),
        ])
        .expect("config")
    };
    let fresh = Cluster::connect(connect("500"))
        .await
        .expect("short max age");
    let cached = Cluster::connect(connect("300000"))
        .await
        .expect("default max age");
    let deadline = Instant::now() + Duration::from_secs(20);
    for cluster in [&fresh, &cached] {
        loop {
            match cluster.topic(&topic).await {
                Ok(t) if t.partitions.len() == 1 => break,
                other => assert!(Instant::now() < deadline, "topic never visible: {other:?}"),
            }
            cluster.invalidate_metadata();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    admin
        .create_partitions(&[(&topic, 3)], false)
        .await
        .expect("answered")[&topic]
        .as_ref()
        .expect("grown to 3");

    // The short-lived cache notices by itself; nothing tells it the topic changed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let partitions = fresh.topic(&topic).await.expect("topic").partitions.len();
        if partitions == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {partitions} partitions after the max age"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The long-lived cache still serves the old view: the refresh above was due to age.
    assert_eq!(
        cached.topic(&topic).await.expect("topic").partitions.len(),
        1
    );
    cached.invalidate_metadata();
    assert_eq!(
        cached.topic(&topic).await.expect("topic").partitions.len(),
        3
    );
}

#[tokio::test(flavor = "current_thread")]
async fn reconnecting_to_a_dead_broker_waits_for_the_reconnect_backoff() {
    let kafka = KafkaCluster::shared();
    let config = ClientConfig::from_properties([
        ("bootstrap.servers", kafka.bootstrap().as_str()),
        ("reconnect.backoff.ms", "400"),
        ("reconnect.backoff.max.ms", "400"),
    ])
    .expect("config");
    let cluster = Cluster::connect(config).await.expect("bootstrap");
    let dead = closed_port();
    let (host, port) = dead.rsplit_once(':').expect("host:port");
    let broker = flumen_client::cluster::BrokerInfo {
        id: 99,
        host: host.to_owned(),
        port: port.parse().expect("port"),
        rack: None,
    };
    let first = Instant::now();
    let err = cluster
        .connection(&broker, ConnectionKind::Fetch)
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains(&dead), "{err}");
    let first = first.elapsed();
    let second = Instant::now();
    cluster
        .connection(&broker, ConnectionKind::Fetch)
        .await
        .expect_err("still nothing");
    let second = second.elapsed();
    // 400 ms ± 20% jitter; the first attempt had no reason to wait.
    assert!(
        second >= Duration::from_millis(300),
        "second attempt after {second:?}"
    );
    assert!(
        first < Duration::from_millis(300),
        "first attempt took {first:?}"
    );
    // Another purpose has its own backoff.
    let other = Instant::now();
    cluster
        .connection(&broker, ConnectionKind::Group)
        .await
        .expect_err("nothing listens");
    assert!(
        other.elapsed() < Duration::from_millis(300),
        "group connection waited {:?}",
        other.elapsed()
    );
}
