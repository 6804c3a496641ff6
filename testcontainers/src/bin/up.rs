//! `up`: starts a Kafka cluster, prints how to reach it, and keeps it up until SIGINT/SIGTERM.
//!
//! `cargo run -p flumen-testcontainers -- up [--kafka-version X.Y.Z] [--brokers 1|3] [--sasl] [--tls] [--racks] [--production-jvm]`
//!
//! `--kafka-version` runs that Apache Kafka release (3.9.0 or newer) instead of the one pinned
//! in `testcontainers/kafka/pom.xml`; Maven resolves its jars once into
//! `~/.cache/flumen/kafka-<version>`.
//! `--racks` puts broker n in rack `rack-n` with follower fetching on (KIP-392).
//! `--production-jvm` runs the brokers with the JVM settings of Kafka's own start scripts
//! (for benchmarks) instead of the fast-starting test settings.
//!
//! Stdout carries only `NAME=value` lines (so `eval`/`source` can read them); progress and
//! errors go to stderr.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use flumen_testcontainers::{ClusterSpec, KafkaCluster, KafkaVersion};

fn usage() -> String {
    format!(
        "usage: up [--kafka-version X.Y.Z] [--brokers 1|3] [--sasl] [--tls] [--racks] [--production-jvm]\n\
         \n\
         Starts a real Apache Kafka cluster (KRaft) and prints how to reach it as NAME=value lines.\n\
         \n\
         \x20 --kafka-version X.Y.Z  Kafka release to run (default {pinned}, pinned in testcontainers/kafka/pom.xml;\n\
         \x20                        {oldest} or newer, e.g. 3.9.1 or 4.4.0). Maven resolves its jars once into\n\
         \x20                        ~/.cache/flumen/kafka-<version> ($XDG_CACHE_HOME/flumen if set)\n\
         \x20 --brokers 1|3          number of brokers, each also a KRaft controller (default 1)\n\
         \x20 --sasl                 add a SASL_PLAINTEXT listener with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 users\n\
         \x20 --tls                  add an SSL listener (certificate signed by a CA generated per cluster)\n\
         \x20 --racks                broker n in rack rack-n, followers serve consumers of their rack (KIP-392)\n\
         \x20 --production-jvm       broker JVM settings of Kafka's own start scripts (for benchmarks)",
        pinned = flumen_testcontainers::kafka_version(),
        oldest = flumen_testcontainers::OLDEST_SUPPORTED,
    )
}

fn parse_version(v: &str) -> Result<KafkaVersion, String> {
    KafkaVersion::parse(v).map_err(|e| format!("--kafka-version {v}: {e}"))
}

fn parse(args: &[String]) -> Result<ClusterSpec, String> {
    let mut spec = ClusterSpec::single();
    let mut it = args.iter().map(String::as_str).peekable();
    if it.peek() == Some(&"up") {
        it.next();
    }
    while let Some(arg) = it.next() {
        match arg {
            "--sasl" => spec.sasl = true,
            "--tls" => spec.tls = true,
            "--racks" => spec.racks = true,
            "--production-jvm" => spec.production_jvm = true,
            "--kafka-version" => {
                let v = it.next().ok_or("--kafka-version needs a value")?;
                spec.version = Some(parse_version(v)?);
            }
            other if other.starts_with("--kafka-version=") => {
                spec.version = Some(parse_version(&other["--kafka-version=".len()..])?);
            }
            "--brokers" => {
                let v = it.next().ok_or("--brokers needs a value")?;
                spec.brokers = v
                    .parse()
                    .map_err(|_| format!("--brokers {v}: not a number"))?;
            }
            other if other.starts_with("--brokers=") => {
                let v = &other["--brokers=".len()..];
                spec.brokers = v
                    .parse()
                    .map_err(|_| format!("--brokers {v}: not a number"))?;
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument `{other}`\n{}", usage())),
        }
    }
    if spec.brokers != 1 && spec.brokers != 3 {
        return Err(format!("--brokers must be 1 or 3, not {}", spec.brokers));
    }
    Ok(spec)
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts later (so call it
/// first) and returns the set, to be collected with `sigwait` by [`SignalThread`].
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a zeroed, then initialised, set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for SIGINT/SIGTERM on its own thread. A signal that arrives while the cluster is
/// still starting ends the process at once (the brokers die with it through their
/// parent-death signal; the next run sweeps the temp dir); after start-up it is handed to
/// `main`, which stops the cluster cleanly.
struct SignalThread {
    ready: Arc<AtomicBool>,
    signals: mpsc::Receiver<libc::c_int>,
}

impl SignalThread {
    fn start(set: libc::sigset_t) -> SignalThread {
        let ready = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_ready = Arc::clone(&ready);
        std::thread::spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is an initialised signal set; sigwait only writes `sig`.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                if !thread_ready.load(Ordering::SeqCst) {
                    eprintln!("up: signal {sig} during start-up, giving up");
                    std::process::exit(130);
                }
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
        SignalThread { ready, signals: rx }
    }

    /// Marks start-up as done and waits for the signal that asks to stop.
    fn recv_after_ready(&self) -> Option<libc::c_int> {
        self.ready.store(true, Ordering::SeqCst);
        self.signals.recv().ok()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let spec = match parse(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let signals = block_signals();
    let stop_requests = SignalThread::start(signals);
    eprintln!("up: starting Kafka {} ({spec:?}) ...", spec.kafka_version());
    let started = std::time::Instant::now();
    let cluster = match KafkaCluster::start(spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("up: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "up: ready in {:.1} s; Ctrl-C (SIGINT) or SIGTERM stops it",
        started.elapsed().as_secs_f64()
    );

    let mut lines = vec![format!("FLUMEN_KAFKA_BOOTSTRAP={}", cluster.bootstrap())];
    if let Some(s) = cluster.sasl_bootstrap() {
        lines.push(format!("FLUMEN_KAFKA_SASL_BOOTSTRAP={s}"));
    }
    if let Some(s) = cluster.ssl_bootstrap() {
        lines.push(format!("FLUMEN_KAFKA_SSL_BOOTSTRAP={s}"));
    }
    if let Some(ca) = cluster.ca_pem_path() {
        lines.push(format!("FLUMEN_KAFKA_CA={}", ca.display()));
    }
    if !cluster.sasl_users().is_empty() {
        let users: Vec<String> = cluster
            .sasl_users()
            .iter()
            .map(|u| format!("{}:{}", u.username, u.password))
            .collect();
        lines.push(format!("FLUMEN_KAFKA_SASL_USERS={}", users.join(",")));
    }
    let mut out = std::io::stdout().lock();
    for line in &lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    let _ = out.flush();
    drop(out);

    // Tell the signal thread that from now on a signal means "stop the cluster cleanly".
    if let Some(sig) = stop_requests.recv_after_ready() {
        eprintln!("up: signal {sig}, stopping the cluster");
    }
    drop(cluster);
    eprintln!("up: stopped");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn parses_up_with_all_flags() {
        let spec = parse(&args(&[
            "up",
            "--brokers",
            "3",
            "--sasl",
            "--tls",
            "--racks",
            "--production-jvm",
        ]))
        .expect("valid");
        assert_eq!(
            spec,
            ClusterSpec::three()
                .with_sasl()
                .with_tls()
                .with_racks()
                .with_production_jvm()
        );
    }

    #[test]
    fn rejects_two_brokers_and_unknown_flags() {
        assert!(parse(&args(&["--brokers", "2"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn parses_kafka_version_in_both_forms_and_rejects_bad_ones() {
        let spec = parse(&args(&["up", "--kafka-version", "3.9.1", "--sasl"])).expect("valid");
        assert_eq!(
            spec,
            ClusterSpec::single().with_sasl().with_version("3.9.1")
        );
        let spec = parse(&args(&["--kafka-version=4.4.0"])).expect("valid");
        assert_eq!(spec.kafka_version(), KafkaVersion::new(4, 4, 0));
        assert_eq!(
            parse(&args(&[])).expect("valid").kafka_version(),
            KafkaVersion::pinned()
        );
        assert!(parse(&args(&["--kafka-version"])).is_err());
        assert!(parse(&args(&["--kafka-version", "4.1"])).is_err());
        assert!(parse(&args(&["--kafka-version", "2.8.0"])).is_err());
    }

    #[test]
    fn help_names_every_flag() {
        let help = parse(&args(&["up", "--help"])).expect_err("help is printed");
        for flag in [
            "--kafka-version",
            "--brokers",
            "--sasl",
            "--tls",
            "--racks",
            "--production-jvm",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }
}
