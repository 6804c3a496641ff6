//! The producer: records are encoded straight into per-partition batches and sent, per broker, in one request.
//!
//! - [`config`]: [`ProducerConfig`] (typed builder and Kafka property names).
//! - [`partitioner`]: Java-compatible murmur2, uniform sticky for keyless records, the [`Partitioner`] trait.
//! - `accumulator`: one open batch per partition, the queue of closed ones, the drain order.
//! - `memory`: the `buffer.memory` budget (`send` waits up to `max.block.ms`).
//! - `sender`: the background task that drains ready batches into one ProduceRequest per broker,
//!   with up to `max.in.flight.requests.per.connection` in flight, and handles the answers.
//! - `idempotence`: producer id and epoch, sequence numbers, KIP-360 epoch bumps.
//! - [`transaction`]: transactions (begin, send offsets, commit, abort), [`ConsumerGroupMetadata`],
//!   and the protocol in use ([`TransactionVersion`]: classic KIP-98 or KIP-890 v2).
//! - `delivery`: [`DeliveryFuture`] and [`RecordMetadata`], one shared completion per batch.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flumen_client::producer::ProduceError> {
//! use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
//! let producer = Producer::connect(ProducerConfig::from_properties([
//!     ("bootstrap.servers", "localhost:9092"),
//! ])?)
//! .await?;
//! let delivery = producer
//!     .send(ProducerRecord::new("orders").key(b"id-1").value(b"{...}"))
//!     .await?;
//! let metadata = delivery.await?;
//! println!("written at {}-{}@{}", metadata.topic, metadata.partition, metadata.offset);
//! producer.close(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! The hot path (`send` with metadata known and buffer memory free) reads the clock, takes
//! the state lock once, encodes the record into the open batch and returns: no allocation,
//! no syscall, and no await that pends except one yield per batch (when a batch fills up or
//! opens), so that the sender task gets to run on a runtime the caller keeps busy.
//! Everything is driven by tokio tasks, so the producer runs on a current-thread runtime.

mod accumulator;
pub mod config;
mod delivery;
mod idempotence;
mod memory;
pub mod partitioner;
mod sender;
mod split;
pub mod transaction;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flumen_protocol::record::HeaderRef;
use tokio::sync::Notify;

use self::accumulator::{Accumulator, AppendParams, Appended, TopicQueues};
pub use self::config::{Acks, ProducerConfig, ProducerConfigBuilder};
pub use self::delivery::{DeliveryFuture, RecordMetadata};
use self::idempotence::IdempotenceState;
use self::memory::MemoryBudget;
use self::partitioner::StickyPartition;
pub use self::partitioner::{DefaultPartitioner, Partitioner};
use self::transaction::TxnState;
pub use self::transaction::{ConsumerGroupMetadata, TransactionVersion};
use crate::cluster::Cluster;
use crate::error::Error;

/// A record to send. Borrowed: the producer encodes it into a batch before `send` returns,
/// so nothing is copied or allocated on its way.
#[derive(Clone, Copy, Debug)]
pub struct ProducerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// An explicit partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// The key (also what the default partitioner hashes).
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers: name and nullable value.
    pub headers: &'a [HeaderRef<'a>],
    /// Create time in milliseconds since the epoch; `None`: now.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    /// A record for `topic` with no key, value or headers yet.
    pub fn new(topic: &'a str) -> Self {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: None,
            headers: &[],
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: &'a [u8]) -> Self {
        self.value = Some(value);
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the headers.
    pub fn headers(mut self, headers: &'a [HeaderRef<'a>]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the create timestamp (ms since the epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Why a record (or a producer operation) failed. Cheap to clone: every record of a failed
/// batch gets the same error.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The cluster or a broker failed (includes broker error codes, with topic and partition).
    #[error(transparent)]
    Client(Arc<Error>),
    /// `buffer.memory` stayed full for `max.block.ms`.
    #[error("buffer.memory ({buffer_memory} bytes) stayed full for max.block.ms ({waited:?})")]
    BufferExhausted {
        /// The configured budget.
        buffer_memory: usize,
        /// How long `send` waited.
        waited: Duration,
    },
    /// The topic's metadata could not be had within `max.block.ms`.
    #[error("no metadata for topic {topic} within max.block.ms ({waited:?}): {reason}")]
    MetadataTimeout {
        /// The topic.
        topic: String,
        /// How long `send` waited.
        waited: Duration,
        /// The last error seen.
        reason: String,
    },
    /// The record is larger than `max.request.size`.
    #[error("a record of {size} bytes exceeds max.request.size ({max} bytes)")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// `max.request.size`.
        max: usize,
    },
    /// The record names a partition the topic does not have.
    #[error("topic {topic} has {count} partitions; partition {partition} does not exist")]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// The topic's partition count.
        count: i32,
    },
    /// The record was not acknowledged within `delivery.timeout.ms` (or its retries ran out).
    #[error("record not delivered within delivery.timeout.ms ({0:?})")]
    DeliveryTimeout(Duration),
    /// The record could not be encoded.
    #[error("record encoding failed: {0}")]
    Encode(String),
    /// The producer was closed (or dropped) before the record could be sent.
    #[error("the producer is closed")]
    Closed,
    /// Another producer with the same `transactional.id` (or a newer epoch) took over: this
    /// one can do nothing more; close it.
    #[error("producer fenced: {0}")]
    Fenced(String),
    /// The transaction timed out on the coordinator (`transaction.timeout.ms`) and was aborted.
    #[error("transaction timed out on the coordinator and was aborted: {0}")]
    TransactionTimedOut(String),
    /// A transactional call made in the wrong state (e.g. `commit` with no transaction open).
    #[error("invalid transaction state: {0}")]
    TransactionState(String),
    /// The transaction hit an error; only `abort_transaction` is possible now.
    #[error("transaction must be aborted: {0}")]
    AbortableTransaction(String),
    /// A batch was rejected by an unrecoverable sequence error (the producer bumped its
    /// epoch and goes on; later records are not affected).
    #[error(
        "out-of-order sequence for {topic}-{partition}: the broker lost track of earlier records"
    )]
    OutOfOrderSequence {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
}

impl From<Error> for ProduceError {
    fn from(e: Error) -> Self {
        ProduceError::Client(Arc::new(e))
    }
}

impl ProduceError {
    /// The broker error code, if the broker said no.
    pub fn code(&self) -> Option<flumen_protocol::ErrorCode> {
        match self {
            ProduceError::Client(e) => e.code(),
            _ => None,
        }
    }
}

/// An asynchronous, batching, idempotent Kafka producer. Cheap to clone; the last clone
/// dropped (or [`close`](Producer::close)) sends what is buffered and stops the sender task.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    _close_on_drop: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("transactional_id", &self.inner.config.transactional_id)
            .field("buffered_bytes", &self.inner.memory.used())
            .finish_non_exhaustive()
    }
}

struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

pub(crate) struct Inner {
    pub(crate) cluster: Cluster,
    pub(crate) config: ProducerConfig,
    pub(crate) partitioner: Arc<dyn Partitioner>,
    pub(crate) memory: MemoryBudget,
    pub(crate) state: Mutex<State>,
    /// Wakes the sender: a batch filled up or started, a request finished, a flush began.
    pub(crate) wake: Notify,
    /// Signalled when no batch is left unfinished (for flush and close).
    pub(crate) idle: Notify,
    /// No new records; the sender sends what is left and stops.
    pub(crate) closing: AtomicBool,
    /// Records that failed for good, for callers that do not await every future.
    pub(crate) failures: FailureLog,
}

/// Counts records that failed for good (per batch, never per record) and keeps the last error.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    records: std::sync::atomic::AtomicU64,
    last: Mutex<Option<ProduceError>>,
}

impl FailureLog {
    pub(crate) fn note(&self, records: i32, error: &ProduceError) {
        self.records
            .fetch_add(u64::try_from(records).unwrap_or(0), Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.clone());
    }
}

pub(crate) struct State {
    pub(crate) acc: Accumulator,
    pub(crate) idem: IdempotenceState,
    pub(crate) txn: TxnState,
    /// An error that stops the producer (fenced, authorization): every send fails with it.
    pub(crate) fatal: Option<ProduceError>,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn transactional(&self) -> bool {
        self.config.transactional_id.is_some()
    }
}

enum Attempt {
    /// Buffered; whether the sender was woken.
    Done(DeliveryFuture, bool),
    NeedTopic,
    NeedMemory(usize),
}

impl Producer {
    /// Connects to the cluster; an idempotent (non-transactional) producer also gets its
    /// producer id now, so a misconfigured cluster shows at once.
    pub async fn connect(config: ProducerConfig) -> Result<Producer, ProduceError> {
        let partitioner = Arc::new(DefaultPartitioner {
            ignore_keys: config.partitioner_ignore_keys,
        });
        Self::connect_with_partitioner(config, partitioner).await
    }

    /// Like [`connect`](Self::connect), with a custom partitioner for records that name no partition.
    pub async fn connect_with_partitioner(
        config: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Producer, ProduceError> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        Self::with_cluster(cluster, config, partitioner).await
    }

    /// A producer on an existing cluster handle (sharing its connections and metadata).
    pub async fn with_cluster(
        cluster: Cluster,
        config: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Producer, ProduceError> {
        let inner = Arc::new(Inner {
            memory: MemoryBudget::new(config.buffer_memory),
            cluster,
            partitioner,
            state: Mutex::new(State {
                acc: Accumulator::default(),
                idem: IdempotenceState::default(),
                txn: TxnState::default(),
                fatal: None,
            }),
            wake: Notify::new(),
            idle: Notify::new(),
            closing: AtomicBool::new(false),
            failures: FailureLog::default(),
            config,
        });
        if inner.config.idempotence && !inner.transactional() {
            idempotence::init_producer_id(&inner).await?;
        }
        tokio::spawn(sender::run(inner.clone()));
        Ok(Producer {
            _close_on_drop: Arc::new(CloseOnDrop(inner.clone())),
            inner,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The cluster handle (metadata, connections) this producer uses.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The number of partitions of `topic`, loading its metadata if needed.
    pub async fn partitions_for(&self, topic: &str) -> Result<i32, ProduceError> {
        self.load_topic(topic).await
    }

    /// Bytes of `buffer.memory` currently held by unsent or unacknowledged batches.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.memory.used()
    }

    /// Records that have failed for good since the producer started (each one's
    /// [`DeliveryFuture`] resolved to an error). Counted per batch: an application that does
    /// not await every future (a stream processor that commits after `flush`) checks this
    /// instead, and [`last_failure`](Self::last_failure) says why.
    pub fn failed_records(&self) -> u64 {
        self.inner.failures.records.load(Ordering::Relaxed)
    }

    /// The error of the last record that failed for good, if any did.
    pub fn last_failure(&self) -> Option<ProduceError> {
        self.inner
            .failures
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds `record` to its partition's batch. Returns once it is buffered — waiting only
    /// for topic metadata or buffer memory, at most `max.block.ms` — with a future that
    /// resolves when the broker acknowledged it.
    pub async fn send(&self, record: ProducerRecord<'_>) -> Result<DeliveryFuture, ProduceError> {
        // The common case, with no loop and no state to carry: metadata known, memory free.
        let timestamp = record.timestamp.unwrap_or_else(now_millis);
        let mut reservation = None;
        if let Attempt::Done(future, woke) = self.try_send(&record, timestamp, &mut reservation)? {
            if woke {
                yield_to_sender().await;
            }
            return Ok(future);
        }
        let mut now = None;
        self.send_at(record, &mut now).await
    }

    /// [`send`](Self::send), with the time (ms since the epoch) that stamps a record without
    /// a timestamp read from the clock only if `now` is empty, and `now` emptied again when
    /// the call had to wait (so a batch of records shares one clock read unless it blocks).
    async fn send_at(
        &self,
        record: ProducerRecord<'_>,
        now: &mut Option<i64>,
    ) -> Result<DeliveryFuture, ProduceError> {
        let mut reservation = None;
        // Read only when the call has to wait: one clock read less per record.
        let mut started = None;
        loop {
            let timestamp = match record.timestamp {
                Some(t) => t,
                None => *now.get_or_insert_with(now_millis),
            };
            match self.try_send(&record, timestamp, &mut reservation)? {
                Attempt::Done(future, woke) => {
                    if woke {
                        yield_to_sender().await;
                    }
                    return Ok(future);
                }
                Attempt::NeedTopic => {
                    started.get_or_insert_with(tokio::time::Instant::now);
                    self.load_topic(record.topic).await?;
                    *now = None;
                }
                Attempt::NeedMemory(bytes) => {
                    let since = *started.get_or_insert_with(tokio::time::Instant::now);
                    let max = self.inner.config.max_block;
                    let left = max.saturating_sub(since.elapsed());
                    // Let the sender know: it stops lingering while someone waits for memory.
                    self.inner.wake.notify_one();
                    match self.inner.memory.reserve(bytes, left).await {
                        Some(r) => {
                            reservation = Some(r);
                            *now = None;
                        }
                        None => {
                            return Err(ProduceError::BufferExhausted {
                                buffer_memory: self.inner.config.buffer_memory,
                                waited: max,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Sends several records; returns their futures in order. Stops at the first record that
    /// cannot be buffered (the ones before it are sent).
    pub async fn send_batch<'a, I>(&self, records: I) -> Result<Vec<DeliveryFuture>, ProduceError>
    where
        I: IntoIterator<Item = ProducerRecord<'a>>,
    {
        let records = records.into_iter();
        let mut futures = Vec::with_capacity(records.size_hint().0);
        // One clock read for the records without a timestamp, unless a send has to wait.
        let mut now = None;
        for record in records {
            futures.push(self.send_at(record, &mut now).await?);
        }
        Ok(futures)
    }

    fn try_send(
        &self,
        record: &ProducerRecord<'_>,
        timestamp: i64,
        reservation: &mut Option<memory::Reservation>,
    ) -> Result<Attempt, ProduceError> {
        let inner = &*self.inner;
        if inner.closing.load(Ordering::Relaxed) {
            return Err(ProduceError::Closed);
        }
        if let Some(size) = accumulator::too_large(
            timestamp,
            record.key,
            record.value,
            record.headers,
            inner.config.max_request_size,
        ) {
            return Err(ProduceError::RecordTooLarge {
                size,
                max: inner.config.max_request_size,
            });
        }
        let mut guard = inner.state();
        let state = &mut *guard;
        if let Some(e) = &state.fatal {
            return Err(e.clone());
        }
        if inner.transactional() {
            state.txn.check_can_send()?;
        }
        let Some(topic) = state.acc.topics.get_mut(record.topic) else {
            return Ok(Attempt::NeedTopic);
        };
        let count = topic.partitions.len() as i32;
        let mut sticky = false;
        let partition = match record.partition {
            Some(p) if p < 0 || p >= count => {
                return Err(ProduceError::InvalidPartition {
                    topic: record.topic.to_owned(),
                    partition: p,
                    count,
                });
            }
            Some(p) => p,
            None => match inner.partitioner.partition(record.topic, record.key, count) {
                Some(p) if (0..count).contains(&p) => p,
                Some(p) => {
                    return Err(ProduceError::InvalidPartition {
                        topic: record.topic.to_owned(),
                        partition: p,
                        count,
                    });
                }
                None => {
                    let size =
                        record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len);
                    sticky = true;
                    topic
                        .sticky
                        .next(count, size, inner.config.batch_size, &topic.load)
                }
            },
        };
        let params = AppendParams {
            batch_size: inner.config.batch_size,
            compression: inner.config.compression,
        };
        // Split borrows: the name is only cloned when a new batch needs it.
        let TopicQueues {
            name,
            partitions,
            sticky: sticky_partition,
            ..
        } = topic;
        let queue = &mut partitions[partition as usize];
        let appended = queue.append(
            name,
            partition,
            &params,
            timestamp,
            record.key,
            record.value,
            record.headers,
            reservation,
            &mut state.acc.unfinished,
        );
        match appended? {
            Appended::Done {
                completion,
                index,
                wake,
                full,
            } => {
                if sticky && full {
                    // Like the Java client: move on once the partition's batch is full.
                    sticky_partition.move_on();
                }
                if inner.transactional() {
                    let name = name.clone();
                    state.txn.note_partition(&name, partition);
                }
                drop(guard);
                if wake {
                    inner.wake.notify_one();
                }
                Ok(Attempt::Done(
                    DeliveryFuture::new(completion, index, timestamp),
                    wake,
                ))
            }
            Appended::NeedMemory {
                reserve: bytes,
                record: record_size,
            } => {
                if record_size > inner.config.max_request_size {
                    return Err(ProduceError::RecordTooLarge {
                        size: record_size,
                        max: inner.config.max_request_size,
                    });
                }
                drop(guard);
                match inner.memory.try_reserve(bytes) {
                    Some(r) => {
                        *reservation = Some(r);
                        self.try_send(record, timestamp, reservation)
                    }
                    None => Ok(Attempt::NeedMemory(bytes)),
                }
            }
        }
    }

    /// Loads `topic`'s metadata (waiting up to `max.block.ms`) and sets up its queues.
    async fn load_topic(&self, topic: &str) -> Result<i32, ProduceError> {
        if let Some(t) = self.inner.state().acc.topics.get(topic) {
            return Ok(t.partitions.len() as i32);
        }
        let max = self.inner.config.max_block;
        let deadline = tokio::time::Instant::now() + max;
        let cluster = &self.inner.cluster;
        let mut backoff = self.inner.config.client.retry_backoff;
        // Like the Java client, a topic missing from the metadata is waited for up to
        // max.block.ms: it may have just been created (or be auto-created).
        let meta = loop {
            let error = match tokio::time::timeout_at(deadline, cluster.topic(topic)).await {
                Ok(Ok(meta)) => break meta,
                Ok(Err(e)) if matches!(e, Error::UnknownTopic(_)) || e.is_retriable() => {
                    cluster.invalidate_metadata();
                    e.to_string()
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => "timed out".to_owned(),
            };
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(ProduceError::MetadataTimeout {
                    topic: topic.to_owned(),
                    waited: max,
                    reason: error,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.inner.config.client.retry_backoff_max);
        };
        let count = meta.partitions.len();
        let mut state = self.inner.state();
        let entry = state
            .acc
            .topics
            .entry(Arc::from(topic))
            .or_insert_with_key(|name| TopicQueues {
                name: name.clone(),
                partitions: (0..count).map(|_| Default::default()).collect(),
                sticky: StickyPartition::new(),
                load: Default::default(),
            });
        Ok(entry.partitions.len() as i32)
    }

    /// Sends everything buffered now (no lingering) and waits until every record sent
    /// before this call is acknowledged or has failed (their futures tell which).
    pub async fn flush(&self) -> Result<(), ProduceError> {
        self.inner.state().acc.flushing += 1;
        self.inner.wake.notify_one();
        let result = self.wait_idle().await;
        self.inner.state().acc.flushing -= 1;
        result
    }

    async fn wait_idle(&self) -> Result<(), ProduceError> {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let state = self.inner.state();
                if state.acc.unfinished == 0 {
                    return Ok(());
                }
            }
            idle.await;
        }
    }

    /// Stops taking records, sends what is buffered and waits up to `timeout` for the
    /// answers; records still unanswered then fail with [`ProduceError::Closed`].
    pub async fn close(&self, timeout: Duration) -> Result<(), ProduceError> {
        self.inner.state().acc.flushing += 1;
        self.inner.closing.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        let result = tokio::time::timeout(timeout, self.wait_idle()).await;
        if result.is_err() {
            sender::fail_all(&self.inner, ProduceError::Closed);
        }
        self.inner.wake.notify_one();
        Ok(())
    }
}

/// Called when a send woke the sender. The sender and the connections run on the caller's
/// runtime (often the same thread), and a caller that sends in a loop never yields: without
/// this, a full batch would wait until all of buffer.memory is full before its request
/// left, and then the loop would fill the buffer again while the request is half written.
/// The sender is woken when a batch fills up or a new one opens (which is when the previous
/// one was closed), so this is about one yield per batch.
async fn yield_to_sender() {
    tokio::task::yield_now().await;
}

/// The wall clock in ms since the epoch, read once per record sent without a timestamp.
/// `clock_gettime(CLOCK_REALTIME)` is the clock `SystemTime::now` reads, minus std's
/// checked conversions: measured 50 ns a call against 70 to 130 ns through `SystemTime`
/// on our VMs, where the per-record send path is about 160 ns. (The coarse clock would be
/// cheaper still, but it ticks every 4 ms here: record timestamps must be right to the ms.)
#[cfg(all(unix, target_pointer_width = "64"))]
fn now_millis() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which outlives the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return std_now_millis();
    }
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

// Elsewhere (time_t may be 32 bits there), through std.
#[cfg(not(all(unix, target_pointer_width = "64")))]
fn now_millis() -> i64 {
    std_now_millis()
}

fn std_now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1000) * 1000
                + i64::from(d.subsec_millis())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_clock_agrees_with_system_time() {
        let before = std_now_millis();
        let now = now_millis();
        let after = std_now_millis();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }
}
