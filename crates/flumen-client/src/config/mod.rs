//! Client configuration: typed builder, Kafka property names, and TOML/JSON files.
//!
//! [`ClientConfig`] holds what every Flumen client needs (bootstrap, security, timeouts,
//! backoffs). It is built either with [`ClientConfig::builder`] or from the property names
//! users already have for the Java client or librdkafka ([`ClientConfig::from_properties`]).
//! Producer and consumer configs reuse the same [`Properties`] bag: each takes its keys
//! with [`ClientConfig::take_from`] and friends, then [`Properties::finish`] reports
//! whatever is left as unknown. Defaults follow the Java client.
//!
//! | Property | Default | Notes |
//! |---|---|---|
//! | `bootstrap.servers` | required | comma-separated `host:port` |
//! | `client.id` | `flumen` | |
//! | `client.rack` | none | |
//! | `security.protocol` | derived | `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`; when absent, derived from the SASL/SSL keys given |
//! | `sasl.mechanism` (librdkafka: `sasl.mechanisms`) | `PLAIN` | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` |
//! | `sasl.username`, `sasl.password` | | librdkafka style |
//! | `sasl.jaas.config` | | Java style: `PlainLoginModule` or `ScramLoginModule` with `username`/`password` |
//! | `ssl.ca.location` / `ssl.truststore.location` + `ssl.truststore.type=PEM` | required for SSL | PEM only (unless certificate verification is off) |
//! | `ssl.certificate.location` + `ssl.key.location` / `ssl.keystore.location` + `ssl.keystore.type=PEM` | none | client certificate |
//! | `ssl.endpoint.identification.algorithm` | `https` | empty or `none` turns host name checks off |
//! | `enable.ssl.certificate.verification` | `true` | |
//! | `request.timeout.ms` | 30000 | |
//! | `socket.connection.setup.timeout.ms` | 10000 | TCP + TLS + ApiVersions + SASL |
//! | `metadata.max.age.ms` | 300000 | |
//! | `retry.backoff.ms`, `retry.backoff.max.ms` | 100, 1000 | doubling, ±20% jitter |
//! | `reconnect.backoff.ms`, `reconnect.backoff.max.ms` | 50, 1000 | doubling, ±20% jitter |
//! | `connections.max.idle.ms` | 540000 | a connection with nothing in flight and no traffic for this long is closed; the pool opens a new one on next use |
//! | `default.api.timeout.ms` | 60000 | overall deadline of admin and metadata operations |
//! | `receive.message.max.bytes` | 100000000 | largest response frame |

mod jaas;
mod properties;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use self::properties::Properties;
pub(crate) use self::properties::config_error;
use crate::connection::{ConnectionConfig, SaslConfig, SaslMechanism, Security, TlsConfig};
use crate::error::Result;
use crate::retry::RetryPolicy;

/// How the client talks to brokers (`security.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityProtocol {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The Kafka spelling (`SASL_SSL`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err("expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL".to_owned()),
        }
    }
}

fn parse_mechanism(s: &str) -> Option<SaslMechanism> {
    match s.to_ascii_uppercase().as_str() {
        "PLAIN" => Some(SaslMechanism::Plain),
        "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
        "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
        _ => None,
    }
}

/// Settings shared by every Flumen client (admin, producer, consumer).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `bootstrap.servers`: `host:port` addresses tried in order until one answers.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`, sent in every request header (default `flumen`).
    pub client_id: String,
    /// `client.rack`, used by brokers for follower fetching.
    pub client_rack: Option<String>,
    /// `security.protocol` with its TLS and SASL settings.
    pub security: Security,
    /// `request.timeout.ms` (default 30 s): how long one request may wait for its response.
    pub request_timeout: Duration,
    /// `socket.connection.setup.timeout.ms` (default 10 s): TCP + TLS + SASL setup.
    pub connect_timeout: Duration,
    /// `metadata.max.age.ms` (default 5 min): metadata is refreshed at least this often.
    pub metadata_max_age: Duration,
    /// `retry.backoff.ms` (default 100 ms): first wait before retrying a failed request.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms` (default 1 s): the retry wait doubles up to this.
    pub retry_backoff_max: Duration,
    /// `reconnect.backoff.ms` (default 50 ms): first wait before reconnecting to a broker.
    pub reconnect_backoff: Duration,
    /// `reconnect.backoff.max.ms` (default 1 s): the reconnect wait doubles up to this.
    pub reconnect_backoff_max: Duration,
    /// `connections.max.idle.ms` (default 9 min): idle connections are closed after this.
    pub connections_max_idle: Duration,
    /// `default.api.timeout.ms` (default 60 s): overall deadline of an admin or metadata
    /// operation, retries included.
    pub default_api_timeout: Duration,
    /// `receive.message.max.bytes` (default 100 MB): the largest response frame accepted.
    pub max_frame_bytes: usize,
}

/// Default of `request.timeout.ms`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default of `socket.connection.setup.timeout.ms`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default of `metadata.max.age.ms`.
pub const DEFAULT_METADATA_MAX_AGE: Duration = Duration::from_millis(300_000);
/// Default of `retry.backoff.ms`.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Default of `retry.backoff.max.ms`.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(1_000);
/// Default of `reconnect.backoff.ms`.
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Default of `reconnect.backoff.max.ms`.
pub const DEFAULT_RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(1_000);
/// Default of `connections.max.idle.ms`.
pub const DEFAULT_CONNECTIONS_MAX_IDLE: Duration = Duration::from_millis(540_000);
/// Default of `default.api.timeout.ms`.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_millis(60_000);
/// Default of `receive.message.max.bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100_000_000;

/// The property names [`ClientConfig`] understands.
pub const CLIENT_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "client.rack",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
    "ssl.ca.location",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "metadata.max.age.ms",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "connections.max.idle.ms",
    "default.api.timeout.ms",
    "receive.message.max.bytes",
];

impl ClientConfig {
    /// A builder; only the bootstrap servers are required.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flumen_client::config::ClientConfig;
    ///
    /// let config = ClientConfig::builder()
    ///     .bootstrap("127.0.0.1:9092,127.0.0.1:9093")
    ///     .client_id("billing")
    ///     .request_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.bootstrap_servers.len(), 2);
    /// ```
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder::default()
    }

    /// Parses Kafka property names; any key not understood is an error naming it.
    ///
    /// ```
    /// use flumen_client::config::ClientConfig;
    ///
    /// let config = ClientConfig::from_properties([
    ///     ("bootstrap.servers", "broker:9092"),
    ///     ("security.protocol", "SASL_PLAINTEXT"),
    ///     ("sasl.mechanism", "SCRAM-SHA-512"),
    ///     ("sasl.username", "alice"),
    ///     ("sasl.password", "secret"),
    /// ])
    /// .unwrap();
    /// assert_eq!(config.client_id, "flumen");
    /// ```
    pub fn from_properties<I, K, V>(properties: I) -> Result<ClientConfig>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut props: Properties = properties.into_iter().collect();
        let config = ClientConfig::take_from(&mut props)?;
        props.finish()?;
        Ok(config)
    }

    /// Takes the client's keys out of `props`, leaving the others (producer, consumer
    /// keys) for the caller, who should end with [`Properties::finish`].
    pub fn take_from(props: &mut Properties) -> Result<ClientConfig> {
        let mut b = ClientConfig::builder();
        if let Some(servers) = props.take_list("bootstrap.servers") {
            b.bootstrap_servers = servers;
        }
        if let Some(id) = props.take("client.id") {
            b.client_id = Some(id);
        }
        b.client_rack = props.take("client.rack").filter(|r| !r.is_empty());
        b.security_protocol = props.take_parsed("security.protocol")?;

        if let Some((key, raw)) = props.take_any(&["sasl.mechanism", "sasl.mechanisms"]) {
            let mechanism = parse_mechanism(&raw).ok_or_else(|| {
                config_error(
                    key,
                    format!("unsupported SASL mechanism {raw:?} (expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"),
                )
            })?;
            b.sasl_mechanism = Some((key, mechanism));
        }
        b.sasl_username = props.take("sasl.username");
        b.sasl_password = props.take("sasl.password");
        if let Some(raw) = props.take("sasl.jaas.config") {
            let login = jaas::parse(&raw).map_err(|m| config_error("sasl.jaas.config", m))?;
            b.jaas = Some(login);
        }

        take_tls(props, &mut b)?;

        let millis =
            |props: &mut Properties, key: &str, slot: &mut Option<Duration>| -> Result<()> {
                if let Some(d) = props.take_millis(key)? {
                    *slot = Some(d);
                }
                Ok(())
            };
        millis(props, "request.timeout.ms", &mut b.request_timeout)?;
        millis(
            props,
            "socket.connection.setup.timeout.ms",
            &mut b.connect_timeout,
        )?;
        millis(props, "metadata.max.age.ms", &mut b.metadata_max_age)?;
        millis(props, "retry.backoff.ms", &mut b.retry_backoff)?;
        millis(props, "retry.backoff.max.ms", &mut b.retry_backoff_max)?;
        millis(props, "reconnect.backoff.ms", &mut b.reconnect_backoff)?;
        millis(
            props,
            "reconnect.backoff.max.ms",
            &mut b.reconnect_backoff_max,
        )?;
        millis(
            props,
            "connections.max.idle.ms",
            &mut b.connections_max_idle,
        )?;
        millis(props, "default.api.timeout.ms", &mut b.default_api_timeout)?;
        b.max_frame_bytes = props.take_parsed("receive.message.max.bytes")?;
        b.build()
    }

    /// The settings of one broker connection.
    pub fn connection_config(&self) -> ConnectionConfig {
        ConnectionConfig {
            client_id: self.client_id.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            security: self.security.clone(),
            max_frame_bytes: self.max_frame_bytes,
            max_idle: Some(self.connections_max_idle),
        }
    }

    /// The `security.protocol` in use.
    pub fn security_protocol(&self) -> SecurityProtocol {
        match self.security {
            Security::Plaintext => SecurityProtocol::Plaintext,
            Security::Ssl(_) => SecurityProtocol::Ssl,
            Security::SaslPlaintext(_) => SecurityProtocol::SaslPlaintext,
            Security::SaslSsl(..) => SecurityProtocol::SaslSsl,
        }
    }

    /// Backoff between retries of a failed request (`retry.backoff.ms`, `retry.backoff.max.ms`).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.retry_backoff, self.retry_backoff_max)
    }

    /// Backoff between reconnection attempts (`reconnect.backoff.ms`, `reconnect.backoff.max.ms`).
    pub fn reconnect_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.reconnect_backoff, self.reconnect_backoff_max)
    }
}

fn take_tls(props: &mut Properties, b: &mut ClientConfigBuilder) -> Result<()> {
    let ca = props.take("ssl.ca.location").filter(|s| !s.is_empty());
    let truststore = props
        .take("ssl.truststore.location")
        .filter(|s| !s.is_empty());
    let truststore_type = props.take("ssl.truststore.type");
    if let Some(kind) = &truststore_type
        && !kind.eq_ignore_ascii_case("PEM")
    {
        return Err(config_error(
            "ssl.truststore.type",
            format!(
                "only PEM trust stores are supported, not {kind:?} (convert with keytool/openssl)"
            ),
        ));
    }
    b.ssl_ca = match (ca, truststore) {
        (Some(_), Some(_)) => {
            return Err(config_error(
                "ssl.truststore.location",
                "set either ssl.ca.location or ssl.truststore.location, not both",
            ));
        }
        (Some(ca), None) => Some(("ssl.ca.location", PathBuf::from(ca))),
        (None, Some(store)) => {
            if truststore_type.is_none() {
                return Err(config_error(
                    "ssl.truststore.type",
                    "ssl.truststore.location needs ssl.truststore.type=PEM (JKS and PKCS12 are not supported)",
                ));
            }
            Some(("ssl.truststore.location", PathBuf::from(store)))
        }
        (None, None) => None,
    };

    let cert = props
        .take("ssl.certificate.location")
        .filter(|s| !s.is_empty());
    let key = props.take("ssl.key.location").filter(|s| !s.is_empty());
    let keystore = props
        .take("ssl.keystore.location")
        .filter(|s| !s.is_empty());
    let keystore_type = props.take("ssl.keystore.type");
    if let Some(kind) = &keystore_type
        && !kind.eq_ignore_ascii_case("PEM")
    {
        return Err(config_error(
            "ssl.keystore.type",
            format!("only PEM key stores are supported, not {kind:?}"),
        ));
    }
    b.ssl_identity = match (cert, key, keystore) {
        (None, None, None) => None,
        (Some(cert), Some(key), None) => Some((
            "ssl.certificate.location",
            PathBuf::from(cert),
            PathBuf::from(key),
        )),
        (Some(_), None, None) => {
            return Err(config_error(
                "ssl.key.location",
                "ssl.certificate.location needs ssl.key.location",
            ));
        }
        (None, Some(_), None) => {
            return Err(config_error(
                "ssl.certificate.location",
                "ssl.key.location needs ssl.certificate.location",
            ));
        }
        (None, None, Some(store)) => {
            if keystore_type.is_none() {
                return Err(config_error(
                    "ssl.keystore.type",
                    "ssl.keystore.location needs ssl.keystore.type=PEM (JKS and PKCS12 are not supported)",
                ));
            }
            // A PEM key store holds the certificate chain and the private key in one file.
            Some((
                "ssl.keystore.location",
                PathBuf::from(&store),
                PathBuf::from(store),
            ))
        }
        (_, _, Some(_)) => {
            return Err(config_error(
                "ssl.keystore.location",
                "set either ssl.keystore.location or ssl.certificate.location/ssl.key.location, not both",
            ));
        }
    };

    if let Some(algorithm) = props.take("ssl.endpoint.identification.algorithm") {
        b.ssl_verify_hostname = Some(match algorithm.to_ascii_lowercase().as_str() {
            "https" => true,
            "" | "none" => false,
            _ => {
                return Err(config_error(
                    "ssl.endpoint.identification.algorithm",
                    format!("expected https or an empty value, got {algorithm:?}"),
                ));
            }
        });
    }
    b.ssl_verify_certificate = props.take_bool("enable.ssl.certificate.verification")?;
    Ok(())
}

impl<'de> Deserialize<'de> for ClientConfig {
    /// Reads a map of dotted Kafka property names to strings, numbers or booleans (a TOML
    /// table or a JSON object); unknown keys are an error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut props = Properties::deserialize(deserializer)?;
        let config = ClientConfig::take_from(&mut props).map_err(serde::de::Error::custom)?;
        props.finish().map_err(serde::de::Error::custom)?;
        Ok(config)
    }
}

/// Builder for [`ClientConfig`]; see [`ClientConfig::builder`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ClientConfigBuilder {
    bootstrap_servers: Vec<String>,
    client_id: Option<String>,
    client_rack: Option<String>,
    security_protocol: Option<SecurityProtocol>,
    // The key that set each value, so that validation errors name what the user wrote.
    sasl_mechanism: Option<(&'static str, SaslMechanism)>,
    sasl_username: Option<String>,
    sasl_password: Option<String>,
    jaas: Option<jaas::JaasLogin>,
    ssl_ca: Option<(&'static str, PathBuf)>,
    ssl_identity: Option<(&'static str, PathBuf, PathBuf)>,
    ssl_verify_hostname: Option<bool>,
    ssl_verify_certificate: Option<bool>,
    request_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    metadata_max_age: Option<Duration>,
    retry_backoff: Option<Duration>,
    retry_backoff_max: Option<Duration>,
    reconnect_backoff: Option<Duration>,
    reconnect_backoff_max: Option<Duration>,
    connections_max_idle: Option<Duration>,
    default_api_timeout: Option<Duration>,
    max_frame_bytes: Option<usize>,
}

impl ClientConfigBuilder {
    /// Adds bootstrap servers: one `host:port` or a comma-separated list.
    pub fn bootstrap(mut self, servers: impl AsRef<str>) -> Self {
        self.bootstrap_servers.extend(
            servers
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        self
    }

    /// Sets `client.id`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Sets `client.rack`.
    pub fn client_rack(mut self, rack: impl Into<String>) -> Self {
        self.client_rack = Some(rack.into());
        self
    }

    /// Sets `security.protocol`. When not set it is derived from the TLS and SASL settings.
    pub fn security_protocol(mut self, protocol: SecurityProtocol) -> Self {
        self.security_protocol = Some(protocol);
        self
    }

    /// SASL credentials (`sasl.mechanism`, `sasl.username`, `sasl.password`).
    pub fn sasl(
        mut self,
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.sasl_mechanism = Some(("sasl.mechanism", mechanism));
        self.sasl_username = Some(username.into());
        self.sasl_password = Some(password.into());
        self
    }

    /// The PEM file of the CA that signed the brokers' certificates (`ssl.ca.location`).
    pub fn ssl_ca_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_ca = Some(("ssl.ca.location", path.into()));
        self
    }

    /// A client certificate chain and private key, both PEM (`ssl.certificate.location`,
    /// `ssl.key.location`).
    pub fn ssl_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.ssl_identity = Some(("ssl.certificate.location", cert.into(), key.into()));
        self
    }

    /// Whether the broker's certificate must match its host name (default true,
    /// `ssl.endpoint.identification.algorithm=https`).
    pub fn ssl_verify_hostname(mut self, verify: bool) -> Self {
        self.ssl_verify_hostname = Some(verify);
        self
    }

    /// Whether the broker's certificate chain is checked at all (default true,
    /// librdkafka's `enable.ssl.certificate.verification`). Turning it off accepts any
    /// broker, including an impostor: for tests only.
    pub fn ssl_verify_certificate(mut self, verify: bool) -> Self {
        self.ssl_verify_certificate = Some(verify);
        self
    }

    /// Sets `request.timeout.ms`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets `socket.connection.setup.timeout.ms`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets `metadata.max.age.ms`.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = Some(age);
        self
    }

    /// Sets `retry.backoff.ms` and `retry.backoff.max.ms`.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_backoff = Some(initial);
        self.retry_backoff_max = Some(max);
        self
    }

    /// Sets `reconnect.backoff.ms` and `reconnect.backoff.max.ms`.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_backoff = Some(initial);
        self.reconnect_backoff_max = Some(max);
        self
    }

    /// Sets `connections.max.idle.ms`.
    pub fn connections_max_idle(mut self, idle: Duration) -> Self {
        self.connections_max_idle = Some(idle);
        self
    }

    /// Sets `default.api.timeout.ms`.
    pub fn default_api_timeout(mut self, timeout: Duration) -> Self {
        self.default_api_timeout = Some(timeout);
        self
    }

    /// Sets `receive.message.max.bytes`.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = Some(bytes);
        self
    }

    /// Validates and builds the config.
    pub fn build(self) -> Result<ClientConfig> {
        if self.bootstrap_servers.is_empty() {
            return Err(config_error(
                "bootstrap.servers",
                "at least one host:port is required",
            ));
        }
        for server in &self.bootstrap_servers {
            validate_address(server)?;
        }
        let client_id = self.client_id.unwrap_or_else(|| "flumen".to_owned());
        if client_id.len() > i16::MAX as usize {
            return Err(config_error("client.id", "longer than 32767 bytes"));
        }

        let has_sasl_settings = self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password.is_some()
            || self.jaas.is_some();
        let has_tls_settings = self.ssl_ca.is_some() || self.ssl_identity.is_some();
        let protocol =
            self.security_protocol
                .unwrap_or(match (has_sasl_settings, has_tls_settings) {
                    (false, false) => SecurityProtocol::Plaintext,
                    (false, true) => SecurityProtocol::Ssl,
                    (true, false) => SecurityProtocol::SaslPlaintext,
                    (true, true) => SecurityProtocol::SaslSsl,
                });
        // Credentials that would silently not be used are almost always a forgotten
        // security.protocol, which otherwise shows up as a confusing broker disconnect.
        if has_sasl_settings && !protocol.uses_sasl() {
            return Err(config_error(
                "security.protocol",
                format!(
                    "SASL settings are given but security.protocol is {}",
                    protocol.as_str()
                ),
            ));
        }
        if has_tls_settings && !protocol.uses_tls() {
            return Err(config_error(
                "security.protocol",
                format!(
                    "SSL settings are given but security.protocol is {}",
                    protocol.as_str()
                ),
            ));
        }

        let tls = protocol.uses_tls().then(|| {
            let (cert, key) = match self.ssl_identity {
                Some((_, cert, key)) => (Some(cert), Some(key)),
                None => (None, None),
            };
            TlsConfig {
                ca_pem: self.ssl_ca.map(|(_, path)| path),
                client_cert_pem: cert,
                client_key_pem: key,
                verify_hostname: self.ssl_verify_hostname.unwrap_or(true),
                verify_certificate: self.ssl_verify_certificate.unwrap_or(true),
            }
        });
        if let Some(tls) = &tls
            && tls.verify_certificate
            && tls.ca_pem.is_none()
        {
            return Err(config_error(
                "ssl.ca.location",
                format!(
                    "security.protocol {} needs the brokers' CA as a PEM file (ssl.ca.location or ssl.truststore.location)",
                    protocol.as_str()
                ),
            ));
        }
        let sasl = if protocol.uses_sasl() {
            Some(sasl_config(
                self.sasl_mechanism,
                self.sasl_username,
                self.sasl_password,
                self.jaas,
            )?)
        } else {
            None
        };
        let security = match (protocol, tls, sasl) {
            (SecurityProtocol::Ssl, Some(tls), _) => Security::Ssl(tls),
            (SecurityProtocol::SaslPlaintext, _, Some(sasl)) => Security::SaslPlaintext(sasl),
            (SecurityProtocol::SaslSsl, Some(tls), Some(sasl)) => Security::SaslSsl(tls, sasl),
            _ => Security::Plaintext,
        };

        let retry_backoff = self.retry_backoff.unwrap_or(DEFAULT_RETRY_BACKOFF);
        let retry_backoff_max = self.retry_backoff_max.unwrap_or(DEFAULT_RETRY_BACKOFF_MAX);
        let reconnect_backoff = self.reconnect_backoff.unwrap_or(DEFAULT_RECONNECT_BACKOFF);
        let reconnect_backoff_max = self
            .reconnect_backoff_max
            .unwrap_or(DEFAULT_RECONNECT_BACKOFF_MAX);
        let request_timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let connect_timeout = self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if request_timeout.is_zero() {
            return Err(config_error("request.timeout.ms", "must be greater than 0"));
        }
        if connect_timeout.is_zero() {
            return Err(config_error(
                "socket.connection.setup.timeout.ms",
                "must be greater than 0",
            ));
        }
        let max_frame_bytes = self.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        // Below this no Metadata response from a real cluster fits.
        if !(1_000..=i32::MAX as usize).contains(&max_frame_bytes) {
            return Err(config_error(
                "receive.message.max.bytes",
                "must be between 1000 and 2147483647",
            ));
        }
        Ok(ClientConfig {
            bootstrap_servers: self.bootstrap_servers,
            client_id,
            client_rack: self.client_rack,
            security,
            request_timeout,
            connect_timeout,
            metadata_max_age: self.metadata_max_age.unwrap_or(DEFAULT_METADATA_MAX_AGE),
            retry_backoff,
            // Java lets the maximum win when the two are inverted; so do we.
            retry_backoff_max: retry_backoff_max.max(Duration::from_millis(1)),
            reconnect_backoff,
            reconnect_backoff_max: reconnect_backoff_max.max(Duration::from_millis(1)),
            connections_max_idle: self
                .connections_max_idle
                .unwrap_or(DEFAULT_CONNECTIONS_MAX_IDLE),
            default_api_timeout: self.default_api_timeout.unwrap_or(DEFAULT_API_TIMEOUT),
            max_frame_bytes,
        })
    }
}

fn sasl_config(
    mechanism: Option<(&'static str, SaslMechanism)>,
    username: Option<String>,
    password: Option<String>,
    jaas: Option<jaas::JaasLogin>,
) -> Result<SaslConfig> {
    let mechanism = match (mechanism, &jaas) {
        (Some((key, m)), Some(login)) => {
            let fits = match login.module {
                jaas::JaasModule::Plain => m == SaslMechanism::Plain,
                jaas::JaasModule::Scram => m != SaslMechanism::Plain,
            };
            if !fits {
                return Err(config_error(
                    "sasl.jaas.config",
                    format!("the login module does not match {key}"),
                ));
            }
            m
        }
        (Some((_, m)), None) => m,
        (None, Some(login)) if login.module == jaas::JaasModule::Plain => SaslMechanism::Plain,
        (None, Some(_)) => {
            return Err(config_error(
                "sasl.mechanism",
                "required with the SCRAM login module: SCRAM-SHA-256 or SCRAM-SHA-512",
            ));
        }
        // Java's default (GSSAPI) is not supported, so the default is the simplest we have.
        (None, None) => SaslMechanism::Plain,
    };
    let (username, password) = match (username, password, jaas) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(config_error(
                "sasl.jaas.config",
                "set either sasl.jaas.config or sasl.username/sasl.password, not both",
            ));
        }
        (Some(u), Some(p), None) => (u, p),
        (None, _, None) => return Err(config_error("sasl.username", "required for SASL")),
        (Some(_), None, None) => return Err(config_error("sasl.password", "required for SASL")),
        (None, None, Some(login)) => (login.username, login.password),
    };
    Ok(SaslConfig {
        mechanism,
        username,
        password,
    })
}

fn validate_address(server: &str) -> Result<()> {
    let bad = |why: &str| {
        config_error(
            "bootstrap.servers",
            format!("{server:?} is not host:port ({why})"),
        )
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() || host.contains("://") {
        return Err(bad("bad host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("bad port")),
    }
}

#[cfg(test)]
mod tests;
