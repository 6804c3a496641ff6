//! The per-record work of the decode measurements, shared by the `record_decode` bench and the
//! `record_codec_min_time` / `record_verify_order` examples so that all of them time the same thing.

use bytes::Bytes;
use flumen_protocol::record::{Decompressor, RecordBatches};
use kafka_protocol::records::RecordBatchDecoder;

/// What every decode line does with a record: read both lengths and the last byte of each.
#[inline]
pub fn touch(key: Option<&[u8]>, value: Option<&[u8]>) -> u64 {
    let k = key.map_or(0, |k| k.len() as u64 + u64::from(k[k.len() - 1]));
    let v = value.map_or(0, |v| v.len() as u64 + u64::from(v[v.len() - 1]));
    k + v
}

/// Flumen's view over every batch of `blob` (checking each CRC when `crc`), touching every record.
pub fn flumen_decode(blob: &Bytes, scratch: &mut Decompressor, crc: bool) -> u64 {
    let mut acc = 0u64;
    for batch in RecordBatches::new(blob.clone()) {
        let batch = batch.expect("batch");
        if crc {
            batch.verify_crc().expect("crc");
        }
        for rec in batch.records(scratch).expect("records") {
            let rec = rec.expect("record");
            acc = acc.wrapping_add(touch(rec.key(), rec.value()));
        }
    }
    acc
}

/// kafka-protocol's decoder over `blob`, with the same per-record work.
pub fn kafka_protocol_decode(blob: &Bytes) -> u64 {
    let mut buf = blob.clone();
    let mut acc = 0u64;
    for set in RecordBatchDecoder::decode_all(&mut buf).expect("decode") {
        for rec in &set.records {
            acc = acc.wrapping_add(touch(rec.key.as_deref(), rec.value.as_deref()));
        }
    }
    acc
}
