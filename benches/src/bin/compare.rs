//! `compare`: the same workload through Flumen, rust-rdkafka, rskafka and kcat.
//!
//! `cargo run --release -p flumen-benches --bin compare -- produce --records N --record-size S --partitions P`

use clap::{Parser, Subcommand};
use flumen_benches::compare::{self, Broker, ConsumeArgs, ProduceArgs};

#[derive(Parser)]
#[command(about = "Compare Kafka clients on the same broker and workload")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce N records of S bytes over P partitions with each client (acks=all, linger 5 ms).
    Produce(ProduceArgs),
    /// Consume N records of S bytes from P partitions with each client.
    Consume(ConsumeArgs),
    /// Run a job with the runtime and with a hand-written client loop on the same input.
    Pipeline(compare::pipeline::PipelineArgs),
    /// Restore a task's window state (one key per input record) from its changelog.
    Restore(compare::restore::RestoreArgs),
    /// Time `flumen produce` and `flumen consume` against `kcat -P` and `kcat -C`.
    Cli(compare::cli::CliArgs),
}

fn main() {
    let cli = Cli::parse();
    let broker = match Broker::get() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("no broker: {e}");
            std::process::exit(2);
        }
    };
    match &cli.command {
        Command::Produce(args) => finish(compare::produce::run(args, &broker), |r| {
            compare::print_results(&r, args.json)
        }),
        Command::Consume(args) => finish(compare::consume::run(args, &broker), |r| {
            compare::print_results(&r, args.json)
        }),
        Command::Cli(args) => finish(compare::cli::run(args, &broker), |r| {
            compare::cli::print(&r, args.json)
        }),
        Command::Restore(args) => finish(compare::restore::run(args, &broker), |r| {
            compare::restore::print(&r, args.json)
        }),
        Command::Pipeline(args) => match args.latency_rate {
            Some(rate) => finish(compare::pipeline::latency(args, &broker, rate), |results| {
                if args.json {
                    return compare::print_json_lines(&results);
                }
                for r in results {
                    println!(
                        "{} x{} at {} records/s offered: {} measured, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
                        r.engine,
                        r.workers,
                        r.offered_per_s,
                        r.records,
                        r.p50_ms,
                        r.p99_ms,
                        r.p999_ms,
                        r.max_ms
                    );
                }
            }),
            None => finish(compare::pipeline::run(args, &broker), |r| {
                compare::pipeline::print(&r, args.json)
            }),
        },
    }
}

/// Prints a comparison's results, or its error and exits with 1.
fn finish<T>(results: Result<T, String>, print: impl FnOnce(T)) {
    match results {
        Ok(results) => print(results),
        Err(e) => {
            eprintln!("compare failed: {e}");
            std::process::exit(1);
        }
    }
}
