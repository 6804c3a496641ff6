//! Starting a pipeline: settings, internal topics, worker threads, bounded runs, shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flumen_client::admin::{ConfigResource, NewTopic, OffsetSpec};

use crate::changelog::changelog_topic;
use flumen_client::config::Properties;
use flumen_client::consumer::{ConsumerConfig, IsolationLevel};
use flumen_client::producer::ProducerConfig;
use flumen_client::{Admin, ClientConfig, TopicPartition};

use crate::error::{Error, Result};
use crate::metrics::{MetricsBoard, RuntimeMetrics};
use crate::stream::{Pipeline, SourceTopics};
use crate::task::{TaskFactory, repartition_topic};
use crate::worker::{self, Subscription};

/// How a pipeline runs: where Kafka is, its name, how many workers, client settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub(crate) bootstrap: String,
    pub(crate) application_id: String,
    pub(crate) workers: usize,
    pub(crate) commit_interval: Duration,
    /// `commit_interval` was chosen (else it follows the guarantee).
    commit_interval_set: bool,
    pub(crate) guarantee: Guarantee,
    /// `group.instance.id` base: static membership, and a stable transactional id.
    pub(crate) instance_id: Option<String>,
    pub(crate) pin_workers: bool,
    /// How long a stop may take (`shutdown.timeout.ms`).
    pub(crate) shutdown_timeout: Duration,
    /// Standby copies of other tasks' state (`num.standby.replicas`; 0 or 1).
    pub(crate) standby_replicas: usize,
    /// Where keyed state lives (`state.store`).
    pub(crate) state_store: StateStore,
    /// The directory of on-disk stores (`state.dir`; default `<temp dir>/flumen-state`).
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// The cache budget of each on-disk store of each task (`state.cache.max.bytes`).
    pub(crate) state_cache_max_bytes: usize,
    /// Where the monitoring endpoint listens (`metrics.addr`), if anywhere.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// Topics whose last records the board keeps for the page (`monitor.topics`).
    pub(crate) monitor_topics: Vec<String>,
    pub(crate) properties: BTreeMap<String, String>,
}

impl RuntimeConfig {
    /// A pipeline named `application_id` (its consumer group, and the prefix of its internal
    /// topics) on the cluster at `bootstrap`; one worker per core; commits every 5 s.
    pub fn new(bootstrap: impl Into<String>, application_id: impl Into<String>) -> Self {
        RuntimeConfig {
            bootstrap: bootstrap.into(),
            application_id: application_id.into(),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            commit_interval: Duration::from_secs(5),
            commit_interval_set: false,
            guarantee: Guarantee::AtLeastOnce,
            instance_id: None,
            pin_workers: true,
            shutdown_timeout: Duration::from_secs(30),
            standby_replicas: 0,
            state_store: StateStore::Memory,
            state_dir: None,
            state_cache_max_bytes: 10 << 20,
            metrics_addr: None,
            monitor_topics: Vec::new(),
            properties: BTreeMap::new(),
        }
    }

    /// The number of worker threads in this process (`num.workers`).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// How often input offsets are committed (`commit.interval.ms`; default 5 s, or 100 ms
    /// under [`Guarantee::ExactlyOnce`], where it is also how long results wait before
    /// `read_committed` readers see them).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self.commit_interval_set = true;
        self
    }

    /// What the outputs promise when a process fails (`processing.guarantee`; default
    /// [`Guarantee::AtLeastOnce`]).
    pub fn guarantee(mut self, guarantee: Guarantee) -> Self {
        self.guarantee = guarantee;
        if !self.commit_interval_set {
            self.commit_interval = guarantee.default_commit_interval();
        }
        self
    }

    /// How long a stop (SIGINT, SIGTERM, [`ShutdownHandle`]) may take to drain, commit (under
    /// exactly-once: the open transaction) and leave the group (`shutdown.timeout.ms`,
    /// default 30 s). Past it the run returns [`Error::ShutdownTimeout`] without waiting for
    /// the workers (their threads are left to the process's exit); what they had not
    /// committed is processed again by the partitions' next owner.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many standby copies of each task's state the application keeps
    /// (`num.standby.replicas`, default 0): warm copies read from the task's changelogs as
    /// they are written, each on another process than the one running the task, so that
    /// taking the task over reads only the changelog's tail. The group's co-partitioned
    /// assignor places them (never two on one process, spread evenly, a copy staying where it
    /// is while it can), as Kafka Streams' assignor does; with fewer other processes than
    /// `n`, each other process keeps one.
    pub fn standby_replicas(mut self, n: usize) -> Self {
        self.standby_replicas = n;
        self
    }

    /// Where the state of keyed functions (`process_keyed`), windows and two-stream joins
    /// lives (`state.store`, default [`StateStore::Memory`]). [`StateStore::Disk`] keeps it in
    /// one file per task and store under [`RuntimeConfig::state_dir`], with a cache of decoded
    /// states in front ([`RuntimeConfig::state_cache_max_bytes`]), and a restart on the same
    /// machine reads only the changelog's tail.
    pub fn state_store(mut self, store: StateStore) -> Self {
        self.state_store = store;
        self
    }

    /// The directory of on-disk stores (`state.dir`; default `flumen-state` in the system's
    /// temporary directory): a task's store is in `<dir>/<application.id>/<store>-<partition>/`.
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// About how many bytes of decoded states each on-disk store of each task caches
    /// (`state.cache.max.bytes`, default 10 MiB; estimated as the state-size metric is).
    /// The file's own page cache takes up to as much again.
    pub fn state_cache_max_bytes(mut self, bytes: usize) -> Self {
        self.state_cache_max_bytes = bytes;
        self
    }

    /// The directory a task's on-disk stores of this application go under.
    pub(crate) fn application_state_dir(&self) -> std::path::PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("flumen-state"))
            .join(&self.application_id)
    }

    /// This process's stable name among the application's processes (`instance.id`): worker
    /// `i` joins the group as static member `<name>-<i>` (`group.instance.id`, KIP-345: a
    /// restart within `session.timeout.ms` moves no task), and under exactly-once its
    /// transactional id is `<application.id>-<name>-<i>`, so a restarted process fences its
    /// previous incarnation at once instead of waiting for its transaction to time out.
    /// Without it, each start picks a fresh random name.
    pub fn instance_id(mut self, name: impl Into<String>) -> Self {
        self.instance_id = Some(name.into());
        self
    }

    /// Serves `/metrics` (Prometheus text format), `/health` and a live page at `addr`
    /// (`metrics.addr`; off by default).
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Output topics whose last records (up to [`RECENT_RECORDS`](crate::RECENT_RECORDS))
    /// the monitoring endpoint shows: at `/recent`, in [`RuntimeMetrics::recent`](crate::RuntimeMetrics)
    /// and on the live page, as they are written (`monitor.topics`, comma-separated; none by
    /// default). Meant for rare records, alerts say: each one is copied under a lock.
    pub fn monitor_topics<I: IntoIterator<Item = S>, S: Into<String>>(mut self, topics: I) -> Self {
        self.monitor_topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Whether each worker thread is pinned to one core (`pin.workers`, default true: worker
    /// `i` on core `i mod cores`). Turn it off where the cores are shared with other busy
    /// processes (a broker on the same machine, say): a pinned thread cannot move away from them.
    pub fn pin_workers(mut self, pin: bool) -> Self {
        self.pin_workers = pin;
        self
    }

    /// A Kafka client property for both the consumers and the producers (`security.protocol`,
    /// `sasl.*`, ...); `consumer.KEY` or `producer.KEY` sets it for one side only. The
    /// runtime's own keys are `num.workers`, `commit.interval.ms`, `processing.guarantee`,
    /// `instance.id`, `shutdown.timeout.ms`, `num.standby.replicas`, `pin.workers`,
    /// `state.store`, `state.dir`, `state.cache.max.bytes` and `metrics.addr`. Unknown keys and invalid values are
    /// an error when the runtime starts.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
}

/// What a run's outputs promise when a process, a broker or the network fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Guarantee {
    /// Every input's results reach the outputs at least once: outputs are flushed before the
    /// input offsets are committed; a failure replays what followed the last commit.
    #[default]
    AtLeastOnce,
    /// Every input's results reach the outputs exactly once for `read_committed` readers:
    /// each worker writes its outputs, its state changelogs and its input offsets in one Kafka
    /// transaction per commit interval (KIP-98, with the group generation fencing of
    /// KIP-447). A failure aborts the open transaction; the next owner resumes from the last
    /// committed one.
    ExactlyOnce,
}

impl Guarantee {
    fn default_commit_interval(self) -> Duration {
        match self {
            Guarantee::AtLeastOnce => Duration::from_secs(5),
            Guarantee::ExactlyOnce => Duration::from_millis(100),
        }
    }

    /// The name used by `processing.guarantee` (`at_least_once`, `exactly_once_v2`).
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once_v2",
        }
    }
}

/// Where the state of keyed functions, windows and joins lives (`state.store`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateStore {
    /// In memory (the default): restored from the changelog in full at each task start.
    #[default]
    Memory,
    /// On disk, in an embedded key-value file per task and store, with a bounded cache in
    /// front; a restart on the same machine restores only the changelog's tail.
    Disk,
}

impl StateStore {
    /// The name used by `state.store` (`memory`, `disk`).
    pub fn name(self) -> &'static str {
        match self {
            StateStore::Memory => "memory",
            StateStore::Disk => "disk",
        }
    }
}

impl std::str::FromStr for StateStore {
    type Err = String;

    /// `memory` or `disk`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "memory" => Ok(StateStore::Memory),
            "disk" => Ok(StateStore::Disk),
            _ => Err(format!("expected memory or disk, got {s:?}")),
        }
    }
}

impl std::str::FromStr for Guarantee {
    type Err = String;

    /// `at_least_once`, or `exactly_once` / `exactly_once_v2` (Kafka Streams' names).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "at_least_once" => Ok(Guarantee::AtLeastOnce),
            "exactly_once" | "exactly_once_v2" => Ok(Guarantee::ExactlyOnce),
            _ => Err(format!(
                "expected at_least_once or exactly_once (exactly_once_v2), got {s:?}"
            )),
        }
    }
}

/// A pipeline with its settings resolved, shared by the workers.
pub(crate) struct Plan {
    pub(crate) config: RuntimeConfig,
    pub(crate) bounded: bool,
    consumer_props: Vec<(String, String)>,
    producer_props: Vec<(String, String)>,
    /// Source topic -> sub-topology, for the topics named (and repartition topics).
    by_topic: BTreeMap<String, usize>,
    /// Sub-topologies reading a pattern.
    patterns: Vec<(regex::Regex, usize)>,
    factories: Vec<Arc<dyn TaskFactory>>,
    outputs: BTreeSet<String>,
    subscription_pattern: Option<String>,
    /// Bounded runs: the end offset of every non-empty source partition at the start.
    pub(crate) ends: BTreeMap<TopicPartition, i64>,
    /// Bounded runs: the source partitions that were empty at the start, with their end
    /// offset (committed when their task ends, so that the run sees every task ended).
    pub(crate) empty: BTreeMap<TopicPartition, i64>,
    /// Per sub-topology: its tasks' partition count (the repartition topic it writes has as
    /// many), and the sub-topology writing its input when it reads a repartition topic.
    pub(crate) partitions: Vec<i32>,
    pub(crate) upstream: Vec<Option<usize>>,
    /// Signalled by a worker after each commit, so a bounded run notices its end at once.
    pub(crate) committed: Arc<tokio::sync::Notify>,
    /// Workers of this process that have joined the group: none processes a record before
    /// all have, so the rebalances of the start move no task that has state.
    pub(crate) joined: std::sync::atomic::AtomicUsize,
    /// This process's name among the application's processes: `instance.id`, else random.
    pub(crate) process_name: String,
    /// Bounded runs, per worker of this process: every source task it runs has been given
    /// the final watermark and what that emitted is committed. The run ends only then, so
    /// windows restored from changelogs over inputs already read to their ends still close.
    pub(crate) workers_ended: Vec<std::sync::atomic::AtomicBool>,
    /// Tasks with state that a worker of this process runs (standbys are kept of the others).
    pub(crate) active: std::sync::Mutex<BTreeSet<(usize, i32)>>,
    /// The process's standby copies of changelog partitions (`num.standby.replicas`).
    pub(crate) standbys: std::sync::Mutex<BTreeMap<TopicPartition, crate::changelog::Standby>>,
    /// Per sub-topology: its state stores (each logged to a changelog topic).
    pub(crate) stores: Vec<Vec<String>>,
    /// Table topics: read from the beginning whenever a task starts.
    pub(crate) tables: BTreeSet<String>,
    /// Their partitions' end offsets at the start (non-empty partitions only).
    pub(crate) table_ends: BTreeMap<TopicPartition, i64>,
}

impl Plan {
    pub(crate) fn consumer_props(&self) -> impl Iterator<Item = (&str, &str)> {
        self.consumer_props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn producer_props(&self) -> impl Iterator<Item = (&str, &str)> {
        self.producer_props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn sub_of(&self, topic: &str) -> Option<usize> {
        self.by_topic.get(topic).copied().or_else(|| {
            self.patterns
                .iter()
                .find(|(re, _)| re.is_match(topic))
                .map(|(_, s)| *s)
        })
    }

    pub(crate) fn factory(&self, sub: usize) -> &Arc<dyn TaskFactory> {
        &self.factories[sub]
    }

    pub(crate) fn output_topics(&self) -> Vec<String> {
        self.outputs.iter().cloned().collect()
    }

    pub(crate) fn subscription(&self) -> Subscription {
        match &self.subscription_pattern {
            Some(p) => Subscription::Pattern(p.clone()),
            None => Subscription::Topics(self.by_topic.keys().cloned().collect()),
        }
    }
}

/// Splits the properties into the consumer's and the producer's, and rejects a key neither
/// knows.
/// Key-value pairs of client properties.
type PropertyList = Vec<(String, String)>;

fn split_properties(props: &BTreeMap<String, String>) -> Result<(PropertyList, PropertyList)> {
    let mut consumer = Vec::new();
    let mut producer = Vec::new();
    for (key, value) in props {
        if let Some(k) = key.strip_prefix("consumer.") {
            consumer.push((k.to_owned(), value.clone()));
        } else if let Some(k) = key.strip_prefix("producer.") {
            producer.push((k.to_owned(), value.clone()));
        } else {
            consumer.push((key.clone(), value.clone()));
            producer.push((key.clone(), value.clone()));
        }
    }
    // Which side takes each key: each config takes its own and leaves the rest.
    let mut c: Properties = consumer.iter().cloned().collect();
    c.set("bootstrap.servers", "localhost:1");
    ConsumerConfig::take_from(&mut c)?;
    let mut p: Properties = producer.iter().cloned().collect();
    p.set("bootstrap.servers", "localhost:1");
    ProducerConfig::take_from(&mut p)?;
    for key in props.keys() {
        let unknown = if let Some(k) = key.strip_prefix("consumer.") {
            c.get(k).is_some()
        } else if let Some(k) = key.strip_prefix("producer.") {
            p.get(k).is_some()
        } else {
            c.get(key).is_some() && p.get(key).is_some()
        };
        if unknown {
            return Err(Error::Config {
                key: key.clone(),
                message: "not a Kafka client property the runtime knows".to_owned(),
            });
        }
    }
    consumer.retain(|(k, _)| c.get(k).is_none());
    producer.retain(|(k, _)| p.get(k).is_none());
    Ok((consumer, producer))
}

/// Stops a running pipeline from another thread (or a signal handler's task).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    stop: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Asks every worker to commit what it has done, leave the group and stop.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What a finished run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    records_in: u64,
    metrics: RuntimeMetrics,
}

impl RunSummary {
    /// Records read by this process's tasks.
    pub fn records_in(&self) -> u64 {
        self.records_in
    }

    /// The last metrics of every worker.
    pub fn metrics(&self) -> &RuntimeMetrics {
        &self.metrics
    }
}

/// Runs a [`Pipeline`] on worker threads.
pub struct Runtime {
    config: RuntimeConfig,
    pipeline: Pipeline,
    stop: Arc<AtomicBool>,
    board: Arc<MetricsBoard>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime for `pipeline` with `config`.
    pub fn new(mut config: RuntimeConfig, pipeline: Pipeline) -> Self {
        if let Some(n) = config
            .properties
            .remove("num.workers")
            .and_then(|v| v.parse().ok())
        {
            config.workers = usize::max(n, 1);
        }
        if let Some(ms) = config
            .properties
            .remove("commit.interval.ms")
            .and_then(|v| v.parse().ok())
        {
            config = config.commit_interval(Duration::from_millis(ms));
        }
        if let Some(pin) = config
            .properties
            .remove("pin.workers")
            .and_then(|v| v.parse().ok())
        {
            config.pin_workers = pin;
        }
        if let Some(addr) = config
            .properties
            .remove("metrics.addr")
            .and_then(|v| v.parse().ok())
        {
            config.metrics_addr = Some(addr);
        }
        if let Some(topics) = config.properties.remove("monitor.topics") {
            let topics: Vec<&str> = topics
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            config = config.monitor_topics(topics);
        }
        let board = MetricsBoard::new(config.workers, config.monitor_topics.clone());
        Runtime {
            config,
            pipeline,
            stop: Arc::new(AtomicBool::new(false)),
            board,
        }
    }

    /// A handle that stops the run.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: self.stop.clone(),
        }
    }

    /// Reads the current metrics while it runs (from any thread).
    pub fn metrics_reader(&self) -> impl Fn() -> RuntimeMetrics + Send + Sync + 'static {
        let board = self.board.clone();
        move || board.snapshot()
    }

    /// Runs until SIGINT or SIGTERM (or a [`ShutdownHandle`]): then every worker commits what
    /// it has done and leaves the group. Blocks the calling thread.
    pub fn run(self) -> Result<RunSummary> {
        self.start(false)
    }

    /// Runs bounded: processes every input partition up to the end offset it had at the start
    /// (and every repartition topic up to what the stages before it wrote), commits, and
    /// returns. Several processes may share a bounded run; each returns once the group has
    /// committed everything.
    pub fn run_until_end(self) -> Result<RunSummary> {
        self.start(true)
    }

    fn start(self, bounded: bool) -> Result<RunSummary> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                context: "starting the runtime's control thread".to_owned(),
                source,
            })?;
        rt.block_on(self.start_async(bounded))
    }

    async fn start_async(self, bounded: bool) -> Result<RunSummary> {
        let Runtime {
            config,
            pipeline,
            stop,
            board,
        } = self;
        if pipeline.subs.is_empty() {
            return Err(Error::Topology("the pipeline has no sink".to_owned()));
        }
        let mut config = config;
        if let Some(raw) = config.properties.remove("shutdown.timeout.ms") {
            let ms: u64 = raw.parse().map_err(|_| Error::Config {
                key: "shutdown.timeout.ms".to_owned(),
                message: format!("expected milliseconds, got {raw:?}"),
            })?;
            config = config.shutdown_timeout(Duration::from_millis(ms));
        }
        if let Some(raw) = config.properties.remove("num.standby.replicas") {
            let n: usize = raw.parse().map_err(|_| Error::Config {
                key: "num.standby.replicas".to_owned(),
                message: format!("expected a count, got {raw:?}"),
            })?;
            config = config.standby_replicas(n);
        }
        if let Some(raw) = config.properties.remove("state.store") {
            let store = raw.parse().map_err(|message| Error::Config {
                key: "state.store".to_owned(),
                message,
            })?;
            config = config.state_store(store);
        }
        if let Some(dir) = config.properties.remove("state.dir") {
            config = config.state_dir(dir);
        }
        if let Some(raw) = config.properties.remove("state.cache.max.bytes") {
            let n: usize = raw.parse().map_err(|_| Error::Config {
                key: "state.cache.max.bytes".to_owned(),
                message: format!("expected a number of bytes, got {raw:?}"),
            })?;
            config = config.state_cache_max_bytes(n);
        }
        if let Some(raw) = config.properties.remove("processing.guarantee") {
            let guarantee = raw.parse().map_err(|message| Error::Config {
                key: "processing.guarantee".to_owned(),
                message,
            })?;
            config = config.guarantee(guarantee);
        }
        if let Some(name) = config.properties.remove("instance.id") {
            config = config.instance_id(name);
        }
        for key in ["group.instance.id", "transactional.id", "isolation.level"] {
            if config.properties.contains_key(key) {
                return Err(Error::Config {
                    key: key.to_owned(),
                    message: "the runtime sets it (use instance.id and processing.guarantee)"
                        .to_owned(),
                });
            }
        }
        let (consumer_props, producer_props) = split_properties(&config.properties)?;
        let mut client = Properties::new();
        client.set("bootstrap.servers", &config.bootstrap);
        for (k, v) in &consumer_props {
            if ClientConfig::from_properties([(k.as_str(), v.as_str())]).is_ok() {
                client.set(k, v);
            }
        }
        let admin = Admin::connect(ClientConfig::take_from(&mut client)?).await?;
        let stages = prepare_topics(&admin, &config, &pipeline).await?;

        let mut by_topic = BTreeMap::new();
        let mut patterns = Vec::new();
        let mut outputs = BTreeSet::new();
        let mut pattern_parts = Vec::new();
        let mut tables = BTreeSet::new();
        for (i, sub) in pipeline.subs.iter().enumerate() {
            match &sub.source {
                SourceTopics::Topics(t) => {
                    for name in t {
                        by_topic.insert(name.clone(), i);
                    }
                }
                SourceTopics::Repartition(name) => {
                    by_topic.insert(repartition_topic(&config.application_id, name), i);
                }
                SourceTopics::Pattern(p) => {
                    let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                        Error::Topology(format!("source pattern {p:?} is not a valid regex: {e}"))
                    })?;
                    patterns.push((re, i));
                    pattern_parts.push(format!("(?:{p})"));
                }
            }
            for table in &sub.tables {
                by_topic.insert(table.clone(), i);
                tables.insert(table.clone());
            }
            outputs.extend(sub.outputs.iter().cloned());
            outputs.extend(sub.dead_letter.iter().cloned());
            if let Some(name) = &sub.repartition {
                outputs.insert(repartition_topic(&config.application_id, name));
            }
        }
        let subscription_pattern = (!pattern_parts.is_empty()).then(|| {
            pattern_parts.extend(by_topic.keys().map(|t| regex::escape(t)));
            pattern_parts.join("|")
        });
        let plan = Arc::new(Plan {
            config: config.clone(),
            bounded,
            consumer_props,
            producer_props,
            by_topic,
            patterns,
            factories: pipeline.subs.iter().map(|s| s.factory.clone()).collect(),
            outputs,
            subscription_pattern,
            ends: stages.source_ends(),
            empty: stages
                .subs
                .iter()
                .flat_map(|s| s.empty.iter().map(|(tp, e)| (tp.clone(), *e)))
                .collect(),
            partitions: stages.subs.iter().map(|s| s.partitions).collect(),
            upstream: stages.subs.iter().map(|s| s.upstream).collect(),
            committed: Arc::new(tokio::sync::Notify::new()),
            joined: std::sync::atomic::AtomicUsize::new(0),
            process_name: config.instance_id.clone().unwrap_or_else(random_name),
            stores: pipeline.subs.iter().map(|s| s.stores.clone()).collect(),
            active: Default::default(),
            standbys: Default::default(),
            workers_ended: (0..config.workers)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            tables,
            table_ends: stages.table_ends.clone(),
        });

        // The monitoring endpoint runs on this (control) thread until the run ends.
        let server = match config.metrics_addr {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Io {
                        context: format!("listening for metrics on {addr}"),
                        source,
                    })?;
                let local = listener.local_addr().map_err(|source| Error::Io {
                    context: "reading the metrics address".to_owned(),
                    source,
                })?;
                tracing::info!(%local, "metrics at http://{local}/metrics, live page at http://{local}/");
                Some(tokio::spawn(crate::serve::serve(listener, board.clone())))
            }
            None => None,
        };
        let _server = AbortOnDrop(server);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut handles = Vec::new();
        for index in 0..config.workers {
            let plan = plan.clone();
            let stop = stop.clone();
            let board = board.clone();
            let done = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("flumen-worker-{index}"))
                .spawn(move || {
                    let result = worker::run(index, plan, stop, board);
                    let _ = done.send(index);
                    result
                })
                .map_err(|source| Error::Io {
                    context: "starting a worker thread".to_owned(),
                    source,
                })?;
            handles.push(handle);
        }
        drop(done_tx);

        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|source| Error::Io {
                context: "installing the SIGTERM handler".to_owned(),
                source,
            })?;
        let mut check = tokio::time::interval(Duration::from_millis(50));
        let mut watch = tokio::time::interval(Duration::from_millis(50));
        let mut stopping: Option<std::time::Instant> = None;
        let mut finished = 0;
        loop {
            tokio::select! {
                _ = watch.tick() => {
                    if stop.load(Ordering::Acquire) {
                        let since = *stopping.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= config.shutdown_timeout {
                            tracing::error!(
                                timeout_ms = config.shutdown_timeout.as_millis() as u64,
                                workers_left = config.workers - finished,
                                "the stop took longer than shutdown.timeout.ms: giving up on it"
                            );
                            return Err(Error::ShutdownTimeout(config.shutdown_timeout));
                        }
                    }
                }
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("SIGINT: committing and leaving the group");
                    stop.store(true, Ordering::Release);
                }
                _ = sigterm.recv() => {
                    tracing::info!("SIGTERM: committing and leaving the group");
                    stop.store(true, Ordering::Release);
                }
                index = done_rx.recv() => {
                    let Some(index) = index else { break };
                    finished += 1;
                    tracing::debug!(index, "worker stopped");
                    // One worker stopping (an error) stops the others.
                    stop.store(true, Ordering::Release);
                    if finished == config.workers {
                        break;
                    }
                }
                _ = async {
                    tokio::select! {
                        _ = check.tick() => {}
                        _ = plan.committed.notified() => {}
                    }
                }, if bounded && !stop.load(Ordering::Acquire) => {
                    let ended = plan.workers_ended.iter().all(|e| e.load(Ordering::Acquire));
                    if ended && stages.all_done(&admin, &config.application_id).await? {
                        tracing::info!("bounded run: every input processed and committed");
                        stop.store(true, Ordering::Release);
                    }
                }
            }
        }
        let mut records_in = 0;
        let mut first_error = None;
        for (index, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(Ok(report)) => records_in += report.records_in,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(Error::WorkerPanicked(index));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(RunSummary {
            records_in,
            metrics: board.snapshot(),
        })
    }
}

/// Stops the monitoring endpoint when the run ends.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Per sub-topology, the partitions it reads and (once known) the offsets a bounded run
/// must reach.
struct Stages {
    subs: Vec<Stage>,
    /// End offsets of the tables' non-empty partitions at the start: a task reads its table
    /// partitions up to them before its first stream record.
    table_ends: BTreeMap<TopicPartition, i64>,
}

struct Stage {
    /// The sub-topology that writes this one's repartition topic, if it reads one.
    upstream: Option<usize>,
    topics: Vec<String>,
    /// The offsets to reach; `None` until the upstream stage is done.
    ends: Option<BTreeMap<TopicPartition, i64>>,
    /// Source partitions empty at the start: their tasks commit the end offset when they end.
    empty: BTreeMap<TopicPartition, i64>,
    /// Its tasks' partition count.
    partitions: i32,
    done: bool,
}

impl Stages {
    /// The end offsets known at the start (the sources read from outside the pipeline).
    fn source_ends(&self) -> BTreeMap<TopicPartition, i64> {
        self.subs
            .iter()
            .filter_map(|s| s.ends.as_ref())
            .flatten()
            .map(|(tp, end)| (tp.clone(), *end))
            .collect()
    }

    async fn all_done(&self, admin: &Admin, group: &str) -> Result<bool> {
        // Cheap enough at 20 Hz: one OffsetFetch, plus ListOffsets when a stage opens.
        let committed = admin.list_group_offsets(group, None).await?;
        let committed: BTreeMap<TopicPartition, i64> = committed
            .into_iter()
            .filter_map(|(tp, r)| r.ok().map(|o| (tp, o.offset)))
            .collect();
        // Interior mutability would be tidier; stages are recomputed from the broker instead.
        let mut done = vec![false; self.subs.len()];
        for (i, stage) in self.subs.iter().enumerate() {
            let ends = match (&stage.ends, stage.upstream) {
                (Some(e), _) => e.clone(),
                (None, Some(up)) if done[up] => end_offsets(admin, &stage.topics).await?.ends,
                (None, _) => continue,
            };
            done[i] = stage.done
                || ends
                    .iter()
                    .chain(&stage.empty)
                    .all(|(tp, &end)| committed.get(tp).is_some_and(|&c| c >= end));
        }
        Ok(done.iter().all(|d| *d))
    }
}

/// Describes `topic`, waiting up to 10 s for one created a moment ago to be known.
async fn describe(admin: &Admin, topic: &str) -> Result<flumen_client::admin::TopicDescription> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match admin.describe_topic(topic).await {
            Ok(d) => return Ok(d),
            Err(e)
                if (matches!(e, flumen_client::Error::UnknownTopic(_))
                    || e.code() == Some(flumen_protocol::ErrorCode::UnknownTopicOrPartition))
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Topics one task reads together must have the same partition count.
fn check_co_partitioned(counts: &BTreeMap<String, i32>) -> Result<()> {
    let mut iter = counts.iter();
    let Some((first, &n)) = iter.next() else {
        return Ok(());
    };
    for (other, &m) in iter {
        if m != n {
            return Err(Error::Topology(format!(
                "topics read by one task must be co-partitioned: {first} has {n} partitions, \
                 {other} has {m} (re-key one side with key_by, or repartition a topic to match)"
            )));
        }
    }
    Ok(())
}

/// What a bounded run reads of some topics.
struct TopicEnds {
    /// End offsets of the partitions with records.
    ends: BTreeMap<TopicPartition, i64>,
    /// End offsets of the empty partitions.
    empty: BTreeMap<TopicPartition, i64>,
    /// Partition count per topic.
    counts: BTreeMap<String, i32>,
}

/// Each partition's end offset, empty partitions apart, and the partition count per topic.
async fn end_offsets(admin: &Admin, topics: &[String]) -> Result<TopicEnds> {
    let mut specs = Vec::new();
    let mut counts = BTreeMap::new();
    for t in topics {
        let d = describe(admin, t).await?;
        counts.insert(t.clone(), d.partitions.len() as i32);
        for p in 0..d.partitions.len() as i32 {
            specs.push(TopicPartition::new(t.clone(), p));
        }
    }
    let latest: Vec<_> = specs
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let earliest: Vec<_> = specs
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Earliest))
        .collect();
    let latest = admin
        .list_offsets(&latest, IsolationLevel::ReadUncommitted)
        .await?;
    let earliest = admin
        .list_offsets(&earliest, IsolationLevel::ReadUncommitted)
        .await?;
    let mut ends = BTreeMap::new();
    let mut empty = BTreeMap::new();
    for (tp, end) in latest {
        let end = end?.offset;
        let start = earliest
            .get(&tp)
            .and_then(|r| r.as_ref().ok())
            .map_or(0, |o| o.offset);
        if end > start {
            ends.insert(tp, end);
        } else {
            empty.insert(tp, end);
        }
    }
    Ok(TopicEnds {
        ends,
        empty,
        counts,
    })
}

/// Checks the source topics, creates the repartition topics, and records what a bounded run
/// has to reach.
async fn prepare_topics(
    admin: &Admin,
    config: &RuntimeConfig,
    pipeline: &Pipeline,
) -> Result<Stages> {
    let mut subs = Vec::new();
    let mut partitions_of_sub: Vec<i32> = Vec::new();
    let mut writer_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, sub) in pipeline.sub_topologies().iter().enumerate() {
        if let Some(name) = &sub.repartition {
            writer_of.insert(name.clone(), i);
        }
        let stage = match &sub.source {
            SourceTopics::Topics(topics) => {
                let mut all = topics.clone();
                all.extend(sub.tables.iter().cloned());
                let t = end_offsets(admin, &all)
                    .await
                    .map_err(|e| Error::Topology(format!("source topics {all:?}: {e}")))?;
                let partitions = t.counts.values().copied().max().unwrap_or(1);
                check_co_partitioned(&t.counts)?;
                partitions_of_sub.push(partitions);
                Stage {
                    upstream: None,
                    topics: all,
                    ends: Some(t.ends),
                    empty: t.empty,
                    partitions,
                    done: false,
                }
            }
            SourceTopics::Pattern(p) => {
                let re = regex::Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| Error::Topology(format!("source pattern {p:?}: {e}")))?;
                let topics: Vec<String> = admin
                    .list_topics(false)
                    .await?
                    .into_iter()
                    .filter(|t| re.is_match(t))
                    .collect();
                let t = end_offsets(admin, &topics).await?;
                let partitions = t.counts.values().copied().max().unwrap_or(1);
                partitions_of_sub.push(partitions);
                Stage {
                    upstream: None,
                    topics,
                    ends: Some(t.ends),
                    empty: t.empty,
                    partitions,
                    done: false,
                }
            }
            SourceTopics::Repartition(name) => {
                let Some(&up) = writer_of.get(name) else {
                    return Err(Error::Topology(format!(
                        "no key_by writes repartition {name:?}"
                    )));
                };
                let topic = repartition_topic(&config.application_id, name);
                let partitions = partitions_of_sub[up];
                let created = admin
                    .create_topics(
                        &[NewTopic::new(topic.clone()).partitions(partitions)],
                        false,
                    )
                    .await?;
                match created.get(&topic) {
                    Some(Ok(_)) => tracing::info!(%topic, partitions, "repartition topic created"),
                    Some(Err(e))
                        if e.code() == Some(flumen_protocol::ErrorCode::TopicAlreadyExists) =>
                    {
                        // Another process of the application may have just created it: the
                        // broker answering may not know it yet.
                        let d = describe(admin, &topic).await?;
                        if d.partitions.len() as i32 != partitions {
                            return Err(Error::Topology(format!(
                                "repartition topic {topic} has {} partitions; the stage before it reads {partitions}",
                                d.partitions.len()
                            )));
                        }
                    }
                    Some(Err(e)) => return Err(Error::Topology(format!("creating {topic}: {e}"))),
                    None => {}
                }
                let mut counts = BTreeMap::from([(topic.clone(), partitions)]);
                for table in &sub.tables {
                    let d = admin
                        .describe_topic(table)
                        .await
                        .map_err(|e| Error::Topology(format!("table topic {table}: {e}")))?;
                    counts.insert(table.clone(), d.partitions.len() as i32);
                }
                check_co_partitioned(&counts)?;
                partitions_of_sub.push(partitions);
                Stage {
                    upstream: Some(up),
                    topics: vec![topic],
                    ends: None,
                    empty: BTreeMap::new(),
                    partitions,
                    done: false,
                }
            }
        };
        for store in &sub.stores {
            let topic = changelog_topic(&config.application_id, store);
            ensure_changelog(admin, &topic, stage.partitions).await?;
        }
        subs.push(stage);
    }
    let tables: Vec<String> = pipeline
        .sub_topologies()
        .iter()
        .flat_map(|s| s.tables.iter().cloned())
        .collect();
    let table_ends = if tables.is_empty() {
        BTreeMap::new()
    } else {
        end_offsets(admin, &tables).await?.ends
    };
    Ok(Stages { subs, table_ends })
}

/// A name for a process started without `instance.id`: unique enough among the processes of
/// one application (wall clock, process id and a counter mixed).
fn random_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Creates the changelog topic of a store (compacted, one partition per task), or checks the
/// one that exists.
async fn ensure_changelog(admin: &Admin, topic: &str, partitions: i32) -> Result<()> {
    let created = admin
        .create_topics(
            &[NewTopic::new(topic)
                .partitions(partitions)
                .config("cleanup.policy", "compact")],
            false,
        )
        .await?;
    match created.get(topic) {
        Some(Ok(_)) => {
            tracing::info!(%topic, partitions, "changelog topic created");
            Ok(())
        }
        Some(Err(e)) if e.code() == Some(flumen_protocol::ErrorCode::TopicAlreadyExists) => {
            let d = describe(admin, topic).await?;
            if d.partitions.len() as i32 != partitions {
                return Err(Error::Topology(format!(
                    "changelog topic {topic} has {} partitions; its store's tasks are {partitions}",
                    d.partitions.len()
                )));
            }
            let resource = ConfigResource::Topic(topic.to_owned());
            let configs = admin
                .describe_configs(std::slice::from_ref(&resource))
                .await?;
            let policy = configs
                .get(&resource)
                .and_then(|r| r.as_ref().ok())
                .and_then(|entries| entries.iter().find(|e| e.name == "cleanup.policy"))
                .and_then(|e| e.value.clone())
                .unwrap_or_default();
            if !policy.split(',').any(|p| p.trim() == "compact") {
                return Err(Error::Topology(format!(
                    "changelog topic {topic} has cleanup.policy={policy}; a changelog must be compacted"
                )));
            }
            Ok(())
        }
        Some(Err(e)) => Err(Error::Topology(format!("creating {topic}: {e}"))),
        None => Ok(()),
    }
}
