//! Metrics a running pipeline publishes: per task and operator, per partition, per worker.
//!
//! Workers count in plain fields of their own (no atomics on the record path) and publish a
//! snapshot at most every half second, and when they stop; [`RuntimeMetrics`] is the latest
//! snapshot of every worker.

use std::sync::{Arc, Mutex, PoisonError};

use flumen_client::TopicPartition;

use crate::operator::OperatorMetrics;
use crate::task::TaskCounters;

/// One task's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskMetrics {
    /// `<sub-topology>_<partition>`, as Kafka Streams names tasks.
    pub task: String,
    /// The worker running it.
    pub worker: usize,
    /// Its counters.
    pub counters: TaskCounters,
    /// Its operators, in chain order.
    pub operators: Vec<OperatorMetrics>,
    /// Its event-time watermark (ms; `i64::MIN` before the first).
    pub watermark: i64,
}

/// How far a partition's processing is behind its log end.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition.
    pub tp: TopicPartition,
    /// The next offset to process.
    pub position: i64,
    /// The high watermark at the last fetch.
    pub high_watermark: i64,
    /// `high_watermark - position`.
    pub lag: i64,
}

/// One worker's metrics.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// The worker's index in its process.
    pub worker: usize,
    /// Share of wall time spent processing records (0 to 1) since it started.
    pub busy_ratio: f64,
    /// Offset commits done.
    pub commits: u64,
    /// Rebalances that moved partitions of this worker.
    pub rebalances: u64,
    /// Times fetching was paused because outputs backed up in the producer.
    pub backpressure_pauses: u64,
}

/// A snapshot of every worker of this process.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// Per worker.
    pub workers: Vec<WorkerMetrics>,
    /// Per task, the tasks each worker runs now (or ran last, once stopped).
    pub tasks: Vec<TaskMetrics>,
    /// Per partition of the tasks running now.
    pub lag: Vec<PartitionLag>,
    /// Records into tasks since the start, over all tasks this process ever ran.
    pub records_in: u64,
}

/// What one worker last published.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerSnapshot {
    pub(crate) worker: WorkerMetrics,
    pub(crate) tasks: Vec<TaskMetrics>,
    pub(crate) lag: Vec<PartitionLag>,
    /// Records of tasks that were dropped (moved away), so totals never go down.
    pub(crate) records_in_total: u64,
}

/// The board workers publish to and the API reads.
#[derive(Debug, Default)]
pub(crate) struct MetricsBoard {
    workers: Mutex<Vec<WorkerSnapshot>>,
    /// Workers that process records (past the start barrier).
    processing: std::sync::atomic::AtomicUsize,
    count: usize,
}

impl MetricsBoard {
    pub(crate) fn new(workers: usize) -> Arc<Self> {
        Arc::new(MetricsBoard {
            workers: Mutex::new(vec![WorkerSnapshot::default(); workers]),
            processing: std::sync::atomic::AtomicUsize::new(0),
            count: workers,
        })
    }

    /// A worker has started processing records.
    pub(crate) fn set_processing(&self) {
        self.processing
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Workers processing, and workers in the process.
    pub(crate) fn processing(&self) -> (usize, usize) {
        (
            self.processing.load(std::sync::atomic::Ordering::Acquire),
            self.count,
        )
    }

    pub(crate) fn publish(&self, index: usize, snapshot: WorkerSnapshot) {
        let mut w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = w.get_mut(index) {
            *slot = snapshot;
        }
    }

    pub(crate) fn snapshot(&self) -> RuntimeMetrics {
        let w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut m = RuntimeMetrics::default();
        for s in w.iter() {
            m.workers.push(s.worker.clone());
            m.tasks.extend(s.tasks.iter().cloned());
            m.lag.extend(s.lag.iter().cloned());
            m.records_in += s.records_in_total;
        }
        m
    }
}
