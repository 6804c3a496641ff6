//! Running short helper commands (storage format, Java tools, docker) with a deadline,
//! through the orphan-safe spawner.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process;

/// Runs `cmd` to completion (killing it after `timeout`), feeding `stdin` if given.
pub(crate) fn run(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    what: &str,
) -> Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = process::spawn(cmd).map_err(|e| Error::io(format!("starting {what}"), e))?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            // A separate thread so a child that does not read its input cannot deadlock us.
            Some(thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let out_reader = child.stdout.take().map(reader);
    let err_reader = child.stderr.take().map(reader);

    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::CommandFailed {
                    command: what.to_owned(),
                    status: format!("killed after {} s", timeout.as_secs()),
                    output: String::new(),
                });
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Error::io(format!("waiting for {what}"), e)),
        }
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let stdout = out_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run`], but a non-zero exit is an error carrying the output.
pub(crate) fn run_ok(cmd: Command, timeout: Duration, what: &str) -> Result<Output> {
    let out = run(cmd, None, timeout, what)?;
    if out.status.success() {
        Ok(out)
    } else {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Err(Error::CommandFailed {
            command: what.to_owned(),
            status: out.status.to_string(),
            output: crate::jvm::tail_lines(&text, 40),
        })
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}
