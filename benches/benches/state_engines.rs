//! The embedded key-value engines the on-disk keyed store chose between, on its workload: a
//! store of 1 M keys of 16 bytes with 100-byte values (not compressible), both engines with
//! the same 32 MiB cache.
//!
//! - `put_10k_batch_into_1M`: one batch of 10 000 existing keys (rewritten with new values)
//!   in one write transaction, not synced: what the store's checkpoint flush or eviction
//!   does. For redb in key order (as the store writes) and, for comparison, in hash order.
//! - `get_1k_random_of_1M`: 1 000 point reads in random order, one read transaction each:
//!   the store's cache misses.
//!
//! Filling each store with the 1 M keys (batches of 10 000, then one sync) is timed once
//! and printed with the process's CPU time (fjall flushes and compacts on threads of its
//! own, which the wall time of a put does not show) and the size on disk.
//!
//! `cargo bench -p flumen-benches --bench state_engines`; the figures are in docs/DESIGN.md.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const KEYS: u64 = 1_000_000;
const BATCH: u64 = 10_000;
const READS: u64 = 1_000;
const CACHE: usize = 32 << 20;
const TABLE: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("state");

/// Key `i`: a scrambled 8-byte number (keys arrive in no order) and a fixed tail.
fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(i % KEYS).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..].copy_from_slice(b"user-key");
    k
}

/// 100 bytes from an xorshift sequence seeded by `i`.
fn value(i: u64) -> [u8; 100] {
    let mut v = [0u8; 100];
    let mut x = i.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// The keys of batch `n` (a rolling window over the 1 M), sorted when `sorted`.
fn batch_keys(n: u64, sorted: bool) -> Vec<(u64, [u8; 16])> {
    let start = (n * BATCH) % KEYS;
    let mut keys: Vec<(u64, [u8; 16])> = (start..start + BATCH).map(|i| (i, key(i))).collect();
    if sorted {
        keys.sort_unstable_by_key(|k| k.1);
    }
    keys
}

/// The order reads come in (a different scramble from the keys').
fn read_order(from: u64) -> impl Iterator<Item = u64> {
    (from..from + READS).map(|j| j.wrapping_mul(2_654_435_761) % KEYS)
}

fn redb_open(dir: &Path) -> redb::Database {
    redb::Database::builder()
        .set_cache_size(CACHE)
        .create(dir.join("state.redb"))
        .expect("redb opens")
}

fn redb_put(db: &redb::Database, n: u64, sorted: bool) {
    let mut tx = db.begin_write().expect("write");
    tx.set_durability(redb::Durability::Eventual);
    {
        let mut t = tx.open_table(TABLE).expect("table");
        for (i, k) in batch_keys(n, sorted) {
            t.insert(&k[..], &value(i + n)[..]).expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn redb_sync(db: &redb::Database) {
    let mut tx = db.begin_write().expect("write");
    tx.set_durability(redb::Durability::Immediate);
    tx.commit().expect("sync");
}

fn redb_reads(db: &redb::Database, from: u64) -> u64 {
    read_order(from)
        .map(|i| {
            let tx = db.begin_read().expect("read");
            let t = tx.open_table(TABLE).expect("table");
            t.get(&key(i)[..])
                .expect("get")
                .map_or(0, |v| v.value().len() as u64)
        })
        .sum()
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

fn fjall_put(ks: &fjall::Keyspace, p: &fjall::PartitionHandle, n: u64) {
    let mut batch = ks.batch();
    for (i, k) in batch_keys(n, false) {
        batch.insert(p, k, value(i + n));
    }
    batch.commit().expect("commit");
}

fn fjall_reads(p: &fjall::PartitionHandle, from: u64) -> u64 {
    read_order(from)
        .map(|i| p.get(key(i)).expect("get").map_or(0, |v| v.len() as u64))
        .sum()
}

/// CPU time of the whole process so far (every thread's, the engines' own included).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Prints what filling a store took: wall time, CPU time then and 5 s later (work an
/// engine's own threads finish afterwards), the size on disk.
fn report(engine: &str, wall: Duration, cpu_before: f64, dir: &Path) {
    let cpu = cpu_seconds() - cpu_before;
    std::thread::sleep(Duration::from_secs(5));
    eprintln!(
        "{engine}: 1 M keys in {:.1} s, {cpu:.1} s CPU ({:.1} s 5 s later), {} MB on disk",
        wall.as_secs_f64(),
        cpu_seconds() - cpu_before,
        dir_bytes(dir) >> 20
    );
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
    let redb_dir = tempfile::tempdir().expect("tempdir");
    let db = redb_open(redb_dir.path());
    let (t, cpu) = (Instant::now(), cpu_seconds());
    for n in 0..KEYS / BATCH {
        redb_put(&db, n, true);
    }
    redb_sync(&db);
    report("redb", t.elapsed(), cpu, redb_dir.path());
    let fjall_dir = tempfile::tempdir().expect("tempdir");
    let (ks, p) = fjall_open(fjall_dir.path());
    let (t, cpu) = (Instant::now(), cpu_seconds());
    for n in 0..KEYS / BATCH {
        fjall_put(&ks, &p, n);
    }
    ks.persist(fjall::PersistMode::SyncAll).expect("persist");
    report("fjall", t.elapsed(), cpu, fjall_dir.path());

    let mut g = c.benchmark_group("state_engines");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(BATCH));
    let mut n = 0;
    g.bench_function("redb/put_10k_batch_into_1M", |b| {
        b.iter(|| {
            n += 1;
            redb_put(&db, n, true)
        })
    });
    g.bench_function("redb/put_10k_batch_into_1M_hash_order", |b| {
        b.iter(|| {
            n += 1;
            redb_put(&db, n, false)
        })
    });
    g.bench_function("fjall/put_10k_batch_into_1M", |b| {
        b.iter(|| {
            n += 1;
            fjall_put(&ks, &p, n)
        })
    });
    g.throughput(Throughput::Elements(READS));
    let mut from = 0;
    g.bench_function("redb/get_1k_random_of_1M", |b| {
        b.iter(|| {
            from += READS;
            black_box(redb_reads(&db, from))
        })
    });
    g.bench_function("fjall/get_1k_random_of_1M", |b| {
        b.iter(|| {
            from += READS;
            black_box(fjall_reads(&p, from))
        })
    });
    g.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
