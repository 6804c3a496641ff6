//! A two-stream join: each click on `--clicks` paired with each view on `--views` of the same
//! key whose event times (the records' timestamps) are at most `--within` apart, written to
//! `--output` as `click+view`. Both topics must be keyed alike and have as many partitions.
//! The records waiting for a partner are state, logged to a changelog, so the job survives a
//! crash (`--guarantee exactly_once` writes each pair once).
//!
//! ```sh
//! cargo run --release -p flumen-runtime --example click_join -- \
//!     -b localhost:9092 --clicks clicks --views views --output pairs --within 20ms \
//!     --application-id click-join --exit-at-end
//! ```

use std::time::Duration;

use clap::Parser;

#[path = "common/mod.rs"]
mod common;
use flumen_runtime::format::{Json, Utf8};
use flumen_runtime::join::StreamJoinKind;
use flumen_runtime::time::parse_duration;
use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig};

/// Pairs clicks and views of the same key close in event time.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(short = 'b', long = "bootstrap", env = "FLUMEN_BOOTSTRAP")]
    bootstrap: String,
    /// The clicks topic (values: JSON strings).
    #[arg(long)]
    clicks: String,
    /// The views topic (values: JSON strings), co-partitioned with the clicks.
    #[arg(long)]
    views: String,
    /// Where the pairs go.
    #[arg(long)]
    output: String,
    /// The largest difference in event time of a pair (`20ms`, `5s`).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    within: Duration,
    /// The application id: consumer group and internal topic prefix.
    #[arg(long, default_value = "click-join")]
    application_id: String,
    /// Worker threads in this process (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Process what the inputs hold now, commit, and exit.
    #[arg(long)]
    exit_at_end: bool,
    #[command(flatten)]
    run: common::RunFlags,
}

fn main() -> std::process::ExitCode {
    common::main("click_join", || run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut pipeline = Pipeline::new();
    pipeline
        .source2(
            Kafka::topic(&args.clicks).format(Json::<String>::new()),
            Kafka::topic(&args.views).format(Json::<String>::new()),
        )
        .join_within(
            args.within,
            StreamJoinKind::Inner,
            |click: Option<&String>, view: Option<&String>| {
                format!(
                    "{}+{}",
                    click.map_or("-", String::as_str),
                    view.map_or("-", String::as_str)
                )
            },
        )
        .to(&args.output, Utf8);
    let mut config = RuntimeConfig::new(&args.bootstrap, &args.application_id);
    if let Some(n) = args.workers {
        config = config.workers(n);
    }
    config = args.run.apply(config)?;
    let runtime = Runtime::new(config, pipeline);
    let summary = common::run(runtime, args.exit_at_end)?;
    eprintln!("click_join: {} records processed", summary.records_in());
    Ok(())
}
