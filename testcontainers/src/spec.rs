//! What cluster to start (`ClusterSpec`) and the SASL users it has.

use std::fmt;

use crate::version::KafkaVersion;

/// The shape of a cluster to start: Kafka release, broker count, extra listeners, racks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of brokers: 1 or 3.
    pub brokers: usize,
    /// Add a SASL_PLAINTEXT listener with one PLAIN, one SCRAM-SHA-256 and one SCRAM-SHA-512 user.
    pub sasl: bool,
    /// Add an SSL listener with a certificate signed by a CA the harness generates.
    pub tls: bool,
    /// Put broker `n` in rack [`ClusterSpec::rack_of`]`(n)` (`broker.rack`) and let followers
    /// serve consumers of their rack (`replica.selector.class` = Kafka's
    /// `RackAwareReplicaSelector`, KIP-392).
    pub racks: bool,
    /// Run the brokers' JVMs as Kafka's own start scripts do (1 GiB heap, G1, both JIT
    /// compilers) instead of the harness's fast-starting settings (C1 only, small heap):
    /// for benchmarks, where the broker's steady-state speed matters more than its start.
    pub production_jvm: bool,
    /// The Apache Kafka release to run; `None` is the one pinned in
    /// `testcontainers/kafka/pom.xml` ([`KafkaVersion::pinned`]).
    pub version: Option<KafkaVersion>,
    /// Format the storage with the feature `transaction.version` at this level
    /// (`StorageTool format --feature transaction.version=N`, KIP-1022) instead of the
    /// release's default (2 on Kafka 4.x: KIP-890's transaction protocol v2; 0 on 3.9).
    /// Ignored by an external cluster (`FLUMEN_KAFKA_BOOTSTRAP`).
    pub transaction_version: Option<u8>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            brokers: 1,
            sasl: false,
            tls: false,
            racks: false,
            production_jvm: false,
            version: None,
            transaction_version: None,
        }
    }
}

impl ClusterSpec {
    /// One broker, PLAINTEXT only.
    pub fn single() -> Self {
        Self::default()
    }

    /// Three brokers (each also a KRaft controller), PLAINTEXT only.
    pub fn three() -> Self {
        ClusterSpec {
            brokers: 3,
            ..Self::default()
        }
    }

    /// Also open a SASL_PLAINTEXT listener.
    pub fn with_sasl(self) -> Self {
        ClusterSpec { sasl: true, ..self }
    }

    /// Also open an SSL listener.
    pub fn with_tls(self) -> Self {
        ClusterSpec { tls: true, ..self }
    }

    /// One rack per broker, and followers that serve the consumers of their rack (KIP-392).
    pub fn with_racks(self) -> Self {
        ClusterSpec {
            racks: true,
            ..self
        }
    }

    /// Brokers run with the JVM settings of Kafka's own start scripts, for benchmarks (see
    /// [`production_jvm`](Self::production_jvm)).
    pub fn with_production_jvm(self) -> Self {
        ClusterSpec {
            production_jvm: true,
            ..self
        }
    }

    /// Runs Apache Kafka `version` (`"3.9.1"`, `"4.4.0"`, ...) instead of the pinned release.
    /// Its jars are resolved by Maven from a pom generated from the pinned one into a cache
    /// directory of their own (`~/.cache/flumen/kafka-<version>`) the first time a cluster of
    /// that version starts.
    ///
    /// # Panics
    /// If `version` is not `major.minor.patch` or is older than the oldest release the harness
    /// can start (3.9.0); [`KafkaVersion::parse`] and [`with_kafka_version`](Self::with_kafka_version)
    /// are the non-panicking way.
    pub fn with_version(self, version: &str) -> Self {
        let version = KafkaVersion::parse(version).unwrap_or_else(|e| panic!("{e}"));
        self.with_kafka_version(version)
    }

    /// Runs Apache Kafka `version` instead of the pinned release (see [`with_version`](Self::with_version)).
    pub fn with_kafka_version(self, version: KafkaVersion) -> Self {
        ClusterSpec {
            version: Some(version),
            ..self
        }
    }

    /// Formats the cluster with `transaction.version` at `level` (see
    /// [`transaction_version`](Self::transaction_version)): `with_transaction_version(0)` on a
    /// 4.x release gives a broker that speaks Produce v12 and EndTxn v5 but runs only the
    /// classic transaction protocol.
    pub fn with_transaction_version(self, level: u8) -> Self {
        ClusterSpec {
            transaction_version: Some(level),
            ..self
        }
    }

    /// The release this spec runs: the one asked for, else the pinned one.
    pub fn kafka_version(&self) -> KafkaVersion {
        self.version.unwrap_or_else(KafkaVersion::pinned)
    }

    /// The rack (`broker.rack`) of broker `n` in a cluster started [`with_racks`](Self::with_racks):
    /// `rack-{n}`.
    pub fn rack_of(n: usize) -> String {
        format!("rack-{n}")
    }
}

/// A SASL mechanism the SASL_PLAINTEXT listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN` (RFC 4616).
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// All mechanisms, in the order the harness creates (and prints) their users.
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ];

    /// The mechanism's name on the wire ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512").
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user the SASL listener knows, with the one mechanism it was created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslUser {
    /// The mechanism this user's credentials exist for.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl SaslUser {
    /// The harness's user for `mechanism`, with a fresh random password.
    pub(crate) fn generate(mechanism: SaslMechanism) -> Self {
        let username = match mechanism {
            SaslMechanism::Plain => "flumen_plain",
            SaslMechanism::ScramSha256 => "flumen_scram256",
            SaslMechanism::ScramSha512 => "flumen_scram512",
        };
        SaslUser {
            mechanism,
            username: username.to_owned(),
            password: random_token(20),
        }
    }
}

/// A random alphanumeric string (std's per-process SipHash keys are the entropy source:
/// good enough for throw-away test passwords, and no extra dependency).
pub(crate) fn random_token(len: usize) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::with_capacity(len);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(counter);
        counter += 1;
        let mut v = h.finish();
        for _ in 0..8 {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[(v % ALPHABET.len() as u64) as usize]));
            v /= ALPHABET.len() as u64;
        }
    }
    out
}
