//! The command line: global options and the command tree (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands::{bench, consume, demo, groups, produce, run, topics};

const EXAMPLES: &str = "\
Examples:
  flumen -b localhost:9092 topics list
  flumen -b localhost:9092 topics create orders --partitions 6 --replication-factor 1
  printf 'k1:v1\\nk2:v2\\n' | flumen -b localhost:9092 produce orders --key-separator :
  flumen -b localhost:9092 consume orders --from-beginning --exit-at-end --format '%k %v\\n'
  flumen -b localhost:9092 groups describe billing
  flumen -b localhost:9093 -X security.protocol=SASL_PLAINTEXT -X sasl.mechanism=SCRAM-SHA-512 \\
         -X sasl.username=alice -X sasl.password=secret topics list
  flumen -b localhost:9094 -X security.protocol=SSL -X ssl.ca.location=ca.pem topics list
  flumen --config client.properties bench produce --records 1000000 --record-size 100
  flumen -b localhost:9092 run word_count.toml --set source.topics=lines --exit-at-end
  flumen demo";

/// Flumen: a pure-Rust Apache Kafka client and stream processor.
///
/// Client settings use the standard Kafka property names (as with the Java client and
/// kcat): pass them with -X key=value or in a --config file (TOML or .properties).
///
/// The producer commands (produce, bench produce, bench e2e, and bench consume's fill)
/// default to librdkafka's throughput settings, batch.size=1000000 and linger.ms=5 (bench
/// e2e: linger.ms=0, it measures latency), unless -X or --config sets them; the library
/// keeps the Java client's defaults (batch.size=16384, linger.ms=5).
#[derive(Parser, Debug)]
#[command(name = "flumen", version, about, long_about, after_help = EXAMPLES)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection options shared by every command.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...] (overrides bootstrap.servers).
    #[arg(
        short = 'b',
        long = "bootstrap",
        env = "FLUMEN_BOOTSTRAP",
        global = true,
        value_name = "HOST:PORT[,...]"
    )]
    pub bootstrap: Option<String>,
    /// A client property, e.g. -X security.protocol=SSL -X ssl.ca.location=ca.pem (repeatable;
    /// wins over --config).
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    pub properties: Vec<String>,
    /// A file of client properties: TOML (`*.toml`) or Java .properties (anything else).
    /// Goes before the command (`topics create --config` is a topic config).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What the client and the runtime log to stderr: a level (error, warn, info, debug,
    /// trace, off) or per-module directives, e.g. `warn,flumen_client::consumer=debug`
    /// [default: info for `run`, warn for the other commands].
    #[arg(long = "log", env = "FLUMEN_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List, describe, create, delete topics and change their configs.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// List, describe (with lag), delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Write records read from stdin (one per line) or a file to a topic
    /// [default: -X batch.size=1000000 -X linger.ms=5].
    Produce(produce::ProduceArgs),
    /// Read records from topics and print them (kcat-style --format).
    Consume(consume::ConsumeArgs),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Start a local Kafka (unless -b is given), send it user visits at a steady rate, run
    /// the visit_analytics pipeline on them and show each window's top URLs and the alerts
    /// as they come (--duration: stop after that many seconds).
    Demo(demo::DemoArgs),
    /// Run a stream-processing pipeline declared in a TOML file (--check: print its
    /// operator graph without connecting).
    Run(run::RunArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_are_accepted_after_the_command() {
        let cli = Cli::try_parse_from(["flumen", "topics", "list", "-b", "h:1", "-X", "a=b"])
            .expect("parses");
        assert_eq!(cli.global.bootstrap.as_deref(), Some("h:1"));
        assert_eq!(cli.global.properties, vec!["a=b".to_owned()]);
    }

    #[test]
    fn config_file_before_the_command_and_topic_config_after_it_do_not_clash() {
        let cli = Cli::try_parse_from([
            "flumen",
            "--config",
            "c.toml",
            "topics",
            "create",
            "t",
            "--config",
            "retention.ms=1",
        ])
        .expect("parses");
        assert_eq!(cli.global.config, Some(PathBuf::from("c.toml")));
        match cli.command {
            Command::Topics(topics::TopicsCommand::Create { configs, .. }) => {
                assert_eq!(configs, vec!["retention.ms=1".to_owned()]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
