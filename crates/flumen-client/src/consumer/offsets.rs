//! Offsets: position lookups (committed offset, else `auto.offset.reset` via ListOffsets),
//! and commits (sync, async, auto) carrying the leader epoch of the last consumed record.
//!
//! A commit goes to the group coordinator with the member's generation and id, so a member
//! that lost its partitions in a rebalance cannot overwrite the new owner's progress
//! (`ILLEGAL_GENERATION` / `UNKNOWN_MEMBER_ID`); a member that knows it was thrown out does not
//! even send it ([`ConsumerError::MemberLost`]). Without group membership (`assign`), the
//! generation is -1, as in the Java client.

use std::collections::BTreeMap;

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use flumen_protocol::messages::{GroupId, OffsetCommitRequest, StrBytes, TopicName};
use tokio::task::JoinHandle;

use super::error::{ConsumerError, Result};
use super::state::Reset;
use super::{Consumer, OffsetReset};
use crate::admin::{Admin, IsolationLevel, OffsetAndMetadata, OffsetSpec};
use crate::cluster::{Cluster, CoordinatorType, TopicPartition, broker_error};
use crate::error::Error;

/// Who commits: the group and, when a member, its generation and ids.
#[derive(Clone, Debug)]
pub(crate) struct CommitTarget {
    pub(crate) group_id: String,
    pub(crate) generation: i32,
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
}

impl Consumer {
    fn commit_target(&self, what: &'static str) -> Result<CommitTarget> {
        let group_id = self
            .config
            .group_id
            .clone()
            .ok_or(ConsumerError::NoGroup(what))?;
        // A member thrown out of the group (e.g. for exceeding `max.poll.interval.ms`) still
        // holds its old partitions until the next `poll`; their positions are stale and another
        // member may own them now. Sent with generation -1 they would even be accepted once the
        // group is empty, so the commit fails here, as in the Java client.
        if let Some(reason) = self.group.as_ref().and_then(|g| g.lost_reason()) {
            return Err(ConsumerError::MemberLost(reason));
        }
        let (generation, member_id) = self
            .group
            .as_ref()
            .map(|g| g.generation())
            .unwrap_or((-1, String::new()));
        Ok(CommitTarget {
            group_id,
            generation,
            member_id,
            instance_id: self.config.group_instance_id.clone(),
        })
    }

    /// Commits the current positions of all assigned partitions and waits for the broker.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.positions();
        self.commit_offsets_sync(offsets).await
    }

    /// Commits `offsets` (the next offset to read, per partition) and waits for the broker.
    pub async fn commit_offsets_sync(
        &mut self,
        offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<()> {
        let target = self.commit_target("commit")?;
        commit(&self.cluster, &target, &offsets).await
    }

    /// Starts committing the current positions in the background; await the handle for the
    /// result, or drop it.
    pub fn commit_async(&mut self) -> Result<JoinHandle<Result<()>>> {
        let offsets = self.positions();
        self.commit_offsets_async(offsets)
    }

    /// Starts committing `offsets` in the background.
    pub fn commit_offsets_async(
        &mut self,
        offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<JoinHandle<Result<()>>> {
        let target = self.commit_target("commit")?;
        let cluster = self.cluster.clone();
        Ok(tokio::spawn(async move {
            let result = commit(&cluster, &target, &offsets).await;
            if let Err(e) = &result {
                tracing::debug!(error = %e, "asynchronous commit failed");
            }
            result
        }))
    }

    /// The group's committed offsets for `partitions` (partitions with none are left out).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let group = self
            .config
            .group_id
            .as_deref()
            .ok_or(ConsumerError::NoGroup("committed()"))?;
        let found = self
            .admin
            .fetch_group_offsets(
                group,
                Some(partitions),
                self.config.isolation_level == IsolationLevel::ReadCommitted,
            )
            .await?;
        let mut out = BTreeMap::new();
        for (tp, result) in found {
            let o = result?;
            if o.offset >= 0 {
                out.insert(tp, o);
            }
        }
        Ok(out)
    }

    /// Gives every assigned partition without a position one: the committed offset, else a
    /// reset per `auto.offset.reset` (or the explicit seek to the beginning / end).
    pub(crate) async fn resolve_positions(&mut self) -> Result<()> {
        let (lookup, mut resets): (Vec<TopicPartition>, Vec<(TopicPartition, Reset)>) = {
            let state = self.shared.lock();
            let mut lookup = Vec::new();
            let mut resets = Vec::new();
            for (tp, p) in &state.parts {
                if p.position.is_some() {
                    continue;
                }
                match p.reset {
                    Some(r) => resets.push((tp.clone(), r)),
                    None => lookup.push(tp.clone()),
                }
            }
            (lookup, resets)
        };
        if !lookup.is_empty() {
            let committed = match self.config.group_id {
                Some(_) => self.committed(&lookup).await?,
                None => BTreeMap::new(),
            };
            let mut state = self.shared.lock();
            for tp in lookup {
                let generation = state.bump_generation();
                let Some(p) = state.parts.get_mut(&tp) else {
                    continue;
                };
                if p.position.is_some() || p.reset.is_some() {
                    continue;
                }
                match committed.get(&tp) {
                    Some(o) => {
                        tracing::debug!(%tp, offset = o.offset, "position: the committed offset");
                        p.position = Some(o.offset);
                        p.fetch_offset = o.offset;
                        p.position_epoch = o.leader_epoch;
                        p.generation = generation;
                    }
                    None => {
                        p.reset = Some(Reset::Auto);
                        resets.push((tp, Reset::Auto));
                    }
                }
            }
        }
        if resets.is_empty() {
            return Ok(());
        }
        let mut specs = Vec::with_capacity(resets.len());
        for (tp, r) in resets {
            let spec = match (r, self.config.auto_offset_reset) {
                (Reset::Earliest, _) | (Reset::Auto, OffsetReset::Earliest) => OffsetSpec::Earliest,
                (Reset::Latest, _) | (Reset::Auto, OffsetReset::Latest) => OffsetSpec::Latest,
                (Reset::Auto, _) => return Err(ConsumerError::NoOffset { tp }),
            };
            specs.push((tp, spec));
        }
        let listed = list_offsets(&self.admin, &specs, self.config.isolation_level).await?;
        let mut state = self.shared.lock();
        let mut first_error = None;
        for (tp, result) in listed {
            match result {
                Ok(offset) => {
                    tracing::debug!(%tp, offset, "position: reset");
                    let generation = state.bump_generation();
                    if let Some(p) = state.parts.get_mut(&tp) {
                        p.position = Some(offset);
                        p.fetch_offset = offset;
                        p.position_epoch = None;
                        p.reset = None;
                        p.generation = generation;
                    }
                }
                Err(e) => {
                    state.needs_attention = true;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

async fn list_offsets(
    admin: &Admin,
    specs: &[(TopicPartition, OffsetSpec)],
    isolation: crate::admin::IsolationLevel,
) -> Result<Vec<(TopicPartition, Result<i64, Error>)>> {
    let found = admin.list_offsets(specs, isolation).await?;
    Ok(found
        .into_iter()
        .map(|(tp, r)| (tp, r.map(|o| o.offset)))
        .collect())
}

/// Commits `offsets` for `target`, retrying coordinator moves and transient failures until
/// `default.api.timeout.ms`.
pub(crate) async fn commit(
    cluster: &Cluster,
    target: &CommitTarget,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut by_topic: BTreeMap<&str, Vec<(i32, &OffsetAndMetadata)>> = BTreeMap::new();
    for (tp, o) in offsets {
        by_topic
            .entry(&tp.topic)
            .or_default()
            .push((tp.partition, o));
    }
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(StrBytes::from_string(target.group_id.clone()));
    request.generation_id_or_member_epoch = target.generation;
    request.member_id = StrBytes::from_string(target.member_id.clone());
    request.group_instance_id = target.instance_id.clone().map(StrBytes::from_string);
    request.retention_time_ms = -1;
    request.topics = by_topic
        .into_iter()
        .map(|(topic, parts)| {
            let mut t = OffsetCommitRequestTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_owned()));
            t.partitions = parts
                .into_iter()
                .map(|(partition, o)| {
                    let mut p = OffsetCommitRequestPartition::default();
                    p.partition_index = partition;
                    p.committed_offset = o.offset;
                    p.committed_leader_epoch = o.leader_epoch.unwrap_or(-1);
                    p.committed_metadata = Some(StrBytes::from_string(o.metadata.clone()));
                    p
                })
                .collect();
            t
        })
        .collect();
    let group = target.group_id.as_str();
    cluster
        .retry(cluster.default_deadline(), || {
            let request = request.clone();
            async move {
                let conn = cluster
                    .coordinator_connection(CoordinatorType::Group, group)
                    .await?;
                let result = async {
                    let response = conn.send(request).await?;
                    for t in &response.topics {
                        for p in &t.partitions {
                            let code = ErrorCode::from_code(p.error_code);
                            if code != ErrorCode::None {
                                return Err(broker_error(
                                    code,
                                    "OffsetCommit",
                                    Some(t.name.0.as_str()),
                                    Some(p.partition_index),
                                    None,
                                ));
                            }
                        }
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = &result {
                    cluster.note_coordinator_error(CoordinatorType::Group, group, e);
                }
                result
            }
        })
        .await
        .map_err(ConsumerError::from)
}
