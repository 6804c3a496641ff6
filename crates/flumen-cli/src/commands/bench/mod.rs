//! `flumen bench`: producer throughput, consumer throughput and end-to-end latency.

pub mod consume;
pub mod e2e;
pub mod produce;
pub mod report;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::config::Settings;
use crate::error::Result;

/// `flumen bench ...`
#[derive(Subcommand, Debug)]
#[command(after_help = "Examples:
  flumen -b localhost:9092 bench produce --records 1000000 --record-size 100 --acks all
  flumen -b localhost:9092 bench consume --topic flumen-bench --records 1000000
  flumen -b localhost:9092 bench e2e --records 100000 --rate 10000 --json")]
pub enum BenchCommand {
    /// Producer throughput and acknowledgement latency.
    Produce(BenchArgs),
    /// Consumer throughput (fills the topic first if it holds fewer records than asked).
    Consume(BenchArgs),
    /// Produce-to-consume latency: each record carries its send time.
    E2e(BenchArgs),
}

/// Options shared by the benchmarks.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Topic to use (created with --partitions if missing).
    #[arg(short = 't', long, default_value = "flumen-bench")]
    pub topic: String,
    /// Number of records.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value size in bytes.
    #[arg(short = 's', long, default_value_t = 100)]
    pub record_size: usize,
    /// Partitions of the topic when it is created.
    #[arg(short = 'P', long, default_value_t = 6)]
    pub partitions: i32,
    /// Producer acknowledgements.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Producer compression.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Records per second to aim for (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// `--acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// No acknowledgement.
    #[value(name = "0")]
    None,
    /// The leader's.
    #[value(name = "1")]
    Leader,
    /// Every in-sync replica's.
    #[value(name = "all")]
    All,
}

impl Acks {
    /// The `acks` property value.
    pub fn property(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// `--compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The `compression.type` property value.
    pub fn property(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand, settings: Settings) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Produce(args) => produce::run(args, settings).await,
        BenchCommand::Consume(args) => consume::run(args, settings).await,
        BenchCommand::E2e(args) => e2e::run(args, settings).await,
    }
}
