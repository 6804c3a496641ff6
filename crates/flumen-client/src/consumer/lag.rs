//! Lag: how far each assigned partition's position is behind the end of its log.

use std::collections::BTreeMap;

use super::{Consumer, IsolationLevel};
use crate::cluster::TopicPartition;

impl Consumer {
    /// The lag of `tp`: the high watermark (read_uncommitted) or last stable offset
    /// (read_committed) from the latest fetch, minus the position. `None` until both are known.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let state = self.shared.lock();
        let p = state.parts.get(tp)?;
        let end = match self.config.isolation_level {
            IsolationLevel::ReadCommitted if p.last_stable_offset >= 0 => p.last_stable_offset,
            _ => p.high_watermark,
        };
        match (p.position, end) {
            (Some(pos), end) if end >= 0 => Some((end - pos).max(0)),
            _ => None,
        }
    }

    /// Fetched bytes waiting for `poll` (bounded by `prefetch.max.bytes`, plus at most one
    /// batch larger than the room left, which Kafka always returns whole).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.lock().buffered_bytes
    }

    /// The lag of every assigned partition for which it is known.
    pub fn lags(&self) -> BTreeMap<TopicPartition, i64> {
        let tps: Vec<TopicPartition> = self.shared.lock().parts.keys().cloned().collect();
        tps.into_iter()
            .filter_map(|tp| self.lag(&tp).map(|l| (tp, l)))
            .collect()
    }
}
