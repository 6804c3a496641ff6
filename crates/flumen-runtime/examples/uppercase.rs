//! The seed's first job: read `--input`, upper-case every value, write `--output`, keeping
//! keys, headers and timestamps.
//!
//! ```sh
//! cargo run --release -p flumen-runtime --example uppercase -- \
//!     -b localhost:9092 --input visits --output visits-upper --application-id upper --exit-at-end
//! ```

use clap::Parser;

#[path = "common/mod.rs"]
mod common;
use flumen_runtime::format::Bytes;
use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig};

/// Upper-cases every value of a topic into another topic.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(short = 'b', long = "bootstrap", env = "FLUMEN_BOOTSTRAP")]
    bootstrap: String,
    /// The topic to read.
    #[arg(long)]
    input: String,
    /// The topic to write (never the input topic).
    #[arg(long)]
    output: String,
    /// The application id: consumer group and internal topic prefix.
    #[arg(long, default_value = "uppercase")]
    application_id: String,
    /// Worker threads in this process (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Process what the input holds now, commit, and exit.
    #[arg(long)]
    exit_at_end: bool,
    #[command(flatten)]
    run: common::RunFlags,
}

fn main() -> std::process::ExitCode {
    common::main("uppercase", || run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.input == args.output {
        return Err("--output must differ from --input".into());
    }
    let mut pipeline = Pipeline::new();
    pipeline
        .source(Kafka::topic(&args.input).format(Bytes))
        .map(|v: &[u8]| v.to_ascii_uppercase())
        .to(&args.output, Bytes);
    let mut config = RuntimeConfig::new(&args.bootstrap, &args.application_id);
    if let Some(n) = args.workers {
        config = config.workers(n);
    }
    config = args.run.apply(config)?;
    let runtime = Runtime::new(config, pipeline);
    let summary = common::run(runtime, args.exit_at_end)?;
    eprintln!("uppercase: {} records processed", summary.records_in());
    Ok(())
}
