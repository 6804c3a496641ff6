//! Offsets: partition offsets by time (ListOffsets) and consumer group offsets (list, alter, delete).

use std::collections::BTreeMap;

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use flumen_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use flumen_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use flumen_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use flumen_protocol::messages::{
    ApiKey, BrokerId, GroupId, ListOffsetsRequest, ListOffsetsResponse, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, StrBytes, TopicName,
};
use tokio::time::Instant;

use super::{Admin, check, duplicate, missing_answer, negotiated, partition_result};
use crate::cluster::{Cluster, TopicPartition};
use crate::error::Result;

/// Which offset of a partition to look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (next offset to be written) or, read-committed, the last stable offset.
    Latest,
    /// The offset of the record with the largest timestamp.
    MaxTimestamp,
    /// The first offset whose record timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire_timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::Timestamp(ts) => ts,
        }
    }
}

/// Whether offsets of open transactions count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Everything written (the high watermark).
    #[default]
    ReadUncommitted,
    /// Only committed data (the last stable offset).
    ReadCommitted,
}

/// A listed partition offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset; -1 when no record matches a [`OffsetSpec::Timestamp`] lookup.
    pub offset: i64,
    /// The record's timestamp for timestamp lookups, else -1.
    pub timestamp: i64,
    /// The leader epoch of that offset, when known.
    pub leader_epoch: Option<i32>,
}

/// A committed group offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset the group will read.
    pub offset: i64,
    /// Leader epoch of the last consumed record, if known.
    pub leader_epoch: Option<i32>,
    /// Free-form metadata stored with the commit.
    pub metadata: String,
}

impl OffsetAndMetadata {
    /// An offset with no epoch and no metadata.
    pub fn new(offset: i64) -> Self {
        OffsetAndMetadata {
            offset,
            leader_epoch: None,
            metadata: String::new(),
        }
    }
}

/// Partition indexes grouped by topic name.
type PartitionsByTopic = Vec<(String, Vec<(i32, ())>)>;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Groups `(partition, value)` pairs by topic, keeping the order topics were first seen.
fn by_topic<V: Clone>(items: &[(TopicPartition, V)]) -> Vec<(String, Vec<(i32, V)>)> {
    let mut out: Vec<(String, Vec<(i32, V)>)> = Vec::new();
    for (tp, v) in items {
        match out.iter_mut().find(|(t, _)| *t == tp.topic) {
            Some((_, parts)) => parts.push((tp.partition, v.clone())),
            None => out.push((tp.topic.clone(), vec![(tp.partition, v.clone())])),
        }
    }
    out
}

fn is_coordinator_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

pub(super) fn list_offsets_request(
    items: &[(TopicPartition, OffsetSpec)],
    isolation: IsolationLevel,
    deadline: Instant,
) -> ListOffsetsRequest {
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.isolation_level = match isolation {
        IsolationLevel::ReadUncommitted => 0,
        IsolationLevel::ReadCommitted => 1,
    };
    request.timeout_ms = Cluster::remaining_ms(deadline);
    request.topics = by_topic(items)
        .into_iter()
        .map(|(topic, parts)| {
            let mut t = ListOffsetsTopic::default();
            t.name = topic_name(&topic);
            t.partitions = parts
                .into_iter()
                .map(|(partition, spec)| {
                    let mut p = ListOffsetsPartition::default();
                    p.partition_index = partition;
                    p.current_leader_epoch = -1;
                    p.timestamp = spec.wire_timestamp();
                    p
                })
                .collect();
            t
        })
        .collect();
    request
}

pub(super) fn list_offsets_results(
    asked: &[(TopicPartition, OffsetSpec)],
    response: ListOffsetsResponse,
) -> Vec<(TopicPartition, Result<ListedOffset>)> {
    asked
        .iter()
        .map(|(tp, _)| {
            let answer = response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == tp.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == tp.partition);
            let result = partition_result(
                "ListOffsets",
                tp,
                answer,
                |p| p.error_code,
                |p| ListedOffset {
                    offset: p.offset,
                    timestamp: p.timestamp,
                    leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
                },
            );
            (tp.clone(), result)
        })
        .collect()
}

impl Admin {
    /// Looks up offsets by [`OffsetSpec`] on each partition's leader, one result per
    /// partition; a partition of a topic that does not exist gets [`Error::UnknownTopic`](crate::Error::UnknownTopic).
    pub async fn list_offsets(
        &self,
        partitions: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Result<BTreeMap<TopicPartition, Result<ListedOffset>>> {
        let deadline = self.deadline();
        self.by_leader(partitions.to_vec(), deadline, |conn, share| async move {
            let request = list_offsets_request(&share, isolation, deadline);
            let response = conn.send(request).await?;
            Ok(list_offsets_results(&share, response))
        })
        .await
    }

    /// The committed offsets of `group` (all of them, or only `partitions`); partitions
    /// without a committed offset are left out.
    pub async fn list_group_offsets(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, Result<OffsetAndMetadata>>> {
        self.fetch_group_offsets(group, partitions, false).await
    }

    /// [`Admin::list_group_offsets`]; with `require_stable` (KIP-447, what a `read_committed`
    /// consumer asks for), a partition with a transactional offset commit still pending
    /// answers UNSTABLE_OFFSET_COMMIT, which is retried until the transaction ends, so a new
    /// owner never starts from an offset an open transaction may still move.
    pub(crate) async fn fetch_group_offsets(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
        require_stable: bool,
    ) -> Result<BTreeMap<TopicPartition, Result<OffsetAndMetadata>>> {
        let topics: Option<PartitionsByTopic> = partitions
            .map(|ps| by_topic(&ps.iter().map(|tp| (tp.clone(), ())).collect::<Vec<_>>()));
        self.with_coordinator(group, |conn| {
            let topics = topics.clone();
            async move {
                let version = negotiated(&conn, ApiKey::OffsetFetch, "OffsetFetch")?;
                let mut request = OffsetFetchRequest::default();
                request.require_stable = require_stable && version >= 7;
                // Flat partitions per (topic, partition, committed offset, epoch, metadata, code).
                let mut rows: Vec<(String, i32, i64, i32, Option<StrBytes>, i16)> = Vec::new();
                if version >= 8 {
                    let mut g = OffsetFetchRequestGroup::default();
                    g.group_id = GroupId(StrBytes::from_string(group.to_owned()));
                    g.member_epoch = -1;
                    g.topics = topics.map(|ts| {
                        ts.into_iter()
                            .map(|(topic, parts)| {
                                let mut t = OffsetFetchRequestTopics::default();
                                t.name = topic_name(&topic);
                                t.partition_indexes = parts.into_iter().map(|(p, ())| p).collect();
                                t
                            })
                            .collect()
                    });
                    request.groups = vec![g];
                    let response = conn.send_version(request, version).await?;
                    for g in response.groups {
                        check(
                            g.error_code,
                            "OffsetFetch",
                            None,
                            None,
                            Some(&format!("group {group}")),
                        )?;
                        for t in g.topics {
                            for p in t.partitions {
                                rows.push((
                                    t.name.0.to_string(),
                                    p.partition_index,
                                    p.committed_offset,
                                    p.committed_leader_epoch,
                                    p.metadata,
                                    p.error_code,
                                ));
                            }
                        }
                    }
                } else {
                    request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
                    request.topics = topics.map(|ts| {
                        ts.into_iter()
                            .map(|(topic, parts)| {
                                let mut t = OffsetFetchRequestTopic::default();
                                t.name = topic_name(&topic);
                                t.partition_indexes = parts.into_iter().map(|(p, ())| p).collect();
                                t
                            })
                            .collect()
                    });
                    let response = conn.send_version(request, version).await?;
                    check(
                        response.error_code,
                        "OffsetFetch",
                        None,
                        None,
                        Some(&format!("group {group}")),
                    )?;
                    for t in response.topics {
                        for p in t.partitions {
                            rows.push((
                                t.name.0.to_string(),
                                p.partition_index,
                                p.committed_offset,
                                p.committed_leader_epoch,
                                p.metadata,
                                p.error_code,
                            ));
                        }
                    }
                }
                let mut out = BTreeMap::new();
                for (topic, partition, offset, epoch, metadata, code) in rows {
                    let tp = TopicPartition::new(topic, partition);
                    let result = check(code, "OffsetFetch", Some(&tp.topic), Some(partition), None);
                    match result {
                        Err(e) if e.is_retriable() => return Err(e),
                        Err(e) => {
                            out.insert(tp, Err(e));
                        }
                        Ok(()) if offset < 0 => {}
                        Ok(()) => {
                            out.insert(
                                tp,
                                Ok(OffsetAndMetadata {
                                    offset,
                                    leader_epoch: (epoch >= 0).then_some(epoch),
                                    metadata: metadata.map(|m| m.to_string()).unwrap_or_default(),
                                }),
                            );
                        }
                    }
                }
                Ok(out)
            }
        })
        .await
    }

    /// Sets committed offsets of `group`, which must have no active members (the commit uses
    /// generation -1, as Kafka's admin tools do). One result per partition.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<BTreeMap<TopicPartition, Result<()>>> {
        let topics = by_topic(offsets);
        self.with_coordinator(group, |conn| {
            let topics = topics.clone();
            async move {
                let mut request = OffsetCommitRequest::default();
                request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
                request.generation_id_or_member_epoch = -1;
                request.member_id = StrBytes::new();
                request.retention_time_ms = -1;
                request.topics = topics
                    .into_iter()
                    .map(|(topic, parts)| {
                        let mut t = OffsetCommitRequestTopic::default();
                        t.name = topic_name(&topic);
                        t.partitions = parts
                            .into_iter()
                            .map(|(partition, o)| {
                                let mut p = OffsetCommitRequestPartition::default();
                                p.partition_index = partition;
                                p.committed_offset = o.offset;
                                p.committed_leader_epoch = o.leader_epoch.unwrap_or(-1);
                                p.committed_metadata = Some(StrBytes::from_string(o.metadata));
                                p
                            })
                            .collect();
                        t
                    })
                    .collect();
                let response = conn.send(request).await?;
                let mut out = BTreeMap::new();
                for (tp, _) in offsets {
                    let answer = response
                        .topics
                        .iter()
                        .filter(|t| t.name.0.as_str() == tp.topic)
                        .flat_map(|t| t.partitions.iter())
                        .find(|p| p.partition_index == tp.partition);
                    let result = match answer {
                        None => Err(missing_answer(
                            "OffsetCommit",
                            Some(&tp.topic),
                            Some(tp.partition),
                        )),
                        Some(p) => {
                            if is_coordinator_error(ErrorCode::from_code(p.error_code)) {
                                // The whole request went to the wrong broker: retry it.
                                check(
                                    p.error_code,
                                    "OffsetCommit",
                                    None,
                                    None,
                                    Some(&format!("group {group}")),
                                )?;
                            }
                            check(
                                p.error_code,
                                "OffsetCommit",
                                Some(&tp.topic),
                                Some(tp.partition),
                                None,
                            )
                        }
                    };
                    out.insert(tp.clone(), result);
                }
                Ok(out)
            }
        })
        .await
    }

    /// Deletes committed offsets of `group` for `partitions` (the group must not be
    /// consuming those topics). One result per partition.
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Result<()>>> {
        let topics = by_topic(
            &partitions
                .iter()
                .map(|tp| (tp.clone(), ()))
                .collect::<Vec<_>>(),
        );
        self.with_coordinator(group, |conn| {
            let topics = topics.clone();
            async move {
                let mut request = OffsetDeleteRequest::default();
                request.group_id = GroupId(StrBytes::from_string(group.to_owned()));
                request.topics = topics
                    .into_iter()
                    .map(|(topic, parts)| {
                        let mut t = OffsetDeleteRequestTopic::default();
                        t.name = topic_name(&topic);
                        t.partitions = parts
                            .into_iter()
                            .map(|(partition, ())| {
                                let mut p = OffsetDeleteRequestPartition::default();
                                p.partition_index = partition;
                                p
                            })
                            .collect();
                        t
                    })
                    .collect();
                let response = conn.send(request).await?;
                let group_level = check(
                    response.error_code,
                    "OffsetDelete",
                    None,
                    None,
                    Some(&format!("group {group}")),
                );
                if let Err(e) = &group_level
                    && e.is_retriable()
                {
                    return Err(duplicate(e));
                }
                let mut out = BTreeMap::new();
                for tp in partitions {
                    let result = match &group_level {
                        Err(e) => Err(duplicate(e)),
                        Ok(()) => {
                            let answer = response
                                .topics
                                .iter()
                                .filter(|t| t.name.0.as_str() == tp.topic)
                                .flat_map(|t| t.partitions.iter())
                                .find(|p| p.partition_index == tp.partition);
                            partition_result("OffsetDelete", tp, answer, |p| p.error_code, |_| ())
                        }
                    };
                    out.insert(tp.clone(), result);
                }
                Ok(out)
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use flumen_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };

    use super::*;

    #[test]
    fn specs_map_to_kafka_sentinel_timestamps() {
        assert_eq!(OffsetSpec::Earliest.wire_timestamp(), -2);
        assert_eq!(OffsetSpec::Latest.wire_timestamp(), -1);
        assert_eq!(OffsetSpec::MaxTimestamp.wire_timestamp(), -3);
        assert_eq!(
            OffsetSpec::Timestamp(1_700_000_000_000).wire_timestamp(),
            1_700_000_000_000
        );
    }

    #[test]
    fn request_groups_partitions_by_topic() {
        let items = vec![
            (TopicPartition::new("a", 0), OffsetSpec::Earliest),
            (TopicPartition::new("b", 1), OffsetSpec::Latest),
            (TopicPartition::new("a", 2), OffsetSpec::Timestamp(5)),
        ];
        let r = list_offsets_request(
            &items,
            IsolationLevel::ReadCommitted,
            Instant::now() + std::time::Duration::from_secs(1),
        );
        assert_eq!(r.replica_id, BrokerId(-1));
        assert_eq!(r.isolation_level, 1);
        assert_eq!(r.topics.len(), 2);
        assert_eq!(
            r.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.timestamp))
                .collect::<Vec<_>>(),
            vec![(0, -2), (2, 5)]
        );
    }

    #[test]
    fn results_carry_partition_errors_with_context() {
        let items = vec![
            (TopicPartition::new("a", 0), OffsetSpec::Latest),
            (TopicPartition::new("a", 1), OffsetSpec::Latest),
            (TopicPartition::new("a", 2), OffsetSpec::Latest),
        ];
        let mut ok = ListOffsetsPartitionResponse::default();
        ok.partition_index = 0;
        ok.offset = 42;
        ok.timestamp = -1;
        ok.leader_epoch = 3;
        let mut moved = ListOffsetsPartitionResponse::default();
        moved.partition_index = 1;
        moved.error_code = ErrorCode::NotLeaderOrFollower.code();
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic_name("a");
        t.partitions = vec![ok, moved];
        let mut response = ListOffsetsResponse::default();
        response.topics = vec![t];
        let results = list_offsets_results(&items, response);
        assert_eq!(
            results[0].1.as_ref().unwrap(),
            &ListedOffset {
                offset: 42,
                timestamp: -1,
                leader_epoch: Some(3)
            }
        );
        let moved = results[1].1.as_ref().unwrap_err();
        assert!(moved.is_retriable());
        assert!(moved.to_string().contains("a-1"), "{moved}");
        assert!(
            results[2].1.is_err(),
            "unanswered partition must be an error"
        );
    }
}
