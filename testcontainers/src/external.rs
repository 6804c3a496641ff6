//! An existing cluster named by environment variables (`FLUMEN_KAFKA_BOOTSTRAP` and, where
//! it has them, the other variables that the `up` binary prints).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::spec::{SaslMechanism, SaslUser};

/// PLAINTEXT bootstrap of the external cluster; its presence selects this provider.
pub const ENV_BOOTSTRAP: &str = "FLUMEN_KAFKA_BOOTSTRAP";
/// SASL_PLAINTEXT bootstrap.
pub const ENV_SASL_BOOTSTRAP: &str = "FLUMEN_KAFKA_SASL_BOOTSTRAP";
/// SSL bootstrap.
pub const ENV_SSL_BOOTSTRAP: &str = "FLUMEN_KAFKA_SSL_BOOTSTRAP";
/// PEM file of the CA that signed the SSL listener's certificate.
pub const ENV_CA: &str = "FLUMEN_KAFKA_CA";
/// `user:password,...`, one user per mechanism in the order PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
pub const ENV_SASL_USERS: &str = "FLUMEN_KAFKA_SASL_USERS";

/// What is known about an external cluster.
#[derive(Debug, Clone)]
pub(crate) struct External {
    pub bootstrap: String,
    pub sasl_bootstrap: Option<String>,
    pub ssl_bootstrap: Option<String>,
    pub ca: Option<PathBuf>,
    pub users: Vec<SaslUser>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl External {
    /// The external cluster from the environment, if `FLUMEN_KAFKA_BOOTSTRAP` is set.
    pub(crate) fn from_env() -> Option<Result<External>> {
        let bootstrap = var(ENV_BOOTSTRAP)?;
        Some(Self::parse(
            bootstrap,
            var(ENV_SASL_BOOTSTRAP),
            var(ENV_SSL_BOOTSTRAP),
            var(ENV_CA),
            var(ENV_SASL_USERS),
        ))
    }

    fn parse(
        bootstrap: String,
        sasl_bootstrap: Option<String>,
        ssl_bootstrap: Option<String>,
        ca: Option<String>,
        users: Option<String>,
    ) -> Result<External> {
        let users = match users {
            None => Vec::new(),
            Some(list) => parse_users(&list)?,
        };
        Ok(External {
            bootstrap,
            sasl_bootstrap,
            ssl_bootstrap,
            ca: ca.map(PathBuf::from),
            users,
        })
    }
}

/// Parses `user:password,...` (mechanisms by position: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
pub(crate) fn parse_users(list: &str) -> Result<Vec<SaslUser>> {
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > SaslMechanism::ALL.len() {
        return Err(Error::InvalidArgument(format!(
            "{ENV_SASL_USERS} lists {} users; at most one per mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
            entries.len()
        )));
    }
    entries
        .iter()
        .zip(SaslMechanism::ALL)
        .map(|(entry, mechanism)| {
            let (username, password) = entry.split_once(':').ok_or_else(|| {
                Error::InvalidArgument(format!("{ENV_SASL_USERS}: `{entry}` is not user:password"))
            })?;
            Ok(SaslUser {
                mechanism,
                username: username.to_owned(),
                password: password.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_users_are_mapped_to_mechanisms_by_position() {
        let users = parse_users("a:1,b:2:x,c:3").expect("valid list");
        assert_eq!(users.len(), 3);
        assert_eq!(users[0].mechanism, SaslMechanism::Plain);
        assert_eq!(users[1].username, "b");
        assert_eq!(users[1].password, "2:x");
        assert_eq!(users[2].mechanism, SaslMechanism::ScramSha512);
    }

    #[test]
    fn malformed_sasl_user_is_an_error() {
        assert!(parse_users("nopassword").is_err());
        assert!(parse_users("a:1,b:2,c:3,d:4").is_err());
    }
}
