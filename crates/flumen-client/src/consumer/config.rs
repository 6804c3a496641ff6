//! Consumer configuration: a typed builder and the Java client's property names.
//!
//! [`ConsumerConfig`] wraps a [`ClientConfig`] and adds the consumer's own settings. Defaults
//! are the Java client's; `prefetch.max.bytes` (Flumen's) bounds the bytes fetched but not yet
//! handed to the application, across all partitions.

use std::time::Duration;

use crate::admin::IsolationLevel;
use crate::config::{ClientConfig, Properties, config_error};
use crate::error::Result;

/// What to do when a partition has no valid position (`auto.offset.reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetReset {
    /// Start at the log start offset.
    Earliest,
    /// Start at the log end (or, read-committed, the last stable offset).
    #[default]
    Latest,
    /// Fail: [`poll`](super::Consumer::poll) returns an error naming the partition.
    None,
}

impl std::str::FromStr for OffsetReset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "earliest" | "smallest" | "beginning" => Ok(OffsetReset::Earliest),
            "latest" | "largest" | "end" => Ok(OffsetReset::Latest),
            "none" | "error" => Ok(OffsetReset::None),
            _ => Err("expected earliest, latest or none".to_owned()),
        }
    }
}

/// Which group protocol a subscribing consumer speaks (`group.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupProtocol {
    /// JoinGroup / SyncGroup / Heartbeat, client-side assignment.
    #[default]
    Classic,
    /// KIP-848: ConsumerGroupHeartbeat, broker-side assignment.
    Consumer,
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            _ => Err("expected classic or consumer".to_owned()),
        }
    }
}

/// A partition assignment strategy of the classic protocol (`partition.assignment.strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AssignmentStrategy {
    /// Per topic, contiguous ranges of partitions (`range`, eager).
    Range,
    /// All partitions dealt round-robin (`roundrobin`, eager).
    RoundRobin,
    /// Balanced, sticky, incremental (`cooperative-sticky`, KIP-429).
    CooperativeSticky,
    /// Cooperative-sticky over partition *numbers*: partition `p` of every subscribed topic
    /// goes to one member (`co-partitioned`; Flumen's own, for stream tasks that read
    /// co-partitioned topics; every member of the group must use it).
    CoPartitioned,
}

impl AssignmentStrategy {
    /// The protocol name members announce in JoinGroup (the same as the Java client's).
    pub fn protocol_name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
            AssignmentStrategy::CoPartitioned => "flumen-co-partitioned",
        }
    }

    /// The strategy announced under `name`.
    pub fn from_protocol_name(name: &str) -> Option<Self> {
        match name {
            "range" => Some(AssignmentStrategy::Range),
            "roundrobin" => Some(AssignmentStrategy::RoundRobin),
            "cooperative-sticky" => Some(AssignmentStrategy::CooperativeSticky),
            "flumen-co-partitioned" => Some(AssignmentStrategy::CoPartitioned),
            _ => None,
        }
    }

    /// Whether members keep their partitions through a rebalance (KIP-429).
    pub fn is_cooperative(self) -> bool {
        matches!(
            self,
            AssignmentStrategy::CooperativeSticky | AssignmentStrategy::CoPartitioned
        )
    }
}

impl std::str::FromStr for AssignmentStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // Java class names are accepted too, so Java property files paste as they are.
        let short = s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase();
        match short.as_str() {
            "range" | "rangeassignor" => Ok(AssignmentStrategy::Range),
            "roundrobin" | "roundrobinassignor" => Ok(AssignmentStrategy::RoundRobin),
            "cooperative-sticky" | "cooperativestickyassignor" => {
                Ok(AssignmentStrategy::CooperativeSticky)
            }
            "co-partitioned" | "flumen-co-partitioned" => Ok(AssignmentStrategy::CoPartitioned),
            _ => Err("expected range, roundrobin, cooperative-sticky or co-partitioned".to_owned()),
        }
    }
}

/// Default of `session.timeout.ms`.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_millis(45_000);
/// Default of `heartbeat.interval.ms`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(3_000);
/// Default of `max.poll.interval.ms`.
pub const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_millis(300_000);
/// Default of `auto.commit.interval.ms`.
pub const DEFAULT_AUTO_COMMIT_INTERVAL: Duration = Duration::from_millis(5_000);
/// Default of `fetch.max.wait.ms`.
pub const DEFAULT_FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// Default of `max.partition.fetch.bytes`.
pub const DEFAULT_MAX_PARTITION_FETCH_BYTES: i32 = 1_048_576;
/// Default of `fetch.max.bytes`.
pub const DEFAULT_FETCH_MAX_BYTES: i32 = 52_428_800;
/// Default of `prefetch.max.bytes`.
pub const DEFAULT_PREFETCH_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The consumer's property names (besides the client's).
pub const CONSUMER_PROPERTIES: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.max.wait.ms",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "check.crcs",
    "prefetch.max.bytes",
    "co.partitioned.standby.replicas",
    "co.partitioned.process.id",
];

/// Settings of a [`Consumer`](super::Consumer).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Bootstrap, security, timeouts (and `client.rack`, used for KIP-392 follower fetching).
    pub client: ClientConfig,
    /// `group.id`: needed for `subscribe` and for commits.
    pub group_id: Option<String>,
    /// `group.instance.id`: a static member (KIP-345).
    pub group_instance_id: Option<String>,
    /// `group.protocol`: classic (default) or consumer (KIP-848).
    pub group_protocol: GroupProtocol,
    /// `group.remote.assignor`: the broker-side assignor asked for under KIP-848.
    pub group_remote_assignor: Option<String>,
    /// `partition.assignment.strategy` in preference order (default range, cooperative-sticky).
    pub assignment_strategies: Vec<AssignmentStrategy>,
    /// `session.timeout.ms` (45 s).
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms` (3 s).
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms` (5 min): the member leaves the group if `poll` is not called for this long.
    pub max_poll_interval: Duration,
    /// `auto.offset.reset` (latest).
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit` (true; only with a `group.id`).
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms` (5 s).
    pub auto_commit_interval: Duration,
    /// `isolation.level` (read_uncommitted).
    pub isolation_level: IsolationLevel,
    /// `fetch.min.bytes` (1).
    pub fetch_min_bytes: i32,
    /// `fetch.max.wait.ms` (500 ms).
    pub fetch_max_wait: Duration,
    /// `max.partition.fetch.bytes` (1 MiB).
    pub max_partition_fetch_bytes: i32,
    /// `fetch.max.bytes` (50 MiB), per fetch request.
    pub fetch_max_bytes: i32,
    /// `check.crcs` (true): verify each batch's CRC32C before handing it out.
    pub check_crcs: bool,
    /// `prefetch.max.bytes` (64 MiB): fetched bytes buffered ahead of the application, all
    /// partitions together. Fetchers stop asking when it is reached.
    pub prefetch_max_bytes: usize,
    /// `co.partitioned.standby.replicas` (0): with the co-partitioned assignor, how many
    /// standby copies of each partition number the group's leader places on other processes
    /// than the one running it (Kafka Streams' `num.standby.replicas`); each member reads its
    /// own from [`Consumer::standby_partitions`](super::Consumer::standby_partitions).
    pub standby_replicas: u32,
    /// `co.partitioned.process.id`: the process this member runs in, for the co-partitioned
    /// assignor's standby placement (no two copies of a number on one process, none on the
    /// process running it). Unset: a process of its own.
    pub process_id: Option<String>,
}

impl ConsumerConfig {
    /// A builder over `client`.
    pub fn builder(client: ClientConfig) -> ConsumerConfigBuilder {
        ConsumerConfigBuilder {
            config: ConsumerConfig {
                client,
                group_id: None,
                group_instance_id: None,
                group_protocol: GroupProtocol::Classic,
                group_remote_assignor: None,
                assignment_strategies: vec![
                    AssignmentStrategy::Range,
                    AssignmentStrategy::CooperativeSticky,
                ],
                session_timeout: DEFAULT_SESSION_TIMEOUT,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                max_poll_interval: DEFAULT_MAX_POLL_INTERVAL,
                auto_offset_reset: OffsetReset::Latest,
                enable_auto_commit: true,
                auto_commit_interval: DEFAULT_AUTO_COMMIT_INTERVAL,
                isolation_level: IsolationLevel::ReadUncommitted,
                fetch_min_bytes: 1,
                fetch_max_wait: DEFAULT_FETCH_MAX_WAIT,
                max_partition_fetch_bytes: DEFAULT_MAX_PARTITION_FETCH_BYTES,
                fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
                check_crcs: true,
                prefetch_max_bytes: DEFAULT_PREFETCH_MAX_BYTES,
                standby_replicas: 0,
                process_id: None,
            },
        }
    }

    /// Parses Kafka property names (client and consumer ones); an unknown key is an error naming it.
    ///
    /// ```
    /// use flumen_client::consumer::ConsumerConfig;
    ///
    /// let config = ConsumerConfig::from_properties([
    ///     ("bootstrap.servers", "127.0.0.1:9092"),
    ///     ("group.id", "billing"),
    ///     ("auto.offset.reset", "earliest"),
    ///     ("isolation.level", "read_committed"),
    /// ])
    /// .unwrap();
    /// assert_eq!(config.group_id.as_deref(), Some("billing"));
    /// ```
    pub fn from_properties<I, K, V>(properties: I) -> Result<ConsumerConfig>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut props: Properties = properties.into_iter().collect();
        let config = ConsumerConfig::take_from(&mut props)?;
        props.finish()?;
        Ok(config)
    }

    /// Takes the client's and the consumer's keys out of `props`, leaving unknown ones.
    pub fn take_from(props: &mut Properties) -> Result<ConsumerConfig> {
        let client = ClientConfig::take_from(props)?;
        let mut b = ConsumerConfig::builder(client);
        let c = &mut b.config;
        c.group_id = props.take("group.id").filter(|g| !g.is_empty());
        c.group_instance_id = props.take("group.instance.id").filter(|g| !g.is_empty());
        if let Some(p) = props.take_parsed("group.protocol")? {
            c.group_protocol = p;
        }
        c.group_remote_assignor = props
            .take("group.remote.assignor")
            .filter(|g| !g.is_empty());
        if let Some(list) = props.take_list("partition.assignment.strategy") {
            let mut strategies = Vec::with_capacity(list.len());
            for item in list {
                let s = item.parse::<AssignmentStrategy>().map_err(|m| {
                    config_error("partition.assignment.strategy", format!("{item:?}: {m}"))
                })?;
                strategies.push(s);
            }
            c.assignment_strategies = strategies;
        }
        let millis = |props: &mut Properties, key: &str, slot: &mut Duration| -> Result<()> {
            if let Some(d) = props.take_millis(key)? {
                *slot = d;
            }
            Ok(())
        };
        millis(props, "session.timeout.ms", &mut c.session_timeout)?;
        millis(props, "heartbeat.interval.ms", &mut c.heartbeat_interval)?;
        millis(props, "max.poll.interval.ms", &mut c.max_poll_interval)?;
        millis(
            props,
            "auto.commit.interval.ms",
            &mut c.auto_commit_interval,
        )?;
        millis(props, "fetch.max.wait.ms", &mut c.fetch_max_wait)?;
        if let Some(r) = props.take_parsed("auto.offset.reset")? {
            c.auto_offset_reset = r;
        }
        if let Some(v) = props.take_bool("enable.auto.commit")? {
            c.enable_auto_commit = v;
        }
        if let Some(raw) = props.take("isolation.level") {
            c.isolation_level = match raw.to_ascii_lowercase().as_str() {
                "read_uncommitted" => IsolationLevel::ReadUncommitted,
                "read_committed" => IsolationLevel::ReadCommitted,
                _ => {
                    return Err(config_error(
                        "isolation.level",
                        format!("expected read_uncommitted or read_committed, got {raw:?}"),
                    ));
                }
            };
        }
        if let Some(v) = props.take_parsed("fetch.min.bytes")? {
            c.fetch_min_bytes = v;
        }
        if let Some(v) = props.take_parsed("max.partition.fetch.bytes")? {
            c.max_partition_fetch_bytes = v;
        }
        if let Some(v) = props.take_parsed("fetch.max.bytes")? {
            c.fetch_max_bytes = v;
        }
        if let Some(v) = props.take_bool("check.crcs")? {
            c.check_crcs = v;
        }
        if let Some(v) = props.take_parsed("prefetch.max.bytes")? {
            c.prefetch_max_bytes = v;
        }
        if let Some(v) = props.take_parsed("co.partitioned.standby.replicas")? {
            c.standby_replicas = v;
        }
        c.process_id = props
            .take("co.partitioned.process.id")
            .filter(|p| !p.is_empty());
        b.build()
    }
}

/// Builds a [`ConsumerConfig`]; see [`ConsumerConfig::builder`].
#[derive(Clone, Debug)]
pub struct ConsumerConfigBuilder {
    config: ConsumerConfig,
}

impl ConsumerConfigBuilder {
    /// `group.id`.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.config.group_id = Some(group.into());
        self
    }
    /// `group.instance.id` (static membership).
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.group_instance_id = Some(id.into());
        self
    }
    /// `group.protocol`.
    pub fn group_protocol(mut self, protocol: GroupProtocol) -> Self {
        self.config.group_protocol = protocol;
        self
    }
    /// `partition.assignment.strategy`, in preference order.
    pub fn assignment_strategies(mut self, strategies: Vec<AssignmentStrategy>) -> Self {
        self.config.assignment_strategies = strategies;
        self
    }
    /// `session.timeout.ms`.
    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.config.session_timeout = d;
        self
    }
    /// `heartbeat.interval.ms`.
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.config.heartbeat_interval = d;
        self
    }
    /// `max.poll.interval.ms`.
    pub fn max_poll_interval(mut self, d: Duration) -> Self {
        self.config.max_poll_interval = d;
        self
    }
    /// `auto.offset.reset`.
    pub fn auto_offset_reset(mut self, r: OffsetReset) -> Self {
        self.config.auto_offset_reset = r;
        self
    }
    /// `enable.auto.commit`.
    pub fn enable_auto_commit(mut self, on: bool) -> Self {
        self.config.enable_auto_commit = on;
        self
    }
    /// `auto.commit.interval.ms`.
    pub fn auto_commit_interval(mut self, d: Duration) -> Self {
        self.config.auto_commit_interval = d;
        self
    }
    /// `isolation.level`.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.config.isolation_level = level;
        self
    }
    /// `fetch.min.bytes`.
    pub fn fetch_min_bytes(mut self, n: i32) -> Self {
        self.config.fetch_min_bytes = n;
        self
    }
    /// `fetch.max.wait.ms`.
    pub fn fetch_max_wait(mut self, d: Duration) -> Self {
        self.config.fetch_max_wait = d;
        self
    }
    /// `max.partition.fetch.bytes`.
    pub fn max_partition_fetch_bytes(mut self, n: i32) -> Self {
        self.config.max_partition_fetch_bytes = n;
        self
    }
    /// `fetch.max.bytes`.
    pub fn fetch_max_bytes(mut self, n: i32) -> Self {
        self.config.fetch_max_bytes = n;
        self
    }
    /// `prefetch.max.bytes`.
    pub fn prefetch_max_bytes(mut self, n: usize) -> Self {
        self.config.prefetch_max_bytes = n;
        self
    }
    /// `co.partitioned.standby.replicas`.
    pub fn standby_replicas(mut self, n: u32) -> Self {
        self.config.standby_replicas = n;
        self
    }
    /// `co.partitioned.process.id`.
    pub fn process_id(mut self, id: impl Into<String>) -> Self {
        self.config.process_id = Some(id.into());
        self
    }

    /// Checks the combination and returns the config.
    pub fn build(self) -> Result<ConsumerConfig> {
        let c = self.config;
        if c.heartbeat_interval >= c.session_timeout {
            return Err(config_error(
                "heartbeat.interval.ms",
                "must be lower than session.timeout.ms",
            ));
        }
        if c.assignment_strategies.is_empty() {
            return Err(config_error(
                "partition.assignment.strategy",
                "at least one strategy is needed",
            ));
        }
        for (key, v) in [
            ("fetch.min.bytes", c.fetch_min_bytes),
            ("max.partition.fetch.bytes", c.max_partition_fetch_bytes),
            ("fetch.max.bytes", c.fetch_max_bytes),
        ] {
            if v < 0 || (v == 0 && key != "fetch.min.bytes") {
                return Err(config_error(key, format!("must be positive, got {v}")));
            }
        }
        if c.prefetch_max_bytes == 0 {
            return Err(config_error("prefetch.max.bytes", "must be positive"));
        }
        if c.group_instance_id.is_some() && c.group_id.is_none() {
            return Err(config_error("group.instance.id", "needs a group.id"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(e: crate::Error) -> String {
        match e {
            crate::Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn java_defaults_apply_when_unset() {
        let c = ConsumerConfig::from_properties([("bootstrap.servers", "h:1")]).unwrap();
        assert_eq!(c.session_timeout, Duration::from_secs(45));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(c.max_poll_interval, Duration::from_secs(300));
        assert_eq!(c.auto_offset_reset, OffsetReset::Latest);
        assert!(c.enable_auto_commit);
        assert_eq!(c.fetch_max_bytes, 52_428_800);
        assert_eq!(c.max_partition_fetch_bytes, 1_048_576);
        assert_eq!(
            c.assignment_strategies,
            [
                AssignmentStrategy::Range,
                AssignmentStrategy::CooperativeSticky
            ]
        );
    }

    #[test]
    fn java_class_names_are_accepted_as_strategies() {
        let c = ConsumerConfig::from_properties([
            ("bootstrap.servers", "h:1"),
            (
                "partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor, roundrobin",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.assignment_strategies,
            [
                AssignmentStrategy::CooperativeSticky,
                AssignmentStrategy::RoundRobin
            ]
        );
    }

    #[test]
    fn bad_values_and_unknown_keys_name_their_key() {
        let bad = |k: &str, v: &str| {
            key_of(
                ConsumerConfig::from_properties([("bootstrap.servers", "h:1"), (k, v)])
                    .unwrap_err(),
            )
        };
        assert_eq!(bad("isolation.level", "dirty"), "isolation.level");
        assert_eq!(bad("auto.offset.reset", "middle"), "auto.offset.reset");
        assert_eq!(bad("group.protocol", "new"), "group.protocol");
        assert_eq!(bad("fetch.max.bytes", "0"), "fetch.max.bytes");
        assert_eq!(bad("fetch.max.byte", "1"), "fetch.max.byte");
        assert_eq!(
            bad("heartbeat.interval.ms", "60000"),
            "heartbeat.interval.ms"
        );
    }
}
