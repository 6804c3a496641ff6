//! The fused operator chain alone, in memory: `filter -> map` over borrowed 100-byte values,
//! ending in a `for_each`, no broker. Reports records/s (criterion's throughput) and, once
//! before the timed runs, heap allocations per record through a counting allocator.
//!
//! `cargo bench -p flumen-runtime --bench operator_chain`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

const RECORDS: usize = 100_000;

fn values() -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| {
            let mut v = format!(
                "user-{:05} visited /page/{} status {}",
                i % 977,
                i % 31,
                200 + (i % 7)
            )
            .into_bytes();
            v.resize(100, b' ');
            v
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = values();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();

    let sum = Arc::new(AtomicU64::new(0));
    let sink = sum.clone();
    let mut bytes = Pipeline::new();
    bytes
        .source(Kafka::topic("in").format(Bytes))
        .filter(|v| v[v.len() - 1] == b' ' && v[13] != b'9')
        .map(|v: &[u8]| v.len() as u64 + u64::from(v[6]))
        .for_each(move |_, n| {
            // Relaxed load/store on one thread: no read-modify-write on the record path.
            sink.store(
                sink.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        });
    let mut run = MemoryRun::new(&bytes, "bench");
    run.push_values("in", 0, &refs).expect("warm-up");
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run.push_values("in", 0, &refs).expect("run");
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    eprintln!(
        "filter -> map over borrowed bytes: {allocations} allocations for {RECORDS} records ({:.4} per record)",
        allocations as f64 / RECORDS as f64
    );

    let mut group = c.benchmark_group("operator_chain");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("filter_map_100B_bytes", |b| {
        b.iter(|| run.push_values("in", 0, black_box(&refs)).expect("run"));
    });

    let mut text = Pipeline::new();
    let sink = sum.clone();
    text.source(Kafka::topic("in").format(Utf8))
        .filter(|s| s.contains("/page/1"))
        .map(|s: &str| s.len())
        .for_each(move |_, n| {
            sink.store(
                sink.load(Ordering::Relaxed).wrapping_add(n as u64),
                Ordering::Relaxed,
            );
        });
    let mut run = MemoryRun::new(&text, "bench");
    group.bench_function("filter_map_100B_utf8", |b| {
        b.iter(|| run.push_values("in", 0, black_box(&refs)).expect("run"));
    });
    group.finish();
    black_box(sum.load(Ordering::Relaxed));
}

criterion_group!(benches, bench);
criterion_main!(benches);
