//! The `flumen` command-line tool: topics, groups, produce, consume, bench and demo.
//!
//! `main` parses the arguments, runs the command on a current-thread tokio runtime (the
//! client wants no hidden threads) and turns any failure into one line on stderr and a
//! non-zero exit code: no `Debug` dumps, no backtraces.

mod cli;
mod commands;
mod config;
mod error;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

// musl's own malloc is slow under many small allocations; mimalloc builds for both gnu and musl.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = init_logging(&cli) {
        eprintln!("flumen: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flumen: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flumen: {e}");
            e.exit_code()
        }
    }
}

/// Sends the client's and the runtime's log events to stderr, filtered by `--log` (or
/// `FLUMEN_LOG`): by default warnings and errors only, and for `run` also the runtime's
/// lifecycle (tasks started and moved, topics created, shutdown), as a service logs it.
/// Event lines never go to stdout, which carries the records.
fn init_logging(cli: &Cli) -> Result<(), String> {
    use std::io::IsTerminal;

    let default = match cli.command {
        cli::Command::Run(_) => "info",
        _ => "warn",
    };
    let spec = cli.global.log.as_deref().unwrap_or(default);
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(spec)
        .map_err(|e| format!("--log {spec:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))
}
