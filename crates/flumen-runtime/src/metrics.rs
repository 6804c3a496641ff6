//! Metrics a running pipeline publishes: per task and operator, per partition, per worker.
//!
//! Workers count in plain fields of their own (no atomics on the record path) and publish a
//! snapshot at most every half second, and when they stop; [`RuntimeMetrics`] is the latest
//! snapshot of every worker. A worker's [`Phase`] is the exception: it is stored at once
//! (an atomic per worker), also from inside the consumer's `poll` (rebalance callbacks), so
//! that `/health` sees a rebalance while it happens. The other exception is the last records
//! written to the topics of `monitor.topics` (alerts, say): a sink copies such a record to
//! the board as it writes it, under the board's lock; records to other topics cost one
//! comparison against that (usually empty or one-name) list.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
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
    /// What restoring its state from the changelogs took when it started (tasks with
    /// state).
    pub restore: Option<crate::RestoreStats>,
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

/// Upper bounds, in seconds, of the buckets of every [`Histogram`] (a last bucket, `+Inf`,
/// takes what is above them): from 1 ms to 5 minutes.
pub const HISTOGRAM_BOUNDS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Observations counted in the fixed buckets of [`HISTOGRAM_BOUNDS`], as Prometheus
/// histograms are: a fixed size, so observing never allocates.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last entry counts those above every
    /// bound.
    pub buckets: [u64; HISTOGRAM_BOUNDS.len() + 1],
    /// The sum of the observations, in seconds.
    pub sum: f64,
    /// The number of observations.
    pub count: u64,
}

impl Histogram {
    /// Counts one observation of `seconds` (negative values count as 0).
    pub fn observe(&mut self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let bucket = HISTOGRAM_BOUNDS.partition_point(|&b| b < seconds);
        self.buckets[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The cumulative counts Prometheus exposes: `(upper bound, observations <= it)`, the
    /// last with bound `f64::INFINITY`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        HISTOGRAM_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().scan(0, |total, &n| {
                *total += n;
                Some(*total)
            }))
    }
}

/// End-to-end latency of the records written to one sink topic: event time (the output
/// record's timestamp) to the broker's acknowledgement, over sampled records.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SinkLatency {
    /// The topic written to.
    pub topic: String,
    /// The sampled latencies, in seconds.
    pub histogram: Histogram,
}

/// What a worker is doing, as `/health` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Joining the group; no record processed yet (the start barrier).
    #[default]
    Starting,
    /// The group is moving partitions: from the revocation (or loss) of some of this
    /// worker's partitions until `poll` returns with the new assignment.
    Rebalancing,
    /// Rebuilding task state before processing (changelog restore).
    Restoring,
    /// Processing records.
    Running,
    /// Stopped processing: committing, leaving the group (which revokes its partitions) and
    /// closing.
    Stopping,
}

impl Phase {
    /// Every phase, in the order above.
    pub const ALL: [Phase; 5] = [
        Phase::Starting,
        Phase::Rebalancing,
        Phase::Restoring,
        Phase::Running,
        Phase::Stopping,
    ];

    /// The phase's name in `/health` and in the `phase` label of `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Rebalancing => "rebalancing",
            Phase::Restoring => "restoring",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
        }
    }

    fn from_u8(v: u8) -> Phase {
        Phase::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Phase::Starting)
    }

    fn as_u8(self) -> u8 {
        Phase::ALL.iter().position(|&p| p == self).unwrap_or(0) as u8
    }
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
    /// Durations of the worker's commits (producer flush, then offset commit), in seconds.
    pub commit_seconds: Histogram,
    /// What it is doing now.
    pub phase: Phase,
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
    /// Sampled end-to-end latency per sink topic, over all workers, by topic name.
    pub latency: Vec<SinkLatency>,
    /// The last records written to the topics of `monitor.topics`, newest first (at most
    /// [`RECENT_RECORDS`]).
    pub recent: Vec<RecentRecord>,
}

/// How many of the last records written to the monitored topics the board keeps.
pub const RECENT_RECORDS: usize = 20;
/// Bytes of a monitored record's key or value kept for the page (the rest is cut).
const RECENT_BYTES: usize = 1024;

/// A record written to a monitored topic (`monitor.topics`), as the live page shows it.
/// Under exactly-once it is shown when written, before its transaction commits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecentRecord {
    /// The topic.
    pub topic: String,
    /// The key, as UTF-8 (invalid bytes replaced), cut to 1 KiB.
    pub key: Option<String>,
    /// The value, the same way.
    pub value: String,
    /// The record's timestamp (ms).
    pub timestamp: i64,
}

/// The last records written to the monitored topics.
#[derive(Debug, Default)]
struct Recent {
    topics: Vec<String>,
    records: Mutex<VecDeque<RecentRecord>>,
}

fn shown(bytes: &[u8]) -> String {
    let mut cut = bytes.len().min(RECENT_BYTES);
    // Not in the middle of a UTF-8 sequence, when the bytes are UTF-8.
    while cut < bytes.len() && cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    String::from_utf8_lossy(&bytes[..cut]).into_owned()
}

/// What one worker last published.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerSnapshot {
    pub(crate) worker: WorkerMetrics,
    pub(crate) tasks: Vec<TaskMetrics>,
    pub(crate) lag: Vec<PartitionLag>,
    /// Records of tasks that were dropped (moved away), so totals never go down.
    pub(crate) records_in_total: u64,
    /// The worker's latency samples per sink topic, since it started.
    pub(crate) latency: Vec<SinkLatency>,
}

/// The board workers publish to and the API reads.
#[derive(Debug, Default)]
pub(crate) struct MetricsBoard {
    workers: Mutex<Vec<WorkerSnapshot>>,
    /// Each worker's [`Phase`], live.
    phases: Vec<AtomicU8>,
    recent: Recent,
}

impl MetricsBoard {
    /// A board for `workers` workers, keeping the last records written to `monitored` topics.
    pub(crate) fn new(workers: usize, monitored: Vec<String>) -> Arc<Self> {
        Arc::new(MetricsBoard {
            workers: Mutex::new(vec![WorkerSnapshot::default(); workers]),
            phases: (0..workers)
                .map(|_| AtomicU8::new(Phase::Starting.as_u8()))
                .collect(),
            recent: Recent {
                topics: monitored,
                records: Mutex::new(VecDeque::with_capacity(RECENT_RECORDS)),
            },
        })
    }

    /// Whether records written to `topic` are kept for the page (`monitor.topics`).
    #[inline]
    pub(crate) fn monitors(&self, topic: &str) -> bool {
        !self.recent.topics.is_empty() && self.recent.topics.iter().any(|t| t == topic)
    }

    /// The monitored topics (`monitor.topics`).
    pub(crate) fn monitored(&self) -> &[String] {
        &self.recent.topics
    }

    /// Keeps a record written to a monitored topic, dropping the oldest beyond
    /// [`RECENT_RECORDS`].
    pub(crate) fn written(&self, topic: &str, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
        let record = RecentRecord {
            topic: topic.to_owned(),
            key: key.map(shown),
            value: shown(value),
            timestamp,
        };
        let mut records = self
            .recent
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if records.len() == RECENT_RECORDS {
            records.pop_back();
        }
        records.push_front(record);
    }

    /// Worker `worker` is now in `phase`. Whoever adds a phase's work sets it (changelog
    /// restore: `Restoring`, then `Running`).
    pub(crate) fn set_phase(&self, worker: usize, phase: Phase) {
        if let Some(p) = self.phases.get(worker) {
            p.store(phase.as_u8(), Ordering::Release);
        }
    }

    /// Moves worker `worker` from `from` to `to` if it is in `from`; returns whether it did.
    pub(crate) fn move_phase(&self, worker: usize, from: Phase, to: Phase) -> bool {
        self.phases.get(worker).is_some_and(|p| {
            p.compare_exchange(
                from.as_u8(),
                to.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        })
    }

    /// Every worker's phase, by index.
    pub(crate) fn phases(&self) -> Vec<Phase> {
        self.phases
            .iter()
            .map(|p| Phase::from_u8(p.load(Ordering::Acquire)))
            .collect()
    }

    pub(crate) fn publish(&self, index: usize, snapshot: WorkerSnapshot) {
        let mut w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = w.get_mut(index) {
            *slot = snapshot;
        }
    }

    pub(crate) fn snapshot(&self) -> RuntimeMetrics {
        let phases = self.phases();
        let w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut m = RuntimeMetrics::default();
        for (index, s) in w.iter().enumerate() {
            let mut worker = s.worker.clone();
            worker.worker = index;
            worker.phase = phases.get(index).copied().unwrap_or_default();
            m.workers.push(worker);
            m.tasks.extend(s.tasks.iter().cloned());
            m.lag.extend(s.lag.iter().cloned());
            m.records_in += s.records_in_total;
            for l in &s.latency {
                match m.latency.iter_mut().find(|x| x.topic == l.topic) {
                    Some(x) => x.histogram.merge(&l.histogram),
                    None => m.latency.push(l.clone()),
                }
            }
        }
        m.latency.sort_by(|a, b| a.topic.cmp(&b.topic));
        drop(w);
        m.recent = self
            .recent
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = Histogram::default();
        for s in [0.0, 0.001, 0.0011, 0.3, 1e6, -1.0] {
            h.observe(s);
        }
        let cumulative: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(cumulative[0], (0.001, 3), "0, 1 ms and the clamped -1 s");
        assert_eq!(cumulative[1], (0.0025, 4));
        assert_eq!(cumulative[8], (0.5, 5));
        assert_eq!(*cumulative.last().expect("+Inf"), (f64::INFINITY, 6));
        assert_eq!(h.count, 6);
        let mut twice = h.clone();
        twice.merge(&h);
        assert_eq!(twice.count, 12);
        assert_eq!(twice.buckets[0], 6);
    }

    #[test]
    fn a_rebalance_moves_only_a_running_worker() {
        let board = MetricsBoard::new(2, Vec::new());
        assert_eq!(board.phases(), [Phase::Starting, Phase::Starting]);
        assert!(!board.move_phase(0, Phase::Running, Phase::Rebalancing));
        board.set_phase(0, Phase::Running);
        assert!(board.move_phase(0, Phase::Running, Phase::Rebalancing));
        assert_eq!(board.snapshot().workers[0].phase, Phase::Rebalancing);
        board.set_phase(1, Phase::Restoring);
        assert!(!board.move_phase(1, Phase::Running, Phase::Rebalancing));
        assert_eq!(board.phases(), [Phase::Rebalancing, Phase::Restoring]);
    }

    #[test]
    fn the_board_keeps_the_last_records_of_monitored_topics_newest_first() {
        let board = MetricsBoard::new(1, vec!["alerts".to_owned()]);
        assert!(board.monitors("alerts"));
        assert!(!board.monitors("stats"));
        assert!(!MetricsBoard::new(1, Vec::new()).monitors("alerts"));
        for i in 0..RECENT_RECORDS + 5 {
            board.written("alerts", Some(b"k"), format!("{i}").as_bytes(), i as i64);
        }
        let recent = board.snapshot().recent;
        assert_eq!(recent.len(), RECENT_RECORDS);
        assert_eq!(recent[0].value, format!("{}", RECENT_RECORDS + 4));
        assert_eq!(recent[0].timestamp, (RECENT_RECORDS + 4) as i64);
        assert_eq!(recent.last().map(|r| r.value.as_str()), Some("5"));
        assert_eq!(recent[0].key.as_deref(), Some("k"));
    }

    #[test]
    fn a_long_value_is_cut_on_a_character_boundary() {
        let long = "é".repeat(RECENT_BYTES);
        let cut = shown(long.as_bytes());
        assert!(cut.len() <= RECENT_BYTES);
        assert!(
            cut.chars().all(|c| c == 'é'),
            "no replacement character: {cut:?}"
        );
        assert_eq!(shown(&[0xff, b'a']), "\u{fffd}a");
    }
}
