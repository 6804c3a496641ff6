//! The per-record context operators see: where the record came from and its metadata.

use flumen_client::TopicPartition;
use flumen_protocol::record::Headers;

/// The input record an item was derived from: its partition, offset, timestamp, key and
/// headers, borrowed from the fetched batch. Every output a record leads to carries its key,
/// timestamp and headers unless an operator sets others.
#[derive(Clone, Debug)]
pub struct RecordContext<'a> {
    pub(crate) tp: &'a TopicPartition,
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) headers: Option<Headers<'a>>,
}

impl<'a> RecordContext<'a> {
    /// A context for a record that did not come from Kafka (tests, in-memory runs).
    pub fn new(tp: &'a TopicPartition, offset: i64, timestamp: i64, key: Option<&'a [u8]>) -> Self {
        RecordContext {
            tp,
            offset,
            timestamp,
            key,
            headers: None,
        }
    }

    /// The input topic.
    pub fn topic(&self) -> &'a str {
        &self.tp.topic
    }

    /// The input partition.
    pub fn partition(&self) -> i32 {
        self.tp.partition
    }

    /// The input topic and partition.
    pub fn topic_partition(&self) -> &'a TopicPartition {
        self.tp
    }

    /// The input record's offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The input record's timestamp (ms since the epoch).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The input record's key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The input record's headers, `(key, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + use<'a> {
        self.headers.clone().into_iter().flatten()
    }
}
