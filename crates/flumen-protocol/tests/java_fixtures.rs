//! Batches written by the Java client (kafka-clients 4.1.1, `fixtures/gen/Gen.java`) decode to
//! exactly what the generator wrote: every offset, timestamp, key, value and header.

use bytes::Bytes;
use flumen_protocol::record::{
    Compression, ControlRecord, ControlRecordType, Decompressor, RecordBatch, RecordBatches,
    TimestampType,
};

const COUNT: i64 = 200;
const BASE_OFFSET: i64 = 1000;
const BASE_TS: i64 = 1_700_000_000_000;

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

// Mirrors of Gen.java's content functions.
fn timestamp(i: i64) -> i64 {
    BASE_TS + 7 * i - if i % 5 == 4 { 1000 } else { 0 }
}
fn key(i: i64) -> Option<Vec<u8>> {
    (i % 10 != 3).then(|| format!("key-{i}").into_bytes())
}
fn value(i: i64) -> Option<Vec<u8>> {
    (i % 17 != 5)
        .then(|| format!("value-{i}-{}", "abcdefghij".repeat((i % 13) as usize)).into_bytes())
}
fn headers(i: i64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    (0..i % 4)
        .map(|h| {
            let k = format!("h{}", h % 2).into_bytes();
            let v = (h != 2).then(|| format!("hv-{i}-{h}").into_bytes());
            (k, v)
        })
        .collect()
}

fn check_data_batch(name: &str, codec: Compression) -> RecordBatch {
    let blob = fixture(name);
    let mut batches = RecordBatches::new(blob.clone());
    let batch = batches.next().expect("one batch").expect("valid batch");
    assert!(batches.next().is_none(), "{name}: exactly one batch");
    assert_eq!(batches.partial_tail(), 0);
    batch.verify_crc().expect("Java CRC verifies");
    assert_eq!(batch.encoded_len(), blob.len());
    assert_eq!(batch.compression(), codec, "{name}");
    assert_eq!(batch.magic(), 2);
    assert_eq!(batch.base_offset(), BASE_OFFSET);
    assert_eq!(batch.record_count() as i64, COUNT);
    assert_eq!(batch.last_offset_delta() as i64, COUNT - 1);
    assert_eq!(batch.next_offset(), BASE_OFFSET + COUNT);
    assert_eq!(batch.base_timestamp(), timestamp(0));
    assert_eq!(
        batch.max_timestamp(),
        (0..COUNT).map(timestamp).max().unwrap()
    );
    assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
    assert!(!batch.is_control());

    let mut scratch = Decompressor::new();
    let mut n = 0;
    for (i, rec) in (0..).zip(batch.records(&mut scratch).expect("records")) {
        let rec = rec.unwrap_or_else(|e| panic!("{name} record {i}: {e}"));
        assert_eq!(rec.offset(), BASE_OFFSET + i, "{name} offset");
        assert_eq!(rec.timestamp(), timestamp(i), "{name} timestamp {i}");
        assert_eq!(rec.key().map(<[u8]>::to_vec), key(i), "{name} key {i}");
        assert_eq!(
            rec.value().map(<[u8]>::to_vec),
            value(i),
            "{name} value {i}"
        );
        let hs: Vec<_> = rec
            .headers()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(hs, headers(i), "{name} headers {i}");
        assert_eq!(rec.key_bytes().map(|b| b.to_vec()), key(i));
        n += 1;
    }
    assert_eq!(n, COUNT, "{name}: all records");
    batch
}

#[test]
fn java_uncompressed_batch_decodes_exactly() {
    let batch = check_data_batch("java_none.bin", Compression::None);
    assert_eq!(batch.producer_id(), -1);
    assert_eq!(batch.base_sequence(), -1);
    assert!(!batch.is_transactional());
}

#[test]
fn java_gzip_batch_decodes_exactly() {
    check_data_batch("java_gzip.bin", Compression::Gzip);
}

#[test]
fn java_snappy_xerial_batch_decodes_exactly() {
    let batch = check_data_batch("java_snappy.bin", Compression::Snappy);
    assert!(
        batch.payload().starts_with(b"\x82SNAPPY\x00"),
        "Java frames snappy the xerial way"
    );
}

#[test]
fn java_lz4_frame_batch_decodes_exactly() {
    check_data_batch("java_lz4.bin", Compression::Lz4);
}

#[test]
fn java_zstd_batch_decodes_exactly() {
    check_data_batch("java_zstd.bin", Compression::Zstd);
}

#[test]
fn java_transactional_batch_carries_producer_fields() {
    let batch = check_data_batch("java_transactional_zstd.bin", Compression::Zstd);
    assert!(batch.is_transactional());
    assert_eq!(batch.producer_id(), 4242);
    assert_eq!(batch.producer_epoch(), 7);
    assert_eq!(batch.base_sequence(), 100);
    assert_eq!(batch.partition_leader_epoch(), 3);
}

fn check_control(name: &str, kind: ControlRecordType, epoch: i32) {
    let batch = RecordBatch::new(fixture(name)).expect("valid batch");
    batch.verify_crc().expect("CRC");
    assert!(batch.is_control());
    assert!(batch.is_transactional());
    assert_eq!(batch.producer_id(), 4242);
    assert_eq!(batch.producer_epoch(), 7);
    assert_eq!(batch.base_offset(), BASE_OFFSET + COUNT);
    let mut scratch = Decompressor::new();
    let records: Vec<_> = batch
        .records(&mut scratch)
        .expect("records")
        .collect::<Result<_, _>>()
        .expect("valid records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].timestamp(), BASE_TS + 5000);
    let control = ControlRecord::parse(&records[0]).expect("control record");
    assert_eq!(control.kind, kind);
    assert_eq!(control.key_version, 0);
    let marker = control.marker.expect("commit/abort carry a marker");
    assert_eq!(marker.coordinator_epoch, epoch);
    assert_eq!(marker.version, 0);
}

#[test]
fn java_commit_marker_decodes() {
    check_control("java_control_commit.bin", ControlRecordType::Commit, 17);
}

#[test]
fn java_abort_marker_decodes() {
    check_control("java_control_abort.bin", ControlRecordType::Abort, 18);
}

#[test]
fn fetch_blob_of_java_batches_with_cut_tail_yields_complete_batches_only() {
    let names = [
        "java_none.bin",
        "java_gzip.bin",
        "java_snappy.bin",
        "java_lz4.bin",
        "java_zstd.bin",
        "java_control_commit.bin",
    ];
    let mut blob = Vec::new();
    for n in names {
        blob.extend_from_slice(&fixture(n));
    }
    let full = blob.len();
    // A broker cuts the last batch anywhere; every cut must give the first five batches and no error.
    for cut in [1usize, 11, 12, 16, 17, 60, 61, 77] {
        let blob = Bytes::from(blob[..full - cut].to_vec());
        let mut it = RecordBatches::new(blob);
        let got: Vec<_> = it
            .by_ref()
            .collect::<Result<_, _>>()
            .expect("no error on a cut tail");
        assert_eq!(got.len(), 5, "cut {cut}");
        assert_eq!(it.partial_tail(), 78 - cut, "cut {cut}");
        for b in &got {
            b.verify_crc().expect("crc");
        }
    }
}
