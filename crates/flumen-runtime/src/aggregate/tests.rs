use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::format::StrView;
use crate::testing::visits::{Visit, VisitGen};

/// The accumulator of `items` added one by one.
fn acc_of<T: 'static, A: Aggregate<Owned<T>>>(agg: &A, items: &[T]) -> A::Acc {
    let mut acc = agg.create();
    for item in items {
        agg.add(&mut acc, item);
    }
    acc
}

/// The result of adding `items` one by one, and the results of merging the accumulators of
/// three consecutive parts of them, left to right and right to left.
fn by_merging<T: 'static, A: Aggregate<Owned<T>>>(
    agg: &A,
    items: &[T],
    cut1: Index,
    cut2: Index,
) -> (A::Out, A::Out, A::Out) {
    let (mut i, mut j) = (cut1.index(items.len() + 1), cut2.index(items.len() + 1));
    if i > j {
        std::mem::swap(&mut i, &mut j);
    }
    let (a, b, c) = (&items[..i], &items[i..j], &items[j..]);
    let one_by_one = agg.result(&acc_of(agg, items));

    let mut left = acc_of(agg, a);
    agg.merge(&mut left, acc_of(agg, b));
    agg.merge(&mut left, acc_of(agg, c));

    let mut bc = acc_of(agg, b);
    agg.merge(&mut bc, acc_of(agg, c));
    let mut right = acc_of(agg, a);
    agg.merge(&mut right, bc);

    (one_by_one, agg.result(&left), agg.result(&right))
}

macro_rules! assert_merges_agree {
    ($agg:expr, $items:expr, $cut1:expr, $cut2:expr) => {{
        let (one, left, right) = by_merging(&$agg, &$items, $cut1, $cut2);
        prop_assert_eq!(&one, &left);
        prop_assert_eq!(&one, &right);
    }};
}

proptest! {
    #[test]
    fn count_sum_min_max_avg_merge_as_if_added_one_by_one(
        items in prop::collection::vec(any::<i32>(), 0..100),
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        let items: Vec<i64> = items.into_iter().map(i64::from).collect();
        assert_merges_agree!(Count, items, cut1, cut2);
        assert_merges_agree!(sum(|x: &i64| *x), items, cut1, cut2);
        assert_merges_agree!(min(|x: &i64| *x), items, cut1, cut2);
        assert_merges_agree!(max(|x: &i64| *x), items, cut1, cut2);
        // Sums of integers below 2^53 are exact in f64.
        assert_merges_agree!(avg(|x: &i64| *x as f64), items, cut1, cut2);
        assert_merges_agree!((Count, sum(|x: &i64| *x), max(|x: &i64| *x)), items, cut1, cut2);
    }

    #[test]
    fn min_and_max_of_floats_with_nan_merge_as_if_added_one_by_one(
        items in prop::collection::vec(prop_oneof![any::<i16>().prop_map(f64::from), Just(f64::NAN)], 0..50),
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        assert_merges_agree!(min(|x: &f64| *x), items, cut1, cut2);
        assert_merges_agree!(max(|x: &f64| *x), items, cut1, cut2);
        let (lowest, _, _) = by_merging(&min(|x: &f64| *x), &items, cut1, cut2);
        prop_assert!(lowest.is_none_or(|x| !x.is_nan()));
    }

    #[test]
    fn an_associative_reduce_merges_as_if_added_one_by_one(
        items in prop::collection::vec("[a-c]{0,3}", 0..30),
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        // Concatenation is associative, not commutative: merge must keep the order.
        assert_merges_agree!(reduce(|acc: &mut String, s: &String| acc.push_str(s)), items, cut1, cut2);
    }

    #[test]
    fn distinct_counts_merge_as_if_added_one_by_one(
        items in prop::collection::vec(0u8..40, 0..120),
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        let names: Vec<String> = items.iter().map(|i| format!("u{i}")).collect();
        assert_merges_agree!(distinct_count(|x: &u8| *x), items, cut1, cut2);
        assert_merges_agree!(distinct_count_by_ref(|s: &String| s.as_str()), names, cut1, cut2);
        let distinct = items.iter().collect::<HashSet<_>>().len() as u64;
        prop_assert_eq!(fold::<Owned<String>, _>(&distinct_count_by_ref(|s: &String| s.as_str()), &names), distinct);
        // The bytes of the owned names are counted once per distinct name, whatever the path.
        let by_ref = distinct_count_by_ref(|s: &String| s.as_str());
        let mut merged = acc_of(&by_ref, &names[..names.len() / 2]);
        Aggregate::<Owned<String>>::merge(&by_ref, &mut merged, acc_of(&by_ref, &names[names.len() / 2..]));
        let name_bytes: usize = merged.values().iter().map(String::len).sum();
        prop_assert_eq!(merged.value_heap_bytes, name_bytes);
        prop_assert_eq!(acc_of(&by_ref, &names).value_heap_bytes, name_bytes);
    }

    #[test]
    fn approx_distinct_merges_as_if_added_one_by_one(
        items in prop::collection::vec(0u32..3_000, 0..1_500),
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        assert_merges_agree!(approx_distinct(|x: &u32| *x), items, cut1, cut2);
        assert_merges_agree!(approx_distinct(|x: &u32| *x).with_precision::<10>(), items, cut1, cut2);
    }

    #[test]
    fn top_n_merges_as_if_added_one_by_one(
        items in prop::collection::vec((0u8..30, prop_oneof![any::<i8>().prop_map(f64::from), Just(f64::NAN)]), 0..100),
        n in 0usize..12,
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        let top = top_n(n, |(v, s): &(u8, f64)| (*v, *s));
        // NaN != NaN: compare the printed results.
        let (one, left, right) = by_merging(&top, &items, cut1, cut2);
        prop_assert_eq!(format!("{one:?}"), format!("{left:?}"));
        prop_assert_eq!(format!("{one:?}"), format!("{right:?}"));

        // Independently: the best score per value, sorted by score descending, then value.
        // NaN ranks below every number: `None < Some(_)`.
        let rank = |s: f64| (!s.is_nan()).then_some(s);
        let mut best: Vec<(u8, f64)> = Vec::new();
        for &(v, s) in &items {
            match best.iter_mut().find(|(b, _)| *b == v) {
                Some((_, old)) if rank(s) > rank(*old) => *old = s,
                Some(_) => {}
                None => best.push((v, s)),
            }
        }
        best.sort_by(|a, b| {
            rank(b.1).partial_cmp(&rank(a.1)).expect("numbers").then(a.0.cmp(&b.0))
        });
        best.truncate(n);
        prop_assert_eq!(format!("{one:?}"), format!("{best:?}"));
    }

    #[test]
    fn percentiles_merge_as_if_added_one_by_one(
        items in prop::collection::vec(prop_oneof![0u64..2_048, 0u64..1_000_000], 0..200),
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        let p = percentiles(&[0.0, 0.25, 0.5, 0.9, 0.99, 1.0], |x: &u64| *x);
        assert_merges_agree!(p, items, cut1, cut2);
    }

    #[test]
    fn percentiles_below_2048_are_nearest_rank_exactly(
        items in prop::collection::vec(0u64..2_048, 1..300),
        quantiles in prop::collection::vec(0.0f64..=1.0, 1..8),
    ) {
        let p = percentiles(&quantiles, |x: &u64| *x);
        let got = fold::<Owned<u64>, _>(&p, &items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        let expected: Vec<u64> = quantiles
            .iter()
            .map(|q| {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                sorted[rank - 1]
            })
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn percentiles_above_2048_are_within_one_part_in_1024(
        items in prop::collection::vec(2_048u64..100_000_000, 1..100),
        q in 0.0f64..=1.0,
    ) {
        let got = fold::<Owned<u64>, _>(&percentiles(&[q], |x: &u64| *x), &items)[0];
        let mut sorted = items.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        let exact = sorted[rank - 1];
        prop_assert!(got >= exact && got - exact <= exact / 1024, "{} for {}", got, exact);
    }

    #[test]
    fn fn_aggregates_merge_as_if_added_one_by_one(
        items in prop::collection::vec(any::<i32>(), 0..100),
        cut1 in any::<Index>(),
        cut2 in any::<Index>(),
    ) {
        let agg = from_fns(
            Vec::<i32>::new,
            |acc: &mut Vec<i32>, x: &i32| acc.push(*x),
            |into, other| into.extend(other),
            |acc| acc.clone(),
        );
        assert_merges_agree!(agg, items, cut1, cut2);
    }
}

#[test]
fn empty_accumulators_give_the_neutral_results() {
    let none: [i64; 0] = [];
    assert_eq!(fold::<Owned<i64>, _>(&count(), &none), 0);
    assert_eq!(fold::<Owned<i64>, _>(&sum(|x: &i64| *x), &none), 0);
    assert_eq!(fold::<Owned<i64>, _>(&min(|x: &i64| *x), &none), None);
    assert_eq!(fold::<Owned<i64>, _>(&max(|x: &i64| *x), &none), None);
    assert_eq!(
        fold::<Owned<i64>, _>(&avg(|x: &i64| *x as f64), &none),
        None
    );
    assert_eq!(
        fold::<Owned<i64>, _>(&distinct_count(|x: &i64| *x), &none),
        0
    );
    assert_eq!(
        fold::<Owned<i64>, _>(&approx_distinct(|x: &i64| *x), &none),
        0
    );
    assert!(fold::<Owned<i64>, _>(&top_n(3, |x: &i64| (*x, *x)), &none).is_empty());
    assert_eq!(
        fold::<Owned<i64>, _>(&percentiles(&[0.5, 1.0], |x: &i64| *x as u64), &none),
        [0, 0]
    );
    let strings: [String; 0] = [];
    assert_eq!(
        fold::<Owned<String>, _>(
            &reduce(|a: &mut String, b: &String| a.push_str(b)),
            &strings
        ),
        None
    );
}

#[test]
fn aggregations_work_on_borrowed_items() {
    let words = ["pear", "apple", "fig", "apple"];
    assert_eq!(fold::<StrView, _>(&sum(|s: &&str| s.len()), &words), 17);
    assert_eq!(
        fold::<StrView, _>(&min(|s: &&str| s.len()), &words),
        Some(3)
    );
    assert_eq!(
        fold::<StrView, _>(&distinct_count(|s: &&str| s.len()), &words),
        3
    );
    let top = fold::<StrView, _>(&top_n(2, |s: &&str| (s.to_string(), s.len())), &words);
    assert_eq!(top, [("apple".to_owned(), 5), ("pear".to_owned(), 4)]);
}

#[test]
fn top_n_keeps_the_best_score_per_value_and_breaks_ties_by_value() {
    let views = [
        ("/b", 5u64),
        ("/a", 5),
        ("/c", 9),
        ("/a", 2),
        ("/d", 1),
        ("/e", 5),
    ];
    let top = top_n(3, |(url, n): &(&'static str, u64)| (url.to_string(), *n));
    let result = fold::<Owned<(&'static str, u64)>, _>(&top, &views);
    let strings = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(u, n)| (u.to_string(), *n)).collect()
    };
    assert_eq!(result, strings(&[("/c", 9), ("/a", 5), ("/b", 5)]));
    let all = fold::<Owned<(&'static str, u64)>, _>(
        &top_n(10, |(url, n): &(&'static str, u64)| (url.to_string(), *n)),
        &views,
    );
    assert_eq!(all.len(), 5);
    assert_eq!(all.last(), Some(&("/d".to_owned(), 1)));
}

#[test]
fn approx_distinct_is_within_3_percent_on_100k_distinct_values() {
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    // Every value twice: repeats must not count.
    let twice: Vec<String> = users.iter().chain(users.iter()).cloned().collect();
    let by_value = approx_distinct(|s: &String| s.clone());
    let by_ref = approx_distinct_by_ref(|s: &String| s.as_str());
    let coarse = approx_distinct_by_ref(|s: &String| s.as_str()).with_precision::<12>();
    // The default precision's standard error is 0.8%; precision 12's is 1.6%, so it gets
    // three of them.
    for (name, estimate, bound) in [
        (
            "by value",
            fold::<Owned<String>, _>(&by_value, &twice),
            0.03,
        ),
        ("by ref", fold::<Owned<String>, _>(&by_ref, &users), 0.03),
        (
            "precision 12",
            fold::<Owned<String>, _>(&coarse, &users),
            0.05,
        ),
    ] {
        let error = (estimate as f64 - 100_000.0).abs() / 100_000.0;
        assert!(
            error < bound,
            "{name}: {estimate} ({:.2}% off)",
            error * 100.0
        );
    }
    // A String and its str hash alike: the two kinds of sketch agree.
    assert_eq!(
        fold::<Owned<String>, _>(&by_value, &twice),
        fold::<Owned<String>, _>(&by_ref, &users)
    );

    // Merged halves estimate the whole.
    let mut left = acc_of(&by_ref, &users[..50_000]);
    Aggregate::<Owned<String>>::merge(&by_ref, &mut left, acc_of(&by_ref, &users[50_000..]));
    let merged = Aggregate::<Owned<String>>::result(&by_ref, &left);
    assert!((merged as f64 - 100_000.0).abs() < 3_000.0, "{merged}");
}

#[test]
fn approx_distinct_is_exact_for_small_counts_and_reports_its_heap() {
    let agg = approx_distinct(|x: &u32| *x);
    let two = acc_of(&agg, &[7, 8, 7]);
    assert_eq!(Aggregate::<Owned<u32>>::result(&agg, &two), 2);
    assert_eq!(Aggregate::<Owned<u32>>::heap_bytes(&agg, &two), 0);
    let values: Vec<u32> = (0..100).collect();
    let hundred = acc_of(&agg, &values);
    assert_eq!(Aggregate::<Owned<u32>>::result(&agg, &hundred), 100);
    let heap = Aggregate::<Owned<u32>>::heap_bytes(&agg, &hundred);
    assert!((400..=1024).contains(&heap), "{heap}");
    let values: Vec<u32> = (0..10_000).collect();
    let many = acc_of(&agg, &values);
    // 2^14 registers of 6 bits, and a little bookkeeping.
    let heap = Aggregate::<Owned<u32>>::heap_bytes(&agg, &many);
    assert!((12_288..12_288 + 256).contains(&heap), "{heap}");
}

#[test]
fn heap_bytes_follow_the_tables() {
    let set = distinct_count(|x: &u64| *x);
    let values: Vec<u64> = (0..1000).collect();
    let acc = acc_of(&set, &values);
    let heap = Aggregate::<Owned<u64>>::heap_bytes(&set, &acc);
    // 1000 values need 1024 buckets at least (7/8 load): 9 bytes each, and the group.
    assert!((1024 * 9..=2048 * 9 + 16).contains(&heap), "{heap}");
    assert_eq!(
        Aggregate::<Owned<u64>>::heap_bytes(&set, &Aggregate::<Owned<u64>>::create(&set)),
        0
    );

    let names: Vec<String> = (0..100).map(|i| format!("name-{i:04}")).collect();
    let by_ref = distinct_count_by_ref(|s: &String| s.as_str());
    let acc = acc_of(&by_ref, &names);
    let heap = Aggregate::<Owned<String>>::heap_bytes(&by_ref, &acc);
    let table = table_bytes::<String>(acc.values().capacity());
    assert_eq!(heap, table + 100 * 9);

    let top = top_n(3, |x: &u64| (*x, *x));
    let acc = acc_of(&top, &values);
    assert!(Aggregate::<Owned<u64>>::heap_bytes(&top, &acc) >= 1000 * 16);

    let p = percentiles(&[0.5], |x: &u64| *x);
    let hist = std::mem::size_of::<hdrhistogram::Histogram<u64>>();
    let small = acc_of(&p, &values);
    assert_eq!(
        Aggregate::<Owned<u64>>::heap_bytes(&p, &small),
        hist + 2048 * 8
    );
    // Few values are kept as they are: 8 bytes each (and the vector's spare room).
    let few = acc_of(&p, &[1_000_000, 3, 5]);
    assert_eq!(Aggregate::<Owned<u64>>::heap_bytes(&p, &few), 4 * 8);
    // 2048 counters cover values below 2^11, and each 1024 more one more power of two: 2^20
    // (above 1,000,000) takes 9 more.
    let many: Vec<u64> = (0..100).map(|i| 1_000_000 + i).collect();
    let large = acc_of(&p, &many);
    assert_eq!(
        Aggregate::<Owned<u64>>::heap_bytes(&p, &large),
        hist + (2048 + 9 * 1024) * 8
    );

    let both = (count(), p);
    let acc = acc_of(&both, &values);
    assert_eq!(
        Aggregate::<Owned<u64>>::heap_bytes(&both, &acc),
        hist + 2048 * 8
    );

    let fns = from_fns(
        Vec::<u64>::new,
        |acc: &mut Vec<u64>, x: &u64| acc.push(*x),
        |a, b| a.extend(b),
        Vec::len,
    );
    assert_eq!(
        Aggregate::<Owned<u64>>::heap_bytes(&fns, &acc_of(&fns, &values)),
        0
    );
    let fns = fns.with_heap_bytes(|acc: &Vec<u64>| acc.capacity() * 8);
    let acc = acc_of(&fns, &values);
    assert_eq!(
        Aggregate::<Owned<u64>>::heap_bytes(&fns, &acc),
        acc.capacity() * 8
    );
}

#[test]
fn table_bytes_match_the_buckets_of_std_sets() {
    // Capacity as std reports it for 4, 8, 16, ... buckets.
    assert_eq!(table_bytes::<u64>(3), 4 * 9 + 16);
    assert_eq!(table_bytes::<u64>(7), 8 * 9 + 16);
    assert_eq!(table_bytes::<u64>(14), 16 * 9 + 16);
    assert_eq!(table_bytes::<u64>(896), 1024 * 9 + 16);
    let mut set = HashSet::new();
    for i in 0..1000u64 {
        set.insert(i);
        let cap = set.capacity();
        let buckets = (table_bytes::<u64>(cap) - 16) / 9;
        assert!(
            buckets.is_power_of_two() && cap < buckets,
            "{cap} -> {buckets}"
        );
    }
}

#[test]
fn six_aggregations_in_a_tuple() {
    let visits: Vec<Visit> = VisitGen::new(3).visits().take(5_000).collect();
    let all = (
        count(),
        sum(|v: &Visit| u64::from(v.latency_ms)),
        min(|v: &Visit| v.latency_ms),
        max(|v: &Visit| v.latency_ms),
        avg(|v: &Visit| f64::from(v.latency_ms)),
        distinct_count_by_ref(|v: &Visit| v.url.as_str()),
    );
    let (n, total, low, high, mean, urls) = fold::<Owned<Visit>, _>(&all, &visits);
    let latencies: Vec<u64> = visits.iter().map(|v| u64::from(v.latency_ms)).collect();
    assert_eq!(n, 5_000);
    assert_eq!(total, latencies.iter().sum::<u64>());
    assert_eq!(low.map(u64::from), latencies.iter().copied().min());
    assert_eq!(high.map(u64::from), latencies.iter().copied().max());
    assert_eq!(mean, Some(total as f64 / 5_000.0));
    assert_eq!(
        urls,
        visits.iter().map(|v| &v.url).collect::<HashSet<_>>().len() as u64
    );
}

#[test]
#[should_panic(expected = "not in [0, 1]")]
fn a_percentile_is_not_a_quantile() {
    let _ = percentiles(&[99.0], |x: &u64| *x);
}
