//! Async Kafka client: connections, cluster metadata, producer, consumer and admin.
//!
//! - [`connection`]: one broker connection (TCP/TLS, SASL, ApiVersions, pipelined requests).
//! - [`error`]: the client's error type.
//! - [`config`]: [`ClientConfig`], from a builder, Kafka property names or a TOML/JSON file.
//! - [`retry`]: exponential backoff with jitter, bounded by a deadline.
//! - [`cluster`]: [`Cluster`] (alias [`Client`]): bootstrap, metadata, connection pool, coordinators.
//! - [`admin`]: [`Admin`]: topics, configs, offsets, records, groups.
//! - [`consumer`]: [`Consumer`]: assign / subscribe, poll borrowed records, commit, groups.
//! - [`producer`]: [`Producer`]: batching, idempotent, transactional producer.
#![warn(missing_docs)]

pub mod admin;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod producer;
pub mod retry;
mod sasl;
mod tls;

pub use admin::Admin;
pub use cluster::{Client, Cluster, TopicPartition};
pub use config::ClientConfig;
pub use connection::{
    Connection, ConnectionConfig, SaslConfig, SaslMechanism, Security, TlsConfig,
};
pub use consumer::{Consumer, ConsumerConfig};
pub use error::{Error, Result};
pub use producer::{Producer, ProducerConfig, ProducerRecord};
