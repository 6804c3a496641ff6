//! Consumer groups: membership (classic or KIP-848), assignors, the rebalance listener and
//! how assignment changes reach the consumer's partitions.
//!
//! - `coordinator.rs`: the classic protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup).
//! - `assignor/`: range, round-robin, cooperative-sticky and the ConsumerProtocol encoding.
//! - `kip848.rs`: the KIP-848 protocol (ConsumerGroupHeartbeat), opt-in.
//! - `listener.rs`: [`RebalanceListener`].
//! - `poll_clock.rs`: the time of the last `poll`, for `max.poll.interval.ms`.
//! - [`ConsumerGroupMetadata`] is the producer's type (`producer/transaction.rs`), returned by
//!   [`Consumer::group_metadata`].
//!
//! Assignment changes are applied inside `poll`, in this order: the listener hears about
//! revocations while the partitions are still assigned, auto-commit commits their
//! positions, then they are dropped; added partitions are set up and then announced. The
//! paused set is never touched by a rebalance (see `state.rs`).

mod assignor;
mod coordinator;
mod kip848;
pub(crate) mod listener;
mod poll_clock;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use self::coordinator::{ClassicMember, Status};
use self::kip848::Kip848Member;
pub use self::listener::{CommitOnRevoke, RebalanceListener};
use super::error::Result;
use super::state::Shared;
use super::{Consumer, ConsumerConfig, GroupProtocol, Subscription};
use crate::cluster::{Cluster, TopicPartition};
pub use crate::producer::ConsumerGroupMetadata;

/// This consumer's membership in its group.
#[derive(Debug)]
pub(crate) enum GroupMember {
    Classic(ClassicMember),
    Consumer(Kip848Member),
}

impl GroupMember {
    pub(crate) fn new(cluster: Cluster, config: Arc<ConsumerConfig>, shared: Arc<Shared>) -> Self {
        match config.group_protocol {
            GroupProtocol::Consumer => {
                GroupMember::Consumer(Kip848Member::new(cluster, config, shared))
            }
            _ => GroupMember::Classic(ClassicMember::new(cluster, config, shared)),
        }
    }

    pub(crate) fn note_poll(&self) {
        match self {
            GroupMember::Classic(m) => m.shared.note_poll(),
            GroupMember::Consumer(m) => m.note_poll(),
        }
    }

    /// `(generation or member epoch, member id)`.
    pub(crate) fn generation(&self) -> (i32, String) {
        match self {
            GroupMember::Classic(m) => {
                let s = m.shared.lock();
                (s.generation, s.member_id.clone())
            }
            GroupMember::Consumer(m) => m.generation(),
        }
    }

    /// Why the member was thrown out of the group, until the next `poll` handles it.
    pub(crate) fn lost_reason(&self) -> Option<String> {
        match self {
            GroupMember::Classic(m) => match &m.shared.lock().status {
                Status::Lost(reason) => Some(reason.clone()),
                _ => None,
            },
            GroupMember::Consumer(m) => m.lock().lost.clone(),
        }
    }

    pub(crate) fn request_rejoin(&mut self) {
        if let GroupMember::Classic(m) = self {
            let mut s = m.shared.lock();
            if s.status == Status::Stable {
                s.status = Status::NeedsJoin;
            }
        }
    }

    pub(crate) fn stop(&mut self) {
        match self {
            GroupMember::Classic(m) => m.stop(),
            GroupMember::Consumer(m) => m.stop(),
        }
    }

    pub(crate) async fn leave(&mut self) {
        match self {
            GroupMember::Classic(m) => m.leave().await,
            GroupMember::Consumer(m) => m.leave(false).await,
        }
    }
}

impl Consumer {
    /// The topics the subscription names now.
    async fn subscribed_topics(&self) -> Result<BTreeSet<String>> {
        match &self.subscription {
            Subscription::Topics(t) => Ok(t.clone()),
            Subscription::Pattern(re) => {
                let metadata = self.cluster.metadata();
                let metadata = if metadata.fetched_at.elapsed()
                    >= self.cluster.config().metadata_max_age
                    || metadata.topics.is_empty()
                {
                    self.cluster.all_topics().await?
                } else {
                    metadata
                };
                Ok(metadata
                    .topics
                    .values()
                    .filter(|t| !t.is_internal && re.is_match(&t.name))
                    .map(|t| t.name.clone())
                    .collect())
            }
            _ => Ok(BTreeSet::new()),
        }
    }

    /// Brings the assignment up to date with the group (called from `poll`).
    pub(crate) async fn group_step(&mut self) -> Result<()> {
        let topics = self.subscribed_topics().await?;
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        match group {
            GroupMember::Classic(m) => {
                let status = m.shared.lock().status.clone();
                if let Status::Lost(reason) = status {
                    self.lose(&reason);
                    if let Some(GroupMember::Classic(m)) = self.group.as_mut() {
                        m.shared.lock().status = Status::NeedsJoin;
                    }
                }
                loop {
                    let Some(GroupMember::Classic(m)) = self.group.as_mut() else {
                        return Ok(());
                    };
                    if m.shared.lock().status == Status::Stable
                        && m.joined_topics() == Some(&topics)
                    {
                        if !m.metadata_changed().await {
                            return Ok(());
                        }
                        m.shared.lock().status = Status::NeedsJoin;
                    }
                    let cooperative = m.is_cooperative();
                    let owned = self.assignment();
                    if !cooperative && !owned.is_empty() {
                        self.revoke(&owned, true).await;
                    }
                    let owned = self.assignment();
                    let Some(GroupMember::Classic(m)) = self.group.as_mut() else {
                        return Ok(());
                    };
                    let assigned = m.join(&topics, &owned).await?;
                    m.set_joined_topics(topics.clone());
                    let assigned_set: BTreeSet<&TopicPartition> = assigned.iter().collect();
                    let owned_set: BTreeSet<&TopicPartition> = owned.iter().collect();
                    let revoked: Vec<TopicPartition> = owned
                        .iter()
                        .filter(|tp| !assigned_set.contains(tp))
                        .cloned()
                        .collect();
                    let added: Vec<TopicPartition> = assigned
                        .iter()
                        .filter(|tp| !owned_set.contains(tp))
                        .cloned()
                        .collect();
                    if !revoked.is_empty() {
                        self.revoke(&revoked, true).await;
                    }
                    if !added.is_empty() {
                        self.add_partitions(added.iter().cloned());
                        self.listener().on_partitions_assigned(&added);
                    }
                    if revoked.is_empty() {
                        return Ok(());
                    }
                    // KIP-429: after giving partitions up, rejoin so they can be handed out.
                    if let Some(g) = self.group.as_mut() {
                        g.request_rejoin();
                    }
                }
            }
            GroupMember::Consumer(m) => {
                if let Some(unsupported) = &m.lock().unsupported {
                    return Err(unsupported.to_error().into());
                }
                m.subscribe(topics);
                let lost = m.lock().lost.take();
                if let Some(reason) = lost {
                    self.lose(&reason);
                    if let Some(GroupMember::Consumer(m)) = self.group.as_ref() {
                        m.set_owned(BTreeMap::new());
                    }
                }
                let Some(GroupMember::Consumer(m)) = self.group.as_ref() else {
                    return Ok(());
                };
                let Some(target) = m.lock().target.take() else {
                    return Ok(());
                };
                let assigned = match m.resolve(&target).await {
                    Ok(a) => a,
                    Err(e) => {
                        // Try again on the next poll.
                        if let Some(GroupMember::Consumer(m)) = self.group.as_ref() {
                            m.lock().target.get_or_insert(target);
                        }
                        return Err(e.into());
                    }
                };
                let owned = self.assignment();
                let revoked: Vec<TopicPartition> = owned
                    .iter()
                    .filter(|tp| !assigned.contains(tp))
                    .cloned()
                    .collect();
                let added: Vec<TopicPartition> = assigned
                    .iter()
                    .filter(|tp| !owned.contains(tp))
                    .cloned()
                    .collect();
                if !revoked.is_empty() {
                    self.revoke(&revoked, true).await;
                }
                if !added.is_empty() {
                    self.add_partitions(added.iter().cloned());
                    self.listener().on_partitions_assigned(&added);
                }
                let now = self.assignment();
                if let Some(GroupMember::Consumer(m)) = self.group.as_ref() {
                    m.set_owned(m.ids_of(&now));
                }
                Ok(())
            }
        }
    }

    /// Revokes `tps`: listener, then a commit (the listener's `commit_on_revoke` offsets, or
    /// with auto-commit the positions), then drop.
    pub(crate) async fn revoke(&mut self, tps: &[TopicPartition], commit: bool) {
        self.commit_before_revoke(tps, commit).await;
        self.remove_partitions(tps);
    }

    /// The listener's revocation call and the commit that goes with it, while `tps` are still
    /// assigned.
    pub(crate) async fn commit_before_revoke(&mut self, tps: &[TopicPartition], commit: bool) {
        self.listener().on_partitions_revoked(tps);
        if !commit || self.config.group_id.is_none() {
            return;
        }
        let requested = self.listener().commit_on_revoke(tps);
        let offsets: BTreeMap<_, _> = match requested {
            Some(offsets) => offsets.await,
            None if self.config.enable_auto_commit => self.positions(),
            None => return,
        };
        let offsets: BTreeMap<_, _> = offsets
            .into_iter()
            .filter(|(tp, _)| tps.contains(tp))
            .collect();
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = self.commit_offsets_sync(offsets).await {
            tracing::warn!(error = %e, "commit before revocation failed");
        }
    }

    /// The member was thrown out: every partition is lost (no commit: others may own them).
    fn lose(&mut self, reason: &str) {
        tracing::warn!(reason, "group membership lost");
        let owned = self.assignment();
        if !owned.is_empty() {
            self.listener().on_partitions_lost(&owned);
            self.remove_partitions(&owned);
        }
    }
}
