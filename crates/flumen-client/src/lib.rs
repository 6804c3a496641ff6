//! Async Kafka client: connections, cluster metadata, producer, consumer and admin.
//!
//! - [`connection`]: one broker connection (TCP/TLS, SASL, ApiVersions, pipelined requests).
//! - [`error`]: the client's error type.
#![warn(missing_docs)]

pub mod connection;
pub mod error;
mod sasl;
mod tls;

pub use connection::{
    Connection, ConnectionConfig, SaslConfig, SaslMechanism, Security, TlsConfig,
};
pub use error::{Error, Result};
