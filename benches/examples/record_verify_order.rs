//! Where the CRC check goes: all batches first and then all records, or batch by batch.
//!
//! A consumer may check every batch of a poll before handing out records, or check each batch
//! just before reading it. With a poll larger than the caches, the first way reads every batch
//! twice from memory, and the record parser, whose next position depends on the record just
//! read, waits on memory once per record. Min-of-N timings of both orders on blobs of 100 B and
//! 1 KiB records. Run: `cargo run --release -p flumen-benches --example record_verify_order
//! [total_bytes]` (default 64 MiB, above the machine's L3).

use std::hint::black_box;

use flumen_benches::record_data::{blob, samples};
use flumen_benches::timing::min_time;
use flumen_protocol::record::{Compression, Decompressor, RecordBatch, RecordBatches};

// Only `touch` is used here; the decode functions serve the other measurements.
#[path = "../benches/shared/decode_work.rs"]
#[allow(dead_code)]
mod decode_work;
use decode_work::touch;

fn read(batch: &RecordBatch, scratch: &mut Decompressor) -> u64 {
    let mut acc = 0u64;
    for rec in batch.records(scratch).expect("records") {
        let rec = rec.expect("record");
        acc = acc.wrapping_add(touch(rec.key(), rec.value()));
    }
    acc
}

fn verify_all_then_read(batches: &[RecordBatch], scratch: &mut Decompressor) -> u64 {
    for batch in batches {
        batch.verify_crc().expect("crc");
    }
    batches
        .iter()
        .map(|b| read(b, scratch))
        .fold(0, u64::wrapping_add)
}

fn verify_each_then_read(batches: &[RecordBatch], scratch: &mut Decompressor) -> u64 {
    let mut acc = 0u64;
    for batch in batches {
        batch.verify_crc().expect("crc");
        acc = acc.wrapping_add(read(batch, scratch));
    }
    acc
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .map_or(64 << 20, |s| s.parse().expect("total bytes"));
    let reps = ((256usize << 20) / total).max(5);
    for value_len in [100usize, 1024] {
        let blob = blob(&samples(value_len, total), Compression::None);
        let batches: Vec<RecordBatch> = RecordBatches::new(blob)
            .collect::<Result<_, _>>()
            .expect("batches");
        let mut scratch = Decompressor::new();
        assert_eq!(
            verify_all_then_read(&batches, &mut scratch),
            verify_each_then_read(&batches, &mut scratch)
        );
        let all = min_time(reps, || {
            black_box(verify_all_then_read(&batches, &mut scratch));
        });
        let each = min_time(reps, || {
            black_box(verify_each_then_read(&batches, &mut scratch));
        });
        println!(
            "{value_len:>5} B records, {} MiB: verify all then read {:.2} ms, verify each batch then read it {:.2} ms ({:.2}x)",
            total >> 20,
            all.as_secs_f64() * 1e3,
            each.as_secs_f64() * 1e3,
            all.as_secs_f64() / each.as_secs_f64()
        );
    }
}
