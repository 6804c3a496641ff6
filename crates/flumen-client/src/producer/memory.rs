//! `MemoryBudget`: the `buffer.memory` bound — bytes reserved per batch, waited for with a deadline.
//!
//! A batch reserves `batch.size` (or its one oversized record) when it opens, and gives the
//! reservation back when it is acknowledged or failed. Reserving per batch, not per record,
//! keeps the per-record path free of atomics; the waiting `send` parks on a tokio semaphore,
//! so it never holds a lock and a current-thread runtime keeps running the sender meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Bytes of buffer a producer may hold, shared by its batches.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// The largest number of permits a tokio semaphore handles, and the granularity we count in.
const UNIT: usize = 64;

impl MemoryBudget {
    pub(crate) fn new(bytes: usize) -> Self {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        MemoryBudget {
            permits: Arc::new(Semaphore::new(units)),
            total: units,
        }
    }

    fn units(&self, bytes: usize) -> u32 {
        bytes
            .div_ceil(UNIT)
            .clamp(1, self.total)
            .min(u32::MAX as usize) as u32
    }

    /// Reserves `bytes` now if they are free.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = self.units(bytes);
        let permit = self.permits.try_acquire_many(units).ok()?;
        permit.forget();
        Some(Reservation {
            budget: self.clone(),
            units,
        })
    }

    /// Reserves `bytes`, waiting up to `max_wait`; `None` when the time ran out.
    pub(crate) async fn reserve(&self, bytes: usize, max_wait: Duration) -> Option<Reservation> {
        let units = self.units(bytes);
        let permit = tokio::time::timeout(max_wait, self.permits.acquire_many(units))
            .await
            .ok()?
            .ok()?;
        permit.forget();
        Some(Reservation {
            budget: self.clone(),
            units,
        })
    }

    /// Bytes currently reserved.
    pub(crate) fn used(&self) -> usize {
        (self.total - self.permits.available_permits()) * UNIT
    }

    /// Whether some `send` is waiting for memory (then batches are sent without lingering).
    pub(crate) fn exhausted(&self) -> bool {
        self.permits.available_permits() * UNIT < 16 * 1024
    }
}

/// Buffer bytes held by one batch; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: MemoryBudget,
    units: u32,
}

impl Reservation {
    /// Takes the part of this reservation that covers `bytes` (all of it at most), for a
    /// batch split into pieces that each hold their share.
    pub(crate) fn split_off(&mut self, bytes: usize) -> Reservation {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.units);
        self.units -= units;
        Reservation {
            budget: self.budget.clone(),
            units,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.permits.add_permits(self.units as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn reserve_waits_until_memory_is_given_back_and_gives_up_at_the_deadline() {
        let budget = MemoryBudget::new(64 * 1024);
        let a = budget.try_reserve(48 * 1024).expect("free");
        assert!(budget.try_reserve(32 * 1024).is_none());
        assert!(
            budget
                .reserve(32 * 1024, Duration::from_millis(20))
                .await
                .is_none()
        );
        drop(a);
        assert!(
            budget
                .reserve(32 * 1024, Duration::from_millis(20))
                .await
                .is_some()
        );
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn split_reservations_give_back_exactly_what_was_reserved() {
        let budget = MemoryBudget::new(64 * 1024);
        let mut whole = budget.try_reserve(10_000).expect("free");
        let used = budget.used();
        let part = whole.split_off(4_000);
        let rest = whole.split_off(1_000_000);
        assert_eq!(budget.used(), used);
        drop(part);
        assert!(budget.used() < used && budget.used() > 0);
        drop(rest);
        drop(whole);
        assert_eq!(budget.used(), 0);
    }
}
