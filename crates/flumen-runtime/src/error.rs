//! The runtime's error type.

use flumen_client::TopicPartition;
use flumen_client::consumer::ConsumerError;
use flumen_client::producer::ProduceError;

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error that stops a pipeline (or, from [`Pipeline`](crate::Pipeline) building, keeps it
/// from starting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A client error (connection, broker error code, configuration key).
    #[error(transparent)]
    Client(#[from] flumen_client::Error),
    /// The consumer failed.
    #[error(transparent)]
    Consume(#[from] ConsumerError),
    /// A record could not be written (after the producer's retries), so the input it came
    /// from is not committed.
    #[error("writing to {topic} failed: {source}")]
    Produce {
        /// The output topic.
        topic: String,
        /// Why.
        source: ProduceError,
    },
    /// The producer reported records that failed for good since the last commit.
    #[error(
        "{count} output record(s) were not delivered (first: {first}); input offsets not committed"
    )]
    Undelivered {
        /// How many records failed.
        count: u64,
        /// The first failure.
        first: ProduceError,
    },
    /// A record did not deserialize and the policy is [`OnError::Fail`](crate::OnError::Fail).
    #[error("record at {tp} offset {offset} does not deserialize: {message}")]
    Deserialize {
        /// Where the record is.
        tp: TopicPartition,
        /// Its offset.
        offset: i64,
        /// What the format said.
        message: String,
    },
    /// A record could not be serialized for an output topic.
    #[error("a record for {topic} does not serialize: {message}")]
    Serialize {
        /// The output topic.
        topic: String,
        /// What the format said.
        message: String,
    },
    /// A stop did not finish within `shutdown.timeout.ms`.
    #[error(
        "the stop did not finish within {0:?} (shutdown.timeout.ms): uncommitted work is processed again by the next owner"
    )]
    ShutdownTimeout(std::time::Duration),
    /// A task's state could not be restored from its changelog.
    #[error("restoring state from {tp} at offset {offset}: {message}")]
    Restore {
        /// The changelog partition.
        tp: TopicPartition,
        /// Where the restore was.
        offset: i64,
        /// What went wrong.
        message: String,
    },
    /// The pipeline's definition is not valid (no source, a name used twice, a topic missing).
    #[error("invalid pipeline: {0}")]
    Topology(String),
    /// A runtime setting is not valid.
    #[error("invalid setting {key}: {message}")]
    Config {
        /// The setting.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A user function failed inside `process` or `try_map`.
    #[error("user function failed on {tp} offset {offset}: {message}")]
    User {
        /// The input partition.
        tp: TopicPartition,
        /// The input offset.
        offset: i64,
        /// The message the function returned.
        message: String,
    },
    /// A worker thread stopped without an error value (it panicked).
    #[error("worker {0} panicked")]
    WorkerPanicked(usize),
    /// An operating-system call failed (starting a thread, a signal handler).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn produce(topic: &str, source: ProduceError) -> Error {
        Error::Produce {
            topic: topic.to_owned(),
            source,
        }
    }
}
