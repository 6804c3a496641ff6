//! The `flumen` command-line tool.

use clap::Parser;

/// Flumen: a pure-Rust Apache Kafka client and stream processor.
#[derive(Parser, Debug)]
#[command(name = "flumen", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("flumen: no commands yet; see `flumen --help`");
}
