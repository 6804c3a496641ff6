//! `compare cli`: Flumen's command line against kcat's, timed as a user types them.
//!
//! Each round, for each tool in turn (the order reversed every other round):
//!
//! - produce: the same file of `--records` lines of `--record-size` bytes on stdin, into a
//!   fresh one-partition topic, both tools with `acks=all` and idempotence on and otherwise
//!   their own defaults (Flumen's producer commands default to librdkafka's `batch.size`
//!   and `linger.ms`); the partition's end offset is checked against the line count;
//! - consume: one round's topic (Flumen's on even rounds, kcat's on odd ones) from the
//!   beginning to its end, one value and a newline per record (both tools' default
//!   format), to `/dev/null`.
//!
//! Wall time is from spawning the program to its exit, so it includes connecting and
//! fetching metadata, as a user waits for them; CPU time is the child's user + system time.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use flumen_client::TopicPartition;
use flumen_client::admin::{IsolationLevel, OffsetSpec};

use super::{Broker, ClientKind, ClientResult, RoundResult, Tally, new_histogram};

/// Arguments of `compare cli`.
#[derive(Args, Clone, Debug)]
pub struct CliArgs {
    /// Lines (records) per round.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Bytes per line, without its newline (the record's value).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Rounds per tool (alternating between the tools).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// The `flumen` program; by default the one next to this program
    /// (`cargo build --release -p flumen-cli`).
    #[arg(long)]
    pub flumen: Option<PathBuf>,
    /// The `kcat` program.
    #[arg(long, default_value = "kcat")]
    pub kcat: PathBuf,
    /// Print one JSON object per tool and direction instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The two command lines compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Flumen,
    Kcat,
}

impl Tool {
    fn produce_name(self) -> &'static str {
        match self {
            Tool::Flumen => "flumen produce",
            Tool::Kcat => "kcat -P",
        }
    }

    fn consume_name(self) -> &'static str {
        match self {
            Tool::Flumen => "flumen consume",
            Tool::Kcat => "kcat -C",
        }
    }
}

/// The programs and the broker a round runs against.
struct Programs {
    flumen: PathBuf,
    kcat: PathBuf,
    bootstrap: String,
}

impl Programs {
    /// The producer command: the same delivery guarantees for both tools.
    fn produce(&self, tool: Tool, topic: &str) -> Command {
        let guarantees = ["-X", "acks=all", "-X", "enable.idempotence=true"];
        match tool {
            Tool::Flumen => {
                let mut c = Command::new(&self.flumen);
                c.args(["-b", &self.bootstrap])
                    .args(guarantees)
                    .args(["produce", topic]);
                c
            }
            Tool::Kcat => {
                let mut c = Command::new(&self.kcat);
                c.args(["-P", "-b", &self.bootstrap, "-t", topic])
                    .args(guarantees);
                c
            }
        }
    }

    /// The consumer command: from the beginning to the end, values and newlines.
    fn consume(&self, tool: Tool, topic: &str) -> Command {
        match tool {
            Tool::Flumen => {
                let mut c = Command::new(&self.flumen);
                c.args([
                    "-b",
                    &self.bootstrap,
                    "consume",
                    topic,
                    "--from-beginning",
                    "--exit-at-end",
                ]);
                c
            }
            Tool::Kcat => {
                let mut c = Command::new(&self.kcat);
                c.args([
                    "-C",
                    "-b",
                    &self.bootstrap,
                    "-t",
                    topic,
                    "-o",
                    "beginning",
                    "-e",
                    "-q",
                ]);
                c
            }
        }
    }
}

/// The figures of one tool in one direction over all rounds.
struct Side {
    name: &'static str,
    tally: Tally,
}

impl Side {
    fn new(name: &'static str, kind: ClientKind) -> Self {
        Side {
            name,
            tally: Tally::new(kind),
        }
    }

    fn result(&self) -> ClientResult {
        let mut r = self.tally.result();
        r.client = self.name.to_owned();
        r
    }
}

/// Runs the comparison; results in the order flumen produce, kcat -P, flumen consume,
/// kcat -C.
pub fn run(args: &CliArgs, broker: &Broker) -> Result<Vec<ClientResult>, String> {
    let flumen = match &args.flumen {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("flumen"),
    };
    if !flumen.is_file() {
        return Err(format!(
            "no flumen program at {} (cargo build --release -p flumen-cli, or --flumen PATH)",
            flumen.display()
        ));
    }
    let programs = Programs {
        flumen,
        kcat: args.kcat.clone(),
        bootstrap: broker.bootstrap.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let input = InputFile::write(args.records, args.record_size)?;
    let tools = [Tool::Flumen, Tool::Kcat];
    // A tally needs a client kind; kcat is librdkafka's command line.
    let kind = |t: Tool| match t {
        Tool::Flumen => ClientKind::Flumen,
        Tool::Kcat => ClientKind::Rdkafka,
    };
    let mut produce: Vec<Side> = tools
        .iter()
        .map(|&t| Side::new(t.produce_name(), kind(t)))
        .collect();
    let mut consume: Vec<Side> = tools
        .iter()
        .map(|&t| Side::new(t.consume_name(), kind(t)))
        .collect();
    // One unmeasured round first, as `compare produce` does: a fresh broker runs slower
    // until its JIT has compiled the produce and fetch paths.
    for round in 0..=args.rounds {
        let measured = round > 0;
        let label = if measured {
            format!("round {}", round - 1)
        } else {
            "warm-up".to_owned()
        };
        let mut order = vec![0, 1];
        if round % 2 == 1 {
            order.reverse();
        }
        let mut topics = [String::new(), String::new()];
        for &i in &order {
            let tool = tools[i];
            let topic = runtime.block_on(broker.create_topic("compare-cli", 1))?;
            let mut command = programs.produce(tool, &topic);
            command.stdin(input.open()?);
            let result = time(command, args.records, args.record_size)
                .map_err(|e| format!("{} ({label}): {e}", tool.produce_name()))?;
            let end = runtime.block_on(end_offset(broker, &topic))?;
            if end != args.records as i64 {
                return Err(format!(
                    "{} ({label}) wrote {end} records, not {}",
                    tool.produce_name(),
                    args.records
                ));
            }
            report(&label, tool.produce_name(), &result);
            if measured {
                produce[i].tally.add(&result);
            }
            topics[i] = topic;
        }
        let read = &topics[round as usize % 2];
        for &i in &order {
            let tool = tools[i];
            let mut command = programs.consume(tool, read);
            command.stdin(Stdio::null());
            let result = time(command, args.records, args.record_size)
                .map_err(|e| format!("{} ({label}): {e}", tool.consume_name()))?;
            report(&label, tool.consume_name(), &result);
            if measured {
                consume[i].tally.add(&result);
            }
        }
        for topic in &topics {
            runtime.block_on(broker.delete_topic(topic));
        }
    }
    Ok(produce.iter().chain(&consume).map(Side::result).collect())
}

fn report(label: &str, name: &str, r: &RoundResult) {
    eprintln!(
        "{label} {name}: {:.0} records/s, {:.2} s, cpu {:.2}s",
        r.records as f64 / r.elapsed.as_secs_f64(),
        r.elapsed.as_secs_f64(),
        r.cpu.as_secs_f64()
    );
}

/// Runs `command` to its end with its output to `/dev/null`: wall and CPU time.
fn time(mut command: Command, records: u64, record_size: usize) -> Result<RoundResult, String> {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let cpu0 = children_cpu();
    let start = Instant::now();
    let output = command
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    let elapsed = start.elapsed();
    let cpu = children_cpu().saturating_sub(cpu0);
    if !output.status.success() {
        return Err(format!(
            "exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(RoundResult {
        records,
        bytes: records * record_size as u64,
        elapsed,
        cpu,
        latency_us: new_histogram(),
    })
}

/// User + system time of the children waited for so far (the broker, still running, is
/// not among them).
fn children_cpu() -> Duration {
    super::rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// The end offset of partition 0 of `topic`.
async fn end_offset(broker: &Broker, topic: &str) -> Result<i64, String> {
    let tp = TopicPartition::new(topic, 0);
    let answers = broker
        .admin()
        .await?
        .list_offsets(
            &[(tp.clone(), OffsetSpec::Latest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .map_err(|e| e.to_string())?;
    match answers.get(&tp) {
        Some(Ok(listed)) => Ok(listed.offset),
        Some(Err(e)) => Err(format!("end offset of {topic}: {e}")),
        None => Err(format!("no end offset for {topic}")),
    }
}

/// The input lines, in a file removed on drop.
struct InputFile {
    path: PathBuf,
}

impl InputFile {
    fn write(records: u64, record_size: usize) -> Result<InputFile, String> {
        let path = std::env::temp_dir().join(format!(
            "flumen-compare-cli-{}-{records}x{record_size}.txt",
            std::process::id()
        ));
        let mut line = super::payload(record_size);
        line.push(b'\n');
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let input = InputFile { path };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        for _ in 0..records {
            out.write_all(&line)
                .map_err(|e| format!("writing {}: {e}", input.path.display()))?;
        }
        out.flush()
            .map_err(|e| format!("writing {}: {e}", input.path.display()))?;
        Ok(input)
    }

    fn open(&self) -> Result<std::fs::File, String> {
        std::fs::File::open(&self.path).map_err(|e| format!("opening {}: {e}", self.path.display()))
    }
}

impl Drop for InputFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Prints the results: a table and the ratios of Flumen's commands to kcat's, or one JSON
/// object per line.
pub fn print(results: &[ClientResult], json: bool) {
    if json {
        return super::print_json_lines(results);
    }
    println!(
        "{:<16} {:>10} {:>10} {:>14}",
        "command", "records/s", "MB/s", "CPU s/M rec"
    );
    for r in results {
        println!(
            "{:<16} {:>10.0} {:>10.1} {:>14.3}",
            r.client, r.records_per_s, r.mb_per_s, r.cpu_s_per_million
        );
    }
    let find = |name: &str| results.iter().find(|r| r.client == name);
    for (ours, theirs) in [("flumen produce", "kcat -P"), ("flumen consume", "kcat -C")] {
        if let (Some(a), Some(b)) = (find(ours), find(theirs)) {
            println!(
                "{ours} vs {theirs}: {}, {:.2}x CPU per record",
                super::throughput_ratio(a, b),
                a.cpu_s_per_million / b.cpu_s_per_million
            );
        }
    }
}
