//! CRC32C implementations on a 1 MiB buffer: the choice behind the record layer's checksum.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn crc(c: &mut Criterion) {
    let data: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    let mut g = c.benchmark_group("crc32c");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("crc32c/1MiB", |b| {
        b.iter(|| crc32c::crc32c(black_box(&data)))
    });
    g.bench_function("crc_fast/1MiB", |b| {
        b.iter(|| crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, black_box(&data)))
    });
    let small = &data[..16 * 1024];
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("crc32c/16KiB", |b| {
        b.iter(|| crc32c::crc32c(black_box(small)))
    });
    g.bench_function("crc_fast/16KiB", |b| {
        b.iter(|| crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, black_box(small)))
    });
    g.finish();
    assert_eq!(
        u64::from(crc32c::crc32c(&data)),
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &data),
        "both compute CRC32C"
    );
}

criterion_group!(benches, crc);
criterion_main!(benches);
