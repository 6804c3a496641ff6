//! The per-record path of `filter -> map` over borrowed values allocates nothing, and
//! neither does a keyed function's on a key whose state is held (in memory, or in the disk
//! store's cache).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flumen_runtime::format::{Bytes, Utf8};
use flumen_runtime::testing::MemoryRun;
use flumen_runtime::{Kafka, Pipeline};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is the process's: tests that read it run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn filter_then_map_over_borrowed_values_allocates_nothing_per_record() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let data: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("value {i:>90}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let total = Arc::new(AtomicU64::new(0));

    let t = total.clone();
    let mut bytes = Pipeline::new();
    bytes
        .source(Kafka::topic("in").format(Bytes))
        .filter(|v| v.ends_with(b"7"))
        .map(|v: &[u8]| v.len() as u64)
        .for_each(move |_, n| t.store(t.load(Ordering::Relaxed) + n, Ordering::Relaxed));
    let t = total.clone();
    let mut text = Pipeline::new();
    text.source(Kafka::topic("in").format(Utf8))
        .filter(|s| s.contains('3'))
        .map(|s: &str| s.len() as u64)
        .for_each(move |_, n| t.store(t.load(Ordering::Relaxed) + n, Ordering::Relaxed));

    for pipeline in [&bytes, &text] {
        let mut run = MemoryRun::new(pipeline, "app");
        // The first run creates the task (its operators and buffers).
        run.push_values("in", 0, &refs).expect("run");
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        run.push_values("in", 0, &refs).expect("run");
        let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
        // A few allocations per call (the task's boxed future, the partition name) are
        // allowed; none per record.
        assert!(
            during <= 8,
            "{during} allocations for {} records",
            refs.len()
        );
    }
    assert!(total.load(Ordering::Relaxed) > 0);
}

/// Counts each key's bytes; emits nothing.
#[derive(Clone)]
struct CountBytes;

impl flumen_runtime::state::KeyedProcess<flumen_runtime::format::BytesView> for CountBytes {
    type State = flumen_runtime::state::ValueState<u64>;
    type Out = u64;

    fn process(
        &mut self,
        cx: &mut flumen_runtime::state::KeyedContext<'_, Self::State, u64>,
        value: &[u8],
    ) {
        let n = cx.state.get().copied().unwrap_or(0) + value.len() as u64;
        cx.state.set(n);
    }

    fn save_state(&self, state: &Self::State, out: &mut Vec<u8>) -> bool {
        flumen_runtime::codec::StateCodec::encode(state, out);
        true
    }

    fn load_state(&self, input: &mut &[u8]) -> Option<Self::State> {
        flumen_runtime::codec::StateCodec::decode(input)
    }
}

#[test]
fn a_keyed_state_already_held_costs_no_allocation_in_memory_or_in_the_disk_stores_cache() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let data: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("value {i:>90}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut pipeline = Pipeline::new();
    pipeline
        .source(Kafka::topic("in").format(Bytes))
        .process_keyed(CountBytes)
        .for_each(|_, _| {});
    let dir = tempfile::tempdir().expect("tempdir");
    for disk in [false, true] {
        let mut run = MemoryRun::new(&pipeline, "app");
        if disk {
            run = run.with_disk_state(dir.path(), 1 << 20);
        }
        // The first run creates the task and the (one, empty) key's state.
        run.push_values("in", 0, &refs).expect("run");
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        run.push_values("in", 0, &refs).expect("run");
        let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(
            during <= 8,
            "disk: {disk}: {during} allocations for {} records",
            refs.len()
        );
    }
}
