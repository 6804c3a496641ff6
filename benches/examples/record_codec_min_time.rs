//! Minimum-of-N timings of the record codec cases, beside the criterion benches.
//!
//! On a shared machine criterion's means absorb every preemption; the minimum over many short
//! repetitions approximates the uncontended time. Same data and work as `record_decode` /
//! `record_encode`. Run: `cargo run --release -p flumen-benches --example record_codec_min_time`.

use std::hint::black_box;
use std::io::Read as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use flumen_benches::record_data::{blob, samples};
use flumen_benches::timing::min_time;
use flumen_protocol::record::{
    BatchBuilder, Compression, Decompressor, RecordBatch, RecordBatches,
};
use kafka_protocol::records::{
    Compression as KpCompression, RecordBatchEncoder, RecordEncodeOptions,
};

#[path = "../benches/shared/kafka_protocol_records.rs"]
mod shared;
use shared::kafka_protocol_records;
#[path = "../benches/shared/decode_work.rs"]
mod decode_work;
use decode_work::{flumen_decode, kafka_protocol_decode};

const TOTAL: usize = 1 << 20;

/// The CRC check alone: every batch's `verify_crc`, nothing parsed (the floor for the
/// uncompressed cases).
fn crc_only(blob: &Bytes) {
    for batch in RecordBatches::new(blob.clone()) {
        batch.expect("batch").verify_crc().expect("crc");
    }
}

fn codec_only(batches: &[RecordBatch], out: &mut Vec<u8>, dctx: &mut zstd::bulk::Decompressor<'_>) {
    for batch in batches {
        out.clear();
        match batch.compression() {
            Compression::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(batch.payload())
                    .read_to_end(out)
                    .expect("lz4");
            }
            Compression::Zstd => {
                dctx.decompress_to_buffer(batch.payload(), out)
                    .expect("zstd");
            }
            _ => {}
        }
        black_box(&out);
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    println!(
        "decode (µs, min of N): case memcpy flumen flumen_no_crc crc_only kafka_protocol codec_only"
    );
    for (case, value_len, codec) in [
        ("100B", 100, Compression::None),
        ("1KiB", 1024, Compression::None),
        ("100B_lz4", 100, Compression::Lz4),
        ("100B_zstd", 100, Compression::Zstd),
    ] {
        let blob = blob(&samples(value_len, TOTAL), codec);
        let mut scratch = Decompressor::new();
        let mut dst = vec![0u8; blob.len()];
        let memcpy = min_time(3000, || {
            dst.copy_from_slice(black_box(&blob));
            black_box(&dst);
        });
        let flumen = min_time(3000, || {
            black_box(flumen_decode(&blob, &mut scratch, true));
        });
        let no_crc = min_time(3000, || {
            black_box(flumen_decode(&blob, &mut scratch, false));
        });
        let crc = min_time(3000, || crc_only(black_box(&blob)));
        let kp = min_time(300, || {
            black_box(kafka_protocol_decode(&blob));
        });
        let batches: Vec<RecordBatch> = RecordBatches::new(blob.clone())
            .collect::<Result<_, _>>()
            .expect("batches");
        let mut out = Vec::with_capacity(TOTAL);
        let mut dctx = zstd::bulk::Decompressor::new().expect("zstd");
        let codec_t = min_time(1000, || codec_only(&batches, &mut out, &mut dctx));
        // The floor to compare with: the codec for compressed cases, the CRC check otherwise.
        let (floor, floor_name) = if codec == Compression::None {
            (crc, "crc_only")
        } else {
            (codec_t, "codec")
        };
        println!(
            "{case:>10} {:8.1} {:8.1} {:8.1} {:8.1} {:8.1} {:8.1}   flumen: {:.1}x kafka_protocol, {:.2}x memcpy, {:.2}x {floor_name}",
            us(memcpy),
            us(flumen),
            us(no_crc),
            us(crc),
            us(kp),
            us(codec_t),
            kp.as_secs_f64() / flumen.as_secs_f64(),
            flumen.as_secs_f64() / memcpy.as_secs_f64(),
            flumen.as_secs_f64() / floor.as_secs_f64().max(1e-9),
        );
    }

    println!("encode (µs, min of N): case flumen kafka_protocol");
    for (case, value_len) in [("100B", 100usize), ("1KiB", 1024)] {
        let samples = samples(value_len, TOTAL);
        let flumen = min_time(1000, || {
            let mut b = BatchBuilder::with_capacity(Compression::None, 2 * TOTAL).producer(1, 0, 0);
            for s in &samples {
                b.append(s.timestamp, Some(&s.key), Some(&s.value), &[])
                    .expect("append");
            }
            black_box(b.seal().expect("seal"));
        });
        let records = kafka_protocol_records(&samples);
        let options = RecordEncodeOptions {
            version: 2,
            compression: KpCompression::None,
        };
        let kp = min_time(300, || {
            let mut buf = BytesMut::with_capacity(2 * TOTAL);
            RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
            black_box(buf.freeze());
        });
        println!(
            "{case:>10} {:8.1} {:8.1}   flumen: {:.2}x kafka_protocol ({:.1} ns/record)",
            us(flumen),
            us(kp),
            kp.as_secs_f64() / flumen.as_secs_f64(),
            flumen.as_nanos() as f64 / samples.len() as f64
        );
    }
}
