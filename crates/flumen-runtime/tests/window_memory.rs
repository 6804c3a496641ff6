//! Windows' steady state: counting an already-seen key of an open window allocates nothing,
//! and a count window holds 1 M distinct keys in at most 100 bytes per key (prints the
//! figure, and the state-size metric's estimate next to it). A keyed function's timers and
//! open sessions on disk take no memory per key.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use flumen_runtime::format::Utf8;
use flumen_runtime::testing::MemoryRun;
use flumen_runtime::window::Windows;
use flumen_runtime::{Kafka, MemoryRecord, Pipeline};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters are global: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The second stage of `word_count`: words keyed by themselves, counted per window.
fn counting() -> Pipeline {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("words").format(Utf8))
        .window(Windows::tumbling(Duration::from_secs(5)))
        .count()
        .for_each(|_, w| assert!(w.value > 0));
    p
}

fn words(n: usize, from_ts: i64) -> Vec<MemoryRecord> {
    (0..n)
        .map(|i| {
            let w = format!("word-{:07}", i % 1_000);
            MemoryRecord::new(Some(w.as_bytes()), w.as_bytes(), from_ts + i as i64 / 10)
        })
        .collect()
}

#[test]
fn counting_already_seen_words_of_an_open_window_allocates_nothing() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let p = counting();
    let mut run = MemoryRun::new(&p, "app");
    // The first 10,000 records create the 1,000 keys of window [0, 5 s).
    run.push("words", 0, &words(10_000, 0)).expect("run");
    let again = words(10_000, 1_000);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run.push("words", 0, &again).expect("run");
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    // A few per call (the task's boxed future); none per record.
    assert!(
        during <= 8,
        "{during} allocations for {} records",
        again.len()
    );
}

#[test]
fn a_count_window_holds_a_million_keys_in_at_most_100_bytes_each() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let p = counting();
    let mut run = MemoryRun::new(&p, "app");
    let keys = 1_000_000usize;
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for chunk in 0..100 {
        let records: Vec<MemoryRecord> = (chunk * keys / 100..(chunk + 1) * keys / 100)
            .map(|i| {
                let w = format!("key-{i:08}");
                MemoryRecord::new(Some(w.as_bytes()), b"", 1_000)
            })
            .collect();
        run.push("words", 0, &records).expect("run");
    }
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let per_key = held as f64 / keys as f64;
    let (_, ops) = run.task_metrics(0, 0).expect("task");
    let window = &ops[0];
    assert_eq!(window.state_keys, keys as u64);
    println!(
        "count window, {keys} keys of 12 bytes: {per_key:.1} bytes per key allocated; \
         the state-size metric says {:.1}",
        window.state_bytes as f64 / keys as f64
    );
    assert!(per_key <= 100.0, "{per_key:.1} bytes per key");
    assert!(
        (window.state_bytes as f64 / held as f64 - 1.0).abs() < 0.5,
        "the metric ({}) is within 50 % of what is allocated ({held})",
        window.state_bytes
    );
}

#[test]
fn visit_statistics_state_per_key_is_measured_and_the_metric_follows_it() {
    use flumen_runtime::aggregate;
    use flumen_runtime::format::Json;
    use flumen_runtime::testing::visits::Visit;

    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut p = Pipeline::new();
    p.source(Kafka::topic("visits").format(Json::<Visit>::new()))
        .window(Windows::tumbling(Duration::from_secs(60)))
        .aggregate((
            aggregate::count(),
            aggregate::distinct_count_by_ref(|v: &Visit| v.user.as_str()),
            aggregate::sum(|v: &Visit| u64::from(v.is_error())),
            aggregate::percentiles(&[0.5, 0.99], |v: &Visit| u64::from(v.latency_ms)),
        ))
        .for_each(|_, w| assert!(w.value.0 > 0));
    let mut run = MemoryRun::new(&p, "app");
    let keys = 10_000usize;
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let records: Vec<MemoryRecord> = (0..keys)
        .map(|i| {
            let v = Visit {
                ts: 1_000,
                user: format!("u{}", i % 97),
                url: format!("/page/{i}"),
                status: 200,
                latency_ms: 35,
            };
            MemoryRecord::new(Some(v.url.as_bytes()), &v.to_json(), 1_000)
        })
        .collect();
    let input = LIVE_BYTES.load(Ordering::Relaxed) - before;
    run.push("visits", 0, &records).expect("run");
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before - input;
    let per_key = held as f64 / keys as f64;
    let (_, ops) = run.task_metrics(0, 0).expect("task");
    println!(
        "visit statistics (views, distinct users, errors, p50/p99), {keys} keys: \
         {per_key:.0} bytes per key allocated; the state-size metric says {:.0}",
        ops[0].state_bytes as f64 / keys as f64
    );
    assert_eq!(ops[0].state_keys, keys as u64);
    assert!(
        (ops[0].state_bytes as f64 / held as f64 - 1.0).abs() < 0.5,
        "the metric ({}) is within 50 % of what is allocated ({held})",
        ops[0].state_bytes
    );
}

/// Per key, a count, and a timer far ahead set by the first record.
#[derive(Clone)]
struct FarTimer;

impl flumen_runtime::state::KeyedProcess<flumen_runtime::format::StrView> for FarTimer {
    type State = flumen_runtime::state::ValueState<u64>;
    type Out = String;

    fn process(
        &mut self,
        cx: &mut flumen_runtime::state::KeyedContext<'_, Self::State, String>,
        _: &str,
    ) {
        let n = cx.state.get().copied().unwrap_or(0);
        if n == 0 {
            let at = cx.timestamp() + 1_000_000_000;
            cx.set_event_timer(at);
        }
        cx.state.set(n + 1);
    }

    fn save_state(&self, state: &Self::State, out: &mut Vec<u8>) -> bool {
        use flumen_runtime::codec::StateCodec;
        state.encode(out);
        true
    }

    fn load_state(&self, input: &mut &[u8]) -> Option<Self::State> {
        use flumen_runtime::codec::StateCodec;
        StateCodec::decode(input)
    }
}

/// Bytes allocated and kept per key over 50 k new keys, each with a pending timer.
fn timer_memory_per_key(on_disk: bool) -> f64 {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .process_keyed(FarTimer)
        .for_each(|_, _| {});
    memory_per_new_key(&p, on_disk)
}

/// Bytes allocated and kept per key over 100 k new keys (after 50 k others), with a
/// checkpoint after each 50 k. On disk, the store file's page cache (up to 1 MiB) fills and
/// empties along the way: up to about 10 bytes per key either way.
fn memory_per_new_key(p: &Pipeline, on_disk: bool) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = MemoryRun::new(p, "app");
    if on_disk {
        run = run.with_disk_state(dir.path(), 16 << 10);
    }
    let keys = 50_000usize;
    let mut live = Vec::new();
    for part in 0..3 {
        let records: Vec<MemoryRecord> = (part * keys..(part + 1) * keys)
            .map(|i| {
                let k = format!("key-{i:08}");
                MemoryRecord::new(Some(k.as_bytes()), b"", i as i64)
            })
            .collect();
        run.push("in", 0, &records).expect("run");
        run.checkpoint().expect("checkpoint");
        drop(records);
        live.push(LIVE_BYTES.load(Ordering::Relaxed));
    }
    (live[2] - live[0]) as f64 / (2 * keys) as f64
}

#[test]
fn timers_of_a_keyed_function_on_disk_take_no_memory_per_key() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let memory = timer_memory_per_key(false);
    let disk = timer_memory_per_key(true);
    println!(
        "a keyed count with one pending timer per key: {memory:.1} bytes per key in memory, \
         {disk:.1} with the state on disk (16 KiB cache; the file's page cache moves it by up to 10)"
    );
    assert!(memory > 50.0, "{memory:.1} bytes per key in memory");
    assert!(disk < 20.0, "{disk:.1} bytes per key on disk");
}

#[test]
fn open_sessions_on_disk_take_no_memory_per_key() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .window(Windows::session(Duration::from_secs(3_600)))
        .count()
        .for_each(|_, _| {});
    let memory = memory_per_new_key(&p, false);
    let disk = memory_per_new_key(&p, true);
    println!(
        "a session window count, one open session per key: {memory:.1} bytes per key in \
         memory, {disk:.1} with the state on disk (16 KiB cache; the file's page cache moves it by up to 10)"
    );
    assert!(memory > 50.0, "{memory:.1} bytes per key in memory");
    assert!(disk < 20.0, "{disk:.1} bytes per key on disk");
}
