//! `flumen bench`: producer throughput, consumer throughput and end-to-end latency.

pub mod consume;
pub mod e2e;
pub mod produce;
pub mod report;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::config::{Origin, Settings};
use crate::error::Result;

/// `flumen bench ...`
#[derive(Subcommand, Debug)]
#[command(after_help = "Examples:
  flumen -b localhost:9092 bench produce --records 1000000 --record-size 100 --acks all
  flumen -b localhost:9092 bench consume --topic flumen-bench --records 1000000
  flumen -b localhost:9092 bench e2e --records 100000 --rate 10000 --json")]
pub enum BenchCommand {
    /// Producer throughput and acknowledgement latency
    /// [default: -X batch.size=1000000 -X linger.ms=5].
    Produce(BenchArgs),
    /// Consumer throughput (fills the topic first if it holds fewer records than asked).
    Consume(BenchArgs),
    /// Produce-to-consume latency: each record carries its send time
    /// [default: -X batch.size=1000000 -X linger.ms=0].
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
    /// Producer acknowledgements [default: all, or -X acks].
    #[arg(long, value_enum)]
    pub acks: Option<Acks>,
    /// Producer compression [default: none, or -X compression.type].
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
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

impl BenchArgs {
    /// Puts `--acks` and `--compression` into the producer settings (a flag wins over -X;
    /// without the flag, -X wins over the benchmark's default).
    pub fn apply_producer_options(&self, settings: &mut Settings) {
        match self.acks {
            Some(a) => settings.set("acks", a.property(), Origin::Command),
            None => settings.set_default("acks", Acks::All.property()),
        }
        match self.compression {
            Some(c) => settings.set("compression.type", c.property(), Origin::Command),
            None => settings.set_default("compression.type", Compression::None.property()),
        }
    }

    /// The value of record `i`: `record_size` bytes, varying so compression has work to do.
    pub fn payload(&self) -> Vec<u8> {
        (0..self.record_size)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + i / 36) % 36])
            .collect()
    }
}

/// Paces a loop at `rate` iterations per second (0: no pacing).
pub struct Pacer {
    start: std::time::Instant,
    rate: u64,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(rate: u64) -> Pacer {
        Pacer {
            start: std::time::Instant::now(),
            rate,
        }
    }

    /// Waits until iteration `i` is due.
    pub async fn wait(&self, i: u64) {
        if self.rate == 0 {
            return;
        }
        let due = self.start + std::time::Duration::from_secs_f64(i as f64 / self.rate as f64);
        let now = std::time::Instant::now();
        if due > now + std::time::Duration::from_millis(1) {
            tokio::time::sleep(due - now).await;
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
