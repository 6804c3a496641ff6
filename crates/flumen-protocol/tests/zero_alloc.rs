//! Iterating an uncompressed batch performs no heap allocation at all, per record or per batch:
//! proven with a counting global allocator (this test binary's own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flumen_protocol::record::{BatchBuilder, Compression, Decompressor, RecordBatches};

struct Counting;

// Per thread, so tests running in parallel do not see each other's allocations.
thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static ALLOC_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn alloc_bytes() -> usize {
    ALLOC_BYTES.with(Cell::get)
}

fn count_bytes(n: usize) {
    ALLOC_BYTES.with(|c| c.set(c.get() + n));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

fn count_one() {
    ALLOCS.with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        count_bytes(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        count_bytes(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn iterating_uncompressed_batches_allocates_nothing() {
    let mut blob = Vec::new();
    for batch in 0..4 {
        let mut b = BatchBuilder::new(Compression::None).base_offset(batch * 1000);
        for i in 0..1000i64 {
            let key = format!("key-{i}");
            let value = vec![i as u8; 100 + (i as usize % 300)];
            b.append(
                i,
                Some(key.as_bytes()),
                Some(&value),
                &[
                    (b"a", Some(b"1")),
                    (b"a", None),
                    (b"trace", Some(key.as_bytes())),
                ],
            )
            .unwrap();
        }
        blob.extend_from_slice(&b.seal().unwrap());
    }
    let blob = bytes::Bytes::from(blob);
    // The first clone of a Vec-backed `Bytes` moves its ownership into a shared header (one
    // allocation per buffer, made by `bytes`); do it before counting.
    let blob = blob.clone();
    let mut scratch = Decompressor::new();

    let before = allocs();
    let mut records = 0u64;
    let mut touched = 0u64;
    for batch in RecordBatches::new(blob.clone()) {
        let batch = batch.unwrap();
        batch.verify_crc().unwrap();
        for rec in batch.records(&mut scratch).unwrap() {
            let rec = rec.unwrap();
            touched +=
                rec.key().map_or(0, |k| k[0] as u64) + rec.value().map_or(0, |v| v.len() as u64);
            for (k, v) in rec.headers() {
                touched += k.len() as u64 + v.map_or(0, |v| v.len() as u64);
            }
            // Owned slices share the batch's memory: no allocation either.
            touched += rec.value_bytes().map_or(0, |b| b.len() as u64);
            records += 1;
        }
    }
    let allocs = allocs() - before;
    assert_eq!(records, 4000);
    assert!(touched > 0);
    assert_eq!(allocs, 0, "allocations while iterating {records} records");
}

#[test]
fn decompression_buffer_is_reused_across_batches() {
    let mut batches = Vec::new();
    for batch in 0..8 {
        let mut b = BatchBuilder::new(Compression::Snappy).base_offset(batch * 100);
        for i in 0..100i64 {
            b.append(i, None, Some(&[7u8; 500]), &[]).unwrap();
        }
        batches.push(b.seal().unwrap());
    }
    let mut scratch = Decompressor::new();
    let count = |b: &bytes::Bytes, scratch: &mut Decompressor| {
        let batch = flumen_protocol::record::RecordBatch::new(b.clone()).unwrap();
        batch.records(scratch).unwrap().count()
    };
    // Warm up: the first batch sizes the buffer.
    assert_eq!(count(&batches[0], &mut scratch), 100);
    let before = (allocs(), alloc_bytes());
    for b in &batches[1..] {
        assert_eq!(count(b, &mut scratch), 100);
    }
    let (calls, bytes) = (allocs() - before.0, alloc_bytes() - before.1);
    // The 50 KB output buffer is reused: what remains is at most the small shared-ownership
    // header `bytes` allocates when the buffer is frozen, once per batch.
    assert!(calls <= 7, "{calls} allocations for 7 more snappy batches");
    assert!(
        bytes <= 7 * 64,
        "{bytes} bytes allocated for 7 more snappy batches"
    );
}
