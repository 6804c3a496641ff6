//! Which Apache Kafka release a cluster runs (`KafkaVersion`), and what differs between them.
//!
//! The pinned release comes from `kafka/pom.xml`; any other `major.minor.patch` from 3.9 on
//! can be asked for (`ClusterSpec::with_version`, `up --kafka-version`): its jars are
//! resolved from a pom generated from the pinned one (`jvm::pom_for`) into a cache directory
//! of its own.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The oldest release the harness can start: KRaft with `StorageTool format --add-scram` and
/// a static controller quorum, the same `kafka.Kafka` main class and jar names as 4.x.
pub const OLDEST_SUPPORTED: KafkaVersion = KafkaVersion::new(3, 9, 0);

/// An Apache Kafka release, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaVersion {
    /// Major version (3, 4, ...).
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Patch version.
    pub patch: u16,
}

impl KafkaVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        KafkaVersion {
            major,
            minor,
            patch,
        }
    }

    /// The release pinned in `testcontainers/kafka/pom.xml` (what every cluster runs unless
    /// asked otherwise).
    pub fn pinned() -> KafkaVersion {
        crate::jvm::kafka_version()
            .parse()
            .unwrap_or_else(|e| panic!("testcontainers/kafka/pom.xml: {e}"))
    }

    /// Parses `"3.9.1"` and checks that the harness can start that release.
    pub fn parse(text: &str) -> Result<KafkaVersion> {
        text.parse()
    }

    /// Whether the broker offers the KIP-848 consumer group protocol
    /// (`group.protocol=consumer`) out of the box: generally available from Kafka 4.0 on; 3.x
    /// had it only as early access, off unless the broker is configured for it.
    pub fn has_kip848(self) -> bool {
        self.major >= 4
    }
}

impl FromStr for KafkaVersion {
    type Err = Error;

    fn from_str(text: &str) -> Result<KafkaVersion> {
        let bad = || {
            Error::InvalidArgument(format!(
                "Kafka version `{text}`: expected major.minor.patch, e.g. 3.9.1 or 4.1.1"
            ))
        };
        let mut parts = text.trim().split('.');
        let mut next = || -> Result<u16> {
            parts
                .next()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)
        };
        let version = KafkaVersion::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        if version < OLDEST_SUPPORTED {
            return Err(Error::InvalidArgument(format!(
                "Kafka {version} is not supported by the harness: the oldest is \
                 {OLDEST_SUPPORTED} (KRaft storage format with SCRAM users)"
            )));
        }
        Ok(version)
    }
}

impl fmt::Display for KafkaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_displays_and_orders_versions() {
        let v: KafkaVersion = "3.9.1".parse().expect("valid");
        assert_eq!(v, KafkaVersion::new(3, 9, 1));
        assert_eq!(v.to_string(), "3.9.1");
        assert!(v < KafkaVersion::new(4, 0, 0));
        assert!(!v.has_kip848());
        assert!(KafkaVersion::new(4, 4, 0).has_kip848());
        assert_eq!(
            KafkaVersion::pinned().to_string(),
            crate::jvm::kafka_version()
        );
    }

    #[test]
    fn rejects_malformed_and_too_old_versions() {
        for bad in [
            "", "4", "4.1", "4.1.1.1", "4.x.1", "v4.1.1", "4.1.-1", "3.8.1", "2.8.0",
        ] {
            assert!(bad.parse::<KafkaVersion>().is_err(), "{bad} accepted");
        }
    }
}
