//! Joins: a stream with a table (the latest value per key of a compacted topic).
//!
//! A table's topic is read by the same tasks as the stream, partition `p` by task `p`: the two
//! must be co-partitioned (same partition count, same keys in the same partitions), which the
//! runtime checks at start. Each task keeps its partition of the table in memory.
//!
//! # Invariants
//! - A task reads its table partitions from the beginning whenever it starts, and processes no
//!   stream record before it has read them up to the end offset they had then (the table is
//!   its own changelog: nothing of it depends on committed offsets).
//! - After that, table updates and stream records are applied in the order the task receives
//!   them; a tombstone (null value) deletes the key.
//! - A table record that does not decode follows the source's error policy: it fails the task
//!   (naming topic, partition and offset) or is skipped and counted.
//!
//! A two-stream join (`join_within`) buffers each side's records per key until the watermark
//! passes their timestamp plus the interval. Its buffers are a state store, `join-<n>`: at
//! each checkpoint it logs each side's records of every key whose records changed since the
//! last one (buffered, newly matched or expired; key: the side and the record key; value: the
//! key's scheduled expiry, then each record's timestamp, matched flag and item in its
//! [`StateCodec`] form, in arrival order), or a tombstone once the key has none, so a restore
//! rebuilds the buffers the committed offsets lead to. The due heap holds one entry per side
//! and key (its earliest expiry; an out-of-order record that expires earlier adds one, and
//! entries that are not the key's scheduled expiry any more are skipped). Under
//! `state.store = disk` the buffers are in the task's store file under the same keys and
//! values, behind a bounded cache, and the due entries too, under tag 2 (not logged; written
//! anew from the buffers when a task starts), with the earliest in memory (`DueIndex`).

use std::marker::PhantomData;
use std::rc::Rc;

use hashbrown::HashMap;

use crate::changelog::{Changelog, changelog_topic};
use crate::codec::StateCodec;
use crate::context::RecordContext;
use crate::disk_store::{Batch, DiskMap, DueIndex, LocalStore, StateForm};
use crate::error::{Error, Result};
use crate::format::{Decode, Family, Owned};
use crate::operator::{Operator, OperatorMetrics, pass_on};
use crate::stream::{Chain, KafkaSource, SourceTopics, Stream, UserFn};
use crate::task::TaskEnv;
use crate::time::Time;

/// Whether a record with no table value for its key is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinKind {
    /// Only records whose key has a value.
    Inner,
    /// Every record; the function sees `None` where the key has no value.
    Left,
}

/// A table: the latest value per key of a compacted topic, read with a format.
#[derive(Clone, Debug)]
pub struct Table<D> {
    pub(crate) topic: String,
    pub(crate) format: D,
}

impl<D: Decode> Table<D> {
    /// The table of `source`'s topic (one topic; its values decoded by the source's format).
    ///
    /// # Panics
    /// If the source reads a pattern or several topics.
    pub fn new(source: KafkaSource<D>) -> Self {
        match source.topics {
            SourceTopics::Topics(t) if t.len() == 1 => Table {
                topic: t.into_iter().next().expect("one"),
                format: source.format,
            },
            _ => panic!("a table reads exactly one topic"),
        }
    }

    /// The table's topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// The stream–table join operator.
pub struct TableJoin<D: Decode, J, N> {
    table: usize,
    format: D,
    kind: JoinKind,
    values: HashMap<Box<[u8]>, <D::Family as Family>::Item<'static>>,
    f: J,
    next: N,
    count: u64,
    updates: u64,
    skip_bad: bool,
    skipped: u64,
}

impl<F, D, V, O, J, N> Operator<F> for TableJoin<D, J, N>
where
    F: Family,
    D: Decode<Family = Owned<V>>,
    V: 'static,
    O: 'static,
    J: for<'a, 'b> FnMut(F::Item<'a>, Option<&'b V>) -> O,
    N: Operator<Owned<O>>,
{
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        let value = cx.key().and_then(|k| self.values.get(k));
        if value.is_none() && self.kind == JoinKind::Inner {
            return Ok(());
        }
        let out = (self.f)(item, value);
        self.next.push(cx, out).await
    }

    async fn advance(&mut self, time: &Time<'_>) -> Result<()> {
        self.next.advance(time).await
    }

    async fn side<'a>(
        &mut self,
        table: usize,
        cx: &RecordContext<'a>,
        value: Option<&'a [u8]>,
    ) -> Result<()> {
        if table != self.table {
            return self.next.side(table, cx, value).await;
        }
        self.updates += 1;
        let key = cx.key().unwrap_or_default();
        let Some(bytes) = value else {
            self.values.remove(key);
            return Ok(());
        };
        match self.format.decode(Some(bytes)) {
            Ok(v) => {
                self.values.insert(Box::from(key), v);
                Ok(())
            }
            Err(_) if self.skip_bad => {
                self.skipped += 1;
                Ok(())
            }
            Err(e) => Err(Error::Deserialize {
                tp: cx.topic_partition().clone(),
                offset: cx.offset(),
                message: format!("table value: {}", e.0),
            }),
        }
    }

    async fn checkpoint(&mut self) -> Result<()> {
        self.next.checkpoint().await
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        let slot = std::mem::size_of::<(Box<[u8]>, V)>() as u64 + 1;
        out.push(OperatorMetrics {
            name: format!("{}:join_table", out.len()),
            records_in: self.count,
            state_keys: self.values.len() as u64,
            state_bytes: self.values.capacity() as u64 * slot
                + self
                    .values
                    .keys()
                    .map(|k| k.len().next_multiple_of(16) as u64)
                    .sum::<u64>(),
            ..OperatorMetrics::default()
        });
        self.next.metrics(out);
    }
}

/// Description of a `join_table`.
pub struct TableJoinLink<C, D, J, F> {
    chain: C,
    table: usize,
    format: D,
    kind: JoinKind,
    skip_bad: bool,
    f: J,
    _family: PhantomData<fn() -> F>,
}

impl<C: Clone, D: Clone, J: Clone, F> Clone for TableJoinLink<C, D, J, F> {
    fn clone(&self) -> Self {
        TableJoinLink {
            chain: self.chain.clone(),
            table: self.table,
            format: self.format.clone(),
            kind: self.kind,
            skip_bad: self.skip_bad,
            f: self.f.clone(),
            _family: PhantomData,
        }
    }
}

impl<In, F, C, D, V, O, J> Chain<In, Owned<O>> for TableJoinLink<C, D, J, F>
where
    In: Family,
    F: Family,
    C: Chain<In, F>,
    D: Decode<Family = Owned<V>>,
    V: 'static,
    O: 'static,
    J: for<'a, 'b> FnMut(F::Item<'a>, Option<&'b V>) -> O + UserFn,
{
    type Out<N: Operator<Owned<O>>> = C::Out<TableJoin<D, J, N>>;
    fn build<N: Operator<Owned<O>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        self.chain.build(
            env,
            TableJoin {
                table: self.table,
                format: self.format.clone(),
                kind: self.kind,
                values: HashMap::new(),
                f: self.f.clone(),
                next,
                count: 0,
                updates: 0,
                skip_bad: self.skip_bad,
                skipped: 0,
            },
        )
    }
}

impl<'p, D, F, C> Stream<'p, D, F, C>
where
    D: Decode,
    F: Family,
    C: Chain<D::Family, F>,
{
    /// Joins each item with the value `table` holds for the record's key: `f(item, value)`.
    /// An [`JoinKind::Inner`] join drops items whose key has no value; a
    /// [`JoinKind::Left`] join calls `f` with `None` for them.
    ///
    /// The table's topic must be co-partitioned with this stream's source (checked at
    /// start); re-key the stream with `key_by` first if its keys are not the table's.
    #[allow(clippy::type_complexity)]
    pub fn join_table<TD, V, O, J>(
        mut self,
        table: &Table<TD>,
        kind: JoinKind,
        f: J,
    ) -> Stream<'p, D, Owned<O>, TableJoinLink<C, TD, J, F>>
    where
        TD: Decode<Family = Owned<V>>,
        V: 'static,
        O: 'static,
        J: for<'a, 'b> FnMut(F::Item<'a>, Option<&'b V>) -> O + UserFn,
    {
        let index = self.tables.len();
        self.tables.push(table.topic.clone());
        let link = TableJoinLink {
            chain: self.chain.clone(),
            table: index,
            format: table.format.clone(),
            kind,
            skip_bad: self.source.on_error != crate::stream::OnError::Fail,
            f,
            _family: PhantomData,
        };
        let name = match kind {
            JoinKind::Inner => format!("join_table({})", table.topic),
            JoinKind::Left => format!("left_join_table({})", table.topic),
        };
        self.then(&name, link)
    }
}

/// One item of a two-stream join's input: from the left or the right stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Either<L, R> {
    /// From the left stream.
    Left(L),
    /// From the right stream.
    Right(R),
}

/// The format of a two-stream join's source: left topics decode with `DL`, the others with
/// `DR`.
#[derive(Clone, Debug)]
pub struct TwoStreams<DL, DR> {
    left_topics: Vec<String>,
    left: DL,
    right: DR,
}

impl<DL, DR, L, R> Decode for TwoStreams<DL, DR>
where
    DL: Decode<Family = Owned<L>>,
    DR: Decode<Family = Owned<R>>,
    L: 'static,
    R: 'static,
{
    type Family = Owned<Either<L, R>>;

    fn decode(&self, value: Option<&[u8]>) -> Result<Either<L, R>, crate::format::FormatError> {
        self.left.decode(value).map(Either::Left)
    }

    fn decode_from(
        &self,
        topic: &str,
        value: Option<&[u8]>,
    ) -> Result<Either<L, R>, crate::format::FormatError> {
        if self.left_topics.iter().any(|t| t == topic) {
            self.left.decode(value).map(Either::Left)
        } else {
            self.right.decode(value).map(Either::Right)
        }
    }
}

/// Which records of a two-stream join are emitted without a partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamJoinKind {
    /// Only pairs.
    Inner,
    /// Pairs, and left records that found none once their window has passed.
    Left,
    /// Pairs, and records of either side that found none once their window has passed.
    Outer,
}

impl crate::stream::Pipeline {
    /// A stream of the records of `left` and `right` (read by the same tasks: their topics
    /// must be co-partitioned, checked at start), for [`Stream::join_within`]. Watermarks
    /// follow `left`'s strategy.
    pub fn source2<DL, DR, L, R>(
        &mut self,
        left: KafkaSource<DL>,
        right: KafkaSource<DR>,
    ) -> Stream<'_, TwoStreams<DL, DR>, Owned<Either<L, R>>, crate::stream::Identity>
    where
        DL: Decode<Family = Owned<L>>,
        DR: Decode<Family = Owned<R>>,
        L: 'static,
        R: 'static,
    {
        let (SourceTopics::Topics(mut topics), SourceTopics::Topics(right_topics)) =
            (left.topics, right.topics)
        else {
            panic!("a two-stream join reads named topics, not patterns");
        };
        let left_topics = topics.clone();
        topics.extend(right_topics);
        self.source(KafkaSource {
            topics: SourceTopics::Topics(topics),
            format: TwoStreams {
                left_topics,
                left: left.format,
                right: right.format,
            },
            on_error: left.on_error,
            watermarks: left.watermarks,
        })
    }
}

struct Buffered<T> {
    ts: i64,
    item: T,
    matched: bool,
}

/// One side's buffered records of one key, in arrival order, and the expiry the due heap
/// holds for them (the earliest timestamp plus the interval, when it was scheduled).
struct Pending<T> {
    scheduled: i64,
    records: Vec<Buffered<T>>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            scheduled: i64::MAX,
            records: Vec::new(),
        }
    }
}

/// The side tags of a join buffer's changelog keys.
const LEFT: u8 = 0;
const RIGHT: u8 = 1;

type Key = Box<[u8]>;

/// A key's records of one side in the changelog (and the store file): the scheduled expiry,
/// their count, then each one's timestamp, matched flag and item.
fn save_pending<T: StateCodec>(p: &Pending<T>, out: &mut Vec<u8>) {
    p.scheduled.encode(out);
    crate::codec::put_varint(out, p.records.len() as u64);
    for b in &p.records {
        b.ts.encode(out);
        b.matched.encode(out);
        b.item.encode(out);
    }
}

fn load_pending<T: StateCodec>(input: &mut &[u8]) -> Option<Pending<T>> {
    let scheduled = i64::decode(input)?;
    let n = crate::codec::get_varint(input)?;
    let mut records = Vec::with_capacity(usize::try_from(n).ok()?.min(1024));
    for _ in 0..n {
        let ts = i64::decode(input)?;
        let matched = bool::decode(input)?;
        let item = T::decode(input)?;
        records.push(Buffered { ts, item, matched });
    }
    Some(Pending { scheduled, records })
}

struct PendingForm<T>(PhantomData<fn() -> T>);

impl<T: StateCodec> StateForm<Pending<T>> for PendingForm<T> {
    fn save(&self, p: &Pending<T>, out: &mut Vec<u8>) -> bool {
        save_pending(p, out);
        true
    }

    fn load(&self, input: &mut &[u8]) -> Option<Pending<T>> {
        load_pending(input)
    }

    fn heap_bytes(&self, p: &Pending<T>) -> usize {
        p.records.capacity() * std::mem::size_of::<Buffered<T>>()
    }
}

/// One side's buffers: in memory, or in the task's store file (`state.store = disk`).
enum Side<T> {
    Memory {
        map: HashMap<Key, Pending<T>>,
        /// Keys changed since the last checkpoint (logged runs only).
        dirty: Option<hashbrown::HashSet<Key>>,
    },
    Disk {
        map: Box<DiskMap<Pending<T>>>,
        tag: u8,
        /// The file key being looked up (tag + key).
        at: Vec<u8>,
        keys: u64,
    },
}

impl<T: StateCodec> Side<T> {
    fn memory() -> Self {
        Side::Memory {
            map: HashMap::new(),
            dirty: None,
        }
    }

    fn disk(local: &Rc<LocalStore>, tag: u8, cache_bytes: usize, logging: bool) -> Result<Self>
    where
        T: 'static,
    {
        let mut keys = 0;
        local.scan(tag, |_, _| keys += 1)?;
        let form = Box::new(PendingForm(PhantomData));
        Ok(Side::Disk {
            map: Box::new(DiskMap::new(local.clone(), form, cache_bytes, logging)),
            tag,
            at: Vec::new(),
            keys,
        })
    }

    /// The records of `key`, if any, not counted as changed (see `changed`).
    fn get(&mut self, key: &[u8]) -> Option<&mut Pending<T>> {
        match self {
            Side::Memory { map, .. } => map.get_mut(key),
            Side::Disk { map, tag, at, .. } => {
                file_key(at, *tag, key);
                map.peek_mut(at)
            }
        }
    }

    /// Counts the records of `key` as changed (right after `get`).
    fn changed(&mut self, key: &[u8]) {
        match self {
            Side::Memory { dirty, .. } => {
                if let Some(d) = dirty
                    && !d.contains(key)
                {
                    d.insert(Key::from(key));
                }
            }
            Side::Disk { map, at, .. } => map.mark(at),
        }
    }

    /// The records of `key`, created empty if none; counted as changed.
    fn entry(&mut self, key: &[u8]) -> &mut Pending<T> {
        match self {
            Side::Memory { map, dirty } => {
                if let Some(d) = dirty
                    && !d.contains(key)
                {
                    d.insert(Key::from(key));
                }
                if !map.contains_key(key) {
                    map.insert(Key::from(key), Pending::default());
                }
                map.get_mut(key).expect("present")
            }
            Side::Disk { map, tag, at, keys } => {
                file_key(at, *tag, key);
                let (p, created) = map.entry(at, Pending::default);
                *keys += u64::from(created);
                p
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        match self {
            Side::Memory { map, dirty } => {
                map.remove(key);
                if let Some(d) = dirty
                    && !d.contains(key)
                {
                    d.insert(Key::from(key));
                }
            }
            Side::Disk { map, tag, at, keys } => {
                file_key(at, *tag, key);
                if map.remove(at).is_some() {
                    *keys -= 1;
                }
            }
        }
    }

    /// Writes the keys changed since the last checkpoint to `log` (a tombstone for a key
    /// left with no records), and to the file on disk.
    async fn flush(&mut self, tag: u8, log: &mut Changelog) -> Result<()> {
        match self {
            Side::Memory { map, dirty } => {
                for key in dirty.iter_mut().flat_map(|d| d.drain()) {
                    file_key(&mut log.key, tag, &key);
                    match map.get(&key) {
                        Some(p) => {
                            log.value.clear();
                            save_pending(p, &mut log.value);
                            log.put().await?;
                        }
                        None => log.delete().await?,
                    }
                }
                Ok(())
            }
            Side::Disk { map, .. } => {
                map.write_changes(Some(log)).await?;
                map.commit(Some(log))
            }
        }
    }

    /// Keys with records, and the bytes held in memory (an estimate).
    fn size(&self) -> (u64, u64) {
        match self {
            Side::Memory { map, .. } => {
                let records: usize = map.values().map(|p| p.records.len()).sum();
                (
                    map.len() as u64,
                    (records * std::mem::size_of::<Buffered<T>>()) as u64,
                )
            }
            Side::Disk { map, keys, .. } => (*keys, map.cache_bytes() as u64),
        }
    }

    fn take_error(&mut self) -> Option<Error> {
        match self {
            Side::Memory { .. } => None,
            Side::Disk { map, .. } => map.take_error(),
        }
    }
}

/// A join buffer's changelog key: the side's tag, then the record key.
fn file_key(out: &mut Vec<u8>, tag: u8, key: &[u8]) {
    out.clear();
    out.push(tag);
    out.extend_from_slice(key);
}

/// The two-stream windowed join operator.
pub struct IntervalJoin<L, R, J, N> {
    within: i64,
    kind: StreamJoinKind,
    left: Side<L>,
    right: Side<R>,
    /// `(expiry, side, key)`: when the watermark reaches `expiry`, the side's records of
    /// the key that old go. An entry whose expiry is not the side's `scheduled` for the key
    /// any more is stale (an earlier record came since, or the key's records went).
    due: Due,
    watermark: i64,
    f: J,
    next: N,
    count: u64,
    /// The buffers' changelog (runs against Kafka).
    log: Option<Changelog>,
    /// A restore that failed: the task fails with it at its first record.
    broken: Option<Error>,
}

impl<L, R, J, N> IntervalJoin<L, R, J, N>
where
    L: StateCodec + 'static,
    R: StateCodec + 'static,
{
    /// Logs the buffers to `log` from now on, starting from what `restored` holds.
    fn with_changelog(mut self, log: Changelog, restored: crate::changelog::Restored) -> Self {
        self.broken = log.restore_with(restored, |k, v| self.restore_one(k, v));
        self.left.track();
        self.right.track();
        self.log = Some(log);
        self
    }

    /// Keeps the buffers in the file of `local` (restored already) behind a cache of about
    /// `cache_bytes`, and logs to `log` if given.
    fn with_local(
        mut self,
        log: Option<Changelog>,
        local: Rc<LocalStore>,
        cache_bytes: usize,
    ) -> Self {
        let logging = log.is_some();
        let sides = Side::disk(&local, LEFT, cache_bytes, logging)
            .and_then(|l| Ok((l, Side::disk(&local, RIGHT, cache_bytes, logging)?)));
        match sides {
            Ok((left, right)) => (self.left, self.right) = (left, right),
            Err(e) => {
                self.broken = Some(e);
                return self;
            }
        }
        // Each side's and key's scheduled expiry leads its value: an entry for each, straight
        // to the file (a restore brought the values without their entries).
        let head = DueIndex::head_for(cache_bytes);
        let mut due = Box::new(DueIndex::new(local.clone(), DUE_TAG, head));
        let (mut bad, mut batch, mut written) = (false, Batch::default(), Ok(()));
        let scanned = local.scan_range(&[LEFT], &[RIGHT + 1], |k, mut v| {
            match i64::decode(&mut v) {
                Some(at) if at != i64::MAX => {
                    written = due.write_now(&mut batch, at, i64::from(k[0]), &k[1..]);
                }
                Some(_) => {}
                None => bad = true,
            }
            !bad && written.is_ok()
        });
        let scanned = scanned
            .and(written)
            .and_then(|()| due.write_end(&mut batch));
        self.due = Due::Disk(due);
        if bad {
            self.broken = Some(Error::Io {
                context: format!("{local:?}: restoring the join buffers"),
                source: std::io::Error::other("a value without its expiry"),
            });
        } else if let Err(e) = scanned {
            self.broken = Some(e);
        }
        self.log = log;
        self
    }

    fn restore_one(&mut self, key: &[u8], mut value: &[u8]) -> std::result::Result<(), String> {
        let (&tag, record_key) = key.split_first().ok_or("an empty key")?;
        let scheduled = match tag {
            LEFT => restore_into(&mut self.left, record_key, &mut value)?,
            RIGHT => restore_into(&mut self.right, record_key, &mut value)?,
            other => return Err(format!("unknown side tag {other}")),
        };
        if scheduled != i64::MAX {
            self.due.push(scheduled, tag, record_key);
        }
        Ok(())
    }

    /// Writes what changed since the last checkpoint: each key whose records changed (or a
    /// tombstone once it has none).
    async fn log_buffers(&mut self) -> Result<()> {
        // Not logged: the index follows the buffers, with a changelog or without.
        self.due.flush()?;
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        self.left.flush(LEFT, log).await?;
        self.right.flush(RIGHT, log).await
    }
}

impl<T> Side<T> {
    /// Turns on the changed-key tracking of a memory side (logged runs).
    fn track(&mut self) {
        if let Side::Memory { dirty, .. } = self {
            dirty.get_or_insert_with(Default::default);
        }
    }
}

/// Adds a restored key's records (`value`: their changelog form) to a memory side; returns
/// their scheduled expiry.
fn restore_into<T: StateCodec>(
    side: &mut Side<T>,
    key: &[u8],
    value: &mut &[u8],
) -> std::result::Result<i64, String> {
    let p = load_pending::<T>(value)
        .filter(|_| value.is_empty())
        .ok_or("buffered records that do not decode")?;
    let scheduled = p.scheduled;
    if let Side::Memory { map, .. } = side {
        map.insert(Key::from(key), p);
    }
    Ok(scheduled)
}

/// The tag of the due index in the store file (not logged; see `DueIndex`).
const DUE_TAG: u8 = 2;

/// `(expiry, side, key)` entries: when the watermark reaches `expiry`, the side's records of
/// the key that old go. In memory, or with the buffers on disk, in their file.
enum Due {
    Memory(std::collections::BinaryHeap<std::cmp::Reverse<(i64, u8, Key)>>),
    Disk(Box<DueIndex>),
}

impl Due {
    fn push(&mut self, at: i64, side: u8, key: &[u8]) {
        match self {
            Due::Memory(heap) => heap.push(std::cmp::Reverse((at, side, Key::from(key)))),
            Due::Disk(index) => index.push(at, i64::from(side), key),
        }
    }

    /// The earliest entry's expiry.
    fn peek(&mut self) -> Result<Option<i64>> {
        match self {
            Due::Memory(heap) => Ok(heap.peek().map(|e| e.0.0)),
            Due::Disk(index) => index.peek(),
        }
    }

    fn pop(&mut self) -> Result<Option<(i64, u8, Key)>> {
        match self {
            Due::Memory(heap) => Ok(heap.pop().map(|e| e.0)),
            Due::Disk(index) => Ok(index.pop()?.map(|(at, side, key)| (at, side as u8, key))),
        }
    }

    /// Writes the entries to the file (on disk).
    fn flush(&mut self) -> Result<()> {
        match self {
            Due::Memory(_) => Ok(()),
            Due::Disk(index) => index.flush(),
        }
    }

    fn size_bytes(&self) -> usize {
        match self {
            Due::Memory(heap) => heap.len() * 40,
            Due::Disk(index) => index.size_bytes(),
        }
    }
}

/// Buffers `record` of one side under `key`, scheduling its expiry if it is the earliest.
fn buffer<T: StateCodec>(
    side: &mut Side<T>,
    tag: u8,
    due: &mut Due,
    key: &[u8],
    record: Buffered<T>,
    within: i64,
) {
    let expiry = record.ts.saturating_add(within);
    let p = side.entry(key);
    p.records.push(record);
    if expiry < p.scheduled {
        p.scheduled = expiry;
        due.push(expiry, tag, key);
    }
}

impl<L, R, O, J, N> IntervalJoin<L, R, J, N>
where
    L: 'static,
    R: 'static,
    O: 'static,
    J: for<'a> FnMut(Option<&'a L>, Option<&'a R>) -> O,
    N: Operator<Owned<O>>,
{
    async fn emit(
        next: &mut N,
        tp: &flumen_client::TopicPartition,
        key: &[u8],
        ts: i64,
        out: O,
    ) -> Result<()> {
        let cx = RecordContext::new(tp, -1, ts, Some(key));
        next.push(&cx, out).await
    }

    /// A due entry of one side: its records of `key` older than the watermark `wm` minus the
    /// interval go (those never matched emitted through `unmatched` if given), and the next
    /// expiry is scheduled. A stale entry does nothing.
    #[allow(clippy::too_many_arguments)]
    async fn expire<T: StateCodec>(
        side: &mut Side<T>,
        tag: u8,
        key: Key,
        at: i64,
        (wm, within): (i64, i64),
        due: &mut Due,
        mut unmatched: Option<impl FnMut(&T) -> O>,
        next: &mut N,
        tp: &flumen_client::TopicPartition,
    ) -> Result<()> {
        let Some(p) = side.get(&key) else {
            return Ok(());
        };
        if p.scheduled != at {
            return Ok(());
        }
        let mut i = 0;
        while i < p.records.len() {
            if p.records[i].ts.saturating_add(within) <= wm {
                let b = p.records.remove(i);
                if let Some(f) = unmatched.as_mut().filter(|_| !b.matched) {
                    Self::emit(next, tp, &key, b.ts, f(&b.item)).await?;
                }
            } else {
                i += 1;
            }
        }
        match p.records.iter().map(|b| b.ts).min() {
            Some(ts) => {
                p.scheduled = ts.saturating_add(within);
                due.push(p.scheduled, tag, &key);
                side.changed(&key);
            }
            None => side.remove(&key),
        }
        Ok(())
    }
}

impl<L, R, O, J, N> Operator<Owned<Either<L, R>>> for IntervalJoin<L, R, J, N>
where
    L: StateCodec + 'static,
    R: StateCodec + 'static,
    O: 'static,
    J: for<'a> FnMut(Option<&'a L>, Option<&'a R>) -> O,
    N: Operator<Owned<O>>,
{
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: Either<L, R>) -> Result<()> {
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
        self.count += 1;
        let key = cx.key().unwrap_or_default();
        let ts = cx.timestamp();
        let within = self.within;
        let IntervalJoin {
            left,
            right,
            due,
            f,
            next,
            ..
        } = self;
        let tp = cx.topic_partition();
        let mut matched = false;
        match item {
            Either::Left(l) => {
                if let Some(rs) = right.get(key) {
                    let mut changed = false;
                    for r in rs
                        .records
                        .iter_mut()
                        .filter(|r| (r.ts - ts).abs() <= within)
                    {
                        changed |= !r.matched;
                        r.matched = true;
                        matched = true;
                        let out = f(Some(&l), Some(&r.item));
                        Self::emit(next, tp, key, ts.max(r.ts), out).await?;
                    }
                    if changed {
                        right.changed(key);
                    }
                }
                let record = Buffered {
                    ts,
                    item: l,
                    matched,
                };
                buffer(left, LEFT, due, key, record, within);
            }
            Either::Right(r) => {
                if let Some(ls) = left.get(key) {
                    let mut changed = false;
                    for l in ls
                        .records
                        .iter_mut()
                        .filter(|l| (l.ts - ts).abs() <= within)
                    {
                        changed |= !l.matched;
                        l.matched = true;
                        matched = true;
                        let out = f(Some(&l.item), Some(&r));
                        Self::emit(next, tp, key, ts.max(l.ts), out).await?;
                    }
                    if changed {
                        left.changed(key);
                    }
                }
                let record = Buffered {
                    ts,
                    item: r,
                    matched,
                };
                buffer(right, RIGHT, due, key, record, within);
            }
        }
        match left.take_error().or_else(|| right.take_error()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn advance(&mut self, time: &Time<'_>) -> Result<()> {
        if time.watermark() > self.watermark {
            self.watermark = time.watermark();
            let wm = self.watermark;
            let tp = time.topic_partition();
            let IntervalJoin {
                left,
                right,
                due,
                f,
                next,
                kind,
                within,
                ..
            } = self;
            let times = (wm, *within);
            while due.peek()?.is_some_and(|at| at <= wm) {
                let (at, tag, key) = due.pop()?.expect("peeked");
                if tag == LEFT {
                    let unmatched =
                        (*kind != StreamJoinKind::Inner).then_some(|l: &L| f(Some(l), None));
                    Self::expire(left, tag, key, at, times, due, unmatched, next, tp).await?;
                } else {
                    let unmatched =
                        (*kind == StreamJoinKind::Outer).then_some(|r: &R| f(None, Some(r)));
                    Self::expire(right, tag, key, at, times, due, unmatched, next, tp).await?;
                }
            }
            if let Some(e) = left.take_error().or_else(|| right.take_error()) {
                return Err(e);
            }
        }
        self.next.advance(time).await
    }

    // A table joined after this join gets its records through here.
    pass_on!(side);

    async fn checkpoint(&mut self) -> Result<()> {
        self.log_buffers().await?;
        self.next.checkpoint().await
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        let (lk, lb) = self.left.size();
        let (rk, rb) = self.right.size();
        out.push(OperatorMetrics {
            name: format!("{}:join_within({} ms)", out.len(), self.within),
            records_in: self.count,
            state_keys: lk + rk,
            state_bytes: lb + rb + self.due.size_bytes() as u64,
            ..OperatorMetrics::default()
        });
        self.next.metrics(out);
    }
}

/// Description of a `join_within`.
pub struct IntervalJoinLink<C, J, LR> {
    store: String,
    chain: C,
    within: i64,
    kind: StreamJoinKind,
    f: J,
    _types: PhantomData<fn() -> LR>,
}

impl<C: Clone, J: Clone, LR> Clone for IntervalJoinLink<C, J, LR> {
    fn clone(&self) -> Self {
        IntervalJoinLink {
            store: self.store.clone(),
            chain: self.chain.clone(),
            within: self.within,
            kind: self.kind,
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<In, L, R, O, C, J> Chain<In, Owned<O>> for IntervalJoinLink<C, J, (L, R)>
where
    In: Family,
    L: StateCodec + 'static,
    R: StateCodec + 'static,
    O: 'static,
    C: Chain<In, Owned<Either<L, R>>>,
    J: for<'a> FnMut(Option<&'a L>, Option<&'a R>) -> O + UserFn,
{
    type Out<N: Operator<Owned<O>>> = C::Out<IntervalJoin<L, R, J, N>>;
    fn build<N: Operator<Owned<O>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        let mut op = IntervalJoin {
            within: self.within,
            kind: self.kind,
            left: Side::memory(),
            right: Side::memory(),
            due: Due::Memory(std::collections::BinaryHeap::new()),
            watermark: i64::MIN,
            f: self.f.clone(),
            next,
            count: 0,
            log: None,
            broken: None,
        };
        if env.stores.logged {
            let log = Changelog::new(
                changelog_topic(&env.application_id, &self.store),
                env.partition,
                env.output.clone(),
            );
            op = match env.stores.take_local(&self.store) {
                Some(local) => op.with_local(Some(log), local, env.stores.cache_bytes),
                None => op.with_changelog(log, env.stores.take(&self.store)),
            };
        } else if let Some(local) = env.stores.take_local(&self.store) {
            op = op.with_local(None, local, env.stores.cache_bytes);
        }
        self.chain.build(env, op)
    }
}

impl<'p, D, L, R, C> Stream<'p, D, Owned<Either<L, R>>, C>
where
    D: Decode,
    L: StateCodec + 'static,
    R: StateCodec + 'static,
    C: Chain<D::Family, Owned<Either<L, R>>>,
{
    /// Joins the records of the two streams of a [`crate::Pipeline::source2`] that have the
    /// same key and timestamps at most `within` apart: `f(Some(left), Some(right))` for
    /// each pair; with [`StreamJoinKind::Left`] or [`StreamJoinKind::Outer`], also
    /// `f(Some(left), None)` (and `f(None, Some(right))`) for records that found no partner
    /// once the watermark has passed their timestamp plus `within`.
    ///
    /// The buffers are a state store (`join-<n>`, logged to its changelog when run against
    /// Kafka, and restored with the task): both sides' items need a [`StateCodec`] form.
    #[allow(clippy::type_complexity)]
    pub fn join_within<O, J>(
        mut self,
        within: std::time::Duration,
        kind: StreamJoinKind,
        f: J,
    ) -> Stream<'p, D, Owned<O>, IntervalJoinLink<C, J, (L, R)>>
    where
        O: 'static,
        J: for<'a> FnMut(Option<&'a L>, Option<&'a R>) -> O + UserFn,
    {
        let within = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        let store = format!("join-{}", self.pipeline.stores);
        self.pipeline.stores += 1;
        self.stores.push(store.clone());
        let link = IntervalJoinLink {
            store,
            chain: self.chain.clone(),
            within,
            kind,
            f,
            _types: PhantomData,
        };
        self.then(&format!("join_within({within} ms, {kind:?})"), link)
    }
}
