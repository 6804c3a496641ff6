//! `flumen produce`: records from stdin or a file, one per line, to a topic.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use flumen_client::producer::{ProduceError, Producer, ProducerRecord, RecordMetadata};
use flumen_protocol::record::HeaderRef;
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

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
        && let Some(at) = line.windows(sep.len()).position(|w| w == sep)
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

/// Strips one trailing `\n` (and a `\r` before it).
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
/// Deliveries awaited together; beyond this `produce` waits for the oldest.
const MAX_PENDING: usize = 50_000;

/// Runs `produce`.
pub async fn run(args: ProduceArgs, settings: Settings) -> Result<ExitCode> {
    let headers = parse_headers(&args.headers)?;
    let header_refs: Vec<HeaderRef<'_>> = headers
        .iter()
        .map(|(k, v)| (k.as_bytes(), Some(v.as_slice())))
        .collect();
    let producer = super::producer(settings).await?;
    check_topic(&producer, &args.topic, args.partition).await?;

    let input: Box<dyn AsyncRead + Unpin> = match &args.file {
        Some(path) => {
            Box::new(
                tokio::fs::File::open(path)
                    .await
                    .map_err(|source| CliError::Io {
                        context: format!("opening {}", path.display()),
                        source,
                    })?,
            )
        }
        None => Box::new(tokio::io::stdin()),
    };
    let mut input = BufReader::with_capacity(1 << 16, input);
    let separator = args.key_separator.as_deref().map(str::as_bytes);

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut pending = FuturesUnordered::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| CliError::Io {
                context: "reading records".to_owned(),
                source,
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        let Line { key, value } = split_line(trim_newline(&line), separator);
        let mut record = ProducerRecord::new(&args.topic)
            .value(value)
            .headers(&header_refs);
        record.key = key;
        record.partition = args.partition;
        match producer.send(record).await {
            Ok(delivery) => {
                pending.push(async move { (number, delivery.await) });
            }
            Err(e) => tally.failed(number, &e),
        }
        while pending.len() >= MAX_PENDING {
            if let Some((n, result)) = pending.next().await {
                tally.record(n, result);
            }
        }
        // Collect what has already completed without waiting.
        while let Some(Some((n, result))) = pending.next().now_or_never() {
            tally.record(n, result);
        }
    }
    let flushed = producer.flush().await;
    while let Some((n, result)) = pending.next().await {
        tally.record(n, result);
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
    fn headers_need_an_equals_sign() {
        let h = parse_headers(&["a=1".into(), "b=".into()]).expect("valid");
        assert_eq!(
            h,
            vec![("a".into(), b"1".to_vec()), ("b".into(), Vec::new())]
        );
        assert!(parse_headers(&["nope".into()]).is_err());
    }
}
