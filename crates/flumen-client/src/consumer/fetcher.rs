//! One fetcher task per broker: builds Fetch requests from the shared state, keeps the
//! broker's fetch session, and queues the returned record data for `poll`.
//!
//! A fetcher asks again as soon as `poll` has taken the previous answer, so the broker works
//! while the application processes that answer (prefetch). Like the Java client, it does not
//! ask while an answer still waits for `poll`: each partition has at most one answer buffered
//! or in flight besides the one the application holds, which keeps the memory of a fast
//! consumer at about two responses. Requests also ask for at most the room left under
//! `prefetch.max.bytes` (plus one oversized batch, which Kafka always returns whole, KIP-74).
//! Record data stays in the response frame's `Bytes`: nothing is copied here; only batch
//! headers are read, to find where the next fetch starts.
//!
//! The task runs on the caller's runtime (`tokio::spawn`), so a current-thread runtime works.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, StrBytes};
use flumen_protocol::record::RecordBatches;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::ConsumerError;
use super::fetch_session::{FetchSession, Want};
use super::state::{Fetched, Reset, Shared};
use crate::cluster::{Cluster, ConnectionKind, TopicPartition, broker_error};
use crate::error::{Error, Result};

/// The highest Fetch version used: v12 names topics (v13+ use topic ids) and has
/// sessions, rack ids and preferred read replicas, which is all the consumer needs.
const FETCH_VERSION: i16 = 12;

/// Fetch settings from the consumer config.
#[derive(Debug, Clone)]
pub(crate) struct FetchSettings {
    pub(crate) min_bytes: i32,
    pub(crate) max_wait: Duration,
    pub(crate) max_partition_bytes: i32,
    pub(crate) max_bytes: i32,
    pub(crate) isolation_level: i8,
    pub(crate) rack: Option<String>,
    pub(crate) prefetch_max_bytes: usize,
    /// How long a preferred read replica is used before the leader is asked again
    /// (`metadata.max.age.ms`, as in the Java client).
    pub(crate) preferred_replica_max_age: Duration,
}

/// A running fetcher.
#[derive(Debug)]
pub(crate) struct Fetcher {
    handle: JoinHandle<()>,
    /// Fetch requests sent to this broker.
    requests: Arc<AtomicU64>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Fetcher {
    /// Starts the fetcher for `broker`.
    pub(crate) fn spawn(
        cluster: Cluster,
        broker: i32,
        shared: Arc<Shared>,
        settings: Arc<FetchSettings>,
    ) -> Fetcher {
        let notify = Arc::new(Notify::new());
        shared
            .fetchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(notify.clone());
        let requests = Arc::new(AtomicU64::new(0));
        let task = FetchTask {
            cluster,
            broker,
            shared,
            settings,
            notify: notify.clone(),
            session: FetchSession::default(),
            requests: requests.clone(),
        };
        Fetcher {
            handle: tokio::spawn(task.run()),
            requests,
        }
    }

    /// Fetch requests sent to this broker so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

struct FetchTask {
    cluster: Cluster,
    broker: i32,
    shared: Arc<Shared>,
    settings: Arc<FetchSettings>,
    notify: Arc<Notify>,
    session: FetchSession,
    requests: Arc<AtomicU64>,
}

/// The partitions asked for, with the generation each had when asked.
type Asked = HashMap<TopicPartition, (u64, i64)>;

impl FetchTask {
    async fn run(mut self) {
        let mut backoff = self.cluster.config().retry_policy().start();
        loop {
            let Some((want, asked, room)) = self.plan() else {
                if self.shared.lock().closed {
                    return;
                }
                self.notify.notified().await;
                continue;
            };
            match self.fetch(&want, room).await {
                Ok(response) => {
                    backoff.reset();
                    self.apply(response, &asked);
                }
                Err(e) => {
                    tracing::debug!(broker = self.broker, error = %e, "fetch failed");
                    self.session.reset();
                    self.fail(&asked, e);
                    tokio::time::sleep(backoff.next_backoff()).await;
                }
            }
        }
    }

    /// What to fetch now: `None` when there is nothing to fetch or no budget left.
    fn plan(&mut self) -> Option<(BTreeMap<TopicPartition, Want>, Asked, i32)> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        if state.closed || state.buffered_bytes >= self.settings.prefetch_max_bytes {
            return None;
        }
        let room = (self.settings.prefetch_max_bytes - state.buffered_bytes)
            .min(self.settings.max_bytes as usize) as i32;
        // While an answer of this broker waits for `poll`, nothing is fetched from it. As in the
        // Java client, a partition is not fetched again before its last answer is taken, so the
        // memory held is about one response being processed and one arriving, not the whole
        // prefetch bound. Unlike a request for the other partitions only, waiting does not
        // leave the partitions that are taken meanwhile stuck behind a long poll
        // (`fetch.max.wait.ms`) for partitions that have nothing new. `poll` takes every
        // answer at once (but those of paused partitions), so this costs no concurrency.
        let waiting = state.ready.iter().any(|f| {
            !state.paused.contains(&f.tp)
                && state
                    .parts
                    .get(&f.tp)
                    .is_some_and(|p| p.fetch_from == Some(self.broker))
        });
        if waiting {
            return None;
        }
        let mut want = BTreeMap::new();
        let mut asked = HashMap::new();
        let now = Instant::now();
        let mut expired = false;
        for (tp, p) in &mut state.parts {
            if p.fetch_from != Some(self.broker) || !p.fetchable() || state.paused.contains(tp) {
                continue;
            }
            if p.preferred_until.is_some_and(|until| now >= until)
                && p.leader.is_some_and(|l| l != self.broker)
            {
                // The Java client's rule (KIP-392): the replica the leader named serves the
                // partition for `metadata.max.age.ms`, then the leader is asked again, so a
                // consumer follows replica moves and a better replica showing up in its rack.
                tracing::debug!(%tp, broker = self.broker, "preferred read replica expired");
                p.preferred_until = None;
                p.fetch_from = None;
                expired = true;
                continue;
            }
            want.insert(
                tp.clone(),
                Want {
                    fetch_offset: p.fetch_offset,
                    leader_epoch: p.leader_epoch,
                    max_bytes: self.settings.max_partition_bytes,
                },
            );
            asked.insert(tp.clone(), (p.generation, p.fetch_offset));
        }
        if expired {
            // `poll` looks the leader up and starts its fetcher.
            state.needs_attention = true;
            drop(guard);
            self.shared.data_ready.notify_one();
        } else {
            drop(guard);
        }
        if want.is_empty() {
            // Nothing to fetch: let the broker's session lapse rather than keep it current.
            self.session.reset();
            return None;
        }
        Some((want, asked, room))
    }

    async fn fetch(
        &mut self,
        want: &BTreeMap<TopicPartition, Want>,
        room: i32,
    ) -> Result<(FetchResponse, bool)> {
        let conn = self
            .cluster
            .broker_connection(self.broker, ConnectionKind::Fetch)
            .await?;
        let version = conn
            .api_version(ApiKey::Fetch)
            .map(|v| v.min(FETCH_VERSION))
            .ok_or_else(|| Error::UnsupportedVersion {
                addr: conn.addr().to_owned(),
                api: "Fetch",
            })?;
        let session = self.session.build(want);
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = i32::try_from(self.settings.max_wait.as_millis()).unwrap_or(i32::MAX);
        request.min_bytes = self.settings.min_bytes;
        request.max_bytes = room;
        request.isolation_level = self.settings.isolation_level;
        request.session_id = session.session_id;
        request.session_epoch = session.session_epoch;
        request.topics = session.topics;
        request.forgotten_topics_data = session.forgotten;
        if let Some(rack) = &self.settings.rack {
            request.rack_id = StrBytes::from_string(rack.clone());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = conn.send_version(request, version).await?;
        let code = ErrorCode::from_code(response.error_code);
        if code != ErrorCode::None {
            return Err(broker_error(code, "Fetch", None, None, None));
        }
        self.session.on_response(session.full, response.session_id);
        Ok((response, session.full))
    }

    /// A whole request failed: the partitions go back to a leader lookup.
    fn fail(&self, asked: &Asked, error: Error) {
        self.cluster.note_error(&error);
        let mut state = self.shared.lock();
        if !error.is_retriable() {
            state.errors.push(ConsumerError::Client(error));
        }
        for tp in asked.keys() {
            if let Some(p) = state.parts.get_mut(tp)
                && p.fetch_from == Some(self.broker)
            {
                p.fetch_from = None;
            }
        }
        state.needs_attention = true;
        drop(state);
        self.shared.data_ready.notify_one();
    }

    fn apply(&self, (response, _full): (FetchResponse, bool), asked: &Asked) {
        let mut state = self.shared.lock();
        let mut signal = false;
        let mut stale_metadata = false;
        let mut attention = false;
        let mut errors = Vec::new();
        let mut pushed = Vec::new();
        let mut out_of_range = Vec::new();
        for topic in response.responses {
            let name = topic.topic.0.to_string();
            for part in topic.partitions {
                let tp = TopicPartition::new(name.clone(), part.partition_index);
                let Some(&(generation, offset)) = asked.get(&tp) else {
                    continue;
                };
                let Some(p) = state.parts.get_mut(&tp) else {
                    continue;
                };
                if p.generation != generation || p.fetch_offset != offset {
                    continue;
                }
                match ErrorCode::from_code(part.error_code) {
                    ErrorCode::None => {}
                    ErrorCode::OffsetOutOfRange if p.leader.is_some_and(|l| l != self.broker) => {
                        // A follower serving us (KIP-392) may lag behind the leader: the leader,
                        // not the follower, says whether the offset is out of range (the Java
                        // client's rule), so go back to it rather than reset.
                        p.fetch_from = None;
                        attention = true;
                        signal = true;
                        continue;
                    }
                    ErrorCode::OffsetOutOfRange => {
                        if p.position == Some(offset) {
                            out_of_range.push(tp);
                            attention = true;
                            signal = true;
                        }
                        continue;
                    }
                    code @ (ErrorCode::NotLeaderOrFollower
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownLeaderEpoch
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::UnknownTopicId
                    | ErrorCode::KafkaStorageError
                    | ErrorCode::ReplicaNotAvailable
                    | ErrorCode::OffsetNotAvailable
                    | ErrorCode::LeaderNotAvailable) => {
                        tracing::debug!(%tp, %code, broker = self.broker, "partition moved");
                        p.fetch_from = None;
                        stale_metadata = true;
                        attention = true;
                        signal = true;
                        continue;
                    }
                    code => {
                        p.fetch_from = None;
                        errors.push(ConsumerError::Client(broker_error(
                            code,
                            "Fetch",
                            Some(&tp.topic),
                            Some(tp.partition),
                            None,
                        )));
                        attention = true;
                        signal = true;
                        continue;
                    }
                }
                p.high_watermark = part.high_watermark;
                p.last_stable_offset = part.last_stable_offset;
                p.log_start_offset = part.log_start_offset;
                let preferred = part.preferred_read_replica.0;
                if preferred >= 0 && preferred != self.broker {
                    p.fetch_from = Some(preferred);
                    p.preferred_until =
                        Some(Instant::now() + self.settings.preferred_replica_max_age);
                    attention = true;
                    signal = true;
                }
                let Some(records) = part.records.filter(|r| !r.is_empty()) else {
                    continue;
                };
                // Read batch headers only, to learn where the next fetch starts.
                let mut next = offset;
                let mut batches = RecordBatches::new(records.clone());
                let mut corrupt = None;
                for batch in batches.by_ref() {
                    match batch {
                        Ok(b) => next = next.max(b.next_offset()),
                        Err(e) => {
                            corrupt = Some(e);
                            break;
                        }
                    }
                }
                if let Some(source) = corrupt {
                    p.fetch_from = None;
                    errors.push(ConsumerError::Corrupt {
                        tp,
                        offset: next,
                        source,
                    });
                    signal = true;
                    continue;
                }
                if next <= offset {
                    // Only a partial batch came back; the next fetch asks again.
                    continue;
                }
                let used = records.len() - batches.partial_tail();
                let records = records.slice(..used);
                p.fetch_offset = next;
                let aborted = part
                    .aborted_transactions
                    .map(|list| {
                        let mut v: Vec<(i64, i64)> = list
                            .into_iter()
                            .map(|a| (a.producer_id.0, a.first_offset))
                            .collect();
                        v.sort_by_key(|&(_, first)| first);
                        v
                    })
                    .unwrap_or_default();
                pushed.push(Fetched {
                    tp,
                    generation,
                    fetch_offset: offset,
                    next_offset: next,
                    records,
                    aborted,
                    high_watermark: part.high_watermark,
                });
                signal = true;
            }
        }
        for tp in out_of_range {
            // The position is looked up again as `auto.offset.reset` says: `poll` resets only
            // partitions without a position (a seek meanwhile would have moved it).
            let generation = state.bump_generation();
            if let Some(p) = state.parts.get_mut(&tp) {
                p.position = None;
                p.position_epoch = None;
                p.reset = Some(Reset::Auto);
                p.generation = generation;
            }
            state.drop_buffered(&tp);
        }
        state.needs_attention |= attention;
        state.errors.extend(errors);
        for f in pushed {
            state.buffered_bytes += f.records.len();
            state.ready.push_back(f);
        }
        drop(state);
        if stale_metadata {
            self.cluster.invalidate_metadata();
        }
        if signal {
            self.shared.data_ready.notify_one();
        }
    }
}
