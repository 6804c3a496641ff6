//! Builds a batch from arbitrary records with an arbitrary codec, then reads it back: the view
//! must return exactly what was written.
#![no_main]

use flumen_protocol::record::{BatchBuilder, Compression, Decompressor, RecordBatch};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Rec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    codec: u8,
    base_offset: i64,
    producer: (i64, i16, i32),
    transactional: bool,
    records: Vec<Rec>,
}

fuzz_target!(|input: Input| {
    if input.records.is_empty() {
        return;
    }
    let codec = Compression::from_id(input.codec % 5).unwrap_or_default();
    let (pid, epoch, seq) = input.producer;
    let mut b = BatchBuilder::new(codec)
        .base_offset(input.base_offset)
        .producer(pid, epoch, seq)
        .transactional(input.transactional);
    for r in &input.records {
        let hs: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        let before = b.size_in_bytes();
        let predicted = b.record_size(r.timestamp, r.key.as_deref(), r.value.as_deref(), &hs);
        b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &hs)
            .expect("append");
        assert_eq!(b.size_in_bytes() - before, predicted, "record_size is exact");
    }
    let bytes = b.seal().expect("seal");
    let batch = RecordBatch::new(bytes).expect("view");
    batch.verify_crc().expect("crc");
    assert_eq!(batch.compression(), codec);
    assert_eq!(batch.base_offset(), input.base_offset);
    assert_eq!(batch.producer_id(), pid);
    assert_eq!(batch.producer_epoch(), epoch);
    assert_eq!(batch.base_sequence(), seq);
    assert_eq!(batch.is_transactional(), input.transactional);
    assert_eq!(batch.record_count() as usize, input.records.len());
    let mut scratch = Decompressor::new();
    let mut n = 0;
    for (i, rec) in batch.records(&mut scratch).expect("records").enumerate() {
        let rec = rec.expect("record");
        let want = &input.records[i];
        assert_eq!(rec.offset(), input.base_offset.wrapping_add(i as i64));
        assert_eq!(rec.timestamp(), want.timestamp);
        assert_eq!(rec.key(), want.key.as_deref());
        assert_eq!(rec.value(), want.value.as_deref());
        let hs: Vec<_> = rec.headers().collect();
        let want_hs: Vec<_> = want
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        assert_eq!(hs, want_hs);
        n += 1;
    }
    assert_eq!(n, input.records.len());
});
