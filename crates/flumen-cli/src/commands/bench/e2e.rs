//! `flumen bench e2e`.

use std::process::ExitCode;

use super::BenchArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Runs `bench e2e`.
pub async fn run(args: BenchArgs, settings: Settings) -> Result<ExitCode> {
    let _ = args;
    let mut settings = settings;
    let _client = settings.take_client()?;
    Err(CliError::NotAvailable {
        command: "bench e2e",
        missing: "the Producer and Consumer APIs are not merged yet",
    })
}
