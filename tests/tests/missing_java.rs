//! Without a JDK the harness says what to install. Alone in its test binary because it
//! changes the environment.

use flumen_testcontainers::{ClusterSpec, Error, KafkaCluster};

#[test]
fn missing_java_is_reported_with_what_to_install() {
    let empty = std::env::temp_dir().join(format!("flumen-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("create an empty PATH dir");
    // SAFETY: the only test of this binary; no other thread reads the environment now.
    unsafe {
        std::env::remove_var("FLUMEN_KAFKA_BOOTSTRAP");
        std::env::remove_var("JAVA_HOME");
        std::env::set_var("FLUMEN_KAFKA_PROVIDER", "jvm");
        std::env::set_var("PATH", &empty);
    }
    let err = KafkaCluster::start(ClusterSpec::single()).expect_err("no java on an empty PATH");
    let _ = std::fs::remove_dir(&empty);
    let message = err.to_string();
    assert!(matches!(err, Error::JavaMissing { .. }), "{message}");
    assert!(message.contains("JDK 17"), "{message}");
    assert!(message.contains("openjdk-17-jdk-headless"), "{message}");
}
