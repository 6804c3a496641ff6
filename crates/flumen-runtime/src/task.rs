//! Tasks: one sub-topology over one partition number, with its own operator instances.
//!
//! A [`TaskFactory`] (one per sub-topology, shared by all workers) builds a task's operators
//! from the pipeline's description; the task then runs on one worker only. The worker hands it
//! each fetched chunk of its partitions through one virtual call; inside, records are decoded
//! and pushed through the fused chain without further dispatch.

use std::io::Write;
use std::marker::PhantomData;
use std::time::Instant;

use flumen_client::TopicPartition;
use flumen_client::consumer::PartitionRecords;
use futures::future::LocalBoxFuture;

use crate::context::RecordContext;
use crate::error::{Error, Result};
use crate::format::{Decode, Encode, Family};
use crate::operator::{ForEach, Operator, OperatorMetrics, Output, Repartition, Sink, recycle};
use crate::stream::{Chain, OnError, TopicSpec};
use crate::time::{MARKER_HEADER, TaskClock, Time, Watermarks, decode_marker, now_ms};

/// What a task's operators are built with: where its sinks write, the application's name,
/// and the task's inputs.
pub struct TaskEnv {
    pub(crate) output: Output,
    pub(crate) application_id: String,
    /// The task's partition number.
    pub(crate) partition: i32,
    pub(crate) inputs: TaskInputs,
    /// Partitions of the repartition topic this sub-topology writes (0: it writes none).
    pub(crate) repartition_partitions: i32,
    /// Processing time at the task's start, ms.
    pub(crate) now: i64,
    /// Changelogs and restored state of the task's stores.
    pub(crate) stores: crate::changelog::StoreEnv,
}

impl std::fmt::Debug for TaskEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEnv")
            .field("application_id", &self.application_id)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// What a task reads: source partitions (each with its own event-time clock), or a
/// repartition topic's partition written by `upstream` tasks (each with the watermark it
/// last published).
#[derive(Clone, Debug)]
pub(crate) enum TaskInputs {
    Partitions(Vec<TopicPartition>),
    Repartition { tp: TopicPartition, upstream: usize },
}

/// The name of a repartition topic.
pub(crate) fn repartition_topic(application_id: &str, name: &str) -> String {
    format!("{application_id}-{name}-repartition")
}

/// The end of a sub-topology, as described; built once per task.
pub(crate) trait Terminal<F: Family>: Send + Sync + 'static {
    type Op: Operator<F>;
    fn build(&self, env: &TaskEnv) -> Self::Op;
}

pub(crate) struct SinkSpec<E, T> {
    pub(crate) topic: TopicSpec<T>,
    pub(crate) encoder: E,
}

impl<F, E, T> Terminal<F> for SinkSpec<E, T>
where
    F: Family,
    E: Encode<F>,
    T: for<'a, 'b> FnMut(&'b RecordContext<'a>, &'b F::Item<'a>) -> &'b str
        + Clone
        + Send
        + Sync
        + 'static,
{
    type Op = Sink<E, T>;
    fn build(&self, env: &TaskEnv) -> Sink<E, T> {
        Sink {
            topic: self.topic.instantiate(),
            encoder: self.encoder.clone(),
            output: env.output.clone(),
            scratch: Vec::new(),
            headers: Vec::new(),
            count: 0,
        }
    }
}

pub(crate) struct ForEachSpec<G> {
    pub(crate) f: G,
}

impl<F, G> Terminal<F> for ForEachSpec<G>
where
    F: Family,
    G: for<'a, 'b> FnMut(&'b RecordContext<'a>, F::Item<'a>) + Clone + Send + Sync + 'static,
{
    type Op = ForEach<G>;
    fn build(&self, _: &TaskEnv) -> ForEach<G> {
        ForEach {
            f: self.f.clone(),
            count: 0,
        }
    }
}

pub(crate) struct PrintSpec<E> {
    pub(crate) encoder: E,
}

/// Prints each item's encoded value as a line on stdout.
pub(crate) struct Printer<E> {
    encoder: E,
    scratch: Vec<u8>,
    count: u64,
}

impl<F: Family, E: Encode<F>> Operator<F> for Printer<E> {
    async fn push<'a>(&mut self, _: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        self.scratch.clear();
        let value =
            self.encoder
                .encode(&item, &mut self.scratch)
                .map_err(|e| Error::Serialize {
                    topic: "stdout".to_owned(),
                    message: e.0,
                })?;
        let mut out = std::io::stdout().lock();
        out.write_all(value)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|source| Error::Io {
                context: "printing".to_owned(),
                source,
            })
    }

    async fn advance(&mut self, _: &Time<'_>) -> Result<()> {
        Ok(())
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        out.push(OperatorMetrics {
            name: format!("{}:print", out.len()),
            records_in: self.count,
            ..OperatorMetrics::default()
        });
    }
}

impl<F: Family, E: Encode<F>> Terminal<F> for PrintSpec<E> {
    type Op = Printer<E>;
    fn build(&self, _: &TaskEnv) -> Printer<E> {
        Printer {
            encoder: self.encoder.clone(),
            scratch: Vec::new(),
            count: 0,
        }
    }
}

pub(crate) struct RepartitionSpec<K, E> {
    pub(crate) name: String,
    pub(crate) key: K,
    pub(crate) encoder: E,
}

impl<F, E, K, KO> Terminal<F> for RepartitionSpec<K, E>
where
    F: Family,
    E: Encode<F>,
    KO: AsRef<[u8]>,
    K: for<'a, 'b> FnMut(&'b F::Item<'a>) -> KO + Clone + Send + Sync + 'static,
{
    type Op = Repartition<K, E>;
    fn build(&self, env: &TaskEnv) -> Repartition<K, E> {
        Repartition {
            topic: repartition_topic(&env.application_id, &self.name),
            partitions: env.repartition_partitions,
            published: i64::MIN,
            published_at: i64::MIN,
            key: self.key.clone(),
            encoder: self.encoder.clone(),
            output: env.output.clone(),
            scratch: Vec::new(),
            headers: Vec::new(),
            count: 0,
        }
    }
}

/// A task's own counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskCounters {
    /// Records read from the task's partitions.
    pub records_in: u64,
    /// Records that did not deserialize and were skipped ([`OnError::Skip`]).
    pub records_skipped: u64,
    /// Records that did not deserialize and went to the dead-letter topic.
    pub records_dead_lettered: u64,
    /// Errors that stopped the task.
    pub errors: u64,
    /// Time spent processing its records, in nanoseconds.
    pub processing_ns: u64,
}

/// A record fed to a task from memory (tests and benchmarks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryRecord {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// The timestamp.
    pub timestamp: i64,
    /// Headers (only the runtime's own, such as watermark markers, are read).
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl MemoryRecord {
    /// A record with `key`, `value` and `timestamp`, no headers.
    pub fn new(key: Option<&[u8]>, value: &[u8], timestamp: i64) -> Self {
        MemoryRecord {
            key: key.map(<[u8]>::to_vec),
            value: Some(value.to_vec()),
            timestamp,
            headers: Vec::new(),
        }
    }
}

/// One running task, behind one virtual call per fetched chunk.
pub(crate) trait TaskChain {
    /// Processes every record of one fetched chunk.
    fn process<'s>(
        &'s mut self,
        records: &'s mut PartitionRecords,
    ) -> LocalBoxFuture<'s, Result<()>>;
    /// Processes records from memory, offsets counted from `first_offset`, at processing
    /// time `now`.
    fn process_memory<'s>(
        &'s mut self,
        tp: &'s TopicPartition,
        first_offset: i64,
        records: &'s [MemoryRecord],
        now: i64,
    ) -> LocalBoxFuture<'s, Result<()>>;
    /// Processing time moved to `now`: idle inputs, processing-time windows, watermark
    /// publication.
    fn tick(&mut self, now: i64) -> LocalBoxFuture<'_, Result<()>>;
    /// A bounded run reached the end of the task's inputs: the final watermark.
    fn end_of_input(&mut self, now: i64) -> LocalBoxFuture<'_, Result<()>>;
    /// Before a commit: stateful operators write what changed to their changelogs.
    fn checkpoint(&mut self) -> LocalBoxFuture<'_, Result<()>>;
    /// The task's event-time watermark.
    fn watermark(&self) -> i64;
    /// Processes bare values from memory (no key, timestamp 0).
    fn process_values<'s>(
        &'s mut self,
        tp: &'s TopicPartition,
        values: &'s [&'s [u8]],
    ) -> LocalBoxFuture<'s, Result<()>>;
    fn counters(&self) -> &TaskCounters;
    fn operator_metrics(&self, out: &mut Vec<OperatorMetrics>);
}

/// Builds the tasks of one sub-topology.
pub(crate) trait TaskFactory: Send + Sync {
    fn instantiate(&self, env: &TaskEnv) -> Box<dyn TaskChain>;
}

pub(crate) struct Factory<D, F, C, T> {
    format: D,
    on_error: OnError,
    watermarks: Watermarks,
    tables: Vec<String>,
    chain: C,
    terminal: T,
    _family: PhantomData<fn() -> F>,
}

impl<D, F, C, T> Factory<D, F, C, T> {
    pub(crate) fn new(
        format: D,
        on_error: OnError,
        watermarks: Watermarks,
        tables: Vec<String>,
        chain: C,
        terminal: T,
    ) -> Self {
        Factory {
            format,
            on_error,
            watermarks,
            tables,
            chain,
            terminal,
            _family: PhantomData,
        }
    }
}

impl<D, F, C, T> TaskFactory for Factory<D, F, C, T>
where
    D: Decode,
    F: Family,
    C: Chain<D::Family, F>,
    T: Terminal<F>,
{
    fn instantiate(&self, env: &TaskEnv) -> Box<dyn TaskChain> {
        let (inputs, markers, clock) = match &env.inputs {
            TaskInputs::Partitions(tps) => {
                // Tables have no event time of their own: they do not hold the watermark.
                let streams: Vec<TopicPartition> = tps
                    .iter()
                    .filter(|tp| !self.tables.contains(&tp.topic))
                    .cloned()
                    .collect();
                let clock = TaskClock::new(streams.len(), &self.watermarks, true, env.now);
                (streams, false, clock)
            }
            TaskInputs::Repartition { tp, upstream } => (
                vec![tp.clone()],
                true,
                TaskClock::new(*upstream, &self.watermarks, false, env.now),
            ),
        };
        let home = inputs
            .first()
            .cloned()
            .unwrap_or_else(|| TopicPartition::new("", env.partition));
        Box::new(TaskRunner {
            format: self.format.clone(),
            op: self.chain.build(env, self.terminal.build(env)),
            on_error: self.on_error.clone(),
            output: env.output.clone(),
            counters: TaskCounters::default(),
            clock,
            inputs,
            markers,
            home,
            tables: self.tables.clone(),
            _family: PhantomData::<fn() -> F>,
        })
    }
}

struct TaskRunner<D, Op, F> {
    format: D,
    op: Op,
    on_error: OnError,
    output: Output,
    counters: TaskCounters,
    clock: TaskClock,
    /// Source partitions by clock input (partition inputs), or the repartition partition.
    inputs: Vec<TopicPartition>,
    /// The task reads a repartition topic: its watermark comes from upstream markers.
    markers: bool,
    /// The context of records operators emit on their own.
    home: TopicPartition,
    /// Table topics, by table number: their records go to the chain's table joins.
    tables: Vec<String>,
    _family: PhantomData<fn() -> F>,
}

impl<D: Decode, Op: Operator<D::Family>, F> TaskRunner<D, Op, F> {
    /// One record from clock input `input`, at processing time `now`.
    #[inline]
    async fn one<'a>(
        &mut self,
        cx: &mut RecordContext<'a>,
        value: Option<&'a [u8]>,
        input: usize,
        now: i64,
    ) -> Result<()> {
        self.counters.records_in += 1;
        match self.format.decode_from(&cx.tp.topic, value) {
            Ok(item) => {
                let t = self.format.timestamp(&item, cx.timestamp);
                cx.timestamp = t;
                self.op.push(cx, item).await?;
                if !self.markers && self.clock.observe(input, t, now).is_some() {
                    self.advance(now, false).await?;
                }
                Ok(())
            }
            Err(e) => self.undecodable(cx, value, e.0).await,
        }
    }

    /// Tells the operators the task's time.
    async fn advance(&mut self, now: i64, publish: bool) -> Result<()> {
        let time = Time {
            tp: &self.home,
            watermark: self.clock.watermark(),
            now,
            publish,
        };
        self.op.advance(&time).await
    }

    /// A watermark marker from upstream task `task`.
    async fn marker(&mut self, task: i32, watermark: i64, now: i64) -> Result<()> {
        let Ok(mut i) = usize::try_from(task) else {
            return Ok(());
        };
        while i >= self.clock.inputs() {
            i = i.max(self.clock.add_input(now));
        }
        if self.clock.observe(i, watermark, now).is_some() {
            self.advance(now, false).await?;
        }
        Ok(())
    }

    /// The clock input of source partition `tp` (a partition first seen now gets one).
    fn input_of(&mut self, tp: &TopicPartition, now: i64) -> usize {
        if self.markers {
            return 0;
        }
        if let Some(i) = self.inputs.iter().position(|t| t == tp) {
            return i;
        }
        self.inputs.push(tp.clone());
        if self.inputs.len() <= self.clock.inputs() {
            self.inputs.len() - 1
        } else {
            self.clock.add_input(now)
        }
    }

    async fn undecodable(
        &mut self,
        cx: &RecordContext<'_>,
        value: Option<&[u8]>,
        message: String,
    ) -> Result<()> {
        match &self.on_error {
            OnError::Fail => Err(Error::Deserialize {
                tp: cx.tp.clone(),
                offset: cx.offset,
                message,
            }),
            OnError::Skip => {
                self.counters.records_skipped += 1;
                tracing::debug!(tp = %cx.tp, offset = cx.offset, %message, "skipped a record that does not deserialize");
                Ok(())
            }
            OnError::DeadLetter(topic) => {
                self.counters.records_dead_lettered += 1;
                let source = format!("{}/{}@{}", cx.tp.topic, cx.tp.partition, cx.offset);
                let mut headers = recycle(Vec::new());
                headers.extend(cx.headers());
                headers.push((b"flumen.error".as_slice(), Some(message.as_bytes())));
                headers.push((b"flumen.source".as_slice(), Some(source.as_bytes())));
                self.output
                    .write(
                        topic,
                        cx.key,
                        value.unwrap_or_default(),
                        &headers,
                        cx.timestamp,
                    )
                    .await
            }
        }
    }

    fn finish(&mut self, started: Instant, result: &Result<()>) {
        self.counters.processing_ns +=
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if result.is_err() {
            self.counters.errors += 1;
        }
    }
}

impl<D: Decode, Op: Operator<D::Family>, F> TaskChain for TaskRunner<D, Op, F> {
    fn process<'s>(
        &'s mut self,
        records: &'s mut PartitionRecords,
    ) -> LocalBoxFuture<'s, Result<()>> {
        Box::pin(async move {
            let started = Instant::now();
            let now = now_ms();
            let tp = records.topic_partition().clone();
            if let Some(table) = self.tables.iter().position(|t| *t == tp.topic) {
                let mut result = Ok(());
                for record in records.iter() {
                    let record = match record {
                        Ok(r) => r,
                        Err(e) => {
                            result = Err(e.into());
                            break;
                        }
                    };
                    let cx =
                        RecordContext::new(&tp, record.offset(), record.timestamp(), record.key());
                    if let Err(e) = self.op.side(table, &cx, record.value()).await {
                        result = Err(e);
                        break;
                    }
                }
                self.finish(started, &result);
                return result;
            }
            let input = self.input_of(&tp, now);
            let mut result = Ok(());
            for record in records.iter() {
                let record = match record {
                    Ok(r) => r,
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                };
                let has_headers = record.record().header_count() > 0;
                if self.markers
                    && has_headers
                    && let Some((name, Some(value))) = record.headers().next()
                    && name == MARKER_HEADER
                {
                    if let Some((task, wm)) = decode_marker(value)
                        && let Err(e) = self.marker(task, wm, now).await
                    {
                        result = Err(e);
                        break;
                    }
                    continue;
                }
                let mut cx = RecordContext {
                    tp: &tp,
                    offset: record.offset(),
                    timestamp: record.timestamp(),
                    key: record.key(),
                    // Most records have none: the sinks then skip collecting them.
                    headers: has_headers.then(|| record.headers()),
                };
                if let Err(e) = self.one(&mut cx, record.value(), input, now).await {
                    result = Err(e);
                    break;
                }
            }
            if result.is_ok() {
                result = self.advance(now, true).await;
            }
            self.finish(started, &result);
            result
        })
    }

    fn process_memory<'s>(
        &'s mut self,
        tp: &'s TopicPartition,
        first_offset: i64,
        records: &'s [MemoryRecord],
        now: i64,
    ) -> LocalBoxFuture<'s, Result<()>> {
        Box::pin(async move {
            let started = Instant::now();
            if let Some(table) = self.tables.iter().position(|t| *t == tp.topic) {
                let mut result = Ok(());
                for (offset, r) in (first_offset..).zip(records) {
                    let cx = RecordContext::new(tp, offset, r.timestamp, r.key.as_deref());
                    if let Err(e) = self.op.side(table, &cx, r.value.as_deref()).await {
                        result = Err(e);
                        break;
                    }
                }
                self.finish(started, &result);
                return result;
            }
            let input = self.input_of(tp, now);
            let mut result = Ok(());
            for (offset, r) in (first_offset..).zip(records) {
                if self.markers
                    && let Some((_, Some(value))) =
                        r.headers.iter().find(|(k, _)| k == MARKER_HEADER)
                {
                    if let Some((task, wm)) = decode_marker(value)
                        && let Err(e) = self.marker(task, wm, now).await
                    {
                        result = Err(e);
                        break;
                    }
                    continue;
                }
                let mut cx = RecordContext::new(tp, offset, r.timestamp, r.key.as_deref());
                if let Err(e) = self.one(&mut cx, r.value.as_deref(), input, now).await {
                    result = Err(e);
                    break;
                }
            }
            if result.is_ok() {
                result = self.advance(now, true).await;
            }
            self.finish(started, &result);
            result
        })
    }

    fn tick(&mut self, now: i64) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.clock.check_idle(now);
            self.advance(now, true).await
        })
    }

    fn end_of_input(&mut self, now: i64) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.clock.end();
            self.advance(now, true).await
        })
    }

    fn checkpoint(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.op.checkpoint())
    }

    fn watermark(&self) -> i64 {
        self.clock.watermark()
    }

    fn process_values<'s>(
        &'s mut self,
        tp: &'s TopicPartition,
        values: &'s [&'s [u8]],
    ) -> LocalBoxFuture<'s, Result<()>> {
        Box::pin(async move {
            let input = self.input_of(tp, 0);
            let mut result = Ok(());
            for (offset, v) in (0..).zip(values) {
                let mut cx = RecordContext::new(tp, offset, 0, None);
                if let Err(e) = self.one(&mut cx, Some(v), input, 0).await {
                    result = Err(e);
                    break;
                }
            }
            result
        })
    }

    fn counters(&self) -> &TaskCounters {
        &self.counters
    }

    fn operator_metrics(&self, out: &mut Vec<OperatorMetrics>) {
        self.op.metrics(out);
    }
}
