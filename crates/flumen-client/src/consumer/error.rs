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
    /// Fetched record data is corrupt (bad CRC, bad framing, decompression failure). The
    /// consumer does not move past it: the next `poll` reads the same batch again and reports
    /// this again, unless the application seeks past `offset`.
    #[error("corrupt record data in {tp} at offset {offset}: {source}")]
    Corrupt {
        /// The partition.
        tp: TopicPartition,
        /// The base offset of the corrupt batch (for bad framing: the offset after the last
        /// readable batch).
        offset: i64,
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
    /// exceeding `max.poll.interval.ms`): its partitions were lost and it rejoins on the next
    /// poll. A commit returns this (the Java client's `CommitFailedException`) rather than
    /// overwrite the progress of the partitions' new owner.
    #[error(
        "the group no longer has this member ({0}): its partitions may belong to another \
         member now, so their offsets were not committed; the next poll rejoins the group"
    )]
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
            // The offsets it refused are stale: no retry can commit them (Java's
            // CommitFailedException is not retriable either).
            ConsumerError::MemberLost(_) => false,
            _ => false,
        }
    }
}

/// `Result` with [`ConsumerError`].
pub type Result<T, E = ConsumerError> = std::result::Result<T, E>;
