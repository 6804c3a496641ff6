//! Counts words per event-time window: lines are split into words, re-keyed by word (a
//! repartition through `<application-id>-words-repartition`), and counted in tumbling windows
//! of `--window`. Each window's count goes to `--output` when the window closes, keyed by the
//! word, as JSON `{"window_start": ms, "window_end": ms, "count": n}`.
//!
//! Event time is the input record's timestamp; records may be up to `--max-out-of-orderness`
//! late. A record for a window closed less than `--allowed-lateness` ago updates it, and the
//! window's count is emitted again; records later than that go to `--output-late` when given
//! (else they are counted and logged).
//!
//! ```sh
//! cargo run --release -p flumen-runtime --example word_count -- \
//!     -b localhost:9092 --input lines --output word-counts --window 5s --exit-at-end
//! ```

use std::time::Duration;

use clap::Parser;

#[path = "common/mod.rs"]
mod common;
use flumen_runtime::format::{Json, Utf8};
use flumen_runtime::time::{Watermarks, parse_duration};
use flumen_runtime::window::Windows;
use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig};
use serde::Serialize;

/// Counts words per tumbling event-time window.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(short = 'b', long = "bootstrap", env = "FLUMEN_BOOTSTRAP")]
    bootstrap: String,
    /// The topic of text lines to read.
    #[arg(long)]
    input: String,
    /// The topic the counts go to.
    #[arg(long)]
    output: String,
    /// Records too late for their window go here (default: counted and logged).
    #[arg(long)]
    output_late: Option<String>,
    /// The window size (`5s`, `500ms`, `1m`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    window: Duration,
    /// How far out of order (in event time) records may arrive.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    max_out_of_orderness: Duration,
    /// How long after its close a window still takes late records (and emits again).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    allowed_lateness: Duration,
    /// A partition with no records for this long stops holding the windows back.
    #[arg(long, value_parser = parse_duration)]
    idleness: Option<Duration>,
    /// The application id.
    #[arg(long, default_value = "word-count")]
    application_id: String,
    /// Worker threads in this process.
    #[arg(long)]
    workers: Option<usize>,
    /// Process what the input holds now, close every window, commit, and exit.
    #[arg(long)]
    exit_at_end: bool,
    /// Serve `/metrics` (Prometheus), `/health` and a live page at this address.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    run: common::RunFlags,
}

/// One output value.
#[derive(Serialize)]
struct WindowCount {
    window_start: i64,
    window_end: i64,
    count: u64,
}

fn main() -> std::process::ExitCode {
    common::main("word_count", || run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut watermarks = Watermarks::bounded(args.max_out_of_orderness);
    if let Some(idle) = args.idleness {
        watermarks = watermarks.idleness(idle);
    }
    let mut pipeline = Pipeline::new();
    let words = pipeline
        .source(
            Kafka::topic(&args.input)
                .format(Utf8)
                .watermarks(watermarks),
        )
        .flat_map(|line: &str| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<String>>()
        })
        .key_by("words", |w: &String| w.clone(), Utf8)
        .window(Windows::tumbling(args.window))
        .allowed_lateness(args.allowed_lateness);
    let to_json = |w: flumen_runtime::window::Windowed<'_, u64>| WindowCount {
        window_start: w.start,
        window_end: w.end,
        count: w.value,
    };
    match &args.output_late {
        Some(late) => words
            .late_to(late, Utf8)
            .count()
            .map(to_json)
            .to(&args.output, Json::<WindowCount>::new()),
        None => words
            .count()
            .map(to_json)
            .to(&args.output, Json::<WindowCount>::new()),
    }
    let mut config = RuntimeConfig::new(&args.bootstrap, &args.application_id);
    if let Some(n) = args.workers {
        config = config.workers(n);
    }
    if let Some(addr) = args.metrics_addr {
        config = config.metrics_addr(addr);
    }
    config = args.run.apply(config)?;
    let runtime = Runtime::new(config, pipeline);
    let summary = common::run(runtime, args.exit_at_end)?;
    let late: u64 = summary
        .metrics()
        .tasks
        .iter()
        .flat_map(|t| &t.operators)
        .map(|o| o.records_late)
        .sum();
    eprintln!(
        "word_count: {} records processed, {late} late",
        summary.records_in()
    );
    Ok(())
}
