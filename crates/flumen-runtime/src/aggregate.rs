//! Aggregations over the items of one key and window: the [`Aggregate`] trait (Flink's
//! `AggregateFunction`: create, add, merge, result) and the built-in ones.
//!
//! An accumulator lives in the window's state from the first item of its key and window until
//! the window is purged; `add` runs once per item and must not allocate once the accumulator
//! has grown (the per-record path of a window is allocation-free for already-seen keys).
//!
//! The built-ins take an *extractor*, a closure from a borrowed item to the value they
//! aggregate (`|v: &Visit| v.latency_ms`), and work for any item family whose items it
//! accepts:
//!
//! | constructor | output | accumulator |
//! |---|---|---|
//! | [`count()`] | `u64` | `u64` |
//! | [`sum`] | `X` | `X` |
//! | [`min`], [`max`] | `Option<X>` | `Option<X>` |
//! | [`avg`] | `Option<f64>` | `(f64, u64)` |
//! | [`reduce`] | `Option<T>` | `Option<T>` |
//! | [`distinct_count`], [`distinct_count_by_ref`] | `u64` (exact) | a hash set |
//! | [`approx_distinct`], [`approx_distinct_by_ref`] | `u64` (HyperLogLog++) | a sketch |
//! | [`top_n`] | `Vec<(V, S)>` | a hash map |
//! | [`percentiles`] | `Vec<u64>` | an HDR histogram |
//! | [`from_fns`] | yours | yours |
//!
//! Tuples of up to six aggregations are an aggregation of their tuple of results, so one
//! window computes several:
//!
//! ```
//! use flumen_runtime::aggregate::{self, fold};
//! use flumen_runtime::format::Owned;
//! use flumen_runtime::testing::visits::{Visit, VisitGen};
//!
//! let visits: Vec<Visit> = VisitGen::new(1).visits().take(1000).collect();
//! let stats = (
//!     aggregate::count(),
//!     aggregate::max(|v: &Visit| v.latency_ms),
//!     aggregate::distinct_count_by_ref(|v: &Visit| v.user.as_str()),
//! );
//! let (n, slowest, users) = fold::<Owned<Visit>, _>(&stats, &visits);
//! assert_eq!(n, 1000);
//! assert!(slowest.is_some() && users <= 1000);
//! ```
//!
//! `merge` agrees with adding one by one for every built-in (property tests in
//! `aggregate/tests.rs`), given an associative function for [`reduce`] and up to
//! floating-point rounding for [`avg`].
//! `heap_bytes` counts what an accumulator's own tables hold; heap data owned by the values
//! stored in them (a `String`'s bytes) is counted only where noted.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::marker::PhantomData;
use std::ops::AddAssign;
use std::sync::Arc;

use cardinality_estimator::CardinalityEstimator;
use hdrhistogram::Histogram;
use wyhash::WyHash;

use crate::codec::StateCodec;
use crate::format::{Family, Owned};

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

    /// Appends `acc` in its changelog form ([`StateCodec`]), or returns false: this
    /// aggregation's state has none and lives in memory only (the built-ins but `reduce`,
    /// `approx_distinct` and `from_fns` have one; a window over one without cannot run
    /// under exactly-once).
    fn save(&self, acc: &Self::Acc, out: &mut Vec<u8>) -> bool {
        let _ = (acc, out);
        false
    }

    /// Reads an accumulator [`Aggregate::save`] wrote from the front of `input`.
    fn load(&self, input: &mut &[u8]) -> Option<Self::Acc> {
        let _ = input;
        None
    }
}

/// `save` and `load` through the accumulator's [`StateCodec`].
macro_rules! logged {
    () => {
        fn save(&self, acc: &Self::Acc, out: &mut Vec<u8>) -> bool {
            $crate::codec::StateCodec::encode(acc, out);
            true
        }

        fn load(&self, input: &mut &[u8]) -> Option<Self::Acc> {
            $crate::codec::StateCodec::decode(input)
        }
    };
}

/// Runs `agg` over `items` from a fresh accumulator, as a window does for one key: for tests
/// and examples. The family usually has to be named (`fold::<Owned<Visit>, _>(..)`).
pub fn fold<'i, F, A>(agg: &A, items: impl IntoIterator<Item = &'i F::Item<'i>>) -> A::Out
where
    F: Family,
    F::Item<'i>: 'i,
    A: Aggregate<F>,
{
    let mut acc = agg.create();
    for item in items {
        agg.add(&mut acc, item);
    }
    agg.result(&acc)
}

/// `Debug` for a built-in that holds closures: its name and its non-closure fields.
macro_rules! debug_by_name {
    ($name:ident < $($p:ident),+ > $(, $field:ident)*) => {
        impl<$($p),+> std::fmt::Debug for $name<$($p),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Counts items: `u64`.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::StrView;
///
/// assert_eq!(fold::<StrView, _>(&aggregate::count(), &["a", "b"]), 2);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

/// Counts items (the same as [`Count`]).
pub fn count() -> Count {
    Count
}

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

    logged!();
}

/// The sum of an extracted value, `X` (0, that is `X::default()`, for no item). Integer
/// overflow behaves as `+=` does for `X` (a panic in debug builds): pick a type wide enough.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
/// use flumen_runtime::testing::visits::{Visit, VisitGen};
///
/// let visits: Vec<Visit> = VisitGen::new(1).visits().take(10).collect();
/// let total = fold::<Owned<Visit>, _>(&aggregate::sum(|v: &Visit| v.latency_ms as i64), &visits);
/// assert_eq!(total, visits.iter().map(|v| v.latency_ms as i64).sum::<i64>());
/// ```
#[derive(Clone)]
pub struct Sum<G> {
    extract: G,
}

debug_by_name!(Sum<G>);

/// The sum of `extract(item)`: see [`Sum`].
pub fn sum<G>(extract: G) -> Sum<G> {
    Sum { extract }
}

impl<F, G, X> Aggregate<F> for Sum<G>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> X + Clone + Send + Sync + 'static,
    X: Copy + Default + AddAssign + StateCodec + 'static,
{
    type Acc = X;
    type Out = X;

    #[inline]
    fn create(&self) -> X {
        X::default()
    }

    #[inline]
    fn add(&self, acc: &mut X, item: &F::Item<'_>) {
        *acc += (self.extract)(item);
    }

    #[inline]
    fn merge(&self, into: &mut X, other: X) {
        *into += other;
    }

    #[inline]
    fn result(&self, acc: &X) -> X {
        *acc
    }

    logged!();
}

/// Keeps `candidate` in `acc` when it is `better` than what `acc` holds. Values not ordered
/// with themselves (NaN) are skipped, so the result does not depend on the order of items.
#[inline]
fn keep_if<X: PartialOrd>(acc: &mut Option<X>, candidate: X, better: fn(&X, &X) -> bool) {
    if candidate.partial_cmp(&candidate).is_none() {
        return;
    }
    match acc {
        Some(current) if !better(&candidate, current) => {}
        _ => *acc = Some(candidate),
    }
}

/// The smallest extracted value, `Option<X>` (`None` for no item). Values not ordered with
/// themselves (a float NaN) are skipped.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
///
/// let lowest = fold::<Owned<f64>, _>(&aggregate::min(|x: &f64| *x), &[2.5, f64::NAN, -1.0]);
/// assert_eq!(lowest, Some(-1.0));
/// ```
#[derive(Clone)]
pub struct Min<G> {
    extract: G,
}

debug_by_name!(Min<G>);

/// The smallest `extract(item)`: see [`Min`].
pub fn min<G>(extract: G) -> Min<G> {
    Min { extract }
}

impl<F, G, X> Aggregate<F> for Min<G>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> X + Clone + Send + Sync + 'static,
    X: PartialOrd + Clone + StateCodec + 'static,
{
    type Acc = Option<X>;
    type Out = Option<X>;

    #[inline]
    fn create(&self) -> Option<X> {
        None
    }

    #[inline]
    fn add(&self, acc: &mut Option<X>, item: &F::Item<'_>) {
        keep_if(acc, (self.extract)(item), |a, b| a < b);
    }

    #[inline]
    fn merge(&self, into: &mut Option<X>, other: Option<X>) {
        if let Some(x) = other {
            keep_if(into, x, |a, b| a < b);
        }
    }

    #[inline]
    fn result(&self, acc: &Option<X>) -> Option<X> {
        acc.clone()
    }

    logged!();
}

/// The largest extracted value, `Option<X>` (`None` for no item). Values not ordered with
/// themselves (a float NaN) are skipped.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::StrView;
///
/// let longest = fold::<StrView, _>(&aggregate::max(|s: &&str| s.len()), &["ab", "abc", "a"]);
/// assert_eq!(longest, Some(3));
/// ```
#[derive(Clone)]
pub struct Max<G> {
    extract: G,
}

debug_by_name!(Max<G>);

/// The largest `extract(item)`: see [`Max`].
pub fn max<G>(extract: G) -> Max<G> {
    Max { extract }
}

impl<F, G, X> Aggregate<F> for Max<G>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> X + Clone + Send + Sync + 'static,
    X: PartialOrd + Clone + StateCodec + 'static,
{
    type Acc = Option<X>;
    type Out = Option<X>;

    #[inline]
    fn create(&self) -> Option<X> {
        None
    }

    #[inline]
    fn add(&self, acc: &mut Option<X>, item: &F::Item<'_>) {
        keep_if(acc, (self.extract)(item), |a, b| a > b);
    }

    #[inline]
    fn merge(&self, into: &mut Option<X>, other: Option<X>) {
        if let Some(x) = other {
            keep_if(into, x, |a, b| a > b);
        }
    }

    #[inline]
    fn result(&self, acc: &Option<X>) -> Option<X> {
        acc.clone()
    }

    logged!();
}

/// The arithmetic mean of an extracted `f64`, `Option<f64>` (`None` for no item); the
/// accumulator is `(sum, count)`. A NaN value makes the mean NaN.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
///
/// let mean = fold::<Owned<u32>, _>(&aggregate::avg(|x: &u32| f64::from(*x)), &[1, 2, 6]);
/// assert_eq!(mean, Some(3.0));
/// ```
#[derive(Clone)]
pub struct Avg<G> {
    extract: G,
}

debug_by_name!(Avg<G>);

/// The mean of `extract(item)`: see [`Avg`].
pub fn avg<G>(extract: G) -> Avg<G> {
    Avg { extract }
}

impl<F, G> Aggregate<F> for Avg<G>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> f64 + Clone + Send + Sync + 'static,
{
    type Acc = (f64, u64);
    type Out = Option<f64>;

    #[inline]
    fn create(&self) -> (f64, u64) {
        (0.0, 0)
    }

    #[inline]
    fn add(&self, acc: &mut (f64, u64), item: &F::Item<'_>) {
        acc.0 += (self.extract)(item);
        acc.1 += 1;
    }

    #[inline]
    fn merge(&self, into: &mut (f64, u64), other: (f64, u64)) {
        into.0 += other.0;
        into.1 += other.1;
    }

    #[inline]
    fn result(&self, acc: &(f64, u64)) -> Option<f64> {
        (acc.1 > 0).then(|| acc.0 / acc.1 as f64)
    }

    logged!();
}

/// Folds owned items with a function `f(acc, item)`: the first item (cloned) starts the
/// accumulator, `Option<T>`. `merge` applies `f` to the two accumulators, so it agrees with
/// adding one by one when `f` is associative (string concatenation is; `a - b` is not).
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
///
/// let joined = aggregate::reduce(|acc: &mut String, s: &String| acc.push_str(s));
/// let words = ["a".to_owned(), "b".to_owned()];
/// assert_eq!(fold::<Owned<String>, _>(&joined, &words), Some("ab".to_owned()));
/// ```
#[derive(Clone)]
pub struct Reduce<G> {
    f: G,
}

debug_by_name!(Reduce<G>);

/// Folds owned items with `f`: see [`Reduce`].
pub fn reduce<T, G>(f: G) -> Reduce<G>
where
    G: Fn(&mut T, &T),
{
    Reduce { f }
}

impl<T, G> Aggregate<Owned<T>> for Reduce<G>
where
    T: Clone + 'static,
    G: Fn(&mut T, &T) + Clone + Send + Sync + 'static,
{
    type Acc = Option<T>;
    type Out = Option<T>;

    #[inline]
    fn create(&self) -> Option<T> {
        None
    }

    #[inline]
    fn add(&self, acc: &mut Option<T>, item: &T) {
        match acc {
            Some(acc) => (self.f)(acc, item),
            None => *acc = Some(item.clone()),
        }
    }

    fn merge(&self, into: &mut Option<T>, other: Option<T>) {
        match (into.as_mut(), other) {
            (_, None) => {}
            (Some(acc), Some(other)) => (self.f)(acc, &other),
            (None, other) => *into = other,
        }
    }

    fn result(&self, acc: &Option<T>) -> Option<T> {
        acc.clone()
    }
}

/// Heap bytes of a std (hashbrown) hash table of `capacity` entries of `T`: one slot and one
/// control byte per bucket, plus a trailing group of control bytes.
fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    // hashbrown keeps 1/8 of the buckets free from 8 buckets up, one bucket below that.
    let buckets = if capacity < 8 {
        capacity + 1
    } else {
        capacity / 7 * 8
    };
    buckets * (std::mem::size_of::<T>() + 1) + 16
}

/// Heap bytes of the owned copy of `value`: an unsized value (`str`, `[u8]`) is copied to
/// the heap whole (`String`, `Vec`), exactly its size; a sized one is its own owned copy.
fn owned_heap_bytes<Q: ?Sized>(value: &Q) -> usize {
    // A reference to an unsized value is a fat pointer.
    if std::mem::size_of::<&Q>() > std::mem::size_of::<usize>() {
        std::mem::size_of_val(value)
    } else {
        0
    }
}

/// The exact number of distinct extracted values, `u64`: the values are kept in a hash set.
/// A value already present is not stored again, and adding it allocates nothing.
///
/// The extractor returns the value itself: for a field that holds heap data (a user name),
/// [`distinct_count_by_ref`] avoids building an owned value for every item. `heap_bytes`
/// counts the set's table, not heap data the values own.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
/// use flumen_runtime::testing::visits::{Visit, VisitGen};
///
/// let visits: Vec<Visit> = VisitGen::new(1).visits().take(1000).collect();
/// let statuses = fold::<Owned<Visit>, _>(&aggregate::distinct_count(|v: &Visit| v.status), &visits);
/// assert!((1..=3).contains(&statuses));
/// ```
#[derive(Clone)]
pub struct DistinctCount<G> {
    extract: G,
}

debug_by_name!(DistinctCount<G>);

/// The exact number of distinct `extract(item)`: see [`DistinctCount`].
pub fn distinct_count<G>(extract: G) -> DistinctCount<G> {
    DistinctCount { extract }
}

impl<F, G, X> Aggregate<F> for DistinctCount<G>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> X + Clone + Send + Sync + 'static,
    X: Hash + Eq + StateCodec + 'static,
{
    type Acc = HashSet<X>;
    type Out = u64;

    fn create(&self) -> HashSet<X> {
        HashSet::new()
    }

    #[inline]
    fn add(&self, acc: &mut HashSet<X>, item: &F::Item<'_>) {
        let x = (self.extract)(item);
        // `insert` makes room for one more entry before it looks: on a full table it would
        // grow even when the value is present.
        if !acc.contains(&x) {
            acc.insert(x);
        }
    }

    fn merge(&self, into: &mut HashSet<X>, mut other: HashSet<X>) {
        if other.len() > into.len() {
            std::mem::swap(into, &mut other);
        }
        for x in other {
            if !into.contains(&x) {
                into.insert(x);
            }
        }
    }

    fn result(&self, acc: &HashSet<X>) -> u64 {
        acc.len() as u64
    }

    fn heap_bytes(&self, acc: &HashSet<X>) -> usize {
        table_bytes::<X>(acc.capacity())
    }

    logged!();
}

/// The accumulator of [`DistinctCountByRef`]: the distinct values, owned, and the heap bytes
/// their owned copies hold.
#[derive(Clone, Debug)]
pub struct DistinctSet<O> {
    values: HashSet<O>,
    value_heap_bytes: usize,
}

impl<O> DistinctSet<O> {
    /// The distinct values seen.
    pub fn values(&self) -> &HashSet<O> {
        &self.values
    }
}

/// The exact number of distinct values of a borrowed field, `u64`: like [`DistinctCount`],
/// but the extractor returns a reference (`|v: &Visit| v.user.as_str()`) and a value is
/// copied to an owned one (`String`) only the first time it is seen. `heap_bytes` counts
/// the set's table and the bytes of the owned copies of unsized values (`str`, `[u8]`).
///
/// The constructor takes the item type from the closure's argument, so annotate it; it fits
/// owned items (`Owned<T>`, as the `Json` format makes).
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
/// use flumen_runtime::testing::visits::{Visit, VisitGen};
///
/// let visits: Vec<Visit> = VisitGen::new(1).users(50).visits().take(1000).collect();
/// let users = aggregate::distinct_count_by_ref(|v: &Visit| v.user.as_str());
/// assert_eq!(fold::<Owned<Visit>, _>(&users, &visits), 50);
/// ```
pub struct DistinctCountByRef<G, Q: ?Sized> {
    extract: G,
    _value: PhantomData<fn(&Q)>,
}

impl<G: Clone, Q: ?Sized> Clone for DistinctCountByRef<G, Q> {
    fn clone(&self) -> Self {
        DistinctCountByRef {
            extract: self.extract.clone(),
            _value: PhantomData,
        }
    }
}

impl<G, Q: ?Sized> std::fmt::Debug for DistinctCountByRef<G, Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistinctCountByRef").finish_non_exhaustive()
    }
}

/// The exact number of distinct `*extract(item)`: see [`DistinctCountByRef`].
pub fn distinct_count_by_ref<T, Q, G>(extract: G) -> DistinctCountByRef<G, Q>
where
    Q: ?Sized,
    G: for<'b> Fn(&'b T) -> &'b Q,
{
    DistinctCountByRef {
        extract,
        _value: PhantomData,
    }
}

impl<F, G, Q> Aggregate<F> for DistinctCountByRef<G, Q>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> &'b Q + Clone + Send + Sync + 'static,
    Q: ?Sized + Hash + Eq + ToOwned + 'static,
    Q::Owned: Hash + Eq + StateCodec + 'static,
{
    type Acc = DistinctSet<Q::Owned>;
    type Out = u64;

    fn create(&self) -> DistinctSet<Q::Owned> {
        DistinctSet {
            values: HashSet::new(),
            value_heap_bytes: 0,
        }
    }

    #[inline]
    fn add(&self, acc: &mut DistinctSet<Q::Owned>, item: &F::Item<'_>) {
        let q = (self.extract)(item);
        if !acc.values.contains(q) {
            acc.value_heap_bytes += owned_heap_bytes(q);
            acc.values.insert(q.to_owned());
        }
    }

    fn merge(&self, into: &mut DistinctSet<Q::Owned>, mut other: DistinctSet<Q::Owned>) {
        if other.values.len() > into.values.len() {
            std::mem::swap(into, &mut other);
        }
        for x in other.values {
            if !into.values.contains(x.borrow()) {
                into.value_heap_bytes += owned_heap_bytes::<Q>(x.borrow());
                into.values.insert(x);
            }
        }
    }

    fn result(&self, acc: &DistinctSet<Q::Owned>) -> u64 {
        acc.values.len() as u64
    }

    fn heap_bytes(&self, acc: &DistinctSet<Q::Owned>) -> usize {
        table_bytes::<Q::Owned>(acc.values.capacity()) + acc.value_heap_bytes
    }

    fn save(&self, acc: &Self::Acc, out: &mut Vec<u8>) -> bool {
        acc.values.encode(out);
        true
    }

    fn load(&self, input: &mut &[u8]) -> Option<Self::Acc> {
        let values: HashSet<Q::Owned> = HashSet::decode(input)?;
        let value_heap_bytes = values
            .iter()
            .map(|v| owned_heap_bytes::<Q>(v.borrow()))
            .sum();
        Some(DistinctSet {
            values,
            value_heap_bytes,
        })
    }
}

/// The HyperLogLog++ sketch of [`ApproxDistinct`]: `cardinality-estimator`'s estimator with
/// precision `P` (2^P registers of 6 bits) over values of type `T`.
pub type Sketch<T, const P: usize> = CardinalityEstimator<T, WyHash, P, 6>;

/// An estimate of the number of distinct extracted values, `u64`, for cardinalities too
/// large to keep every value: a HyperLogLog++ sketch per accumulator.
///
/// The sketch is [`cardinality-estimator`](https://crates.io/crates/cardinality-estimator)'s
/// (Cloudflare; pure Rust, builds for musl, used in production there and maintained).
/// It was chosen over `hyperloglogplus` (no release since 2022, and its `count` needs
/// `&mut self`), `hyperloglog` (a random hash key per sketch unless seeded, and a full
/// register array from the first value) and `hyperloglockless` (young, and also dense from the
/// start) because a window holds one sketch per key and most keys see few values: this one
/// is exact and allocation-free up to 2 values, stores up to 128 hashes in a small array
/// (exact up to hash collisions), and switches to 2^P registers of 6 bits only beyond that;
/// its estimate reads `&self` in constant time. Its hash (WyHash, fixed seed) is the same in
/// every process, so sketches built by different tasks merge.
///
/// `P` defaults to 14: 12 KiB of registers at most, a standard error of 1.04 / 2^(P/2), 0.8%
/// (Redis' choice). [`with_precision`](Self::with_precision) picks another (4 to 18).
/// `heap_bytes` is the sketch's heap (0 up to 2 values).
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
///
/// let values: Vec<u64> = (0..50_000).collect();
/// let estimate = fold::<Owned<u64>, _>(&aggregate::approx_distinct(|x: &u64| *x), &values);
/// assert!(estimate.abs_diff(50_000) < 1_500);
/// ```
#[derive(Clone)]
pub struct ApproxDistinct<G, const P: usize = 14> {
    extract: G,
}

impl<G, const P: usize> std::fmt::Debug for ApproxDistinct<G, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproxDistinct")
            .field("precision", &P)
            .finish_non_exhaustive()
    }
}

/// An estimate of the number of distinct `extract(item)`: see [`ApproxDistinct`].
pub fn approx_distinct<G>(extract: G) -> ApproxDistinct<G> {
    ApproxDistinct { extract }
}

impl<G, const P: usize> ApproxDistinct<G, P> {
    /// The same with 2^`Q` registers (`Q` from 4 to 18, checked at compile time).
    pub fn with_precision<const Q: usize>(self) -> ApproxDistinct<G, Q> {
        ApproxDistinct {
            extract: self.extract,
        }
    }
}

/// Heap bytes of a sketch: `size_of` counts its one inline word too.
fn sketch_heap_bytes<T: Hash + ?Sized, const P: usize>(sketch: &Sketch<T, P>) -> usize {
    sketch
        .size_of()
        .saturating_sub(std::mem::size_of::<usize>())
}

impl<F, G, X, const P: usize> Aggregate<F> for ApproxDistinct<G, P>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> X + Clone + Send + Sync + 'static,
    X: Hash + 'static,
{
    type Acc = Sketch<X, P>;
    type Out = u64;

    fn create(&self) -> Sketch<X, P> {
        Sketch::new()
    }

    #[inline]
    fn add(&self, acc: &mut Sketch<X, P>, item: &F::Item<'_>) {
        acc.insert(&(self.extract)(item));
    }

    fn merge(&self, into: &mut Sketch<X, P>, other: Sketch<X, P>) {
        into.merge(&other);
    }

    fn result(&self, acc: &Sketch<X, P>) -> u64 {
        acc.estimate() as u64
    }

    fn heap_bytes(&self, acc: &Sketch<X, P>) -> usize {
        sketch_heap_bytes(acc)
    }
}

/// [`ApproxDistinct`] of a borrowed field (`|v: &Visit| v.user.as_str()`): nothing is copied
/// per item. A `String` and its `str` hash alike, so the sketches agree with
/// [`ApproxDistinct`]'s over owned values. Annotate the closure's argument (owned items).
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
/// use flumen_runtime::testing::visits::{Visit, VisitGen};
///
/// let visits: Vec<Visit> = VisitGen::new(1).users(100).visits().take(2000).collect();
/// let users = aggregate::approx_distinct_by_ref(|v: &Visit| v.user.as_str());
/// assert_eq!(fold::<Owned<Visit>, _>(&users, &visits), 100);
/// ```
pub struct ApproxDistinctByRef<G, Q: ?Sized, const P: usize = 14> {
    extract: G,
    _value: PhantomData<fn(&Q)>,
}

impl<G: Clone, Q: ?Sized, const P: usize> Clone for ApproxDistinctByRef<G, Q, P> {
    fn clone(&self) -> Self {
        ApproxDistinctByRef {
            extract: self.extract.clone(),
            _value: PhantomData,
        }
    }
}

impl<G, Q: ?Sized, const P: usize> std::fmt::Debug for ApproxDistinctByRef<G, Q, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproxDistinctByRef")
            .field("precision", &P)
            .finish_non_exhaustive()
    }
}

/// An estimate of the number of distinct `*extract(item)`: see [`ApproxDistinctByRef`].
pub fn approx_distinct_by_ref<T, Q, G>(extract: G) -> ApproxDistinctByRef<G, Q>
where
    Q: ?Sized,
    G: for<'b> Fn(&'b T) -> &'b Q,
{
    ApproxDistinctByRef {
        extract,
        _value: PhantomData,
    }
}

impl<G, Q: ?Sized, const P: usize> ApproxDistinctByRef<G, Q, P> {
    /// The same with 2^`R` registers (`R` from 4 to 18, checked at compile time).
    pub fn with_precision<const R: usize>(self) -> ApproxDistinctByRef<G, Q, R> {
        ApproxDistinctByRef {
            extract: self.extract,
            _value: PhantomData,
        }
    }
}

impl<F, G, Q, const P: usize> Aggregate<F> for ApproxDistinctByRef<G, Q, P>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> &'b Q + Clone + Send + Sync + 'static,
    Q: ?Sized + Hash + 'static,
{
    type Acc = Sketch<Q, P>;
    type Out = u64;

    fn create(&self) -> Sketch<Q, P> {
        Sketch::new()
    }

    #[inline]
    fn add(&self, acc: &mut Sketch<Q, P>, item: &F::Item<'_>) {
        acc.insert((self.extract)(item));
    }

    fn merge(&self, into: &mut Sketch<Q, P>, other: Sketch<Q, P>) {
        into.merge(&other);
    }

    fn result(&self, acc: &Sketch<Q, P>) -> u64 {
        acc.estimate() as u64
    }

    fn heap_bytes(&self, acc: &Sketch<Q, P>) -> usize {
        sketch_heap_bytes(acc)
    }
}

/// Orders scores for [`TopN`]: higher first is `Greater`; a score not ordered with itself
/// (NaN) ranks below every other, so the order is total for floats.
fn score_order<S: PartialOrd>(a: &S, b: &S) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.partial_cmp(a).is_none(), b.partial_cmp(b).is_none()) {
        (true, true) => Equal,
        (true, false) => Less,
        (false, true) => Greater,
        (false, false) => a.partial_cmp(b).unwrap_or(Equal),
    }
}

/// The `n` values with the best scores, `Vec<(V, S)>`: highest score first, ties broken by
/// the value, ascending, so the result is deterministic. The extractor gives each item's
/// `(value, score)`; the accumulator keeps the best score seen per value (an item seen twice
/// keeps its maximum: "top 10 URLs by views", each URL arriving with its views), so it holds
/// every distinct value until the result is taken. A NaN score ranks last.
///
/// `heap_bytes` counts the map's table, not heap data the values own.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
///
/// let views = [("/a".to_owned(), 5u64), ("/b".to_owned(), 9), ("/c".to_owned(), 5), ("/a".to_owned(), 7)];
/// let top = aggregate::top_n(2, |(url, n): &(String, u64)| (url.clone(), *n));
/// let best = fold::<Owned<(String, u64)>, _>(&top, &views);
/// assert_eq!(best, [("/b".to_owned(), 9), ("/a".to_owned(), 7)]);
/// ```
#[derive(Clone)]
pub struct TopN<G> {
    n: usize,
    extract: G,
}

debug_by_name!(TopN<G>, n);

/// The `n` best `(value, score)` pairs of `extract(item)`: see [`TopN`].
pub fn top_n<G>(n: usize, extract: G) -> TopN<G> {
    TopN { n, extract }
}

impl<G> TopN<G> {
    #[inline]
    fn keep<V: Hash + Eq, S: PartialOrd + Copy>(acc: &mut HashMap<V, S>, value: V, score: S) {
        match acc.get_mut(&value) {
            Some(best) => {
                if score_order(&score, best).is_gt() {
                    *best = score;
                }
            }
            None => {
                acc.insert(value, score);
            }
        }
    }
}

impl<F, G, V, S> Aggregate<F> for TopN<G>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> (V, S) + Clone + Send + Sync + 'static,
    V: Eq + Hash + Ord + Clone + StateCodec + 'static,
    S: PartialOrd + Copy + StateCodec + 'static,
{
    type Acc = HashMap<V, S>;
    type Out = Vec<(V, S)>;

    fn create(&self) -> HashMap<V, S> {
        HashMap::new()
    }

    #[inline]
    fn add(&self, acc: &mut HashMap<V, S>, item: &F::Item<'_>) {
        let (value, score) = (self.extract)(item);
        Self::keep(acc, value, score);
    }

    fn merge(&self, into: &mut HashMap<V, S>, mut other: HashMap<V, S>) {
        if other.len() > into.len() {
            std::mem::swap(into, &mut other);
        }
        for (value, score) in other {
            Self::keep(into, value, score);
        }
    }

    fn result(&self, acc: &HashMap<V, S>) -> Vec<(V, S)> {
        let order = |a: &(&V, &S), b: &(&V, &S)| score_order(b.1, a.1).then_with(|| a.0.cmp(b.0));
        if self.n == 0 {
            return Vec::new();
        }
        let mut all: Vec<(&V, &S)> = acc.iter().collect();
        if all.len() > self.n {
            all.select_nth_unstable_by(self.n - 1, order);
            all.truncate(self.n);
        }
        all.sort_unstable_by(order);
        all.into_iter().map(|(v, s)| (v.clone(), *s)).collect()
    }

    fn heap_bytes(&self, acc: &HashMap<V, S>) -> usize {
        table_bytes::<(V, S)>(acc.capacity())
    }

    logged!();
}

/// Values at quantiles of an extracted `u64`, `Vec<u64>` (one per quantile asked, in that
/// order), from an HDR histogram (`hdrhistogram::Histogram<u64>`, 3 significant digits,
/// growing to the largest value seen).
///
/// The value at quantile `q` is hdrhistogram's `value_at_quantile(q)`: with `n` values
/// recorded, take the rank `k = max(1, ceil(q * n))`, computed in `f64` (so `0.07 * 100` is
/// 7.000000000000001 and gives rank 8); the answer is the `k`-th smallest value (from 1),
/// reported as the highest value the histogram cannot tell apart from it (the lowest for
/// `q = 0`). That is the nearest-rank percentile. With 3 significant digits every value
/// below 2048 has a bucket of its own, so there the answer is exactly the `k`-th smallest
/// value; above, it is at most 1/1024 larger. With no value recorded every quantile gives 0.
///
/// Up to [`PercentileAcc::FEW`] values the accumulator keeps the values themselves (8 bytes
/// each, the same nearest-rank answer, exact at any size: most keys of a window see few
/// values). From then on it is a histogram of 2048 counters (16 KiB) plus 1024 (8 KiB) for
/// each further power of two the values reach; `heap_bytes` is what either holds. Recording a
/// value in the histogram's range allocates nothing.
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
///
/// let latencies: Vec<u64> = (1..=100).collect();
/// let p = aggregate::percentiles(&[0.5, 0.9, 0.99, 1.0], |ms: &u64| *ms);
/// assert_eq!(fold::<Owned<u64>, _>(&p, &latencies), [50, 90, 99, 100]);
/// ```
#[derive(Clone)]
pub struct Percentiles<G> {
    quantiles: Arc<[f64]>,
    extract: G,
}

debug_by_name!(Percentiles<G>, quantiles);

/// The values of `extract(item)` at `quantiles`: see [`Percentiles`].
///
/// # Panics
///
/// If a quantile is not in `[0, 1]`.
pub fn percentiles<G>(quantiles: &[f64], extract: G) -> Percentiles<G> {
    for q in quantiles {
        assert!(
            (0.0..=1.0).contains(q),
            "quantile {q} is not in [0, 1] (0.99 is the 99th percentile)"
        );
    }
    Percentiles {
        quantiles: quantiles.into(),
        extract,
    }
}

impl<G> Percentiles<G> {
    /// The quantiles asked, in the order of the result.
    pub fn quantiles(&self) -> &[f64] {
        &self.quantiles
    }
}

/// A [`Percentiles`] accumulator: the values themselves while they are few (exact
/// nearest-rank, a few bytes each), an HDR histogram from [`PercentileAcc::FEW`] on.
#[derive(Clone, Debug)]
pub enum PercentileAcc {
    /// Up to `FEW` values, unsorted.
    Few(Vec<u64>),
    /// More: the histogram.
    Many(Box<Histogram<u64>>),
}

impl StateCodec for PercentileAcc {
    /// The values while few; then the histogram's recorded (value, count) pairs.
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            PercentileAcc::Few(values) => {
                out.push(0);
                values.encode(out);
            }
            PercentileAcc::Many(hist) => {
                out.push(1);
                let pairs: Vec<(u64, u64)> = hist
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect();
                pairs.encode(out);
            }
        }
    }

    fn decode(input: &mut &[u8]) -> Option<Self> {
        let (&tag, rest) = input.split_first()?;
        *input = rest;
        match tag {
            0 => Some(PercentileAcc::Few(Vec::decode(input)?)),
            1 => {
                let pairs: Vec<(u64, u64)> = Vec::decode(input)?;
                let mut hist = Self::histogram(&[]);
                for (value, count) in pairs {
                    if hist.record_n(value, count).is_err() {
                        hist.saturating_record_n(value, count);
                    }
                }
                Some(PercentileAcc::Many(hist))
            }
            _ => None,
        }
    }
}

impl PercentileAcc {
    /// Values kept as they are before a histogram takes over.
    pub const FEW: usize = 64;

    fn record(hist: &mut Histogram<u64>, value: u64) {
        // `record` grows the histogram as needed; it fails only where the counters would
        // not fit in memory, and then the largest trackable value stands in.
        if hist.record(value).is_err() {
            hist.saturating_record(value);
        }
    }

    fn histogram(values: &[u64]) -> Box<Histogram<u64>> {
        let mut hist =
            Box::new(Histogram::new(3).expect("3 significant digits is a valid precision"));
        for &v in values {
            Self::record(&mut hist, v);
        }
        hist
    }
}

impl<F, G> Aggregate<F> for Percentiles<G>
where
    F: Family,
    G: for<'a, 'b> Fn(&'b F::Item<'a>) -> u64 + Clone + Send + Sync + 'static,
{
    type Acc = PercentileAcc;
    type Out = Vec<u64>;

    fn create(&self) -> PercentileAcc {
        PercentileAcc::Few(Vec::new())
    }

    #[inline]
    fn add(&self, acc: &mut PercentileAcc, item: &F::Item<'_>) {
        let value = (self.extract)(item);
        match acc {
            PercentileAcc::Few(values) if values.len() < PercentileAcc::FEW => values.push(value),
            PercentileAcc::Few(values) => {
                let mut hist = PercentileAcc::histogram(values);
                PercentileAcc::record(&mut hist, value);
                *acc = PercentileAcc::Many(hist);
            }
            PercentileAcc::Many(hist) => PercentileAcc::record(hist, value),
        }
    }

    fn merge(&self, into: &mut PercentileAcc, other: PercentileAcc) {
        match (&mut *into, other) {
            (PercentileAcc::Few(a), PercentileAcc::Few(b))
                if a.len() + b.len() <= PercentileAcc::FEW =>
            {
                a.extend(b);
            }
            (PercentileAcc::Many(a), PercentileAcc::Few(b)) => {
                for v in b {
                    PercentileAcc::record(a, v);
                }
            }
            (_, other) => {
                let mut hist = match std::mem::replace(into, PercentileAcc::Few(Vec::new())) {
                    PercentileAcc::Few(values) => PercentileAcc::histogram(&values),
                    PercentileAcc::Many(hist) => hist,
                };
                match other {
                    PercentileAcc::Few(values) => {
                        for v in values {
                            PercentileAcc::record(&mut hist, v);
                        }
                    }
                    PercentileAcc::Many(o) => {
                        if hist.add(&*o).is_err() {
                            for v in o.iter_recorded() {
                                hist.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                            }
                        }
                    }
                }
                *into = PercentileAcc::Many(hist);
            }
        }
    }

    fn result(&self, acc: &PercentileAcc) -> Vec<u64> {
        match acc {
            PercentileAcc::Few(values) if values.is_empty() => vec![0; self.quantiles.len()],
            PercentileAcc::Few(values) => {
                let mut sorted = values.clone();
                sorted.sort_unstable();
                let n = sorted.len();
                self.quantiles
                    .iter()
                    .map(|q| {
                        // The histogram's rank, computed the same way (in f64).
                        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                        sorted[rank - 1]
                    })
                    .collect()
            }
            PercentileAcc::Many(hist) => self
                .quantiles
                .iter()
                .map(|q| hist.value_at_quantile(*q))
                .collect(),
        }
    }

    fn heap_bytes(&self, acc: &PercentileAcc) -> usize {
        match acc {
            PercentileAcc::Few(values) => values.capacity() * std::mem::size_of::<u64>(),
            PercentileAcc::Many(hist) => {
                std::mem::size_of::<Histogram<u64>>()
                    + hist.distinct_values() * std::mem::size_of::<u64>()
            }
        }
    }

    logged!();
}

/// Tuples of aggregations: each element sees every item; accumulators and results are the
/// tuples of the elements'.
macro_rules! tuple_aggregate {
    ($($A:ident $i:tt),+) => {
        impl<F: Family, $($A: Aggregate<F>),+> Aggregate<F> for ($($A,)+) {
            type Acc = ($($A::Acc,)+);
            type Out = ($($A::Out,)+);

            #[inline]
            fn create(&self) -> Self::Acc {
                ($(self.$i.create(),)+)
            }

            #[inline]
            fn add(&self, acc: &mut Self::Acc, item: &F::Item<'_>) {
                $(self.$i.add(&mut acc.$i, item);)+
            }

            fn merge(&self, into: &mut Self::Acc, other: Self::Acc) {
                $(self.$i.merge(&mut into.$i, other.$i);)+
            }

            fn result(&self, acc: &Self::Acc) -> Self::Out {
                ($(self.$i.result(&acc.$i),)+)
            }

            fn heap_bytes(&self, acc: &Self::Acc) -> usize {
                0 $(+ self.$i.heap_bytes(&acc.$i))+
            }

            fn save(&self, acc: &Self::Acc, out: &mut Vec<u8>) -> bool {
                true $(&& self.$i.save(&acc.$i, out))+
            }

            fn load(&self, input: &mut &[u8]) -> Option<Self::Acc> {
                Some(($(self.$i.load(input)?,)+))
            }
        }
    };
}

tuple_aggregate!(A 0, B 1);
tuple_aggregate!(A 0, B 1, C 2);
tuple_aggregate!(A 0, B 1, C 2, D 3);
tuple_aggregate!(A 0, B 1, C 2, D 3, E 4);
tuple_aggregate!(A 0, B 1, C 2, D 3, E 4, G 5);

/// What an [`FnAggregate`] reports as its accumulator's heap bytes.
pub trait HeapBytesFn<Acc>: Clone + Send + Sync + 'static {
    /// Heap bytes `acc` holds.
    fn heap_bytes(&self, acc: &Acc) -> usize;
}

/// The heap bytes of an [`FnAggregate`] without [`with_heap_bytes`](FnAggregate::with_heap_bytes): 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHeapBytes;

impl<Acc> HeapBytesFn<Acc> for NoHeapBytes {
    fn heap_bytes(&self, _: &Acc) -> usize {
        0
    }
}

impl<Acc, H> HeapBytesFn<Acc> for H
where
    H: Fn(&Acc) -> usize + Clone + Send + Sync + 'static,
{
    fn heap_bytes(&self, acc: &Acc) -> usize {
        self(acc)
    }
}

/// An aggregation from four closures: `create() -> Acc`, `add(&mut Acc, &item)`,
/// `merge(&mut Acc, Acc)` and `result(&Acc) -> Out`. Annotate `add`'s arguments (the item
/// type is not known where it is built). Its `heap_bytes` is 0 unless given by
/// [`with_heap_bytes`](Self::with_heap_bytes).
///
/// ```
/// use flumen_runtime::aggregate::{self, fold};
/// use flumen_runtime::format::Owned;
/// use flumen_runtime::testing::visits::{Visit, VisitGen};
///
/// // The share of failed visits.
/// let error_rate = aggregate::from_fns(
///     || (0u64, 0u64),
///     |acc: &mut (u64, u64), v: &Visit| {
///         acc.0 += u64::from(v.is_error());
///         acc.1 += 1;
///     },
///     |into, other| {
///         into.0 += other.0;
///         into.1 += other.1;
///     },
///     |acc| acc.0 as f64 / acc.1.max(1) as f64,
/// );
/// let visits: Vec<Visit> = VisitGen::new(1).error_share(0.1).visits().take(10_000).collect();
/// let rate = fold::<Owned<Visit>, _>(&error_rate, &visits);
/// assert!((0.08..0.12).contains(&rate));
/// ```
#[derive(Clone)]
pub struct FnAggregate<C, A, M, R, H = NoHeapBytes, S = NotLogged> {
    create: C,
    add: A,
    merge: M,
    result: R,
    heap_bytes: H,
    state: S,
}

/// How an [`FnAggregate`]'s accumulator goes to a changelog.
pub trait StateFns<Acc>: Clone + Send + Sync + 'static {
    /// [`Aggregate::save`].
    fn save(&self, acc: &Acc, out: &mut Vec<u8>) -> bool;
    /// [`Aggregate::load`].
    fn load(&self, input: &mut &[u8]) -> Option<Acc>;
}

/// An [`FnAggregate`] without [`logged`](FnAggregate::logged): its state is kept in memory
/// only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotLogged;

impl<Acc> StateFns<Acc> for NotLogged {
    fn save(&self, _: &Acc, _: &mut Vec<u8>) -> bool {
        false
    }
    fn load(&self, _: &mut &[u8]) -> Option<Acc> {
        None
    }
}

/// An [`FnAggregate`] whose accumulator is logged through its [`StateCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Logged;

impl<Acc: StateCodec> StateFns<Acc> for Logged {
    fn save(&self, acc: &Acc, out: &mut Vec<u8>) -> bool {
        acc.encode(out);
        true
    }
    fn load(&self, input: &mut &[u8]) -> Option<Acc> {
        Acc::decode(input)
    }
}

impl<C, A, M, R, H, S> std::fmt::Debug for FnAggregate<C, A, M, R, H, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnAggregate").finish_non_exhaustive()
    }
}

/// An aggregation from its four functions: see [`FnAggregate`].
pub fn from_fns<Acc, Out, C, A, M, R>(
    create: C,
    add: A,
    merge: M,
    result: R,
) -> FnAggregate<C, A, M, R>
where
    C: Fn() -> Acc,
    M: Fn(&mut Acc, Acc),
    R: Fn(&Acc) -> Out,
{
    FnAggregate {
        create,
        add,
        merge,
        result,
        heap_bytes: NoHeapBytes,
        state: NotLogged,
    }
}

impl<C, A, M, R, H, S> FnAggregate<C, A, M, R, H, S> {
    /// The same, reporting `heap_bytes(acc)` as the accumulator's heap bytes.
    pub fn with_heap_bytes<Acc, H2>(self, heap_bytes: H2) -> FnAggregate<C, A, M, R, H2, S>
    where
        H2: Fn(&Acc) -> usize,
    {
        FnAggregate {
            create: self.create,
            add: self.add,
            merge: self.merge,
            result: self.result,
            heap_bytes,
            state: self.state,
        }
    }

    /// The same, with its accumulator written to changelogs through its [`StateCodec`]
    /// (needed for a window over it to run under exactly-once, and to survive a failure).
    pub fn logged(self) -> FnAggregate<C, A, M, R, H, Logged> {
        FnAggregate {
            create: self.create,
            add: self.add,
            merge: self.merge,
            result: self.result,
            heap_bytes: self.heap_bytes,
            state: Logged,
        }
    }
}

impl<F, C, A, M, R, H, S, Acc, Out> Aggregate<F> for FnAggregate<C, A, M, R, H, S>
where
    F: Family,
    C: Fn() -> Acc + Clone + Send + Sync + 'static,
    A: for<'a, 'b> Fn(&'b mut Acc, &'b F::Item<'a>) + Clone + Send + Sync + 'static,
    M: Fn(&mut Acc, Acc) + Clone + Send + Sync + 'static,
    R: Fn(&Acc) -> Out + Clone + Send + Sync + 'static,
    H: HeapBytesFn<Acc>,
    S: StateFns<Acc>,
    Acc: 'static,
    Out: 'static,
{
    type Acc = Acc;
    type Out = Out;

    fn save(&self, acc: &Acc, out: &mut Vec<u8>) -> bool {
        self.state.save(acc, out)
    }

    fn load(&self, input: &mut &[u8]) -> Option<Acc> {
        self.state.load(input)
    }

    #[inline]
    fn create(&self) -> Acc {
        (self.create)()
    }

    #[inline]
    fn add(&self, acc: &mut Acc, item: &F::Item<'_>) {
        (self.add)(acc, item);
    }

    fn merge(&self, into: &mut Acc, other: Acc) {
        (self.merge)(into, other);
    }

    fn result(&self, acc: &Acc) -> Out {
        (self.result)(acc)
    }

    fn heap_bytes(&self, acc: &Acc) -> usize {
        self.heap_bytes.heap_bytes(acc)
    }
}

#[cfg(test)]
mod tests;
