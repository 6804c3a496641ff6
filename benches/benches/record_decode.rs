//! Record decode, side by side: flumen's `RecordBatch` view, kafka-protocol's
//! `RecordBatchDecoder`, and memcpy of the same bytes (the physical limit).
//!
//! Each iteration takes a ~1 MiB buffer of batches (16 KiB producer batches), verifies every
//! CRC, and visits every record, touching its key and value. `codec_decompress` measures the
//! codec libraries alone on the same payloads, to bound the compressed paths' overhead.

use std::hint::black_box;
use std::io::Read as _;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flumen_benches::record_data::{blob, samples};
use flumen_protocol::record::{Compression, Decompressor, RecordBatch, RecordBatches};

#[path = "shared/decode_work.rs"]
mod decode_work;
use decode_work::{flumen_decode, kafka_protocol_decode};

const TOTAL: usize = 1 << 20;

fn cases() -> Vec<(&'static str, Bytes)> {
    let small = samples(100, TOTAL);
    let large = samples(1024, TOTAL);
    vec![
        ("100B", blob(&small, Compression::None)),
        ("1KiB", blob(&large, Compression::None)),
        ("100B_lz4", blob(&small, Compression::Lz4)),
        ("100B_zstd", blob(&small, Compression::Zstd)),
    ]
}

fn record_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("record_decode");
    for (case, blob) in cases() {
        g.throughput(Throughput::Bytes(blob.len() as u64));
        let mut scratch = Decompressor::new();
        // Both decoders must agree before they are timed.
        assert_eq!(
            flumen_decode(&blob, &mut scratch, true),
            kafka_protocol_decode(&blob),
            "{case}"
        );
        g.bench_with_input(BenchmarkId::new("flumen", case), &blob, |b, blob| {
            b.iter(|| flumen_decode(black_box(blob), &mut scratch, true))
        });
        g.bench_with_input(
            BenchmarkId::new("kafka_protocol", case),
            &blob,
            |b, blob| b.iter(|| kafka_protocol_decode(black_box(blob))),
        );
        let mut dst = vec![0u8; blob.len()];
        g.bench_with_input(BenchmarkId::new("memcpy", case), &blob, |b, blob| {
            b.iter(|| {
                dst.copy_from_slice(black_box(blob));
                black_box(&dst);
            })
        });
    }
    g.finish();
}

/// The codec libraries alone, on the same batch payloads, into a reused buffer (plus gzip,
/// flumen and flate2 side by side, to choose flate2's backend).
fn codec_decompress(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_decompress");
    let mut all = cases();
    let gzip = blob(&samples(100, TOTAL), Compression::Gzip);
    g.throughput(Throughput::Bytes(gzip.len() as u64));
    let mut scratch = Decompressor::new();
    g.bench_with_input(BenchmarkId::new("flumen", "100B_gzip"), &gzip, |b, blob| {
        b.iter(|| flumen_decode(black_box(blob), &mut scratch, true))
    });
    all.push(("100B_gzip", gzip));
    for (case, blob) in all {
        let batches: Vec<RecordBatch> = RecordBatches::new(blob.clone())
            .collect::<Result<_, _>>()
            .expect("batches");
        g.throughput(Throughput::Bytes(blob.len() as u64));
        let mut out = Vec::with_capacity(1 << 20);
        match batches[0].compression() {
            Compression::Lz4 => {
                g.bench_function(BenchmarkId::new("lz4_flex_frame", case), |b| {
                    b.iter(|| {
                        for batch in &batches {
                            out.clear();
                            lz4_flex::frame::FrameDecoder::new(batch.payload())
                                .read_to_end(&mut out)
                                .expect("lz4");
                            black_box(&out);
                        }
                    })
                });
            }
            Compression::Zstd => {
                let mut dctx = zstd::bulk::Decompressor::new().expect("zstd");
                g.bench_function(BenchmarkId::new("zstd", case), |b| {
                    b.iter(|| {
                        for batch in &batches {
                            out.clear();
                            dctx.decompress_to_buffer(batch.payload(), &mut out)
                                .expect("zstd");
                            black_box(&out);
                        }
                    })
                });
            }
            Compression::Gzip => {
                g.bench_function(BenchmarkId::new("flate2", case), |b| {
                    b.iter(|| {
                        for batch in &batches {
                            out.clear();
                            flate2::bufread::MultiGzDecoder::new(batch.payload())
                                .read_to_end(&mut out)
                                .expect("gzip");
                            black_box(&out);
                        }
                    })
                });
            }
            _ => {}
        }
    }
    g.finish();
}

criterion_group!(benches, record_decode, codec_decompress);
criterion_main!(benches);
