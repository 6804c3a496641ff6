//! `FLUMEN_KAFKA_BOOTSTRAP` (and the other variables `up` prints) make the harness use an
//! existing cluster instead of starting one. Alone in its test binary because it changes
//! the environment.

use flumen_testcontainers::{ClusterSpec, Error, KafkaCluster, SaslMechanism};

#[test]
fn bootstrap_variables_select_an_existing_cluster_without_fault_control() {
    // SAFETY (all `set_var`s below): the only test of this binary, and it starts no thread
    // that reads the environment concurrently.
    unsafe {
        std::env::remove_var("FLUMEN_KAFKA_BOOTSTRAP");
    }
    let real =
        KafkaCluster::start(ClusterSpec::single().with_sasl()).expect("start a local cluster");
    let users: Vec<String> = real
        .sasl_users()
        .iter()
        .map(|u| format!("{}:{}", u.username, u.password))
        .collect();
    unsafe {
        std::env::set_var("FLUMEN_KAFKA_BOOTSTRAP", real.bootstrap());
        std::env::set_var(
            "FLUMEN_KAFKA_SASL_BOOTSTRAP",
            real.sasl_bootstrap().expect("sasl listener"),
        );
        std::env::set_var("FLUMEN_KAFKA_SASL_USERS", users.join(","));
    }

    // Whatever the spec asks, the external cluster is what one gets.
    let external =
        KafkaCluster::start(ClusterSpec::three().with_tls()).expect("use the external cluster");
    assert_eq!(external.bootstrap(), real.bootstrap());
    assert_eq!(external.broker_count(), 1);
    assert_eq!(external.broker_address(0), real.broker_address(0));
    assert_eq!(external.sasl_bootstrap(), real.sasl_bootstrap());
    assert_eq!(external.ssl_bootstrap(), None);
    assert_eq!(external.sasl_users(), real.sasl_users());
    assert_eq!(
        external
            .sasl_user(SaslMechanism::ScramSha512)
            .map(|u| &u.username),
        real.sasl_user(SaslMechanism::ScramSha512)
            .map(|u| &u.username)
    );
    assert!(external.kafka_classpath().is_none());
    assert!(matches!(
        external.kill_broker(0),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        external.pause_broker(0),
        Err(Error::Unsupported { .. })
    ));

    // Dropping the handle of an external cluster leaves that cluster alone.
    drop(external);
    assert!(std::net::TcpStream::connect(real.broker_address(0)).is_ok());
}
