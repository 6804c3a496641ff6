//! Settings of one broker connection: timeouts, frame cap, and security (TLS, SASL).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use flumen_protocol::frame::DEFAULT_MAX_FRAME_BYTES;

/// How to open and use one broker connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent in every request header (`client.id`).
    pub client_id: String,
    /// Bound on the whole setup: TCP connect, TLS handshake, ApiVersions and SASL.
    pub connect_timeout: Duration,
    /// Bound on each request's round trip; on expiry the connection is closed.
    pub request_timeout: Duration,
    /// Plaintext, TLS, SASL, or SASL over TLS.
    pub security: Security,
    /// Largest response frame accepted (checked before any buffer grows for it).
    pub max_frame_bytes: usize,
    /// Close the connection after this long with nothing written or read and no request in
    /// flight (`connections.max.idle.ms`); `None` keeps it open.
    pub max_idle: Option<Duration>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "flumen".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            security: Security::Plaintext,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_idle: None,
        }
    }
}

/// The listener's security protocol (`security.protocol`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Security {
    /// `PLAINTEXT`.
    #[default]
    Plaintext,
    /// `SSL`.
    Ssl(TlsConfig),
    /// `SASL_PLAINTEXT`.
    SaslPlaintext(SaslConfig),
    /// `SASL_SSL`.
    SaslSsl(TlsConfig, SaslConfig),
}

impl Security {
    /// The TLS settings, if TLS is used.
    pub fn tls(&self) -> Option<&TlsConfig> {
        match self {
            Security::Ssl(tls) | Security::SaslSsl(tls, _) => Some(tls),
            _ => None,
        }
    }

    /// The SASL settings, if SASL is used.
    pub fn sasl(&self) -> Option<&SaslConfig> {
        match self {
            Security::SaslPlaintext(sasl) | Security::SaslSsl(_, sasl) => Some(sasl),
            _ => None,
        }
    }
}

/// TLS settings (`ssl.*`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that sign the brokers' certificates (`ssl.ca.location`).
    /// Required unless `verify_certificate` is off.
    pub ca_pem: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require client authentication.
    pub client_cert_pem: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_pem: Option<PathBuf>,
    /// Check that the certificate names the host (DNS or IP SAN) we connect to. On by default.
    pub verify_hostname: bool,
    /// Check the certificate chain at all. On by default; turning it off accepts any peer.
    pub verify_certificate: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            verify_hostname: true,
            verify_certificate: true,
        }
    }
}

impl TlsConfig {
    /// Verifies brokers against the CA certificate(s) in `path`.
    pub fn with_ca(path: impl Into<PathBuf>) -> Self {
        TlsConfig {
            ca_pem: Some(path.into()),
            ..TlsConfig::default()
        }
    }
}

/// SASL settings (`sasl.mechanism`, `sasl.username`, `sasl.password`).
#[derive(Clone)]
pub struct SaslConfig {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl SaslConfig {
    /// A SASL configuration.
    pub fn new(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        SaslConfig {
            mechanism,
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN` (RFC 4616): the password in clear, so use it over TLS.
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The name Kafka uses, e.g. `"SCRAM-SHA-256"`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses a Kafka mechanism name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            SaslMechanism::Plain,
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
