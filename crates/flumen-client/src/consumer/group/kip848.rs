//! The KIP-848 consumer group protocol (`group.protocol=consumer`): one
//! ConsumerGroupHeartbeat API, assignment computed by the broker.
//!
//! A heartbeat task sends the member's subscription and the partitions it currently owns;
//! the broker answers with the member epoch and, when it changed, the target assignment
//! (by topic id). `poll` applies a new target: it revokes what is no longer in it (listener,
//! commit), adds the rest, and tells the heartbeat task, whose next heartbeat reports the new
//! owned set; the broker hands revoked partitions to others only after that report.
//! The task also wakes at the poll deadline: a member whose application stops polling leaves
//! (epoch -1) once `max.poll.interval.ms` has passed, not at its next heartbeat.
//!
//! A broker without the protocol (Kafka 3.x, or 4.x with `group.coordinator.rebalance.protocols`
//! lacking `consumer`) either does not offer ConsumerGroupHeartbeat or answers it with
//! UNSUPPORTED_VERSION (3.7 to 3.9 offer the API even with the protocol off). Either way the
//! heartbeat task stops and every later `poll` fails with [`Error::UnsupportedFeature`] naming
//! the broker and its release, as the Java client fails with UnsupportedVersionException;
//! retrying would only turn the misconfiguration into a consumer that silently reads nothing.
//!
//! # References
//! KIP-848 (the next-generation consumer rebalance protocol).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use flumen_protocol::ErrorCode;
use flumen_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use flumen_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, StrBytes,
    TopicName,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::poll_clock::PollClock;
use crate::cluster::{Cluster, CoordinatorType, TopicPartition};
use crate::consumer::ConsumerConfig;
use crate::consumer::state::Shared;
use crate::error::Error;

/// What the heartbeat task and `poll` share.
#[derive(Debug, Default)]
pub(crate) struct Kip848State {
    pub(crate) member_id: String,
    pub(crate) epoch: i32,
    pub(crate) topics: BTreeSet<String>,
    /// Partitions owned, by topic id (reported in each heartbeat).
    pub(crate) owned: BTreeMap<Uuid, Vec<i32>>,
    /// A target assignment not yet applied by `poll`.
    pub(crate) target: Option<BTreeMap<Uuid, Vec<i32>>>,
    /// Why the member was fenced, if it was (its partitions are lost).
    pub(crate) lost: Option<String>,
    pub(crate) leaving: bool,
    /// The coordinator does not offer the protocol: the heartbeat task has stopped and every
    /// `poll` fails with this.
    pub(crate) unsupported: Option<Unsupported>,
}

/// Why the coordinator cannot run a KIP-848 member (the parts of an
/// [`Error::UnsupportedFeature`], which is not `Clone`).
#[derive(Debug, Clone)]
pub(crate) struct Unsupported {
    addr: String,
    release: &'static str,
    reason: String,
}

impl Unsupported {
    pub(crate) fn to_error(&self) -> Error {
        Error::UnsupportedFeature {
            feature: "the KIP-848 consumer group protocol (group.protocol=consumer)",
            addr: self.addr.clone(),
            release: self.release,
            reason: self.reason.clone(),
            remedy: "Kafka brokers offer it from 4.0 on (3.7 to 3.9 only as early access, off \
                     unless group.coordinator.rebalance.protocols includes consumer); use \
                     group.protocol=classic with this cluster",
        }
    }
}

impl Kip848State {
    /// The member is out of the group: it rejoins with epoch 0 and owns nothing. A target
    /// that `poll` has not applied yet belonged to the old membership and is dropped with it
    /// (applied later, it would hand this member partitions another member owns now).
    fn set_lost(&mut self, reason: String) {
        self.epoch = 0;
        self.lost = Some(reason);
        self.target = None;
        self.owned.clear();
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<Kip848State>,
    wake: Notify,
    polls: PollClock,
}

/// A KIP-848 member.
#[derive(Debug)]
pub(crate) struct Kip848Member {
    cluster: Cluster,
    config: Arc<ConsumerConfig>,
    consumer: Arc<Shared>,
    inner: Arc<Inner>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Kip848Member {
    fn drop(&mut self) {
        self.stop();
    }
}

fn new_member_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Kip848Member {
    pub(crate) fn new(
        cluster: Cluster,
        config: Arc<ConsumerConfig>,
        consumer: Arc<Shared>,
    ) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(Kip848State {
                member_id: new_member_id(),
                ..Kip848State::default()
            }),
            wake: Notify::new(),
            polls: PollClock::new(),
        });
        Kip848Member {
            cluster,
            config,
            consumer,
            inner,
            task: None,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Kip848State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn note_poll(&self) {
        self.inner.polls.note_poll();
    }

    pub(crate) fn generation(&self) -> (i32, String) {
        let s = self.lock();
        (s.epoch, s.member_id.clone())
    }

    /// Sets the subscription and makes sure the heartbeat task runs.
    pub(crate) fn subscribe(&mut self, topics: BTreeSet<String>) {
        {
            let mut s = self.lock();
            // A task that ended (the member left after `max.poll.interval.ms`) is restarted:
            // that is the rejoin.
            if s.topics == topics && self.task.as_ref().is_some_and(|t| !t.is_finished()) {
                return;
            }
            s.topics = topics;
        }
        self.inner.wake.notify_one();
        if self.task.as_ref().is_none_or(|t| t.is_finished()) {
            self.note_poll();
            let task = Heartbeat {
                cluster: self.cluster.clone(),
                config: self.config.clone(),
                consumer: self.consumer.clone(),
                inner: self.inner.clone(),
            };
            self.task = Some(tokio::spawn(task.run()));
        }
    }

    /// Records what `poll` now owns; the next heartbeat (sent now) reports it.
    pub(crate) fn set_owned(&self, owned: BTreeMap<Uuid, Vec<i32>>) {
        self.lock().owned = owned;
        self.inner.wake.notify_one();
    }

    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Leaves the group (epoch -1; -2 for a static member, which keeps its assignment for
    /// the session timeout).
    pub(crate) async fn leave(&mut self, static_member: bool) {
        self.stop();
        let (member_id, topics) = {
            let mut s = self.lock();
            s.leaving = true;
            if s.unsupported.is_some() {
                // Never a member: nothing to leave, and the coordinator cannot take it.
                return;
            }
            (s.member_id.clone(), s.topics.clone())
        };
        let mut request = base_request(
            &self.config,
            &member_id,
            if static_member { -2 } else { -1 },
        );
        request.subscribed_topic_names = Some(
            topics
                .into_iter()
                .map(|t| TopicName(StrBytes::from_string(t)))
                .collect(),
        );
        let group = self.config.group_id.clone().unwrap_or_default();
        let attempt = async {
            let conn = self
                .cluster
                .coordinator_connection(CoordinatorType::Group, &group)
                .await?;
            let response = conn.send(request).await?;
            Error::check_code("ConsumerGroupHeartbeat", response.error_code, None)
        };
        if let Err(e) = attempt.await {
            tracing::debug!(group, error = %e, "leaving the group failed");
        }
    }

    /// Maps topic ids of an assignment to names (refreshing metadata for unknown ids).
    pub(crate) async fn resolve(
        &self,
        target: &BTreeMap<Uuid, Vec<i32>>,
    ) -> crate::Result<Vec<TopicPartition>> {
        let topics: Vec<String> = self.lock().topics.iter().cloned().collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let _ = self.cluster.topics(&names).await?;
        let mut metadata = self.cluster.metadata();
        let known = |m: &crate::cluster::Metadata, id: &Uuid| {
            m.topics
                .values()
                .find(|t| t.id == *id)
                .map(|t| t.name.clone())
        };
        if target.keys().any(|id| known(&metadata, id).is_none()) {
            metadata = self.cluster.all_topics().await?;
        }
        let mut out = Vec::new();
        for (id, parts) in target {
            match known(&metadata, id) {
                Some(name) => {
                    out.extend(parts.iter().map(|p| TopicPartition::new(name.clone(), *p)))
                }
                None => tracing::warn!(%id, "assigned a topic id the metadata does not know"),
            }
        }
        out.sort();
        Ok(out)
    }

    /// The topic ids of `tps` (from the metadata).
    pub(crate) fn ids_of(&self, tps: &[TopicPartition]) -> BTreeMap<Uuid, Vec<i32>> {
        let metadata = self.cluster.metadata();
        let mut out: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            if let Some(t) = metadata.topic(&tp.topic) {
                out.entry(t.id).or_default().push(tp.partition);
            }
        }
        out
    }
}

fn base_request(
    config: &ConsumerConfig,
    member_id: &str,
    epoch: i32,
) -> ConsumerGroupHeartbeatRequest {
    let mut r = ConsumerGroupHeartbeatRequest::default();
    r.group_id = GroupId(StrBytes::from_string(
        config.group_id.clone().unwrap_or_default(),
    ));
    r.member_id = StrBytes::from_string(member_id.to_owned());
    r.member_epoch = epoch;
    r.instance_id = config.group_instance_id.clone().map(StrBytes::from_string);
    r.rebalance_timeout_ms =
        i32::try_from(config.max_poll_interval.as_millis()).unwrap_or(i32::MAX);
    r
}

struct Heartbeat {
    cluster: Cluster,
    config: Arc<ConsumerConfig>,
    consumer: Arc<Shared>,
    inner: Arc<Inner>,
}

impl Heartbeat {
    async fn run(self) {
        let group = self.config.group_id.clone().unwrap_or_default();
        let mut interval = self.config.heartbeat_interval;
        let mut backoff = self.cluster.config().retry_policy().start();
        // The first heartbeat (the join) goes out at once.
        let mut next_heartbeat = Instant::now();
        loop {
            if Instant::now() < next_heartbeat && !self.poll_expired() {
                // Wake at the poll deadline too, as the Java client does: a member that stops
                // polling leaves when `max.poll.interval.ms` has passed, not up to one heartbeat
                // interval later. `poll` changing what the member owns or subscribes to asks for
                // a heartbeat at once.
                let until = next_heartbeat.min(self.poll_deadline());
                let woken = tokio::time::timeout_at(until, self.inner.wake.notified()).await;
                if woken.is_err() && Instant::now() < next_heartbeat && !self.poll_expired() {
                    // The poll deadline moved (a poll came): sleep on.
                    continue;
                }
            }
            let mut request = {
                let s = self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if s.leaving {
                    return;
                }
                let mut r = base_request(&self.config, &s.member_id, s.epoch);
                r.rack_id = self
                    .cluster
                    .config()
                    .client_rack
                    .clone()
                    .map(StrBytes::from_string);
                r.subscribed_topic_names = Some(
                    s.topics
                        .iter()
                        .map(|t| TopicName(StrBytes::from_string(t.clone())))
                        .collect(),
                );
                r.server_assignor = self
                    .config
                    .group_remote_assignor
                    .clone()
                    .map(StrBytes::from_string);
                r.topic_partitions = Some(
                    s.owned
                        .iter()
                        .map(|(id, parts)| {
                            let mut t = TopicPartitions::default();
                            t.topic_id = *id;
                            t.partitions = parts.clone();
                            t
                        })
                        .collect(),
                );
                r
            };
            if self.poll_expired() {
                // Lost before the leave goes out, so that a commit of the old positions fails
                // in the client from now on (as in the Java client).
                self.inner
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .set_lost("poll() was not called within max.poll.interval.ms".to_owned());
                self.consumer.data_ready.notify_one();
                request.member_epoch = -1;
                let _ = self.send(&group, request).await;
                return;
            }
            // A heartbeat still unanswered at the poll deadline (a slow or unreachable
            // coordinator) does not delay leaving.
            let heartbeat = self.send(&group, request);
            tokio::pin!(heartbeat);
            let sent = loop {
                tokio::select! {
                    sent = &mut heartbeat => break Some(sent),
                    () = tokio::time::sleep_until(self.poll_deadline()) => {
                        if self.poll_expired() {
                            break None;
                        }
                    }
                }
            };
            let Some(sent) = sent else {
                // The top of the loop leaves.
                continue;
            };
            next_heartbeat = Instant::now() + interval;
            match sent {
                Ok(response) => {
                    backoff.reset();
                    let code = ErrorCode::from_code(response.error_code);
                    let mut s = self
                        .inner
                        .state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    match code {
                        ErrorCode::None => {
                            if let Some(id) = response.member_id {
                                s.member_id = id.to_string();
                            }
                            s.epoch = response.member_epoch;
                            if response.heartbeat_interval_ms > 0 {
                                interval =
                                    Duration::from_millis(response.heartbeat_interval_ms as u64);
                                next_heartbeat = Instant::now() + interval;
                            }
                            if let Some(a) = response.assignment {
                                let mut target: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
                                for t in a.topic_partitions {
                                    let mut parts = t.partitions;
                                    parts.sort_unstable();
                                    target.insert(t.topic_id, parts);
                                }
                                s.target = Some(target);
                                drop(s);
                                self.consumer.data_ready.notify_one();
                            }
                        }
                        ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch => {
                            s.set_lost(format!("heartbeat answered {code}"));
                            drop(s);
                            self.consumer.data_ready.notify_one();
                        }
                        code => {
                            drop(s);
                            let e = crate::cluster::broker_error(
                                code,
                                "ConsumerGroupHeartbeat",
                                None,
                                None,
                                response.error_message.map(|m| m.to_string()),
                            );
                            self.cluster
                                .note_coordinator_error(CoordinatorType::Group, &group, &e);
                            tracing::debug!(group, error = %e, "heartbeat failed");
                            if !e.is_retriable() && code != ErrorCode::UnreleasedInstanceId {
                                tracing::warn!(group, error = %e, "group heartbeat error");
                            }
                            next_heartbeat = Instant::now() + backoff.next_backoff();
                        }
                    }
                }
                Err(HeartbeatError::Unsupported(u)) => {
                    tracing::error!(group, error = %u.to_error(), "group heartbeat impossible");
                    self.inner
                        .state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .unsupported = Some(u);
                    self.consumer.data_ready.notify_one();
                    return;
                }
                Err(HeartbeatError::Client(e)) => {
                    self.cluster
                        .note_coordinator_error(CoordinatorType::Group, &group, &e);
                    tracing::debug!(group, error = %e, "heartbeat failed");
                    next_heartbeat = Instant::now() + backoff.next_backoff();
                }
            }
        }
    }

    fn poll_deadline(&self) -> Instant {
        self.inner.polls.deadline(self.config.max_poll_interval)
    }

    fn poll_expired(&self) -> bool {
        self.inner.polls.expired(self.config.max_poll_interval)
    }

    /// Sends one heartbeat to the coordinator; a coordinator without the protocol is
    /// [`HeartbeatError::Unsupported`], whatever way it says so.
    async fn send(
        &self,
        group: &str,
        request: ConsumerGroupHeartbeatRequest,
    ) -> Result<ConsumerGroupHeartbeatResponse, HeartbeatError> {
        let conn = self
            .cluster
            .coordinator_connection(CoordinatorType::Group, group)
            .await?;
        let unsupported = |reason: &str| {
            HeartbeatError::Unsupported(Unsupported {
                addr: conn.addr().to_owned(),
                release: conn
                    .api_versions()
                    .map_or("a broker of unknown release", |v| v.release_estimate()),
                reason: reason.to_owned(),
            })
        };
        if conn.api_version(ApiKey::ConsumerGroupHeartbeat).is_none() {
            return Err(unsupported(
                "it does not offer the ConsumerGroupHeartbeat API",
            ));
        }
        let response = conn.send(request).await?;
        if response.error_code == ErrorCode::UnsupportedVersion.code() {
            let message = response
                .error_message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            return Err(unsupported(&format!(
                "ConsumerGroupHeartbeat answered UNSUPPORTED_VERSION{message}"
            )));
        }
        Ok(response)
    }
}

/// How a heartbeat failed: the coordinator cannot run the protocol at all (final), or
/// anything else (retried with backoff).
#[derive(Debug)]
enum HeartbeatError {
    Unsupported(Unsupported),
    Client(Error),
}

impl From<Error> for HeartbeatError {
    fn from(e: Error) -> Self {
        HeartbeatError::Client(e)
    }
}
