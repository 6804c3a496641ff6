//! Flags every example job shares: delivery guarantee, commit interval, process identity and
//! Kafka client properties.

use flumen_runtime::{Guarantee, RunSummary, Runtime, RuntimeConfig};

/// How the job runs against Kafka.
#[derive(clap::Args, Debug)]
pub struct RunFlags {
    /// `at_least_once`, or `exactly_once` (outputs, state changelogs and input offsets
    /// committed in one Kafka transaction per commit interval).
    #[arg(long, default_value = "at_least_once")]
    pub guarantee: Guarantee,
    /// How often progress is committed (default 5000 ms, or 100 ms under exactly-once).
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    /// This process's stable name among the job's processes: static group membership, and
    /// under exactly-once a transactional id that fences the previous incarnation at once.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// How long a stop (SIGINT, SIGTERM) may take to drain and commit (`30s`, `500ms`).
    #[arg(long, value_parser = flumen_runtime::time::parse_duration)]
    pub shutdown_timeout: Option<std::time::Duration>,
    /// A Kafka client property, KEY=VALUE (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
}

impl RunFlags {
    /// `config` with these flags applied.
    pub fn apply(&self, mut config: RuntimeConfig) -> Result<RuntimeConfig, String> {
        config = config.guarantee(self.guarantee);
        if let Some(ms) = self.commit_interval_ms {
            config = config.commit_interval(std::time::Duration::from_millis(ms));
        }
        if let Some(t) = self.shutdown_timeout {
            config = config.shutdown_timeout(t);
        }
        if let Some(name) = &self.instance_id {
            config = config.instance_id(name);
        }
        for p in &self.properties {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("-X takes KEY=VALUE, got {p:?}"))?;
            config = config.set(k, v);
        }
        Ok(config)
    }
}

/// An example's `main`: logs to stderr as `RUST_LOG` says, then `run`; a failure is printed
/// after the example's `name` and exits non-zero.
pub fn main(
    name: &str,
    run: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>,
) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the job until stopped, or (`exit_at_end`) bounded: what the input holds now.
pub fn run(runtime: Runtime, exit_at_end: bool) -> flumen_runtime::Result<RunSummary> {
    if exit_at_end {
        runtime.run_until_end()
    } else {
        runtime.run()
    }
}
