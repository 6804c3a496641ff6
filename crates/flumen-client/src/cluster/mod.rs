//! The cluster view shared by admin, producer and consumer: bootstrap, metadata, connections.
//!
//! [`Cluster`] (also exported as [`Client`]) is a cheap-to-clone handle. It bootstraps from
//! `bootstrap.servers`, keeps a [`Metadata`] snapshot that is refreshed on demand, when a
//! caller reports a stale-metadata error ([`Cluster::note_error`]) and, lazily, when older than
//! `metadata.max.age.ms`, and hands out pooled connections per broker and purpose.
//!
//! No background task or thread: every refresh runs inside the caller's future, so the client
//! works on a tokio current-thread runtime and costs nothing when idle. The snapshot sits
//! behind a `std::sync::RwLock<Arc<_>>` that is only held to clone or swap the `Arc`.

mod coordinator;
mod metadata;
mod pool;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::MetadataResponse;
use tokio::time::Instant;

pub use self::coordinator::CoordinatorType;
pub use self::metadata::{BrokerInfo, Metadata, PartitionMetadata, TopicMetadata, TopicPartition};
pub use self::pool::ConnectionKind;
use self::pool::Pool;
use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{Error, Result};

/// The public name of the shared cluster handle.
pub type Client = Cluster;

/// A handle to one Kafka cluster: metadata cache, connection pool, coordinator cache.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metadata = self.metadata();
        f.debug_struct("Cluster")
            .field("bootstrap", &self.inner.config.bootstrap_servers)
            .field("cluster_id", &metadata.cluster_id)
            .field("brokers", &metadata.brokers.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    pool: Pool,
    metadata: RwLock<Arc<Metadata>>,
    /// Serialises refreshes, so a burst of callers seeing the same stale leader causes one
    /// Metadata request, not one each.
    refresh: tokio::sync::Mutex<()>,
    /// Set when a caller saw an error that means the snapshot is out of date.
    stale: AtomicBool,
    /// Rotates which broker answers metadata requests.
    next_broker: AtomicUsize,
    coordinators: coordinator::Cache,
}

impl Cluster {
    /// Connects to the first bootstrap server that answers and loads the broker list.
    ///
    /// Fails with an error naming every address tried when none answers; each attempt is
    /// bounded by `socket.connection.setup.timeout.ms` and `request.timeout.ms`.
    pub async fn connect(config: ClientConfig) -> Result<Cluster> {
        let pool = Pool::new(config.connection_config(), config.reconnect_policy());
        let cluster = Cluster {
            inner: Arc::new(Inner {
                config,
                pool,
                metadata: RwLock::new(Arc::new(Metadata::empty())),
                refresh: tokio::sync::Mutex::new(()),
                stale: AtomicBool::new(true),
                next_broker: AtomicUsize::new(0),
                coordinators: coordinator::Cache::default(),
            }),
        };
        cluster.refresh_metadata().await?;
        Ok(cluster)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The current metadata snapshot (no I/O; may be stale).
    pub fn metadata(&self) -> Arc<Metadata> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the metadata as out of date; the next lookup refreshes it.
    pub fn invalidate_metadata(&self) {
        self.inner.stale.store(true, Ordering::Relaxed);
    }

    /// Lets the cluster learn from a failed request: errors that mean the metadata is out
    /// of date (a moved leader, a dead broker, an unknown partition) mark it stale.
    pub fn note_error(&self, error: &Error) {
        if invalidates_metadata(error) {
            self.invalidate_metadata();
        }
    }

    fn needs_refresh(&self, metadata: &Metadata) -> bool {
        self.inner.stale.load(Ordering::Relaxed)
            || metadata.fetched_at.elapsed() >= self.inner.config.metadata_max_age
    }

    /// The current metadata snapshot, fetched again first if it is older than
    /// `metadata.max.age.ms` or marked out of date.
    pub async fn metadata_refreshed_if_old(&self) -> Result<Arc<Metadata>> {
        let current = self.metadata();
        if self.needs_refresh(&current) {
            return self.refresh(&[], Instant::now()).await;
        }
        Ok(current)
    }

    /// Fetches brokers and every topic known so far, now.
    pub async fn refresh_metadata(&self) -> Result<Arc<Metadata>> {
        self.refresh(&[], Instant::now()).await
    }

    /// Fetches brokers, every known topic and `topics`, unless another caller finished such
    /// a refresh after `since`.
    async fn refresh(&self, topics: &[&str], since: Instant) -> Result<Arc<Metadata>> {
        let _guard = self.inner.refresh.lock().await;
        let current = self.metadata();
        let covered = topics
            .iter()
            .all(|t| current.topics.contains_key(*t) || current.missing_topics.contains_key(*t));
        if current.fetched_at > since && covered && !self.inner.stale.load(Ordering::Relaxed) {
            return Ok(current);
        }
        let mut names: Vec<String> = current.topics.keys().cloned().collect();
        for t in topics {
            if !current.topics.contains_key(*t) {
                names.push((*t).to_owned());
            }
        }
        // Clear before sending: an error reported while the request is in flight must
        // cause another refresh.
        self.inner.stale.store(false, Ordering::Relaxed);
        let response = match self.metadata_request(Some(&names)).await {
            Ok(r) => r,
            Err(e) => {
                self.inner.stale.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        let next = Arc::new(current.merge(response, true));
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next.clone();
        Ok(next)
    }

    /// Lists every topic in the cluster (a full Metadata request); the snapshot learns them all.
    pub async fn all_topics(&self) -> Result<Arc<Metadata>> {
        let _guard = self.inner.refresh.lock().await;
        let current = self.metadata();
        let response = self.metadata_request(None).await?;
        let next = Arc::new(current.merge(response, true));
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next.clone();
        self.inner.stale.store(false, Ordering::Relaxed);
        Ok(next)
    }

    /// Sends a Metadata request to the first broker that answers: known brokers in
    /// rotation, then the bootstrap servers.
    async fn metadata_request(&self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let request = metadata::metadata_request(topics);
        let mut failures: Vec<(String, Error)> = Vec::new();
        for addr in self.candidate_addresses() {
            let attempt = async {
                let conn = self.inner.pool.get(&addr, ConnectionKind::Metadata).await?;
                conn.send(request.clone()).await
            };
            match attempt.await {
                Ok(response) => {
                    let code = ErrorCode::from_code(response.error_code);
                    if code != ErrorCode::None {
                        failures.push((addr, broker_error(code, "Metadata", None, None, None)));
                        continue;
                    }
                    tracing::debug!(
                        addr,
                        brokers = response.brokers.len(),
                        topics = response.topics.len(),
                        "metadata"
                    );
                    return Ok(response);
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(addr, error = %e, "metadata request failed, trying the next broker");
                    failures.push((addr, e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(no_broker_answered(failures))
    }

    /// Known brokers (rotating start, so load spreads) followed by the bootstrap servers.
    fn candidate_addresses(&self) -> Vec<String> {
        let metadata = self.metadata();
        let mut brokers: Vec<String> = metadata.brokers.values().map(BrokerInfo::addr).collect();
        if !brokers.is_empty() {
            let start = self.inner.next_broker.fetch_add(1, Ordering::Relaxed) % brokers.len();
            brokers.rotate_left(start);
        }
        for addr in &self.inner.config.bootstrap_servers {
            if !brokers.contains(addr) {
                brokers.push(addr.clone());
            }
        }
        brokers
    }

    /// Metadata of `topic`, refreshed first if stale or older than `metadata.max.age.ms`.
    ///
    /// A topic the cluster does not know is [`Error::UnknownTopic`] naming it.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        let metadata = self.metadata();
        if !self.needs_refresh(&metadata)
            && let Some(t) = metadata.topic(topic)
        {
            return Ok(t.clone());
        }
        let metadata = self.refresh(&[topic], Instant::now()).await?;
        topic_from(&metadata, topic)
    }

    /// Metadata of several topics with one refresh at most; each is looked up like [`topic`](Self::topic).
    pub async fn topics(&self, topics: &[&str]) -> Result<Vec<Result<Arc<TopicMetadata>>>> {
        let mut metadata = self.metadata();
        if self.needs_refresh(&metadata) || topics.iter().any(|t| metadata.topic(t).is_none()) {
            metadata = self.refresh(topics, Instant::now()).await?;
        }
        Ok(topics.iter().map(|t| topic_from(&metadata, t)).collect())
    }

    /// The leader of `topic`/`partition`; refreshes the metadata when it has none.
    ///
    /// A partition index the topic does not have is [`Error::UnknownPartition`], after a
    /// refresh has confirmed it (partitions may have been added since the last one).
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<BrokerInfo> {
        let asked_at = Instant::now();
        let mut t = self.topic(topic).await?;
        if t.partition(partition).is_none() && self.metadata().fetched_at <= asked_at {
            let refreshed = self.refresh(&[topic], asked_at).await?;
            t = topic_from(&refreshed, topic)?;
        }
        let metadata = self.metadata();
        match t.partition(partition) {
            None => Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: t.partitions.len(),
            }),
            Some(p) => match p.leader.and_then(|id| metadata.broker(id)) {
                Some(b) => Ok(b.clone()),
                None => {
                    self.invalidate_metadata();
                    let code = if p.error == ErrorCode::None {
                        ErrorCode::LeaderNotAvailable
                    } else {
                        p.error
                    };
                    Err(broker_error(
                        code,
                        "Metadata",
                        Some(topic),
                        Some(partition),
                        None,
                    ))
                }
            },
        }
    }

    /// A connection to `broker` for `kind`.
    pub async fn connection(
        &self,
        broker: &BrokerInfo,
        kind: ConnectionKind,
    ) -> Result<Connection> {
        self.inner.pool.get(&broker.addr(), kind).await
    }

    /// A connection to the broker with id `id` for `kind`.
    pub async fn broker_connection(&self, id: i32, kind: ConnectionKind) -> Result<Connection> {
        let broker = match self.metadata().broker(id) {
            Some(b) => b.clone(),
            None => {
                let metadata = self.refresh_metadata().await?;
                metadata.broker(id).cloned().ok_or_else(|| Error::Broker {
                    code: ErrorCode::BrokerNotAvailable,
                    api: "Metadata",
                    topic: None,
                    partition: None,
                    message: Some(format!("broker {id} is not in the cluster metadata")),
                })?
            }
        };
        self.connection(&broker, kind).await
    }

    /// A connection to some live broker (for requests any broker can answer, such as
    /// CreateTopics in KRaft mode), trying each in turn.
    pub async fn any_connection(&self, kind: ConnectionKind) -> Result<Connection> {
        let mut failures = Vec::new();
        for addr in self.candidate_addresses() {
            match self.inner.pool.get(&addr, kind).await {
                Ok(conn) => return Ok(conn),
                Err(e) if e.is_retriable() => failures.push((addr, e)),
                Err(e) => return Err(e),
            }
        }
        Err(no_broker_answered(failures))
    }

    /// Drops the pooled connection to `addr` for `kind`, so the next use reconnects.
    pub fn discard_connection(&self, addr: &str, kind: ConnectionKind) {
        self.inner.pool.discard(addr, kind);
    }

    /// Number of open pooled connections.
    pub fn open_connections(&self) -> usize {
        self.inner.pool.open_count()
    }

    /// The deadline of an operation started now (`default.api.timeout.ms`).
    pub fn default_deadline(&self) -> Instant {
        Instant::now() + self.inner.config.default_api_timeout
    }

    /// Runs `op` with the client's retry policy until `deadline`; each retriable failure is
    /// first shown to [`note_error`](Self::note_error) so the next attempt sees fresh metadata.
    pub async fn retry<T, F, Fut>(&self, deadline: Instant, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = self.inner.config.retry_policy();
        crate::retry::retry(deadline, &policy, || {
            let attempt = op();
            async move {
                let result = attempt.await;
                if let Err(e) = &result {
                    self.note_error(e);
                }
                result
            }
        })
        .await
    }

    /// The time left until `deadline`, at least 1 ms (for request `timeout_ms` fields).
    pub(crate) fn remaining_ms(deadline: Instant) -> i32 {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
    }
}

fn topic_from(metadata: &Metadata, topic: &str) -> Result<Arc<TopicMetadata>> {
    if let Some(t) = metadata.topic(topic) {
        return Ok(t.clone());
    }
    match metadata.missing_topics.get(topic) {
        Some(ErrorCode::UnknownTopicOrPartition) | None => {
            Err(Error::UnknownTopic(topic.to_owned()))
        }
        Some(&code) => Err(broker_error(code, "Metadata", Some(topic), None, None)),
    }
}

/// Whether `error` means the metadata snapshot is out of date.
fn invalidates_metadata(error: &Error) -> bool {
    match error {
        Error::Broker { code, .. } => matches!(
            code,
            ErrorCode::NotLeaderOrFollower
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::UnknownTopicId
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::BrokerNotAvailable
                | ErrorCode::ReplicaNotAvailable
                | ErrorCode::KafkaStorageError
                | ErrorCode::NotController
        ),
        other => other.is_retriable(),
    }
}

/// An [`Error::Broker`] for a code found in a response.
pub(crate) fn broker_error(
    code: ErrorCode,
    api: &'static str,
    topic: Option<&str>,
    partition: Option<i32>,
    message: Option<String>,
) -> Error {
    Error::Broker {
        code,
        api,
        topic: topic.map(str::to_owned),
        partition,
        message,
    }
}

/// Errors are not `Clone`; a failure shared by many items is repeated for each, keeping
/// its kind (and so its retriability) where it can.
pub(crate) fn duplicate(e: &Error) -> Error {
    match e {
        Error::Broker {
            code,
            api,
            topic,
            partition,
            message,
        } => Error::Broker {
            code: *code,
            api,
            topic: topic.clone(),
            partition: *partition,
            message: message.clone(),
        },
        Error::UnknownTopic(t) => Error::UnknownTopic(t.clone()),
        Error::UnsupportedVersion { addr, api } => Error::UnsupportedVersion {
            addr: addr.clone(),
            api,
        },
        Error::Connect { addr, source } => Error::Connect {
            addr: addr.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::ConnectTimeout {
            addr,
            timeout,
            stage,
        } => Error::ConnectTimeout {
            addr: addr.clone(),
            timeout: *timeout,
            stage,
        },
        Error::RequestTimeout { addr, api, timeout } => Error::RequestTimeout {
            addr: addr.clone(),
            api,
            timeout: *timeout,
        },
        Error::Authentication {
            addr,
            mechanism,
            message,
        } => Error::Authentication {
            addr: addr.clone(),
            mechanism,
            message: message.clone(),
        },
        other if other.is_retriable() => Error::ConnectionClosed {
            addr: String::new(),
            reason: other.to_string(),
        },
        other => Error::Io(std::io::Error::other(other.to_string())),
    }
}

/// The error when no broker answered: the only failure itself, or one naming every address.
fn no_broker_answered(mut failures: Vec<(String, Error)>) -> Error {
    if failures.len() == 1
        && let Some((_, only)) = failures.pop()
    {
        return only;
    }
    if failures.is_empty() {
        return Error::Config {
            key: "bootstrap.servers".to_owned(),
            message: "no broker address to connect to".to_owned(),
        };
    }
    Error::NoBrokerAvailable {
        attempts: failures
            .into_iter()
            .map(|(addr, e)| format!("{addr}: {e}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_moves_and_dead_brokers_invalidate_metadata() {
        let err = |code| broker_error(code, "ListOffsets", Some("t"), Some(0), None);
        assert!(invalidates_metadata(&err(ErrorCode::NotLeaderOrFollower)));
        assert!(invalidates_metadata(&err(ErrorCode::LeaderNotAvailable)));
        assert!(invalidates_metadata(&err(
            ErrorCode::UnknownTopicOrPartition
        )));
        assert!(invalidates_metadata(&err(ErrorCode::FencedLeaderEpoch)));
        assert!(invalidates_metadata(&Error::ConnectionClosed {
            addr: "h:1".into(),
            reason: "test".into()
        }));
        assert!(!invalidates_metadata(&err(
            ErrorCode::CoordinatorLoadInProgress
        )));
        assert!(!invalidates_metadata(&err(ErrorCode::TopicAlreadyExists)));
    }

    #[test]
    fn one_failed_address_is_returned_as_is_and_several_are_all_named() {
        let closed = || Error::ConnectionClosed {
            addr: "h:1".into(),
            reason: "test".into(),
        };
        let single = no_broker_answered(vec![("h:1".into(), closed())]);
        assert!(matches!(single, Error::ConnectionClosed { .. }));
        let many = no_broker_answered(vec![("h1:1".into(), closed()), ("h2:2".into(), closed())]);
        let text = many.to_string();
        assert!(text.contains("h1:1") && text.contains("h2:2"), "{text}");
        assert!(many.is_retriable());
    }
}
