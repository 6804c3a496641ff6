//! Smoke tests of the Kafka harness: every listener kind answers and really authenticates,
//! a 3-broker cluster survives losing a broker, brokers can be stopped, restarted, paused
//! and resumed, Java tools get their stdin, and a dropped cluster leaves nothing behind.
//!
//! The clients here are ones nobody on the project wrote: `kcat` (librdkafka) and Kafka's
//! own Java tools from the broker's jars. Debian 12's kcat links librdkafka 2.0.2, whose
//! SCRAM client is refused by Kafka 4.x brokers (fixed in librdkafka 2.6.1), so the SCRAM
//! tests use the Java admin tools instead.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flumen_testcontainers::{ClusterSpec, KafkaCluster, SaslMechanism};

/// Serialises the tests that disturb the shared 3-broker cluster: killing one broker while
/// another is paused would take away the controller quorum.
static THREE_BROKER_FAULTS: Mutex<()> = Mutex::new(());

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kcat -L` against `bootstrap` with extra `-X` settings; waits at most `timeout_s` for metadata.
fn kcat_metadata(bootstrap: &str, settings: &[String], timeout_s: u32) -> Output {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", bootstrap, "-L", "-m", &timeout_s.to_string()]);
    for s in settings {
        cmd.args(["-X", s]);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run kcat (apt-get install -y kcat): {e}"))
}

fn sasl_settings(mechanism: SaslMechanism, user: &str, password: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_PLAINTEXT".to_owned(),
        format!("sasl.mechanisms={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ]
}

/// Writes a Java client properties file for `mechanism` and returns its path.
fn java_sasl_config(
    cluster: &KafkaCluster,
    mechanism: SaslMechanism,
    user: &str,
    password: &str,
) -> PathBuf {
    let module = match mechanism {
        SaslMechanism::Plain => "org.apache.kafka.common.security.plain.PlainLoginModule",
        _ => "org.apache.kafka.common.security.scram.ScramLoginModule",
    };
    let dir = cluster
        .work_dir()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "{}.properties",
        KafkaCluster::unique_topic("client")
    ));
    let props = format!(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism={mechanism}\n\
         sasl.jaas.config={module} required username=\"{user}\" password=\"{password}\";\n"
    );
    std::fs::write(&path, props).expect("write client properties");
    path
}

/// Kafka's own `kafka-topics --list` through the SASL listener.
fn java_topic_list(
    cluster: &KafkaCluster,
    mechanism: SaslMechanism,
    user: &str,
    password: &str,
) -> Output {
    let bootstrap = cluster
        .sasl_bootstrap()
        .expect("shared cluster has a SASL listener");
    let config = java_sasl_config(cluster, mechanism, user, password);
    let config = config.to_str().expect("utf-8 temp path");
    cluster
        .run_java_tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                &bootstrap,
                "--command-config",
                config,
                "--list",
            ],
            None,
        )
        .expect("run kafka-topics")
}

fn assert_scram_authenticates(mechanism: SaslMechanism) {
    let cluster = KafkaCluster::shared();
    let user = cluster
        .sasl_user(mechanism)
        .expect("shared cluster has a user per mechanism");

    let ok = java_topic_list(cluster, mechanism, &user.username, &user.password);
    assert!(
        ok.status.success(),
        "right {mechanism} password refused:\n{}",
        text(&ok)
    );

    let bad = java_topic_list(cluster, mechanism, &user.username, "not-the-password");
    assert!(
        !bad.status.success(),
        "wrong {mechanism} password accepted:\n{}",
        text(&bad)
    );
    assert!(
        text(&bad).contains("Authentication failed"),
        "wrong {mechanism} password failed for another reason:\n{}",
        text(&bad)
    );
}

#[test]
fn plaintext_listener_serves_metadata_to_kcat_and_java_tools() {
    let cluster = KafkaCluster::shared();
    let out = kcat_metadata(&cluster.bootstrap(), &[], 10);
    assert!(out.status.success(), "kcat -L failed:\n{}", text(&out));
    let listing = text(&out);
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(
        listing.contains(&format!("at {}", cluster.broker_address(0))),
        "{listing}"
    );

    let topic = KafkaCluster::unique_topic("smoke");
    let created = cluster
        .run_java_tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                &cluster.bootstrap(),
                "--create",
                "--topic",
                &topic,
                "--partitions",
                "2",
            ],
            None,
        )
        .expect("run kafka-topics --create");
    assert!(created.status.success(), "{}", text(&created));
    let out = kcat_metadata(
        &cluster.bootstrap(),
        &["topic.metadata.refresh.interval.ms=100".to_owned()],
        10,
    );
    assert!(
        text(&out).contains(&format!("topic \"{topic}\" with 2 partitions")),
        "{}",
        text(&out)
    );
}

#[test]
fn java_console_producer_reads_stdin_and_kcat_consumes_it() {
    let cluster = KafkaCluster::shared();
    let topic = KafkaCluster::unique_topic("stdin");
    let produced = cluster
        .run_java_tool(
            "org.apache.kafka.tools.ConsoleProducer",
            &[
                "--bootstrap-server",
                &cluster.bootstrap(),
                "--topic",
                &topic,
            ],
            Some(b"first\nsecond\nthird\n"),
        )
        .expect("run kafka-console-producer");
    assert!(produced.status.success(), "{}", text(&produced));

    let consumed = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &cluster.bootstrap(),
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .output()
        .expect("run kcat -C");
    assert!(consumed.status.success(), "{}", text(&consumed));
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout),
        "first\nsecond\nthird\n"
    );
}

#[test]
fn sasl_plain_right_password_works_and_wrong_is_refused() {
    let cluster = KafkaCluster::shared();
    let bootstrap = cluster
        .sasl_bootstrap()
        .expect("shared cluster has a SASL listener");
    let user = cluster.sasl_user(SaslMechanism::Plain).expect("PLAIN user");

    let ok = kcat_metadata(
        &bootstrap,
        &sasl_settings(SaslMechanism::Plain, &user.username, &user.password),
        10,
    );
    assert!(
        ok.status.success(),
        "right PLAIN password refused:\n{}",
        text(&ok)
    );
    assert!(text(&ok).contains("1 brokers:"), "{}", text(&ok));

    let bad = kcat_metadata(
        &bootstrap,
        &sasl_settings(SaslMechanism::Plain, &user.username, "not-the-password"),
        5,
    );
    assert!(
        !bad.status.success(),
        "wrong PLAIN password accepted:\n{}",
        text(&bad)
    );
    assert!(
        text(&bad).contains("Authentication failed"),
        "{}",
        text(&bad)
    );

    // Kafka's Java client agrees.
    let bad = java_topic_list(
        cluster,
        SaslMechanism::Plain,
        &user.username,
        "not-the-password",
    );
    assert!(
        !bad.status.success() && text(&bad).contains("Authentication failed"),
        "{}",
        text(&bad)
    );
}

#[test]
fn scram_sha_256_right_password_works_and_wrong_is_refused() {
    assert_scram_authenticates(SaslMechanism::ScramSha256);
}

#[test]
fn scram_sha_512_right_password_works_and_wrong_is_refused() {
    assert_scram_authenticates(SaslMechanism::ScramSha512);
}

#[test]
fn scram_user_is_unknown_to_the_other_scram_mechanism() {
    let cluster = KafkaCluster::shared();
    let user = cluster
        .sasl_user(SaslMechanism::ScramSha256)
        .expect("SCRAM-SHA-256 user");
    let out = java_topic_list(
        cluster,
        SaslMechanism::ScramSha512,
        &user.username,
        &user.password,
    );
    assert!(
        !out.status.success(),
        "SCRAM-SHA-256 credentials accepted for SCRAM-SHA-512:\n{}",
        text(&out)
    );
}

#[test]
fn ssl_listener_is_trusted_with_the_harness_ca_only() {
    let cluster = KafkaCluster::shared();
    let bootstrap = cluster
        .ssl_bootstrap()
        .expect("shared cluster has an SSL listener");
    let ca = cluster.ca_pem_path().expect("shared cluster has a CA");

    let ok = kcat_metadata(
        &bootstrap,
        &[
            "security.protocol=SSL".to_owned(),
            format!("ssl.ca.location={}", ca.display()),
        ],
        10,
    );
    assert!(
        ok.status.success(),
        "SSL with the harness CA failed:\n{}",
        text(&ok)
    );
    assert!(text(&ok).contains("1 brokers:"), "{}", text(&ok));

    // A CA of our own making, but not the one that signed the broker's certificate.
    let stranger = rcgen::KeyPair::generate().expect("key pair");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let stranger_ca = params.self_signed(&stranger).expect("self-signed CA");
    let dir = cluster
        .work_dir()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let stranger_pem = dir.join(format!("{}.pem", KafkaCluster::unique_topic("stranger-ca")));
    std::fs::write(&stranger_pem, stranger_ca.pem()).expect("write the stranger CA");
    let bad = kcat_metadata(
        &bootstrap,
        &[
            "security.protocol=SSL".to_owned(),
            format!("ssl.ca.location={}", stranger_pem.display()),
        ],
        5,
    );
    assert!(
        !bad.status.success(),
        "SSL accepted a certificate its CA list does not vouch for:\n{}",
        text(&bad)
    );
    assert!(
        text(&bad).contains("certificate verify failed"),
        "{}",
        text(&bad)
    );
}

#[test]
fn three_broker_cluster_survives_killing_one_broker() {
    let _serial = THREE_BROKER_FAULTS
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let cluster = KafkaCluster::shared_three();
    assert_eq!(cluster.broker_count(), 3);

    cluster.kill_broker(1).expect("kill broker 1");
    let dead = kcat_metadata(&cluster.broker_address(1), &[], 3);
    assert!(
        !dead.status.success(),
        "killed broker still answers:\n{}",
        text(&dead)
    );

    // The survivors keep serving metadata, and new topics can be made (the controller
    // quorum still has two of three voters).
    let survivors = format!(
        "{},{}",
        cluster.broker_address(0),
        cluster.broker_address(2)
    );
    let out = kcat_metadata(&survivors, &[], 10);
    assert!(
        out.status.success(),
        "survivors do not answer:\n{}",
        text(&out)
    );
    let topic = KafkaCluster::unique_topic("after-kill");
    let created = cluster
        .run_java_tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                &survivors,
                "--create",
                "--topic",
                &topic,
                "--replication-factor",
                "2",
            ],
            None,
        )
        .expect("run kafka-topics --create");
    assert!(
        created.status.success(),
        "topic creation with one broker down failed:\n{}",
        text(&created)
    );

    cluster.start_broker(1).expect("restart broker 1");
    let back = kcat_metadata(&cluster.broker_address(1), &[], 10);
    assert!(
        back.status.success(),
        "restarted broker does not answer:\n{}",
        text(&back)
    );
    assert!(text(&back).contains("3 brokers:"), "{}", text(&back));
}

#[test]
fn paused_broker_stops_answering_until_resumed() {
    let _serial = THREE_BROKER_FAULTS
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let cluster = KafkaCluster::shared_three();
    let address = cluster.broker_address(2);

    cluster.pause_broker(2).expect("pause broker 2");
    let frozen = kcat_metadata(&address, &[], 2);
    let resumed = cluster.resume_broker(2);
    assert!(
        !frozen.status.success(),
        "paused broker answered:\n{}",
        text(&frozen)
    );
    resumed.expect("resume broker 2");

    // Answers again without a restart, within a deadline (never a fixed sleep).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kcat_metadata(&address, &[], 5);
        if out.status.success() {
            assert!(text(&out).contains("3 brokers:"), "{}", text(&out));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "resumed broker does not answer:\n{}",
            text(&out)
        );
        // A poll interval, not a wait for time to pass.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stopped_broker_restarts_on_the_same_address_with_its_topics() {
    let cluster = KafkaCluster::start(ClusterSpec::single()).expect("start a private cluster");
    let address = cluster.broker_address(0);
    let topic = KafkaCluster::unique_topic("survives-restart");
    let created = cluster
        .run_java_tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                &address,
                "--create",
                "--topic",
                &topic,
                "--partitions",
                "3",
            ],
            None,
        )
        .expect("run kafka-topics --create");
    assert!(created.status.success(), "{}", text(&created));

    cluster.stop_broker(0).expect("stop broker 0 cleanly");
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "stopped broker still listens on {address}"
    );
    let log = cluster.broker_log_tail(0, 400);
    assert!(
        log.contains("shut down completed") || log.contains("shutdown completed"),
        "no clean shutdown in the log:\n{log}"
    );

    cluster.start_broker(0).expect("start broker 0 again");
    let out = kcat_metadata(&address, &[], 10);
    assert!(
        text(&out).contains(&format!("topic \"{topic}\" with 3 partitions")),
        "{}",
        text(&out)
    );
}

#[test]
fn dropping_a_cluster_stops_its_broker_and_removes_its_files() {
    let cluster = KafkaCluster::start(ClusterSpec::single()).expect("start a private cluster");
    let address = cluster.broker_address(0);
    let dir = cluster
        .work_dir()
        .expect("local cluster has a work dir")
        .to_path_buf();
    assert!(dir.exists());
    assert!(kcat_metadata(&address, &[], 10).status.success());

    drop(cluster);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "something still listens on {address} after drop"
    );
}
