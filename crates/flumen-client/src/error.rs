//! The client's error type: what went wrong, where, and whether retrying may help.

use std::time::Duration;

use flumen_protocol::ErrorCode;

/// An error from the Kafka client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be made (refused, unreachable, unresolvable).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// Setting up the connection took longer than the connect timeout.
    #[error("connecting to {addr} timed out after {timeout:?} during {stage}")]
    ConnectTimeout {
        /// The address as given.
        addr: String,
        /// The configured connect timeout.
        timeout: Duration,
        /// What was going on: "TCP connect", "TLS handshake", "ApiVersions", "SASL authentication".
        stage: &'static str,
    },
    /// A socket error on an established connection.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// TLS failed (certificate not trusted, wrong host name, bad key file, ...).
    #[error("TLS error with {addr}: {message}")]
    Tls {
        /// The address as given.
        addr: String,
        /// What rustls or the PEM loader said.
        message: String,
    },
    /// One side speaks TLS and the other does not.
    #[error("{addr}: {message}")]
    TlsMismatch {
        /// The address as given.
        addr: String,
        /// Which way round, and what to change.
        message: String,
    },
    /// SASL authentication was refused.
    #[error("SASL {mechanism} authentication with {addr} failed: {message}")]
    Authentication {
        /// The address as given.
        addr: String,
        /// The SASL mechanism, e.g. "SCRAM-SHA-256".
        mechanism: &'static str,
        /// The broker's message, or what our side found wrong.
        message: String,
    },
    /// A frame or message could not be encoded or decoded.
    #[error("protocol error: {0}")]
    Protocol(#[from] flumen_protocol::Error),
    /// A response carried a correlation id other than the oldest request's: the stream is out of step.
    #[error("{addr} answered correlation id {received}, expected {}", .expected.map_or_else(|| "no response".to_owned(), |id| id.to_string()))]
    CorrelationMismatch {
        /// The address as given.
        addr: String,
        /// The id of the oldest request in flight (`None`: no request was in flight).
        expected: Option<i32>,
        /// The id in the response.
        received: i32,
    },
    /// No response within the request timeout; the connection was closed (responses come in order).
    #[error("{api} to {addr} timed out after {timeout:?}")]
    RequestTimeout {
        /// The address as given.
        addr: String,
        /// The request type.
        api: &'static str,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// The connection is closed; requests that were in flight on it fail with this.
    #[error("connection to {addr} closed: {reason}")]
    ConnectionClosed {
        /// The address as given.
        addr: String,
        /// Why it was closed.
        reason: String,
    },
    /// The broker answered with an error code.
    #[error("{api} failed{}: {code}{}", context(.topic, .partition), .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The request type.
        api: &'static str,
        /// The topic concerned, if any.
        topic: Option<String>,
        /// The partition concerned, if any.
        partition: Option<i32>,
        /// The broker's error message, if any.
        message: Option<String>,
    },
    /// The broker supports no version of this API that we can speak.
    #[error("{addr} supports no version of {api} that this client can use")]
    UnsupportedVersion {
        /// The address as given.
        addr: String,
        /// The request type.
        api: &'static str,
    },
    /// The broker lacks a feature the configuration asks for, e.g. the KIP-848 consumer group
    /// protocol (`group.protocol=consumer`) on a Kafka 3.x broker. Not retriable: the
    /// configuration or the broker has to change.
    #[error("{feature} is not available from the broker at {addr}, {release}: {reason}. {remedy}")]
    UnsupportedFeature {
        /// The feature, with the setting that asked for it.
        feature: &'static str,
        /// The broker's address, as given.
        addr: String,
        /// The broker's release as far as its ApiVersions answer tells
        /// ([`ApiVersions::release_estimate`](crate::connection::ApiVersions::release_estimate)).
        release: &'static str,
        /// What the broker did: the API it does not offer, or the error it answered.
        reason: String,
        /// Which brokers have the feature, and what to do instead.
        remedy: &'static str,
    },
    /// A configuration value is missing or malformed.
    #[error("invalid configuration `{key}`: {message}")]
    Config {
        /// The property name.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The topic does not exist.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The topic exists but has no partition with this index.
    #[error("partition {topic}-{partition} does not exist ({topic} has {partitions} partitions)")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: usize,
    },
    /// No broker answered: every address tried, each with its failure.
    #[error("no broker answered: {}", .attempts.join("; "))]
    NoBrokerAvailable {
        /// `addr: error` for each address tried, in order.
        attempts: Vec<String>,
    },
}

fn context(topic: &Option<String>, partition: &Option<i32>) -> String {
    match (topic, partition) {
        (Some(t), Some(p)) => format!(" for {t}-{p}"),
        (Some(t), None) => format!(" for topic {t}"),
        (None, Some(p)) => format!(" for partition {p}"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// Whether the same operation may succeed if tried again (possibly on a new connection).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::Io(_)
            | Error::RequestTimeout { .. }
            | Error::ConnectionClosed { .. }
            | Error::CorrelationMismatch { .. }
            | Error::NoBrokerAvailable { .. } => true,
            Error::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// The broker error code, if this is a broker error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A broker error for `api` from a response's error code and message, or `Ok` for code 0.
    pub fn check_code(api: &'static str, code: i16, message: Option<&str>) -> Result<()> {
        let code = ErrorCode::from_code(code);
        if code.is_ok() {
            return Ok(());
        }
        Err(Error::Broker {
            code,
            api,
            topic: None,
            partition: None,
            message: message.map(str::to_owned),
        })
    }
}

/// `Result` with the client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_error_names_topic_partition_and_code() {
        let e = Error::Broker {
            code: ErrorCode::NotLeaderOrFollower,
            api: "ProduceRequest",
            topic: Some("orders".into()),
            partition: Some(3),
            message: Some("moved".into()),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("ProduceRequest failed for orders-3: NOT_LEADER_OR_FOLLOWER (6)"),
            "{s}"
        );
        assert!(s.ends_with("(moved)"), "{s}");
        assert!(e.is_retriable());
    }

    #[test]
    fn authentication_is_not_retriable() {
        let e = Error::Authentication {
            addr: "a:1".into(),
            mechanism: "PLAIN",
            message: "bad".into(),
        };
        assert!(!e.is_retriable());
        assert!(Error::check_code("X", 0, None).is_ok());
    }
}
