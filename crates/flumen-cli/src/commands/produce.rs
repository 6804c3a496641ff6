//! `flumen produce`: records from stdin or a file, one per line, to a topic.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Args;
use flumen_client::producer::{
    DeliveryFuture, ProduceError, Producer, ProducerRecord, RecordMetadata,
};
use flumen_protocol::record::HeaderRef;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::error::{CliError, Result};

/// `flumen produce TOPIC`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  printf 'hello\\nworld\\n' | flumen -b localhost:9092 produce greetings
  printf 'user1:clicked\\n' | flumen -b localhost:9092 produce events --key-separator : --header source=cli
  flumen -b localhost:9092 produce events --file events.txt -X acks=all -X compression.type=zstd")]
pub struct ProduceArgs {
    /// The topic to write to.
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without SEP have no key).
    #[arg(short = 'K', long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record, KEY=VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Read records from this file instead of stdin.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Write every record to this partition (default: by key, sticky for unkeyed records).
    #[arg(short = 'p', long)]
    pub partition: Option<i32>,
}

/// One input line split into key and value.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The key, when the separator was found.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
}

/// Splits `line` (without its newline) at the first `separator`, as `kcat -K` does.
pub fn split_line<'a>(line: &'a [u8], separator: Option<&[u8]>) -> Line<'a> {
    if let Some(sep) = separator.filter(|s| !s.is_empty())
        && let Some(at) = memchr::memmem::find(line, sep)
    {
        return Line {
            key: Some(&line[..at]),
            value: &line[at + sep.len()..],
        };
    }
    Line {
        key: None,
        value: line,
    }
}

/// Strips one trailing `\n` (and a `\r` before it, or alone at the end).
pub fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses `--header` values.
pub fn parse_headers(raw: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    raw.iter()
        .map(|h| {
            h.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
                .ok_or_else(|| CliError::Usage(format!("--header {h:?}: expected KEY=VALUE")))
        })
        .collect()
}

/// Failures reported one by one before only counting them.
const REPORTED_FAILURES: u64 = 10;
/// Deliveries not yet known; beyond this `produce` waits for the oldest. About two
/// `buffer.memory`s' worth of 100-byte records, so the limit does not throttle the producer.
const MAX_PENDING: usize = 500_000;
/// Bytes asked of the input per read.
const READ_SIZE: usize = 1 << 20;
/// Chunks of input read ahead of the producer.
const READ_AHEAD: usize = 4;

/// Runs `produce`.
pub async fn run(args: ProduceArgs, mut settings: Settings) -> Result<ExitCode> {
    let headers = parse_headers(&args.headers)?;
    let header_refs: Vec<HeaderRef<'_>> = headers
        .iter()
        .map(|(k, v)| (k.as_bytes(), Some(v.as_slice())))
        .collect();
    settings.producer_throughput_defaults();
    let producer = super::producer(settings).await?;
    check_topic(&producer, &args.topic, args.partition).await?;

    let input: Box<dyn Read + Send> = match &args.file {
        Some(path) => Box::new(std::fs::File::open(path).map_err(|source| CliError::Io {
            context: format!("opening {}", path.display()),
            source,
        })?),
        None => Box::new(std::io::stdin()),
    };
    let mut chunks = spawn_reader(input)?;
    let separator = args.key_separator.as_deref().map(str::as_bytes);

    let started = Instant::now();
    let mut tally = Tally::default();
    // Every record's future, oldest first, with the record's line number.
    let mut pending: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
    let mut number = 0u64;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.map_err(|source| CliError::Io {
            context: "reading records".to_owned(),
            source,
        })?;
        for line in Lines::new(&chunk) {
            number += 1;
            let Line { key, value } = split_line(trim_newline(line), separator);
            let mut record = ProducerRecord::new(&args.topic)
                .value(value)
                .headers(&header_refs);
            record.key = key;
            record.partition = args.partition;
            match producer.send(record).await {
                Ok(delivery) => pending.push_back((number, delivery)),
                Err(e) => tally.failed(number, &e),
            }
            if pending.len() >= MAX_PENDING
                && let Some((n, oldest)) = pending.pop_front()
            {
                tally.record(n, oldest.await);
            }
        }
        tally.collect_done(&mut pending);
    }
    let flushed = producer.flush().await;
    for (n, delivery) in pending.drain(..) {
        tally.record(n, delivery.await);
    }
    let _ = producer.close(Duration::from_secs(5)).await;
    if let Err(e) = flushed
        && tally.failed == 0
    {
        return Err(CliError::produce(&e));
    }
    eprintln!(
        "Produced {} record(s) to {} in {:.2} s{}",
        tally.delivered,
        args.topic,
        started.elapsed().as_secs_f64(),
        if tally.failed > 0 {
            format!("; {} failed", tally.failed)
        } else {
            String::new()
        }
    );
    if tally.failed > 0 {
        return Err(CliError::Partial(format!(
            "{} of {number} record(s) were not delivered",
            tally.failed
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads `input` on a thread of its own (reads block; stdin cannot be read asynchronously
/// without one) in reads of up to [`READ_SIZE`], and hands over chunks of whole lines: each
/// chunk ends with a newline, except the last one when the input does not. A chunk is sent as
/// soon as a read completes a line, so lines typed at a terminal go out as they are typed.
fn spawn_reader(mut input: Box<dyn Read + Send>) -> Result<mpsc::Receiver<io::Result<Bytes>>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let read = move || {
        let mut scratch = vec![0u8; READ_SIZE];
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        loop {
            let n = match input.read(&mut scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if n == 0 {
                if !buf.is_empty() {
                    let _ = tx.blocking_send(Ok(buf.split().freeze()));
                }
                return;
            }
            let old = buf.len();
            buf.extend_from_slice(&scratch[..n]);
            if let Some(last) = memchr::memrchr(b'\n', &buf[old..]) {
                let whole_lines = buf.split_to(old + last + 1).freeze();
                if tx.blocking_send(Ok(whole_lines)).is_err() {
                    return;
                }
            }
        }
    };
    // A thread rather than `spawn_blocking`: a read blocked on a terminal must not hold the
    // runtime's shutdown when produce ends early on an error.
    std::thread::Builder::new()
        .name("flumen-produce-input".to_owned())
        .spawn(read)
        .map_err(|source| CliError::Io {
            context: "starting the input reader".to_owned(),
            source,
        })?;
    Ok(rx)
}

/// The lines of a chunk, without their newline; a last line without one is a line too.
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    /// The lines of `chunk`.
    pub fn new(chunk: &'a [u8]) -> Self {
        Lines { rest: chunk }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(at) => (&self.rest[..at], &self.rest[at + 1..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        Some(line)
    }
}

/// Fails early, with a clear line, on an unknown topic or partition.
pub async fn check_topic(producer: &Producer, topic: &str, partition: Option<i32>) -> Result<i32> {
    let metadata = producer.cluster().topic(topic).await?;
    let count = i32::try_from(metadata.partitions.len()).unwrap_or(i32::MAX);
    if let Some(p) = partition
        && !(0..count).contains(&p)
    {
        return Err(CliError::Usage(format!(
            "topic {topic} has {count} partition(s); there is no partition {p}"
        )));
    }
    Ok(count)
}

/// Delivered and failed records.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    failed: u64,
}

impl Tally {
    /// Takes the results already known from the front of `pending`, without waiting.
    fn collect_done(&mut self, pending: &mut VecDeque<(u64, DeliveryFuture)>) {
        while let Some((n, oldest)) = pending.front() {
            let Some(result) = oldest.try_result() else {
                break;
            };
            let n = *n;
            pending.pop_front();
            self.record(n, result);
        }
    }

    fn record(&mut self, number: u64, result: std::result::Result<RecordMetadata, ProduceError>) {
        match result {
            Ok(_) => self.delivered += 1,
            Err(e) => self.failed(number, &e),
        }
    }

    fn failed(&mut self, number: u64, e: &ProduceError) {
        self.failed += 1;
        if self.failed <= REPORTED_FAILURES {
            eprintln!(
                "flumen: record {number} not delivered: {}",
                CliError::produce(e)
            );
        } else if self.failed == REPORTED_FAILURES + 1 {
            eprintln!("flumen: more records failed; counting them in the summary only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let l = split_line(b"k:v:w", Some(b":"));
        assert_eq!(l.key, Some(&b"k"[..]));
        assert_eq!(l.value, b"v:w");
    }

    #[test]
    fn lines_without_separator_have_no_key() {
        assert_eq!(
            split_line(b"value", Some(b"::")),
            Line {
                key: None,
                value: b"value"
            }
        );
        assert_eq!(
            split_line(b"a:b", None),
            Line {
                key: None,
                value: b"a:b"
            }
        );
    }

    #[test]
    fn empty_key_and_value_are_kept() {
        let l = split_line(b":", Some(b":"));
        assert_eq!((l.key, l.value), (Some(&b""[..]), &b""[..]));
    }

    #[test]
    fn newlines_and_carriage_returns_are_trimmed_once() {
        assert_eq!(trim_newline(b"a\r\n"), b"a");
        assert_eq!(trim_newline(b"a\n\n"), b"a\n");
        assert_eq!(trim_newline(b"a"), b"a");
    }

    #[test]
    fn chunks_split_into_lines_with_or_without_a_last_newline() {
        let lines: Vec<&[u8]> = Lines::new(b"a\n\nb\r\nc").collect();
        assert_eq!(lines, [&b"a"[..], b"", b"b\r", b"c"]);
        assert_eq!(Lines::new(b"a\n").count(), 1);
        assert_eq!(Lines::new(b"").count(), 0);
        assert_eq!(trim_newline(b"b\r"), b"b");
    }

    #[test]
    fn headers_need_an_equals_sign() {
        let h = parse_headers(&["a=1".into(), "b=".into()]).expect("valid");
        assert_eq!(
            h,
            vec![("a".into(), b"1".to_vec()), ("b".into(), Vec::new())]
        );
        assert!(parse_headers(&["nope".into()]).is_err());
    }
}
