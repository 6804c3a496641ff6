//! A keyed function's timers: per clock, an ordered set of `(timestamp, key)`.
//!
//! With the state in memory, every timer is in memory. With the state on disk, the store's
//! file holds the timers (the changelog's own keys: tag 1 + clock + big-endian timestamp +
//! key) and memory only the earliest of them, read from the file as firing reaches them, as
//! Flink's RocksDB timer queue keeps a cached head:
//!
//! - `mem` holds every timer of the file up to `read` (the last file entry read), with the
//!   changes since the last flush applied, plus every timer set since the last flush.
//!   Past `read`, the file may hold timers that `mem` does not.
//! - The earliest timer is `mem`'s first one while it is not past `read`; otherwise the file
//!   is read on from `read` (up to `head` timers) first.
//! - A timer past `read` deleted since the last flush is in `gone` until the flush deletes it
//!   from the file, so a read of the file does not bring it back.
//! - After a flush the file holds every timer, and `mem` is cut back to its first `head`.
//!
//! The file orders timestamps by their bytes, which puts negative ones after the others: it
//! is read in two ranges (negative timestamps, then the rest) to follow the timers' order.

use std::collections::BTreeSet;
use std::rc::Rc;

use crate::disk_store::LocalStore;
use crate::error::{Error, Result};

use super::TimeDomain;

/// A timer: when, and for which key.
type Entry = (i64, Box<[u8]>);

/// A timer set (true) or gone (false): clock, timestamp, key.
pub(super) type TimerChange = (bool, TimeDomain, i64, Box<[u8]>);

/// Memory one timer takes: its key, the timestamp and box, and the tree's share (estimate).
fn entry_bytes(key: &[u8]) -> usize {
    key.len() + 48
}

/// The timers of a task, both clocks.
#[derive(Default)]
pub(super) struct Timers {
    event: TimerSet,
    processing: TimerSet,
    /// Set or gone since the last checkpoint, in order (logged or on-disk stores only).
    pub(super) changes: Option<Vec<TimerChange>>,
    /// What went wrong reading the file since the last call of `take_error`.
    error: Option<Error>,
}

impl Timers {
    fn set_of(&mut self, domain: TimeDomain) -> &mut TimerSet {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Keeps the timers in the file of `local` from now on (which holds them already), with
    /// about `head` of each clock in memory.
    pub(super) fn on_disk(&mut self, local: &Rc<LocalStore>, head: usize) {
        for (set, domain) in [
            (&mut self.event, TimeDomain::EventTime),
            (&mut self.processing, TimeDomain::ProcessingTime),
        ] {
            set.file = Some(TimerFile {
                local: local.clone(),
                domain,
                read: Read::Nothing,
                gone: BTreeSet::new(),
                head: head.max(1),
                key_buf: Vec::new(),
            });
        }
    }

    /// Adds a timer read from a changelog (timers in memory).
    pub(super) fn restore(&mut self, domain: TimeDomain, timestamp: i64, key: &[u8]) {
        self.set_of(domain).insert(timestamp, key);
    }

    pub(super) fn set(&mut self, domain: TimeDomain, timestamp: i64, key: &[u8]) {
        self.set_of(domain).insert(timestamp, key);
        if let Some(c) = &mut self.changes {
            c.push((true, domain, timestamp, Box::from(key)));
        }
    }

    pub(super) fn delete(&mut self, domain: TimeDomain, timestamp: i64, key: &[u8]) {
        match self.set_of(domain).remove(timestamp, key) {
            Ok(true) => {
                if let Some(c) = &mut self.changes {
                    c.push((false, domain, timestamp, Box::from(key)));
                }
            }
            Ok(false) => {}
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Removes and returns the earliest timer of `domain` if it is due at `until`.
    pub(super) fn pop_due(&mut self, domain: TimeDomain, until: i64) -> Result<Option<Entry>> {
        let set = self.set_of(domain);
        let due = set.first()?.is_some_and(|(t, _)| *t <= until);
        if !due {
            return Ok(None);
        }
        let (timestamp, key) = set.pop_first().expect("due");
        if let Some(c) = &mut self.changes {
            c.push((false, domain, timestamp, key.clone()));
        }
        Ok(Some((timestamp, key)))
    }

    /// The file took every change: memory keeps the earliest timers only.
    pub(super) fn flushed(&mut self) {
        self.event.flushed();
        self.processing.flushed();
        if let Some(c) = &mut self.changes {
            // A burst of changes leaves no large buffer behind.
            c.shrink_to(1024);
        }
    }

    pub(super) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Bytes the timers take in memory (estimate).
    pub(super) fn size_bytes(&self) -> usize {
        self.event.bytes + self.processing.bytes
    }

    /// Timers in memory (both clocks).
    #[cfg(test)]
    fn in_memory(&self) -> usize {
        self.event.mem.len() + self.processing.mem.len()
    }
}

/// The timers of one clock.
#[derive(Default)]
struct TimerSet {
    mem: BTreeSet<Entry>,
    /// What `mem` takes (`entry_bytes` each).
    bytes: usize,
    /// The timers' file, with the state on disk.
    file: Option<TimerFile>,
}

/// How far the file has been read.
#[derive(Debug, PartialEq)]
enum Read {
    Nothing,
    /// Up to and including this timer.
    UpTo(Entry),
    All,
}

impl Read {
    /// Whether the file may hold timers at `entry` that memory does not.
    fn before(&self, entry: &(i64, &[u8])) -> bool {
        match self {
            Read::Nothing => true,
            Read::UpTo((t, k)) => (*t, &**k) < *entry,
            Read::All => false,
        }
    }
}

struct TimerFile {
    local: Rc<LocalStore>,
    domain: TimeDomain,
    read: Read,
    /// Timers past `read` deleted since the last flush.
    gone: BTreeSet<Entry>,
    /// Timers kept in memory after a flush, and read from the file at once.
    head: usize,
    key_buf: Vec<u8>,
}

impl TimerFile {
    fn file_key(&mut self, timestamp: i64, key: &[u8]) -> &[u8] {
        super::state_key(&mut self.key_buf, 1, Some((self.domain, timestamp)), key);
        &self.key_buf
    }

    /// Reads up to `head` timers past `read` into `mem`, skipping the gone ones; returns
    /// the entries' bytes.
    fn read_on(&mut self, mem: &mut BTreeSet<Entry>) -> Result<usize> {
        let domain = u8::from(self.domain == TimeDomain::ProcessingTime);
        let prefix = [1, domain];
        let at = |first: u8| [1, domain, first];
        let read = match &self.read {
            Read::All => return Ok(0),
            Read::Nothing => None,
            Read::UpTo(entry) => Some(entry.clone()),
        };
        // From where reading stopped, in timer order: negative timestamps (first byte 0x80
        // to 0xff), then the others (0x00 to 0x7f).
        let negatives = (at(0x80).to_vec(), vec![1, domain + 1]);
        let others = (at(0x00).to_vec(), at(0x80).to_vec());
        let mut from = Vec::new();
        let ranges = match read {
            None => [Some(negatives), Some(others)],
            Some((t, k)) => {
                from = self.file_key(t, &k).to_vec();
                if t < 0 {
                    [Some((from.clone(), negatives.1)), Some(others)]
                } else {
                    [Some((from.clone(), others.1)), None]
                }
            }
        };
        let mut taken = 0usize;
        let mut bytes = 0usize;
        let mut last: Option<Entry> = None;
        let mut bad = None;
        for (start, end) in ranges.into_iter().flatten() {
            if taken >= self.head || bad.is_some() {
                break;
            }
            self.local.scan_range(&start, &end, |k, _| {
                if k == from.as_slice() {
                    // Read already (the range starts at the last timer read).
                    return true;
                }
                let Some(rest) = k.strip_prefix(&prefix[..]) else {
                    bad = Some("a timer key outside its range".to_owned());
                    return false;
                };
                let Some((ts, key)) = rest.split_first_chunk::<8>() else {
                    bad = Some("short timer key".to_owned());
                    return false;
                };
                let entry = (i64::from_be_bytes(*ts), Box::<[u8]>::from(key));
                if !self.gone.contains(&entry) && !mem.contains(&entry) {
                    bytes += entry_bytes(key);
                    mem.insert((entry.0, entry.1.clone()));
                }
                taken += 1;
                last = Some(entry);
                taken < self.head
            })?;
        }
        if let Some(message) = bad {
            return Err(Error::Io {
                context: format!("{:?}: a timer", self.local),
                source: std::io::Error::other(message),
            });
        }
        self.read = match last {
            Some(last) if taken >= self.head => Read::UpTo(last),
            _ => Read::All,
        };
        Ok(bytes)
    }
}

impl TimerSet {
    fn insert(&mut self, timestamp: i64, key: &[u8]) {
        let entry = (timestamp, Box::<[u8]>::from(key));
        if let Some(file) = &mut self.file {
            file.gone.remove(&entry);
        }
        if self.mem.insert(entry) {
            self.bytes += entry_bytes(key);
        }
    }

    /// Deletes a timer; whether there was one.
    fn remove(&mut self, timestamp: i64, key: &[u8]) -> Result<bool> {
        let entry = (timestamp, Box::<[u8]>::from(key));
        let mut found = self.mem.remove(&entry);
        if found {
            self.bytes -= entry_bytes(key);
        }
        if let Some(file) = &mut self.file
            && file.read.before(&(timestamp, key))
        {
            if !found && !file.gone.contains(&entry) {
                let file_key = file.file_key(timestamp, key).to_vec();
                found = file.local.get(&file_key, |_| ())?.is_some();
            }
            file.gone.insert(entry);
        }
        Ok(found)
    }

    /// The earliest timer, read from the file if memory may not hold it.
    fn first(&mut self) -> Result<Option<&Entry>> {
        if let Some(file) = &mut self.file {
            while file.read != Read::All
                && self
                    .mem
                    .first()
                    .is_none_or(|(t, k)| file.read.before(&(*t, &k[..])))
            {
                self.bytes += file.read_on(&mut self.mem)?;
            }
        }
        Ok(self.mem.first())
    }

    fn pop_first(&mut self) -> Option<Entry> {
        let entry = self.mem.pop_first()?;
        self.bytes -= entry_bytes(&entry.1);
        Some(entry)
    }

    fn flushed(&mut self) {
        let Some(file) = &mut self.file else {
            return;
        };
        file.gone.clear();
        if file.read == Read::Nothing {
            // Nothing was read: memory holds only what the file now has too.
            self.mem.clear();
            self.bytes = 0;
            return;
        }
        if self.mem.len() <= file.head {
            return;
        }
        // Keep the first `head`, and never past what was read (the file may hold timers
        // after that which memory does not).
        let kth = self.mem.iter().nth(file.head - 1).expect("longer").clone();
        let cut = match &file.read {
            Read::UpTo(read) if *read < kth => read.clone(),
            _ => kth,
        };
        let tail = self.mem.split_off(&cut);
        let mut tail = tail.into_iter();
        // `split_off` moves `cut` itself to the tail: it stays.
        if let Some(first) = tail.next() {
            if first == cut {
                self.mem.insert(first);
            } else {
                self.bytes -= entry_bytes(&first.1);
            }
        }
        for (_, key) in tail {
            self.bytes -= entry_bytes(&key);
        }
        file.read = Read::UpTo(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk_store::Batch;

    fn store() -> (tempfile::TempDir, Rc<LocalStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = LocalStore::open(dir.path(), 1 << 20, std::time::Duration::ZERO);
        let (local, _) = futures::executor::block_on(open).expect("open");
        (dir, local)
    }

    /// Writes the changes to the file as the disk store's flush does, then tells the timers.
    fn flush(timers: &mut Timers, local: &LocalStore) {
        let mut batch = Batch::default();
        let mut key = Vec::new();
        for (set, domain, ts, k) in timers.changes.as_mut().expect("kept").drain(..) {
            super::super::state_key(&mut key, 1, Some((domain, ts)), &k);
            batch.set(&key, set.then_some(&[][..]));
        }
        local.apply(&mut batch, false).expect("written");
        timers.flushed();
    }

    fn drain(timers: &mut Timers, domain: TimeDomain, until: i64) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        while let Some((t, k)) = timers.pop_due(domain, until).expect("read") {
            out.push((t, String::from_utf8(k.into_vec()).expect("utf-8")));
        }
        out
    }

    /// The same operations on timers in memory and on disk (with a head of 4) fire the same
    /// timers in the same order, negative timestamps included, and memory holds few.
    #[test]
    fn timers_on_disk_fire_as_in_memory_with_a_small_head() {
        let (_dir, local) = store();
        let mut disk = Timers {
            changes: Some(Vec::new()),
            ..Timers::default()
        };
        disk.on_disk(&local, 4);
        let mut memory = Timers::default();
        let key = |i: i64| format!("k{}", i % 7);
        let mut fired = (Vec::new(), Vec::new());
        for round in 0..20i64 {
            for i in 0..50i64 {
                let ts = (i * 37 + round * 11) % 400 - 100 + round * 20;
                for t in [&mut disk, &mut memory] {
                    t.set(TimeDomain::EventTime, ts, key(i).as_bytes());
                    if i % 5 == 0 {
                        t.delete(TimeDomain::EventTime, ts - 37, key(i - 1).as_bytes());
                    }
                    t.set(TimeDomain::ProcessingTime, 1_000 + ts, key(i).as_bytes());
                }
            }
            if round % 3 == 0 {
                flush(&mut disk, &local);
                assert!(disk.in_memory() <= 8, "{} in memory", disk.in_memory());
            }
            let until = round * 25 - 80;
            fired
                .0
                .extend(drain(&mut disk, TimeDomain::EventTime, until));
            fired
                .1
                .extend(drain(&mut memory, TimeDomain::EventTime, until));
            assert_eq!(fired.0, fired.1, "round {round}");
        }
        flush(&mut disk, &local);
        assert!(disk.take_error().is_none());
        for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            let left = drain(&mut disk, domain, i64::MAX);
            assert!(!left.is_empty());
            assert_eq!(left, drain(&mut memory, domain, i64::MAX), "{domain:?}");
        }
        assert!(
            fired.0.iter().any(|(t, _)| *t < 0),
            "negative timestamps fired"
        );
        assert_eq!(disk.size_bytes(), 0);
    }

    /// A timer only the file holds can be deleted, and is then neither fired nor read back
    /// before the flush deletes it from the file.
    #[test]
    fn a_timer_deleted_before_memory_reads_it_stays_deleted() {
        let (_dir, local) = store();
        let mut t = Timers {
            changes: Some(Vec::new()),
            ..Timers::default()
        };
        t.on_disk(&local, 2);
        for i in 0..10 {
            t.set(TimeDomain::EventTime, i, format!("k{i}").as_bytes());
        }
        flush(&mut t, &local);
        assert_eq!(t.in_memory(), 0, "nothing read yet: all in the file");
        assert!(drain(&mut t, TimeDomain::EventTime, -1).is_empty());
        assert_eq!(t.in_memory(), 2, "the head read");
        t.delete(TimeDomain::EventTime, 7, b"k7");
        assert_eq!(
            t.changes.as_ref().map(Vec::len),
            Some(1),
            "logged: the file had it"
        );
        t.delete(TimeDomain::EventTime, 7, b"k7");
        t.delete(TimeDomain::EventTime, 8, b"nope");
        assert_eq!(
            t.changes.as_ref().map(Vec::len),
            Some(1),
            "nothing more to delete"
        );
        let fired: Vec<i64> = drain(&mut t, TimeDomain::EventTime, 100)
            .into_iter()
            .map(|(ts, _)| ts)
            .collect();
        assert_eq!(fired, [0, 1, 2, 3, 4, 5, 6, 8, 9]);
    }
}
