//! Config administration: describe and incrementally alter topic and broker configs.

use std::collections::{BTreeMap, HashMap};

use flumen_protocol::messages::describe_configs_request::DescribeConfigsResource;
use flumen_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use flumen_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use flumen_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest, StrBytes};

use super::{Admin, check, missing_answer};
use crate::cluster::ConnectionKind;
use crate::connection::Connection;
use crate::error::{Error, Result};

/// Something that has configs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ConfigResource {
    /// A topic.
    Topic(String),
    /// A broker, by id (its configs are served by that broker).
    Broker(i32),
    /// The cluster-wide broker defaults.
    BrokerDefaults,
    /// A broker's log4j loggers.
    BrokerLogger(i32),
    /// A consumer group (KIP-848 group configs).
    Group(String),
}

impl ConfigResource {
    fn resource_type(&self) -> i8 {
        match self {
            ConfigResource::Topic(_) => 2,
            ConfigResource::Broker(_) | ConfigResource::BrokerDefaults => 4,
            ConfigResource::BrokerLogger(_) => 8,
            ConfigResource::Group(_) => 32,
        }
    }

    fn name(&self) -> String {
        match self {
            ConfigResource::Topic(name) | ConfigResource::Group(name) => name.clone(),
            ConfigResource::Broker(id) | ConfigResource::BrokerLogger(id) => id.to_string(),
            ConfigResource::BrokerDefaults => String::new(),
        }
    }

    /// The broker that must serve this resource, if any.
    fn broker(&self) -> Option<i32> {
        match self {
            ConfigResource::Broker(id) | ConfigResource::BrokerLogger(id) => Some(*id),
            _ => None,
        }
    }

    fn topic(&self) -> Option<&str> {
        match self {
            ConfigResource::Topic(name) => Some(name),
            _ => None,
        }
    }
}

impl std::fmt::Display for ConfigResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigResource::Topic(name) => write!(f, "topic {name}"),
            ConfigResource::Broker(id) => write!(f, "broker {id}"),
            ConfigResource::BrokerDefaults => f.write_str("broker defaults"),
            ConfigResource::BrokerLogger(id) => write!(f, "broker {id} loggers"),
            ConfigResource::Group(name) => write!(f, "group {name}"),
        }
    }
}

/// Where a config value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigSource {
    /// Set on the topic.
    DynamicTopic,
    /// Set dynamically on this broker.
    DynamicBroker,
    /// Set dynamically as the default for all brokers.
    DynamicDefaultBroker,
    /// From the broker's properties file.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    /// A dynamic broker logger level.
    DynamicBrokerLogger,
    /// A client metrics subscription.
    ClientMetrics,
    /// Set on the group.
    Group,
    /// A source this client does not know.
    Unknown(i8),
}

impl ConfigSource {
    fn from_wire(v: i8) -> Self {
        match v {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            7 => ConfigSource::ClientMetrics,
            8 => ConfigSource::Group,
            other => ConfigSource::Unknown(other),
        }
    }
}

/// One config of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name.
    pub name: String,
    /// Value (`None` for sensitive values and unset ones).
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether it cannot be changed dynamically.
    pub read_only: bool,
    /// Whether the value is secret (and so not returned).
    pub sensitive: bool,
    /// Other values this config would take, in precedence order.
    pub synonyms: Vec<ConfigSynonym>,
    /// Documentation, when asked for.
    pub documentation: Option<String>,
}

/// A lower-precedence value of a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSynonym {
    /// The synonym's name (for broker configs, may differ from the entry's).
    pub name: String,
    /// Its value.
    pub value: Option<String>,
    /// Where it comes from.
    pub source: ConfigSource,
}

impl ConfigEntry {
    fn from_wire(c: DescribeConfigsResourceResult) -> Self {
        ConfigEntry {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            source: ConfigSource::from_wire(c.config_source),
            read_only: c.read_only,
            sensitive: c.is_sensitive,
            synonyms: c
                .synonyms
                .into_iter()
                .map(|s| ConfigSynonym {
                    name: s.name.to_string(),
                    value: s.value.map(|v| v.to_string()),
                    source: ConfigSource::from_wire(s.source),
                })
                .collect(),
            documentation: c.documentation.map(|d| d.to_string()),
        }
    }
}

/// One change of an incremental config alteration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlterConfigOp {
    /// Sets `name` to the value.
    Set(String, String),
    /// Removes `name`, reverting to the default.
    Delete(String),
    /// Appends the value to list config `name`.
    Append(String, String),
    /// Removes the value from list config `name`.
    Subtract(String, String),
}

impl AlterConfigOp {
    fn to_wire(&self) -> AlterableConfig {
        let (op, name, value) = match self {
            AlterConfigOp::Set(n, v) => (0, n, Some(v)),
            AlterConfigOp::Delete(n) => (1, n, None),
            AlterConfigOp::Append(n, v) => (2, n, Some(v)),
            AlterConfigOp::Subtract(n, v) => (3, n, Some(v)),
        };
        let mut c = AlterableConfig::default();
        c.name = StrBytes::from_string(name.clone());
        c.config_operation = op;
        c.value = value.map(|v| StrBytes::from_string(v.clone()));
        c
    }
}

impl Admin {
    /// The connection that must serve `broker` (its own) or any broker when `None`.
    async fn config_connection(&self, broker: Option<i32>) -> Result<Connection> {
        match broker {
            Some(id) => {
                self.cluster
                    .broker_connection(id, ConnectionKind::Metadata)
                    .await
            }
            None => self.cluster.any_connection(ConnectionKind::Metadata).await,
        }
    }

    /// Every config of each resource (with synonyms), one result per resource.
    pub async fn describe_configs(
        &self,
        resources: &[ConfigResource],
    ) -> Result<BTreeMap<ConfigResource, Result<Vec<ConfigEntry>>>> {
        let mut by_broker: HashMap<Option<i32>, Vec<&ConfigResource>> = HashMap::new();
        for r in resources {
            by_broker.entry(r.broker()).or_default().push(r);
        }
        let mut done = BTreeMap::new();
        for (broker, group) in by_broker {
            let response = self
                .cluster
                .retry(self.deadline(), || async {
                    let conn = self.config_connection(broker).await?;
                    let mut request = DescribeConfigsRequest::default();
                    request.include_synonyms = true;
                    request.resources = group
                        .iter()
                        .map(|r| {
                            let mut d = DescribeConfigsResource::default();
                            d.resource_type = r.resource_type();
                            d.resource_name = StrBytes::from_string(r.name());
                            d.configuration_keys = None;
                            d
                        })
                        .collect();
                    conn.send(request).await
                })
                .await?;
            let mut results = response.results;
            for r in group {
                let name = r.name();
                let position = results.iter().position(|x| {
                    x.resource_type == r.resource_type() && x.resource_name.as_str() == name
                });
                let result = match position.map(|i| results.swap_remove(i)) {
                    None => Err(missing_answer("DescribeConfigs", r.topic(), None)),
                    Some(x) => resource_result(
                        "DescribeConfigs",
                        r,
                        x.error_code,
                        x.error_message.as_deref(),
                    )
                    .map(|()| x.configs.into_iter().map(ConfigEntry::from_wire).collect()),
                };
                done.insert(r.clone(), result);
            }
        }
        Ok(done)
    }

    /// Applies `ops` to each resource (or only validates them), one result per resource.
    pub async fn incremental_alter_configs(
        &self,
        changes: &[(ConfigResource, Vec<AlterConfigOp>)],
        validate_only: bool,
    ) -> Result<BTreeMap<ConfigResource, Result<()>>> {
        let mut by_broker: HashMap<Option<i32>, Vec<&(ConfigResource, Vec<AlterConfigOp>)>> =
            HashMap::new();
        for change in changes {
            by_broker.entry(change.0.broker()).or_default().push(change);
        }
        let mut done = BTreeMap::new();
        for (broker, group) in by_broker {
            let response = self
                .cluster
                .retry(self.deadline(), || async {
                    let conn = self.config_connection(broker).await?;
                    let mut request = IncrementalAlterConfigsRequest::default();
                    request.validate_only = validate_only;
                    request.resources = group
                        .iter()
                        .map(|(r, ops)| {
                            let mut a = AlterConfigsResource::default();
                            a.resource_type = r.resource_type();
                            a.resource_name = StrBytes::from_string(r.name());
                            a.configs = ops.iter().map(AlterConfigOp::to_wire).collect();
                            a
                        })
                        .collect();
                    conn.send(request).await
                })
                .await?;
            for (r, _) in group {
                let name = r.name();
                let answer = response.responses.iter().find(|x| {
                    x.resource_type == r.resource_type() && x.resource_name.as_str() == name
                });
                let result = match answer {
                    None => Err(missing_answer("IncrementalAlterConfigs", r.topic(), None)),
                    Some(x) => resource_result(
                        "IncrementalAlterConfigs",
                        r,
                        x.error_code,
                        x.error_message.as_deref(),
                    ),
                };
                done.insert(r.clone(), result);
            }
        }
        Ok(done)
    }
}

/// A resource-level error, with the resource named in the message (broker configs have no topic field).
fn resource_result(
    api: &'static str,
    r: &ConfigResource,
    code: i16,
    message: Option<&str>,
) -> Result<()> {
    check(code, api, r.topic(), None, message).map_err(|e| match e {
        Error::Broker {
            code,
            api,
            topic,
            partition,
            message,
        } => Error::Broker {
            code,
            api,
            topic,
            partition,
            message: Some(match message {
                Some(m) => format!("{r}: {m}"),
                None => r.to_string(),
            }),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_map_to_wire_types_and_names() {
        assert_eq!(
            (
                ConfigResource::Topic("t".into()).resource_type(),
                ConfigResource::Topic("t".into()).name()
            ),
            (2, "t".to_owned())
        );
        assert_eq!(
            (
                ConfigResource::Broker(3).resource_type(),
                ConfigResource::Broker(3).name()
            ),
            (4, "3".to_owned())
        );
        assert_eq!(ConfigResource::BrokerDefaults.name(), "");
        assert_eq!(ConfigResource::BrokerLogger(1).resource_type(), 8);
        assert_eq!(ConfigResource::Broker(3).broker(), Some(3));
        assert_eq!(ConfigResource::Topic("t".into()).broker(), None);
    }

    #[test]
    fn alter_ops_map_to_wire_operations() {
        let set = AlterConfigOp::Set("retention.ms".into(), "5".into()).to_wire();
        assert_eq!((set.config_operation, set.value.as_deref()), (0, Some("5")));
        let del = AlterConfigOp::Delete("retention.ms".into()).to_wire();
        assert_eq!((del.config_operation, del.value), (1, None));
        assert_eq!(
            AlterConfigOp::Append("a".into(), "b".into())
                .to_wire()
                .config_operation,
            2
        );
        assert_eq!(
            AlterConfigOp::Subtract("a".into(), "b".into())
                .to_wire()
                .config_operation,
            3
        );
    }

    #[test]
    fn resource_errors_name_the_resource() {
        let err = resource_result(
            "DescribeConfigs",
            &ConfigResource::Broker(7),
            42,
            Some("bad"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("broker 7") && text.contains("bad"), "{text}");
    }
}
