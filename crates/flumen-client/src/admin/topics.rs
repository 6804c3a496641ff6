//! Topic administration: create, delete, add partitions, list and describe.

use std::collections::BTreeMap;

use flumen_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use flumen_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use flumen_protocol::messages::delete_topics_request::DeleteTopicState;
use flumen_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, StrBytes,
    TopicName,
};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Admin, check, missing_answer, negotiated};
use crate::cluster::{Cluster, ConnectionKind, TopicMetadata};
use crate::error::{Error, Result};

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Number of partitions; `None`: the broker's `num.partitions`.
    pub num_partitions: Option<i32>,
    /// Replication factor; `None`: the broker's `default.replication.factor`.
    pub replication_factor: Option<i16>,
    /// Explicit replica assignment (partition → broker ids); replaces the two counts.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    /// Topic configs (`cleanup.policy`, `retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with the broker's default partition count and replication factor.
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            num_partitions: None,
            replication_factor: None,
            assignments: BTreeMap::new(),
            configs: BTreeMap::new(),
        }
    }

    /// Sets the number of partitions.
    #[must_use]
    pub fn partitions(mut self, count: i32) -> Self {
        self.num_partitions = Some(count);
        self
    }

    /// Sets the replication factor.
    #[must_use]
    pub fn replication_factor(mut self, factor: i16) -> Self {
        self.replication_factor = Some(factor);
        self
    }

    /// Places `partition` on `brokers` (first one preferred leader).
    #[must_use]
    pub fn assign(mut self, partition: i32, brokers: Vec<i32>) -> Self {
        self.assignments.insert(partition, brokers);
        self
    }

    /// Sets one topic config.
    #[must_use]
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }

    fn to_request(&self) -> CreatableTopic {
        let mut t = CreatableTopic::default();
        t.name = topic_name(&self.name);
        if self.assignments.is_empty() {
            t.num_partitions = self.num_partitions.unwrap_or(-1);
            t.replication_factor = self.replication_factor.unwrap_or(-1);
        } else {
            // With explicit assignments, Kafka requires both counts to be -1.
            t.num_partitions = -1;
            t.replication_factor = -1;
            t.assignments = self
                .assignments
                .iter()
                .map(|(&partition, brokers)| {
                    let mut a = CreatableReplicaAssignment::default();
                    a.partition_index = partition;
                    a.broker_ids = brokers.iter().map(|&b| BrokerId(b)).collect();
                    a
                })
                .collect();
        }
        t.configs = self
            .configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.clone());
                c.value = Some(StrBytes::from_string(v.clone()));
                c
            })
            .collect();
        t
    }
}

/// What the broker reports about a created (or validated) topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedTopic {
    /// The new topic's id (nil for validate-only or old brokers).
    pub topic_id: Uuid,
    /// Its partition count (-1 if the broker did not say).
    pub num_partitions: i32,
    /// Its replication factor (-1 if the broker did not say).
    pub replication_factor: i16,
}

/// A topic as described by the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Whether Kafka manages it (`__consumer_offsets`, ...).
    pub is_internal: bool,
    /// Partitions by index.
    pub partitions: Vec<PartitionInfo>,
}

/// One partition of a described topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader broker id, if there is a leader.
    pub leader: Option<i32>,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
    /// Replicas on offline brokers.
    pub offline_replicas: Vec<i32>,
}

impl TopicDescription {
    fn from_metadata(t: &TopicMetadata) -> Self {
        TopicDescription {
            name: t.name.clone(),
            topic_id: t.id,
            is_internal: t.is_internal,
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    offline_replicas: p.offline_replicas.clone(),
                })
                .collect(),
        }
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Whether retrying a topic-level error of an admin call may help (the controller moved, a
/// deletion or creation is still in progress).
fn retry_topic_error(e: &Error) -> bool {
    e.is_retriable()
}

impl Admin {
    /// Creates `topics` (or only validates the request when `validate_only`), one result per topic.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<BTreeMap<String, Result<CreatedTopic>>> {
        let deadline = self.deadline();
        let mut done = BTreeMap::new();
        let mut pending: Vec<&NewTopic> = topics.iter().collect();
        let mut backoff = self.cluster.config().retry_policy().start();
        while !pending.is_empty() {
            let outcome = self
                .cluster
                .retry(deadline, || async {
                    let conn = self
                        .cluster
                        .any_connection(ConnectionKind::Metadata)
                        .await?;
                    let mut request = CreateTopicsRequest::default();
                    request.topics = pending.iter().map(|t| t.to_request()).collect();
                    request.timeout_ms = Cluster::remaining_ms(deadline);
                    request.validate_only = validate_only;
                    conn.send(request).await
                })
                .await?;
            let mut retry = Vec::new();
            for topic in pending.drain(..) {
                let answer = outcome
                    .topics
                    .iter()
                    .find(|r| r.name.0.as_str() == topic.name);
                let result = match answer {
                    None => Err(missing_answer("CreateTopics", Some(&topic.name), None)),
                    Some(r) => check(
                        r.error_code,
                        "CreateTopics",
                        Some(&topic.name),
                        None,
                        r.error_message.as_deref(),
                    )
                    .map(|()| CreatedTopic {
                        topic_id: r.topic_id,
                        num_partitions: r.num_partitions,
                        replication_factor: r.replication_factor,
                    }),
                };
                match result {
                    Err(e) if retry_topic_error(&e) && Instant::now() < deadline => {
                        retry.push((topic, e))
                    }
                    other => {
                        done.insert(topic.name.clone(), other);
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            let wait = backoff.next_backoff();
            if Instant::now() + wait >= deadline {
                for (topic, e) in retry {
                    done.insert(topic.name.clone(), Err(e));
                }
                break;
            }
            tokio::time::sleep(wait).await;
            pending = retry.into_iter().map(|(t, _)| t).collect();
        }
        if !validate_only {
            self.cluster.invalidate_metadata();
        }
        Ok(done)
    }

    /// Creates one topic; the error names it.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<CreatedTopic> {
        let name = topic.name.clone();
        let mut results = self.create_topics(&[topic], false).await?;
        results
            .remove(&name)
            .unwrap_or_else(|| Err(missing_answer("CreateTopics", Some(&name), None)))
    }

    /// Deletes `topics`, one result per topic (`UNKNOWN_TOPIC_OR_PARTITION` for missing ones).
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<BTreeMap<String, Result<()>>> {
        let deadline = self.deadline();
        let response = self
            .cluster
            .retry(deadline, || async {
                let conn = self
                    .cluster
                    .any_connection(ConnectionKind::Metadata)
                    .await?;
                let version = negotiated(&conn, ApiKey::DeleteTopics, "DeleteTopics")?;
                let mut request = DeleteTopicsRequest::default();
                if version >= 6 {
                    request.topics = topics
                        .iter()
                        .map(|t| {
                            let mut s = DeleteTopicState::default();
                            s.name = Some(topic_name(t));
                            s
                        })
                        .collect();
                } else {
                    request.topic_names = topics.iter().map(|t| topic_name(t)).collect();
                }
                request.timeout_ms = Cluster::remaining_ms(deadline);
                conn.send_version(request, version).await
            })
            .await?;
        self.cluster.invalidate_metadata();
        Ok(topics
            .iter()
            .map(|&name| {
                let answer = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == name));
                let result = match answer {
                    None => Err(missing_answer("DeleteTopics", Some(name), None)),
                    Some(r) => check(
                        r.error_code,
                        "DeleteTopics",
                        Some(name),
                        None,
                        r.error_message.as_deref(),
                    ),
                };
                (name.to_owned(), result)
            })
            .collect())
    }

    /// Deletes one topic; the error names it.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let mut results = self.delete_topics(&[topic]).await?;
        results
            .remove(topic)
            .unwrap_or_else(|| Err(missing_answer("DeleteTopics", Some(topic), None)))
    }

    /// Grows each topic to the given total partition count, one result per topic.
    pub async fn create_partitions(
        &self,
        new_totals: &[(&str, i32)],
        validate_only: bool,
    ) -> Result<BTreeMap<String, Result<()>>> {
        let deadline = self.deadline();
        let response = self
            .cluster
            .retry(deadline, || async {
                let conn = self
                    .cluster
                    .any_connection(ConnectionKind::Metadata)
                    .await?;
                let mut request = CreatePartitionsRequest::default();
                request.topics = new_totals
                    .iter()
                    .map(|&(name, count)| {
                        let mut t = CreatePartitionsTopic::default();
                        t.name = topic_name(name);
                        t.count = count;
                        t.assignments = None;
                        t
                    })
                    .collect();
                request.timeout_ms = Cluster::remaining_ms(deadline);
                request.validate_only = validate_only;
                conn.send(request).await
            })
            .await?;
        if !validate_only {
            self.cluster.invalidate_metadata();
        }
        Ok(new_totals
            .iter()
            .map(|&(name, _)| {
                let answer = response.results.iter().find(|r| r.name.0.as_str() == name);
                let result = match answer {
                    None => Err(missing_answer("CreatePartitions", Some(name), None)),
                    Some(r) => check(
                        r.error_code,
                        "CreatePartitions",
                        Some(name),
                        None,
                        r.error_message.as_deref(),
                    ),
                };
                (name.to_owned(), result)
            })
            .collect())
    }

    /// Names of every topic, optionally with Kafka's internal ones.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<String>> {
        let metadata = self
            .cluster
            .retry(self.deadline(), || self.cluster.all_topics())
            .await?;
        let mut names: Vec<String> = metadata
            .topics
            .values()
            .filter(|t| include_internal || !t.is_internal)
            .map(|t| t.name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Fresh descriptions of `topics`; a topic that does not exist gets
    /// [`Error::UnknownTopic`] naming it.
    pub async fn describe_topics(
        &self,
        topics: &[&str],
    ) -> Result<BTreeMap<String, Result<TopicDescription>>> {
        self.cluster.invalidate_metadata();
        let found = self
            .cluster
            .retry(self.deadline(), || self.cluster.topics(topics))
            .await?;
        Ok(topics
            .iter()
            .zip(found)
            .map(|(&name, result)| {
                let described = result.map(|t| TopicDescription::from_metadata(&t));
                (name.to_owned(), described)
            })
            .collect())
    }

    /// Fresh description of one topic.
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicDescription> {
        self.describe_topics(&[topic])
            .await?
            .remove(topic)
            .unwrap_or_else(|| Err(Error::UnknownTopic(topic.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_topic_request_uses_broker_defaults_when_unset() {
        let t = NewTopic::new("t").to_request();
        assert_eq!((t.num_partitions, t.replication_factor), (-1, -1));
        let t = NewTopic::new("t")
            .partitions(6)
            .replication_factor(3)
            .config("retention.ms", "1000")
            .to_request();
        assert_eq!((t.num_partitions, t.replication_factor), (6, 3));
        assert_eq!(t.configs[0].name.as_str(), "retention.ms");
        assert_eq!(t.configs[0].value.as_deref(), Some("1000"));
    }

    #[test]
    fn explicit_assignment_clears_the_counts() {
        let t = NewTopic::new("t")
            .partitions(2)
            .assign(0, vec![1, 2])
            .assign(1, vec![2, 1])
            .to_request();
        assert_eq!((t.num_partitions, t.replication_factor), (-1, -1));
        assert_eq!(t.assignments.len(), 2);
        assert_eq!(t.assignments[1].broker_ids, vec![BrokerId(2), BrokerId(1)]);
    }
}
