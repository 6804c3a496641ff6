//! Running the `flumen` binary from the tests: built once per test binary with the same
//! cargo and profile, then run with arguments and optional stdin.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flumen_testcontainers::{KafkaCluster, SaslMechanism};

/// The `flumen` binary, built (or brought up to date) on first use.
///
/// `cargo test --workspace` does not build another package's binaries for this crate's
/// tests, so the test runs `cargo build -p flumen-cli` itself into the same target
/// directory and profile, and never runs a stale binary.
pub fn flumen_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target directory");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let mut build = Command::new(cargo);
        build
            .current_dir(workspace)
            .args(["build", "--quiet", "-p", "flumen-cli", "--bin", "flumen"])
            .arg("--target-dir")
            .arg(target_dir);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p flumen-cli");
        assert!(status.success(), "cargo build -p flumen-cli failed");
        let bin = profile_dir.join("flumen");
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
}

/// The example program `name` of `package`, built (or brought up to date) by
/// `cargo build --example` into the same target directory and profile as the test.
pub fn example_bin(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target directory");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", package, "--example", name])
        .arg("--target-dir")
        .arg(target_dir);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build --example");
    assert!(
        status.success(),
        "cargo build -p {package} --example {name} failed"
    );
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.is_file(), "no example binary at {}", bin.display());
    bin
}

/// What one run printed and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit code 0, showing stderr otherwise.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "flumen failed; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts a non-zero exit and exactly one line on stderr; returns that line.
    pub fn one_line_error(&self) -> String {
        assert_ne!(
            self.code,
            Some(0),
            "expected a failure; stdout: {}",
            self.stdout_text()
        );
        assert!(self.code.is_some(), "killed by a signal");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got:\n{}",
            self.stderr
        );
        let line = lines[0].to_owned();
        assert!(line.starts_with("flumen: "), "{line}");
        for dump in ["panicked", "backtrace", "Error {", "Some(", "{ addr"] {
            assert!(!line.contains(dump), "debug output in: {line}");
        }
        line
    }
}

/// Runs `flumen args...` with `stdin`, killing it after `timeout`.
pub fn flumen_with_input(args: &[&str], stdin: &[u8], timeout: Duration) -> Run {
    let mut child = Command::new(flumen_bin())
        .args(args)
        .env_remove("FLUMEN_BOOTSTRAP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flumen");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = wait_with_timeout(child, timeout);
    let _ = writer.join();
    Run {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `flumen args...` with empty stdin.
pub fn flumen(args: &[&str]) -> Run {
    flumen_with_input(args, b"", Duration::from_secs(120))
}

/// Waits for `child`, killing it if it outlives `timeout` (the test then fails on its status).
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll flumen") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait for killed flumen");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `-b` for the shared cluster's PLAINTEXT listener.
pub fn bootstrap() -> String {
    KafkaCluster::shared().bootstrap()
}

/// `-b` and `-X` arguments for the shared cluster's SASL listener with `mechanism`.
pub fn sasl_args(mechanism: SaslMechanism, password: Option<&str>) -> Vec<String> {
    let kafka = KafkaCluster::shared();
    let user = kafka.sasl_user(mechanism).expect("SASL user");
    vec![
        "-b".into(),
        kafka.sasl_bootstrap().expect("SASL listener"),
        "-X".into(),
        "security.protocol=SASL_PLAINTEXT".into(),
        "-X".into(),
        format!("sasl.mechanism={}", mechanism.name()),
        "-X".into(),
        format!("sasl.username={}", user.username),
        "-X".into(),
        format!("sasl.password={}", password.unwrap_or(&user.password)),
    ]
}

/// `-b` and `-X` arguments for the shared cluster's SSL listener.
pub fn tls_args() -> Vec<String> {
    let kafka = KafkaCluster::shared();
    vec![
        "-b".into(),
        kafka.ssl_bootstrap().expect("SSL listener"),
        "-X".into(),
        "security.protocol=SSL".into(),
        "-X".into(),
        format!(
            "ssl.ca.location={}",
            kafka.ca_pem_path().expect("CA file").display()
        ),
    ]
}

/// Joins owned and borrowed arguments.
pub fn args<'a>(owned: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
    owned
        .iter()
        .map(String::as_str)
        .chain(rest.iter().copied())
        .collect()
}

/// A fresh topic with `partitions` partitions, created through the CLI.
pub fn new_topic(prefix: &str, partitions: u32) -> String {
    let topic = KafkaCluster::unique_topic(prefix);
    flumen(&[
        "-b",
        &bootstrap(),
        "topics",
        "create",
        &topic,
        "--partitions",
        &partitions.to_string(),
        "--replication-factor",
        "1",
    ])
    .ok();
    topic
}
