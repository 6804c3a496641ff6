//! A broker that cannot start is reported with the reason and its log, quickly, and leaves
//! nothing behind. Alone in its test binary because it changes the environment.

use std::time::{Duration, Instant};

use flumen_testcontainers::{ClusterSpec, Error, KafkaCluster};

#[test]
fn broker_that_dies_at_start_is_reported_with_its_log_tail() {
    // SAFETY: the only test of this binary; no other thread reads the environment now.
    unsafe {
        std::env::remove_var("FLUMEN_KAFKA_BOOTSTRAP");
        std::env::set_var("FLUMEN_KAFKA_PROVIDER", "jvm");
        // The broker JVM refuses to start with a 1 MiB heap.
        std::env::set_var("FLUMEN_KAFKA_JVM_OPTS", "-Xmx1m");
    }
    let started = Instant::now();
    let err = KafkaCluster::start(ClusterSpec::single())
        .expect_err("a broker with a 1 MiB heap cannot start");
    let message = err.to_string();
    assert!(
        matches!(err, Error::NotReady { broker: 0, .. }),
        "{message}"
    );
    assert!(message.contains("exited"), "{message}");
    assert!(
        message.contains("heap"),
        "the JVM's own complaint is missing:\n{message}"
    );
    // Death is noticed at once, not at the 90 s readiness deadline.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
