//! Running a pipeline in memory, without Kafka: for unit tests of user logic and for the
//! operator-chain benchmark.
//!
//! ```
//! use flumen_runtime::{Kafka, Pipeline, format::Utf8, testing::MemoryRun};
//!
//! let mut pipeline = Pipeline::new();
//! pipeline
//!     .source(Kafka::topic("in").format(Utf8))
//!     .filter(|s| s.starts_with('a'))
//!     .map(|s| s.to_uppercase())
//!     .to("out", Utf8);
//! let mut run = MemoryRun::new(&pipeline, "app");
//! run.push_values("in", 0, &[b"apple", b"pear", b"avocado"]).unwrap();
//! let values: Vec<_> = run.output().iter().map(|r| r.value.clone()).collect();
//! assert_eq!(values, [b"APPLE".to_vec(), b"AVOCADO".to_vec()]);
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use flumen_client::TopicPartition;

use crate::error::{Error, Result};
use crate::operator::{CapturedRecord, OperatorMetrics, Output};
use crate::stream::{Pipeline, SourceTopics};
use crate::task::{MemoryRecord, TaskChain, TaskCounters, TaskEnv, TaskInputs, repartition_topic};

/// A changelog record: key, and value (`None`: a tombstone).
type LogRecord = (Vec<u8>, Option<Vec<u8>>);

/// A pipeline's tasks run in memory: sinks write to a buffer, and records written to a
/// repartition topic are fed to the sub-topology that reads it (partitioned by key hash).
pub struct MemoryRun<'p> {
    pipeline: &'p Pipeline,
    application_id: String,
    captured: Rc<RefCell<Vec<CapturedRecord>>>,
    tasks: HashMap<(usize, i32), Box<dyn TaskChain>>,
    next_offset: HashMap<TopicPartition, i64>,
    /// Partitions of every topic (sources and repartition topics).
    partitions: i32,
    /// Processing time, ms.
    now: i64,
    /// Stores log their state (see [`MemoryRun::with_changelogs`]).
    logged: bool,
    /// Changelog records written by checkpoints, per changelog partition, in order.
    changelogs: HashMap<TopicPartition, Vec<LogRecord>>,
    /// Changelog records written since the last checkpoint.
    pending: Vec<CapturedRecord>,
    /// Outputs up to this index were written before the last checkpoint.
    committed: usize,
    /// Keyed functions keep their state on disk here, with this cache budget.
    disk: Option<(std::path::PathBuf, usize)>,
}

impl std::fmt::Debug for MemoryRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRun")
            .field("application_id", &self.application_id)
            .finish_non_exhaustive()
    }
}

impl<'p> MemoryRun<'p> {
    /// Tasks of `pipeline`, as application `application_id`, created on first use.
    pub fn new(pipeline: &'p Pipeline, application_id: &str) -> Self {
        MemoryRun {
            pipeline,
            application_id: application_id.to_owned(),
            captured: Rc::default(),
            tasks: HashMap::new(),
            next_offset: HashMap::new(),
            partitions: 1,
            now: 0,
            logged: false,
            changelogs: HashMap::new(),
            pending: Vec::new(),
            committed: 0,
            disk: None,
        }
    }

    /// Keyed functions keep their state in on-disk stores (`state.store = disk`) under
    /// `dir`, each with a cache of about `cache_bytes`. A task started (or started again by
    /// [`MemoryRun::restart`]) empties its store's file and restores it from the changelog
    /// in full, as after a crash.
    pub fn with_disk_state(
        mut self,
        dir: impl Into<std::path::PathBuf>,
        cache_bytes: usize,
    ) -> Self {
        self.disk = Some((dir.into(), cache_bytes));
        self
    }

    /// Stateful operators log their state, as against Kafka: [`MemoryRun::checkpoint`]
    /// collects the changelogs, [`MemoryRun::restart`] restores from them. Changelog records
    /// never appear in [`MemoryRun::output`].
    pub fn with_changelogs(mut self) -> Self {
        self.logged = true;
        self
    }

    /// What a commit does: every task writes its changed state to its changelogs. The
    /// outputs so far count as committed.
    pub fn checkpoint(&mut self) -> Result<()> {
        for task in self.tasks.values_mut() {
            futures::executor::block_on(task.checkpoint())?;
        }
        self.route_repartitions()?;
        for r in std::mem::take(&mut self.pending) {
            let tombstone = r
                .headers
                .iter()
                .any(|(k, _)| k.as_slice() == crate::operator::TOMBSTONE_HEADER);
            let tp = TopicPartition::new(r.topic, r.partition.unwrap_or(0));
            self.changelogs
                .entry(tp)
                .or_default()
                .push((r.key.unwrap_or_default(), (!tombstone).then_some(r.value)));
        }
        self.committed = self.captured.borrow().len();
        Ok(())
    }

    /// A crash and a restart after the last [`MemoryRun::checkpoint`]: the outputs and state
    /// changes since are dropped (as an aborted transaction's), and every task starts again
    /// from its changelogs as records arrive. The caller pushes the inputs again from where
    /// the checkpoint was.
    pub fn restart(&mut self) {
        self.tasks.clear();
        self.pending.clear();
        self.captured.borrow_mut().truncate(self.committed);
    }

    /// The latest value per key of one store's changelog partition (tombstoned keys left
    /// out), as a restore reads it.
    pub fn changelog(&self, store: &str, partition: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.latest(store, partition)
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect()
    }

    /// Every record of one store's changelog partition, in order.
    fn changelog_records(
        &self,
        store: &str,
        partition: i32,
    ) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let tp = TopicPartition::new(
            crate::changelog::changelog_topic(&self.application_id, store),
            partition,
        );
        self.changelogs
            .get(&tp)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// [`MemoryRun::changelog`] with each value's offset in the log.
    fn latest(&self, store: &str, partition: i32) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let tp = TopicPartition::new(
            crate::changelog::changelog_topic(&self.application_id, store),
            partition,
        );
        let mut latest: std::collections::BTreeMap<Vec<u8>, (Option<Vec<u8>>, i64)> =
            std::collections::BTreeMap::new();
        for (offset, (k, v)) in self.changelogs.get(&tp).into_iter().flatten().enumerate() {
            latest.insert(k.clone(), (v.clone(), offset as i64));
        }
        latest
            .into_iter()
            .filter_map(|(k, (v, offset))| v.map(|v| (k, v, offset)))
            .collect()
    }

    /// Moves changelog records out of the outputs, until the next checkpoint.
    /// Appends a record to one store's changelog partition, as if a checkpoint had written
    /// it (`None`: a tombstone): for tests of what a restore does with what it finds.
    pub fn write_changelog(
        &mut self,
        store: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) {
        let tp = TopicPartition::new(
            crate::changelog::changelog_topic(&self.application_id, store),
            partition,
        );
        self.changelogs
            .entry(tp)
            .or_default()
            .push((key.to_vec(), value.map(<[u8]>::to_vec)));
    }

    fn collect_changelogs(&mut self) {
        let mut c = self.captured.borrow_mut();
        let (logs, rest): (Vec<_>, Vec<_>) = c
            .drain(..)
            .partition(|r| r.topic.ends_with("-changelog") && r.partition.is_some());
        *c = rest;
        self.pending.extend(logs);
    }

    /// Every topic has `partitions` partitions (default 1): repartitioned records are routed
    /// among that many tasks, and watermarks come from that many upstream tasks.
    pub fn with_partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Moves processing time to `now` (ms) and ticks every task (idle inputs,
    /// processing-time windows).
    pub fn set_processing_time(&mut self, now: i64) -> Result<()> {
        self.now = now;
        for task in self.tasks.values_mut() {
            futures::executor::block_on(task.tick(now))?;
        }
        self.route_repartitions()
    }

    /// Ends the input (a bounded run's end): every source task of every partition gets the
    /// final watermark, and it travels through the repartitions.
    pub fn end_of_input(&mut self) -> Result<()> {
        let sources: Vec<usize> = self
            .pipeline
            .sub_topologies()
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s.source, SourceTopics::Repartition(_)))
            .map(|(i, _)| i)
            .collect();
        for sub in sources {
            for partition in 0..self.partitions {
                let now = self.now;
                let task = self.task(sub, partition, None);
                futures::executor::block_on(task.end_of_input(now))?;
                self.route_repartitions()?;
            }
        }
        Ok(())
    }

    /// The event-time watermark of task `sub`/`partition`.
    pub fn watermark(&self, sub: usize, partition: i32) -> Option<i64> {
        self.tasks.get(&(sub, partition)).map(|t| t.watermark())
    }

    fn sub_of(&self, topic: &str) -> Result<usize> {
        self.pipeline
            .sub_topologies()
            .iter()
            .position(|s| {
                s.tables.iter().any(|t| t == topic)
                    || match &s.source {
                        SourceTopics::Topics(t) => t.iter().any(|t| t == topic),
                        SourceTopics::Pattern(p) => regex::Regex::new(&format!("^(?:{p})$"))
                            .is_ok_and(|re| re.is_match(topic)),
                        SourceTopics::Repartition(name) => {
                            repartition_topic(&self.application_id, name) == topic
                        }
                    }
            })
            .ok_or_else(|| Error::Topology(format!("no source reads {topic}")))
    }

    fn task(&mut self, sub: usize, partition: i32, topic: Option<&str>) -> &mut Box<dyn TaskChain> {
        let pipeline = self.pipeline;
        let s = &pipeline.sub_topologies()[sub];
        let inputs = match &s.source {
            SourceTopics::Repartition(name) => TaskInputs::Repartition {
                tp: TopicPartition::new(repartition_topic(&self.application_id, name), partition),
                upstream: self.partitions as usize,
            },
            SourceTopics::Topics(t) => TaskInputs::Partitions(
                t.iter()
                    .map(|t| TopicPartition::new(t.clone(), partition))
                    .collect(),
            ),
            SourceTopics::Pattern(_) => TaskInputs::Partitions(
                topic
                    .map(|t| TopicPartition::new(t, partition))
                    .into_iter()
                    .collect(),
            ),
        };
        let env = TaskEnv {
            output: Output::Memory(self.captured.clone()),
            application_id: self.application_id.clone(),
            partition,
            inputs,
            repartition_partitions: if s.repartition.is_some() {
                self.partitions
            } else {
                0
            },
            now: self.now,
            stores: crate::changelog::StoreEnv {
                logged: self.logged,
                strict: self.logged,
                cache_bytes: self.disk.as_ref().map_or(0, |d| d.1),
                ..Default::default()
            },
        };
        if let Some((dir, cache_bytes)) = &self.disk
            && !self.tasks.contains_key(&(sub, partition))
        {
            for store in s
                .stores
                .iter()
                .filter(|s| crate::disk_store::kept_on_disk(s))
            {
                let dir = dir
                    .join(&self.application_id)
                    .join(format!("{store}-{partition}"));
                let local = futures::executor::block_on(crate::disk_store::LocalStore::open(
                    &dir,
                    *cache_bytes,
                    std::time::Duration::ZERO,
                ))
                .and_then(|(local, _)| {
                    local.clear()?;
                    let mut batch = crate::disk_store::Batch::default();
                    if self.logged {
                        for (k, v) in self.changelog_records(store, partition) {
                            batch.set(k, v);
                        }
                    }
                    local.apply(&mut batch, false)?;
                    Ok(local)
                })
                .unwrap_or_else(|e| panic!("the disk store in {}: {e}", dir.display()));
                env.stores.locals.borrow_mut().insert(store.clone(), local);
            }
        }
        if self.logged && !self.tasks.contains_key(&(sub, partition)) {
            let mut restored = env.stores.restored.borrow_mut();
            for store in &s.stores {
                let entries = self
                    .latest(store, partition)
                    .into_iter()
                    .map(|(k, v, offset)| (k.into_boxed_slice(), v.into_boxed_slice(), offset))
                    .collect();
                restored.insert(store.clone(), entries);
            }
        }
        self.tasks
            .entry((sub, partition))
            .or_insert_with(|| s.factory.instantiate(&env))
    }

    /// Feeds bare values (no key, timestamp 0) to the task of `topic`/`partition`. Nothing
    /// is recorded per value: this is the benchmark's path.
    pub fn push_values(&mut self, topic: &str, partition: i32, values: &[&[u8]]) -> Result<()> {
        let sub = self.sub_of(topic)?;
        let tp = TopicPartition::new(topic, partition);
        let task = self.task(sub, partition, Some(topic));
        futures::executor::block_on(task.process_values(&tp, values))?;
        self.route_repartitions()
    }

    /// Feeds records to the task of `topic`/`partition`, with offsets continuing from the
    /// last records fed there.
    pub fn push(&mut self, topic: &str, partition: i32, records: &[MemoryRecord]) -> Result<()> {
        let sub = self.sub_of(topic)?;
        let tp = TopicPartition::new(topic, partition);
        let offset = self.next_offset.entry(tp.clone()).or_insert(0);
        let first = *offset;
        *offset += records.len() as i64;
        let now = self.now;
        let task = self.task(sub, partition, Some(topic));
        futures::executor::block_on(task.process_memory(&tp, first, records, now))?;
        self.route_repartitions()
    }

    /// Moves records written to repartition topics on to the tasks that read them.
    fn route_repartitions(&mut self) -> Result<()> {
        self.collect_changelogs();
        loop {
            let pending: Vec<CapturedRecord> = {
                let mut c = self.captured.borrow_mut();
                let (repart, rest): (Vec<_>, Vec<_>) = c.drain(..).partition(|r| {
                    r.topic.ends_with("-repartition") && self.sub_of(&r.topic).is_ok()
                });
                *c = rest;
                repart
            };
            if pending.is_empty() {
                return Ok(());
            }
            for r in pending {
                let partition = r.partition.unwrap_or_else(|| {
                    r.key.as_deref().map_or(0, |k| {
                        ((murmur2(k) & 0x7fff_ffff) % self.partitions as u32) as i32
                    })
                });
                let record = MemoryRecord {
                    key: r.key,
                    value: Some(r.value),
                    timestamp: r.timestamp,
                    headers: r.headers,
                };
                self.push(&r.topic, partition, std::slice::from_ref(&record))?;
            }
        }
    }

    /// Everything sinks have written so far (repartitioned records excepted).
    pub fn output(&self) -> std::cell::Ref<'_, Vec<CapturedRecord>> {
        self.captured.borrow()
    }

    /// Takes what sinks have written so far.
    pub fn take_output(&mut self) -> Vec<CapturedRecord> {
        std::mem::take(&mut *self.captured.borrow_mut())
    }

    /// The counters and operator metrics of the task `sub`/`partition`.
    pub fn task_metrics(
        &self,
        sub: usize,
        partition: i32,
    ) -> Option<(TaskCounters, Vec<OperatorMetrics>)> {
        self.tasks.get(&(sub, partition)).map(|t| {
            let mut ops = Vec::new();
            t.operator_metrics(&mut ops);
            (t.counters().clone(), ops)
        })
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), as the default partitioner uses it.
pub fn murmur2(data: &[u8]) -> u32 {
    flumen_client::producer::partitioner::murmur2(data) as u32
}

#[path = "visits.rs"]
pub mod visits;
