//! The CLI's errors: each prints as one line a person can act on, with no `Debug` dump.

use std::path::PathBuf;
use std::process::ExitCode;

use flumen_client::Error as ClientError;
use flumen_client::consumer::ConsumerError;
use flumen_client::producer::ProduceError;
use flumen_protocol::ErrorCode;

use crate::config::Origin;

/// A failed command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No `bootstrap.servers` anywhere.
    #[error(
        "no broker address: pass -b HOST:PORT, set FLUMEN_BOOTSTRAP, or put bootstrap.servers in --config"
    )]
    NoBootstrap,
    /// A `-X` argument without `=`.
    #[error("-X {0:?}: expected KEY=VALUE")]
    BadProperty(String),
    /// A property no config understands.
    #[error("unknown property `{key}` ({origin})")]
    UnknownProperty {
        /// The key as written.
        key: String,
        /// Where it was given.
        origin: Origin,
    },
    /// A property with a bad value, or a combination that does not fit.
    #[error("invalid property `{key}` ({origin}): {message}")]
    InvalidProperty {
        /// The key concerned.
        key: String,
        /// Where it was given.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// The `--config` file cannot be read or parsed.
    #[error("config file {}: {message}", .path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No broker could be reached.
    #[error("cannot reach the cluster: {0}")]
    Unreachable(String),
    /// SASL authentication was refused.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// TLS could not be set up.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The topic does not exist.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The consumer group does not exist.
    #[error("unknown group `{0}`")]
    UnknownGroup(String),
    /// Anything else the client reported.
    #[error("{0}")]
    Client(String),
    /// A bad combination of arguments that clap cannot express.
    #[error("{0}")]
    Usage(String),
    /// Reading input or writing output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Some records of a produce or consume run failed; each was reported already.
    #[error("{0}")]
    Partial(String),
    /// The local Kafka for the demo could not be started.
    #[error("cannot start a local Kafka for the demo: {0}")]
    LocalKafka(String),
    /// A pipeline file is wrong (the message names the file, line and step).
    #[error("{0}")]
    Pipeline(String),
    /// A pipeline stopped with an error.
    #[error("pipeline failed: {0}")]
    Runtime(String),
}

/// `Result` with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// Classifies a client error into what the user should look at.
    pub fn client(e: ClientError) -> CliError {
        CliError::client_ref(&e)
    }

    /// [`CliError::client`] for an error shared behind an `Arc` (producer errors).
    pub fn client_ref(e: &ClientError) -> CliError {
        match e {
            ClientError::NoBrokerAvailable { .. }
            | ClientError::Connect { .. }
            | ClientError::ConnectTimeout { .. } => CliError::Unreachable(e.to_string()),
            ClientError::Authentication {
                addr,
                mechanism,
                message,
            } => CliError::Authentication(format!("{mechanism} with {addr}: {message}")),
            ClientError::Tls { .. } | ClientError::TlsMismatch { .. } => {
                CliError::Tls(e.to_string())
            }
            ClientError::UnknownTopic(topic) => CliError::UnknownTopic(topic.clone()),
            ClientError::Broker {
                code: ErrorCode::UnknownTopicOrPartition,
                topic: Some(topic),
                ..
            } => CliError::UnknownTopic(topic.clone()),
            other => CliError::Client(one_line(&other.to_string())),
        }
    }

    /// Classifies a consumer error.
    pub fn consume(e: ConsumerError) -> CliError {
        match e {
            ConsumerError::Client(inner) => CliError::client(inner),
            other => CliError::Client(one_line(&other.to_string())),
        }
    }

    /// Classifies a producer error.
    pub fn produce(e: &ProduceError) -> CliError {
        match e {
            ProduceError::Client(inner) => CliError::client_ref(inner),
            other => CliError::Client(one_line(&other.to_string())),
        }
    }

    /// A client error while doing `what` (e.g. "creating topic orders").
    pub fn during(what: impl std::fmt::Display, e: ClientError) -> CliError {
        match CliError::client(e) {
            CliError::Client(message) => CliError::Client(format!("{what}: {message}")),
            other => other,
        }
    }

    /// The process exit code: 2 for usage and configuration mistakes, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::NoBootstrap
            | CliError::BadProperty(_)
            | CliError::UnknownProperty { .. }
            | CliError::InvalidProperty { .. }
            | CliError::ConfigFile { .. }
            | CliError::Usage(_)
            | CliError::Pipeline(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Broker messages can span lines; the CLI prints one.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::client(e)
    }
}
