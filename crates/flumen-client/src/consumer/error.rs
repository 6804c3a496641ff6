//! The consumer's error type: client errors plus what only a consumer can run into.

use flumen_protocol::record::RecordError;

use crate::cluster::TopicPartition;

/// An error from the [`Consumer`](super::Consumer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A client error (connection, broker error code, configuration, ...).
    #[error(transparent)]
    Client(#[from] crate::Error),
    /// Fetched record data is corrupt (bad CRC, bad framing, decompression failure).
    #[error("corrupt record data in {tp}: {source}")]
    Corrupt {
        /// The partition.
        tp: TopicPartition,
        /// What the record layer found.
        source: RecordError,
    },
    /// The partition has no valid position and `auto.offset.reset` is `none`.
    #[error("no valid offset for {tp} and auto.offset.reset is none")]
    NoOffset {
        /// The partition.
        tp: TopicPartition,
    },
    /// The call needs a partition the consumer is not assigned.
    #[error("{tp} is not assigned to this consumer")]
    NotAssigned {
        /// The partition.
        tp: TopicPartition,
    },
    /// The call needs `group.id`.
    #[error("{0} needs a group.id")]
    NoGroup(&'static str),
    /// The group coordinator no longer knows this member (fenced, or kicked out for
    /// exceeding `max.poll.interval.ms`): its partitions were lost and it rejoins on the next poll.
    #[error("the group no longer has this member: {0}")]
    MemberLost(String),
    /// `assign` and `subscribe` were mixed.
    #[error("{0}")]
    Usage(&'static str),
}

impl ConsumerError {
    /// Whether retrying the same call may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ConsumerError::Client(e) => e.is_retriable(),
            ConsumerError::MemberLost(_) => true,
            _ => false,
        }
    }
}

/// `Result` with [`ConsumerError`].
pub type Result<T, E = ConsumerError> = std::result::Result<T, E>;
