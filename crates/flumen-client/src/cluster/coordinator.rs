//! Group and transaction coordinator lookup (FindCoordinator) with a cache.
//!
//! FindCoordinator v4+ (KIP-699) looks up many keys in one request; older brokers get one
//! request per key (v3 or below). A cached coordinator is dropped when a request to it fails
//! with `NOT_COORDINATOR` or `COORDINATOR_NOT_AVAILABLE`, or when its connection fails
//! ([`Cluster::invalidate_coordinator`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, StrBytes,
};
use tokio::time::Instant;

use super::{BrokerInfo, Cluster, ConnectionKind, broker_error};
use crate::connection::Connection;
use crate::error::{Error, Result};

/// FindCoordinator's first version with batched keys.
const BATCHED_VERSION: i16 = 4;

/// What a coordinator coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CoordinatorType {
    /// A consumer group (key: the group id).
    Group,
    /// A transactional producer (key: the transactional id).
    Transaction,
}

impl CoordinatorType {
    fn key_type(self) -> i8 {
        match self {
            CoordinatorType::Group => 0,
            CoordinatorType::Transaction => 1,
        }
    }
}

/// Known coordinators by (type, key).
#[derive(Default)]
pub(super) struct Cache {
    entries: Mutex<HashMap<(CoordinatorType, String), BrokerInfo>>,
}

impl Cache {
    fn get(&self, kind: CoordinatorType, key: &str) -> Option<BrokerInfo> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(&(kind, key.to_owned())).cloned()
    }

    fn put(&self, kind: CoordinatorType, key: String, broker: BrokerInfo) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.insert((kind, key), broker);
    }

    fn remove(&self, kind: CoordinatorType, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(&(kind, key.to_owned()));
    }
}

impl Cluster {
    /// The coordinator of `key`, from the cache or looked up (retrying
    /// `COORDINATOR_NOT_AVAILABLE` and the like until `default.api.timeout.ms`).
    pub async fn coordinator(&self, kind: CoordinatorType, key: &str) -> Result<BrokerInfo> {
        if let Some(broker) = self.inner.coordinators.get(kind, key) {
            return Ok(broker);
        }
        let keys = [key.to_owned()];
        self.retry(self.default_deadline(), || async {
            let mut found = self.find_coordinators(kind, &keys).await?;
            match found.pop() {
                Some((_, result)) => result,
                None => Err(broker_error(
                    ErrorCode::CoordinatorNotAvailable,
                    "FindCoordinator",
                    None,
                    None,
                    Some(format!("no answer for {key}")),
                )),
            }
        })
        .await
    }

    /// A connection (of kind [`ConnectionKind::Group`]) to the coordinator of `key`.
    pub async fn coordinator_connection(
        &self,
        kind: CoordinatorType,
        key: &str,
    ) -> Result<Connection> {
        let broker = self.coordinator(kind, key).await?;
        match self.connection(&broker, ConnectionKind::Group).await {
            Ok(conn) => Ok(conn),
            Err(e) => {
                self.invalidate_coordinator(kind, key);
                Err(e)
            }
        }
    }

    /// Forgets the cached coordinator of `key`.
    pub fn invalidate_coordinator(&self, kind: CoordinatorType, key: &str) {
        self.inner.coordinators.remove(kind, key);
    }

    /// If `error` says the coordinator moved or is down, forgets it. Returns whether it did.
    pub fn note_coordinator_error(&self, kind: CoordinatorType, key: &str, error: &Error) -> bool {
        let moved = match error {
            Error::Broker { code, .. } => {
                matches!(
                    code,
                    ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable
                )
            }
            other => other.is_retriable(),
        };
        if moved {
            self.invalidate_coordinator(kind, key);
        }
        moved
    }

    /// Looks up the coordinators of `keys` (one request on brokers with FindCoordinator v4+),
    /// caching the ones found. Each key gets its own result, so one unknown group does not
    /// fail the others.
    pub async fn find_coordinators(
        &self,
        kind: CoordinatorType,
        keys: &[String],
    ) -> Result<Vec<(String, Result<BrokerInfo>)>> {
        let conn = self.any_connection(ConnectionKind::Metadata).await?;
        let version =
            conn.api_version(ApiKey::FindCoordinator)
                .ok_or_else(|| Error::UnsupportedVersion {
                    addr: conn.addr().to_owned(),
                    api: "FindCoordinator",
                })?;
        let mut results = Vec::with_capacity(keys.len());
        if version >= BATCHED_VERSION {
            let mut request = FindCoordinatorRequest::default();
            request.key_type = kind.key_type();
            request.coordinator_keys = keys
                .iter()
                .map(|k| StrBytes::from_string(k.clone()))
                .collect();
            let response = conn.send_version(request, version).await?;
            results.extend(batched_results(response));
        } else {
            for key in keys {
                let mut request = FindCoordinatorRequest::default();
                request.key = StrBytes::from_string(key.clone());
                if version >= 1 {
                    request.key_type = kind.key_type();
                } else if kind != CoordinatorType::Group {
                    return Err(Error::UnsupportedVersion {
                        addr: conn.addr().to_owned(),
                        api: "FindCoordinator (transactions)",
                    });
                }
                let response = conn.send_version(request, version).await?;
                results.push((key.clone(), single_result(response)));
            }
        }
        for (key, result) in &results {
            if let Ok(broker) = result {
                self.inner
                    .coordinators
                    .put(kind, key.clone(), broker.clone());
            }
        }
        Ok(results)
    }

    /// Looks up the coordinators of `keys` until each is found, fails for good, or the
    /// deadline passes (used for batches of groups in the admin API).
    pub(crate) async fn coordinators_until(
        &self,
        kind: CoordinatorType,
        keys: &[String],
        deadline: Instant,
    ) -> Result<HashMap<String, Result<BrokerInfo>>> {
        let mut done: HashMap<String, Result<BrokerInfo>> = HashMap::new();
        let mut pending: Vec<String> = Vec::new();
        for key in keys {
            match self.inner.coordinators.get(kind, key) {
                Some(b) => {
                    done.insert(key.clone(), Ok(b));
                }
                None if !pending.contains(key) => pending.push(key.clone()),
                None => {}
            }
        }
        let mut backoff = self.config().retry_policy().start();
        while !pending.is_empty() {
            let mut failed: Vec<(String, Error)> = Vec::new();
            match self.find_coordinators(kind, &pending).await {
                Ok(found) => {
                    for (key, result) in found {
                        match result {
                            Err(e) if e.is_retriable() => failed.push((key, e)),
                            other => {
                                done.insert(key, other);
                            }
                        }
                    }
                }
                Err(e) if e.is_retriable() => {
                    self.note_error(&e);
                    for key in &pending {
                        failed.push((key.clone(), super::duplicate(&e)));
                    }
                }
                Err(e) => return Err(e),
            }
            if failed.is_empty() {
                break;
            }
            let wait = backoff.next_backoff();
            if Instant::now() + wait >= deadline {
                for (key, e) in failed {
                    done.insert(key, Err(e));
                }
                break;
            }
            tokio::time::sleep(wait).await;
            pending = failed.into_iter().map(|(key, _)| key).collect();
        }
        Ok(done)
    }
}

fn batched_results(response: FindCoordinatorResponse) -> Vec<(String, Result<BrokerInfo>)> {
    response
        .coordinators
        .into_iter()
        .map(|c| {
            let key = c.key.to_string();
            let code = ErrorCode::from_code(c.error_code);
            let result = if code == ErrorCode::None {
                Ok(BrokerInfo {
                    id: c.node_id.0,
                    host: c.host.to_string(),
                    port: c.port,
                    rack: None,
                })
            } else {
                Err(broker_error(
                    code,
                    "FindCoordinator",
                    None,
                    None,
                    Some(coordinator_message(&key, c.error_message)),
                ))
            };
            (key, result)
        })
        .collect()
}

fn single_result(response: FindCoordinatorResponse) -> Result<BrokerInfo> {
    let code = ErrorCode::from_code(response.error_code);
    if code != ErrorCode::None {
        return Err(broker_error(
            code,
            "FindCoordinator",
            None,
            None,
            response.error_message.map(|m| m.to_string()),
        ));
    }
    Ok(BrokerInfo {
        id: response.node_id.0,
        host: response.host.to_string(),
        port: response.port,
        rack: None,
    })
}

fn coordinator_message(key: &str, message: Option<StrBytes>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("key {key}: {m}"),
        _ => format!("key {key}"),
    }
}

#[cfg(test)]
mod tests {
    use flumen_protocol::messages::BrokerId;
    use flumen_protocol::messages::find_coordinator_response::Coordinator;

    use super::*;

    #[test]
    fn batched_response_gives_each_key_its_own_result() {
        let mut ok = Coordinator::default();
        ok.key = StrBytes::from_static_str("g1");
        ok.node_id = BrokerId(2);
        ok.host = StrBytes::from_static_str("127.0.0.1");
        ok.port = 9093;
        let mut bad = Coordinator::default();
        bad.key = StrBytes::from_static_str("g2");
        bad.error_code = ErrorCode::CoordinatorNotAvailable.code();
        let mut response = FindCoordinatorResponse::default();
        response.coordinators = vec![ok, bad];
        let results = batched_results(response);
        assert_eq!(results[0].0, "g1");
        assert_eq!(results[0].1.as_ref().unwrap().addr(), "127.0.0.1:9093");
        let err = results[1].1.as_ref().unwrap_err();
        assert!(err.is_retriable());
        assert!(err.to_string().contains("g2"), "{err}");
    }

    #[test]
    fn single_key_response_error_is_typed() {
        let mut response = FindCoordinatorResponse::default();
        response.error_code = ErrorCode::GroupAuthorizationFailed.code();
        let err = single_result(response).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::GroupAuthorizationFailed));
        assert!(!err.is_retriable());
    }
}
