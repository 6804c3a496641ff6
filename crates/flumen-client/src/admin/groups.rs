//! Consumer group administration: list, describe and delete groups.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use flumen_protocol::messages::{
    ConsumerProtocolAssignment, Decodable, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, StrBytes,
};

use super::{Admin, check, duplicate};
use crate::cluster::{BrokerInfo, ConnectionKind, CoordinatorType, TopicPartition};
use crate::error::{Error, Result};

/// A group as listed by a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// `consumer` for consumer groups, `connect` for Kafka Connect, ...
    pub protocol_type: String,
    /// State (`Stable`, `Empty`, ...), when the broker reports it.
    pub state: Option<String>,
    /// `classic` or `consumer` (KIP-848), when the broker reports it.
    pub group_type: Option<String>,
}

/// A group's state and members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State: `Stable`, `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Dead`.
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// The chosen protocol (for consumer groups, the assignor: `range`, `cooperative-sticky`, ...).
    pub protocol: String,
    /// Current members.
    pub members: Vec<MemberDescription>,
    /// The coordinator that answered.
    pub coordinator: BrokerInfo,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// Static membership id (`group.instance.id`), if used.
    pub group_instance_id: Option<String>,
    /// The member's `client.id`.
    pub client_id: String,
    /// The member's host as the broker saw it.
    pub client_host: String,
    /// Partitions assigned to it (decoded for consumer groups; empty otherwise).
    pub assignment: Vec<TopicPartition>,
}

/// Decodes a consumer-protocol assignment (version prefix, then the body); anything that
/// does not parse yields no partitions rather than an error, since other protocol types
/// use their own formats.
fn decode_assignment(bytes: &Bytes) -> Vec<TopicPartition> {
    let mut buf = bytes.clone();
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    bytes::Buf::advance(&mut buf, 2);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.0.to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| TopicPartition::new(topic.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A group the broker's response did not mention.
fn group_missing(api: &'static str, group: &str) -> Error {
    crate::cluster::broker_error(
        flumen_protocol::ErrorCode::UnknownServerError,
        api,
        None,
        None,
        Some(format!("the response did not mention group {group}")),
    )
}

impl Admin {
    /// Every group on every broker.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self
            .cluster
            .retry(self.deadline(), || self.cluster.refresh_metadata())
            .await?;
        let mut out = Vec::new();
        for broker in metadata.brokers.values() {
            let response = self
                .cluster
                .retry(self.deadline(), || async {
                    let conn = self
                        .cluster
                        .connection(broker, ConnectionKind::Metadata)
                        .await?;
                    let response = conn.send(ListGroupsRequest::default()).await?;
                    check(response.error_code, "ListGroups", None, None, None)?;
                    Ok(response)
                })
                .await?;
            out.extend(response.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: Some(g.group_state.to_string()).filter(|s| !s.is_empty()),
                group_type: Some(g.group_type.to_string()).filter(|s| !s.is_empty()),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// Describes `groups` on their coordinators, one result per group. A group that does
    /// not exist is described with state `Dead` (or `GROUP_ID_NOT_FOUND` on newer brokers).
    pub async fn describe_groups(
        &self,
        groups: &[&str],
    ) -> Result<BTreeMap<String, Result<GroupDescription>>> {
        self.per_coordinator(groups, |broker, share| async move {
            let conn = self
                .cluster
                .connection(&broker, ConnectionKind::Group)
                .await?;
            let mut request = DescribeGroupsRequest::default();
            request.groups = share
                .iter()
                .map(|g| GroupId(StrBytes::from_string(g.clone())))
                .collect();
            let response = conn.send(request).await?;
            Ok(share
                .iter()
                .map(|g| {
                    let answer = response
                        .groups
                        .iter()
                        .find(|d| d.group_id.0.as_str() == g.as_str());
                    let result = match answer {
                        None => Err(group_missing("DescribeGroups", g)),
                        Some(d) => check(
                            d.error_code,
                            "DescribeGroups",
                            None,
                            None,
                            Some(&format!("group {g}")),
                        )
                        .map(|()| GroupDescription {
                            group_id: g.clone(),
                            state: d.group_state.to_string(),
                            protocol_type: d.protocol_type.to_string(),
                            protocol: d.protocol_data.to_string(),
                            members: d
                                .members
                                .iter()
                                .map(|m| MemberDescription {
                                    member_id: m.member_id.to_string(),
                                    group_instance_id: m
                                        .group_instance_id
                                        .as_ref()
                                        .map(|s| s.to_string()),
                                    client_id: m.client_id.to_string(),
                                    client_host: m.client_host.to_string(),
                                    assignment: if d.protocol_type.as_str() == "consumer" {
                                        decode_assignment(&m.member_assignment)
                                    } else {
                                        Vec::new()
                                    },
                                })
                                .collect(),
                            coordinator: broker.clone(),
                        }),
                    };
                    (g.clone(), result)
                })
                .collect())
        })
        .await
    }

    /// Deletes `groups` (each must be empty), one result per group.
    pub async fn delete_groups(&self, groups: &[&str]) -> Result<BTreeMap<String, Result<()>>> {
        self.per_coordinator(groups, |broker, share| async move {
            let conn = self
                .cluster
                .connection(&broker, ConnectionKind::Group)
                .await?;
            let mut request = DeleteGroupsRequest::default();
            request.groups_names = share
                .iter()
                .map(|g| GroupId(StrBytes::from_string(g.clone())))
                .collect();
            let response = conn.send(request).await?;
            Ok(share
                .iter()
                .map(|g| {
                    let answer = response
                        .results
                        .iter()
                        .find(|r| r.group_id.0.as_str() == g.as_str());
                    let result = match answer {
                        None => Err(group_missing("DeleteGroups", g)),
                        Some(r) => check(
                            r.error_code,
                            "DeleteGroups",
                            None,
                            None,
                            Some(&format!("group {g}")),
                        ),
                    };
                    (g.clone(), result)
                })
                .collect())
        })
        .await
    }

    /// Finds each group's coordinator, runs `send` once per coordinator with its groups, and
    /// retries groups whose coordinator moved, until the deadline.
    async fn per_coordinator<T, F, Fut>(
        &self,
        groups: &[&str],
        send: F,
    ) -> Result<BTreeMap<String, Result<T>>>
    where
        F: Fn(BrokerInfo, Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<(String, Result<T>)>>>,
    {
        let deadline = self.deadline();
        let mut done = BTreeMap::new();
        let mut pending: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        pending.dedup();
        let mut backoff = self.cluster.config().retry_policy().start();
        while !pending.is_empty() {
            let coordinators = self
                .cluster
                .coordinators_until(CoordinatorType::Group, &pending, deadline)
                .await?;
            let mut by_broker: HashMap<i32, (BrokerInfo, Vec<String>)> = HashMap::new();
            let mut retry: Vec<(String, Error)> = Vec::new();
            for g in pending.drain(..) {
                match coordinators.get(&g) {
                    Some(Ok(b)) => by_broker
                        .entry(b.id)
                        .or_insert_with(|| (b.clone(), Vec::new()))
                        .1
                        .push(g),
                    Some(Err(e)) => {
                        done.insert(g, Err(duplicate(e)));
                    }
                    None => {
                        let e = group_missing("FindCoordinator", &g);
                        done.insert(g, Err(e));
                    }
                }
            }
            for (broker, share) in by_broker.into_values() {
                match send(broker, share.clone()).await {
                    Ok(results) => {
                        for (g, result) in results {
                            match result {
                                Err(e)
                                    if self.cluster.note_coordinator_error(
                                        CoordinatorType::Group,
                                        &g,
                                        &e,
                                    ) =>
                                {
                                    retry.push((g, e));
                                }
                                Err(e) if e.is_retriable() => retry.push((g, e)),
                                other => {
                                    done.insert(g, other);
                                }
                            }
                        }
                    }
                    Err(e) if e.is_retriable() => {
                        for g in share {
                            self.cluster
                                .invalidate_coordinator(CoordinatorType::Group, &g);
                            retry.push((g, duplicate(&e)));
                        }
                    }
                    Err(e) => {
                        for g in share {
                            done.insert(g, Err(duplicate(&e)));
                        }
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            let wait = backoff.next_backoff();
            if tokio::time::Instant::now() + wait >= deadline {
                for (g, e) in retry {
                    done.insert(g, Err(e));
                }
                break;
            }
            tokio::time::sleep(wait).await;
            pending = retry.into_iter().map(|(g, _)| g).collect();
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use flumen_protocol::messages::Encodable;
    use flumen_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;

    use super::*;

    #[test]
    fn consumer_assignment_bytes_decode_to_partitions() {
        let mut a = ConsumerProtocolAssignment::default();
        let mut t = AssignedTopic::default();
        t.topic = flumen_protocol::messages::TopicName(StrBytes::from_static_str("orders"));
        t.partitions = vec![0, 2];
        a.assigned_partitions = vec![t];
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(1);
        a.encode(&mut buf, 1).unwrap();
        let parts = decode_assignment(&buf.freeze());
        assert_eq!(
            parts,
            vec![
                TopicPartition::new("orders", 0),
                TopicPartition::new("orders", 2)
            ]
        );
    }

    #[test]
    fn garbage_assignment_decodes_to_nothing() {
        assert!(decode_assignment(&Bytes::from_static(b"\x00")).is_empty());
        assert!(decode_assignment(&Bytes::from_static(b"\x00\x01\xff\xff\xff\x7f")).is_empty());
    }
}
