//! Operators: the fused, monomorphised push chain a task runs for each record.
//!
//! A sub-topology's operators are built into one nested value (`Filter<P, Map<M, Sink<E>>>`)
//! whose `push` calls the next operator's `push` directly: no virtual call, no queue and no
//! allocation between operators. Items of a borrowed [`Family`] (views into the fetched batch)
//! are handed down by value until an operator returns an owned item.
//!
//! `push` is async only so that a sink can wait for the producer's buffer memory
//! (backpressure); on the common path nothing waits.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use flumen_client::producer::{DeliveryFuture, Producer, ProducerRecord};
use flumen_protocol::record::HeaderRef;

use crate::context::RecordContext;
use crate::error::{Error, Result};
use crate::format::{Encode, Family, Owned};
use crate::latency::LatencySampler;
use crate::metrics::MetricsBoard;
use crate::time::{MARKER_HEADER, Time, encode_marker};

/// Records into one operator, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperatorMetrics {
    /// The operator's name (`map`, `filter`, `to:<topic>`, ...), numbered in chain order.
    pub name: String,
    /// Items pushed into it.
    pub records_in: u64,
    /// Items that came too late for every window they belong to (windows only).
    pub records_late: u64,
    /// Bytes of state it holds in memory (windows, keyed state and the timers held in memory;
    /// an estimate of keys, accumulators and the tables' overhead).
    pub state_bytes: u64,
    /// Keys in its state.
    pub state_keys: u64,
}

/// The `advance`, `side` and `checkpoint` of an operator that passes time, table records and
/// checkpoints on to `self.next` unchanged (`pass_on!(side)`: `side` only).
macro_rules! pass_on {
    () => {
        #[inline]
        async fn advance(&mut self, time: &$crate::time::Time<'_>) -> $crate::error::Result<()> {
            self.next.advance(time).await
        }

        pass_on!(side);

        #[inline]
        async fn checkpoint(&mut self) -> $crate::error::Result<()> {
            self.next.checkpoint().await
        }
    };
    (side) => {
        async fn side<'a>(
            &mut self,
            table: usize,
            cx: &$crate::context::RecordContext<'a>,
            value: Option<&'a [u8]>,
        ) -> $crate::error::Result<()> {
            self.next.side(table, cx, value).await
        }
    };
}
pub(crate) use pass_on;

/// One fused operator that takes items of family `F`.
///
/// Implemented by the runtime's operators; a pipeline's own logic goes into closures
/// (`map`, `process`, ...), not into new operator types.
#[allow(async_fn_in_trait)]
pub trait Operator<F: Family> {
    /// Handles one item derived from the record `cx` describes.
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()>;

    /// Time moved: the task's watermark advanced, or processing time ticked. Operators that
    /// hold items back (windows, timers) emit what is due; every operator passes it on.
    async fn advance(&mut self, time: &Time<'_>) -> Result<()>;

    /// A record of the task's table number `table` (the latest value per key of a compacted
    /// topic; `None` deletes the key). Operators before a table join pass it on.
    async fn side<'a>(
        &mut self,
        table: usize,
        cx: &RecordContext<'a>,
        value: Option<&'a [u8]>,
    ) -> Result<()> {
        let _ = (table, cx, value);
        Ok(())
    }

    /// Before each commit: a stateful operator writes the state it changed since the last
    /// checkpoint to its changelog; every operator with operators after it passes it on.
    async fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }

    /// Appends this operator's metrics, then the ones after it.
    fn metrics(&self, out: &mut Vec<OperatorMetrics>);
}

fn named(out: &mut Vec<OperatorMetrics>, name: &str, records_in: u64) {
    out.push(OperatorMetrics {
        name: format!("{}:{name}", out.len()),
        records_in,
        ..OperatorMetrics::default()
    });
}

/// `map`: one owned item out per item in.
pub struct Map<M, N> {
    pub(crate) f: M,
    pub(crate) next: N,
    pub(crate) count: u64,
}

impl<F, O, M, N> Operator<F> for Map<M, N>
where
    F: Family,
    O: 'static,
    M: for<'a> FnMut(F::Item<'a>) -> O,
    N: Operator<Owned<O>>,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        let out = (self.f)(item);
        self.next.push(cx, out).await
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, "map", self.count);
        self.next.metrics(out);
    }
}

/// `filter`: items for which the predicate holds go on, unchanged.
pub struct Filter<P, N> {
    pub(crate) f: P,
    pub(crate) next: N,
    pub(crate) count: u64,
}

impl<F, P, N> Operator<F> for Filter<P, N>
where
    F: Family,
    P: for<'a, 'b> FnMut(&'b F::Item<'a>) -> bool,
    N: Operator<F>,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        if (self.f)(&item) {
            self.next.push(cx, item).await
        } else {
            Ok(())
        }
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, "filter", self.count);
        self.next.metrics(out);
    }
}

/// `filter_map`: zero or one owned item out per item in.
pub struct FilterMap<M, N> {
    pub(crate) f: M,
    pub(crate) next: N,
    pub(crate) count: u64,
}

impl<F, O, M, N> Operator<F> for FilterMap<M, N>
where
    F: Family,
    O: 'static,
    M: for<'a> FnMut(F::Item<'a>) -> Option<O>,
    N: Operator<Owned<O>>,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        match (self.f)(item) {
            Some(out) => self.next.push(cx, out).await,
            None => Ok(()),
        }
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, "filter_map", self.count);
        self.next.metrics(out);
    }
}

/// `flat_map`: any number of owned items out per item in, all with the input's context.
pub struct FlatMap<M, N> {
    pub(crate) f: M,
    pub(crate) next: N,
    pub(crate) count: u64,
}

impl<F, I, M, N> Operator<F> for FlatMap<M, N>
where
    F: Family,
    I: IntoIterator,
    I::Item: 'static,
    M: for<'a> FnMut(F::Item<'a>) -> I,
    N: Operator<Owned<I::Item>>,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        for out in (self.f)(item) {
            self.next.push(cx, out).await?;
        }
        Ok(())
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, "flat_map", self.count);
        self.next.metrics(out);
    }
}

/// `inspect`: sees every item, passes it on unchanged.
pub struct Inspect<P, N> {
    pub(crate) f: P,
    pub(crate) next: N,
    pub(crate) count: u64,
}

impl<F, P, N> Operator<F> for Inspect<P, N>
where
    F: Family,
    P: for<'a, 'b> FnMut(&'b RecordContext<'a>, &'b F::Item<'a>),
    N: Operator<F>,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        (self.f)(cx, &item);
        self.next.push(cx, item).await
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, "inspect", self.count);
        self.next.metrics(out);
    }
}

/// Where a `process` function puts its outputs: they go downstream, in order, with the input
/// record's context, once the function returns.
pub struct Collector<O> {
    items: Vec<O>,
    failed: Option<String>,
}

impl<O> Collector<O> {
    /// Emits `item` downstream.
    #[inline]
    pub fn emit(&mut self, item: O) {
        self.items.push(item);
    }

    /// Fails the pipeline with `message` (the error names the input partition and offset).
    pub fn fail(&mut self, message: impl Into<String>) {
        self.failed = Some(message.into());
    }
}

/// `process`: a user function with the record's context and a collector.
pub struct Process<M, N, O> {
    pub(crate) f: M,
    pub(crate) next: N,
    pub(crate) count: u64,
    pub(crate) out: Collector<O>,
}

impl<M, N, O> Process<M, N, O> {
    pub(crate) fn new(f: M, next: N) -> Self {
        Process {
            f,
            next,
            count: 0,
            out: Collector {
                items: Vec::new(),
                failed: None,
            },
        }
    }
}

impl<F, O, M, N> Operator<F> for Process<M, N, O>
where
    F: Family,
    O: 'static,
    M: for<'a, 'b> FnMut(&'b RecordContext<'a>, F::Item<'a>, &'b mut Collector<O>),
    N: Operator<Owned<O>>,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        (self.f)(cx, item, &mut self.out);
        if let Some(message) = self.out.failed.take() {
            self.out.items.clear();
            return Err(Error::User {
                tp: cx.tp.clone(),
                offset: cx.offset,
                message,
            });
        }
        // The collector's buffer is reused: no allocation once it has grown.
        let mut items = std::mem::take(&mut self.out.items);
        let mut result = Ok(());
        for out in items.drain(..) {
            if result.is_ok() {
                result = self.next.push(cx, out).await;
            }
        }
        self.out.items = items;
        result
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, "process", self.count);
        self.next.metrics(out);
    }
}

/// `for_each`: the end of a chain that hands each item to a function.
pub struct ForEach<G> {
    pub(crate) f: G,
    pub(crate) count: u64,
}

impl<F, G> Operator<F> for ForEach<G>
where
    F: Family,
    G: for<'a, 'b> FnMut(&'b RecordContext<'a>, F::Item<'a>),
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        (self.f)(cx, item);
        Ok(())
    }

    async fn advance(&mut self, _: &Time<'_>) -> Result<()> {
        Ok(())
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, "for_each", self.count);
    }
}

/// A record a sink wrote while running in memory (tests, [`crate::testing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedRecord {
    /// The topic it was written to.
    pub topic: String,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its headers.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Its timestamp.
    pub timestamp: i64,
    /// The partition it was written to, when the writer chose it (watermark markers).
    pub partition: Option<i32>,
}

/// Marks a captured changelog record as a tombstone (runs in memory only: there a record's
/// value cannot be absent).
pub(crate) const TOMBSTONE_HEADER: &[u8] = b"flumen.tombstone";

/// Where sinks write: the worker's producer (with the worker's latency sampler, and the board
/// that keeps the records of monitored topics), or a buffer when run in memory.
#[derive(Clone)]
pub(crate) enum Output {
    Kafka(Producer, Rc<LatencySampler>, Arc<MetricsBoard>),
    Memory(Rc<RefCell<Vec<CapturedRecord>>>),
}

impl Output {
    /// The worker's end-to-end latency sampler (none in memory).
    pub(crate) fn latency(&self) -> Option<&LatencySampler> {
        match self {
            Output::Kafka(_, latency, _) => Some(latency),
            Output::Memory(_) => None,
        }
    }

    /// Writes one record; waits only when the producer's buffer memory is full.
    pub(crate) async fn write(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[HeaderRef<'_>],
        timestamp: i64,
    ) -> Result<()> {
        match self {
            Output::Kafka(producer, latency, board) => {
                if board.monitors(topic) {
                    board.written(topic, key, value, timestamp);
                }
                let record = ProducerRecord {
                    topic,
                    partition: None,
                    key,
                    value: Some(value),
                    headers,
                    timestamp: Some(timestamp),
                };
                // The delivery is not awaited here: the task commits its input only after the
                // producer's flush, and counts failures through `Producer::failed_records`.
                // The sampler awaits the odd one for the latency histogram.
                let delivery = producer
                    .send(record)
                    .await
                    .map_err(|e| Error::produce(topic, e))?;
                if latency.armed() {
                    latency.offer(topic, delivery, timestamp);
                }
                Ok(())
            }
            Output::Memory(records) => {
                records.borrow_mut().push(CapturedRecord {
                    topic: topic.to_owned(),
                    key: key.map(<[u8]>::to_vec),
                    value: value.to_vec(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect(),
                    timestamp,
                    partition: None,
                });
                Ok(())
            }
        }
    }

    /// Writes a changelog record (`None`: a tombstone) to one partition.
    pub(crate) async fn write_state(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<DeliveryFuture>> {
        match self {
            Output::Kafka(producer, _, _) => {
                let record = ProducerRecord {
                    topic,
                    partition: Some(partition),
                    key: Some(key),
                    value,
                    headers: &[],
                    timestamp: None,
                };
                let delivery = producer
                    .send(record)
                    .await
                    .map_err(|e| Error::produce(topic, e))?;
                Ok(Some(delivery))
            }
            Output::Memory(records) => {
                records.borrow_mut().push(CapturedRecord {
                    topic: topic.to_owned(),
                    key: Some(key.to_vec()),
                    value: value.map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: match value {
                        Some(_) => Vec::new(),
                        None => vec![(TOMBSTONE_HEADER.to_vec(), None)],
                    },
                    timestamp: 0,
                    partition: Some(partition),
                });
                Ok(None)
            }
        }
    }

    /// Writes a watermark marker (no key, no value, the marker header) to one partition.
    pub(crate) async fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        marker: &[u8],
        timestamp: i64,
    ) -> Result<()> {
        match self {
            Output::Kafka(producer, _, _) => {
                let headers = [(MARKER_HEADER, Some(marker))];
                let record = ProducerRecord {
                    topic,
                    partition: Some(partition),
                    key: None,
                    value: None,
                    headers: &headers,
                    timestamp: Some(timestamp),
                };
                let _delivery = producer
                    .send(record)
                    .await
                    .map_err(|e| Error::produce(topic, e))?;
                Ok(())
            }
            Output::Memory(records) => {
                records.borrow_mut().push(CapturedRecord {
                    topic: topic.to_owned(),
                    key: None,
                    value: Vec::new(),
                    headers: vec![(MARKER_HEADER.to_vec(), Some(marker.to_vec()))],
                    timestamp,
                    partition: Some(partition),
                });
                Ok(())
            }
        }
    }
}

/// A header buffer kept across records of different lifetimes: emptied, its allocation is
/// reused for the next record's borrowed headers.
pub(crate) fn recycle<'x, 'y>(mut v: Vec<HeaderRef<'x>>) -> Vec<HeaderRef<'y>> {
    v.clear();
    // In-place collection of an empty vector keeps the allocation.
    v.into_iter().map(|_| unreachable!("emptied")).collect()
}

/// How a sink picks its topic.
pub(crate) enum TopicChoice<T> {
    Fixed(String),
    PerRecord(T),
}

/// The end of a chain that writes each item to a topic, with the input record's key,
/// headers and timestamp.
pub struct Sink<E, T> {
    pub(crate) topic: TopicChoice<T>,
    pub(crate) encoder: E,
    pub(crate) output: Output,
    pub(crate) scratch: Vec<u8>,
    pub(crate) headers: Vec<HeaderRef<'static>>,
    pub(crate) count: u64,
}

impl<F, E, T> Operator<F> for Sink<E, T>
where
    F: Family,
    E: Encode<F>,
    T: for<'a, 'b> FnMut(&'b RecordContext<'a>, &'b F::Item<'a>) -> &'b str,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        let Sink {
            topic,
            encoder,
            output,
            scratch,
            headers,
            ..
        } = self;
        let topic: &str = match topic {
            TopicChoice::Fixed(t) => t,
            TopicChoice::PerRecord(choose) => choose(cx, &item),
        };
        scratch.clear();
        let value = encoder
            .encode(&item, scratch)
            .map_err(|e| Error::Serialize {
                topic: topic.to_owned(),
                message: e.0,
            })?;
        if cx.headers.is_none() {
            return output.write(topic, cx.key, value, &[], cx.timestamp).await;
        }
        let mut h = recycle(std::mem::take(headers));
        h.extend(cx.headers());
        let result = output.write(topic, cx.key, value, &h, cx.timestamp).await;
        *headers = recycle(h);
        result
    }

    async fn advance(&mut self, _: &Time<'_>) -> Result<()> {
        Ok(())
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        let name = match &self.topic {
            TopicChoice::Fixed(t) => format!("to:{t}"),
            TopicChoice::PerRecord(_) => "to:*".to_owned(),
        };
        named(out, &name, self.count);
    }
}

/// The end of a sub-topology that re-keys each item and writes it to the repartition topic;
/// the producer's murmur2 partitioner sends every key to one partition.
pub struct Repartition<K, E> {
    pub(crate) topic: String,
    /// The repartition topic's partition count (every one gets the watermark markers).
    pub(crate) partitions: i32,
    pub(crate) published: i64,
    pub(crate) published_at: i64,
    pub(crate) key: K,
    pub(crate) encoder: E,
    pub(crate) output: Output,
    pub(crate) scratch: Vec<u8>,
    pub(crate) headers: Vec<HeaderRef<'static>>,
    pub(crate) count: u64,
}

impl<F, E, K, KO> Operator<F> for Repartition<K, E>
where
    F: Family,
    E: Encode<F>,
    KO: AsRef<[u8]>,
    K: for<'a, 'b> FnMut(&'b F::Item<'a>) -> KO,
{
    #[inline]
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        let key = (self.key)(&item);
        let Repartition {
            topic,
            encoder,
            output,
            scratch,
            headers,
            ..
        } = self;
        scratch.clear();
        let value = encoder
            .encode(&item, scratch)
            .map_err(|e| Error::Serialize {
                topic: topic.clone(),
                message: e.0,
            })?;
        if cx.headers.is_none() {
            return output
                .write(topic, Some(key.as_ref()), value, &[], cx.timestamp)
                .await;
        }
        let mut h = recycle(std::mem::take(headers));
        h.extend(cx.headers());
        let result = output
            .write(topic, Some(key.as_ref()), value, &h, cx.timestamp)
            .await;
        *headers = recycle(h);
        result
    }

    /// Publishes the watermark to every partition of the repartition topic as a marker
    /// record, at most every 100 ms of processing time (and at once at the end of input), so
    /// that the tasks reading it know how far this task has come.
    async fn advance(&mut self, time: &Time<'_>) -> Result<()> {
        let wm = time.watermark();
        // In memory (tests) every publication goes out: there is no traffic to save.
        let throttled = matches!(self.output, Output::Kafka(..))
            && wm < i64::MAX
            && time.processing_time().saturating_sub(self.published_at) < 100;
        if !time.publish() || wm <= self.published || throttled {
            return Ok(());
        }
        let marker = encode_marker(time.partition(), wm);
        for p in 0..self.partitions {
            self.output
                .write_marker(&self.topic, p, &marker, time.processing_time())
                .await?;
        }
        self.published = wm;
        self.published_at = time.processing_time();
        Ok(())
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, &format!("repartition:{}", self.topic), self.count);
    }
}

/// `also_to`: writes `f(item)` (when it gives one) to a topic, and passes the item on.
pub struct Tap<E, M, N> {
    pub(crate) topic: String,
    pub(crate) encoder: E,
    pub(crate) f: M,
    pub(crate) output: Output,
    pub(crate) scratch: Vec<u8>,
    pub(crate) next: N,
    pub(crate) count: u64,
}

impl<F, O, E, M, N> Operator<F> for Tap<E, M, N>
where
    F: Family,
    O: 'static,
    E: Encode<Owned<O>>,
    M: for<'a, 'b> FnMut(&'b F::Item<'a>) -> Option<O>,
    N: Operator<F>,
{
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        if let Some(out) = (self.f)(&item) {
            self.count += 1;
            self.scratch.clear();
            let value =
                self.encoder
                    .encode(&out, &mut self.scratch)
                    .map_err(|e| Error::Serialize {
                        topic: self.topic.clone(),
                        message: e.0,
                    })?;
            self.output
                .write(&self.topic, cx.key, value, &[], cx.timestamp)
                .await?;
        }
        self.next.push(cx, item).await
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(out, &format!("also_to:{}", self.topic), self.count);
        self.next.metrics(out);
    }
}

/// `divert`: an item `f` turns into `Err((i, out))` goes to `topics[i]`, one it turns into
/// `Ok(item)` goes on.
pub struct Divert<E, M, N> {
    pub(crate) topics: std::sync::Arc<[String]>,
    pub(crate) encoder: E,
    pub(crate) f: M,
    pub(crate) output: Output,
    pub(crate) scratch: Vec<u8>,
    pub(crate) next: N,
    /// Items in.
    pub(crate) count: u64,
}

impl<F, T, O, E, M, N> Operator<F> for Divert<E, M, N>
where
    F: Family,
    T: 'static,
    O: 'static,
    E: Encode<Owned<O>>,
    M: for<'a> FnMut(F::Item<'a>) -> std::result::Result<T, (usize, O)>,
    N: Operator<Owned<T>>,
{
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        match (self.f)(item) {
            Ok(item) => self.next.push(cx, item).await,
            Err((i, out)) => {
                let Some(topic) = self.topics.get(i) else {
                    return Err(Error::User {
                        tp: cx.tp.clone(),
                        offset: cx.offset,
                        message: format!(
                            "diverted to topic number {i} of a divert with {} topics",
                            self.topics.len()
                        ),
                    });
                };
                self.scratch.clear();
                let value =
                    self.encoder
                        .encode(&out, &mut self.scratch)
                        .map_err(|e| Error::Serialize {
                            topic: topic.clone(),
                            message: e.0,
                        })?;
                self.output
                    .write(topic, cx.key, value, &[], cx.timestamp)
                    .await
            }
        }
    }

    pass_on!();

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        named(
            out,
            &format!("divert:{}", self.topics.join(",")),
            self.count,
        );
        self.next.metrics(out);
    }
}
