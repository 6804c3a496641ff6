//! Iterates every batch and record of arbitrary bytes (compressed or not): must never panic,
//! hang or allocate without bound.
#![no_main]

use bytes::Bytes;
use flumen_protocol::record::{ControlRecord, Decompressor, RecordBatch, RecordBatches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let blob = Bytes::copy_from_slice(data);
    // A small cap keeps each run fast; the cap itself is what stops bombs.
    let mut scratch = Decompressor::with_limit(1 << 20);
    let _ = RecordBatch::new(blob.clone());
    for batch in RecordBatches::new(blob) {
        let Ok(batch) = batch else { break };
        let _ = batch.verify_crc();
        let _ = (batch.last_offset(), batch.max_timestamp(), batch.producer_id());
        let control = batch.is_control();
        let Ok(records) = batch.records(&mut scratch) else {
            continue;
        };
        for record in records {
            let Ok(record) = record else { break };
            let mut sum = record.offset() ^ record.timestamp();
            sum ^= record.key().map_or(0, |k| k.len() as i64);
            sum ^= record.value().map_or(0, |v| v.len() as i64);
            for (k, v) in record.headers() {
                sum ^= (k.len() + v.map_or(0, <[u8]>::len)) as i64;
            }
            std::hint::black_box(sum);
            let _ = record.value_bytes();
            if control {
                let _ = ControlRecord::parse(&record);
            }
        }
    }
});
