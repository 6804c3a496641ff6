//! Connections to the real broker over every listener, pipelining, and the errors users meet
//! when they get the address or the security settings wrong.

mod support;

use std::time::{Duration, Instant};

use flumen_client::{
    Connection, ConnectionConfig, Error, SaslConfig, SaslMechanism, Security, TlsConfig,
};
use flumen_protocol::ErrorCode;
use flumen_protocol::messages::create_topics_request::CreatableTopic;
use flumen_protocol::messages::create_topics_response::CreatableTopicResult;
use flumen_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use flumen_protocol::messages::metadata_request::MetadataRequestTopic;
use flumen_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use flumen_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, StrBytes, TopicName,
};
use flumen_testcontainers::{KafkaCluster, SaslMechanism as HarnessMechanism};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn config(security: Security) -> ConnectionConfig {
    ConnectionConfig {
        client_id: "flumen-connection-tests".to_owned(),
        connect_timeout: Duration::from_secs(15),
        request_timeout: Duration::from_secs(30),
        security,
        ..ConnectionConfig::default()
    }
}

fn first(bootstrap: &str) -> &str {
    bootstrap.split(',').next().expect("one address")
}

fn plaintext_addr() -> String {
    first(&KafkaCluster::shared().bootstrap()).to_owned()
}

fn sasl_addr() -> String {
    let cluster = KafkaCluster::shared();
    first(
        &cluster
            .sasl_bootstrap()
            .expect("shared cluster has a SASL listener"),
    )
    .to_owned()
}

fn ssl_addr() -> String {
    let cluster = KafkaCluster::shared();
    first(
        &cluster
            .ssl_bootstrap()
            .expect("shared cluster has an SSL listener"),
    )
    .to_owned()
}

fn tls_with_cluster_ca() -> TlsConfig {
    TlsConfig::with_ca(
        KafkaCluster::shared()
            .ca_pem_path()
            .expect("shared cluster has a CA"),
    )
}

fn sasl(mechanism: SaslMechanism, password: Option<&str>) -> SaslConfig {
    let harness = match mechanism {
        SaslMechanism::Plain => HarnessMechanism::Plain,
        SaslMechanism::ScramSha256 => HarnessMechanism::ScramSha256,
        _ => HarnessMechanism::ScramSha512,
    };
    let user = KafkaCluster::shared()
        .sasl_user(harness)
        .unwrap_or_else(|| panic!("shared cluster has a {mechanism} user"));
    SaslConfig::new(
        mechanism,
        user.username.clone(),
        password.unwrap_or(&user.password),
    )
}

fn topics_request(names: &[&str]) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string((*n).to_owned()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false)
}

/// Proves the connection works: a Metadata round trip that names the broker.
async fn assert_usable(conn: &Connection) {
    let metadata = conn
        .send(MetadataRequest::default())
        .await
        .expect("Metadata");
    assert_eq!(
        metadata.brokers.len(),
        KafkaCluster::shared().broker_count()
    );
    assert!(conn.api_version(ApiKey::Metadata).is_some_and(|v| v >= 12));
    assert!(!conn.is_closed());
}

#[tokio::test(flavor = "current_thread")]
async fn plaintext_connection_negotiates_versions_and_answers_metadata() {
    let conn = Connection::connect(&plaintext_addr(), &config(Security::Plaintext))
        .await
        .expect("connect over PLAINTEXT");
    assert_eq!(conn.api_version(ApiKey::ApiVersions), Some(4));
    assert!(conn.api_version(ApiKey::Produce).is_some_and(|v| v >= 9));
    assert!(conn.api_version(ApiKey::Fetch).is_some_and(|v| v >= 12));
    assert_usable(&conn).await;
    let versions = conn
        .send_version(ApiVersionsRequest::default(), 0)
        .await
        .expect("ApiVersions v0");
    assert_eq!(versions.error_code, 0);
    assert!(!versions.api_keys.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_authenticates() {
    let conn = Connection::connect(
        &sasl_addr(),
        &config(Security::SaslPlaintext(sasl(SaslMechanism::Plain, None))),
    )
    .await
    .expect("SASL PLAIN");
    assert_usable(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn scram_sha_256_authenticates() {
    let conn = Connection::connect(
        &sasl_addr(),
        &config(Security::SaslPlaintext(sasl(
            SaslMechanism::ScramSha256,
            None,
        ))),
    )
    .await
    .expect("SCRAM-SHA-256");
    assert_usable(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn scram_sha_512_authenticates() {
    let conn = Connection::connect(
        &sasl_addr(),
        &config(Security::SaslPlaintext(sasl(
            SaslMechanism::ScramSha512,
            None,
        ))),
    )
    .await
    .expect("SCRAM-SHA-512");
    assert_usable(&conn).await;
}

/// The harness gives SCRAM-SHA-512 sessions a 3 s lifetime (KIP-368); a broker closes a
/// connection whose session expired without re-authentication. Requests spread over three
/// lifetimes on one connection all succeed only if the client re-authenticated in between.
#[tokio::test(flavor = "current_thread")]
async fn scram_session_is_reauthenticated_before_the_broker_expires_it() {
    let lifetime = Duration::from_millis(flumen_testcontainers::SCRAM_SHA_512_SESSION_MS);
    let conn = Connection::connect(
        &sasl_addr(),
        &config(Security::SaslPlaintext(sasl(
            SaslMechanism::ScramSha512,
            None,
        ))),
    )
    .await
    .expect("SCRAM-SHA-512");
    let until = Instant::now() + lifetime * 3;
    let mut requests = 0;
    while Instant::now() < until {
        conn.send(topics_request(&[]))
            .await
            .unwrap_or_else(|e| panic!("request {requests} failed: {e}"));
        requests += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!conn.is_closed(), "{:?}", conn.close_reason());
    assert!(requests > 20);
}

async fn assert_wrong_password_refused(mechanism: SaslMechanism) {
    let err = Connection::connect(
        &sasl_addr(),
        &config(Security::SaslPlaintext(sasl(
            mechanism,
            Some("not-the-password"),
        ))),
    )
    .await
    .expect_err("wrong password");
    eprintln!("{err}");
    match &err {
        Error::Authentication {
            mechanism: m,
            message,
            ..
        } => {
            assert_eq!(*m, mechanism.name());
            // The broker's own words, e.g. "Authentication failed during authentication due to invalid credentials ...".
            assert!(message.contains("Authentication failed"), "{message}");
        }
        other => panic!("expected an authentication error, got {other}"),
    }
    assert!(!err.is_retriable());
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_plain_password_is_refused() {
    assert_wrong_password_refused(SaslMechanism::Plain).await;
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_scram_sha_256_password_is_refused() {
    assert_wrong_password_refused(SaslMechanism::ScramSha256).await;
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_scram_sha_512_password_is_refused() {
    assert_wrong_password_refused(SaslMechanism::ScramSha512).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ssl_connection_verifies_the_broker_against_the_ca() {
    let conn = Connection::connect(&ssl_addr(), &config(Security::Ssl(tls_with_cluster_ca())))
        .await
        .expect("connect over SSL");
    assert_usable(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ssl_connection_by_host_name_verifies_the_dns_name() {
    let addr = ssl_addr().replace("127.0.0.1", "localhost");
    let conn = Connection::connect(&addr, &config(Security::Ssl(tls_with_cluster_ca())))
        .await
        .expect("connect over SSL by host name");
    assert_usable(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ssl_with_an_unrelated_ca_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_path = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).expect("self-signed CA");
    std::fs::write(&ca_path, ca.pem()).expect("write CA");

    let err = Connection::connect(
        &ssl_addr(),
        &config(Security::Ssl(TlsConfig::with_ca(&ca_path))),
    )
    .await
    .expect_err("untrusted broker certificate");
    eprintln!("{err}");
    match &err {
        Error::Tls { message, .. } => assert!(message.contains("certificate"), "{message}"),
        other => panic!("expected a TLS error, got {other}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ssl_without_verification_accepts_the_broker() {
    let tls = TlsConfig {
        verify_certificate: false,
        ..TlsConfig::default()
    };
    let conn = Connection::connect(&ssl_addr(), &config(Security::Ssl(tls)))
        .await
        .expect("connect over SSL without verification");
    assert_usable(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn tls_against_a_plaintext_port_says_the_peer_does_not_speak_tls() {
    let err = Connection::connect(
        &plaintext_addr(),
        &config(Security::Ssl(tls_with_cluster_ca())),
    )
    .await
    .expect_err("TLS to PLAINTEXT");
    eprintln!("{err}");
    match &err {
        Error::TlsMismatch { message, .. } => {
            assert!(message.contains("does not speak TLS"), "{message}")
        }
        other => panic!("expected a TLS mismatch, got {other}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn plaintext_against_an_ssl_port_says_the_port_expects_tls() {
    // Resolve the address first: it may start the shared cluster, which is not what is timed.
    let addr = ssl_addr();
    let started = Instant::now();
    let err = Connection::connect(&addr, &config(Security::Plaintext))
        .await
        .expect_err("PLAINTEXT to SSL");
    eprintln!("{err}");
    assert!(err.to_string().contains("expects TLS"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_requests_are_answered_in_order() {
    let conn = Connection::connect(&plaintext_addr(), &config(Security::Plaintext))
        .await
        .expect("connect");
    let names: Vec<String> = (0..1000)
        .map(|i| format!("pipelined-{}-{i}", std::process::id()))
        .collect();
    let started = Instant::now();
    let responses = futures::future::join_all(names.iter().map(|name| {
        let conn = conn.clone();
        async move { conn.send(topics_request(&[name])).await }
    }))
    .await;
    let elapsed = started.elapsed();
    for (name, response) in names.iter().zip(responses) {
        let response = response.expect("Metadata");
        assert_eq!(response.topics.len(), 1);
        let topic = &response.topics[0];
        // Each response names the topic its own request asked for: nothing was mixed up.
        assert_eq!(
            topic.name.as_ref().map(|n| n.0.as_str()),
            Some(name.as_str())
        );
        assert_eq!(
            ErrorCode::from_code(topic.error_code),
            ErrorCode::UnknownTopicOrPartition
        );
    }
    assert!(!conn.is_closed());
    eprintln!("1000 pipelined Metadata requests on one connection: {elapsed:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn refused_connection_names_the_address() {
    // Bind then drop: the port is free and nobody listens on it.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let started = Instant::now();
    let err = Connection::connect(&addr, &config(Security::Plaintext))
        .await
        .expect_err("nobody listens");
    eprintln!("{err}");
    assert!(
        matches!(&err, Error::Connect { addr: a, .. } if *a == addr),
        "{err}"
    );
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "current_thread")]
async fn silent_listener_times_out_within_the_connect_timeout() {
    // The kernel completes the TCP handshake for the backlog; nobody ever answers.
    let (_listener, addr) = support::listen().await;
    let timeout = Duration::from_millis(500);
    let config = ConnectionConfig {
        connect_timeout: timeout,
        ..config(Security::Plaintext)
    };
    let started = Instant::now();
    let err = Connection::connect(&addr, &config)
        .await
        .expect_err("silent peer");
    eprintln!("{err}");
    let elapsed = started.elapsed();
    match &err {
        Error::ConnectTimeout { addr: a, stage, .. } => {
            assert_eq!(*a, addr);
            assert_eq!(*stage, "ApiVersions");
        }
        other => panic!("expected a connect timeout, got {other}"),
    }
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(
        elapsed >= timeout && elapsed < timeout * 4,
        "took {elapsed:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn silent_listener_times_out_during_the_tls_handshake() {
    let (listener, addr) = support::listen().await;
    tokio::spawn(async move {
        // Accept and hold the socket, never speaking.
        let held = listener.accept().await;
        std::future::pending::<()>().await;
        drop(held);
    });
    let tls = TlsConfig {
        verify_certificate: false,
        ..TlsConfig::default()
    };
    let config = ConnectionConfig {
        connect_timeout: Duration::from_millis(500),
        ..config(Security::Ssl(tls))
    };
    let err = Connection::connect(&addr, &config)
        .await
        .expect_err("silent TLS peer");
    assert!(
        matches!(
            &err,
            Error::ConnectTimeout {
                stage: "TLS handshake",
                ..
            }
        ),
        "{err}"
    );
}

/// A record batch of `count` records with `value_len`-byte values, encoded by kafka-protocol.
#[tokio::test]
async fn idle_connection_is_closed_after_connections_max_idle() {
    let max_idle = Duration::from_millis(300);
    let config = ConnectionConfig {
        max_idle: Some(max_idle),
        ..config(Security::Plaintext)
    };
    let conn = Connection::connect(&plaintext_addr(), &config)
        .await
        .expect("connect");
    assert_usable(&conn).await;
    let answered = Instant::now();
    while !conn.is_closed() {
        assert!(
            answered.elapsed() < Duration::from_secs(10),
            "an idle connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answered.elapsed() >= max_idle - Duration::from_millis(50),
        "closed after {:?}, before being idle for {max_idle:?}",
        answered.elapsed()
    );
    let err = conn
        .send(topics_request(&[]))
        .await
        .expect_err("request on the closed connection");
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err}");
    assert!(err.to_string().contains("connections.max.idle.ms"), "{err}");
    assert!(err.is_retriable(), "a pool replaces it: {err}");
}

fn batch(count: usize, value_len: usize) -> bytes::Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch unless sequences are consecutive; a produce
            // request must carry exactly one batch per partition.
            sequence: i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(bytes::Bytes::from(format!("key-{i}"))),
            value: Some(bytes::Bytes::from(vec![b'v'; value_len])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode batch");
    buf.freeze()
}

fn produce(
    acks: i16,
    topic: &CreatableTopicResult,
    version: i16,
    records: bytes::Bytes,
) -> ProduceRequest {
    // Produce v13 names topics by id (KIP-516), earlier versions by name.
    let data = if version >= 13 {
        TopicProduceData::default().with_topic_id(topic.topic_id)
    } else {
        TopicProduceData::default().with_name(topic.name.clone())
    };
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![data.with_partition_data(
            vec![PartitionProduceData::default().with_index(0).with_records(Some(records))],
        )])
}

#[tokio::test(flavor = "current_thread")]
async fn record_batches_are_produced_with_and_without_acks() {
    let conn = Connection::connect(&plaintext_addr(), &config(Security::Plaintext))
        .await
        .expect("connect");
    let topic = KafkaCluster::unique_topic("connection-produce");
    let created = conn
        .send(
            CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ]),
        )
        .await
        .expect("CreateTopics");
    let created = &created.topics[0];
    assert_eq!(created.error_code, 0, "{:?}", created.error_message);
    let version = conn
        .api_version(ApiKey::Produce)
        .expect("Produce supported");
    // 200 KiB: large enough to be written by reference rather than copied into the frame.
    let first = batch(200, 1024);
    assert!(first.len() > 200 * 1024);
    // CreateTopics answers once the controller committed the topic; the broker takes up
    // leadership a moment later and answers NOT_LEADER_OR_FOLLOWER (retriable) until then.
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        let response = conn
            .send(produce(-1, created, version, first.clone()))
            .await
            .expect("Produce acks=all");
        let code = ErrorCode::from_code(response.responses[0].partition_responses[0].error_code);
        if !code.is_retriable() || Instant::now() >= deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(
        ErrorCode::from_code(partition.error_code),
        ErrorCode::None,
        "{:?} {:?}",
        partition.error_message,
        partition.record_errors
    );
    assert_eq!(partition.base_offset, 0);

    conn.send_no_response(produce(0, created, version, batch(200, 1024)))
        .await
        .expect("Produce acks=0");

    // acks=0 has no answer: wait until the log end offset shows both batches.
    let latest = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut end_offset = -1;
    while Instant::now() < deadline {
        let offsets = conn.send(latest.clone()).await.expect("ListOffsets");
        end_offset = offsets.topics[0].partitions[0].offset;
        if end_offset == 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(end_offset, 400);
    assert!(!conn.is_closed());
}
