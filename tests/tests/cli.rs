//! The `flumen` binary end to end against the real broker: topics and groups commands,
//! PLAINTEXT, SASL and TLS through `-X`, `--config` files, and one clear line for each
//! human error (unreachable broker, wrong password, unknown topic, unknown `-X` key).

mod cli_support;

use std::time::Duration;

use cli_support::{args, bootstrap, flumen, flumen_with_input, new_topic, sasl_args, tls_args};
use flumen_testcontainers::{KafkaCluster, SaslMechanism};

#[test]
fn version_and_help_work_without_a_broker() {
    let run = flumen(&["--version"]).ok();
    assert!(
        run.stdout_text().starts_with("flumen "),
        "{}",
        run.stdout_text()
    );
    let help = flumen(&["--help"]).ok().stdout_text();
    for needle in [
        "topics",
        "groups",
        "produce",
        "consume",
        "bench",
        "demo",
        "-X",
        "Examples:",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn topics_are_created_listed_described_altered_and_deleted() {
    let b = bootstrap();
    let topic = KafkaCluster::unique_topic("cli-topics");
    let created = flumen(&[
        "-b",
        &b,
        "topics",
        "create",
        &topic,
        "-p",
        "3",
        "-r",
        "1",
        "--config",
        "retention.ms=3600000",
    ])
    .ok();
    assert!(
        created.stderr.contains("3 partitions"),
        "{}",
        created.stderr
    );

    let listed = flumen(&["-b", &b, "topics", "list"]).ok().stdout_text();
    assert!(
        listed.lines().any(|l| l == topic),
        "{topic} not in:\n{listed}"
    );

    let described = flumen(&["-b", &b, "topics", "describe", &topic])
        .ok()
        .stdout_text();
    assert!(described.contains("Partitions: 3"), "{described}");
    assert!(described.contains("retention.ms=3600000"), "{described}");
    let partition_rows = described
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|c| c.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(partition_rows, 3, "{described}");

    flumen(&[
        "-b",
        &b,
        "topics",
        "alter-config",
        &topic,
        "cleanup.policy=compact",
        "--delete",
        "retention.ms",
    ])
    .ok();
    let described = flumen(&["-b", &b, "topics", "describe", &topic])
        .ok()
        .stdout_text();
    assert!(described.contains("cleanup.policy=compact"), "{described}");
    assert!(!described.contains("retention.ms"), "{described}");

    let again = flumen(&["-b", &b, "topics", "create", &topic]);
    assert!(
        again.one_line_error().contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );
    flumen(&["-b", &b, "topics", "create", &topic, "--if-not-exists"]).ok();

    flumen(&["-b", &b, "topics", "delete", &topic]).ok();
    let listed = flumen(&["-b", &b, "topics", "list"]).ok().stdout_text();
    assert!(!listed.lines().any(|l| l == topic), "{topic} still listed");
}

#[test]
fn groups_describe_shows_lag_and_reset_offsets_moves_it() {
    let b = bootstrap();
    let topic = new_topic("cli-groups", 2);
    let group = KafkaCluster::unique_topic("cli-group");
    // 5 records to partition 0, 3 to partition 1.
    flumen_with_input(
        &["-b", &b, "produce", &topic, "-p", "0"],
        b"a\nb\nc\nd\ne\n",
        Duration::from_secs(60),
    )
    .ok();
    flumen_with_input(
        &["-b", &b, "produce", &topic, "-p", "1"],
        b"x\ny\nz\n",
        Duration::from_secs(60),
    )
    .ok();

    flumen(&[
        "-b",
        &b,
        "groups",
        "reset-offsets",
        &group,
        "--topic",
        &topic,
        "--to",
        "earliest",
    ])
    .ok();
    let described = flumen(&["-b", &b, "groups", "describe", &group])
        .ok()
        .stdout_text();
    assert_eq!(lag_of(&described, &topic, 0), Some(5), "{described}");
    assert_eq!(lag_of(&described, &topic, 1), Some(3), "{described}");
    assert!(described.contains("Total lag: 8"), "{described}");

    flumen(&[
        "-b",
        &b,
        "groups",
        "reset-offsets",
        &group,
        "--topic",
        &topic,
        "--to",
        "4",
        "--partition",
        "0",
    ])
    .ok();
    let described = flumen(&["-b", &b, "groups", "describe", &group])
        .ok()
        .stdout_text();
    assert_eq!(lag_of(&described, &topic, 0), Some(1), "{described}");

    let dry = flumen(&[
        "-b",
        &b,
        "groups",
        "reset-offsets",
        &group,
        "--topic",
        &topic,
        "--to",
        "latest",
        "--dry-run",
    ])
    .ok();
    assert!(dry.stderr.contains("Dry run"), "{}", dry.stderr);
    let described = flumen(&["-b", &b, "groups", "describe", &group])
        .ok()
        .stdout_text();
    assert_eq!(
        lag_of(&described, &topic, 1),
        Some(3),
        "dry run committed: {described}"
    );

    let listed = flumen(&["-b", &b, "groups", "list"]).ok().stdout_text();
    assert!(listed.lines().any(|l| l.starts_with(&group)), "{listed}");
    flumen(&["-b", &b, "groups", "delete", &group]).ok();
    let gone = flumen(&["-b", &b, "groups", "describe", &group]);
    assert_eq!(
        gone.one_line_error(),
        format!("flumen: unknown group `{group}`")
    );
}

/// The LAG column of `topic`/`partition` in `groups describe` output.
fn lag_of(described: &str, topic: &str, partition: i32) -> Option<i64> {
    described.lines().find_map(|l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        (cells.len() >= 5 && cells[0] == topic && cells[1] == partition.to_string())
            .then(|| cells[4].parse().ok())
            .flatten()
    })
}

#[test]
fn sasl_scram_and_plain_work_through_x_properties() {
    for mechanism in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        let owned = sasl_args(mechanism, None);
        let run = flumen(&args(&owned, &["topics", "list"]));
        assert_eq!(run.code, Some(0), "{mechanism}: {}", run.stderr);
    }
}

#[test]
fn tls_works_with_ssl_ca_location() {
    let owned = tls_args();
    let topic = new_topic("cli-tls", 1);
    let listed = flumen(&args(&owned, &["topics", "list"]))
        .ok()
        .stdout_text();
    assert!(listed.lines().any(|l| l == topic), "{listed}");
}

#[test]
fn properties_and_toml_config_files_are_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kafka = KafkaCluster::shared();
    let user = kafka.sasl_user(SaslMechanism::ScramSha512).expect("user");
    let props = dir.path().join("client.properties");
    std::fs::write(
        &props,
        format!(
            "# SASL/SCRAM\nbootstrap.servers={}\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.username={}\nsasl.password={}\n",
            kafka.sasl_bootstrap().expect("SASL listener"),
            user.username,
            user.password
        ),
    )
    .expect("write properties");
    flumen(&[
        "--config",
        props.to_str().expect("utf8 path"),
        "topics",
        "list",
    ])
    .ok();

    let toml = dir.path().join("client.toml");
    std::fs::write(
        &toml,
        format!(
            "bootstrap.servers = [\"{}\"]\nsecurity.protocol = \"SSL\"\nssl.ca.location = \"{}\"\n",
            kafka.ssl_bootstrap().expect("SSL listener"),
            kafka.ca_pem_path().expect("CA").display()
        ),
    )
    .expect("write toml");
    flumen(&[
        "--config",
        toml.to_str().expect("utf8 path"),
        "topics",
        "list",
    ])
    .ok();

    std::fs::write(&toml, "bootstrap.servers = \"x:1\"\nno.such.property = 1\n").expect("write");
    let run = flumen(&[
        "--config",
        toml.to_str().expect("utf8 path"),
        "topics",
        "list",
    ]);
    let line = run.one_line_error();
    assert!(
        line.contains("unknown property `no.such.property`") && line.contains("client.toml"),
        "{line}"
    );
}

/// An address nothing listens on: a port bound, then freed.
fn unused_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

#[test]
fn unreachable_broker_is_one_line() {
    let addr = unused_address();
    let run = flumen(&["-b", &addr, "topics", "list"]);
    let line = run.one_line_error();
    assert!(
        line.starts_with("flumen: cannot reach the cluster:") && line.contains(&addr),
        "{line}"
    );
    assert_eq!(run.code, Some(1));
}

#[test]
fn log_debug_shows_why_a_broker_cannot_be_reached_and_a_bad_filter_is_a_usage_error() {
    let addr = unused_address();
    let run = flumen(&["--log", "debug", "-b", &addr, "topics", "list"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout_text());
    // The client's own events, each naming the address, then the one-line error.
    let attempts: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("connection attempt failed"))
        .collect();
    assert!(!attempts.is_empty(), "{}", run.stderr);
    assert!(attempts.iter().all(|l| l.contains(&addr)), "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("flumen: cannot reach the cluster:"),
        "{}",
        run.stderr
    );
    // A malformed filter is refused before anything connects.
    let bad = flumen(&["--log", "flumen_client=loud", "-b", &addr, "topics", "list"]);
    let line = bad.one_line_error();
    assert!(
        line.starts_with("flumen: --log \"flumen_client=loud\""),
        "{line}"
    );
    assert_eq!(bad.code, Some(2));
}

#[test]
fn log_events_go_to_stderr_and_leave_the_records_on_stdout_alone() {
    let b = bootstrap();
    let topic = new_topic("cli-log", 1);
    let produced = flumen_with_input(
        &["-b", &b, "--log", "debug", "produce", &topic],
        b"one\ntwo\n",
        Duration::from_secs(60),
    );
    assert_eq!(produced.code, Some(0), "{}", produced.stderr);
    assert!(produced.stderr.contains("DEBUG"), "{}", produced.stderr);
    let consume = |log: &[&str]| {
        let mut args = vec!["-b", b.as_str()];
        args.extend_from_slice(log);
        args.extend(["consume", &topic, "--from-beginning", "--exit-at-end"]);
        flumen(&args)
    };
    let consumed = consume(&["--log", "trace"]);
    assert_eq!(consumed.code, Some(0), "{}", consumed.stderr);
    assert_eq!(consumed.stdout_text(), "one\ntwo\n");
    assert!(
        consumed.stderr.contains("TRACE") || consumed.stderr.contains("DEBUG"),
        "{}",
        consumed.stderr
    );
    // By default a command that goes well prints only its own summary.
    let quiet = consume(&[]);
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert_eq!(quiet.stdout_text(), "one\ntwo\n");
    assert!(
        !quiet.stderr.contains("DEBUG") && !quiet.stderr.contains(" INFO "),
        "{}",
        quiet.stderr
    );
}

#[test]
fn wrong_sasl_password_is_one_line() {
    let owned = sasl_args(SaslMechanism::ScramSha256, Some("not-the-password"));
    let run = flumen(&args(&owned, &["topics", "list"]));
    let line = run.one_line_error();
    assert!(
        line.starts_with("flumen: authentication failed: SCRAM-SHA-256"),
        "{line}"
    );
    assert!(
        !line.contains("not-the-password"),
        "password echoed: {line}"
    );
}

#[test]
fn unknown_topic_is_one_line() {
    let b = bootstrap();
    let topic = KafkaCluster::unique_topic("cli-missing");
    for command in [
        vec!["topics", "describe", topic.as_str()],
        vec!["produce", topic.as_str()],
        vec![
            "groups",
            "reset-offsets",
            "g",
            "--topic",
            topic.as_str(),
            "--to",
            "earliest",
        ],
    ] {
        let run = flumen(&args(&["-b".to_owned(), b.clone()], &command));
        assert_eq!(
            run.one_line_error(),
            format!("flumen: unknown topic `{topic}`"),
            "{command:?}"
        );
    }
}

#[test]
fn unknown_x_key_is_one_line_naming_it() {
    let b = bootstrap();
    let run = flumen(&["-b", &b, "-X", "no.such.key=1", "topics", "list"]);
    assert_eq!(
        run.one_line_error(),
        "flumen: unknown property `no.such.key` (given with -X)"
    );
    assert_eq!(run.code, Some(2));
    let run = flumen(&["-b", &b, "-X", "request.timeout.ms=soon", "topics", "list"]);
    let line = run.one_line_error();
    assert!(
        line.contains("`request.timeout.ms`") && line.contains("-X"),
        "{line}"
    );
    let run = flumen(&["-b", &b, "-X", "acks", "topics", "list"]);
    assert!(run.one_line_error().contains("expected KEY=VALUE"));
}

#[test]
fn missing_bootstrap_is_one_line() {
    let run = flumen(&["topics", "list"]);
    assert!(run.one_line_error().contains("pass -b HOST:PORT"));
}
