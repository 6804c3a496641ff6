//! Broker connections, one per broker per purpose, opened lazily and replaced when closed.
//!
//! Produce, fetch, group and metadata traffic use separate connections so that a fetch
//! long-polling for `fetch.max.wait.ms` never delays a heartbeat or an offset commit queued
//! behind it on the same pipelined socket.
//!
//! Invariants: the map lock (`std::sync::Mutex`) is only held to look up or insert a slot,
//! never across an await. A slot's async lock is held while connecting, so concurrent
//! callers wait for one connection attempt instead of opening several; after a failed
//! attempt the next one waits for the slot's reconnect backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use crate::connection::{Connection, ConnectionConfig};
use crate::error::Result;
use crate::retry::{Backoff, RetryPolicy};

/// What a connection is used for; each kind gets its own connection to a broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionKind {
    /// Produce requests.
    Produce,
    /// Fetch requests (long polls).
    Fetch,
    /// Group coordination, offset commits and transactions.
    Group,
    /// Metadata and admin requests.
    Metadata,
}

/// The connections of one client.
pub(crate) struct Pool {
    config: ConnectionConfig,
    reconnect: RetryPolicy,
    slots: Mutex<HashMap<(String, ConnectionKind), Arc<Slot>>>,
}

struct Slot {
    current: Mutex<Option<Connection>>,
    connecting: tokio::sync::Mutex<Reconnect>,
}

struct Reconnect {
    backoff: Backoff,
    not_before: Option<Instant>,
}

impl Slot {
    fn open(&self) -> Option<Connection> {
        let guard = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().filter(|c| !c.is_closed()).cloned()
    }
}

impl Pool {
    pub(crate) fn new(config: ConnectionConfig, reconnect: RetryPolicy) -> Pool {
        Pool {
            config,
            reconnect,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, addr: &str, kind: ConnectionKind) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .entry((addr.to_owned(), kind))
            .or_insert_with(|| {
                Arc::new(Slot {
                    current: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(Reconnect {
                        backoff: self.reconnect.start(),
                        not_before: None,
                    }),
                })
            })
            .clone()
    }

    /// An open connection to `addr` for `kind`, connecting (after the reconnect backoff,
    /// if the previous attempt failed) when there is none.
    pub(crate) async fn get(&self, addr: &str, kind: ConnectionKind) -> Result<Connection> {
        let slot = self.slot(addr, kind);
        if let Some(conn) = slot.open() {
            return Ok(conn);
        }
        let mut reconnect = slot.connecting.lock().await;
        // Someone else may have connected while we waited for the lock.
        if let Some(conn) = slot.open() {
            return Ok(conn);
        }
        if let Some(at) = reconnect.not_before {
            tokio::time::sleep_until(at).await;
        }
        match Connection::connect(addr, &self.config).await {
            Ok(conn) => {
                tracing::debug!(addr, ?kind, "connected");
                reconnect.backoff.reset();
                reconnect.not_before = None;
                *slot.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                reconnect.not_before = Some(Instant::now() + reconnect.backoff.next_backoff());
                tracing::debug!(addr, ?kind, error = %e, "connection attempt failed");
                Err(e)
            }
        }
    }

    /// Drops the connection to `addr` for `kind` (after a timeout that leaves its pipeline
    /// in doubt); the next [`get`](Self::get) opens a new one.
    pub(crate) fn discard(&self, addr: &str, kind: ConnectionKind) {
        let slot = self.slot(addr, kind);
        slot.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Number of open connections (for tests and metrics).
    pub(crate) fn open_count(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        slots.iter().filter(|s| s.open().is_some()).count()
    }
}
