//! Adding to a warmed-up accumulator allocates nothing: `Count`, `Sum`, `Min`, `Max`, `Avg`,
//! `DistinctCount` (both forms) on a value already seen, `Percentiles` on a value in range,
//! and a tuple of them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashSet;

use flumen_runtime::aggregate::{self, Aggregate};
use flumen_runtime::format::Owned;
use flumen_runtime::testing::visits::{Visit, VisitGen};

struct Counting;

thread_local! {
    // Per thread, so that the test harness's other threads do not count.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Adds `warm` to a new accumulator, then counts the allocations of adding `again`.
fn allocations_per_add<T: 'static, A: Aggregate<Owned<T>>>(
    agg: &A,
    warm: &[T],
    again: &[T],
) -> (u64, A::Out) {
    let mut acc = agg.create();
    for item in warm {
        agg.add(&mut acc, item);
    }
    let before = allocations();
    for item in again {
        agg.add(&mut acc, item);
    }
    let during = allocations() - before;
    (during, agg.result(&acc))
}

macro_rules! assert_no_allocation {
    ($agg:expr, $warm:expr, $again:expr) => {{
        let (n, out) = allocations_per_add(&$agg, $warm, $again);
        assert_eq!(
            n,
            0,
            "{}: {n} allocations for {} adds",
            stringify!($agg),
            $again.len()
        );
        out
    }};
}

#[test]
fn adding_to_a_warm_accumulator_allocates_nothing() {
    let before = allocations();
    drop(std::hint::black_box(vec![1u8]));
    assert_eq!(allocations() - before, 1, "the counter counts");

    let visits: Vec<Visit> = VisitGen::new(42)
        .users(200)
        .url_count(30)
        .visits()
        .take(20_000)
        .collect();
    let (warm, again) = visits.split_at(10_000);
    let all = visits.as_slice();

    assert_no_allocation!(aggregate::count(), warm, again);
    assert_no_allocation!(
        aggregate::sum(|v: &Visit| i64::from(v.latency_ms)),
        warm,
        again
    );
    assert_no_allocation!(aggregate::min(|v: &Visit| v.latency_ms), warm, again);
    assert_no_allocation!(aggregate::max(|v: &Visit| v.ts), warm, again);
    assert_no_allocation!(
        aggregate::avg(|v: &Visit| f64::from(v.latency_ms)),
        warm,
        again
    );
    // Values already seen: the second pass repeats the first.
    let statuses = assert_no_allocation!(aggregate::distinct_count(|v: &Visit| v.status), all, all);
    assert!(statuses >= 2);
    let users = assert_no_allocation!(
        aggregate::distinct_count_by_ref(|v: &Visit| v.user.as_str()),
        all,
        all
    );
    assert_eq!(users, 200);
    // Values in the range recorded so far.
    let p = assert_no_allocation!(
        aggregate::percentiles(&[0.5, 0.99], |v: &Visit| u64::from(v.latency_ms)),
        all,
        all
    );
    assert!(p[0] <= p[1]);
    let (n, ..) = assert_no_allocation!(
        (
            aggregate::count(),
            aggregate::max(|v: &Visit| v.latency_ms),
            aggregate::distinct_count_by_ref(|v: &Visit| v.url.as_str()),
        ),
        all,
        all
    );
    assert_eq!(n, 40_000);
}

#[test]
fn a_value_already_in_a_full_set_does_not_grow_it() {
    // 896 entries fill 1024 buckets (7/8): `HashSet::insert` makes room for one more before
    // it looks, so re-inserting a present value would grow the table.
    let values: Vec<u64> = (0..896).collect();
    let agg = aggregate::distinct_count(|x: &u64| *x);
    let mut acc: HashSet<u64> = Aggregate::<Owned<u64>>::create(&agg);
    for v in &values {
        Aggregate::<Owned<u64>>::add(&agg, &mut acc, v);
    }
    assert_eq!(acc.capacity(), acc.len(), "the table is full");
    let before = allocations();
    for v in &values {
        Aggregate::<Owned<u64>>::add(&agg, &mut acc, v);
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(acc.capacity(), 896);
}
