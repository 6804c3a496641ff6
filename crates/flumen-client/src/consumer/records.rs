//! The records handed to the application: borrowed views over the fetched buffers.
//!
//! A [`ConsumerRecords`] owns the fetched `Bytes` (slices of the response frames, never
//! copied) split into [`RecordBatch`] views. Iterating yields [`ConsumerRecord`]s that borrow
//! from them: no allocation, copy or lock per record. Compressed batches decompress, when
//! reached, into a buffer owned by that batch, so every yielded record stays valid for as long
//! as the `ConsumerRecords` is borrowed. [`ConsumerRecord::to_owned`] makes a record that
//! outlives it (sharing the buffer, still without copying the key or value).
//!
//! Preparation (at `poll`) drops what the application must never see: control batches
//! (transaction markers), batches wholly before the position, and, under read_committed,
//! batches of aborted transactions, using the fetch response's aborted-transactions list as
//! the Java client does: a transactional batch of producer P is aborted when an aborted
//! transaction of P starts at or before it and P's abort marker has not been passed yet.
//!
//! Each batch's CRC (with `check.crcs`) is checked when iteration reaches the batch, not at
//! `poll` (the Java client's `CompletedFetch`): the batch is then in cache when its records are
//! read, which on polls larger than the caches is 1.4x to 1.9x faster for 1 KiB records
//! (`record_verify_order` in `benches/`). A corrupt
//! batch ends its partition's iteration with [`ConsumerError::Corrupt`] naming the partition
//! and the batch's base offset; the records before it have been delivered. The partition's
//! position then goes back to the first record not delivered (unless the application seeked
//! meanwhile), so the next `poll` fetches the batch again and reports the same error: the
//! consumer never moves past a corrupt batch on its own; the application may `seek` past it.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use flumen_protocol::record::{
    ControlRecord, ControlRecordType, Decompressor, Headers, RecordBatch, RecordBatches,
    RecordError, RecordRef, Records,
};

use super::error::{ConsumerError, Result};
use super::state::{Fetched, Shared};
use crate::cluster::TopicPartition;

struct BatchSlot {
    batch: RecordBatch,
    /// Decompression buffer of this batch alone (allocates nothing for uncompressed batches).
    scratch: Decompressor,
}

/// The records of one partition from one `poll`.
pub struct PartitionRecords {
    tp: TopicPartition,
    batches: Vec<BatchSlot>,
    /// Records below this offset (the position when fetched) are skipped.
    start: i64,
    next_offset: i64,
    high_watermark: i64,
    last_epoch: Option<i32>,
    check_crcs: bool,
    rewind: Rewind,
}

/// Sends a partition's position back to a corrupt batch, so that `poll` does not move past it.
pub(crate) struct Rewind {
    shared: Arc<Shared>,
    /// The partition's generation when these records were handed out: a seek or a
    /// reassignment since then wins over the rewind.
    generation: u64,
}

impl Rewind {
    pub(crate) fn new(shared: Arc<Shared>, generation: u64) -> Self {
        Rewind { shared, generation }
    }

    /// Sets the position of `tp` to `offset` and drops what was fetched after it. Runs once per
    /// corrupt batch (the only lock outside `poll`).
    fn to(&self, tp: &TopicPartition, offset: i64) {
        let mut state = self.shared.lock();
        if state
            .parts
            .get(tp)
            .is_none_or(|p| p.generation != self.generation)
        {
            return;
        }
        let generation = state.bump_generation();
        if let Some(p) = state.parts.get_mut(tp) {
            p.position = Some(offset);
            p.fetch_offset = offset;
            p.generation = generation;
        }
        state.drop_buffered(tp);
        drop(state);
        self.shared.wake_fetchers();
    }
}

impl std::fmt::Debug for PartitionRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionRecords")
            .field("tp", &self.tp)
            .field("batches", &self.batches.len())
            .field("start", &self.start)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

impl PartitionRecords {
    /// Turns one fetched chunk into batches the application may see.
    ///
    /// Batch CRCs are not checked here but when iteration reaches each batch, except for the
    /// control batches read here (abort markers under read_committed): a corrupt one is kept as
    /// the last batch, so that iteration reports it in its place.
    pub(crate) fn prepare(
        fetched: Fetched,
        read_committed: bool,
        check_crcs: bool,
        rewind: Rewind,
    ) -> Result<PartitionRecords> {
        let Fetched {
            tp,
            fetch_offset,
            next_offset,
            records,
            aborted,
            high_watermark,
            ..
        } = fetched;
        let mut good_until = fetch_offset;
        let corrupt = |tp: &TopicPartition, offset, source| ConsumerError::Corrupt {
            tp: tp.clone(),
            offset,
            source,
        };
        let mut batches = Vec::new();
        let mut aborted = aborted.into_iter().peekable();
        let mut aborting: HashSet<i64> = HashSet::new();
        let mut last_epoch = None;
        for batch in RecordBatches::new(records) {
            let batch = batch.map_err(|e| corrupt(&tp, good_until, e))?;
            good_until = batch.next_offset();
            last_epoch = Some(batch.partition_leader_epoch());
            if read_committed {
                while let Some(&(pid, _)) = aborted
                    .peek()
                    .filter(|&&(_, first)| first <= batch.last_offset())
                {
                    aborting.insert(pid);
                    aborted.next();
                }
            }
            if batch.is_control() {
                if read_committed && aborting.contains(&batch.producer_id()) {
                    if check_crcs && batch.verify_crc().is_err() {
                        batches.push(BatchSlot {
                            batch,
                            scratch: Decompressor::new(),
                        });
                        break;
                    }
                    let mut scratch = Decompressor::new();
                    let base = batch.base_offset();
                    let is_abort = batch
                        .records(&mut scratch)
                        .map_err(|e| corrupt(&tp, base, e))?
                        .filter_map(|r| r.ok())
                        .filter_map(|r| ControlRecord::parse(&r).ok())
                        .any(|c| c.kind == ControlRecordType::Abort);
                    if is_abort {
                        aborting.remove(&batch.producer_id());
                    }
                }
                continue;
            }
            if batch.next_offset() <= fetch_offset {
                continue;
            }
            if read_committed && batch.is_transactional() && aborting.contains(&batch.producer_id())
            {
                continue;
            }
            batches.push(BatchSlot {
                batch,
                scratch: Decompressor::new(),
            });
        }
        Ok(PartitionRecords {
            tp,
            batches,
            start: fetch_offset,
            next_offset,
            high_watermark,
            last_epoch,
            check_crcs,
            rewind,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.tp.topic
    }

    /// The partition index.
    pub fn partition(&self) -> i32 {
        self.tp.partition
    }

    /// The topic and partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// The partition's position after these records (the offset to commit once they are processed).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The high watermark when these records were fetched.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The leader epoch of the last batch (committed along with the offset).
    pub fn last_leader_epoch(&self) -> Option<i32> {
        self.last_epoch
    }

    /// Number of record batches (each holds one or more records).
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Whether there is no record batch to read.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The records, in offset order, borrowed from the fetched buffers.
    ///
    /// A corrupt batch ends the iteration with one [`ConsumerError::Corrupt`] (see the module
    /// docs); the records before it are delivered first.
    pub fn iter(&mut self) -> PartitionIter<'_> {
        PartitionIter {
            tp: &self.tp,
            start: self.start,
            check_crcs: self.check_crcs,
            rewind: &self.rewind,
            slots: self.batches.iter_mut(),
            current: None,
            current_base: 0,
        }
    }
}

/// Iterator over one partition's records; see [`PartitionRecords::iter`].
pub struct PartitionIter<'a> {
    tp: &'a TopicPartition,
    /// Records below this offset are skipped: the position when fetched, then the offset after
    /// the last record delivered (where a rewind goes).
    start: i64,
    check_crcs: bool,
    rewind: &'a Rewind,
    slots: std::slice::IterMut<'a, BatchSlot>,
    current: Option<Records<'a>>,
    /// Base offset of the batch `current` reads.
    current_base: i64,
}

impl PartitionIter<'_> {
    /// Ends the iteration at a corrupt batch, sends the position back to the first record not
    /// delivered, and returns the error naming the batch's base offset.
    #[cold]
    #[inline(never)]
    fn corrupt(&mut self, base_offset: i64, source: RecordError) -> ConsumerError {
        self.current = None;
        self.slots = Default::default();
        self.rewind.to(self.tp, self.start.max(base_offset));
        ConsumerError::Corrupt {
            tp: self.tp.clone(),
            offset: base_offset,
            source,
        }
    }
}

impl std::fmt::Debug for PartitionIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionIter")
            .field("tp", self.tp)
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for PartitionIter<'a> {
    type Item = Result<ConsumerRecord<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(records) = &mut self.current {
                match records.next() {
                    Some(Ok(record)) => {
                        if record.offset() < self.start {
                            continue;
                        }
                        self.start = record.offset() + 1;
                        return Some(Ok(ConsumerRecord {
                            tp: self.tp,
                            record,
                        }));
                    }
                    Some(Err(source)) => return Some(Err(self.corrupt(self.current_base, source))),
                    None => self.current = None,
                }
            }
            let BatchSlot { batch, scratch } = self.slots.next()?;
            let base = batch.base_offset();
            let records = if self.check_crcs {
                batch.verified_records(scratch)
            } else {
                batch.records(scratch)
            };
            match records {
                Ok(records) => {
                    self.current = Some(records);
                    self.current_base = base;
                }
                Err(source) => return Some(Err(self.corrupt(base, source))),
            }
        }
    }
}

/// The records returned by one `poll`, grouped by partition.
#[derive(Debug, Default)]
pub struct ConsumerRecords {
    parts: Vec<PartitionRecords>,
}

impl ConsumerRecords {
    pub(crate) fn new(parts: Vec<PartitionRecords>) -> Self {
        ConsumerRecords { parts }
    }

    /// Whether no record batch was returned.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(PartitionRecords::is_empty)
    }

    /// The partitions with records.
    pub fn partitions(&self) -> impl Iterator<Item = &PartitionRecords> {
        self.parts.iter()
    }

    /// The partitions with records, to iterate each.
    pub fn partitions_mut(&mut self) -> impl Iterator<Item = &mut PartitionRecords> {
        self.parts.iter_mut()
    }

    /// Every record, partition by partition, in offset order within a partition.
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            parts: self.parts.iter_mut(),
            current: None,
        }
    }
}

/// Iterator over all records of a [`ConsumerRecords`].
#[derive(Debug)]
pub struct Iter<'a> {
    parts: std::slice::IterMut<'a, PartitionRecords>,
    current: Option<PartitionIter<'a>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<ConsumerRecord<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(it) = &mut self.current {
                if let Some(r) = it.next() {
                    return Some(r);
                }
                self.current = None;
            }
            self.current = Some(self.parts.next()?.iter());
        }
    }
}

/// One record, borrowed from the fetched data.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerRecord<'a> {
    tp: &'a TopicPartition,
    record: RecordRef<'a>,
}

impl<'a> ConsumerRecord<'a> {
    /// The topic.
    #[inline]
    pub fn topic(&self) -> &'a str {
        &self.tp.topic
    }
    /// The partition index.
    #[inline]
    pub fn partition(&self) -> i32 {
        self.tp.partition
    }
    /// The offset.
    #[inline]
    pub fn offset(&self) -> i64 {
        self.record.offset()
    }
    /// The timestamp (ms since the epoch).
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.record.timestamp()
    }
    /// The key (`None` when null).
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.record.key()
    }
    /// The value (`None` for a tombstone).
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        self.record.value()
    }
    /// The headers in wire order.
    #[inline]
    pub fn headers(&self) -> Headers<'a> {
        self.record.headers()
    }
    /// The underlying record view.
    #[inline]
    pub fn record(&self) -> &RecordRef<'a> {
        &self.record
    }
    /// A header key or value as `Bytes` sharing the fetched buffer. Header slices always lie
    /// inside the record's buffer; the copy is only a fallback that keeps this total.
    fn share(&self, part: &'a [u8]) -> Bytes {
        self.record
            .to_bytes(part)
            .unwrap_or_else(|| Bytes::copy_from_slice(part))
    }

    /// An owned copy of the record's metadata; key, value and headers share the fetched
    /// buffer (no byte is copied).
    pub fn to_owned(&self) -> OwnedRecord {
        OwnedRecord {
            topic: self.tp.topic.clone(),
            partition: self.tp.partition,
            offset: self.offset(),
            timestamp: self.timestamp(),
            key: self.record.key_bytes(),
            value: self.record.value_bytes(),
            headers: self
                .headers()
                .map(|(k, v)| (self.share(k), v.map(|v| self.share(v))))
                .collect(),
        }
    }
}

/// A record that owns its data (sharing the fetched buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnedRecord {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The timestamp (ms since the epoch).
    pub timestamp: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// The headers in wire order.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

#[cfg(test)]
mod tests {
    use flumen_protocol::record::{BatchBuilder, Compression};

    use super::*;
    use crate::consumer::state::PartState;

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    fn batch(base: i64, n: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None).base_offset(base);
        for offset in base..base + n {
            b.append(0, None, Some(format!("v{offset}").as_bytes()), &[])
                .expect("append");
        }
        b.seal().expect("seal").to_vec()
    }

    fn transactional(base: i64, n: i64, pid: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None)
            .base_offset(base)
            .producer(pid, 0, 0)
            .transactional(true);
        for _ in 0..n {
            b.append(0, None, Some(b"txn"), &[]).expect("append");
        }
        b.seal().expect("seal").to_vec()
    }

    fn abort_marker(base: i64, pid: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None)
            .base_offset(base)
            .producer(pid, 0, -1)
            .transactional(true)
            .control(true);
        let key = ControlRecord::marker_key(ControlRecordType::Abort);
        b.append(0, Some(&key), Some(&ControlRecord::marker_value(0)), &[])
            .expect("append");
        b.seal().expect("seal").to_vec()
    }

    /// Flips a bit of the batch's last byte: covered by the CRC, invisible to the framing.
    fn corrupt(mut batch: Vec<u8>) -> Vec<u8> {
        let last = batch.len() - 1;
        batch[last] ^= 1;
        batch
    }

    /// Shared state as `poll` leaves it: the position already past the handed-out records.
    fn shared(generation: u64, position: i64) -> Arc<Shared> {
        let shared = Arc::new(Shared::default());
        let mut state = shared.lock();
        let mut p = PartState::new(generation);
        p.position = Some(position);
        p.fetch_offset = position;
        state.parts.insert(tp(), p);
        state.next_generation = generation;
        drop(state);
        shared
    }

    fn prepare(
        shared: &Arc<Shared>,
        blob: Vec<Vec<u8>>,
        fetch_offset: i64,
        next_offset: i64,
        aborted: Vec<(i64, i64)>,
    ) -> PartitionRecords {
        let fetched = Fetched {
            tp: tp(),
            generation: 1,
            fetch_offset,
            next_offset,
            records: Bytes::from(blob.concat()),
            aborted,
            high_watermark: next_offset,
        };
        PartitionRecords::prepare(fetched, false, true, Rewind::new(shared.clone(), 1))
            .expect("prepare")
    }

    /// Offsets delivered, then the corrupt batch's offset; checks that nothing follows.
    fn read(part: &mut PartitionRecords) -> (Vec<i64>, Option<i64>) {
        let mut offsets = Vec::new();
        let mut it = part.iter();
        for r in it.by_ref() {
            match r {
                Ok(r) => offsets.push(r.offset()),
                Err(ConsumerError::Corrupt { offset, source, .. }) => {
                    assert!(
                        matches!(source, RecordError::CrcMismatch { .. }),
                        "{source}"
                    );
                    assert!(it.next().is_none(), "records after a corrupt batch");
                    return (offsets, Some(offset));
                }
                Err(e) => panic!("{e}"),
            }
        }
        (offsets, None)
    }

    fn position(shared: &Shared) -> (Option<i64>, i64, u64) {
        let state = shared.lock();
        let p = &state.parts[&tp()];
        (p.position, p.fetch_offset, p.generation)
    }

    #[test]
    fn corrupt_batch_ends_the_iteration_after_the_records_before_it_and_rewinds_to_it() {
        let shared = shared(1, 9);
        let blob = vec![batch(0, 3), corrupt(batch(3, 3)), batch(6, 3)];
        let mut part = prepare(&shared, blob, 0, 9, Vec::new());
        assert_eq!(read(&mut part), (vec![0, 1, 2], Some(3)));
        let (position, fetch_offset, generation) = position(&shared);
        assert_eq!((position, fetch_offset), (Some(3), 3));
        assert_ne!(
            generation, 1,
            "data fetched after the batch must be dropped"
        );
    }

    #[test]
    fn rewind_goes_to_the_position_when_it_lies_inside_the_corrupt_batch() {
        let shared = shared(1, 6);
        let mut part = prepare(&shared, vec![corrupt(batch(3, 3))], 4, 6, Vec::new());
        assert_eq!(read(&mut part), (vec![], Some(3)));
        assert_eq!(position(&shared).0, Some(4));
    }

    #[test]
    fn a_seek_after_the_poll_wins_over_the_rewind() {
        let shared = shared(1, 9);
        let blob = vec![batch(0, 3), corrupt(batch(3, 3)), batch(6, 3)];
        let mut part = prepare(&shared, blob, 0, 9, Vec::new());
        {
            let mut state = shared.lock();
            let g = state.bump_generation();
            let p = state.parts.get_mut(&tp()).expect("part");
            p.position = Some(100);
            p.generation = g;
        }
        assert_eq!(read(&mut part), (vec![0, 1, 2], Some(3)));
        assert_eq!(position(&shared).0, Some(100));
    }

    #[test]
    fn corrupt_abort_marker_under_read_committed_is_reported_in_its_place() {
        let shared = shared(1, 7);
        let blob = [
            batch(0, 2),
            transactional(2, 2, 7),
            corrupt(abort_marker(4, 7)),
            batch(5, 2),
        ];
        let fetched = Fetched {
            tp: tp(),
            generation: 1,
            fetch_offset: 0,
            next_offset: 7,
            records: Bytes::from(blob.concat()),
            aborted: vec![(7, 2)],
            high_watermark: 7,
        };
        let mut part =
            PartitionRecords::prepare(fetched, true, true, Rewind::new(shared.clone(), 1))
                .expect("prepare");
        // The aborted transaction's records are skipped; nothing after the marker is read.
        assert_eq!(read(&mut part), (vec![0, 1], Some(4)));
        assert_eq!(position(&shared).0, Some(4));
    }
}
