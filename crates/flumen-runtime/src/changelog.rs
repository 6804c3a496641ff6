//! State changelogs: every state store of a task writes its changes to partition `p` (the
//! task's partition number) of the compacted topic `<application.id>-<store>-changelog`; a
//! worker that starts the task reads that partition back to its end before the task
//! processes a record.
//!
//! # Invariants
//! - A store writes what changed since its last checkpoint before every commit (and under
//!   exactly-once inside the same transaction as the outputs and the input offsets), so the
//!   changelog up to a committed transaction holds exactly the state the committed offsets
//!   lead to.
//! - Keys are the store's own (a window store: a tag byte, the window start and the record
//!   key); a tombstone (no value) deletes a key. Compaction keeps the latest value per key, so
//!   a restore applies records in order and keeps the last one per key.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use flumen_client::TopicPartition;
use flumen_client::admin::{Admin, IsolationLevel, OffsetSpec};
use flumen_client::consumer::Consumer;
use flumen_client::producer::DeliveryFuture;

use crate::disk_store::{FileCopy, LocalStore};
use crate::error::{Error, Result};
use crate::operator::Output;

/// The changelog topic of `store`.
pub(crate) fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

/// Where one store of one task writes its changes.
pub(crate) struct Changelog {
    topic: String,
    partition: i32,
    output: Output,
    /// The key and value being written, reused.
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    /// Records written.
    pub(crate) writes: u64,
    /// The delivery of the last record written (its offset is where a local copy of the
    /// store is complete once it is acknowledged).
    pub(crate) last: Option<DeliveryFuture>,
}

impl Changelog {
    pub(crate) fn new(topic: String, partition: i32, output: Output) -> Self {
        Changelog {
            topic,
            partition,
            output,
            key: Vec::new(),
            value: Vec::new(),
            writes: 0,
            last: None,
        }
    }

    /// Applies `restored` in order with `apply`; the first entry it cannot read becomes the
    /// error to fail the task with, naming this changelog's partition, the offset and the key.
    pub(crate) fn restore_with(
        &self,
        restored: Restored,
        mut apply: impl FnMut(&[u8], &[u8]) -> std::result::Result<(), String>,
    ) -> Option<Error> {
        restored.into_iter().find_map(|(key, value, offset)| {
            apply(&key, &value).err().map(|message| Error::Restore {
                tp: TopicPartition::new(&self.topic, self.partition),
                offset,
                message: format!("key \"{}\": {message}", key.escape_ascii()),
            })
        })
    }

    /// A store whose state has no changelog form (`what` says why): under exactly-once
    /// (`strict`) an error naming the changelog, otherwise one warning; the caller then keeps
    /// the store in memory only.
    pub(crate) fn unsupported(&self, strict: bool, what: &str) -> Result<()> {
        if strict {
            return Err(Error::Config {
                key: self.topic.clone(),
                message: what.to_owned(),
            });
        }
        tracing::warn!(store = %self.topic, "{what}");
        Ok(())
    }

    /// Writes `self.key` -> `self.value`.
    pub(crate) async fn put(&mut self) -> Result<()> {
        self.writes += 1;
        let d = self
            .output
            .write_state(&self.topic, self.partition, &self.key, Some(&self.value))
            .await?;
        self.last = d.or(self.last.take());
        Ok(())
    }

    /// Deletes `self.key`.
    pub(crate) async fn delete(&mut self) -> Result<()> {
        self.writes += 1;
        let d = self
            .output
            .write_state(&self.topic, self.partition, &self.key, None)
            .await?;
        self.last = d.or(self.last.take());
        Ok(())
    }
}

/// A key's latest value in a changelog (`None`: a tombstone) and its offset.
type Latest = (Option<Box<[u8]>>, i64);

/// The latest value per key of one store's changelog partition, with its offset there.
pub(crate) type Restored = Vec<(Box<[u8]>, Box<[u8]>, i64)>;

/// What a task's stores are built with: whether they log, and what they restore.
#[derive(Default)]
pub(crate) struct StoreEnv {
    /// Stores write changelogs (runs against Kafka; not runs in memory).
    pub(crate) logged: bool,
    /// Exactly-once: a store that cannot log its state is an error.
    pub(crate) strict: bool,
    /// Restored contents by store name, taken by the stores as they are built.
    pub(crate) restored: RefCell<HashMap<String, Restored>>,
    /// Stores kept on disk (`state.store = disk`), restored into their files, by name.
    pub(crate) locals: RefCell<HashMap<String, Rc<LocalStore>>>,
    /// The cache budget of each disk store (`state.cache.max.bytes`).
    pub(crate) cache_bytes: usize,
}

impl StoreEnv {
    /// The restored contents of `store` (empty when there were none).
    pub(crate) fn take(&self, store: &str) -> Restored {
        self.restored.borrow_mut().remove(store).unwrap_or_default()
    }

    /// The file of `store`, if it is kept on disk.
    pub(crate) fn take_local(&self, store: &str) -> Option<Rc<LocalStore>> {
        self.locals.borrow_mut().remove(store)
    }
}

/// A standby copy of one changelog partition (`num.standby.replicas`): the latest value per
/// key, kept up to date by a worker that does not run the task, handed to the worker that
/// starts it so that only the tail is read then. A store kept on disk keeps its copy in the
/// task's store file instead ([`FileCopy`]), not in memory.
#[derive(Debug, Default)]
pub(crate) struct Standby {
    latest: HashMap<Box<[u8]>, Latest>,
    file: Option<FileCopy>,
    /// Where reading goes on.
    pub(crate) next: i64,
    /// Records applied.
    records: u64,
}

impl Standby {
    /// A copy kept in `file`, complete up to changelog offset `next`.
    pub(crate) fn in_file(file: FileCopy, next: i64) -> Standby {
        Standby {
            file: Some(file),
            next,
            ..Standby::default()
        }
    }

    /// The latest value per key (`None`: deleted), where reading goes on, and the records
    /// applied. Empty for a copy kept in a file.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
    ) -> (
        impl Iterator<Item = (Box<[u8]>, Option<Box<[u8]>>)>,
        i64,
        u64,
    ) {
        let latest = self.latest.into_iter().map(|(k, (v, _))| (k, v));
        (latest, self.next, self.records)
    }

    /// Whether the copy is kept in the task's store file.
    pub(crate) fn in_a_file(&self) -> bool {
        self.file.is_some()
    }

    pub(crate) fn apply(&mut self, key: &[u8], value: Option<&[u8]>, offset: i64) -> Result<()> {
        self.records += 1;
        self.next = self.next.max(offset + 1);
        match &mut self.file {
            Some(file) => file.apply(key, value),
            None => {
                self.latest
                    .insert(key.into(), (value.map(Into::into), offset));
                Ok(())
            }
        }
    }

    /// Writes what a file copy has batched (after each poll's records).
    pub(crate) fn flush(&mut self) -> Result<()> {
        match &mut self.file {
            Some(file) => file.flush(false),
            None => Ok(()),
        }
    }

    /// Closes a file copy with a checkpoint at where reading got to (the task's store then
    /// reads on from there); returns the records applied.
    pub(crate) fn close(self) -> Result<u64> {
        if let Some(file) = self.file {
            file.close(self.next)?;
        }
        Ok(self.records)
    }
}

/// What one restore read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreStats {
    /// Changelog records read.
    pub records: u64,
    /// Records a standby copy had read before the task started here (not read again).
    pub standby_records: u64,
    /// Their key and value bytes.
    pub bytes: u64,
    /// Keys the restored state holds.
    pub keys: u64,
    /// How long it took.
    pub duration: Duration,
}

/// Reads changelog partitions back (one per worker, assigned partitions only, no group).
pub(crate) struct Restorer {
    consumer: Consumer,
    admin: Admin,
    isolation: IsolationLevel,
}

impl Restorer {
    pub(crate) fn new(consumer: Consumer, admin: Admin, isolation: IsolationLevel) -> Self {
        Restorer {
            consumer,
            admin,
            isolation,
        }
    }

    /// The earliest and the end offset of `tp` (the last stable offset under
    /// `read_committed`).
    pub(crate) async fn bounds(&self, tp: &TopicPartition) -> Result<(i64, i64)> {
        let specs = [
            (tp.clone(), OffsetSpec::Earliest),
            (tp.clone(), OffsetSpec::Latest),
        ];
        let earliest = self
            .admin
            .list_offsets(&specs[..1], self.isolation)
            .await?
            .remove(tp)
            .transpose()?
            .map_or(0, |o| o.offset);
        let end = self
            .admin
            .list_offsets(&specs[1..], self.isolation)
            .await?
            .remove(tp)
            .transpose()?
            .map_or(0, |o| o.offset);
        Ok((earliest, end))
    }

    /// Reads `tp` from its start (or from where `standby` got to, on top of it) to its
    /// current end (the last stable offset under `read_committed`): the latest value per
    /// key, tombstoned keys left out.
    pub(crate) async fn restore(
        &mut self,
        tp: &TopicPartition,
        standby: Option<Standby>,
    ) -> Result<(Restored, RestoreStats)> {
        let started = Instant::now();
        let mut stats = RestoreStats::default();
        let (earliest, end) = self.bounds(tp).await?;
        // Per key: the latest value (`None`: deleted) and its offset.
        let (mut latest, earliest) = match standby {
            Some(s) if s.next >= earliest => {
                stats.standby_records = s.records;
                (s.latest, s.next)
            }
            _ => (HashMap::new(), earliest),
        };
        self.read(tp, earliest, end, &mut stats, |key, value, offset| {
            latest.insert(key.into(), (value.map(Into::into), offset));
            Ok(())
        })
        .await?;
        let restored: Restored = latest
            .into_iter()
            .filter_map(|(k, (v, offset))| v.map(|v| (k, v, offset)))
            .collect();
        stats.keys = restored.len() as u64;
        stats.duration = started.elapsed();
        Ok((restored, stats))
    }

    /// Streams `tp` into `apply` (key, value or `None` for a tombstone, offset), from `from`
    /// when it lies between the partition's earliest and end offsets, else from the
    /// earliest after calling `reset` (the caller's contents then start empty). Nothing is
    /// kept in memory here. Returns the end offset read up to.
    pub(crate) async fn restore_into(
        &mut self,
        tp: &TopicPartition,
        from: Option<i64>,
        stats: &mut RestoreStats,
        reset: impl FnOnce() -> Result<()>,
        apply: impl FnMut(&[u8], Option<&[u8]>, i64) -> Result<()>,
    ) -> Result<i64> {
        let (earliest, end) = self.bounds(tp).await?;
        let from = match from {
            Some(o) if (earliest..=end).contains(&o) => o,
            _ => {
                reset()?;
                earliest
            }
        };
        self.read(tp, from, end, stats, apply).await?;
        Ok(end)
    }

    /// Reads `tp` from `from` up to `end` into `apply`, counting into `stats`.
    async fn read(
        &mut self,
        tp: &TopicPartition,
        from: i64,
        end: i64,
        stats: &mut RestoreStats,
        mut apply: impl FnMut(&[u8], Option<&[u8]>, i64) -> Result<()>,
    ) -> Result<()> {
        if end <= from {
            return Ok(());
        }
        self.consumer.assign([tp.clone()])?;
        self.consumer.seek(tp, from)?;
        let mut position = from;
        let deadline = Instant::now() + Duration::from_secs(300);
        while position < end {
            if Instant::now() >= deadline {
                return Err(Error::Restore {
                    tp: tp.clone(),
                    offset: position,
                    message: format!("no progress towards end offset {end} in 300 s"),
                });
            }
            let mut records = self
                .consumer
                .poll(Duration::from_millis(200))
                .await
                .map_err(|e| Error::Restore {
                    tp: tp.clone(),
                    offset: position,
                    message: e.to_string(),
                })?;
            for part in records.partitions_mut() {
                for record in part.iter() {
                    let record = record.map_err(|e| Error::Restore {
                        tp: tp.clone(),
                        offset: position,
                        message: e.to_string(),
                    })?;
                    if record.offset() >= end {
                        break;
                    }
                    let Some(key) = record.key() else { continue };
                    stats.records += 1;
                    let value = record.value();
                    stats.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
                    apply(key, value, record.offset())?;
                }
                position = position.max(part.next_offset());
            }
            if records.is_empty() {
                position = position.max(self.consumer.position(tp).await?);
            }
        }
        self.consumer.assign([])?;
        Ok(())
    }
}
