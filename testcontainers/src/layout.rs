//! The on-disk and on-network layout of one cluster: ports per broker, SASL users, TLS
//! files, and the `server.properties` / log4j2 files written from them.
//!
//! # Invariants
//! - Every broker is a combined KRaft broker+controller and all of them are voters of a
//!   static quorum (`controller.quorum.voters`): with 3 nodes any single one may be killed and
//!   the remaining two keep a quorum and serve.
//! - PLAINTEXT is always present and is the inter-broker listener, so SASL and TLS settings
//!   only ever concern clients.
//! - Ports are chosen once per cluster and kept across `start_broker`, so addresses handed
//!   out stay valid after a restart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ports::free_ports;
use crate::spec::{ClusterSpec, SaslMechanism, SaslUser, random_token};
use crate::tls::{self, TlsMaterial};

/// Session lifetime of SCRAM-SHA-512 connections on the SASL listener (KIP-368), short so
/// that tests see re-authentication happen.
pub const SCRAM_SHA_512_SESSION_MS: u64 = 3000;

/// The listener ports of one broker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrokerPorts {
    pub plaintext: u16,
    pub controller: u16,
    pub sasl: Option<u16>,
    pub ssl: Option<u16>,
}

/// Everything needed to (re)start the brokers of one cluster.
#[derive(Debug)]
pub(crate) struct Layout {
    pub spec: ClusterSpec,
    pub root: PathBuf,
    pub cluster_id: String,
    pub ports: Vec<BrokerPorts>,
    pub users: Vec<SaslUser>,
    pub tls: Option<TlsMaterial>,
}

impl Layout {
    /// Chooses ports, users and certificates for `spec`, under the directory `root`.
    pub(crate) fn new(spec: ClusterSpec, root: &Path) -> Result<Layout> {
        if spec.brokers != 1 && spec.brokers != 3 {
            return Err(Error::InvalidArgument(format!(
                "a cluster has 1 or 3 brokers, not {}",
                spec.brokers
            )));
        }
        let per_broker = 2 + usize::from(spec.sasl) + usize::from(spec.tls);
        let mut free = free_ports(per_broker * spec.brokers)?.into_iter();
        let mut next = || {
            free.next()
                .ok_or_else(|| Error::InvalidArgument("port list exhausted".into()))
        };
        let mut ports = Vec::with_capacity(spec.brokers);
        for _ in 0..spec.brokers {
            ports.push(BrokerPorts {
                plaintext: next()?,
                controller: next()?,
                sasl: if spec.sasl { Some(next()?) } else { None },
                ssl: if spec.tls { Some(next()?) } else { None },
            });
        }
        let users = if spec.sasl {
            SaslMechanism::ALL
                .iter()
                .map(|&m| SaslUser::generate(m))
                .collect()
        } else {
            Vec::new()
        };
        let tls = if spec.tls {
            Some(tls::generate(root)?)
        } else {
            None
        };
        Ok(Layout {
            spec,
            root: root.to_path_buf(),
            cluster_id: cluster_id(),
            ports,
            users,
            tls,
        })
    }

    /// The directory of broker `n` (config, log, data).
    pub(crate) fn broker_dir(&self, n: usize) -> PathBuf {
        self.root.join(format!("broker-{n}"))
    }

    /// `server.properties` of broker `n`.
    pub(crate) fn config_path(&self, n: usize) -> PathBuf {
        self.broker_dir(n).join("server.properties")
    }

    /// The log4j2 file log of broker `n`.
    pub(crate) fn log_path(&self, n: usize) -> PathBuf {
        self.broker_dir(n).join("server.log")
    }

    /// Where the JVM's own stdout/stderr of broker `n` go (crashes before logging starts).
    pub(crate) fn stdout_path(&self, n: usize) -> PathBuf {
        self.broker_dir(n).join("stdout.log")
    }

    /// The log4j2 configuration of broker `n`.
    pub(crate) fn log4j_path(&self, n: usize) -> PathBuf {
        self.broker_dir(n).join("log4j2.properties")
    }

    /// The log4j2 configuration of the short-lived Java tools (warnings to stderr).
    pub(crate) fn tools_log4j_path(&self) -> PathBuf {
        self.root.join("tools-log4j2.properties")
    }

    /// The `--add-scram` arguments for the storage format of every node.
    /// The `--feature` arguments of `StorageTool format` (name=level), beyond the release's
    /// defaults.
    pub(crate) fn feature_args(&self) -> Vec<String> {
        self.spec
            .transaction_version
            .map(|level| format!("transaction.version={level}"))
            .into_iter()
            .collect()
    }

    pub(crate) fn scram_args(&self) -> Vec<String> {
        self.users
            .iter()
            .filter(|u| u.mechanism != SaslMechanism::Plain)
            .map(|u| {
                format!(
                    "{}=[name={},password={}]",
                    u.mechanism, u.username, u.password
                )
            })
            .collect()
    }

    /// Writes config and log4j2 files of every broker.
    pub(crate) fn write_files(&self) -> Result<()> {
        write(&self.tools_log4j_path(), TOOLS_LOG4J)?;
        for n in 0..self.ports.len() {
            let dir = self.broker_dir(n);
            std::fs::create_dir_all(dir.join("data"))
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            write(&self.config_path(n), &self.server_properties(n))?;
            write(&self.log4j_path(n), &log4j2_properties(&self.log_path(n)))?;
        }
        Ok(())
    }

    /// The `server.properties` of broker `n`.
    pub(crate) fn server_properties(&self, n: usize) -> String {
        let p = &self.ports[n];
        let count = self.ports.len();
        let mut listeners = vec![
            format!("PLAINTEXT://127.0.0.1:{}", p.plaintext),
            format!("CONTROLLER://127.0.0.1:{}", p.controller),
        ];
        let mut advertised = vec![format!("PLAINTEXT://127.0.0.1:{}", p.plaintext)];
        if let Some(port) = p.sasl {
            listeners.push(format!("SASL_PLAINTEXT://127.0.0.1:{port}"));
            advertised.push(format!("SASL_PLAINTEXT://127.0.0.1:{port}"));
        }
        if let Some(port) = p.ssl {
            listeners.push(format!("SSL://127.0.0.1:{port}"));
            advertised.push(format!("SSL://127.0.0.1:{port}"));
        }
        let voters: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, q)| format!("{i}@127.0.0.1:{}", q.controller))
            .collect();
        let min_isr = count.min(2);
        let data = self.broker_dir(n).join("data");

        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Written by flumen-testcontainers for broker {n} of {count}."
        );
        let _ = writeln!(s, "process.roles=broker,controller");
        let _ = writeln!(s, "node.id={n}");
        let _ = writeln!(s, "controller.quorum.voters={}", voters.join(","));
        let _ = writeln!(s, "listeners={}", listeners.join(","));
        let _ = writeln!(s, "advertised.listeners={}", advertised.join(","));
        let _ = writeln!(s, "controller.listener.names=CONTROLLER");
        let _ = writeln!(s, "inter.broker.listener.name=PLAINTEXT");
        let _ = writeln!(
            s,
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,\
             SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL"
        );
        let _ = writeln!(s, "log.dirs={}", data.display());
        let _ = writeln!(s, "num.partitions=1");
        let _ = writeln!(s, "auto.create.topics.enable=true");
        let _ = writeln!(s, "default.replication.factor={count}");
        let _ = writeln!(s, "offsets.topic.replication.factor={count}");
        let _ = writeln!(s, "transaction.state.log.replication.factor={count}");
        let _ = writeln!(s, "transaction.state.log.min.isr={min_isr}");
        let _ = writeln!(
            s,
            "share.coordinator.state.topic.replication.factor={count}"
        );
        let _ = writeln!(s, "share.coordinator.state.topic.min.isr={min_isr}");
        let _ = writeln!(s, "group.initial.rebalance.delay.ms=0");
        // The cleaner's default 128 MiB dedupe buffer would be a third of the small heap.
        let _ = writeln!(s, "log.cleaner.dedupe.buffer.size=16777216");
        let _ = writeln!(s, "num.network.threads=2");
        let _ = writeln!(s, "num.io.threads=4");
        if self.spec.racks {
            let _ = writeln!(s, "broker.rack={}", ClusterSpec::rack_of(n));
            let _ = writeln!(
                s,
                "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector"
            );
        }
        if !self.users.is_empty() {
            let _ = writeln!(
                s,
                "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
            );
            let plain_users: String = self
                .users
                .iter()
                .filter(|u| u.mechanism == SaslMechanism::Plain)
                .map(|u| format!(" user_{}=\"{}\"", u.username, u.password))
                .collect();
            let _ = writeln!(
                s,
                "listener.name.sasl_plaintext.plain.sasl.jaas.config=\
                 org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};"
            );
            for m in ["scram-sha-256", "scram-sha-512"] {
                let _ = writeln!(
                    s,
                    "listener.name.sasl_plaintext.{m}.sasl.jaas.config=\
                     org.apache.kafka.common.security.scram.ScramLoginModule required;"
                );
            }
            // SCRAM-SHA-512 sessions expire after 3 s (KIP-368): clients must re-authenticate
            // on the same connection or the broker closes it. One mechanism only, so clients
            // without re-authentication (Debian's kcat) still work over the others.
            let _ = writeln!(
                s,
                "listener.name.sasl_plaintext.scram-sha-512.connections.max.reauth.ms={}",
                SCRAM_SHA_512_SESSION_MS
            );
        }
        if let Some(tls) = &self.tls {
            let _ = writeln!(s, "listener.name.ssl.ssl.keystore.type=PEM");
            let _ = writeln!(
                s,
                "listener.name.ssl.ssl.keystore.location={}",
                tls.keystore_pem.display()
            );
            let _ = writeln!(s, "listener.name.ssl.ssl.client.auth=none");
        }
        s
    }
}

/// Tools log warnings to stderr only, so their stdout is just their output.
const TOOLS_LOG4J: &str = "status=warn\n\
appender.err.type=Console\n\
appender.err.name=STDERR\n\
appender.err.target=SYSTEM_ERR\n\
appender.err.layout.type=PatternLayout\n\
appender.err.layout.pattern=[%d] %p %m (%c)%n\n\
rootLogger.level=WARN\n\
rootLogger.appenderRef.err.ref=STDERR\n";

fn log4j2_properties(log: &Path) -> String {
    format!(
        "# Written by flumen-testcontainers: the broker logs to one file in its temp dir.\n\
         status=warn\n\
         appender.file.type=File\n\
         appender.file.name=FILE\n\
         appender.file.fileName={}\n\
         appender.file.append=true\n\
         appender.file.layout.type=PatternLayout\n\
         appender.file.layout.pattern=[%d] %p %m (%c)%n\n\
         rootLogger.level=INFO\n\
         rootLogger.appenderRef.file.ref=FILE\n\
         logger.kafka.name=kafka\n\
         logger.kafka.level=INFO\n\
         logger.apache.name=org.apache.kafka\n\
         logger.apache.level=INFO\n",
        log.display()
    )
}

/// A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).
fn cluster_id() -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let token = random_token(16);
    let bytes = token.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(B64[((acc >> bits) & 0x3f) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(B64[((acc << (6 - bits)) & 0x3f) as usize]));
    }
    out
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(spec: ClusterSpec, n: usize) -> String {
        let root = crate::tempdir::TempRoot::create().expect("temp dir");
        let layout = Layout::new(spec, root.path()).expect("layout");
        layout.server_properties(n)
    }

    #[test]
    fn with_racks_puts_each_broker_in_its_own_rack_with_the_rack_aware_selector() {
        for n in 0..3 {
            let p = properties(ClusterSpec::three().with_racks(), n);
            let lines: Vec<&str> = p.lines().collect();
            assert!(
                lines.contains(&format!("broker.rack=rack-{n}").as_str()),
                "{p}"
            );
            assert!(
                lines.contains(
                    &"replica.selector.class=\
                      org.apache.kafka.common.replica.RackAwareReplicaSelector"
                ),
                "{p}"
            );
        }
        let plain = properties(ClusterSpec::three(), 1);
        assert!(!plain.contains("broker.rack"), "{plain}");
        assert!(!plain.contains("replica.selector.class"), "{plain}");
    }

    #[test]
    fn transaction_version_becomes_a_format_feature_only_when_asked_for() {
        let root = crate::tempdir::TempRoot::create().expect("temp dir");
        let default = Layout::new(ClusterSpec::single(), root.path()).expect("layout");
        assert!(default.feature_args().is_empty());
        let off = Layout::new(
            ClusterSpec::single().with_transaction_version(0),
            root.path(),
        )
        .expect("layout");
        assert_eq!(off.feature_args(), ["transaction.version=0"]);
    }

    #[test]
    fn cluster_id_is_22_url_safe_base64_characters() {
        let id = cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
    }
}
