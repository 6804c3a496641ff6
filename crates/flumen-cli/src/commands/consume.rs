//! `flumen consume`: read topics and print records in a kcat-style format.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, ValueEnum};
use flumen_client::admin::{IsolationLevel, OffsetAndMetadata, OffsetSpec};
use flumen_client::consumer::{CommitOnRevoke, Consumer, RebalanceListener};
use flumen_client::{Admin, TopicPartition};

use crate::config::{Origin, Settings};
use crate::error::{CliError, Result};

/// `flumen consume TOPIC...`
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "offset", "from_time"])))]
#[command(after_help = "Format placeholders (kcat's):
  %t topic   %p partition   %o offset   %k key   %v value   %T timestamp (ms)
  %h headers (k=v,k=v)   %K key length   %S value length   %% a percent sign
  escapes: \\n \\t \\r \\\\

Examples:
  flumen -b localhost:9092 consume events --from-beginning --exit-at-end
  flumen -b localhost:9092 consume events --group billing --format '%k=%v (p%p @%o)\\n'
  flumen -b localhost:9092 consume events --from-time -10m --max-messages 100")]
pub struct ConsumeArgs {
    /// Topics to read.
    #[arg(required = true)]
    pub topics: Vec<String>,
    /// Start at the beginning of each partition.
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset in each partition (a negative N: N records before the end).
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time: milliseconds since the epoch, or
    /// relative like -10m, -2h, -1d.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub from_time: Option<FromTime>,
    /// Only these partitions (repeatable; default all).
    #[arg(short = 'p', long = "partition", value_name = "N")]
    pub partitions: Vec<i32>,
    /// Consume as a member of this group (offsets are committed; Ctrl-C commits and leaves).
    #[arg(short = 'G', long)]
    pub group: Option<String>,
    /// Stop after this many records.
    #[arg(short = 'c', long)]
    pub max_messages: Option<u64>,
    /// Output format for each record.
    #[arg(short = 'f', long, default_value = "%v\\n")]
    pub format: String,
    /// Whether records of open or aborted transactions are shown (default read_uncommitted,
    /// or -X isolation.level).
    #[arg(long, value_enum)]
    pub isolation: Option<Isolation>,
    /// Exit once every partition has been read to its end.
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
}

/// `--isolation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    /// Everything written.
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    /// Only committed transactional data.
    #[value(name = "read_committed")]
    ReadCommitted,
}

/// `--from-time`: absolute or relative to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromTime {
    /// Milliseconds since the epoch.
    At(i64),
    /// Milliseconds before now.
    Ago(i64),
}

impl FromTime {
    /// The time in milliseconds since the epoch, given the current time.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            FromTime::At(t) => t,
            FromTime::Ago(d) => now_ms.saturating_sub(d),
        }
    }
}

impl std::str::FromStr for FromTime {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("expected milliseconds since the epoch or -N[s|m|h|d], got {s:?}");
        if let Some(rel) = s.strip_prefix('-') {
            let (digits, unit) =
                rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
            let n: i64 = digits.parse().map_err(|_| bad())?;
            let scale = match unit {
                "ms" => 1,
                "" | "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            return n.checked_mul(scale).map(FromTime::Ago).ok_or_else(bad);
        }
        s.parse().map(FromTime::At).map_err(|_| bad())
    }
}

/// One piece of a compiled `--format`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    KeyLen,
    ValueLen,
}

/// A compiled kcat-style output format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
}

/// What the format needs from one record.
#[derive(Clone, Copy, Debug)]
pub struct RecordFields<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// Key (`None`: null).
    pub key: Option<&'a [u8]>,
    /// Value (`None`: null).
    pub value: Option<&'a [u8]>,
}

impl Format {
    /// Compiles `spec`; an unknown `%x` is an error naming it.
    pub fn parse(spec: &str) -> Result<Format> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = spec.chars();
        let flush = |text: &mut Vec<u8>, pieces: &mut Vec<Piece>| {
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(text)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('k') => Piece::Key,
                        Some('v') | Some('s') => Piece::Value,
                        Some('T') => Piece::Timestamp,
                        Some('h') => Piece::Headers,
                        Some('K') => Piece::KeyLen,
                        Some('S') => Piece::ValueLen,
                        Some('%') => {
                            text.push(b'%');
                            continue;
                        }
                        other => {
                            return Err(CliError::Usage(format!(
                                "--format: unknown placeholder %{} (use %t %p %o %k %v %T %h %K %S %%)",
                                other.map(String::from).unwrap_or_default()
                            )));
                        }
                    };
                    flush(&mut text, &mut pieces);
                    pieces.push(piece);
                }
                '\\' => match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('r') => text.push(b'\r'),
                    Some('0') => text.push(0),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        text.push(b'\\');
                        let mut buf = [0; 4];
                        text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => text.push(b'\\'),
                },
                other => {
                    let mut buf = [0; 4];
                    text.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        flush(&mut text, &mut pieces);
        Ok(Format { pieces })
    }

    /// Appends one record, formatted, to `out`. `headers` yields (key, value) pairs.
    pub fn write<'h>(
        &self,
        out: &mut Vec<u8>,
        r: &RecordFields<'_>,
        headers: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)> + Clone,
    ) {
        use std::io::Write;
        for piece in &self.pieces {
            // Writing into a Vec cannot fail.
            let _ = match piece {
                Piece::Text(t) => out.write_all(t),
                Piece::Topic => out.write_all(r.topic.as_bytes()),
                Piece::Partition => write!(out, "{}", r.partition),
                Piece::Offset => write!(out, "{}", r.offset),
                Piece::Timestamp => write!(out, "{}", r.timestamp),
                Piece::Key => out.write_all(r.key.unwrap_or_default()),
                Piece::Value => out.write_all(r.value.unwrap_or_default()),
                Piece::KeyLen => write!(out, "{}", r.key.map_or(-1, |k| k.len() as i64)),
                Piece::ValueLen => write!(out, "{}", r.value.map_or(-1, |v| v.len() as i64)),
                Piece::Headers => {
                    for (i, (k, v)) in headers.clone().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k);
                        out.push(b'=');
                        out.extend_from_slice(v.unwrap_or_default());
                    }
                    Ok(())
                }
            };
        }
    }
}

/// Runs `consume`.
pub async fn run(args: ConsumeArgs, mut settings: Settings) -> Result<ExitCode> {
    let format = Format::parse(&args.format)?;
    if args.group.is_some() && (args.offset.is_some() || args.from_time.is_some()) {
        return Err(CliError::Usage(
            "--offset and --from-time pick partitions' positions; with --group use \
             `flumen groups reset-offsets` first"
                .into(),
        ));
    }
    if args.group.is_some() && !args.partitions.is_empty() {
        return Err(CliError::Usage(
            "--partition cannot be combined with --group (the group assigns partitions)".into(),
        ));
    }
    if let Some(group) = &args.group {
        settings.set("group.id", group, Origin::Command);
        let reset = if args.from_beginning {
            "earliest"
        } else {
            "latest"
        };
        settings.set_default("auto.offset.reset", reset);
        // Commits cover exactly the printed records, not whole polls.
        settings.set_default("enable.auto.commit", "false");
    }
    if let Some(isolation) = args.isolation {
        settings.set("isolation.level", isolation.property(), Origin::Command);
    }
    let mut consumer = super::consumer(settings).await?;
    let admin = Admin::new(consumer.cluster().clone());
    let isolation = consumer.config().isolation_level;

    // The next offset after the last printed record, per partition: what a group commits,
    // periodically, at exit, and (through the listener) before partitions are revoked.
    let printed_upto = Printed::default();
    // Without a group the partitions are assigned here and positioned as asked.
    let mut ends: Option<BTreeMap<TopicPartition, i64>> = None;
    if args.group.is_none() {
        let mut partitions = Vec::new();
        for topic in &args.topics {
            let count = admin.describe_topic(topic).await?.partitions.len();
            let count = i32::try_from(count).unwrap_or(i32::MAX);
            for p in &args.partitions {
                if !(0..count).contains(p) {
                    return Err(CliError::Usage(format!(
                        "topic {topic} has {count} partition(s); there is no partition {p}"
                    )));
                }
            }
            partitions.extend(
                (0..count)
                    .filter(|p| args.partitions.is_empty() || args.partitions.contains(p))
                    .map(|p| TopicPartition::new(topic, p)),
            );
        }
        consumer
            .assign(partitions.clone())
            .map_err(CliError::consume)?;
        let end = offsets(&admin, &partitions, OffsetSpec::Latest, isolation).await?;
        if args.from_beginning {
            consumer
                .seek_to_beginning(&partitions)
                .map_err(CliError::consume)?;
        } else if let Some(n) = args.offset {
            let start = offsets(&admin, &partitions, OffsetSpec::Earliest, isolation).await?;
            for tp in &partitions {
                let (lo, hi) = (start[tp], end[tp]);
                let at = if n >= 0 { n } else { hi.saturating_add(n) };
                consumer
                    .seek(tp, at.clamp(lo, hi))
                    .map_err(CliError::consume)?;
            }
        } else if let Some(t) = args.from_time {
            let at = t.resolve(now_ms());
            let found = offsets(&admin, &partitions, OffsetSpec::Timestamp(at), isolation).await?;
            for tp in &partitions {
                // -1: no record at or after that time, so start at the end.
                let offset = if found[tp] < 0 { end[tp] } else { found[tp] };
                consumer.seek(tp, offset).map_err(CliError::consume)?;
            }
        } else {
            consumer
                .seek_to_end(&partitions)
                .map_err(CliError::consume)?;
        }
        ends = Some(end);
    } else {
        let topics: Vec<&str> = args.topics.iter().map(String::as_str).collect();
        for topic in &topics {
            admin.describe_topic(topic).await?;
        }
        consumer.subscribe(&topics).map_err(CliError::consume)?;
        consumer.set_rebalance_listener(printed_upto.clone());
    }

    let started = Instant::now();
    let mut printed = 0u64;
    let mut out = Vec::with_capacity(1 << 16);
    let stdout = std::io::stdout();
    let max = args.max_messages.unwrap_or(u64::MAX);
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut broken_pipe = false;
    // This poll's printed positions; they join `printed_upto` once stdout is flushed, so that
    // nothing committed is unprinted.
    let mut polled_upto: BTreeMap<TopicPartition, OffsetAndMetadata> = BTreeMap::new();
    let mut last_commit = Instant::now();
    'poll: while printed < max {
        if args.exit_at_end && at_end(&mut consumer, ends.as_ref()).await? {
            break;
        }
        let polled = tokio::select! {
            r = consumer.poll(POLL_INTERVAL) => r,
            _ = &mut interrupted => break 'poll,
        };
        let mut records = polled.map_err(CliError::consume)?;
        out.clear();
        polled_upto.clear();
        'partitions: for part in records.partitions_mut() {
            let tp = part.topic_partition().clone();
            let mut last = None;
            for record in part.iter() {
                let record = record.map_err(CliError::consume)?;
                let fields = RecordFields {
                    topic: record.topic(),
                    partition: record.partition(),
                    offset: record.offset(),
                    timestamp: record.timestamp(),
                    key: record.key(),
                    value: record.value(),
                };
                format.write(&mut out, &fields, record.headers());
                printed += 1;
                last = Some(record.offset());
                if printed >= max {
                    if let Some(offset) = last {
                        polled_upto.insert(tp, OffsetAndMetadata::new(offset + 1));
                    }
                    break 'partitions;
                }
            }
            if let Some(offset) = last {
                polled_upto.insert(tp, OffsetAndMetadata::new(offset + 1));
            }
        }
        if !out.is_empty() {
            let mut lock = stdout.lock();
            if let Err(e) = lock.write_all(&out).and_then(|()| lock.flush()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    broken_pipe = true;
                    break;
                }
                return Err(CliError::Io {
                    context: "writing to stdout".into(),
                    source: e,
                });
            }
        }
        printed_upto.extend(&mut polled_upto);
        if args.group.is_some() && last_commit.elapsed() >= COMMIT_INTERVAL {
            let offsets = printed_upto.snapshot();
            if !offsets.is_empty() {
                consumer
                    .commit_offsets_sync(offsets)
                    .await
                    .map_err(CliError::consume)?;
            }
            last_commit = Instant::now();
        }
    }
    // With a group, commit what was printed, and nothing past it (`close` hands the same
    // offsets to the listener's revocation again; a static member keeps its partitions).
    let offsets = printed_upto.snapshot();
    if args.group.is_some() && !offsets.is_empty() {
        consumer
            .commit_offsets_sync(offsets)
            .await
            .map_err(CliError::consume)?;
    }
    consumer.close().await.map_err(CliError::consume)?;
    if !broken_pipe {
        eprintln!(
            "Consumed {printed} record(s) in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a group member has printed: per partition it owns, the offset after the last record
/// written to stdout and flushed. The print loop adds to it after each flush; as the consumer's
/// rebalance listener it hands the revoked partitions' offsets over to be committed while this
/// member still owns them (all of them at the start of an eager rebalance), so the next owner
/// starts right after what was printed. Lost partitions are forgotten without a commit.
#[derive(Clone, Debug, Default)]
struct Printed(Arc<Mutex<BTreeMap<TopicPartition, OffsetAndMetadata>>>);

impl Printed {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, OffsetAndMetadata>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves one poll's flushed positions in (once per poll, not per record).
    fn extend(&self, polled: &mut BTreeMap<TopicPartition, OffsetAndMetadata>) {
        if !polled.is_empty() {
            self.lock().append(polled);
        }
    }

    fn snapshot(&self) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        self.lock().clone()
    }

    /// Takes the entries of `partitions` out: once revoked or lost, a partition's offsets are
    /// its next owner's to commit.
    fn take(&self, partitions: &[TopicPartition]) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        let mut printed = self.lock();
        partitions
            .iter()
            .filter_map(|tp| printed.remove_entry(tp))
            .collect()
    }
}

impl RebalanceListener for Printed {
    fn commit_on_revoke(&mut self, partitions: &[TopicPartition]) -> Option<CommitOnRevoke> {
        let offsets = self.take(partitions);
        Some(Box::pin(async move { offsets }))
    }

    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.take(partitions);
    }
}

/// How often a group consumer commits what it printed (and once more at exit).
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// How long one `poll` waits before the loop checks its exit conditions again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Whether every partition has been read up to the end seen at start (assigned), or the
/// consumer has caught up with every assigned partition (group).
async fn at_end(
    consumer: &mut Consumer,
    ends: Option<&BTreeMap<TopicPartition, i64>>,
) -> Result<bool> {
    match ends {
        Some(ends) => {
            for (tp, end) in ends {
                if consumer.position(tp).await.map_err(CliError::consume)? < *end {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        None => {
            let assigned = consumer.assignment();
            Ok(!assigned.is_empty() && assigned.iter().all(|tp| consumer.lag(tp) == Some(0)))
        }
    }
}

/// One offset per partition, or an error naming the partition that has none.
async fn offsets(
    admin: &Admin,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
    isolation: IsolationLevel,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let specs: Vec<_> = partitions.iter().map(|tp| (tp.clone(), spec)).collect();
    let mut out = BTreeMap::new();
    for (tp, result) in admin.list_offsets(&specs, isolation).await? {
        let listed = result.map_err(|e| CliError::during(format!("listing offsets of {tp}"), e))?;
        out.insert(tp, listed.offset);
    }
    for tp in partitions {
        if !out.contains_key(tp) {
            return Err(CliError::Client(format!("no offset listed for {tp}")));
        }
    }
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Isolation {
    /// The `isolation.level` property value.
    pub fn property(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(spec: &str, headers: &[(&[u8], Option<&[u8]>)]) -> String {
        let f = Format::parse(spec).expect("valid format");
        let r = RecordFields {
            topic: "t",
            partition: 2,
            offset: 41,
            timestamp: 1_700_000_000_000,
            key: Some(b"k"),
            value: Some(b"v"),
        };
        let mut out = Vec::new();
        f.write(&mut out, &r, headers.iter().copied());
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn every_placeholder_renders() {
        assert_eq!(
            render("%t/%p/%o %k=%v %T %K %S 100%%\\n", &[]),
            "t/2/41 k=v 1700000000000 1 1 100%\n"
        );
    }

    #[test]
    fn headers_render_as_comma_separated_pairs() {
        assert_eq!(render("%h", &[(b"a", Some(b"1")), (b"b", None)]), "a=1,b=");
    }

    #[test]
    fn unknown_placeholder_is_refused() {
        let err = Format::parse("%x").unwrap_err();
        assert!(err.to_string().contains("%x"), "{err}");
    }

    #[test]
    fn printed_offsets_of_revoked_partitions_are_handed_over_once_and_lost_ones_dropped() {
        let tp = |p| TopicPartition::new("t", p);
        let mut printed = Printed::default();
        let mut polled = BTreeMap::from([
            (tp(0), OffsetAndMetadata::new(10)),
            (tp(1), OffsetAndMetadata::new(20)),
            (tp(2), OffsetAndMetadata::new(30)),
        ]);
        printed.extend(&mut polled);
        assert!(polled.is_empty());

        let handed = printed.commit_on_revoke(&[tp(0), tp(3)]).expect("offsets");
        let handed = futures::executor::block_on(handed);
        assert_eq!(
            handed,
            BTreeMap::from([(tp(0), OffsetAndMetadata::new(10))])
        );
        printed.on_partitions_lost(&[tp(1)]);
        // Only the partition still owned is left for the periodic and exit commits.
        assert_eq!(
            printed.snapshot(),
            BTreeMap::from([(tp(2), OffsetAndMetadata::new(30))])
        );
        let again =
            futures::executor::block_on(printed.commit_on_revoke(&[tp(0)]).expect("offsets"));
        assert!(again.is_empty(), "handed over twice: {again:?}");
    }

    #[test]
    fn from_time_accepts_absolute_and_relative() {
        assert_eq!("1700000000000".parse(), Ok(FromTime::At(1_700_000_000_000)));
        assert_eq!("-10m".parse(), Ok(FromTime::Ago(600_000)));
        assert_eq!("-5".parse(), Ok(FromTime::Ago(5_000)));
        assert_eq!(FromTime::Ago(1_000).resolve(5_000), 4_000);
        assert!("-3w".parse::<FromTime>().is_err());
        assert!("yesterday".parse::<FromTime>().is_err());
    }
}
