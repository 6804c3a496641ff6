//! Tests of the on-disk store: cache eviction and reload, remove, expire, timers, what a
//! flush logs, and the checkpoint file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures::executor::block_on;

use super::*;
use crate::operator::{CapturedRecord, Output, TOMBSTONE_HEADER};

#[derive(Default, Debug, PartialEq)]
struct Count(u64);

impl StateSize for Count {}

struct CountForm;

impl StateForm<Count> for CountForm {
    fn save(&self, state: &Count, out: &mut Vec<u8>) -> bool {
        state.0.encode(out);
        true
    }

    fn load(&self, input: &mut &[u8]) -> Option<Count> {
        u64::decode(input).map(Count)
    }
}

fn open(dir: &Path) -> (Rc<LocalStore>, Option<i64>) {
    block_on(LocalStore::open(dir, 1 << 20, Duration::ZERO)).expect("opens")
}

fn store(local: &Rc<LocalStore>, cache: usize, logging: bool) -> DiskStore<Count> {
    DiskStore::new(local.clone(), Box::new(CountForm), cache, logging).expect("store")
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn changelog() -> (Changelog, Rc<RefCell<Vec<CapturedRecord>>>) {
    let records = Rc::new(RefCell::new(Vec::new()));
    let log = Changelog::new(
        "app-process-0-changelog".into(),
        0,
        Output::Memory(records.clone()),
    );
    (log, records)
}

/// The latest changelog value per key (`None`: a tombstone).
fn latest(records: &[CapturedRecord]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    records
        .iter()
        .map(|r| {
            let tombstone = r.headers.iter().any(|(k, _)| k == TOMBSTONE_HEADER);
            (
                r.key.clone().expect("keyed"),
                (!tombstone).then(|| r.value.clone()),
            )
        })
        .collect()
}

#[test]
fn states_evicted_from_a_small_cache_reload_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, checkpoint) = open(dir.path());
    assert_eq!(checkpoint, None);
    let mut s = store(&local, 4096, false);
    for round in 0..3 {
        for i in 0..5_000 {
            s.entry(&key(i), round).0 += u64::from(i);
        }
    }
    assert!(s.size_bytes() < 8192, "cache {} bytes", s.size_bytes());
    assert!(s.map.cache.len() < 5_000);
    assert_eq!(s.len(), 5_000);
    for i in 0..5_000 {
        assert_eq!(s.get_mut(&key(i)).map(|c| c.0), Some(3 * u64::from(i)));
        assert_eq!(s.written(&key(i)), Some(2));
    }
    assert!(s.get_mut(b"absent").is_none());
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    assert!(s.take_error().is_none());
    drop(s);
    // A new store over the same file sees the same states.
    let mut s = store(&local, 4096, false);
    assert_eq!(s.len(), 5_000);
    assert_eq!(s.get_mut(&key(4_999)).map(|c| c.0), Some(3 * 4_999));
}

#[test]
fn a_removed_key_stays_gone_before_and_after_a_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, _) = open(dir.path());
    let mut s = store(&local, 1 << 20, false);
    s.entry(b"a", 1).0 = 7;
    s.entry(b"b", 1).0 = 8;
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    // Only the file holds them now.
    s.map.cache.clear();
    s.map.cache_bytes = 0;
    assert_eq!(s.remove(b"a"), Some(Count(7)));
    assert_eq!(s.remove(b"a"), None);
    assert!(s.get_mut(b"a").is_none());
    assert_eq!(s.len(), 1);
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    assert!(s.get_mut(b"a").is_none());
    assert_eq!(local.get(b"\0a", |_| ()).expect("read"), None);
    // Created again: starts from the default.
    assert_eq!(s.entry(b"a", 2).0, 0);
    assert_eq!(s.len(), 2);
}

#[test]
fn expire_drops_states_that_only_the_file_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, _) = open(dir.path());
    let mut s = store(&local, 2048, false);
    for i in 0..1_000 {
        // Even keys written at 100, odd ones at 5 000.
        s.entry(&key(i), if i % 2 == 0 { 100 } else { 5_000 }).0 = 1;
    }
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    assert_eq!(s.expire(1_000), 500);
    assert_eq!(s.len(), 500);
    assert!(s.get_mut(&key(0)).is_none());
    assert!(s.get_mut(&key(1)).is_some());
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    let mut on_file = 0;
    local.scan(0, |_, _| on_file += 1).expect("scan");
    assert_eq!(on_file, 500);
    // The file is scanned again only once `before` moved on by SWEEP_MS.
    assert_eq!(s.expire(1_001), 0);
}

#[test]
fn a_flush_logs_evicted_states_before_newer_ones_and_keeps_the_file_equal_to_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, _) = open(dir.path());
    let mut s = store(&local, 2048, true);
    let (mut log, records) = changelog();
    for round in 1..=2 {
        for i in 0..2_000 {
            s.entry(&key(i), 0).0 = round;
        }
    }
    s.remove(&key(3));
    let mut timers = vec![
        (true, TimeDomain::EventTime, 42, Box::from(&b"t"[..])),
        (true, TimeDomain::ProcessingTime, 43, Box::from(&b"t"[..])),
        (false, TimeDomain::ProcessingTime, 43, Box::from(&b"t"[..])),
    ];
    block_on(s.flush(Some(&mut log), &mut timers)).expect("flush");
    let logged = latest(&records.borrow());
    let mut file = BTreeMap::new();
    local
        .scan(0, |k, v| {
            file.insert(k.to_vec(), Some(v.to_vec()));
        })
        .expect("scan");
    local
        .scan(1, |k, v| {
            file.insert(k.to_vec(), Some(v.to_vec()));
        })
        .expect("scan");
    let live: BTreeMap<_, _> = logged
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        live, file,
        "the file holds what the changelog's latest values say"
    );
    assert_eq!(file.len(), 2_000 - 1 + 1);
    let mut two = Vec::new();
    0i64.encode(&mut two);
    2u64.encode(&mut two);
    assert_eq!(logged[&[b"\0".as_slice(), &key(7)].concat()], Some(two));
    assert_eq!(logged[&[b"\0".as_slice(), &key(3)].concat()], None);
    // Nothing changed: the next flush logs nothing.
    let n = records.borrow().len();
    block_on(s.flush(Some(&mut log), &mut Vec::new())).expect("flush");
    assert_eq!(records.borrow().len(), n);
}

#[test]
fn a_checkpoint_round_trips_and_a_damaged_one_reads_as_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, checkpoint) = open(dir.path());
    assert_eq!(checkpoint, None);
    local.set_next(1234);
    local.write_checkpoint().expect("written");
    assert_eq!(read_checkpoint(dir.path()), Some(1234));
    drop(local);
    let (local, checkpoint) = open(dir.path());
    assert_eq!(checkpoint, Some(1234));
    local.delete_checkpoint().expect("deleted");
    assert_eq!(read_checkpoint(dir.path()), None);
    local
        .delete_checkpoint()
        .expect("deleting a missing one is fine");
    for damaged in [
        "",
        "1234\n",
        "flumen-state-checkpoint 1\n",
        "flumen-state-checkpoint 1\nabc\n",
        "flumen-state-checkpoint 1\n-5\n",
        "flumen-state-checkpoint 1\n12\n13\n",
        "flumen-state-checkpoint 2\n12\n",
    ] {
        std::fs::write(dir.path().join(CHECKPOINT), damaged).expect("write");
        assert_eq!(read_checkpoint(dir.path()), None, "{damaged:?}");
    }
}

#[test]
fn clear_empties_the_file_and_deletes_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, _) = open(dir.path());
    let mut s = store(&local, 1 << 20, false);
    s.entry(b"a", 1).0 = 1;
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    local.write_checkpoint().expect("written");
    local.clear().expect("cleared");
    assert_eq!(local.entries().expect("entries"), 0);
    assert_eq!(read_checkpoint(dir.path()), None);
}

#[test]
fn an_unreadable_file_is_started_anew() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("state.redb"), b"not a redb file at all").expect("write");
    std::fs::write(
        dir.path().join(CHECKPOINT),
        format!("{CHECKPOINT_HEADER}\n7\n"),
    )
    .expect("write");
    let (local, checkpoint) = open(dir.path());
    assert_eq!(checkpoint, None, "a checkpoint of a lost file is no use");
    assert_eq!(local.entries().expect("entries"), 0);
}

#[test]
fn the_first_write_after_a_checkpoint_deletes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, _) = open(dir.path());
    let mut s = store(&local, 1 << 20, false);
    s.entry(b"a", 1).0 = 1;
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    local.set_next(10);
    local.write_checkpoint().expect("written");
    // A flush with nothing to write keeps it.
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    assert_eq!(read_checkpoint(dir.path()), Some(10));
    s.entry(b"a", 2).0 = 2;
    block_on(s.flush(None, &mut Vec::new())).expect("flush");
    assert_eq!(
        read_checkpoint(dir.path()),
        None,
        "the file is ahead of offset 10"
    );
    local.write_checkpoint().expect("written");
    assert_eq!(read_checkpoint(dir.path()), Some(10));
}

#[test]
fn a_batch_is_written_in_key_order_keeping_each_keys_own_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, _) = open(dir.path());
    let mut batch = Batch::default();
    batch.put(b"b", b"1");
    batch.put(b"a", b"1");
    batch.delete(b"b");
    batch.put(b"c", b"1");
    batch.delete(b"c");
    batch.put(b"c", b"2");
    local.apply(&mut batch, false).expect("applied");
    let mut file = Vec::new();
    local
        .scan(b'a', |k, v| file.push((k.to_vec(), v.to_vec())))
        .expect("scan");
    assert_eq!(file, [(b"a".to_vec(), b"1".to_vec())]);
    local
        .scan(b'c', |k, v| file.push((k.to_vec(), v.to_vec())))
        .expect("scan");
    assert_eq!(file[1], (b"c".to_vec(), b"2".to_vec()));
    assert_eq!(local.entries().expect("entries"), 2);
}

/// The file's entries, in key order.
fn file_entries(local: &LocalStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    local
        .scan_range(&[], &[0xff], |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("scan");
    out
}

#[test]
fn a_standby_copy_in_the_file_is_read_by_the_task_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut copy, from) = FileCopy::open(dir.path(), 1 << 20, |_| true)
        .expect("opens")
        .expect("not locked");
    assert_eq!(from, 0, "no checkpoint: from the start");
    copy.apply(b"a", Some(b"1")).expect("put");
    copy.apply(b"b", Some(b"1")).expect("put");
    copy.flush(false).expect("flush");
    copy.apply(b"a", None).expect("delete");
    copy.apply(b"b", Some(b"2")).expect("put");
    // Held by the copy: a task's open waits (here: gives up at once).
    assert!(block_on(LocalStore::open(dir.path(), 1 << 20, Duration::ZERO)).is_err());
    assert_eq!(
        read_checkpoint(dir.path()),
        None,
        "no checkpoint while copying"
    );
    copy.close(42).expect("closed");
    let (local, checkpoint) = open(dir.path());
    assert_eq!(checkpoint, Some(42));
    assert_eq!(file_entries(&local), [(b"b".to_vec(), b"2".to_vec())]);
}

#[test]
fn a_standby_copy_goes_on_from_a_valid_checkpoint_and_empties_the_file_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, _) = open(dir.path());
    let mut batch = Batch::default();
    batch.put(b"k", b"v");
    local.apply(&mut batch, false).expect("applied");
    local.set_next(7);
    local.write_checkpoint().expect("written");
    drop(local);
    let (copy, from) = FileCopy::open(dir.path(), 1 << 20, |c| c == 7)
        .expect("opens")
        .expect("not locked");
    assert_eq!(from, 7);
    assert_eq!(
        read_checkpoint(dir.path()),
        None,
        "the copy moves past the checkpoint"
    );
    copy.close(9).expect("closed");
    // A checkpoint outside the changelog (say, below its first offset): emptied.
    let (copy, from) = FileCopy::open(dir.path(), 1 << 20, |c| c < 9)
        .expect("opens")
        .expect("not locked");
    assert_eq!(from, 0);
    drop(copy);
    let (local, checkpoint) = open(dir.path());
    assert_eq!(
        checkpoint, None,
        "a copy dropped without closing leaves none"
    );
    assert!(file_entries(&local).is_empty());
    // Held by the task: no copy.
    assert!(
        FileCopy::open(dir.path(), 1 << 20, |_| true)
            .expect("opens")
            .is_none()
    );
}
