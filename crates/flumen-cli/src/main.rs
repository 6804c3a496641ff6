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
