//! Re-keys JSON records by one of their fields (a repartition through
//! `<application-id>-by-field-repartition`) and writes them, keyed by that field, to `--output`.
//!
//! ```sh
//! cargo run --release -p flumen-runtime --example reroute -- \
//!     -b localhost:9092 --input visits --output visits-by-user --field user --exit-at-end
//! ```

use clap::Parser;
use flumen_runtime::format::Json;
use flumen_runtime::{Kafka, OnError, Pipeline, Runtime, RuntimeConfig};
use serde_json::Value;

/// Re-keys JSON records by a field.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(short = 'b', long = "bootstrap", env = "FLUMEN_BOOTSTRAP")]
    bootstrap: String,
    /// The topic to read (JSON objects).
    #[arg(long)]
    input: String,
    /// The topic to write.
    #[arg(long)]
    output: String,
    /// The field whose value becomes the key.
    #[arg(long, default_value = "user")]
    field: String,
    /// Records that are not JSON go here (default: they stop the job).
    #[arg(long)]
    dead_letter: Option<String>,
    /// Skip (and count) records that are not JSON instead of stopping.
    #[arg(long, conflicts_with = "dead_letter")]
    skip_bad: bool,
    /// The application id.
    #[arg(long, default_value = "reroute")]
    application_id: String,
    /// Worker threads in this process.
    #[arg(long)]
    workers: Option<usize>,
    /// Process what the input holds now, commit, and exit.
    #[arg(long)]
    exit_at_end: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reroute: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let field = args.field.clone();
    let on_error = match (&args.dead_letter, args.skip_bad) {
        (Some(topic), _) => OnError::DeadLetter(topic.clone()),
        (None, true) => OnError::Skip,
        (None, false) => OnError::Fail,
    };
    let mut pipeline = Pipeline::new();
    pipeline
        .source(
            Kafka::topic(&args.input)
                .format(Json::<Value>::new())
                .on_error(on_error),
        )
        .key_by(
            "by-field",
            move |v: &Value| match &v[&field] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            },
            Json::<Value>::new(),
        )
        .to(&args.output, Json::<Value>::new());
    let mut config = RuntimeConfig::new(&args.bootstrap, &args.application_id);
    if let Some(n) = args.workers {
        config = config.workers(n);
    }
    let runtime = Runtime::new(config, pipeline);
    let summary = if args.exit_at_end {
        runtime.run_until_end()?
    } else {
        runtime.run()?
    };
    let skipped: u64 = summary
        .metrics()
        .tasks
        .iter()
        .map(|t| t.counters.records_skipped)
        .sum();
    eprintln!(
        "reroute: {} records processed, {skipped} skipped",
        summary.records_in()
    );
    Ok(())
}
