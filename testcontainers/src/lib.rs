//! Starts a real Apache Kafka cluster for tests, benches and the demo.
//!
//! [`KafkaCluster::start`] provisions, in this order: the external cluster named by
//! `FLUMEN_KAFKA_BOOTSTRAP`; else Docker (the official `apache/kafka` image) when a Docker
//! engine answers; else local JVM brokers from the Apache Kafka jars pinned in
//! `testcontainers/kafka/pom.xml` (resolved once by Maven into `$XDG_CACHE_HOME/flumen`).
//! Another Kafka release (3.9.0 or newer) is one [`ClusterSpec::with_version`] away: a pom
//! generated from the pinned one, cached per release in `$XDG_CACHE_HOME/flumen/kafka-<version>`.
//! `FLUMEN_KAFKA_PROVIDER=jvm|docker` forces one of the last two.
//!
//! Brokers are KRaft combined broker+controller nodes on 127.0.0.1 with free ports: a
//! PLAINTEXT listener always, SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and SSL
//! (a CA generated per cluster) on request. A cluster is returned only once every listener
//! answers a real Kafka request and every broker has joined.
//!
//! # Environment
//! - `FLUMEN_KAFKA_BOOTSTRAP` (+ optional `FLUMEN_KAFKA_SASL_BOOTSTRAP`,
//!   `FLUMEN_KAFKA_SSL_BOOTSTRAP`, `FLUMEN_KAFKA_CA`, `FLUMEN_KAFKA_SASL_USERS`, exactly as
//!   the `up` binary prints them): use that cluster; fault control is then unavailable.
//! - `FLUMEN_KAFKA_PROVIDER=jvm|docker`: skip the Docker detection.
//! - `FLUMEN_KAFKA_JVM_OPTS`: replaces the broker JVM options (default: 512 MiB heap,
//!   serial GC, C1 compiler only — fast start, lower peak throughput).
//! - `FLUMEN_KAFKA_IMAGE`: the Docker image (default `apache/kafka:<pinned version>`).
//! - `XDG_CACHE_HOME`: where the Kafka jars are cached (default `~/.cache`).
//!
//! # Invariants
//! - No orphans: broker JVMs are forked by one thread that lives as long as the process,
//!   with `PR_SET_PDEATHSIG=SIGKILL`, so they die with the process however it ends. Dropping
//!   a cluster kills its brokers and removes its temp dir; the shared clusters (statics,
//!   never dropped) are torn down by an `atexit` hook; temp dirs of processes that died
//!   without cleaning up are swept by the next cluster start.
//! - Readiness is a real Kafka request on every listener (ApiVersions, over TLS for SSL)
//!   plus a Metadata that lists every running broker — never a fixed sleep.
//! - Ports are chosen once per cluster and survive broker restarts.
//!
//! ```no_run
//! use flumen_testcontainers::{ClusterSpec, KafkaCluster};
//!
//! let cluster = KafkaCluster::start(ClusterSpec::three().with_sasl())?;
//! println!("bootstrap.servers={}", cluster.bootstrap());
//! cluster.kill_broker(1)?;
//! cluster.start_broker(1)?;
//! # Ok::<(), flumen_testcontainers::Error>(())
//! ```
#![warn(missing_docs)]

mod brokers;
mod cluster;
mod command;
mod docker;
mod error;
mod external;
mod jvm;
mod layout;
mod local;
mod ports;
mod process;
mod readiness;
mod shared;
mod spec;
mod tempdir;
mod tls;
mod version;

pub use cluster::KafkaCluster;
pub use error::{Error, Result};
pub use external::{ENV_BOOTSTRAP, ENV_CA, ENV_SASL_BOOTSTRAP, ENV_SASL_USERS, ENV_SSL_BOOTSTRAP};
pub use jvm::{java_and_classpath, kafka_version};
pub use layout::SCRAM_SHA_512_SESSION_MS;
pub use spec::{ClusterSpec, SaslMechanism, SaslUser};
pub use version::{KafkaVersion, OLDEST_SUPPORTED};
