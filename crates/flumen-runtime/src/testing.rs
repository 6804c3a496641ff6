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
use crate::task::{MemoryRecord, TaskChain, TaskCounters, TaskEnv, repartition_topic};

/// A pipeline's tasks run in memory: sinks write to a buffer, and records written to a
/// repartition topic are fed to the sub-topology that reads it (partitioned by key hash).
pub struct MemoryRun<'p> {
    pipeline: &'p Pipeline,
    application_id: String,
    captured: Rc<RefCell<Vec<CapturedRecord>>>,
    tasks: HashMap<(usize, i32), Box<dyn TaskChain>>,
    next_offset: HashMap<TopicPartition, i64>,
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
        }
    }

    fn sub_of(&self, topic: &str) -> Result<usize> {
        self.pipeline
            .sub_topologies()
            .iter()
            .position(|s| match &s.source {
                SourceTopics::Topics(t) => t.iter().any(|t| t == topic),
                SourceTopics::Pattern(p) => {
                    regex::Regex::new(&format!("^(?:{p})$")).is_ok_and(|re| re.is_match(topic))
                }
                SourceTopics::Repartition(name) => {
                    repartition_topic(&self.application_id, name) == topic
                }
            })
            .ok_or_else(|| Error::Topology(format!("no source reads {topic}")))
    }

    fn task(&mut self, sub: usize, partition: i32) -> &mut Box<dyn TaskChain> {
        let env = TaskEnv {
            output: Output::Memory(self.captured.clone()),
            application_id: self.application_id.clone(),
        };
        let pipeline = self.pipeline;
        self.tasks
            .entry((sub, partition))
            .or_insert_with(|| pipeline.sub_topologies()[sub].factory.instantiate(&env))
    }

    /// Feeds bare values (no key, timestamp 0) to the task of `topic`/`partition`. Nothing
    /// is recorded per value: this is the benchmark's path.
    pub fn push_values(&mut self, topic: &str, partition: i32, values: &[&[u8]]) -> Result<()> {
        let sub = self.sub_of(topic)?;
        let tp = TopicPartition::new(topic, partition);
        let task = self.task(sub, partition);
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
        let task = self.task(sub, partition);
        futures::executor::block_on(task.process_memory(&tp, first, records))?;
        self.route_repartitions()
    }

    /// Moves records written to repartition topics on to the tasks that read them.
    fn route_repartitions(&mut self) -> Result<()> {
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
                let partitions = 1 + self
                    .tasks
                    .keys()
                    .filter(|(s, _)| *s == 0)
                    .map(|(_, p)| *p)
                    .max()
                    .unwrap_or(0);
                let partition = r
                    .key
                    .as_deref()
                    .map_or(0, |k| (murmur2(k) & 0x7fff_ffff) % partitions.max(1) as u32)
                    as i32;
                let record = MemoryRecord {
                    key: r.key,
                    value: Some(r.value),
                    timestamp: r.timestamp,
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
