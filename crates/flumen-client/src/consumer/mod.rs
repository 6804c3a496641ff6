//! The Kafka consumer: assign or subscribe, poll borrowed record batches, commit offsets.
//!
//! - [`Consumer`]: the handle; `poll` / `recv` / [`stream`](Consumer::stream).
//! - [`ConsumerConfig`]: typed builder and the Java client's property names.
//! - [`ConsumerRecords`] / [`ConsumerRecord`]: records borrowed from the fetched buffers.
//! - [`RebalanceListener`]: hook called when the group moves partitions.
//!
//! Structure: one fetcher task per broker (`fetcher.rs`, with its KIP-227 session in
//! `fetch_session.rs`) fills a queue in the shared state (`state.rs`); `poll` takes from it,
//! moves positions, and does the slow work inline: group membership (`group/`), offset
//! lookups and resets (`offsets.rs`), leader lookups. Heartbeats run on their own task so a
//! slow application does not lose its partitions before `max.poll.interval.ms`.
//! Everything runs on the caller's tokio runtime (current-thread works); no OS thread.
//!
//! ```no_run
//! use std::time::Duration;
//! use flumen_client::consumer::{Consumer, ConsumerConfig};
//!
//! # async fn run() -> Result<(), flumen_client::consumer::ConsumerError> {
//! let config = ConsumerConfig::from_properties([
//!     ("bootstrap.servers", "127.0.0.1:9092"),
//!     ("group.id", "billing"),
//!     ("auto.offset.reset", "earliest"),
//! ])?;
//! let mut consumer = Consumer::connect(config).await?;
//! consumer.subscribe(&["orders"])?;
//! loop {
//!     let mut records = consumer.poll(Duration::from_secs(1)).await?;
//!     for record in records.iter() {
//!         let record = record?;
//!         println!("{} {:?}", record.offset(), record.value());
//!     }
//! }
//! # }
//! ```

mod config;
mod error;
mod fetch_session;
mod fetcher;
pub mod group;
mod lag;
mod offsets;
mod records;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

pub use self::config::{
    AssignmentStrategy, CONSUMER_PROPERTIES, ConsumerConfig, ConsumerConfigBuilder, GroupProtocol,
    OffsetReset,
};
pub use self::error::{ConsumerError, Result};
use self::fetcher::{FetchSettings, Fetcher};
pub use self::group::{CommitOnRevoke, ConsumerGroupMetadata, RebalanceListener};
use self::group::{GroupMember, listener::NoopListener};
use self::records::Rewind;
pub use self::records::{
    ConsumerRecord, ConsumerRecords, Iter, OwnedRecord, PartitionIter, PartitionRecords,
};
use self::state::{PartState, Reset, Shared};
use crate::admin::Admin;
pub use crate::admin::{IsolationLevel, OffsetAndMetadata};
use crate::cluster::{Cluster, TopicPartition};

/// What the consumer reads.
#[derive(Debug, Clone)]
pub(crate) enum Subscription {
    /// Nothing yet.
    None,
    /// Partitions chosen by the application.
    Assigned,
    /// Topics, partitions given by the group.
    Topics(BTreeSet<String>),
    /// Topics matching a pattern (re-evaluated with each metadata refresh), partitions given by the group.
    Pattern(regex::Regex),
}

/// A Kafka consumer. Not `Clone`: one owner polls it.
pub struct Consumer {
    cluster: Cluster,
    admin: Admin,
    config: Arc<ConsumerConfig>,
    shared: Arc<Shared>,
    settings: Arc<FetchSettings>,
    fetchers: HashMap<i32, Fetcher>,
    subscription: Subscription,
    group: Option<GroupMember>,
    /// Behind a mutex only so `Consumer` is `Sync` (futures holding `&Consumer` stay `Send`).
    listener: std::sync::Mutex<Box<dyn RebalanceListener>>,
    next_auto_commit: Instant,
    /// When a failed lookup (leader, offsets) may be tried again.
    retry_at: Option<Instant>,
    backoff: crate::retry::Backoff,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.config.group_id)
            .field("subscription", &self.subscription)
            .field("fetchers", &self.fetchers.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake_fetchers();
    }
}

impl Consumer {
    /// Connects to the cluster (bootstrap + metadata) with `config`.
    pub async fn connect(config: ConsumerConfig) -> Result<Consumer> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        Ok(Consumer::with_cluster(cluster, config))
    }

    /// A consumer over an existing cluster handle (sharing its connections and metadata).
    /// `config.client` is ignored in favour of the cluster's.
    pub fn with_cluster(cluster: Cluster, config: ConsumerConfig) -> Consumer {
        let settings = Arc::new(FetchSettings {
            min_bytes: config.fetch_min_bytes,
            max_wait: config.fetch_max_wait,
            max_partition_bytes: config.max_partition_fetch_bytes,
            max_bytes: config.fetch_max_bytes,
            isolation_level: match config.isolation_level {
                IsolationLevel::ReadUncommitted => 0,
                IsolationLevel::ReadCommitted => 1,
            },
            rack: cluster.config().client_rack.clone(),
            prefetch_max_bytes: config.prefetch_max_bytes,
            preferred_replica_max_age: cluster.config().metadata_max_age,
        });
        let backoff = cluster.config().retry_policy().start();
        Consumer {
            admin: Admin::new(cluster.clone()),
            cluster,
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            config: Arc::new(config),
            shared: Arc::new(Shared::default()),
            settings,
            fetchers: HashMap::new(),
            subscription: Subscription::None,
            group: None,
            listener: std::sync::Mutex::new(Box::new(NoopListener)),
            retry_at: None,
            backoff,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The cluster handle.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Reads exactly `partitions` (no group membership; commits still work with a `group.id`).
    /// Partitions no longer listed are dropped with their buffered data; the paused set is kept.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> Result<()> {
        if matches!(
            self.subscription,
            Subscription::Topics(_) | Subscription::Pattern(_)
        ) {
            return Err(ConsumerError::Usage(
                "assign() after subscribe(): call unsubscribe() first",
            ));
        }
        let wanted: BTreeSet<TopicPartition> = partitions.into_iter().collect();
        self.subscription = if wanted.is_empty() {
            Subscription::None
        } else {
            Subscription::Assigned
        };
        let current: Vec<TopicPartition> = self.shared.lock().parts.keys().cloned().collect();
        let removed: Vec<TopicPartition> = current
            .into_iter()
            .filter(|tp| !wanted.contains(tp))
            .collect();
        self.remove_partitions(&removed);
        self.add_partitions(wanted.into_iter());
        Ok(())
    }

    /// Joins the group (`group.id`) and reads the partitions of `topics` it assigns.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        self.start_group("subscribe()")?;
        self.subscription = Subscription::Topics(topics.iter().map(|t| (*t).to_owned()).collect());
        if let Some(g) = &mut self.group {
            g.request_rejoin();
        }
        Ok(())
    }

    /// Joins the group and reads every topic whose name matches `pattern` (a regex, anchored
    /// at both ends, as in the Java client). New matching topics are picked up when the
    /// metadata is refreshed (`metadata.max.age.ms`).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let anchored = format!("^(?:{pattern})$");
        let regex = regex::Regex::new(&anchored).map_err(|e| {
            ConsumerError::Client(crate::Error::Config {
                key: "subscribe_pattern".to_owned(),
                message: e.to_string(),
            })
        })?;
        self.start_group("subscribe_pattern()")?;
        self.subscription = Subscription::Pattern(regex);
        if let Some(g) = &mut self.group {
            g.request_rejoin();
        }
        Ok(())
    }

    fn start_group(&mut self, what: &'static str) -> Result<()> {
        if matches!(self.subscription, Subscription::Assigned) {
            return Err(ConsumerError::Usage(
                "subscribe() after assign(): call unsubscribe() first",
            ));
        }
        if self.config.group_id.is_none() {
            return Err(ConsumerError::NoGroup(what));
        }
        if self.group.is_none() {
            self.group = Some(GroupMember::new(
                self.cluster.clone(),
                self.config.clone(),
                self.shared.clone(),
            ));
        }
        Ok(())
    }

    /// Leaves the group (if subscribed) and drops every partition.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        if let Some(mut g) = self.group.take() {
            let owned = self.assignment();
            if !owned.is_empty() {
                self.revoke(&owned, false).await;
            }
            g.leave().await;
        }
        let all = self.assignment();
        self.remove_partitions(&all);
        self.subscription = Subscription::None;
        Ok(())
    }

    /// Sets the listener called when the group moves partitions.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = std::sync::Mutex::new(Box::new(listener));
    }

    fn listener(&self) -> std::sync::MutexGuard<'_, Box<dyn RebalanceListener>> {
        self.listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The partitions currently assigned, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = self.shared.lock().parts.keys().cloned().collect();
        v.sort();
        v
    }

    /// The partition numbers this member keeps standby copies of, sorted: placed by the
    /// group leader's co-partitioned assignor when `co.partitioned.standby.replicas` is set
    /// (see [`ConsumerConfig::standby_replicas`]), current as of the last rebalance. Empty
    /// under any other assignor and under `group.protocol=consumer`.
    pub fn standby_partitions(&self) -> Vec<i32> {
        match &self.group {
            Some(GroupMember::Classic(m)) => {
                let mut v = m.standbys.clone();
                v.sort_unstable();
                v
            }
            _ => Vec::new(),
        }
    }

    /// The group identity, for a transactional producer's `send_offsets_to_transaction`.
    /// `None` without a `group.id`.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        let group_id = self.config.group_id.clone()?;
        let (generation_id, member_id) = self
            .group
            .as_ref()
            .map(GroupMember::generation)
            .unwrap_or((-1, String::new()));
        Some(ConsumerGroupMetadata::with_member(
            group_id,
            generation_id,
            member_id,
            self.config.group_instance_id.clone(),
        ))
    }

    fn add_partitions(&mut self, tps: impl Iterator<Item = TopicPartition>) {
        let mut state = self.shared.lock();
        for tp in tps {
            if !state.parts.contains_key(&tp) {
                let generation = state.bump_generation();
                state.parts.insert(tp, PartState::new(generation));
                state.needs_attention = true;
            }
        }
    }

    fn remove_partitions(&mut self, tps: &[TopicPartition]) {
        let mut state = self.shared.lock();
        for tp in tps {
            state.parts.remove(tp);
            state.drop_buffered(tp);
        }
        drop(state);
        self.shared.wake_fetchers();
    }

    /// Waits up to `timeout` for records and returns what is buffered (possibly nothing).
    ///
    /// Group work (joining, rebalancing, listener calls), offset resets and auto-commits happen
    /// inside this call. Records come back in batches borrowed from the fetched buffers;
    /// the partitions' positions move past them.
    pub async fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        let deadline = Instant::now() + timeout;
        loop {
            // Time spent waiting inside `poll` is not time the application is away: as in the
            // Java client, each round counts as a poll, so a long poll on an idle topic does not
            // exceed `max.poll.interval.ms`.
            if let Some(g) = &self.group {
                g.note_poll();
            }
            self.maintain().await?;
            let records = self.drain()?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
            let mut wake = match self.retry_at {
                Some(at) => at.min(deadline),
                None => deadline,
            };
            if self.group.is_some() {
                wake = wake.min(Instant::now() + self.config.max_poll_interval / 2);
            }
            let _ = tokio::time::timeout_at(wake, self.shared.data_ready.notified()).await;
        }
    }

    /// Waits until at least one record batch is available and returns it.
    pub async fn recv(&mut self) -> Result<ConsumerRecords> {
        loop {
            let records = self.poll(Duration::from_secs(3600)).await?;
            if !records.is_empty() {
                return Ok(records);
            }
        }
    }

    /// The consumer as a `futures::Stream` of non-empty record batches (never ends by itself).
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecords>> + '_ {
        futures::stream::unfold(self, |consumer| async move {
            let next = consumer.recv().await;
            Some((next, consumer))
        })
    }

    /// Group membership, position lookups, leader lookups, fetchers, auto-commit.
    async fn maintain(&mut self) -> Result<()> {
        if self.group.is_some() {
            self.group_step().await?;
        }
        let now = Instant::now();
        let attention = self.shared.lock().needs_attention;
        if attention && self.retry_at.is_none_or(|at| now >= at) {
            match self.resolve().await {
                Ok(()) => {
                    self.retry_at = None;
                    self.backoff.reset();
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "lookup failed; retrying");
                    self.retry_at = Some(Instant::now() + self.backoff.next_backoff());
                }
                Err(e) => return Err(e),
            }
        }
        if self.config.enable_auto_commit
            && self.config.group_id.is_some()
            && Instant::now() >= self.next_auto_commit
        {
            self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
            let _ = self.commit_async();
        }
        Ok(())
    }

    /// Looks up missing positions (committed offsets, then resets) and leaders, and starts
    /// fetchers for new brokers.
    async fn resolve(&mut self) -> Result<()> {
        self.shared.lock().needs_attention = false;
        let result = async {
            self.resolve_positions().await?;
            self.resolve_leaders().await
        }
        .await;
        if result.is_err() {
            self.shared.lock().needs_attention = true;
        }
        let brokers: BTreeSet<i32> = self
            .shared
            .lock()
            .parts
            .values()
            .filter_map(|p| p.fetch_from)
            .collect();
        for id in brokers {
            self.fetchers.entry(id).or_insert_with(|| {
                Fetcher::spawn(
                    self.cluster.clone(),
                    id,
                    self.shared.clone(),
                    self.settings.clone(),
                )
            });
        }
        self.shared.wake_fetchers();
        result
    }

    async fn resolve_leaders(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .shared
            .lock()
            .parts
            .iter()
            .filter(|(_, p)| p.fetch_from.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let topics: BTreeSet<&str> = missing.iter().map(|tp| tp.topic.as_str()).collect();
        let topics: Vec<&str> = topics.into_iter().collect();
        let found = self.cluster.topics(&topics).await?;
        let metadata = self.cluster.metadata();
        let mut unresolved = false;
        let mut state = self.shared.lock();
        for (name, topic) in topics.iter().zip(found) {
            let topic = match topic {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(topic = name, error = %e, "no metadata for topic");
                    unresolved = true;
                    continue;
                }
            };
            for tp in missing.iter().filter(|tp| tp.topic == *name) {
                let leader = topic.partition(tp.partition).and_then(|p| {
                    p.leader
                        .filter(|id| metadata.broker(*id).is_some())
                        .map(|l| (l, p.leader_epoch))
                });
                match (leader, state.parts.get_mut(tp)) {
                    (Some((id, epoch)), Some(p)) => {
                        p.fetch_from = Some(id);
                        p.preferred_until = None;
                        p.leader = Some(id);
                        p.leader_epoch = epoch;
                    }
                    (None, Some(_)) => unresolved = true,
                    _ => {}
                }
            }
        }
        drop(state);
        if unresolved {
            self.cluster.invalidate_metadata();
            return Err(ConsumerError::Client(crate::Error::Broker {
                code: flumen_protocol::ErrorCode::LeaderNotAvailable,
                api: "Metadata",
                topic: None,
                partition: None,
                message: Some("some assigned partitions have no leader yet".to_owned()),
            }));
        }
        Ok(())
    }

    /// Takes the buffered data and turns it into records; positions move past it.
    fn drain(&mut self) -> Result<ConsumerRecords> {
        let mut state = self.shared.lock();
        if !state.errors.is_empty() {
            let e = state.errors.remove(0);
            return Err(e);
        }
        let mut taken = Vec::new();
        let mut freed = 0;
        let ready = std::mem::take(&mut state.ready);
        let mut kept = std::collections::VecDeque::new();
        for f in ready {
            let paused = state.paused.contains(&f.tp);
            let Some(p) = state.parts.get_mut(&f.tp) else {
                freed += f.records.len();
                continue;
            };
            if p.generation != f.generation || p.position != Some(f.fetch_offset) {
                freed += f.records.len();
                continue;
            }
            if paused {
                kept.push_back(f);
                continue;
            }
            p.position = Some(f.next_offset);
            freed += f.records.len();
            taken.push(f);
        }
        state.ready = kept;
        state.buffered_bytes -= freed;
        drop(state);
        if freed > 0 {
            self.shared.wake_fetchers();
        }
        let read_committed = self.config.isolation_level == IsolationLevel::ReadCommitted;
        let mut parts = Vec::with_capacity(taken.len());
        let mut epochs = Vec::with_capacity(taken.len());
        let mut failure = None;
        for f in taken {
            if failure.is_some() {
                break;
            }
            let (tp, offset, generation) = (f.tp.clone(), f.fetch_offset, f.generation);
            let rewind = Rewind::new(self.shared.clone(), generation);
            match PartitionRecords::prepare(f, read_committed, self.config.check_crcs, rewind) {
                Ok(p) => {
                    epochs.push((tp, p.last_leader_epoch()));
                    parts.push(p);
                }
                Err(e) => failure = Some((tp, offset, generation, e)),
            }
        }
        let mut state = self.shared.lock();
        for (tp, epoch) in epochs {
            if let Some(p) = state.parts.get_mut(&tp) {
                p.position_epoch = epoch.or(p.position_epoch);
            }
        }
        if let Some((tp, offset, generation, e)) = failure {
            // Hand out nothing past the corrupt chunk: the next poll fetches it again.
            if let Some(p) = state.parts.get_mut(&tp)
                && p.generation == generation
            {
                let g = state.next_generation + 1;
                state.next_generation = g;
                if let Some(p) = state.parts.get_mut(&tp) {
                    p.position = Some(offset);
                    p.fetch_offset = offset;
                    p.generation = g;
                }
                state.drop_buffered(&tp);
            }
            return Err(e);
        }
        Ok(ConsumerRecords::new(parts))
    }

    /// Sets the next offset to read from `tp`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        let mut state = self.shared.lock();
        let generation = state.bump_generation();
        let p = state
            .parts
            .get_mut(tp)
            .ok_or_else(|| ConsumerError::NotAssigned { tp: tp.clone() })?;
        p.position = Some(offset);
        p.position_epoch = None;
        p.fetch_offset = offset;
        p.reset = None;
        p.generation = generation;
        state.drop_buffered(tp);
        drop(state);
        self.shared.wake_fetchers();
        Ok(())
    }

    fn seek_reset(&mut self, tps: &[TopicPartition], reset: Reset) -> Result<()> {
        let mut state = self.shared.lock();
        for tp in tps {
            let generation = state.bump_generation();
            let p = state
                .parts
                .get_mut(tp)
                .ok_or_else(|| ConsumerError::NotAssigned { tp: tp.clone() })?;
            p.position = None;
            p.reset = Some(reset);
            p.generation = generation;
            state.drop_buffered(tp);
            state.needs_attention = true;
        }
        Ok(())
    }

    /// Reads `partitions` from their log start (looked up on the next `poll` or `position`).
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_reset(partitions, Reset::Earliest)
    }

    /// Reads `partitions` from their end (looked up on the next `poll` or `position`).
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_reset(partitions, Reset::Latest)
    }

    /// The next offset `poll` will return for `tp`, looking it up if needed.
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        let deadline = Instant::now() + self.cluster.config().default_api_timeout;
        loop {
            {
                let state = self.shared.lock();
                let p = state
                    .parts
                    .get(tp)
                    .ok_or_else(|| ConsumerError::NotAssigned { tp: tp.clone() })?;
                if let Some(pos) = p.position {
                    return Ok(pos);
                }
            }
            match self.resolve_positions().await {
                Ok(()) => {}
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tokio::time::sleep(self.backoff.next_backoff()).await;
                }
                Err(e) => return Err(e),
            }
            let mut state = self.shared.lock();
            if !state.errors.is_empty() {
                return Err(state.errors.remove(0));
            }
        }
    }

    /// Stops fetching `partitions` (buffered data is dropped; the position is kept) until
    /// [`resume`](Self::resume). The paused state outlives rebalances: a paused partition that
    /// is revoked and assigned again is still paused.
    pub fn pause(&mut self, partitions: &[TopicPartition]) {
        let mut state = self.shared.lock();
        for tp in partitions {
            state.paused.insert(tp.clone());
            let generation = state.bump_generation();
            if let Some(p) = state.parts.get_mut(tp) {
                if let Some(pos) = p.position {
                    p.fetch_offset = pos;
                }
                p.generation = generation;
            }
            state.drop_buffered(tp);
        }
    }

    /// Fetches `partitions` again. Always takes effect, whatever happened since `pause`.
    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        let mut state = self.shared.lock();
        for tp in partitions {
            state.paused.remove(tp);
        }
        state.needs_attention = true;
        drop(state);
        self.shared.wake_fetchers();
    }

    /// The assigned partitions that are paused, sorted.
    pub fn paused(&self) -> Vec<TopicPartition> {
        let state = self.shared.lock();
        let mut v: Vec<TopicPartition> = state
            .paused
            .iter()
            .filter(|tp| state.parts.contains_key(*tp))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Commits (when auto-commit is on) and leaves the group (unless static: a static member
    /// keeps its partitions for `session.timeout.ms` so a restart causes no rebalance). A
    /// member that leaves revokes its partitions first, so the listener's
    /// [`commit_on_revoke`](RebalanceListener::commit_on_revoke) offsets are committed too.
    pub async fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.config.enable_auto_commit && self.config.group_id.is_some() {
            result = self.commit_sync().await;
        }
        if self.group.is_some() && self.config.group_instance_id.is_none() {
            let owned = self.assignment();
            if !owned.is_empty() {
                self.commit_before_revoke(&owned, true).await;
            }
        }
        if let Some(mut g) = self.group.take() {
            if self.config.group_instance_id.is_none() {
                g.leave().await;
            } else {
                g.stop();
            }
        }
        result
    }

    /// The broker `tp` is fetched from when it is not the partition's leader: the preferred
    /// read replica the leader named for this consumer's `client.rack` (KIP-392). `None` while
    /// `tp` is fetched from its leader, not assigned, or its leader is not known yet. The
    /// consumer goes back to the leader, which may name a replica again, after a fetch error
    /// from that replica and once `metadata.max.age.ms` has passed since the leader named it.
    /// The Java client shows this as its `preferred-read-replica` metric.
    pub fn preferred_read_replica(&self, tp: &TopicPartition) -> Option<i32> {
        let state = self.shared.lock();
        let p = state.parts.get(tp)?;
        p.fetch_from
            .filter(|&from| p.leader.is_some_and(|l| l != from))
    }

    /// Fetch requests sent so far, per broker id (the Java client counts them per node as
    /// `request-total`). With `client.rack` this shows which replica serves the partitions and
    /// how often the leader is asked again.
    pub fn fetch_requests(&self) -> BTreeMap<i32, u64> {
        self.fetchers
            .iter()
            .map(|(&id, f)| (id, f.requests()))
            .collect()
    }

    /// The current positions of assigned partitions with a known position, as offsets to commit.
    pub fn positions(&self) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        let state = self.shared.lock();
        state
            .parts
            .iter()
            .filter_map(|(tp, p)| {
                p.position.map(|offset| {
                    let mut o = OffsetAndMetadata::new(offset);
                    o.leader_epoch = p.position_epoch.filter(|e| *e >= 0);
                    (tp.clone(), o)
                })
            })
            .collect()
    }
}
