//! Aggregations over the items of one key and window: the [`Aggregate`] trait (Flink's
//! `AggregateFunction`: create, add, merge, result) and the built-in ones.
//!
//! An accumulator lives in the window's state from the first item of its key and window until
//! the window is purged; `add` runs once per item and must not allocate once the accumulator
//! has grown (the per-record path of a window is allocation-free for already-seen keys).

use crate::format::Family;

/// An aggregation of items of family `F`: an accumulator per key and window.
///
/// `merge` is needed where windows merge (session windows) and where partial results are
/// combined; it must agree with adding the items of `other` to `into` one by one.
pub trait Aggregate<F: Family>: Clone + Send + Sync + 'static {
    /// The running state of one key and window.
    type Acc: 'static;
    /// What a window emits.
    type Out: 'static;

    /// The accumulator of a window with no item yet.
    fn create(&self) -> Self::Acc;
    /// Adds one item.
    fn add(&self, acc: &mut Self::Acc, item: &F::Item<'_>);
    /// Adds everything `other` holds to `into`.
    fn merge(&self, into: &mut Self::Acc, other: Self::Acc);
    /// The result so far.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
    /// Heap bytes the accumulator holds beyond its own size (for the state-size metric).
    fn heap_bytes(&self, _acc: &Self::Acc) -> usize {
        0
    }
}

/// Counts items: `u64`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<F: Family> Aggregate<F> for Count {
    type Acc = u64;
    type Out = u64;

    #[inline]
    fn create(&self) -> u64 {
        0
    }

    #[inline]
    fn add(&self, acc: &mut u64, _: &F::Item<'_>) {
        *acc += 1;
    }

    #[inline]
    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }

    #[inline]
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}
