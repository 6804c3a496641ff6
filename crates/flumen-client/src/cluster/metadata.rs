//! The cluster metadata snapshot: brokers, topics, partitions, leaders and leader epochs.
//!
//! A [`Metadata`] is immutable; a refresh builds a new one and swaps the `Arc`, so readers
//! never wait for a refresh and never see a half-updated view.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::StrBytes;
use flumen_protocol::messages::metadata_request::MetadataRequestTopic;
use flumen_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use tokio::time::Instant;
use uuid::Uuid;

/// A topic name and partition index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One broker as the cluster advertises it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BrokerInfo {
    /// The broker's node id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// `broker.rack`, if set.
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`, as used to connect.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// Leader's broker id; `None` while no leader is elected.
    pub leader: Option<i32>,
    /// The leader epoch (-1 when the broker did not say).
    pub leader_epoch: i32,
    /// All replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Replicas on offline brokers.
    pub offline_replicas: Vec<i32>,
    /// The partition-level error the broker reported (`LEADER_NOT_AVAILABLE`, ...).
    pub error: ErrorCode,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Topic id (nil if the broker did not send one).
    pub id: Uuid,
    /// Whether this is an internal topic (`__consumer_offsets`, ...).
    pub is_internal: bool,
    /// Partitions ordered by index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// The partition with index `partition`.
    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .filter(|p| p.partition == partition)
            .or_else(|| self.partitions.iter().find(|p| p.partition == partition))
    }
}

/// An immutable view of the cluster.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// The broker the cluster names as controller (in KRaft, a random broker).
    pub controller_id: Option<i32>,
    /// Live brokers by id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Known topics by name (only those asked for since start).
    pub topics: HashMap<String, Arc<TopicMetadata>>,
    /// Topics the cluster said do not exist, at the last lookup.
    pub missing_topics: HashMap<String, ErrorCode>,
    /// When this snapshot was fetched.
    pub fetched_at: Instant,
}

impl Metadata {
    /// A snapshot with nothing in it (before bootstrap).
    pub fn empty() -> Metadata {
        Metadata {
            cluster_id: None,
            controller_id: None,
            brokers: BTreeMap::new(),
            topics: HashMap::new(),
            missing_topics: HashMap::new(),
            fetched_at: Instant::now(),
        }
    }

    /// The broker with id `id`.
    pub fn broker(&self, id: i32) -> Option<&BrokerInfo> {
        self.brokers.get(&id)
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMetadata>> {
        self.topics.get(name)
    }

    /// The leader of `topic`/`partition`, if known and alive.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<&BrokerInfo> {
        let leader = self.topic(topic)?.partition(partition)?.leader?;
        self.broker(leader)
    }

    /// A new snapshot: brokers and cluster facts from `response`, the topics it carries
    /// replaced, the other known topics kept (a refresh of some topics must not forget the rest).
    pub(crate) fn merge(&self, response: MetadataResponse, full: bool) -> Metadata {
        let brokers: BTreeMap<i32, BrokerInfo> = response
            .brokers
            .into_iter()
            .map(|b| {
                let info = BrokerInfo {
                    id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.map(|r| r.to_string()),
                };
                (info.id, info)
            })
            .collect();
        let mut topics = if full {
            HashMap::new()
        } else {
            self.topics.clone()
        };
        let mut missing = if full {
            HashMap::new()
        } else {
            self.missing_topics.clone()
        };
        for t in response.topics {
            let Some(name) = t.name else { continue };
            let name = name.0.to_string();
            let code = ErrorCode::from_code(t.error_code);
            match code {
                ErrorCode::None => {}
                ErrorCode::UnknownTopicOrPartition | ErrorCode::InvalidTopicException => {
                    topics.remove(&name);
                    missing.insert(name, code);
                    continue;
                }
                // LEADER_NOT_AVAILABLE for a topic being created, authorisation failures...:
                // keep what we knew and let the caller retry.
                other => {
                    missing.insert(name, other);
                    continue;
                }
            }
            missing.remove(&name);
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .into_iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.into_iter().map(|b| b.0).collect(),
                    error: ErrorCode::from_code(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            topics.insert(
                name.clone(),
                Arc::new(TopicMetadata {
                    name,
                    id: t.topic_id,
                    is_internal: t.is_internal,
                    partitions,
                }),
            );
        }
        Metadata {
            cluster_id: response.cluster_id.map(|c| c.to_string()),
            controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            brokers,
            topics,
            missing_topics: missing,
            fetched_at: Instant::now(),
        }
    }
}

/// A Metadata request for `topics` (`None`: every topic; empty: brokers only).
pub(crate) fn metadata_request(topics: Option<&[String]>) -> MetadataRequest {
    let mut request = MetadataRequest::default();
    request.topics = topics.map(|names| {
        names
            .iter()
            .map(|name| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(TopicName(StrBytes::from_string(name.clone())));
                t
            })
            .collect()
    });
    request.allow_auto_topic_creation = false;
    request
}

#[cfg(test)]
mod tests {
    use flumen_protocol::messages::BrokerId;
    use flumen_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };

    use super::*;

    fn broker(id: i32, port: i32) -> MetadataResponseBroker {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(id);
        b.host = StrBytes::from_static_str("127.0.0.1");
        b.port = port;
        b
    }

    fn topic(name: &str, leaders: &[i32], error: i16) -> MetadataResponseTopic {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(name.to_owned())));
        t.error_code = error;
        // Deliberately out of order: the snapshot sorts them.
        t.partitions = leaders
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &leader)| {
                let mut p = MetadataResponsePartition::default();
                p.partition_index = i as i32;
                p.leader_id = BrokerId(leader);
                p.leader_epoch = 7;
                p.replica_nodes = vec![BrokerId(leader), BrokerId(9)];
                p.isr_nodes = vec![BrokerId(leader)];
                p
            })
            .collect();
        t
    }

    fn response(
        brokers: Vec<MetadataResponseBroker>,
        topics: Vec<MetadataResponseTopic>,
    ) -> MetadataResponse {
        let mut r = MetadataResponse::default();
        r.brokers = brokers;
        r.topics = topics;
        r.controller_id = BrokerId(1);
        r.cluster_id = Some(StrBytes::from_static_str("c1"));
        r
    }

    #[test]
    fn snapshot_resolves_leaders_to_brokers() {
        let m = Metadata::empty().merge(
            response(
                vec![broker(1, 9092), broker(2, 9093)],
                vec![topic("t", &[2, 1, -1], 0)],
            ),
            false,
        );
        assert_eq!(m.cluster_id.as_deref(), Some("c1"));
        assert_eq!(m.controller_id, Some(1));
        assert_eq!(
            m.leader("t", 0).map(BrokerInfo::addr).as_deref(),
            Some("127.0.0.1:9093")
        );
        assert_eq!(m.leader("t", 1).map(|b| b.id), Some(1));
        assert_eq!(m.leader("t", 2), None, "leaderless partition");
        assert_eq!(m.leader("t", 3), None, "partition out of range");
        let t = m.topic("t").unwrap();
        assert_eq!(
            t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let p0 = t.partition(0).unwrap();
        assert_eq!(
            (p0.leader_epoch, p0.replicas.clone(), p0.isr.clone()),
            (7, vec![2, 9], vec![2])
        );
    }

    #[test]
    fn partial_refresh_keeps_other_topics_and_full_refresh_drops_them() {
        let brokers = || vec![broker(1, 9092)];
        let m = Metadata::empty().merge(
            response(brokers(), vec![topic("a", &[1], 0), topic("b", &[1], 0)]),
            false,
        );
        let m2 = m.merge(response(brokers(), vec![topic("a", &[1, 1], 0)]), false);
        assert_eq!(m2.topic("a").unwrap().partitions.len(), 2);
        assert!(m2.topic("b").is_some());
        let m3 = m2.merge(response(brokers(), vec![topic("a", &[1], 0)]), true);
        assert!(m3.topic("b").is_none());
    }

    #[test]
    fn unknown_topic_is_recorded_as_missing_and_forgotten() {
        let m = Metadata::empty().merge(
            response(vec![broker(1, 1)], vec![topic("gone", &[1], 0)]),
            false,
        );
        let m = m.merge(
            response(vec![broker(1, 1)], vec![topic("gone", &[], 3)]),
            false,
        );
        assert!(m.topic("gone").is_none());
        assert_eq!(
            m.missing_topics.get("gone"),
            Some(&ErrorCode::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn dead_broker_disappears_from_the_snapshot() {
        let m = Metadata::empty().merge(
            response(vec![broker(1, 1), broker(2, 2)], vec![topic("t", &[2], 0)]),
            false,
        );
        let m = m.merge(response(vec![broker(1, 1)], vec![]), false);
        assert!(m.broker(2).is_none());
        assert_eq!(
            m.leader("t", 0),
            None,
            "leader on a broker no longer listed"
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let b = BrokerInfo {
            id: 1,
            host: "::1".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(b.addr(), "[::1]:9092");
    }

    #[test]
    fn request_lists_the_topics_and_never_creates_them() {
        let r = metadata_request(Some(&["x".to_owned()]));
        assert!(!r.allow_auto_topic_creation);
        assert_eq!(
            r.topics.unwrap()[0]
                .name
                .as_ref()
                .map(|n| n.0.to_string())
                .as_deref(),
            Some("x")
        );
        assert!(metadata_request(None).topics.is_none());
    }
}
