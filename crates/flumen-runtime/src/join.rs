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
//! each checkpoint it logs every record buffered or newly matched since the last one (key:
//! the side, a per-task sequence number and the record key; value: timestamp, matched flag,
//! the item in its [`StateCodec`] form) and a tombstone for every logged record expired
//! since (one buffered and expired between two checkpoints is never written), so a restore
//! rebuilds the buffers the committed offsets lead to.

use std::marker::PhantomData;

use hashbrown::HashMap;

use crate::changelog::{Changelog, changelog_topic};
use crate::codec::StateCodec;
use crate::context::RecordContext;
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
    /// Its number in the task (its changelog key).
    seq: u64,
    /// Written to the changelog (so its expiry needs a tombstone there).
    logged: bool,
    /// Buffered or matched since the last checkpoint: to be written at the next.
    dirty: bool,
}

/// The side tags of a join buffer's changelog keys.
const LEFT: u8 = 0;
const RIGHT: u8 = 1;

/// A join buffer's changelog key: side, sequence number (big-endian), record key.
fn buffer_key(out: &mut Vec<u8>, side: u8, seq: u64, key: &[u8]) {
    out.clear();
    append_buffer_key(out, side, seq, key);
}

/// Appends a join buffer's changelog key to `out`.
fn append_buffer_key(out: &mut Vec<u8>, side: u8, seq: u64, key: &[u8]) {
    out.push(side);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(key);
}

/// One side's buffers, by record key.
type Buffers<T> = HashMap<Box<[u8]>, Vec<Buffered<T>>>;

/// Adds a restored record (`value`: the item's [`StateCodec`] form) to one side's buffers.
fn restore_into<T: StateCodec>(
    buffers: &mut Buffers<T>,
    key: &[u8],
    ts: i64,
    matched: bool,
    seq: u64,
    value: &[u8],
) -> std::result::Result<(), String> {
    let item = T::decode_all(value).ok_or("a buffered record that does not decode")?;
    buffers.entry(Box::from(key)).or_default().push(Buffered {
        ts,
        item,
        matched,
        seq,
        logged: true,
        dirty: false,
    });
    Ok(())
}

/// Writes one side's records buffered or matched since the last checkpoint to `log` (value:
/// timestamp, matched flag, item) and marks them logged.
async fn log_dirty<T: StateCodec>(
    buffers: &mut Buffers<T>,
    side: u8,
    log: &mut Changelog,
) -> Result<()> {
    for (key, records) in buffers.iter_mut() {
        for b in records.iter_mut().filter(|b| b.dirty) {
            buffer_key(&mut log.key, side, b.seq, key);
            log.value.clear();
            b.ts.encode(&mut log.value);
            b.matched.encode(&mut log.value);
            b.item.encode(&mut log.value);
            log.put().await?;
            b.dirty = false;
            b.logged = true;
        }
    }
    Ok(())
}

/// The changelog keys of logged records expired since the last checkpoint, one after the
/// other, each after its length (u32, little-endian): no allocation per record.
#[derive(Default)]
struct Expired(Vec<u8>);

impl Expired {
    fn push(&mut self, side: u8, seq: u64, key: &[u8]) {
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        append_buffer_key(&mut self.0, side, seq, key);
        let len = (self.0.len() - at - 4) as u32;
        self.0[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// The two-stream windowed join operator.
pub struct IntervalJoin<L, R, J, N> {
    within: i64,
    kind: StreamJoinKind,
    left: Buffers<L>,
    right: Buffers<R>,
    /// `(expiry, key)`: when the watermark reaches `expiry`, the key's old records go.
    due: std::collections::BinaryHeap<std::cmp::Reverse<(i64, Box<[u8]>)>>,
    watermark: i64,
    f: J,
    next: N,
    count: u64,
    /// The next buffered record's number.
    seq: u64,
    /// The buffers' changelog (runs against Kafka) and the tombstones to write to it next
    /// (the records to write are `dirty`).
    log: Option<(Changelog, Expired)>,
    /// A restore that failed: the task fails with it at its first record.
    broken: Option<Error>,
}

impl<L, R, J, N> IntervalJoin<L, R, J, N>
where
    L: StateCodec,
    R: StateCodec,
{
    /// Logs the buffers to `log` from now on, starting from what `restored` holds.
    fn with_changelog(mut self, log: Changelog, restored: crate::changelog::Restored) -> Self {
        self.broken = log.restore_with(restored, |k, v| self.restore_one(k, v));
        // Each key's records in the order they came.
        for v in self.left.values_mut() {
            v.sort_by_key(|b| b.seq);
        }
        for v in self.right.values_mut() {
            v.sort_by_key(|b| b.seq);
        }
        self.log = Some((log, Expired::default()));
        self
    }

    fn restore_one(&mut self, key: &[u8], mut value: &[u8]) -> std::result::Result<(), String> {
        let (side, rest) = key.split_first().ok_or("an empty key")?;
        let (seq, record_key) = rest
            .split_first_chunk::<8>()
            .ok_or("a key shorter than its sequence number")?;
        let seq = u64::from_be_bytes(*seq);
        let ts = i64::decode(&mut value).ok_or("no timestamp")?;
        let matched = bool::decode(&mut value).ok_or("no matched flag")?;
        match *side {
            LEFT => restore_into(&mut self.left, record_key, ts, matched, seq, value)?,
            RIGHT => restore_into(&mut self.right, record_key, ts, matched, seq, value)?,
            other => return Err(format!("unknown side tag {other}")),
        }
        self.seq = self.seq.max(seq + 1);
        self.due.push(std::cmp::Reverse((
            ts.saturating_add(self.within),
            Box::from(record_key),
        )));
        Ok(())
    }

    /// Writes what changed since the last checkpoint: the records buffered or matched since
    /// (those still buffered), then tombstones for the logged ones expired.
    async fn log_buffers(&mut self) -> Result<()> {
        let Some((log, expired)) = &mut self.log else {
            return Ok(());
        };
        log_dirty(&mut self.left, LEFT, log).await?;
        log_dirty(&mut self.right, RIGHT, log).await?;
        let mut rest = &expired.0[..];
        while let Some((len, after)) = rest.split_first_chunk::<4>() {
            let (key, after) = after.split_at(u32::from_le_bytes(*len) as usize);
            log.key.clear();
            log.key.extend_from_slice(key);
            log.delete().await?;
            rest = after;
        }
        expired.0.clear();
        Ok(())
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
        let seq = self.seq;
        self.seq += 1;
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
                if let Some(rs) = right.get_mut(key) {
                    for r in rs.iter_mut().filter(|r| (r.ts - ts).abs() <= within) {
                        r.dirty |= !r.matched;
                        r.matched = true;
                        matched = true;
                        let out = f(Some(&l), Some(&r.item));
                        Self::emit(next, tp, key, ts.max(r.ts), out).await?;
                    }
                }
                let entry = Buffered {
                    ts,
                    item: l,
                    matched,
                    seq,
                    logged: false,
                    dirty: true,
                };
                match left.get_mut(key) {
                    Some(v) => v.push(entry),
                    None => {
                        left.insert(Box::from(key), vec![entry]);
                    }
                }
            }
            Either::Right(r) => {
                if let Some(ls) = left.get_mut(key) {
                    for l in ls.iter_mut().filter(|l| (l.ts - ts).abs() <= within) {
                        l.dirty |= !l.matched;
                        l.matched = true;
                        matched = true;
                        let out = f(Some(&l.item), Some(&r));
                        Self::emit(next, tp, key, ts.max(l.ts), out).await?;
                    }
                }
                let entry = Buffered {
                    ts,
                    item: r,
                    matched,
                    seq,
                    logged: false,
                    dirty: true,
                };
                match right.get_mut(key) {
                    Some(v) => v.push(entry),
                    None => {
                        right.insert(Box::from(key), vec![entry]);
                    }
                }
            }
        }
        due.push(std::cmp::Reverse((
            ts.saturating_add(within),
            Box::from(key),
        )));
        Ok(())
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
                log,
                ..
            } = self;
            let mut expired_logged = log.as_mut().map(|(_, e)| e);
            while due.peek().is_some_and(|d| d.0.0 <= wm) {
                let std::cmp::Reverse((_, key)) = due.pop().expect("peeked");
                let expired = |ts: i64| ts.saturating_add(*within) <= wm;
                if let Some(ls) = left.get_mut(&key) {
                    let mut i = 0;
                    while i < ls.len() {
                        if expired(ls[i].ts) {
                            let l = ls.remove(i);
                            if l.logged
                                && let Some(e) = expired_logged.as_deref_mut()
                            {
                                e.push(LEFT, l.seq, &key);
                            }
                            if !l.matched && *kind != StreamJoinKind::Inner {
                                let out = f(Some(&l.item), None);
                                Self::emit(next, tp, &key, l.ts, out).await?;
                            }
                        } else {
                            i += 1;
                        }
                    }
                    if ls.is_empty() {
                        left.remove(&key);
                    }
                }
                if let Some(rs) = right.get_mut(&key) {
                    let mut i = 0;
                    while i < rs.len() {
                        if expired(rs[i].ts) {
                            let r = rs.remove(i);
                            if r.logged
                                && let Some(e) = expired_logged.as_deref_mut()
                            {
                                e.push(RIGHT, r.seq, &key);
                            }
                            if !r.matched && *kind == StreamJoinKind::Outer {
                                let out = f(None, Some(&r.item));
                                Self::emit(next, tp, &key, r.ts, out).await?;
                            }
                        } else {
                            i += 1;
                        }
                    }
                    if rs.is_empty() {
                        right.remove(&key);
                    }
                }
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
        let buffered: usize = self.left.values().map(Vec::len).sum::<usize>()
            + self.right.values().map(Vec::len).sum::<usize>();
        out.push(OperatorMetrics {
            name: format!("{}:join_within({} ms)", out.len(), self.within),
            records_in: self.count,
            state_keys: (self.left.len() + self.right.len()) as u64,
            state_bytes: (buffered
                * (std::mem::size_of::<Buffered<L>>().max(std::mem::size_of::<Buffered<R>>())))
                as u64,
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
            left: HashMap::new(),
            right: HashMap::new(),
            due: std::collections::BinaryHeap::new(),
            watermark: i64::MIN,
            f: self.f.clone(),
            next,
            count: 0,
            seq: 0,
            log: None,
            broken: None,
        };
        if env.stores.logged {
            let log = Changelog::new(
                changelog_topic(&env.application_id, &self.store),
                env.partition,
                env.output.clone(),
            );
            op = op.with_changelog(log, env.stores.take(&self.store));
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
