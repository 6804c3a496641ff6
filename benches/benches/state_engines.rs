//! The embedded key-value engines the on-disk keyed store chose between, on its workload:
//! 1 M keys of 16 bytes with 100-byte values written in batches of 10 000 (one write
//! transaction each, made durable, as a checkpoint is), then point reads of keys in random
//! order, 10 000 per read transaction. Both engines get the same 32 MiB cache.
//!
//! `cargo bench -p flumen-benches --bench state_engines`; the figures are in docs/DESIGN.md.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const KEYS: u64 = 1_000_000;
const BATCH: u64 = 10_000;
const READS: u64 = 100_000;
const CACHE: usize = 32 << 20;
const TABLE: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("state");

/// Key `i`: a scrambled 8-byte number (keys arrive in no order) and a fixed tail.
fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..].copy_from_slice(b"user-key");
    k
}

fn value(i: u64) -> [u8; 100] {
    let mut v = [b'v'; 100];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// The order reads come in (a different scramble from the keys').
fn read_order(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|j| j.wrapping_mul(2_654_435_761) % KEYS)
}

fn redb_open(dir: &Path) -> redb::Database {
    redb::Database::builder()
        .set_cache_size(CACHE)
        .create(dir.join("state.redb"))
        .expect("redb opens")
}

fn redb_load(db: &redb::Database) {
    for start in (0..KEYS).step_by(BATCH as usize) {
        let mut tx = db.begin_write().expect("write");
        tx.set_durability(redb::Durability::Immediate);
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for i in start..start + BATCH {
                t.insert(&key(i)[..], &value(i)[..]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
}

fn redb_reads(db: &redb::Database) -> u64 {
    let mut found = 0u64;
    let mut order = read_order(READS).peekable();
    while order.peek().is_some() {
        let tx = db.begin_read().expect("read");
        let t = tx.open_table(TABLE).expect("table");
        for i in order.by_ref().take(BATCH as usize) {
            found += t
                .get(&key(i)[..])
                .expect("get")
                .map_or(0, |v| v.value().len() as u64);
        }
    }
    found
}

fn fjall_open(dir: &Path) -> (fjall::Keyspace, fjall::PartitionHandle) {
    let ks = fjall::Config::new(dir)
        .cache_size(CACHE as u64)
        .open()
        .expect("fjall opens");
    let p = ks
        .open_partition("state", fjall::PartitionCreateOptions::default())
        .expect("partition");
    (ks, p)
}

fn fjall_load(ks: &fjall::Keyspace, p: &fjall::PartitionHandle) {
    for start in (0..KEYS).step_by(BATCH as usize) {
        let mut batch = ks.batch();
        for i in start..start + BATCH {
            batch.insert(p, key(i), value(i));
        }
        batch.commit().expect("commit");
        ks.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
}

fn fjall_reads(p: &fjall::PartitionHandle) -> u64 {
    read_order(READS)
        .map(|i| p.get(key(i)).expect("get").map_or(0, |v| v.len() as u64))
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let meta = e.metadata().expect("metadata");
        total += if meta.is_dir() {
            dir_bytes(&e.path())
        } else {
            meta.len()
        };
    }
    total
}

fn engines(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_engines");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5));

    g.throughput(Throughput::Elements(KEYS));
    g.bench_function("redb/put_1M_batches_10k", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = redb_open(dir.path());
                let t = Instant::now();
                redb_load(&db);
                spent += t.elapsed();
                drop(db);
                eprintln!("redb: {} bytes on disk", dir_bytes(dir.path()));
            }
            spent
        })
    });
    g.bench_function("fjall/put_1M_batches_10k", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let (ks, p) = fjall_open(dir.path());
                let t = Instant::now();
                fjall_load(&ks, &p);
                spent += t.elapsed();
                drop((p, ks));
                eprintln!("fjall: {} bytes on disk", dir_bytes(dir.path()));
            }
            spent
        })
    });

    g.throughput(Throughput::Elements(READS));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb_open(dir.path());
    redb_load(&db);
    g.bench_function("redb/get_100k_random_of_1M", |b| {
        b.iter(|| black_box(redb_reads(&db)))
    });
    drop(db);
    let dir = tempfile::tempdir().expect("tempdir");
    let (ks, p) = fjall_open(dir.path());
    fjall_load(&ks, &p);
    g.bench_function("fjall/get_100k_random_of_1M", |b| {
        b.iter(|| black_box(fjall_reads(&p)))
    });
    g.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
