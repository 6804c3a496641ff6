//! `DueIndex`: when to look at a key again (a session's end, a join buffer's expiry), kept in
//! the task's store file under a tag of its own and never logged, with the earliest entries
//! in memory.
//!
//! Entries are `(at, aux, key)`, ordered as tuples; the operator keeps the index lazy (an entry
//! whose key moved on is skipped when it comes up), so entries are only added and popped.
//!
//! - `added` holds the entries added since the last flush, which the file does not have.
//! - `mem` holds every entry of the file up to `read` (the last one read) not popped yet:
//!   every other entry of the file comes after all of `mem`.
//! - The earliest entry is the smaller of `mem`'s first and `added`'s first, once `mem` is
//!   not empty or the file is read to its end; an empty `mem` reads on (up to `head` entries).
//! - A flush writes `added` and deletes what was popped from `mem`; `added` entries up to
//!   `read` join `mem`, the others stay in the file only, and `mem` is cut back to `head`.
//!
//! The file key is the tag, then `at` and `aux` as big-endian with the sign bit flipped (so
//! byte order is numeric order), then the key. The index is derived from the store's values:
//! [`DueIndex::write_now`] writes an entry for each of them when a task starts (a restore
//! brings values, not index entries); entries left from before are harmless, being lazy.

use std::collections::BTreeSet;
use std::rc::Rc;

use super::{Batch, LocalStore, RESTORE_BATCH_BYTES};
use crate::error::{Error, Result};

/// When, a second number (a session's end, a join side), and the key.
pub(crate) type DueEntry = (i64, i64, Box<[u8]>);

/// Memory one entry takes (estimate): the key, the two numbers and box, the tree's share.
fn entry_bytes(key: &[u8]) -> usize {
    key.len() + 56
}

fn ordered(n: i64) -> [u8; 8] {
    ((n as u64) ^ (1 << 63)).to_be_bytes()
}

fn number(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

fn file_key(buf: &mut Vec<u8>, tag: u8, (at, aux, key): (i64, i64, &[u8])) {
    buf.clear();
    buf.push(tag);
    buf.extend_from_slice(&ordered(at));
    buf.extend_from_slice(&ordered(aux));
    buf.extend_from_slice(key);
}

/// How far the file has been read.
#[derive(Debug, PartialEq)]
enum Read {
    Nothing,
    UpTo(Vec<u8>),
    All,
}

/// The due index of one operator in its task's store file.
pub(crate) struct DueIndex {
    local: Rc<LocalStore>,
    tag: u8,
    mem: BTreeSet<DueEntry>,
    added: BTreeSet<DueEntry>,
    /// Popped from `mem`: deleted from the file at the next flush.
    popped: Vec<DueEntry>,
    /// The file key of the last entry read.
    read: Read,
    head: usize,
    /// What `mem` and `added` take (`entry_bytes` each).
    bytes: usize,
    key_buf: Vec<u8>,
}

impl std::fmt::Debug for DueIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueIndex")
            .field("tag", &self.tag)
            .field("mem", &self.mem.len())
            .field("added", &self.added.len())
            .finish()
    }
}

impl DueIndex {
    /// The index under `tag` in the file of `local`, with about `head` entries in memory
    /// after each flush. Nothing is read until an entry is asked for.
    pub(crate) fn new(local: Rc<LocalStore>, tag: u8, head: usize) -> Self {
        DueIndex {
            local,
            tag,
            mem: BTreeSet::new(),
            added: BTreeSet::new(),
            popped: Vec::new(),
            read: Read::Nothing,
            head: head.max(1),
            bytes: 0,
            key_buf: Vec::new(),
        }
    }

    /// The number of entries for `cache_bytes` of cache: a quarter of it (64 to 65,536).
    pub(crate) fn head_for(cache_bytes: usize) -> usize {
        (cache_bytes / 4 / 64).clamp(64, 1 << 16)
    }

    fn file_key(&mut self, (at, aux, key): (i64, i64, &[u8])) -> &[u8] {
        file_key(&mut self.key_buf, self.tag, (at, aux, key));
        &self.key_buf
    }

    /// Writes an entry straight to the file through `batch` (a task's start: an entry for
    /// each value it holds, which a restore may have brought without its entry), applying
    /// it when it is large; [`DueIndex::write_end`] applies the rest.
    pub(crate) fn write_now(
        &mut self,
        batch: &mut Batch,
        at: i64,
        aux: i64,
        key: &[u8],
    ) -> Result<()> {
        file_key(&mut self.key_buf, self.tag, (at, aux, key));
        batch.put(&self.key_buf, &[]);
        if batch.len_bytes() >= RESTORE_BATCH_BYTES {
            self.local.apply(batch, false)?;
            batch.clear();
        }
        Ok(())
    }

    pub(crate) fn write_end(&mut self, batch: &mut Batch) -> Result<()> {
        self.local.apply(batch, false)?;
        batch.clear();
        Ok(())
    }

    pub(crate) fn push(&mut self, at: i64, aux: i64, key: &[u8]) {
        if self.added.insert((at, aux, Box::from(key))) {
            self.bytes += entry_bytes(key);
        }
    }

    /// The earliest entry's time.
    pub(crate) fn peek(&mut self) -> Result<Option<i64>> {
        while self.mem.is_empty() && self.read != Read::All {
            self.read_on()?;
        }
        let first = [self.mem.first(), self.added.first()]
            .into_iter()
            .flatten()
            .min();
        Ok(first.map(|e| e.0))
    }

    /// Removes and returns the earliest entry.
    pub(crate) fn pop(&mut self) -> Result<Option<DueEntry>> {
        if self.peek()?.is_none() {
            return Ok(None);
        }
        let from_file = match (self.mem.first(), self.added.first()) {
            (Some(m), Some(a)) => m <= a,
            (m, _) => m.is_some(),
        };
        let entry = if from_file {
            let e = self.mem.pop_first().expect("peeked");
            self.popped.push((e.0, e.1, e.2.clone()));
            e
        } else {
            self.added.pop_first().expect("peeked")
        };
        self.bytes -= entry_bytes(&entry.2);
        Ok(Some(entry))
    }

    /// Entries in memory.
    #[cfg(test)]
    pub(crate) fn in_memory(&self) -> usize {
        self.mem.len() + self.added.len()
    }

    /// Bytes the entries in memory take (estimate).
    pub(crate) fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Writes the added entries and deletes the popped ones in one transaction, then keeps
    /// the earliest `head` in memory.
    pub(crate) fn flush(&mut self) -> Result<()> {
        let mut batch = Batch::default();
        for (at, aux, key) in std::mem::take(&mut self.popped) {
            let k = self.file_key((at, aux, &key)).to_vec();
            batch.delete(&k);
        }
        let added = std::mem::take(&mut self.added);
        for (at, aux, key) in &added {
            let k = self.file_key((*at, *aux, key)).to_vec();
            batch.put(&k, &[]);
        }
        self.local.apply(&mut batch, false)?;
        for e in added {
            let keep = match &self.read {
                Read::Nothing => false,
                Read::All => true,
                Read::UpTo(read) => {
                    file_key(&mut self.key_buf, self.tag, (e.0, e.1, &e.2));
                    self.key_buf <= *read
                }
            };
            if keep {
                self.mem.insert(e);
            } else {
                self.bytes -= entry_bytes(&e.2);
            }
        }
        if self.mem.len() > self.head {
            let cut = self.mem.iter().nth(self.head - 1).expect("longer").clone();
            let tail = self.mem.split_off(&cut);
            for (i, e) in tail.into_iter().enumerate() {
                if i == 0 {
                    // `split_off` moves `cut` itself to the tail: it stays.
                    self.mem.insert(e);
                } else {
                    self.bytes -= entry_bytes(&e.2);
                }
            }
            self.read = Read::UpTo(self.file_key((cut.0, cut.1, &cut.2)).to_vec());
        }
        Ok(())
    }

    /// Reads up to `head` entries of the file past `read` into `mem`.
    fn read_on(&mut self) -> Result<()> {
        let from = match &self.read {
            Read::All => return Ok(()),
            Read::Nothing => vec![self.tag],
            Read::UpTo(k) => k.clone(),
        };
        let end = [self.tag + 1];
        let (head, tag) = (self.head, self.tag);
        let mut taken = 0usize;
        let mut last = None;
        let mut bad = false;
        let mut read = Vec::new();
        self.local.scan_range(&from, &end, |k, _| {
            if k == from.as_slice() {
                return true;
            }
            let parsed = k.strip_prefix(&[tag]).and_then(|rest| {
                let (at, rest) = rest.split_first_chunk::<8>()?;
                let (aux, key) = rest.split_first_chunk::<8>()?;
                Some((number(*at), number(*aux), Box::<[u8]>::from(key)))
            });
            let Some(entry) = parsed else {
                bad = true;
                return false;
            };
            read.push(entry);
            taken += 1;
            last = Some(k.to_vec());
            taken < head
        })?;
        if bad {
            return Err(Error::Io {
                context: format!("{:?}: a due entry", self.local),
                source: std::io::Error::other("short due entry key"),
            });
        }
        for e in read {
            self.bytes += entry_bytes(&e.2);
            self.mem.insert(e);
        }
        self.read = match last {
            Some(k) if taken >= head => Read::UpTo(k),
            _ => Read::All,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Rc<LocalStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = LocalStore::open(dir.path(), 1 << 20, std::time::Duration::ZERO);
        let (local, _) = futures::executor::block_on(open).expect("open");
        (dir, local)
    }

    /// Entries pushed, flushed and popped in any interleaving come out in order, as from a
    /// heap in memory, negative times included, with few in memory after each flush.
    #[test]
    fn entries_come_out_in_order_with_few_in_memory() {
        let (_dir, local) = store();
        let mut due = DueIndex::new(local, 9, 4);
        let mut heap = std::collections::BinaryHeap::new();
        let mut out = (Vec::new(), Vec::new());
        for round in 0..30i64 {
            for i in 0..40i64 {
                let at = (i * 53 + round * 17) % 500 - 150 + round * 10;
                let key = format!("k{}", i % 9);
                due.push(at, i % 2, key.as_bytes());
                heap.push(std::cmp::Reverse((
                    at,
                    i % 2,
                    Box::<[u8]>::from(key.as_bytes()),
                )));
            }
            if round % 4 == 1 {
                due.flush().expect("flush");
                assert!(due.in_memory() <= 4, "{} in memory", due.in_memory());
            }
            let until = round * 20 - 100;
            while due.peek().expect("peek").is_some_and(|at| at <= until) {
                out.0.push(due.pop().expect("pop").expect("entry"));
            }
            while heap.peek().is_some_and(|e| e.0.0 <= until) {
                out.1.push(heap.pop().expect("entry").0);
            }
            assert_eq!(out.0, out.1, "round {round}");
        }
        due.flush().expect("flush");
        while let Some(e) = due.pop().expect("pop") {
            out.0.push(e);
        }
        out.1.extend(std::iter::from_fn(|| heap.pop().map(|e| e.0)));
        assert_eq!(out.0, out.1);
        assert!(out.0.iter().any(|e| e.0 < 0));
        due.flush().expect("flush");
        assert_eq!(local_entries(&due), 0, "popped entries leave the file");
        assert_eq!(due.size_bytes(), 0);
    }

    fn local_entries(due: &DueIndex) -> u64 {
        due.local.entries().expect("entries")
    }

    #[test]
    fn entries_written_at_a_start_are_read_by_a_new_index() {
        let (_dir, local) = store();
        let mut due = DueIndex::new(local.clone(), 9, 2);
        let mut batch = Batch::default();
        for i in 0..5 {
            let key = format!("k{i}");
            due.write_now(&mut batch, 10 - i, 0, key.as_bytes())
                .expect("written");
        }
        due.write_end(&mut batch).expect("written");
        let mut again = DueIndex::new(local, 9, 2);
        let ats: Vec<i64> = std::iter::from_fn(|| again.pop().expect("pop"))
            .map(|e| e.0)
            .collect();
        assert_eq!(ats, [6, 7, 8, 9, 10]);
    }
}
