//! `flumen produce`: records from stdin or a file, one per line, to a topic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

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

/// Runs `produce`.
pub async fn run(args: ProduceArgs, settings: Settings) -> Result<ExitCode> {
    let _headers = parse_headers(&args.headers)?;
    // Fail on configuration before saying what is missing.
    let mut settings = settings;
    let _client = settings.take_client()?;
    Err(CliError::NotAvailable {
        command: "produce",
        missing: "the Producer API (crates/flumen-client/src/producer) is not merged yet",
    })
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
