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

use std::marker::PhantomData;

use hashbrown::HashMap;

use crate::context::RecordContext;
use crate::error::{Error, Result};
use crate::format::{Decode, Family, Owned};
use crate::operator::{Operator, OperatorMetrics};
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
