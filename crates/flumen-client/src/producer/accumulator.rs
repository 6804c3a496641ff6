//! The accumulator: per partition, one open batch that records are encoded into, and a queue of closed ones.
//!
//! Invariants:
//! - The state lock (`std::sync::Mutex`) is held only for synchronous work: appending one
//!   record, moving batches between queues. It is never held across an await, and batches
//!   are sealed (compressed, checksummed) outside it.
//! - Within a partition, `ready` is in send order; with idempotence, the batches that
//!   already carry a sequence number come first, in sequence order (a retried batch goes
//!   back to its place at the head).
//! - Every batch holds a [`Reservation`] of `buffer.memory` until it is acknowledged or
//!   failed, so the bytes held never exceed the budget.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use flumen_protocol::record::{BatchBuilder, Compression, HeaderRef};
use tokio::time::Instant;

use super::ProduceError;
use super::delivery::BatchCompletion;
use super::memory::Reservation;
use super::partitioner::{PartitionLoad, StickyPartition};

/// The producer's queues, behind the producer's state lock.
#[derive(Default)]
pub(crate) struct Accumulator {
    pub(crate) topics: HashMap<Arc<str>, TopicQueues, BuildHasherDefault<TopicHasher>>,
    /// Batches not yet finished (open, queued or in flight), for `flush`.
    pub(crate) unfinished: usize,
    /// Produce requests in flight per broker id.
    pub(crate) in_flight: HashMap<i32, usize>,
    /// Callers of `flush` (or `close`) waiting: send everything without lingering.
    pub(crate) flushing: usize,
    /// A request failed in a way that means the leaders may have moved: the sender
    /// refreshes the metadata before it drains again.
    pub(crate) metadata_stale: bool,
    /// Per broker: when it last had a batch ready to go, and when it last took one
    /// (`partitioner.availability.timeout.ms`).
    pub(crate) brokers: HashMap<i32, BrokerReadiness>,
}

/// When a broker last had batches ready for it, and when it last took some.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BrokerReadiness {
    pub(crate) ready: Instant,
    pub(crate) drained: Instant,
}

/// A multiply-rotate hash over 8-byte words for the topic map, looked up once per record:
/// SipHash showed in the per-record profile, and so did byte-at-a-time FNV (a chain of one
/// multiply per byte of the name). The keys are topic names the application chose, not
/// input an attacker controls.
#[derive(Clone, Copy, Default)]
pub(crate) struct TopicHasher(u64);

impl TopicHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    #[inline(always)]
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }
}

impl Hasher for TopicHasher {
    fn finish(&self) -> u64 {
        // The map takes its bucket from the low bits, which a multiply mixes least.
        self.0 ^ (self.0 >> 32)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut b = [0; 8];
            b[..tail.len()].copy_from_slice(tail);
            self.word(u64::from_le_bytes(b) ^ ((tail.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i));
    }
}

/// The partitions of one topic.
pub(crate) struct TopicQueues {
    pub(crate) name: Arc<str>,
    pub(crate) partitions: Vec<PartitionQueue>,
    pub(crate) sticky: StickyPartition,
    /// Adaptive partitioning's weights, rebuilt by the sender.
    pub(crate) load: PartitionLoad,
}

/// One partition's batches.
#[derive(Default)]
pub(crate) struct PartitionQueue {
    pub(crate) open: Option<OpenBatch>,
    pub(crate) ready: VecDeque<ClosedBatch>,
    /// Batches of this partition in flight.
    pub(crate) in_flight: usize,
    /// Idempotence: the sequence number the next new batch gets.
    pub(crate) next_sequence: i32,
    /// Idempotence: the sequence the broker expects next (last acknowledged + 1), so an
    /// OUT_OF_ORDER_SEQUENCE answer can be told apart from "an earlier batch is being retried".
    pub(crate) acked_sequence: i32,
    /// A batch failed retriably and waits at the head: send one batch at a time until it
    /// is through, so order holds.
    pub(crate) retrying: bool,
    /// Idempotence: the broker acknowledged a batch of this producer epoch here. Until then
    /// one batch at a time: a broker with no state for the producer accepts any first
    /// sequence, so a second batch overtaking a failed first one would be written first.
    pub(crate) confirmed: bool,
}

/// The batch currently being filled.
pub(crate) struct OpenBatch {
    pub(crate) builder: BatchBuilder,
    pub(crate) completion: Arc<BatchCompletion>,
    pub(crate) created: Instant,
    pub(crate) reservation: Reservation,
}

/// The payload of a closed batch: still a builder until first sent, sealed bytes after.
pub(crate) enum Payload {
    Builder(BatchBuilder),
    Sealed(Bytes),
}

/// A batch that takes no more records.
pub(crate) struct ClosedBatch {
    pub(crate) payload: Payload,
    pub(crate) records: i32,
    pub(crate) completion: Arc<BatchCompletion>,
    pub(crate) created: Instant,
    /// Held, not read: dropping the batch gives its buffer memory back.
    pub(crate) _reservation: Reservation,
    /// Attempts made so far.
    pub(crate) attempts: u32,
    /// Idempotence: assigned when first drained (-1 before).
    pub(crate) base_sequence: i32,
    /// Idempotence: the producer epoch the batch was stamped with.
    pub(crate) epoch: i16,
    /// Idempotence: the producer id the batch was stamped with.
    pub(crate) producer_id: i64,
    /// Not before this instant (retry backoff).
    pub(crate) retry_at: Option<Instant>,
}

impl OpenBatch {
    pub(crate) fn close(self) -> ClosedBatch {
        ClosedBatch {
            records: self.builder.len() as i32,
            payload: Payload::Builder(self.builder),
            completion: self.completion,
            created: self.created,
            _reservation: self.reservation,
            attempts: 0,
            base_sequence: -1,
            epoch: -1,
            producer_id: -1,
            retry_at: None,
        }
    }
}

impl ClosedBatch {
    /// Bytes the batch takes in a request (uncompressed size until sealed).
    pub(crate) fn size(&self) -> usize {
        match &self.payload {
            Payload::Builder(b) => b.size_in_bytes(),
            Payload::Sealed(b) => b.len(),
        }
    }

    /// Fails every record of the batch, and counts them in `log`.
    pub(crate) fn fail(self, error: ProduceError, log: &super::FailureLog) {
        log.note(self.records, &error);
        self.completion.complete(Err(error));
    }
}

/// What `append` did.
pub(crate) enum Appended {
    /// The record is in a batch: its index there, whether the sender should look now
    /// (a batch filled up or a new one started its linger clock), and whether the record
    /// filled its batch (which was then closed).
    Done {
        completion: Arc<BatchCompletion>,
        index: i32,
        wake: bool,
        full: bool,
    },
    /// A new batch is needed and no reservation was given: reserve `reserve` bytes (the
    /// larger of `batch.size` and the record's own batch) and call again. `record` is the
    /// size of a batch holding only this record, for the `max.request.size` check.
    NeedMemory { reserve: usize, record: usize },
}

/// Everything `append` needs to know about the producer.
pub(crate) struct AppendParams {
    pub(crate) batch_size: usize,
    pub(crate) compression: Compression,
}

/// At least the encoded size of a record (widest varints: lengths and deltas of up to 10 bytes).
#[inline]
fn record_size_bound(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[HeaderRef<'_>]) -> usize {
    // Length, attributes, timestamp delta, offset delta, key, value, header count.
    let mut size = 10 + 1 + 10 + 10 + 10 + 10 + 10;
    size += key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    for (k, v) in headers {
        size += 20 + k.len() + v.map_or(0, <[u8]>::len);
    }
    size
}

/// The size of a batch holding only this record, if that is more than `max_request_size`
/// (the Java client's check of every record against `max.request.size`, whatever batch it
/// would join). Exact only when the cheap bound says it might be too large.
#[inline]
pub(crate) fn too_large(
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[HeaderRef<'_>],
    max_request_size: usize,
) -> Option<usize> {
    let header = flumen_protocol::record::HEADER_LEN;
    if header + record_size_bound(key, value, headers) <= max_request_size {
        return None;
    }
    let size =
        header + BatchBuilder::new(Compression::None).record_size(timestamp, key, value, headers);
    (size > max_request_size).then_some(size)
}

impl PartitionQueue {
    /// A new producer id or epoch: sequences start again at 0, the first batch goes alone
    /// until acknowledged, and queued batches are stamped afresh when drained.
    pub(crate) fn restart_sequences(&mut self) {
        self.next_sequence = 0;
        self.acked_sequence = 0;
        self.retrying = false;
        self.confirmed = false;
        for b in &mut self.ready {
            b.base_sequence = -1;
        }
    }

    /// Encodes one record into the partition's open batch, opening one (with `reservation`)
    /// when there is none or the record does not fit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        params: &AppendParams,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
        reservation: &mut Option<Reservation>,
        unfinished: &mut usize,
    ) -> Result<Appended, ProduceError> {
        if let Some(open) = &mut self.open {
            let used = open.builder.size_in_bytes();
            // The exact size takes as long to work out as the record takes to write: only
            // when the cheap bound says it might not fit.
            if used + record_size_bound(key, value, headers) <= params.batch_size
                || used + open.builder.record_size(timestamp, key, value, headers)
                    <= params.batch_size
            {
                let completion = open.completion.clone();
                let (index, full) =
                    Self::push(open, timestamp, key, value, headers, params.batch_size)?;
                if full {
                    self.close_open();
                }
                return Ok(Appended::Done {
                    completion,
                    index,
                    wake: full,
                    full,
                });
            }
            // Does not fit: close it; the record opens the next batch.
            self.close_open();
        }
        let Some(reservation) = reservation.take() else {
            let probe = BatchBuilder::new(params.compression);
            let size = flumen_protocol::record::HEADER_LEN
                + probe.record_size(timestamp, key, value, headers);
            return Ok(Appended::NeedMemory {
                reserve: size.max(params.batch_size),
                record: size,
            });
        };
        let size = flumen_protocol::record::HEADER_LEN
            + BatchBuilder::new(Compression::None).record_size(timestamp, key, value, headers);
        let builder = BatchBuilder::with_capacity(params.compression, size.max(params.batch_size));
        let completion = Arc::new(BatchCompletion::new(topic.clone(), partition));
        *unfinished += 1;
        let mut open = OpenBatch {
            builder,
            completion: completion.clone(),
            created: Instant::now(),
            reservation,
        };
        let (index, full) =
            Self::push(&mut open, timestamp, key, value, headers, params.batch_size)?;
        if full {
            self.ready.push_back(open.close());
        } else {
            self.open = Some(open);
        }
        Ok(Appended::Done {
            completion,
            index,
            // A new batch starts its linger clock: the sender must learn its deadline.
            wake: true,
            full,
        })
    }

    #[inline]
    fn push(
        open: &mut OpenBatch,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
        batch_size: usize,
    ) -> Result<(i32, bool), ProduceError> {
        let before = open.builder.size_in_bytes();
        let index = open
            .builder
            .append(timestamp, key, value, headers)
            .map_err(|e| ProduceError::Encode(e.to_string()))?;
        // Full once another record like this one would not fit: closing now sends the batch
        // without waiting for a record that spills into a new one, and lets the sticky
        // partitioner move on with whole batches instead of leaving a sliver behind.
        let after = open.builder.size_in_bytes();
        Ok((index, after + (after - before) > batch_size))
    }

    /// Closes the open batch, if any, so it can be drained.
    pub(crate) fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            self.ready.push_back(open.close());
        }
    }

    /// Puts a batch that failed retriably back at the head, keeping sequence order.
    pub(crate) fn requeue(&mut self, batch: ClosedBatch) {
        let at = if batch.base_sequence < 0 {
            0
        } else {
            self.ready
                .iter()
                .position(|b| b.base_sequence < 0 || b.base_sequence > batch.base_sequence)
                .unwrap_or(self.ready.len())
        };
        self.ready.insert(at, batch);
        self.retrying = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarting_sequences_forgets_the_old_epoch() {
        let mut q = PartitionQueue {
            next_sequence: 42,
            acked_sequence: 40,
            retrying: true,
            confirmed: true,
            ..PartitionQueue::default()
        };
        q.restart_sequences();
        assert_eq!((q.next_sequence, q.acked_sequence), (0, 0));
        assert!(!q.retrying && !q.confirmed);
    }
}
