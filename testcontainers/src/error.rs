//! The error type of the harness: why a Kafka cluster could not be had or controlled.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why starting, probing or controlling a Kafka cluster failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable JDK: `java` is missing or older than 17.
    #[error(
        "no usable Java found: {detail}. The local Kafka broker needs a JDK 17 or newer \
         (Debian/Ubuntu: `apt-get install -y openjdk-17-jdk-headless`), or set \
         FLUMEN_KAFKA_BOOTSTRAP to an existing cluster"
    )]
    JavaMissing {
        /// What was wrong (not found, version too old, ...).
        detail: String,
    },

    /// No `mvn` on the PATH to resolve the Kafka jars.
    #[error(
        "Maven (`mvn`) is needed once to download the Kafka {version} jars but {detail}. \
         Install it (Debian/Ubuntu: `apt-get install -y maven`), or set FLUMEN_KAFKA_BOOTSTRAP \
         to an existing cluster"
    )]
    MavenMissing {
        /// The Kafka version that was to be resolved.
        version: String,
        /// What was wrong.
        detail: String,
    },

    /// `mvn dependency:copy-dependencies` ran but failed (for a release other than the pinned
    /// one: often a version that Maven Central does not serve).
    #[error("resolving the Apache Kafka {version} jars with Maven failed ({status}):\n{output}")]
    MavenFailed {
        /// The Kafka version that was to be resolved.
        version: String,
        /// Exit status as text.
        status: String,
        /// The tail of Maven's output.
        output: String,
    },

    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A helper command (storage format, docker, ...) exited with an error.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line, shortened.
        command: String,
        /// Exit status as text.
        status: String,
        /// Its stderr/stdout tail.
        output: String,
    },

    /// A broker did not become ready before the deadline, or died while starting.
    #[error("Kafka broker {broker} not ready: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    NotReady {
        /// Index of the broker (0-based).
        broker: usize,
        /// What the last probe saw.
        reason: String,
        /// The broker log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// `FLUMEN_KAFKA_BOOTSTRAP` names a cluster that does not answer.
    #[error(
        "the external Kafka cluster FLUMEN_KAFKA_BOOTSTRAP={bootstrap} does not answer: {reason}"
    )]
    ExternalUnreachable {
        /// The bootstrap list.
        bootstrap: String,
        /// What the last probe saw.
        reason: String,
    },

    /// Generating the TLS material failed.
    #[error("generating TLS certificates failed: {0}")]
    Tls(String),

    /// The operation is not possible with this kind of cluster (e.g. killing a broker of an
    /// external cluster).
    #[error("{operation} is not available for {backend}")]
    Unsupported {
        /// What was asked.
        operation: String,
        /// The kind of cluster.
        backend: &'static str,
    },

    /// A broker index out of range, or an invalid spec.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Wraps an I/O error with what the harness was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the failure looks like a port taken by someone else between our choosing
    /// it and the broker binding it: worth one more try with fresh ports.
    pub(crate) fn is_port_clash(&self) -> bool {
        match self {
            Error::NotReady {
                log_tail, reason, ..
            } => {
                log_tail.contains("Address already in use")
                    || reason.contains("Address already in use")
            }
            _ => false,
        }
    }
}
