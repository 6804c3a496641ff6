//! The admin client: topics, partitions, configs, offsets, records, groups and the cluster.
//!
//! Each call goes where Kafka wants it: topic creation and deletion to any broker (KRaft
//! forwards to the controller), ListOffsets and DeleteRecords to each partition's leader,
//! group calls to the group's coordinator. Batch calls return one result per item (topic,
//! partition, group, config resource), so one failure names its item and does not hide the
//! others; the outer `Result` is for failures of the whole call (no broker reachable, ...).
//! Retriable failures are retried with backoff until `default.api.timeout.ms`.

mod cluster;
mod configs;
mod groups;
mod offsets;
mod records;
mod topics;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use flumen_protocol::messages::ApiKey;
use tokio::time::Instant;

pub use self::cluster::ClusterDescription;
pub use self::configs::{AlterConfigOp, ConfigEntry, ConfigResource, ConfigSource, ConfigSynonym};
pub use self::groups::{GroupDescription, GroupListing, MemberDescription};
pub use self::offsets::{IsolationLevel, ListedOffset, OffsetAndMetadata, OffsetSpec};
pub use self::topics::{CreatedTopic, NewTopic, PartitionInfo, TopicDescription};
pub(crate) use crate::cluster::duplicate;
use crate::cluster::{BrokerInfo, Cluster, ConnectionKind, CoordinatorType, TopicPartition};
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{Error, Result};

/// The Kafka admin client. Cheap to clone; clones share connections and metadata.
#[derive(Clone, Debug)]
pub struct Admin {
    cluster: Cluster,
}

impl Admin {
    /// Connects to the cluster described by `config`.
    pub async fn connect(config: ClientConfig) -> Result<Admin> {
        Ok(Admin::new(Cluster::connect(config).await?))
    }

    /// An admin client sharing `cluster`'s connections and metadata.
    pub fn new(cluster: Cluster) -> Admin {
        Admin { cluster }
    }

    /// The underlying cluster handle.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn deadline(&self) -> Instant {
        self.cluster.default_deadline()
    }

    /// Runs `send` once per partition leader with that leader's share of `items`, retrying
    /// the items whose leader moved or could not be reached, until each has a final result
    /// or the deadline passes.
    async fn by_leader<V, T, F, Fut>(
        &self,
        items: Vec<(TopicPartition, V)>,
        deadline: Instant,
        send: F,
    ) -> Result<BTreeMap<TopicPartition, Result<T>>>
    where
        V: Clone,
        F: Fn(Connection, Vec<(TopicPartition, V)>) -> Fut,
        Fut: Future<Output = Result<Vec<(TopicPartition, Result<T>)>>>,
    {
        let mut done = BTreeMap::new();
        let mut pending = items;
        let mut backoff = self.cluster.config().retry_policy().start();
        loop {
            let mut last_errors: Vec<(TopicPartition, V, Error)> = Vec::new();
            let mut groups: HashMap<i32, (BrokerInfo, Vec<(TopicPartition, V)>)> = HashMap::new();
            for (tp, value) in pending.drain(..) {
                match self.cluster.leader(&tp.topic, tp.partition).await {
                    Ok(leader) => groups
                        .entry(leader.id)
                        .or_insert_with(|| (leader, Vec::new()))
                        .1
                        .push((tp, value)),
                    Err(e) if e.is_retriable() => last_errors.push((tp, value, e)),
                    Err(e) => {
                        done.insert(tp, Err(e));
                    }
                }
            }
            let sends = groups.into_values().map(|(leader, share)| {
                let send = &send;
                async move {
                    let outcome = async {
                        let conn = self
                            .cluster
                            .connection(&leader, ConnectionKind::Metadata)
                            .await?;
                        send(conn, share.clone()).await
                    }
                    .await;
                    (share, outcome)
                }
            });
            for (share, outcome) in futures::future::join_all(sends).await {
                match outcome {
                    Ok(results) => {
                        let values: HashMap<TopicPartition, V> = share.into_iter().collect();
                        for (tp, result) in results {
                            match result {
                                Err(e) if e.is_retriable() => {
                                    self.cluster.note_error(&e);
                                    if let Some(v) = values.get(&tp) {
                                        last_errors.push((tp, v.clone(), e));
                                    }
                                }
                                other => {
                                    done.insert(tp, other);
                                }
                            }
                        }
                    }
                    Err(e) if e.is_retriable() => {
                        self.cluster.note_error(&e);
                        for (tp, v) in share {
                            last_errors.push((tp, v, duplicate(&e)));
                        }
                    }
                    Err(e) => {
                        for (tp, _) in share {
                            done.insert(tp, Err(duplicate(&e)));
                        }
                    }
                }
            }
            if last_errors.is_empty() {
                return Ok(done);
            }
            let wait = backoff.next_backoff();
            if Instant::now() + wait >= deadline {
                for (tp, _, e) in last_errors {
                    done.insert(tp, Err(e));
                }
                return Ok(done);
            }
            tracing::debug!(
                partitions = last_errors.len(),
                ?wait,
                "retrying partitions after leader errors"
            );
            tokio::time::sleep(wait).await;
            pending = last_errors.into_iter().map(|(tp, v, _)| (tp, v)).collect();
        }
    }

    /// Runs `op` against the coordinator of `group`, finding it again (and retrying) when
    /// it moved or is loading, until the deadline.
    async fn with_coordinator<T, F, Fut>(&self, group: &str, op: F) -> Result<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let op = &op;
        self.cluster
            .retry(self.deadline(), || async move {
                let conn = self
                    .cluster
                    .coordinator_connection(CoordinatorType::Group, group)
                    .await?;
                let result = op(conn).await;
                if let Err(e) = &result {
                    self.cluster
                        .note_coordinator_error(CoordinatorType::Group, group, e);
                }
                result
            })
            .await
    }
}

/// The negotiated version of `key` on `conn`, or an error naming the API.
fn negotiated(conn: &Connection, key: ApiKey, api: &'static str) -> Result<i16> {
    conn.api_version(key)
        .ok_or_else(|| Error::UnsupportedVersion {
            addr: conn.addr().to_owned(),
            api,
        })
}

/// A topic-level or partition-level error code from a response, as a result with context.
fn check(
    code: i16,
    api: &'static str,
    topic: Option<&str>,
    partition: Option<i32>,
    message: Option<&str>,
) -> Result<()> {
    let code = flumen_protocol::ErrorCode::from_code(code);
    if code == flumen_protocol::ErrorCode::None {
        return Ok(());
    }
    Err(crate::cluster::broker_error(
        code,
        api,
        topic,
        partition,
        message.filter(|m| !m.is_empty()).map(str::to_owned),
    ))
}

/// Items the broker did not answer for: each gets an error saying so.
/// The result for one asked partition: an error if the response left it out or carries
/// its error code, else `value` of its answer.
fn partition_result<P, T>(
    api: &'static str,
    tp: &crate::TopicPartition,
    answer: Option<&P>,
    error_code: impl Fn(&P) -> i16,
    value: impl FnOnce(&P) -> T,
) -> Result<T> {
    let p = answer.ok_or_else(|| missing_answer(api, Some(&tp.topic), Some(tp.partition)))?;
    check(
        error_code(p),
        api,
        Some(&tp.topic),
        Some(tp.partition),
        None,
    )?;
    Ok(value(p))
}

fn missing_answer(api: &'static str, topic: Option<&str>, partition: Option<i32>) -> Error {
    crate::cluster::broker_error(
        flumen_protocol::ErrorCode::UnknownServerError,
        api,
        topic,
        partition,
        Some("the broker's response did not mention this item".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>() {}
    fn is_send<T: Send>(_: &T) {}

    /// Compiles only if the handles and the futures of their calls can move between
    /// threads, so that users on a multi-thread runtime can `tokio::spawn` them.
    #[allow(dead_code)]
    fn futures_are_send(admin: &Admin, cluster: &Cluster) {
        is_send(&admin.list_offsets(&[], IsolationLevel::ReadCommitted));
        is_send(&admin.create_topics(&[], false));
        is_send(&admin.describe_groups(&[]));
        is_send(&admin.list_group_offsets("g", None));
        is_send(&admin.describe_configs(&[]));
        is_send(&cluster.leader("t", 0));
        is_send(&cluster.coordinator(CoordinatorType::Group, "g"));
    }

    #[test]
    fn handles_are_send_and_sync() {
        is_send_sync::<Admin>();
        is_send_sync::<Cluster>();
    }

    #[test]
    fn duplicated_errors_keep_kind_and_retriability() {
        let broker = crate::cluster::broker_error(
            flumen_protocol::ErrorCode::NotLeaderOrFollower,
            "ListOffsets",
            Some("t"),
            Some(1),
            None,
        );
        let copy = duplicate(&broker);
        assert_eq!(copy.to_string(), broker.to_string());
        assert!(copy.is_retriable());
        let unknown = duplicate(&Error::UnknownTopic("t".into()));
        assert!(matches!(unknown, Error::UnknownTopic(ref t) if t == "t"));
        let auth = duplicate(&Error::Authentication {
            addr: "a:1".into(),
            mechanism: "PLAIN",
            message: "no".into(),
        });
        assert!(!auth.is_retriable());
    }
}
