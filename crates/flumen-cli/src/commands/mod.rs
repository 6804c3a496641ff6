//! One module per command; [`run()`] dispatches.

pub mod bench;
pub mod consume;
pub mod demo;
pub mod groups;
pub mod produce;
pub mod run;
pub mod topics;

use std::process::ExitCode;

use flumen_client::Admin;
use flumen_client::consumer::{Consumer, ConsumerConfig};
use flumen_client::producer::{Producer, ProducerConfig};

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::load(&cli.global)?;
    match cli.command {
        Command::Topics(cmd) => topics::run(cmd, settings).await,
        Command::Groups(cmd) => groups::run(cmd, settings).await,
        Command::Produce(args) => produce::run(args, settings).await,
        Command::Consume(args) => consume::run(args, settings).await,
        Command::Bench(cmd) => bench::run(cmd, settings).await,
        Command::Demo(args) => demo::run(args, settings).await,
        Command::Run(args) => run::run(args, settings).await,
    }
}

/// An admin client from the settings; every key must be a client key.
pub async fn admin(settings: Settings) -> Result<Admin> {
    let config = settings.client_only()?;
    Admin::connect(config).await.map_err(CliError::client)
}

/// A producer from the settings; every key must be a client or producer key.
pub async fn producer(mut settings: Settings) -> Result<Producer> {
    if !settings.has_bootstrap() {
        return Err(CliError::NoBootstrap);
    }
    let config =
        ProducerConfig::take_from(settings.props_mut()).map_err(|e| settings.config_error(e))?;
    settings.finish()?;
    Producer::connect(config)
        .await
        .map_err(|e| CliError::produce(&e))
}

/// A consumer from the settings; every key must be a client or consumer key.
pub async fn consumer(mut settings: Settings) -> Result<Consumer> {
    if !settings.has_bootstrap() {
        return Err(CliError::NoBootstrap);
    }
    let config =
        ConsumerConfig::take_from(settings.props_mut()).map_err(|e| settings.config_error(e))?;
    settings.finish()?;
    Consumer::connect(config).await.map_err(CliError::consume)
}
