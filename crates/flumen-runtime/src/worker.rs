//! A worker: one OS thread pinned to a core, with its own current-thread tokio runtime,
//! consumer (a member of the application's group) and producer, running the tasks the group
//! gave it.
//!
//! # Invariants
//! - An input offset is committed only after `Producer::flush` returned and the producer's
//!   failure count did not grow: every output derived from the records before that offset
//!   was acknowledged (at-least-once). A failure stops the worker without committing.
//! - Revoked partitions are flushed and committed inside `poll` (the listener's
//!   `commit_on_revoke`), while this member still owns them; their tasks are dropped right
//!   after `poll` returns. Lost partitions are dropped without a commit. Partitions of tasks
//!   with state are not committed there (their state cannot be checkpointed from inside
//!   `poll`): the next owner restores the state of the last commit and reads on from it.
//!   Under exactly-once nothing is committed there: the open transaction is aborted after
//!   `poll` and every partition rewound to its committed offset.
//! - Nothing on the record path is shared with another worker; the listener state is locked
//!   once per fetched chunk and at rebalances, never per record.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flumen_client::admin::IsolationLevel;
use flumen_client::config::Properties;
use flumen_client::consumer::{
    CommitOnRevoke, Consumer, ConsumerConfig, OffsetAndMetadata, RebalanceListener,
};
use flumen_client::producer::{ProduceError, Producer, ProducerConfig};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use tracing::Instrument;

use crate::changelog::{RestoreStats, Restorer, Standby, StoreEnv, changelog_topic};
use crate::disk_store::{Batch, FileCopy, LocalStore, RESTORE_BATCH_BYTES, read_checkpoint};
use crate::error::{Error, Result};
use crate::latency::LatencySampler;
use crate::metrics::{
    Histogram, MetricsBoard, PartitionLag, Phase, TaskMetrics, WorkerMetrics, WorkerSnapshot,
};
use crate::operator::Output;
use crate::runtime::{Guarantee, Plan, StateStore};
use crate::task::{TaskChain, TaskEnv, TaskInputs};
use crate::time::now_ms;

/// What a worker reports when it stops.
#[derive(Debug, Default)]
pub(crate) struct WorkerReport {
    pub(crate) records_in: u64,
}

/// Offsets processed and not yet committed, and what the group did, shared between the
/// worker's loop and its rebalance listener.
#[derive(Debug, Default)]
struct Progress {
    processed: BTreeMap<TopicPartition, OffsetAndMetadata>,
    revoked: Vec<TopicPartition>,
    rebalances: u64,
    /// Producer failures already accounted for.
    failures_seen: u64,
    /// Set when a flush found new failures: the worker stops with it.
    failed: Option<Error>,
    /// Exactly-once: partitions are never committed on revocation (the open transaction is
    /// aborted and every task resumes from the last committed one instead).
    transactional: bool,
}

struct Listener {
    progress: Arc<Mutex<Progress>>,
    producer: Producer,
    /// Which partitions feed tasks with state.
    plan: Arc<Plan>,
    /// Where the worker's phase goes: `Rebalancing` from a revocation until `poll` returns.
    board: Arc<MetricsBoard>,
    index: usize,
}

fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RebalanceListener for Listener {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition]) {
        self.board
            .move_phase(self.index, Phase::Running, Phase::Rebalancing);
        let mut p = lock(&self.progress);
        p.revoked.extend_from_slice(partitions);
        p.rebalances += 1;
    }

    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.board
            .move_phase(self.index, Phase::Running, Phase::Rebalancing);
        let mut p = lock(&self.progress);
        for tp in partitions {
            p.processed.remove(tp);
        }
        p.revoked.extend_from_slice(partitions);
        p.rebalances += 1;
    }

    fn commit_on_revoke(&mut self, partitions: &[TopicPartition]) -> Option<CommitOnRevoke> {
        if lock(&self.progress).transactional {
            // The tasks' state cannot be checkpointed from here: the worker aborts the
            // transaction after `poll` (see `WorkerLoop::abort_and_rewind`).
            return None;
        }
        let progress = self.progress.clone();
        let producer = self.producer.clone();
        // A task with state commits only together with a checkpoint of that state (which
        // cannot be taken from here): its revoked partitions keep their last commit, and the
        // next owner restores the state that goes with it and reads again from there.
        let plan = self.plan.clone();
        let partitions: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| {
                plan.sub_of(&tp.topic)
                    .is_none_or(|sub| plan.stores[sub].is_empty())
            })
            .cloned()
            .collect();
        Some(Box::pin(async move {
            let flushed = producer.flush().await;
            let mut p = lock(&progress);
            let failures = producer.failed_records();
            if flushed.is_err() || failures > p.failures_seen {
                if p.failed.is_none() {
                    p.failed = Some(undelivered(&producer, failures - p.failures_seen));
                }
                return BTreeMap::new();
            }
            partitions
                .iter()
                .filter_map(|tp| p.processed.remove_entry(tp))
                .collect()
        }))
    }
}

fn undelivered(producer: &Producer, count: u64) -> Error {
    match producer.last_failure() {
        Some(first) => Error::Undelivered { count, first },
        None => Error::Undelivered {
            count,
            first: flumen_client::producer::ProduceError::Closed,
        },
    }
}

/// One task and the partitions it reads.
struct Task {
    id: String,
    chain: Box<dyn TaskChain>,
    /// What restoring its state took (tasks with state).
    restore: Option<RestoreStats>,
    /// Its stores kept on disk, whose checkpoints follow commits.
    locals: Vec<Rc<LocalStore>>,
}

/// Whether `store` of the plan is kept on disk: every store under `state.store = disk`.
fn on_disk(plan: &Plan, store: &str) -> bool {
    plan.config.state_store == StateStore::Disk && crate::disk_store::kept_on_disk(store)
}

/// Opens the on-disk store of `tp` in `dir` and brings it up to the changelog's end: from
/// its checkpoint (the tail only) when it has a valid one; else from a `standby` copy (its
/// entries written into the emptied file, then the tail after it); else emptied and in full,
/// streaming the records into the file. Under exactly-once the checkpoint is deleted
/// once read: only a clean stop writes it again.
async fn restore_local(
    restorer: &mut Restorer,
    tp: &TopicPartition,
    dir: &std::path::Path,
    (cache_bytes, exactly_once): (usize, bool),
    standby: Option<crate::changelog::Standby>,
    total: &mut RestoreStats,
) -> Result<Rc<LocalStore>> {
    let started = Instant::now();
    // A standby kept in this file: closing it writes the checkpoint the open below reads. If
    // that fails the file has no checkpoint (the copy deleted it), and is restored in full.
    let standby = match standby {
        Some(s) if s.in_a_file() => {
            match s.close() {
                Ok(records) => total.standby_records += records,
                Err(e) => {
                    tracing::warn!(changelog = %tp, error = %e, "closing a standby copy failed")
                }
            }
            None
        }
        s => s,
    };
    let (local, mut checkpoint) =
        LocalStore::open(dir, cache_bytes, Duration::from_secs(30)).await?;
    if exactly_once {
        local.delete_checkpoint()?;
    }
    let mut batch = Batch::default();
    if let (None, Some(standby)) = (checkpoint, standby) {
        // The standby's copy is as good as the changelog up to where it read: if that is
        // still in the partition, `restore_into` reads on from there (else it empties the
        // file again and reads everything).
        local.clear()?;
        let (latest, next, records) = standby.into_parts();
        for (key, value) in latest {
            batch.set(&key, value.as_deref());
            if batch.len_bytes() >= RESTORE_BATCH_BYTES {
                local.apply(&mut batch, false)?;
                batch.clear();
            }
        }
        local.apply(&mut batch, false)?;
        batch.clear();
        total.standby_records += records;
        checkpoint = Some(next);
    }
    let end = restorer
        .restore_into(
            tp,
            checkpoint,
            total,
            || local.clear(),
            |key, value, _| {
                batch.set(key, value);
                if batch.len_bytes() >= RESTORE_BATCH_BYTES {
                    local.apply(&mut batch, false)?;
                    batch.clear();
                }
                Ok(())
            },
        )
        .await?;
    local.apply(&mut batch, true)?;
    local.set_next(end);
    let mut keys = 0u64;
    local.scan(0, |_, _| keys += 1)?;
    total.keys += keys;
    total.duration += started.elapsed();
    tracing::debug!(
        dir = %dir.display(),
        from = ?checkpoint,
        end,
        keys,
        "on-disk store restored"
    );
    Ok(local)
}

/// Runs worker `index` on the calling thread until `stop` is set or an error occurs.
pub(crate) fn run(
    index: usize,
    plan: Arc<Plan>,
    stop: Arc<AtomicBool>,
    board: Arc<MetricsBoard>,
) -> Result<WorkerReport> {
    if plan.config.pin_workers {
        pin_to_core(index);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting a worker's runtime".to_owned(),
            source,
        })?;
    let span = tracing::info_span!("worker", index);
    rt.block_on(run_async(index, plan, stop, board).instrument(span))
}

fn pin_to_core(index: usize) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // SAFETY: `set` is a plain bit set on a zeroed cpu_set_t we own; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(index % cores, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(index, "could not pin the worker to a core");
        }
    }
}

fn client_props(plan: &Plan, index: usize, which: &str) -> Properties {
    let mut props = Properties::new();
    props.set("bootstrap.servers", &plan.config.bootstrap);
    props.set(
        "client.id",
        format!("{}-worker-{index}-{which}", plan.config.application_id),
    );
    props
}

async fn connect(plan: &Plan, index: usize) -> Result<(Consumer, Producer)> {
    let exactly_once = plan.config.guarantee == Guarantee::ExactlyOnce;
    let mut c = client_props(plan, index, "consumer");
    c.set("group.id", &plan.config.application_id);
    c.set("enable.auto.commit", "false");
    c.set("auto.offset.reset", "earliest");
    c.set("partition.assignment.strategy", "co-partitioned");
    if let Some(name) = &plan.config.instance_id {
        c.set("group.instance.id", format!("{name}-{index}"));
    }
    if plan.config.standby_replicas > 0 {
        // The group leader places the standby copies, on processes by this name.
        c.set(
            "co.partitioned.standby.replicas",
            plan.config.standby_replicas.to_string(),
        );
        c.set("co.partitioned.process.id", &plan.process_name);
    }
    if exactly_once {
        // Repartition topics, tables and changelogs are written in transactions.
        c.set("isolation.level", "read_committed");
    }
    for (k, v) in plan.consumer_props() {
        c.set(k, v);
    }
    let consumer_config = ConsumerConfig::take_from(&mut c)?;
    let consumer = Consumer::connect(consumer_config).await?;
    Ok((consumer, producer(plan, index).await?))
}

/// The worker's producer; under exactly-once transactional, initialised (fencing an earlier
/// incarnation with the same transactional id) and in a transaction.
async fn producer(plan: &Plan, index: usize) -> Result<Producer> {
    let exactly_once = plan.config.guarantee == Guarantee::ExactlyOnce;
    let mut p = client_props(plan, index, "producer");
    p.set("linger.ms", "5");
    p.set("batch.size", "262144");
    if exactly_once {
        p.set(
            "transactional.id",
            format!(
                "{}-{}-{index}",
                plan.config.application_id, plan.process_name
            ),
        );
        // As Kafka Streams: a crashed worker's open transaction blocks read_committed
        // readers of its outputs until the coordinator aborts it.
        p.set("transaction.timeout.ms", "10000");
    }
    for (k, v) in plan.producer_props() {
        p.set(k, v);
    }
    let producer_config = ProducerConfig::take_from(&mut p)?;
    let producer = Producer::connect(producer_config)
        .await
        .map_err(|e| Error::produce("(connect)", e))?;
    if exactly_once {
        // Fences an earlier incarnation with the same transactional id and ends its
        // transaction.
        producer
            .init_transactions()
            .await
            .map_err(|e| Error::produce("(init_transactions)", e))?;
        producer
            .begin_transaction()
            .await
            .map_err(|e| Error::produce("(begin_transaction)", e))?;
    }
    Ok(producer)
}

/// A consumer of changelogs: no group, committed data only under exactly-once.
async fn standby_consumer(plan: &Plan, index: usize) -> Result<Consumer> {
    let mut c = client_props(plan, index, "standby");
    c.set("enable.auto.commit", "false");
    c.set("auto.offset.reset", "earliest");
    if plan.config.guarantee == Guarantee::ExactlyOnce {
        c.set("isolation.level", "read_committed");
    }
    for (k, v) in plan.consumer_props() {
        c.set(k, v);
    }
    Ok(Consumer::connect(ConsumerConfig::take_from(&mut c)?).await?)
}

/// Closes a standby copy no longer kept here: a copy in a store file gets its checkpoint, so
/// that a task or copy started here later reads on from there.
fn close_standby(tp: &TopicPartition, standby: Standby) {
    if let Err(e) = standby.close() {
        tracing::warn!(changelog = %tp, error = %e, "closing a standby copy failed");
    }
}

fn lock_map<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The worker's changelog reader: a consumer without a group, reading committed data only
/// under exactly-once.
async fn restorer(plan: &Plan, index: usize) -> Result<Restorer> {
    let isolation = if plan.config.guarantee == Guarantee::ExactlyOnce {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let mut c = client_props(plan, index, "restore");
    c.set("enable.auto.commit", "false");
    c.set("auto.offset.reset", "earliest");
    c.set(
        "isolation.level",
        match isolation {
            IsolationLevel::ReadCommitted => "read_committed",
            _ => "read_uncommitted",
        },
    );
    for (k, v) in plan.consumer_props() {
        c.set(k, v);
    }
    let config = ConsumerConfig::take_from(&mut c)?;
    let mut a = client_props(plan, index, "restore-admin");
    for (k, v) in plan.consumer_props() {
        if ClientConfig::from_properties([(k, v)]).is_ok() {
            a.set(k, v);
        }
    }
    let admin = Admin::connect(ClientConfig::take_from(&mut a)?).await?;
    Ok(Restorer::new(
        Consumer::connect(config).await?,
        admin,
        isolation,
    ))
}

async fn run_async(
    index: usize,
    plan: Arc<Plan>,
    stop: Arc<AtomicBool>,
    board: Arc<MetricsBoard>,
) -> Result<WorkerReport> {
    let (mut consumer, producer) = connect(&plan, index).await?;
    for topic in plan.output_topics() {
        producer
            .partitions_for(&topic)
            .await
            .map_err(|e| Error::produce(&topic, e))?;
    }
    let progress = Arc::new(Mutex::new(Progress {
        transactional: plan.config.guarantee == Guarantee::ExactlyOnce,
        ..Progress::default()
    }));
    consumer.set_rebalance_listener(Listener {
        progress: progress.clone(),
        producer: producer.clone(),
        plan: plan.clone(),
        board: board.clone(),
        index,
    });
    match plan.subscription() {
        Subscription::Topics(topics) => {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&names)?;
        }
        Subscription::Pattern(p) => consumer.subscribe_pattern(&p)?,
    }
    let latency = LatencySampler::new();
    let output = Output::Kafka(producer.clone(), latency.clone(), board.clone());
    let mut w = WorkerLoop {
        index,
        plan: plan.clone(),
        consumer,
        producer,
        progress,
        output,
        tasks: HashMap::new(),
        ended: HashSet::new(),
        last_tick: 0,
        joined: false,
        processing: false,
        tables_seen: BTreeSet::new(),
        bootstrap: BTreeMap::new(),
        lag: BTreeMap::new(),
        started: Instant::now(),
        busy: Duration::ZERO,
        commits: 0,
        aborts: 0,
        dropped_records: 0,
        dirty: false,
        paused: false,
        pauses: 0,
        commit_seconds: Histogram::default(),
        board,
        last_publish: Instant::now(),
        restorer: None,
        standby_consumer: None,
        standby_assigned: BTreeSet::new(),
        last_standby: Instant::now(),
    };
    // The latency sampler runs in the worker's task, polled before its loop so that it sees
    // acks before the loop goes on processing (see `latency`).
    let result = tokio::select! {
        biased;
        () = latency.run() => Ok(()),
        result = w.run(&stop) => result,
    };
    let records_in = w.records_in();
    // Leaving the group revokes every partition: that is no rebalance to report.
    w.board.set_phase(index, Phase::Stopping);
    w.publish();
    let closed = w.shutdown(result.is_ok()).await;
    result.and(closed)?;
    Ok(WorkerReport { records_in })
}

/// What the worker's consumer subscribes to.
pub(crate) enum Subscription {
    Topics(Vec<String>),
    Pattern(String),
}

struct WorkerLoop {
    index: usize,
    plan: Arc<Plan>,
    consumer: Consumer,
    producer: Producer,
    progress: Arc<Mutex<Progress>>,
    output: Output,
    /// Tasks by (sub-topology, partition).
    tasks: HashMap<(usize, i32), Task>,
    /// Tasks a bounded run has ended (given the final watermark).
    ended: HashSet<(usize, i32)>,
    /// Processing time of the last tick of every task, ms.
    last_tick: i64,
    /// This worker has joined the group (counted in `Plan::joined`).
    joined: bool,
    /// Every worker of the process has joined: records are processed.
    processing: bool,
    /// Assigned table partitions, read from the beginning since their assignment.
    tables_seen: BTreeSet<TopicPartition>,
    /// Table partitions not read up to their end yet, with that end: until they are, stream
    /// partitions are paused.
    bootstrap: BTreeMap<TopicPartition, i64>,
    lag: BTreeMap<TopicPartition, (i64, i64)>,
    started: Instant,
    busy: Duration,
    commits: u64,
    /// Transactions aborted (exactly-once).
    aborts: u64,
    /// Records of tasks dropped after moving away.
    dropped_records: u64,
    /// Processed offsets not committed yet.
    dirty: bool,
    /// Fetching is paused for backpressure.
    paused: bool,
    pauses: u64,
    /// Durations of the commits (flush + offset commit).
    commit_seconds: Histogram,
    board: Arc<MetricsBoard>,
    last_publish: Instant,
    /// Reads changelogs back (made at the first restore).
    restorer: Option<Restorer>,
    /// Keeps standby copies up to date (`num.standby.replicas`).
    standby_consumer: Option<Consumer>,
    standby_assigned: BTreeSet<TopicPartition>,
    last_standby: Instant,
}

impl WorkerLoop {
    async fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut last_commit = Instant::now();
        let interval = self.plan.config.commit_interval;
        while !stop.load(Ordering::Acquire) {
            // A bounded run that has reached its ends only waits for the stop: poll briefly.
            let wait = if self.plan.bounded && self.at_end() {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            let mut records = self.consumer.poll(wait).await?;
            // `poll` came back with the new assignment: a rebalance it took part in is over.
            self.board
                .move_phase(self.index, Phase::Rebalancing, Phase::Running);
            if self.after_rebalance().await? {
                // Exactly-once rewound every partition: what this poll fetched is read again.
                continue;
            }
            if !self.processing && !self.start_barrier(&mut records)? {
                continue;
            }
            self.start_stateful_tasks().await?;
            let skip = self.bootstrap_tables(&mut records)?;
            let idle = records.is_empty();
            let mut reached_end = false;
            let mut publish_now = false;
            if !idle {
                let started = Instant::now();
                for part in records.partitions_mut() {
                    let tp = part.topic_partition().clone();
                    if skip.contains(&tp) {
                        continue;
                    }
                    let Some(sub) = self.plan.sub_of(&tp.topic) else {
                        continue;
                    };
                    let key = (sub, tp.partition);
                    if !self.tasks.contains_key(&key) {
                        self.start_task(sub, tp.partition).await?;
                        // The metrics show a new task at once, not at the next snapshot.
                        publish_now = true;
                    }
                    let task = self.tasks.get_mut(&key).expect("started");
                    let span = tracing::debug_span!("task", id = %task.id);
                    task.chain.process(part).instrument(span).await?;
                    let next = part.next_offset();
                    let mut offset = OffsetAndMetadata::new(next);
                    offset.leader_epoch = part.last_leader_epoch();
                    self.lag.insert(tp.clone(), (next, part.high_watermark()));
                    reached_end |= self.plan.bounded
                        && self.plan.ends.get(&tp).is_some_and(|&end| next >= end);
                    if self.bootstrap.get(&tp).is_some_and(|&end| next >= end) {
                        self.bootstrap.remove(&tp);
                        if self.bootstrap.is_empty() {
                            tracing::info!("tables read: stream processing starts");
                            let paused = self.consumer.paused();
                            self.consumer.resume(&paused);
                        }
                    }
                    lock(&self.progress).processed.insert(tp, offset);
                    self.dirty = true;
                }
                self.busy += started.elapsed();
            }
            let now = now_ms();
            if self.plan.bounded {
                self.end_tasks(now).await?;
            }
            if self.plan.config.standby_replicas > 0
                && self.last_standby.elapsed() >= Duration::from_millis(200)
            {
                self.last_standby = Instant::now();
                self.maintain_standbys().await?;
            }
            if now - self.last_tick >= 50 {
                self.last_tick = now;
                for task in self.tasks.values_mut() {
                    task.chain.tick(now).await?;
                }
            }
            self.backpressure();
            // Bounded runs need their progress committed as soon as a partition is caught up.
            // Under exactly-once, outputs of ticks (processing-time windows, idle inputs) are
            // in the open transaction too: it commits every interval.
            if (self.dirty || (self.transactional() && !self.tasks.is_empty()))
                && (last_commit.elapsed() >= interval
                    || (self.plan.bounded && (idle || reached_end)))
            {
                let (started, commits) = (Instant::now(), self.commits);
                self.commit().await?;
                if self.commits > commits {
                    self.commit_seconds.observe(started.elapsed().as_secs_f64());
                }
                last_commit = Instant::now();
                if self.plan.bounded {
                    self.plan.committed.notify_one();
                }
            }
            if self.plan.bounded {
                let ended = !self.dirty && self.all_ended();
                self.plan.workers_ended[self.index].store(ended, Ordering::Release);
            }
            if publish_now || self.last_publish.elapsed() >= Duration::from_millis(500) {
                self.publish();
            }
        }
        Ok(())
    }

    /// Until every worker of this process has joined the group, records are not processed:
    /// the partitions are rewound to the first record fetched and paused. Otherwise the
    /// first worker to join would start tasks, with state, that the next join moves away.
    /// Returns whether processing may start.
    fn start_barrier(
        &mut self,
        records: &mut flumen_client::consumer::ConsumerRecords,
    ) -> Result<bool> {
        if !self.joined
            && self
                .consumer
                .group_metadata()
                .is_some_and(|m| m.generation_id > 0)
        {
            self.joined = true;
            self.plan.joined.fetch_add(1, Ordering::AcqRel);
        }
        if self.plan.joined.load(Ordering::Acquire) >= self.plan.config.workers {
            self.processing = true;
            self.board.set_phase(self.index, Phase::Running);
            let paused = self.consumer.paused();
            self.consumer.resume(&paused);
            tracing::debug!("every worker has joined: processing starts");
            return Ok(true);
        }
        for part in records.partitions_mut() {
            let tp = part.topic_partition().clone();
            if let Some(Ok(first)) = part.iter().next() {
                let offset = first.offset();
                self.consumer.seek(&tp, offset)?;
            }
        }
        let assigned = self.consumer.assignment();
        self.consumer.pause(&assigned);
        Ok(false)
    }

    /// Table partitions newly assigned are read from the beginning (a table is its own
    /// changelog); until every assigned table partition is read up to the end it had at the
    /// start, stream records are rewound and their partitions paused. Returns the
    /// partitions whose fetched records this poll must not process.
    fn bootstrap_tables(
        &mut self,
        records: &mut flumen_client::consumer::ConsumerRecords,
    ) -> Result<Vec<TopicPartition>> {
        let mut skip = Vec::new();
        if self.plan.tables.is_empty() {
            return Ok(skip);
        }
        let assigned = self.consumer.assignment();
        for tp in &assigned {
            if self.plan.tables.contains(&tp.topic) && self.tables_seen.insert(tp.clone()) {
                self.consumer.seek_to_beginning(std::slice::from_ref(tp))?;
                skip.push(tp.clone());
                let end = self.plan.table_ends.get(tp).copied().unwrap_or(0);
                if end > 0 {
                    self.bootstrap.insert(tp.clone(), end);
                }
            }
        }
        if self.bootstrap.is_empty() {
            return Ok(skip);
        }
        for part in records.partitions_mut() {
            let tp = part.topic_partition().clone();
            if self.plan.tables.contains(&tp.topic) {
                continue;
            }
            if let Some(Ok(first)) = part.iter().next() {
                let offset = first.offset();
                self.consumer.seek(&tp, offset)?;
            }
            skip.push(tp);
        }
        let streams: Vec<TopicPartition> = assigned
            .into_iter()
            .filter(|tp| !self.plan.tables.contains(&tp.topic))
            .collect();
        self.consumer.pause(&streams);
        Ok(skip)
    }

    /// The environment a new task of `sub` over partition number `partition` is built with.
    fn task_env(&self, sub: usize, partition: i32, stores: StoreEnv) -> TaskEnv {
        let plan = &self.plan;
        let inputs = match plan.upstream[sub] {
            Some(up) => TaskInputs::Repartition {
                tp: self
                    .consumer
                    .assignment()
                    .into_iter()
                    .find(|tp| tp.partition == partition && plan.sub_of(&tp.topic) == Some(sub))
                    .unwrap_or_else(|| TopicPartition::new("", partition)),
                upstream: usize::try_from(plan.partitions[up]).unwrap_or(1),
            },
            None => TaskInputs::Partitions(
                self.consumer
                    .assignment()
                    .into_iter()
                    .filter(|tp| tp.partition == partition && plan.sub_of(&tp.topic) == Some(sub))
                    .collect(),
            ),
        };
        TaskEnv {
            output: self.output.clone(),
            application_id: plan.config.application_id.clone(),
            partition,
            inputs,
            repartition_partitions: plan.partitions[sub],
            now: now_ms(),
            stores,
        }
    }

    /// Starts the task of `sub` over `partition`: restores its stores from their changelogs
    /// first (a task without stores starts at once).
    async fn start_task(&mut self, sub: usize, partition: i32) -> Result<()> {
        let id = format!("{sub}_{partition}");
        let mut restore = None;
        // Active before its standby copies are taken: a worker keeping copies checks this
        // under the copies' lock, and opens no new copy of a task's file once it starts.
        lock_map(&self.plan.active).insert((sub, partition));
        let stores = StoreEnv {
            logged: true,
            strict: self.transactional(),
            cache_bytes: self.plan.config.state_cache_max_bytes,
            ..Default::default()
        };
        let names = self.plan.stores[sub].clone();
        let mut locals = Vec::new();
        if !names.is_empty() {
            self.board.set_phase(self.index, Phase::Restoring);
            let restorer = match self.restorer.as_mut() {
                Some(r) => r,
                None => self
                    .restorer
                    .insert(restorer(&self.plan, self.index).await?),
            };
            let mut total = RestoreStats::default();
            for store in &names {
                let tp = TopicPartition::new(
                    changelog_topic(&self.plan.config.application_id, store),
                    partition,
                );
                let standby = lock_map(&self.plan.standbys).remove(&tp);
                if on_disk(&self.plan, store) {
                    let dir = self
                        .plan
                        .config
                        .application_state_dir()
                        .join(format!("{store}-{partition}"));
                    let settings = (
                        self.plan.config.state_cache_max_bytes,
                        self.plan.config.guarantee == Guarantee::ExactlyOnce,
                    );
                    let local =
                        restore_local(restorer, &tp, &dir, settings, standby, &mut total).await?;
                    locals.push(local.clone());
                    stores.locals.borrow_mut().insert(store.clone(), local);
                    continue;
                }
                let (restored, stats) = restorer.restore(&tp, standby).await?;
                total.records += stats.records;
                total.standby_records += stats.standby_records;
                total.bytes += stats.bytes;
                total.keys += stats.keys;
                total.duration += stats.duration;
                stores.restored.borrow_mut().insert(store.clone(), restored);
            }
            self.board.set_phase(self.index, Phase::Running);
            tracing::info!(
                task = %id,
                records = total.records,
                bytes = total.bytes,
                keys = total.keys,
                seconds = total.duration.as_secs_f64(),
                standby_records = total.standby_records,
                "task state restored"
            );
            restore = Some(total);
        }
        tracing::info!(task = %id, "task started");
        let env = self.task_env(sub, partition, stores);
        let chain = self.plan.factory(sub).instantiate(&env);
        self.tasks.insert(
            (sub, partition),
            Task {
                id,
                chain,
                restore,
                locals,
            },
        );
        Ok(())
    }

    /// `num.standby.replicas`: keeps this worker's standby copies of the changelogs of the
    /// tasks with state the group's assignor gave it standbys of (placed on another process
    /// than the one running each task) up to date, unless a worker of this process runs the
    /// task by now. Called every 200 ms; reads what has arrived without waiting.
    async fn maintain_standbys(&mut self) -> Result<()> {
        let plan = self.plan.clone();
        let active = lock_map(&plan.active).clone();
        let numbers = self.consumer.standby_partitions();
        // Each changelog to keep a copy of, and the task's store directory when the store is
        // kept on disk (the copy goes into that file then).
        let mut files = BTreeMap::new();
        for (sub, stores) in plan.stores.iter().enumerate() {
            for &partition in &numbers {
                if partition >= plan.partitions[sub] || active.contains(&(sub, partition)) {
                    continue;
                }
                for store in stores {
                    let dir = on_disk(&plan, store).then(|| {
                        plan.config
                            .application_state_dir()
                            .join(format!("{store}-{partition}"))
                    });
                    files.insert(
                        TopicPartition::new(
                            changelog_topic(&plan.config.application_id, store),
                            partition,
                        ),
                        (sub, dir),
                    );
                }
            }
        }
        let desired: BTreeSet<TopicPartition> = files.keys().cloned().collect();
        if desired != self.standby_assigned {
            tracing::info!(
                worker = self.index,
                partitions = ?numbers,
                changelogs = desired.len(),
                "standby copies assigned"
            );
        }
        if self.standby_consumer.is_none() && !desired.is_empty() {
            self.standby_consumer = Some(standby_consumer(&plan, self.index).await?);
        }
        let Some(consumer) = self.standby_consumer.as_mut() else {
            return Ok(());
        };
        if desired != self.standby_assigned {
            consumer.assign(desired.iter().cloned())?;
            for (tp, (sub, dir)) in &files {
                if self.standby_assigned.contains(tp) {
                    continue;
                }
                // Started again: from the beginning (a copy left from before may have missed
                // records while a task ran here), or, in a store file, from the checkpoint the
                // file has (a task that ran here and stopped cleanly, a copy closed before).
                let bounds = match dir {
                    Some(dir) if read_checkpoint(dir).is_some() => {
                        let restorer = match self.restorer.as_mut() {
                            Some(r) => r,
                            None => self.restorer.insert(restorer(&plan, self.index).await?),
                        };
                        Some(restorer.bounds(tp).await?)
                    }
                    _ => None,
                };
                let mut standbys = lock_map(&plan.standbys);
                if lock_map(&plan.active).contains(&(*sub, tp.partition)) {
                    // Its task started here meanwhile: the state (and the file) are the task's.
                    continue;
                }
                let mut standby = Standby::default();
                if let Some(dir) = dir {
                    let valid =
                        |c: i64| bounds.is_some_and(|(first, end)| (first..=end).contains(&c));
                    // A file still held by a task of this process that is closing: a copy in
                    // memory this time.
                    if let Some((file, from)) =
                        FileCopy::open(dir, plan.config.state_cache_max_bytes, valid)?
                    {
                        tracing::info!(changelog = %tp, from, dir = %dir.display(), "standby copy kept in the store file");
                        standby = Standby::in_file(file, from);
                    }
                }
                if standby.next > 0 {
                    consumer.seek(tp, standby.next)?;
                } else {
                    consumer.seek_to_beginning(std::slice::from_ref(tp))?;
                }
                standbys.insert(tp.clone(), standby);
            }
            let mut standbys = lock_map(&plan.standbys);
            for tp in self.standby_assigned.difference(&desired) {
                if !active.iter().any(|&(_, p)| p == tp.partition) {
                    if let Some(standby) = standbys.remove(tp) {
                        close_standby(tp, standby);
                    }
                }
            }
            self.standby_assigned = desired;
        }
        if self.standby_assigned.is_empty() {
            return Ok(());
        }
        let mut records = consumer.poll(Duration::ZERO).await?;
        if records.is_empty() {
            return Ok(());
        }
        let mut standbys = lock_map(&plan.standbys);
        for part in records.partitions_mut() {
            let tp = part.topic_partition().clone();
            // Gone when a task took it over meanwhile: its records are the task's now.
            let Some(standby) = standbys.get_mut(&tp) else {
                continue;
            };
            let mut applied = Ok(());
            for record in part.iter() {
                let Ok(record) = record else { break };
                if let Some(key) = record.key() {
                    applied = standby.apply(key, record.value(), record.offset());
                    if applied.is_err() {
                        break;
                    }
                }
            }
            standby.next = standby.next.max(part.next_offset());
            if let Err(e) = applied.and_then(|()| standby.flush()) {
                // A copy that cannot be written is dropped: the task restores in full.
                tracing::warn!(changelog = %tp, error = %e, "standby copy dropped");
                standbys.remove(&tp);
            }
        }
        Ok(())
    }

    /// Starts (restoring their state) the tasks with state stores of every assigned
    /// partition, as Kafka Streams does on assignment: a task whose input is quiet still
    /// gets its state back, ready for a takeover and for processing-time windows.
    async fn start_stateful_tasks(&mut self) -> Result<()> {
        let assigned = self.consumer.assignment();
        for tp in &assigned {
            if self.plan.tables.contains(&tp.topic) {
                continue;
            }
            let Some(sub) = self.plan.sub_of(&tp.topic) else {
                continue;
            };
            if !self.plan.stores[sub].is_empty() && !self.tasks.contains_key(&(sub, tp.partition)) {
                self.start_task(sub, tp.partition).await?;
            }
        }
        Ok(())
    }

    /// Bounded runs: gives the final watermark to every task whose source partitions are all
    /// processed up to their end (starting tasks of empty partitions for it), and marks empty
    /// partitions as done for the commit.
    async fn end_tasks(&mut self, now: i64) -> Result<()> {
        let assigned = self.consumer.assignment();
        // A partition whose committed offset is its end already fetches nothing: its
        // position says it is done (its task may still hold restored windows to close).
        let positions = self.consumer.positions();
        let mut due: BTreeMap<(usize, i32), bool> = BTreeMap::new();
        for tp in &assigned {
            let Some(sub) = self.plan.sub_of(&tp.topic) else {
                continue;
            };
            if self.plan.upstream[sub].is_some() || self.ended.contains(&(sub, tp.partition)) {
                continue;
            }
            let done = match (self.plan.ends.get(tp), self.plan.empty.get(tp)) {
                (Some(&end), _) => {
                    self.lag.get(tp).is_some_and(|&(pos, _)| pos >= end)
                        || positions.get(tp).is_some_and(|o| o.offset >= end)
                }
                (None, Some(_)) => true,
                // A partition created after the start: nothing of it belongs to the run.
                (None, None) => true,
            };
            let entry = due.entry((sub, tp.partition)).or_insert(true);
            *entry &= done;
        }
        for ((sub, partition), done) in due {
            if !done {
                continue;
            }
            if !self.tasks.contains_key(&(sub, partition)) {
                self.start_task(sub, partition).await?;
            }
            let task = self.tasks.get_mut(&(sub, partition)).expect("started");
            task.chain.end_of_input(now).await?;
            self.ended.insert((sub, partition));
            let mut p = lock(&self.progress);
            for tp in assigned
                .iter()
                .filter(|tp| tp.partition == partition && self.plan.sub_of(&tp.topic) == Some(sub))
            {
                if let Some(&end) = self.plan.empty.get(tp) {
                    p.processed.insert(tp.clone(), OffsetAndMetadata::new(end));
                }
            }
            drop(p);
            // What the final watermark emitted is flushed by the next commit.
            self.dirty = true;
        }
        Ok(())
    }

    /// Bounded runs: whether every task of an assigned source partition was given the final
    /// watermark.
    fn all_ended(&self) -> bool {
        self.consumer.assignment().iter().all(|tp| {
            self.plan.tables.contains(&tp.topic)
                || self.plan.sub_of(&tp.topic).is_none_or(|sub| {
                    self.plan.upstream[sub].is_some() || self.ended.contains(&(sub, tp.partition))
                })
        })
    }

    /// Whether every assigned partition with a known end (a bounded run's source) is
    /// processed up to it.
    fn at_end(&self) -> bool {
        let assigned = self.consumer.assignment();
        !assigned.is_empty()
            && assigned.iter().all(|tp| match self.plan.ends.get(tp) {
                Some(&end) => self.lag.get(tp).is_some_and(|&(pos, _)| pos >= end),
                None => true,
            })
    }

    /// Pauses fetching while the producer holds half of `buffer.memory` or more (outputs are
    /// not leaving as fast as inputs arrive), and resumes once it is down to a quarter. Sends
    /// also wait for memory when it is full, so a slow sink never grows a queue: the worker
    /// holds at most the consumer's prefetch and the producer's buffer.
    fn backpressure(&mut self) {
        let buffered = self.producer.buffered_bytes();
        let limit = self.producer.config().buffer_memory;
        if !self.paused && buffered.saturating_mul(2) >= limit {
            let assigned = self.consumer.assignment();
            self.consumer.pause(&assigned);
            self.paused = true;
            self.pauses += 1;
            tracing::debug!(buffered, "outputs backed up: fetching paused");
        } else if self.paused && buffered.saturating_mul(4) <= limit && self.bootstrap.is_empty() {
            let paused = self.consumer.paused();
            self.consumer.resume(&paused);
            self.paused = false;
            tracing::debug!(buffered, "fetching resumed");
        }
    }

    /// Drops the tasks whose partitions moved away; surfaces a failure the listener found.
    /// Under exactly-once, a revocation while tasks run aborts the transaction and rewinds
    /// every partition (returns true).
    async fn after_rebalance(&mut self) -> Result<bool> {
        let revoked = {
            let mut p = lock(&self.progress);
            if let Some(e) = p.failed.take() {
                return Err(e);
            }
            std::mem::take(&mut p.revoked)
        };
        if revoked.is_empty() {
            return Ok(false);
        }
        if self.transactional() && !self.tasks.is_empty() {
            tracing::info!(
                partitions = revoked.len(),
                "partitions revoked with a transaction open: aborting it"
            );
            self.abort_and_rewind().await?;
            return Ok(true);
        }
        let assigned = self.consumer.assignment();
        for tp in &revoked {
            self.lag.remove(tp);
            self.tables_seen.remove(tp);
            self.bootstrap.remove(tp);
            let Some(sub) = self.plan.sub_of(&tp.topic) else {
                continue;
            };
            // A task stays while any partition of its number is still assigned (co-read topics).
            let still = assigned
                .iter()
                .any(|a| a.partition == tp.partition && self.plan.sub_of(&a.topic) == Some(sub));
            if !still && let Some(task) = self.tasks.remove(&(sub, tp.partition)) {
                lock_map(&self.plan.active).remove(&(sub, tp.partition));
                self.ended.remove(&(sub, tp.partition));
                tracing::info!(task = %task.id, "task moved away");
                self.dropped_records += task.chain.counters().records_in;
            }
        }
        Ok(false)
    }

    fn transactional(&self) -> bool {
        self.plan.config.guarantee == Guarantee::ExactlyOnce
    }

    /// Exactly-once: aborts the open transaction (its outputs, changelog writes and offsets
    /// never become visible), drops every task (their state is ahead of the last committed
    /// transaction) and moves every assigned partition back to its committed offset. Tasks
    /// start again, restoring their state, as records arrive.
    async fn abort_and_rewind(&mut self) -> Result<()> {
        let renew = match self.producer.abort_transaction().await {
            Ok(()) => false,
            // The coordinator aborted it already (the worker spent longer than
            // `transaction.timeout.ms` in a rebalance, say) and bumped the epoch: a new
            // producer with the same transactional id carries on.
            Err(ProduceError::TransactionTimedOut(e)) => {
                tracing::warn!(error = %e, "the transaction timed out: renewing the producer");
                true
            }
            Err(e) => return Err(Error::produce("(abort_transaction)", e)),
        };
        self.aborts += 1;
        for (key, task) in self.tasks.drain() {
            lock_map(&self.plan.active).remove(&key);
            self.dropped_records += task.chain.counters().records_in;
        }
        self.ended.clear();
        self.tables_seen.clear();
        self.bootstrap.clear();
        lock(&self.progress).processed.clear();
        self.dirty = false;
        let assigned = self.consumer.assignment();
        let committed = self.consumer.committed(&assigned).await?;
        for tp in &assigned {
            match committed.get(tp) {
                Some(o) => self.consumer.seek(tp, o.offset)?,
                None => self.consumer.seek_to_beginning(std::slice::from_ref(tp))?,
            }
        }
        if renew {
            let old =
                std::mem::replace(&mut self.producer, producer(&self.plan, self.index).await?);
            let _ = old.close(Duration::ZERO).await;
            if let Output::Kafka(_, latency, board) = &self.output {
                self.output = Output::Kafka(self.producer.clone(), latency.clone(), board.clone());
            }
        } else {
            self.producer
                .begin_transaction()
                .await
                .map_err(|e| Error::produce("(begin_transaction)", e))?;
        }
        Ok(())
    }

    /// At-least-once: flushes the producer, then commits what was processed before the
    /// flush. Exactly-once: commits the transaction with the processed offsets in it; a
    /// transaction that cannot commit is aborted and every partition rewound.
    async fn commit(&mut self) -> Result<()> {
        for task in self.tasks.values_mut() {
            task.chain.checkpoint().await?;
        }
        if self.transactional() {
            return self.commit_transaction().await;
        }
        let snapshot: BTreeMap<TopicPartition, OffsetAndMetadata> =
            lock(&self.progress).processed.clone();
        self.producer
            .flush()
            .await
            .map_err(|e| Error::produce("(flush)", e))?;
        let failures = self.producer.failed_records();
        {
            let p = lock(&self.progress);
            if failures > p.failures_seen {
                return Err(undelivered(&self.producer, failures - p.failures_seen));
            }
        }
        let owned = self.consumer.assignment();
        let offsets: BTreeMap<_, _> = snapshot
            .into_iter()
            .filter(|(tp, _)| owned.contains(tp))
            .collect();
        if offsets.is_empty() {
            self.dirty = false;
            self.write_checkpoints();
            return Ok(());
        }
        self.consumer.commit_offsets_sync(offsets.clone()).await?;
        let mut p = lock(&self.progress);
        for (tp, o) in offsets {
            if p.processed.get(&tp) == Some(&o) {
                p.processed.remove(&tp);
            }
        }
        self.dirty = !p.processed.is_empty();
        self.commits += 1;
        drop(p);
        self.write_checkpoints();
        Ok(())
    }

    /// After a commit that the on-disk stores' contents go with: records in each store's
    /// checkpoint the changelog offset its file is complete up to (under exactly-once only
    /// at a clean stop). A checkpoint that cannot be written means a full restore next time.
    fn write_checkpoints(&self) {
        for local in self.tasks.values().flat_map(|t| &t.locals) {
            if let Err(e) = local.write_checkpoint() {
                tracing::warn!(error = %e, "the state checkpoint was not written");
            }
        }
    }

    async fn commit_transaction(&mut self) -> Result<()> {
        let owned = self.consumer.assignment();
        let offsets: Vec<(TopicPartition, i64)> = lock(&self.progress)
            .processed
            .iter()
            .filter(|(tp, _)| owned.contains(tp))
            .map(|(tp, o)| (tp.clone(), o.offset))
            .collect();
        let group = self
            .consumer
            .group_metadata()
            .expect("the worker's consumer has a group");
        let result = async {
            if !offsets.is_empty() {
                self.producer
                    .send_offsets_to_transaction(&offsets, &group)
                    .await?;
            }
            self.producer.commit_transaction().await
        }
        .await;
        match result {
            Ok(()) => {
                lock(&self.progress).processed.clear();
                self.dirty = false;
                self.commits += 1;
                self.producer
                    .begin_transaction()
                    .await
                    .map_err(|e| Error::produce("(begin_transaction)", e))
            }
            Err(e @ ProduceError::Fenced(_)) => {
                // Another worker owns this transactional id now: this worker stops; its
                // partitions resume elsewhere from the last committed transaction.
                Err(Error::produce("(commit_transaction)", e))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the transaction could not commit: aborting it");
                self.abort_and_rewind().await
            }
        }
    }

    fn records_in(&self) -> u64 {
        self.dropped_records
            + self
                .tasks
                .values()
                .map(|t| t.chain.counters().records_in)
                .sum::<u64>()
    }

    fn publish(&mut self) {
        self.last_publish = Instant::now();
        let wall = self.started.elapsed().as_secs_f64();
        let mut tasks: Vec<TaskMetrics> = self
            .tasks
            .values()
            .map(|t| {
                let mut operators = Vec::new();
                t.chain.operator_metrics(&mut operators);
                TaskMetrics {
                    task: t.id.clone(),
                    worker: self.index,
                    counters: t.chain.counters().clone(),
                    operators,
                    watermark: t.chain.watermark(),
                    restore: t.restore.clone(),
                }
            })
            .collect();
        tasks.sort_by(|a, b| a.task.cmp(&b.task));
        let lag = self
            .lag
            .iter()
            .map(|(tp, &(position, hw))| PartitionLag {
                tp: tp.clone(),
                position,
                high_watermark: hw,
                lag: (hw - position).max(0),
            })
            .collect();
        let rebalances = lock(&self.progress).rebalances;
        self.board.publish(
            self.index,
            WorkerSnapshot {
                worker: WorkerMetrics {
                    worker: self.index,
                    busy_ratio: if wall > 0.0 {
                        (self.busy.as_secs_f64() / wall).min(1.0)
                    } else {
                        0.0
                    },
                    commits: self.commits,
                    rebalances,
                    backpressure_pauses: self.pauses,
                    commit_seconds: self.commit_seconds.clone(),
                    // The board's live phase replaces it in snapshots.
                    phase: Phase::default(),
                },
                tasks,
                lag,
                records_in_total: self.records_in(),
                latency: self
                    .output
                    .latency()
                    .map(LatencySampler::snapshot)
                    .unwrap_or_default(),
            },
        );
    }

    /// Commits what is done (on a clean stop) and leaves the group: leaving revokes every
    /// partition, so the listener flushes and commits once more (at-least-once; under
    /// exactly-once the last transaction is committed first).
    async fn shutdown(self, clean: bool) -> Result<()> {
        let mut this = self;
        if clean && (this.dirty || !this.tasks.is_empty()) {
            // Checkpoints the tasks' state with the last offsets.
            this.commit().await?;
            if this.transactional() {
                this.write_checkpoints();
            }
        }
        if this.transactional() {
            // What is open holds nothing to keep (a clean stop just committed it).
            let _ = this.producer.abort_transaction().await;
        }
        if clean {
            // Copies in store files get their checkpoints: a restart reads on from there.
            let mut standbys = lock_map(&this.plan.standbys);
            for tp in &this.standby_assigned {
                if let Some(standby) = standbys.remove(tp) {
                    close_standby(tp, standby);
                }
            }
        }
        let WorkerLoop {
            consumer,
            producer,
            progress,
            ..
        } = this;
        if !clean {
            // Nothing more is committed: what was processed since the last commit is
            // processed again by the partitions' next owner.
            lock(&progress).processed.clear();
        }
        let closed = consumer.close().await;
        let _ = producer.close(Duration::from_secs(10)).await;
        if let Some(e) = lock(&progress).failed.take() {
            return Err(e);
        }
        closed.map_err(Error::from)
    }
}
