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
    if let Command::Cli(args) = &cli.command {
        match compare::cli::run(args, &broker) {
            Ok(results) => compare::cli::print(&results, args.json),
            Err(e) => {
                eprintln!("compare failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Command::Restore(args) = &cli.command {
        match compare::restore::run(args, &broker) {
            Ok(results) => compare::restore::print(&results, args.json),
            Err(e) => {
                eprintln!("compare failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Command::Pipeline(args) = &cli.command {
        if let Some(rate) = args.latency_rate {
            match compare::pipeline::latency(args, &broker, rate) {
                Ok(results) => {
                    for r in results {
                        if args.json {
                            println!("{}", serde_json::to_string(&r).unwrap_or_default());
                        } else {
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
                    }
                }
                Err(e) => {
                    eprintln!("compare failed: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        match compare::pipeline::run(args, &broker) {
            Ok(results) => compare::pipeline::print(&results, args.json),
            Err(e) => {
                eprintln!("compare failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let (results, json) = match &cli.command {
        Command::Pipeline(_) | Command::Restore(_) | Command::Cli(_) => {
            unreachable!("handled above")
        }
        Command::Produce(args) => (compare::produce::run(args, &broker), args.json),
        Command::Consume(args) => (compare::consume::run(args, &broker), args.json),
    };
    match results {
        Ok(results) => compare::print_results(&results, json),
        Err(e) => {
            eprintln!("compare failed: {e}");
            std::process::exit(1);
        }
    }
}
