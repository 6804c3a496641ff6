//! The classic group protocol: JoinGroup / SyncGroup / Heartbeat / LeaveGroup.
//!
//! Joining runs inside `poll` (like the Java client): a member that does not poll cannot
//! finish a rebalance, which is what `max.poll.interval.ms` (sent as the rebalance timeout)
//! is about. Heartbeats run on their own task, so processing speed does not matter as long as
//! `poll` comes back within `max.poll.interval.ms`; when it does not, the heartbeat task
//! (which sleeps until the next heartbeat or the poll deadline, whichever comes first) leaves
//! the group at the deadline (the Java client's behaviour) and the next `poll` reports the
//! partitions lost and rejoins.
//!
//! Join and sync use a connection of their own whose request timeout covers the rebalance
//! timeout (a JoinGroup legitimately waits for every member); heartbeats and commits use the
//! pooled group connection, so they never queue behind a pending JoinGroup.
//!
//! # References
//! KIP-345 (static membership), KIP-394 (member id required), KIP-429 (cooperative
//! rebalancing), KIP-814 (static leader skips assignment).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use flumen_protocol::messages::leave_group_request::MemberIdentity;
use flumen_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use flumen_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, StrBytes, SyncGroupRequest,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use bytes::Bytes;

use super::assignor::{self, MemberSubscription, co_partitioned};
use super::poll_clock::PollClock;
use crate::cluster::{Cluster, CoordinatorType, TopicPartition, broker_error};
use crate::connection::Connection;
use crate::consumer::error::{ConsumerError, Result};
use crate::consumer::state::Shared;
use crate::consumer::{AssignmentStrategy, ConsumerConfig};
use crate::error::Error;

const PROTOCOL_TYPE: &str = "consumer";

/// How often a leader compares the subscribed topics' metadata with its last assignment.
const METADATA_CHECK: Duration = Duration::from_secs(1);

/// What the leader assigned from: the partition count of each subscribed topic (a topic
/// that did not exist then is absent), and when the cluster was last compared with it.
#[derive(Debug)]
struct Led {
    topics: Vec<String>,
    counts: BTreeMap<String, i32>,
    checked: Instant,
}

/// Where the member stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Must (re)join before its assignment is current.
    NeedsJoin,
    /// In the group with a current assignment; heartbeating.
    Stable,
    /// Thrown out (fenced, timed out): its partitions are lost.
    Lost(String),
}

/// State shared with the heartbeat task.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) member_id: String,
    pub(crate) generation: i32,
    pub(crate) status: Status,
}

#[derive(Debug)]
pub(crate) struct GroupShared {
    pub(crate) membership: Mutex<Membership>,
    pub(crate) polls: PollClock,
}

impl GroupShared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn note_poll(&self) {
        self.polls.note_poll();
    }
}

/// A classic-protocol member.
#[derive(Debug)]
pub(crate) struct ClassicMember {
    cluster: Cluster,
    config: Arc<ConsumerConfig>,
    consumer: Arc<Shared>,
    pub(crate) shared: Arc<GroupShared>,
    group_id: String,
    conn: Option<Connection>,
    /// The strategy of the current generation.
    protocol: Option<AssignmentStrategy>,
    heartbeat: Option<JoinHandle<()>>,
    /// The topics of the last successful join (a change means rejoin).
    joined_topics: Option<BTreeSet<String>>,
    /// The partition numbers the co-partitioned assignor gave this member standbys of.
    pub(crate) standbys: Vec<i32>,
    /// Set while this member leads the current generation.
    led: Option<Led>,
}

impl Drop for ClassicMember {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ClassicMember {
    pub(crate) fn new(
        cluster: Cluster,
        config: Arc<ConsumerConfig>,
        consumer: Arc<Shared>,
    ) -> Self {
        let group_id = config.group_id.clone().unwrap_or_default();
        let shared = Arc::new(GroupShared {
            membership: Mutex::new(Membership {
                member_id: String::new(),
                generation: -1,
                status: Status::NeedsJoin,
            }),
            polls: PollClock::new(),
        });
        ClassicMember {
            cluster,
            config,
            consumer,
            shared,
            group_id,
            conn: None,
            protocol: None,
            heartbeat: None,
            joined_topics: None,
            standbys: Vec::new(),
            led: None,
        }
    }

    pub(crate) fn joined_topics(&self) -> Option<&BTreeSet<String>> {
        self.joined_topics.as_ref()
    }

    pub(crate) fn set_joined_topics(&mut self, topics: BTreeSet<String>) {
        self.joined_topics = Some(topics);
    }

    /// Whether the next rebalance keeps owned partitions (cooperative) or revokes all first.
    pub(crate) fn is_cooperative(&self) -> bool {
        match self.protocol {
            Some(p) => p.is_cooperative(),
            None => self
                .config
                .assignment_strategies
                .iter()
                .all(|s| s.is_cooperative()),
        }
    }

    /// Stops heartbeating (without leaving).
    pub(crate) fn stop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    async fn connection(&mut self) -> Result<Connection> {
        if let Some(c) = self.conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let broker = self
            .cluster
            .coordinator(CoordinatorType::Group, &self.group_id)
            .await?;
        let mut settings = self.cluster.config().connection_config();
        settings.request_timeout = settings
            .request_timeout
            .max(self.config.max_poll_interval + Duration::from_secs(5));
        match Connection::connect(&broker.addr(), &settings).await {
            Ok(c) => {
                self.conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.cluster
                    .invalidate_coordinator(CoordinatorType::Group, &self.group_id);
                Err(e.into())
            }
        }
    }

    fn on_coordinator_error(&mut self, e: &Error) {
        if self
            .cluster
            .note_coordinator_error(CoordinatorType::Group, &self.group_id, e)
        {
            self.conn = None;
        }
    }

    /// Joins (or rejoins) and syncs; returns the new assignment.
    pub(crate) async fn join(
        &mut self,
        topics: &BTreeSet<String>,
        owned: &[TopicPartition],
    ) -> Result<Vec<TopicPartition>> {
        self.stop();
        let policy = self.cluster.config().retry_policy();
        let mut backoff = policy.start();
        let deadline = Instant::now()
            + self
                .config
                .max_poll_interval
                .max(self.cluster.config().default_api_timeout);
        loop {
            match self.join_once(topics, owned).await {
                Ok(Some(assignment)) => {
                    self.start_heartbeat();
                    return Ok(assignment);
                }
                Ok(None) => continue,
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::debug!(group = %self.group_id, error = %e, "join failed; retrying");
                    tokio::time::sleep(backoff.next_backoff()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One JoinGroup + SyncGroup round. `Ok(None)`: go round again at once.
    async fn join_once(
        &mut self,
        topics: &BTreeSet<String>,
        owned: &[TopicPartition],
    ) -> Result<Option<Vec<TopicPartition>>> {
        self.led = None;
        let conn = self.connection().await?;
        let (member_id, generation) = {
            let m = self.shared.lock();
            (m.member_id.clone(), m.generation)
        };
        let metadata = assignor::encode_subscription(
            topics,
            owned,
            generation,
            self.cluster.config().client_rack.as_deref(),
            self.subscription_user_data(),
        )?;
        let mut request = JoinGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.group_id.clone()));
        request.session_timeout_ms = millis(self.config.session_timeout);
        request.rebalance_timeout_ms = millis(self.config.max_poll_interval);
        request.member_id = StrBytes::from_string(member_id.clone());
        request.group_instance_id = self
            .config
            .group_instance_id
            .clone()
            .map(StrBytes::from_string);
        request.protocol_type = StrBytes::from_static_str(PROTOCOL_TYPE);
        request.protocols = self
            .config
            .assignment_strategies
            .iter()
            .map(|s| {
                let mut p = JoinGroupRequestProtocol::default();
                p.name = StrBytes::from_static_str(s.protocol_name());
                p.metadata = metadata.clone();
                p
            })
            .collect();
        tracing::debug!(group = %self.group_id, member = %member_id, generation, "joining the group");
        let response = match conn.send(request).await {
            Ok(r) => r,
            Err(e) => {
                self.on_coordinator_error(&e);
                return Err(e.into());
            }
        };
        let code = ErrorCode::from_code(response.error_code);
        if code != ErrorCode::None {
            tracing::debug!(group = %self.group_id, %code, "JoinGroup answered an error");
        }
        match code {
            ErrorCode::None => {}
            ErrorCode::MemberIdRequired => {
                self.shared.lock().member_id = response.member_id.to_string();
                return Ok(None);
            }
            ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration => {
                let mut m = self.shared.lock();
                m.member_id.clear();
                m.generation = -1;
                return Ok(None);
            }
            ErrorCode::RebalanceInProgress => return Ok(None),
            code => {
                let e = broker_error(code, "JoinGroup", None, None, Some(self.group_id.clone()));
                self.on_coordinator_error(&e);
                return Err(e.into());
            }
        }
        let member_id = response.member_id.to_string();
        let generation = response.generation_id;
        let protocol_name = response
            .protocol_name
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let strategy = AssignmentStrategy::from_protocol_name(&protocol_name).ok_or_else(|| {
            ConsumerError::Client(broker_error(
                ErrorCode::InconsistentGroupProtocol,
                "JoinGroup",
                None,
                None,
                Some(format!(
                    "the group chose unknown protocol {protocol_name:?}"
                )),
            ))
        })?;
        {
            let mut m = self.shared.lock();
            m.member_id = member_id.clone();
            m.generation = generation;
        }
        self.protocol = Some(strategy);
        tracing::info!(
            group = %self.group_id,
            member = %member_id,
            generation,
            leader = %response.leader,
            protocol = %protocol_name,
            "joined the group"
        );
        let assignments = if response.leader.as_str() == member_id && !response.skip_assignment {
            let members = response
                .members
                .into_iter()
                .map(|m| {
                    assignor::decode_subscription(
                        m.member_id.to_string(),
                        m.group_instance_id.map(|s| s.to_string()),
                        m.metadata,
                    )
                })
                .collect::<Result<Vec<MemberSubscription>, Error>>()?;
            let (assignments, led) = self.lead(strategy, &members).await?;
            self.led = Some(led);
            assignments
        } else {
            Vec::new()
        };
        let mut sync = SyncGroupRequest::default();
        sync.group_id = GroupId(StrBytes::from_string(self.group_id.clone()));
        sync.generation_id = generation;
        sync.member_id = StrBytes::from_string(member_id);
        sync.group_instance_id = self
            .config
            .group_instance_id
            .clone()
            .map(StrBytes::from_string);
        sync.protocol_type = Some(StrBytes::from_static_str(PROTOCOL_TYPE));
        sync.protocol_name = Some(StrBytes::from_string(protocol_name));
        sync.assignments = assignments;
        let response = match conn.send(sync).await {
            Ok(r) => r,
            Err(e) => {
                self.on_coordinator_error(&e);
                return Err(e.into());
            }
        };
        let code = ErrorCode::from_code(response.error_code);
        if code != ErrorCode::None {
            tracing::debug!(group = %self.group_id, %code, "SyncGroup answered an error");
        }
        match code {
            ErrorCode::None => {}
            ErrorCode::RebalanceInProgress => return Ok(None),
            ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration => {
                let mut m = self.shared.lock();
                m.member_id.clear();
                m.generation = -1;
                return Ok(None);
            }
            code => {
                let e = broker_error(code, "SyncGroup", None, None, Some(self.group_id.clone()));
                self.on_coordinator_error(&e);
                return Err(e.into());
            }
        }
        let assignment = assignor::decode_assignment(response.assignment)?;
        self.standbys = match (strategy, assignment.user_data) {
            (AssignmentStrategy::CoPartitioned, Some(data)) => {
                co_partitioned::decode_standbys(data).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        self.shared.lock().status = Status::Stable;
        tracing::info!(
            group = %self.group_id,
            generation,
            partitions = ?assignment.partitions,
            "synced the group"
        );
        Ok(Some(assignment.partitions))
    }

    /// The co-partitioned assignor's member data, when that assignor is among ours and there
    /// is something to say.
    fn subscription_user_data(&self) -> Option<Bytes> {
        let c = &self.config;
        let co_partitioned = c
            .assignment_strategies
            .contains(&AssignmentStrategy::CoPartitioned);
        (co_partitioned && (c.standby_replicas > 0 || c.process_id.is_some())).then(|| {
            co_partitioned::MemberData {
                standby_replicas: c.standby_replicas,
                process: c.process_id.clone(),
                standbys: self.standbys.clone(),
            }
            .encode()
        })
    }

    /// The leader's work: partition counts, then the assignor.
    async fn lead(
        &self,
        strategy: AssignmentStrategy,
        members: &[MemberSubscription],
    ) -> Result<(Vec<SyncGroupRequestAssignment>, Led)> {
        let topics: BTreeSet<&str> = members
            .iter()
            .flat_map(|m| m.topics.iter().map(String::as_str))
            .collect();
        let topics: Vec<&str> = topics.into_iter().collect();
        let found = self.cluster.topics(&topics).await?;
        let mut counts = BTreeMap::new();
        for (name, t) in topics.iter().zip(found) {
            // A topic that does not exist (yet) is simply not assigned.
            if let Ok(t) = t {
                counts.insert((*name).to_owned(), t.partitions.len() as i32);
            }
        }
        let plan = assignor::assign(strategy, members, &counts);
        let mut standbys = if strategy == AssignmentStrategy::CoPartitioned {
            let numbers = counts.values().copied().max().unwrap_or(0);
            co_partitioned::place_standbys(members, &plan, numbers)
        } else {
            BTreeMap::new()
        };
        tracing::debug!(group = %self.group_id, ?strategy, members = members.len(), ?standbys, "assigned partitions");
        let assignments = plan
            .into_iter()
            .map(|(member, tps)| {
                // No user data: no standbys.
                let data = standbys
                    .remove(&member)
                    .map(|numbers| co_partitioned::encode_standbys(&numbers));
                let mut a = SyncGroupRequestAssignment::default();
                a.member_id = StrBytes::from_string(member);
                a.assignment = assignor::encode_assignment(&tps, data)?;
                Ok(a)
            })
            .collect::<Result<Vec<_>, Error>>()
            .map_err(ConsumerError::from)?;
        let led = Led {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            counts,
            checked: Instant::now(),
        };
        Ok((assignments, led))
    }

    /// As the Java client's leader does: whether a subscribed topic was created, deleted or
    /// given more partitions since this member last assigned them, which needs a rebalance.
    /// Compared at most once per [`METADATA_CHECK`]; the metadata is fetched again only for
    /// a topic it lacks, or once it is older than `metadata.max.age.ms`.
    pub(crate) async fn metadata_changed(&mut self) -> bool {
        let Some(led) = &mut self.led else {
            return false;
        };
        if led.checked.elapsed() < METADATA_CHECK {
            return false;
        }
        led.checked = Instant::now();
        let names: Vec<&str> = led.topics.iter().map(String::as_str).collect();
        let Ok(found) = self.cluster.topics(&names).await else {
            return false;
        };
        let changed = names.iter().zip(found).any(|(name, t)| {
            let now = t.ok().map(|t| t.partitions.len() as i32);
            now != led.counts.get(*name).copied()
        });
        if changed {
            tracing::info!(group = %self.group_id, "subscribed topics changed: rebalancing");
        }
        changed
    }

    fn start_heartbeat(&mut self) {
        self.stop();
        let task = Heartbeat {
            cluster: self.cluster.clone(),
            group_id: self.group_id.clone(),
            instance_id: self.config.group_instance_id.clone(),
            shared: self.shared.clone(),
            consumer: self.consumer.clone(),
            interval: self.config.heartbeat_interval,
            max_poll_interval: self.config.max_poll_interval,
        };
        self.shared.note_poll();
        self.heartbeat = Some(tokio::spawn(task.run()));
    }

    /// Leaves the group (LeaveGroup), best effort.
    pub(crate) async fn leave(&mut self) {
        self.stop();
        let member_id = {
            let mut m = self.shared.lock();
            let id = std::mem::take(&mut m.member_id);
            m.generation = -1;
            m.status = Status::NeedsJoin;
            id
        };
        if member_id.is_empty() {
            return;
        }
        leave_group(
            &self.cluster,
            &self.group_id,
            member_id,
            self.config.group_instance_id.clone(),
            "the consumer is closing",
        )
        .await;
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

async fn leave_group(
    cluster: &Cluster,
    group_id: &str,
    member_id: String,
    instance_id: Option<String>,
    reason: &'static str,
) {
    let attempt = async {
        let conn = cluster
            .coordinator_connection(CoordinatorType::Group, group_id)
            .await?;
        let mut request = LeaveGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(group_id.to_owned()));
        // Versions 3+ (all a Kafka 4 broker accepts) name the leaving members in `members`
        // only; the top-level member id does not exist there and would fail to encode.
        let mut who = MemberIdentity::default();
        who.member_id = StrBytes::from_string(member_id);
        who.group_instance_id = instance_id.map(StrBytes::from_string);
        who.reason = Some(StrBytes::from_static_str(reason));
        request.members = vec![who];
        let response = conn.send(request).await?;
        Error::check_code("LeaveGroup", response.error_code, None)?;
        for member in &response.members {
            Error::check_code("LeaveGroup", member.error_code, None)?;
        }
        Ok::<(), Error>(())
    };
    if let Err(e) = attempt.await {
        tracing::warn!(group = group_id, error = %e, "LeaveGroup failed");
    }
}

struct Heartbeat {
    cluster: Cluster,
    group_id: String,
    instance_id: Option<String>,
    shared: Arc<GroupShared>,
    consumer: Arc<Shared>,
    interval: Duration,
    max_poll_interval: Duration,
}

impl Heartbeat {
    async fn run(self) {
        let mut next_heartbeat = Instant::now() + self.interval;
        loop {
            // Wake at the poll deadline too, as the Java client's heartbeat thread does: a member
            // that stops polling leaves when `max.poll.interval.ms` has passed, not up to one
            // heartbeat interval later. A poll meanwhile moves the deadline; then sleep again.
            let poll_deadline = self.shared.polls.deadline(self.max_poll_interval);
            tokio::time::sleep_until(next_heartbeat.min(poll_deadline)).await;
            let (member_id, generation) = {
                let m = self.shared.lock();
                if m.status != Status::Stable {
                    return;
                }
                (m.member_id.clone(), m.generation)
            };
            if self.poll_expired() {
                self.leave_after_poll_timeout(member_id).await;
                return;
            }
            if Instant::now() < next_heartbeat {
                continue;
            }
            next_heartbeat = Instant::now() + self.interval;
            // A heartbeat still unanswered at the poll deadline (a slow or unreachable
            // coordinator) does not delay leaving.
            let heartbeat = self.heartbeat(member_id.clone(), generation);
            tokio::pin!(heartbeat);
            let result = loop {
                let poll_deadline = self.shared.polls.deadline(self.max_poll_interval);
                tokio::select! {
                    result = &mut heartbeat => break Some(result),
                    () = tokio::time::sleep_until(poll_deadline) => {
                        if self.poll_expired() {
                            break None;
                        }
                    }
                }
            };
            let Some(result) = result else {
                self.leave_after_poll_timeout(member_id).await;
                return;
            };
            match result {
                Ok(()) => {}
                Err(e) => match e.code() {
                    Some(ErrorCode::RebalanceInProgress) => {
                        tracing::info!(group = %self.group_id, generation, "the group is rebalancing; rejoining");
                        self.set(Status::NeedsJoin);
                        return;
                    }
                    Some(
                        code @ (ErrorCode::UnknownMemberId
                        | ErrorCode::IllegalGeneration
                        | ErrorCode::FencedInstanceId),
                    ) => {
                        tracing::info!(group = %self.group_id, generation, %code, "heartbeat fenced this member");
                        self.set(Status::Lost(format!("heartbeat answered {code}")));
                        return;
                    }
                    _ => {
                        self.cluster.note_coordinator_error(
                            CoordinatorType::Group,
                            &self.group_id,
                            &e,
                        );
                        tracing::debug!(group = %self.group_id, error = %e, "heartbeat failed");
                    }
                },
            }
        }
    }

    fn poll_expired(&self) -> bool {
        self.shared.polls.expired(self.max_poll_interval)
    }

    async fn heartbeat(&self, member_id: String, generation: i32) -> Result<(), Error> {
        let conn = self
            .cluster
            .coordinator_connection(CoordinatorType::Group, &self.group_id)
            .await?;
        let mut request = HeartbeatRequest::default();
        request.group_id = GroupId(StrBytes::from_string(self.group_id.clone()));
        request.generation_id = generation;
        request.member_id = StrBytes::from_string(member_id);
        request.group_instance_id = self.instance_id.clone().map(StrBytes::from_string);
        let response = conn.send(request).await?;
        Error::check_code("Heartbeat", response.error_code, None)
    }

    async fn leave_after_poll_timeout(&self, member_id: String) {
        tracing::warn!(group = %self.group_id, "poll() not called within max.poll.interval.ms; leaving the group");
        // Lost before LeaveGroup goes out: from here on a commit of the old positions fails in
        // the client (as the Java client's CommitFailedException) instead of racing the
        // broker's rebalance.
        self.set(Status::Lost(
            "poll() was not called within max.poll.interval.ms".to_owned(),
        ));
        leave_group(
            &self.cluster,
            &self.group_id,
            member_id,
            self.instance_id.clone(),
            "consumer poll timeout has expired",
        )
        .await;
    }

    fn set(&self, status: Status) {
        {
            let mut m = self.shared.lock();
            if let Status::Lost(_) = status {
                m.member_id.clear();
                m.generation = -1;
            }
            m.status = status;
        }
        // Wake a poll that is waiting for data, so it handles the rebalance now.
        self.consumer.data_ready.notify_one();
    }
}
