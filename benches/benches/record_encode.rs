//! Record encode, side by side: flumen's `BatchBuilder` and kafka-protocol's
//! `RecordBatchEncoder`, building the same ~1 MiB of records into one batch (consecutive
//! offsets and sequences, so kafka-protocol also writes a single batch).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flumen_benches::record_data::samples;
use flumen_protocol::record::{BatchBuilder, Compression};
use kafka_protocol::records::{
    Compression as KpCompression, RecordBatchEncoder, RecordEncodeOptions,
};

#[path = "shared/kafka_protocol_records.rs"]
mod shared;
use shared::kafka_protocol_records;

const TOTAL: usize = 1 << 20;

fn record_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("record_encode");
    for (case, value_len) in [("100B", 100), ("1KiB", 1024)] {
        let samples = samples(value_len, TOTAL);
        let mut sized = BatchBuilder::new(Compression::None);
        for s in &samples {
            sized
                .append(s.timestamp, Some(&s.key), Some(&s.value), &[])
                .expect("append");
        }
        let size = sized.size_in_bytes();
        g.throughput(Throughput::Bytes(size as u64));

        g.bench_with_input(BenchmarkId::new("flumen", case), &samples, |b, samples| {
            b.iter(|| {
                let mut builder =
                    BatchBuilder::with_capacity(Compression::None, size).producer(1, 0, 0);
                for s in samples {
                    builder
                        .append(s.timestamp, Some(&s.key), Some(&s.value), &[])
                        .expect("append");
                }
                black_box(builder.seal().expect("seal"))
            })
        });

        let records = kafka_protocol_records(&samples);
        let options = RecordEncodeOptions {
            version: 2,
            compression: KpCompression::None,
        };
        g.bench_with_input(
            BenchmarkId::new("kafka_protocol", case),
            &records,
            |b, records| {
                b.iter(|| {
                    let mut buf = BytesMut::with_capacity(size + 64);
                    RecordBatchEncoder::encode(&mut buf, records, &options).expect("encode");
                    black_box(buf.freeze())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, record_encode);
criterion_main!(benches);
