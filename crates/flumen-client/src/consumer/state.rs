//! The state the consumer shares with its fetcher tasks: per-partition positions, the
//! paused set, fetched data waiting for `poll`, and the prefetch budget.
//!
//! Invariants:
//! - `position` is the next offset the application gets; `fetch_offset` the next offset a
//!   fetcher asks for. `fetch_offset >= position`; the data between them is in `ready`, in
//!   order, for that partition.
//! - `generation` changes on every seek, reset or (re)assignment. A fetch response or a
//!   buffered chunk carrying another generation is stale and dropped, so a seek never sees
//!   data from before it.
//! - The paused set is independent of the assignment: a partition paused before a rebalance
//!   that comes back stays paused, and `resume` always clears it (franz-go #507/#1272).
//! - A preferred read replica (KIP-392) serves a partition for `metadata.max.age.ms` after the
//!   leader named it, or until it answers with an error; then `fetch_from` goes back to `None`
//!   and the next leader lookup sends the partition to its leader, which may name a replica again.
//! - The lock is taken once per fetch response and once per `poll`, never per record, and
//!   never held across an await.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::ConsumerError;
use crate::cluster::TopicPartition;

/// Where a position reset goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reset {
    /// As `auto.offset.reset` says.
    Auto,
    /// The log start.
    Earliest,
    /// The log end (last stable offset under read_committed).
    Latest,
}

/// One assigned partition.
#[derive(Debug)]
pub(crate) struct PartState {
    /// Next offset for the application; `None` until looked up (committed offset or reset).
    pub(crate) position: Option<i64>,
    /// Leader epoch of the last record handed out (committed with the offset).
    pub(crate) position_epoch: Option<i32>,
    /// Next offset to fetch.
    pub(crate) fetch_offset: i64,
    /// Bumped by seek / reset / reassignment; stale data carries an older value.
    pub(crate) generation: u64,
    /// Broker to fetch from (leader, or preferred read replica); `None`: look it up.
    pub(crate) fetch_from: Option<i32>,
    /// The leader found by the last lookup; `fetch_from` differs from it while a follower
    /// serves the partition (KIP-392).
    pub(crate) leader: Option<i32>,
    /// Until when the preferred read replica in `fetch_from` may be used: `metadata.max.age.ms`
    /// after the leader named it (the Java client's `preferredReadReplicaExpireTimeMs`); then
    /// the leader is asked again. `None` while the leader serves the partition.
    pub(crate) preferred_until: Option<Instant>,
    /// Leader epoch from the metadata (sent as `current_leader_epoch` for fencing).
    pub(crate) leader_epoch: i32,
    /// Last high watermark seen (-1: unknown).
    pub(crate) high_watermark: i64,
    /// Last last-stable-offset seen (-1: unknown).
    pub(crate) last_stable_offset: i64,
    /// Last log start offset seen (-1: unknown).
    pub(crate) log_start_offset: i64,
    /// Set when the position must be reset (out of range, none committed, or seek to an end).
    pub(crate) reset: Option<Reset>,
}

impl PartState {
    pub(crate) fn new(generation: u64) -> Self {
        PartState {
            position: None,
            position_epoch: None,
            fetch_offset: 0,
            generation,
            fetch_from: None,
            leader: None,
            preferred_until: None,
            leader_epoch: -1,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            reset: None,
        }
    }

    /// Whether a fetcher may ask for this partition.
    pub(crate) fn fetchable(&self) -> bool {
        self.position.is_some() && self.reset.is_none() && self.fetch_from.is_some()
    }
}

/// Fetched data of one partition, waiting to be handed out.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) tp: TopicPartition,
    pub(crate) generation: u64,
    /// The offset the fetch asked for (the partition's position when handed out).
    pub(crate) fetch_offset: i64,
    /// The offset after the last complete batch.
    pub(crate) next_offset: i64,
    pub(crate) records: Bytes,
    /// `(producer id, first offset)` of aborted transactions, sorted by first offset.
    pub(crate) aborted: Vec<(i64, i64)>,
    pub(crate) high_watermark: i64,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) parts: HashMap<TopicPartition, PartState>,
    pub(crate) paused: HashSet<TopicPartition>,
    pub(crate) ready: VecDeque<Fetched>,
    /// Bytes in `ready`.
    pub(crate) buffered_bytes: usize,
    /// Set by a fetcher when some partition needs a leader lookup or an offset reset.
    pub(crate) needs_attention: bool,
    /// Errors for the application (one per partition at most), returned by the next poll.
    pub(crate) errors: Vec<ConsumerError>,
    pub(crate) next_generation: u64,
    pub(crate) closed: bool,
}

impl State {
    pub(crate) fn bump_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Drops buffered data of `tp` (after a seek or a revocation) and frees its budget.
    pub(crate) fn drop_buffered(&mut self, tp: &TopicPartition) {
        let mut freed = 0;
        self.ready.retain(|f| {
            let keep = f.tp != *tp;
            if !keep {
                freed += f.records.len();
            }
            keep
        });
        self.buffered_bytes -= freed;
    }
}

/// The shared state and the signals around it.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Fetchers signal new data (or an error, or a partition needing attention).
    pub(crate) data_ready: Notify,
    /// Fetch budget released or partitions changed: fetchers look again.
    pub(crate) fetchers: Mutex<Vec<Arc<Notify>>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every fetcher (each keeps the wake-up if it is not waiting yet).
    pub(crate) fn wake_fetchers(&self) {
        for n in self
            .fetchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            n.notify_one();
        }
    }
}
