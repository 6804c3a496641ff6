//! On-disk state (`state.store = disk`): a task's store in an embedded redb file, a bounded
//! cache of decoded values in front of it ([`DiskMap`]; the keyed function's [`DiskStore`]
//! and the window operator's disk state are built on it), and a local checkpoint of the
//! changelog offset up to which the file is complete.
//!
//! # Invariants
//! - The file mirrors the store's changelog partition: the same keys (a keyed function's:
//!   tag 0 + key -> last write time and state, tag 1 + domain + timestamp + key -> a timer; a
//!   window's: its changelog keys, see [`crate::window`]) with the same values, so a restore
//!   writes changelog records into it as they come, without decoding them, and never holds
//!   the state in memory.
//! - A cached entry is the truth for its key; a key in `removed` hides what the file holds
//!   for it until the next flush deletes it there. Dirty entries reach the file at each
//!   checkpoint, in one write transaction, or earlier when the cache is over its budget
//!   (then their keys are logged at the next checkpoint, read back from the file, before
//!   anything that changed after them).
//! - `<dir>/checkpoint` holds the changelog offset up to which the file is complete, and
//!   exists only while the file holds exactly that: it is written after a commit (once the
//!   file is synced), under exactly-once only at a clean stop; it is deleted when an
//!   exactly-once task starts and before the first write to the file after it (a flush, an
//!   eviction, a restore). So a crash, or a task dropped at a revocation without a commit,
//!   leaves no checkpoint, and the next start empties the file and restores in full. A
//!   missing or unreadable checkpoint, or one outside the changelog's offsets, means the
//!   same. The file is never ahead of a checkpoint that exists.

// redb's own errors are large; the engine turns them into `std::io::Error` at once.
#![allow(clippy::result_large_err)]

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use flumen_client::producer::DeliveryFuture;
use hashbrown::{HashMap, HashSet};

use crate::changelog::Changelog;
use crate::codec::StateCodec;
use crate::error::{Error, Result};
use crate::state::{KeyedStore, StateSize, TimeDomain, state_key};

const CHECKPOINT: &str = "checkpoint";
/// The store file's name in its directory.
const FILE: &str = "state.redb";
const CHECKPOINT_HEADER: &str = "flumen-state-checkpoint 1";
/// A batch written by a restore is committed once it holds this many bytes.
pub(crate) const RESTORE_BATCH_BYTES: usize = 4 << 20;
/// How often (in the TTL's processing time) `expire` scans the file, not only the cache.
const SWEEP_MS: i64 = 10_000;

/// Whether the store named `store` is kept in a store file under `state.store = disk`: a
/// keyed function's state, a window's, a two-stream join's buffers (every store there is).
pub(crate) fn kept_on_disk(store: &str) -> bool {
    ["process-", "window-", "join-"]
        .iter()
        .any(|kind| store.starts_with(kind))
}

/// Puts and deletes collected into one buffer, written in one transaction in key order
/// (measured: about 1.5x faster than redb inserts in hash order).
#[derive(Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    /// Where the key starts in `bytes`, its length, and the value's length (`None`: a
    /// delete; the value follows the key).
    items: Vec<(usize, usize, Option<usize>)>,
}

impl Batch {
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        self.items
            .push((self.bytes.len(), key.len(), Some(value.len())));
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.items.push((self.bytes.len(), key.len(), None));
        self.bytes.extend_from_slice(key);
    }

    /// Puts `value`, or deletes the key when there is none (a changelog record's tombstone).
    pub(crate) fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(v) => self.put(key, v),
            None => self.delete(key),
        }
    }

    /// Orders the items by key; the same key's items keep their order.
    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.items
            .sort_by(|a, b| bytes[a.0..a.0 + a.1].cmp(&bytes[b.0..b.0 + b.1]));
    }

    /// The items in the order they were put: each key, and its value (`None`: a delete).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.items.iter().map(|&(at, klen, vlen)| {
            let key = &self.bytes[at..at + klen];
            (
                key,
                vlen.map(|vlen| &self.bytes[at + klen..at + klen + vlen]),
            )
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }
}

/// One task's store file and checkpoint, shared by the store and the worker (which writes
/// the checkpoint after commits).
pub(crate) struct LocalStore {
    dir: PathBuf,
    db: engine::Db,
    /// The changelog offset the file is complete up to once the last flush is durable.
    next: Cell<i64>,
    /// The last changelog write of the last flush, until a checkpoint resolves its offset.
    last: RefCell<Option<DeliveryFuture>>,
    /// A checkpoint file exists (and the file has not been written since).
    checkpointed: Cell<bool>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl LocalStore {
    /// Opens (or creates) the store in `dir`, with `cache_bytes` of page cache, and reads its
    /// checkpoint (`None`: missing or unreadable). A file that does not open is replaced by
    /// an empty one. Fails only when the directory cannot be used or the file stays locked
    /// (by another task, still closing) for `wait`.
    pub(crate) async fn open(
        dir: &Path,
        cache_bytes: usize,
        wait: Duration,
    ) -> Result<(Rc<LocalStore>, Option<i64>)> {
        let deadline = tokio::time::Instant::now() + wait;
        let (db, checkpoint) = loop {
            match open_file(dir, cache_bytes)? {
                Ok(opened) => break opened,
                Err(engine::OpenError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(engine::OpenError::Locked(e) | engine::OpenError::Unreadable(e)) => {
                    return Err(Error::Io {
                        context: format!("opening {}", dir.join(FILE).display()),
                        source: e,
                    });
                }
                Err(engine::OpenError::NotBuilt) => {
                    return Err(Error::Config {
                        key: "state.store".to_owned(),
                        message: "this build has no disk store (flumen-runtime's `disk-store` \
                                  feature is off): use state.store=memory"
                            .to_owned(),
                    });
                }
            }
        };
        let local = LocalStore {
            dir: dir.to_owned(),
            db,
            next: Cell::new(checkpoint.unwrap_or(0)),
            last: RefCell::new(None),
            checkpointed: Cell::new(checkpoint.is_some()),
        };
        Ok((Rc::new(local), checkpoint))
    }

    fn context(&self, what: &str) -> String {
        format!("{what} the state store in {}", self.dir.display())
    }

    /// Empties the file and deletes the checkpoint.
    pub(crate) fn clear(&self) -> Result<()> {
        self.delete_checkpoint()?;
        self.db.clear().map_err(|e| Error::Io {
            context: self.context("emptying"),
            source: e,
        })
    }

    /// Writes `batch` in one transaction (`durable`: synced to the disk before it returns;
    /// otherwise queued for it, which also lets redb reuse freed pages: its `None`
    /// durability does not, and grew a file of 1 M keys to 4 GiB).
    pub(crate) fn apply(&self, batch: &mut Batch, durable: bool) -> Result<()> {
        if batch.items.is_empty() && !durable {
            return Ok(());
        }
        if !batch.items.is_empty() && self.checkpointed.get() {
            // The file moves past its checkpoint: until the next commit writes a new one, a
            // crash or a revocation must not leave an offset that the file is ahead of.
            self.delete_checkpoint()?;
        }
        batch.sort();
        self.db.write(batch.iter(), durable).map_err(|e| Error::Io {
            context: self.context("writing"),
            source: e,
        })
    }

    /// Calls `f` with the value of `key`, if the file has one.
    pub(crate) fn get<T>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        self.db.get(key, f).map_err(|e| Error::Io {
            context: self.context("reading"),
            source: e,
        })
    }

    /// Calls `f` with each entry whose key starts with `tag`, in key order.
    pub(crate) fn scan(&self, tag: u8, mut f: impl FnMut(&[u8], &[u8])) -> Result<()> {
        self.scan_range(&[tag], &[tag + 1], |k, v| {
            f(k, v);
            true
        })
    }

    /// Calls `f` with each entry whose key is in `from..to`, in key order, until it returns
    /// `false`.
    pub(crate) fn scan_range(
        &self,
        from: &[u8],
        to: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.db.scan(from, to, f).map_err(|e| Error::Io {
            context: self.context("reading"),
            source: e,
        })
    }

    /// Entries in the file (states and timers).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Result<u64> {
        self.db.len().map_err(|e| Error::Io {
            context: self.context("reading"),
            source: e,
        })
    }

    /// The file is complete up to changelog offset `next` (after a restore).
    pub(crate) fn set_next(&self, next: i64) {
        self.next.set(next);
    }

    /// The last changelog write of a flush: the checkpoint after the commit is past it.
    pub(crate) fn wrote(&self, last: Option<DeliveryFuture>) {
        if last.is_some() {
            *self.last.borrow_mut() = last;
        }
    }

    /// After a commit: makes the file durable and records the changelog offset it is
    /// complete up to. A last write whose offset is unknown deletes the checkpoint instead.
    pub(crate) fn write_checkpoint(&self) -> Result<()> {
        if self.checkpointed.get() && self.last.borrow().is_none() {
            // Nothing was written since the checkpoint: it stands.
            return Ok(());
        }
        let next = match self.last.borrow_mut().take() {
            None => self.next.get(),
            Some(d) => match d.try_result() {
                Some(Ok(m)) if m.offset >= 0 => m.offset + 1,
                _ => return self.delete_checkpoint(),
            },
        };
        self.next.set(next);
        self.apply(&mut Batch::default(), true)?;
        write_checkpoint_file(&self.dir, next)?;
        self.checkpointed.set(true);
        Ok(())
    }

    /// Deletes the checkpoint: until the next one, the file counts as incomplete.
    pub(crate) fn delete_checkpoint(&self) -> Result<()> {
        self.checkpointed.set(false);
        delete_checkpoint_file(&self.dir)
    }
}

/// Opens the store file in `dir` (creating the directory) and reads its checkpoint. A file
/// that is not a readable store is removed and started anew, without a checkpoint; the
/// engine's other refusals (held by another handle, no engine in this build) come back as
/// the inner error.
fn open_file(
    dir: &Path,
    cache_bytes: usize,
) -> Result<std::result::Result<(engine::Db, Option<i64>), engine::OpenError>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: format!("creating the state directory {}", dir.display()),
        source,
    })?;
    let file = dir.join(FILE);
    let mut checkpoint = read_checkpoint(dir);
    loop {
        match engine::Db::open(&file, cache_bytes.max(1 << 20)) {
            Ok(db) => return Ok(Ok((db, checkpoint))),
            Err(engine::OpenError::Unreadable(e)) => {
                tracing::warn!(file = %file.display(), error = %e, "state file unreadable: starting it anew");
                checkpoint = None;
                delete_checkpoint_file(dir)?;
                std::fs::remove_file(&file).map_err(|source| Error::Io {
                    context: format!("removing {}", file.display()),
                    source,
                })?;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// Deletes the checkpoint file in `dir`, if there is one.
fn delete_checkpoint_file(dir: &Path) -> Result<()> {
    let path = dir.join(CHECKPOINT);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            context: format!("deleting {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Records in `dir` that its store file is complete up to changelog offset `next` (written
/// to a temporary file and renamed, so a crash leaves the old checkpoint or the new one).
fn write_checkpoint_file(dir: &Path, next: i64) -> Result<()> {
    let path = dir.join(CHECKPOINT);
    let tmp = dir.join("checkpoint.tmp");
    let io = |source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    std::fs::write(&tmp, format!("{CHECKPOINT_HEADER}\n{next}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// A standby copy of a changelog partition kept in the store file of the task it stands by
/// for (the directory the task uses when it starts in this process), so that the copy takes
/// no memory beyond one batch. Records go into the file as they are read; [`FileCopy::close`]
/// writes the checkpoint, after which the task's [`LocalStore::open`] finds the file complete
/// up to there and reads only the tail. Unlike [`LocalStore`] it is `Send`: a worker keeps it
/// up to date, and whichever worker starts the task closes it.
pub(crate) struct FileCopy {
    dir: PathBuf,
    db: engine::Db,
    batch: Batch,
}

impl std::fmt::Debug for FileCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCopy").field("dir", &self.dir).finish()
    }
}

impl FileCopy {
    /// Opens the store file in `dir` for a standby copy and the offset it is complete up to:
    /// its checkpoint when `valid` accepts that offset (then the copy goes on from there),
    /// else the file is emptied (`0`). The checkpoint is deleted either way: the copy moves
    /// past it. `None` when the file is held by a task of this process that is still closing,
    /// or this build has no disk store.
    pub(crate) fn open(
        dir: &Path,
        cache_bytes: usize,
        valid: impl FnOnce(i64) -> bool,
    ) -> Result<Option<(FileCopy, i64)>> {
        let Ok((db, checkpoint)) = open_file(dir, cache_bytes)? else {
            return Ok(None);
        };
        let copy = FileCopy {
            dir: dir.to_owned(),
            db,
            batch: Batch::default(),
        };
        delete_checkpoint_file(dir)?;
        let from = match checkpoint.filter(|&c| valid(c)) {
            Some(c) => c,
            None => {
                copy.db.clear().map_err(|e| copy.io("emptying", e))?;
                0
            }
        };
        Ok(Some((copy, from)))
    }

    fn io(&self, what: &str, source: std::io::Error) -> Error {
        Error::Io {
            context: format!("{what} the standby copy in {}", self.dir.display()),
            source,
        }
    }

    /// Puts (`Some`) or deletes the changelog record's key; written once a batch is full.
    pub(crate) fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.batch.set(key, value);
        if self.batch.len_bytes() >= RESTORE_BATCH_BYTES {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Writes what is batched (`durable`: synced to the disk before it returns).
    pub(crate) fn flush(&mut self, durable: bool) -> Result<()> {
        if self.batch.is_empty() && !durable {
            return Ok(());
        }
        self.batch.sort();
        let written = self.db.write(self.batch.iter(), durable);
        self.batch.clear();
        written.map_err(|e| self.io("writing", e))
    }

    /// Makes the file durable, records that it is complete up to `next`, and closes it.
    pub(crate) fn close(mut self, next: i64) -> Result<()> {
        self.flush(true)?;
        write_checkpoint_file(&self.dir, next)
    }
}

/// The embedded engine under a [`LocalStore`]: redb, or, without the `disk-store` feature, a
/// stand-in that never opens (the static CLI binary leaves redb out: pipeline files have no
/// keyed step for it to serve).
mod engine {
    use std::path::Path;

    /// Why a file did not open.
    #[cfg_attr(not(feature = "disk-store"), allow(dead_code))]
    pub(super) enum OpenError {
        /// Another handle (a task still closing) holds it.
        Locked(std::io::Error),
        /// It is not a readable store: the caller starts it anew.
        Unreadable(std::io::Error),
        /// This build has no engine.
        #[cfg_attr(feature = "disk-store", allow(dead_code))]
        NotBuilt,
    }

    #[cfg(feature = "disk-store")]
    fn io(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
        std::io::Error::other(e)
    }

    #[cfg(feature = "disk-store")]
    pub(super) struct Db(redb::Database);

    #[cfg(feature = "disk-store")]
    const TABLE: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("changelog");

    #[cfg(feature = "disk-store")]
    impl Db {
        pub(super) fn open(file: &Path, cache_bytes: usize) -> Result<Db, OpenError> {
            match redb::Database::builder()
                .set_cache_size(cache_bytes)
                .create(file)
            {
                Ok(db) => Ok(Db(db)),
                Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::Locked(io(e))),
                Err(e) => Err(OpenError::Unreadable(io(e))),
            }
        }

        /// Deletes every entry.
        pub(super) fn clear(&self) -> std::io::Result<()> {
            let tx = self.0.begin_write().map_err(io)?;
            tx.delete_table(TABLE).map_err(io)?;
            tx.commit().map_err(io)
        }

        /// Puts (`Some` value) and deletes `items` in one transaction, synced to the disk
        /// before it returns when `durable` (otherwise redb's `Eventual`: queued for it,
        /// which also lets redb reuse freed pages; its `None` durability does not, and grew a
        /// file of 1 M keys to 4 GiB).
        pub(super) fn write<'b>(
            &self,
            items: impl Iterator<Item = (&'b [u8], Option<&'b [u8]>)>,
            durable: bool,
        ) -> std::io::Result<()> {
            let mut tx = self.0.begin_write().map_err(io)?;
            tx.set_durability(if durable {
                redb::Durability::Immediate
            } else {
                redb::Durability::Eventual
            });
            {
                let mut table = tx.open_table(TABLE).map_err(io)?;
                for (key, value) in items {
                    match value {
                        Some(value) => {
                            table.insert(key, value).map_err(io)?;
                        }
                        None => {
                            table.remove(key).map_err(io)?;
                        }
                    }
                }
            }
            tx.commit().map_err(io)
        }

        pub(super) fn get<T>(
            &self,
            key: &[u8],
            f: impl FnOnce(&[u8]) -> T,
        ) -> std::io::Result<Option<T>> {
            let tx = self.0.begin_read().map_err(io)?;
            let table = match tx.open_table(TABLE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(io(e)),
            };
            Ok(table.get(key).map_err(io)?.map(|v| f(v.value())))
        }

        pub(super) fn scan(
            &self,
            from: &[u8],
            to: &[u8],
            mut f: impl FnMut(&[u8], &[u8]) -> bool,
        ) -> std::io::Result<()> {
            let tx = self.0.begin_read().map_err(io)?;
            let table = match tx.open_table(TABLE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(io(e)),
            };
            for entry in table.range::<&[u8]>(from..to).map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                if !f(k.value(), v.value()) {
                    break;
                }
            }
            Ok(())
        }

        #[cfg(test)]
        pub(super) fn len(&self) -> std::io::Result<u64> {
            let tx = self.0.begin_read().map_err(io)?;
            match tx.open_table(TABLE) {
                Ok(t) => redb::ReadableTableMetadata::len(&t).map_err(io),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
                Err(e) => Err(io(e)),
            }
        }
    }

    /// No engine: never opens, so none of its methods is ever reached.
    #[cfg(not(feature = "disk-store"))]
    pub(super) enum Db {}

    #[cfg(not(feature = "disk-store"))]
    impl Db {
        pub(super) fn open(_: &Path, _: usize) -> Result<Db, OpenError> {
            Err(OpenError::NotBuilt)
        }

        pub(super) fn clear(&self) -> std::io::Result<()> {
            match *self {}
        }

        pub(super) fn write<'b>(
            &self,
            _: impl Iterator<Item = (&'b [u8], Option<&'b [u8]>)>,
            _: bool,
        ) -> std::io::Result<()> {
            match *self {}
        }

        pub(super) fn get<T>(
            &self,
            _: &[u8],
            _: impl FnOnce(&[u8]) -> T,
        ) -> std::io::Result<Option<T>> {
            match *self {}
        }

        pub(super) fn scan(
            &self,
            _: &[u8],
            _: &[u8],
            _: impl FnMut(&[u8], &[u8]) -> bool,
        ) -> std::io::Result<()> {
            match *self {}
        }

        #[cfg(test)]
        pub(super) fn len(&self) -> std::io::Result<u64> {
            match *self {}
        }
    }
}

/// The error of a store kept on disk whose values (`what`) have no binary form (`how`).
pub(crate) fn needs_binary_form(what: &str, how: &str) -> Error {
    Error::Config {
        key: "state.store".to_owned(),
        message: format!("the disk store needs {what} in a binary form ({how})"),
    }
}

/// The offset a checkpoint file in `dir` holds; `None` when it is missing or unreadable.
pub(crate) fn read_checkpoint(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != CHECKPOINT_HEADER {
        return None;
    }
    let offset: i64 = lines.next()?.parse().ok()?;
    (offset >= 0 && lines.next().is_none()).then_some(offset)
}

/// How a store's values are written and read (the keyed function's `save_state` /
/// `load_state`, a window's `Aggregate::save` / `load`).
pub(crate) trait StateForm<S> {
    fn save(&self, state: &S, out: &mut Vec<u8>) -> bool;
    fn load(&self, input: &mut &[u8]) -> Option<S>;
    /// Heap bytes `state` holds beyond its own size (for the cache's budget).
    fn heap_bytes(&self, _state: &S) -> usize {
        0
    }
}

struct Cached<V> {
    value: V,
    /// Changed since it was last written to the file.
    dirty: bool,
    /// Used since the last eviction pass (second chance).
    hot: bool,
    /// Its estimated bytes in the cache.
    size: usize,
}

/// A bounded write-back cache of decoded values over a task's store file: the values of file
/// keys (whole keys, tag included) that an operator keeps on disk. The keyed function's
/// [`DiskStore`] and the window operator's disk state are built on it.
pub(crate) struct DiskMap<V> {
    local: Rc<LocalStore>,
    form: Box<dyn StateForm<V>>,
    cache: HashMap<Box<[u8]>, Cached<V>>,
    cache_bytes: usize,
    max_bytes: usize,
    /// Keys removed since the last flush (they hide the file's entries).
    removed: HashSet<Box<[u8]>>,
    /// Keys written to the file by an eviction or a spill and not logged yet.
    spilled: HashSet<Box<[u8]>>,
    /// Whether a changelog follows the store (spilled keys are then remembered for it).
    logging: bool,
    value_buf: Vec<u8>,
    /// Writes not applied to the file yet (applied by `commit`).
    batch: Batch,
    /// What went wrong reading or writing the file: the operator fails with it.
    error: Option<Error>,
}

impl<V> std::fmt::Debug for DiskMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskMap")
            .field("local", &self.local)
            .field("cached", &self.cache.len())
            .finish()
    }
}

fn entry_size(key: &[u8], heap: usize) -> usize {
    std::mem::size_of::<(Box<[u8]>, Cached<()>)>() + 16 + key.len().next_multiple_of(16) + heap
}

impl<V> DiskMap<V> {
    /// The map over `local` with a cache of about `max_bytes`; `logging`: a changelog
    /// follows it.
    pub(crate) fn new(
        local: Rc<LocalStore>,
        form: Box<dyn StateForm<V>>,
        max_bytes: usize,
        logging: bool,
    ) -> Self {
        DiskMap {
            local,
            form,
            cache: HashMap::new(),
            cache_bytes: 0,
            max_bytes,
            removed: HashSet::new(),
            spilled: HashSet::new(),
            logging,
            value_buf: Vec::new(),
            batch: Batch::default(),
            error: None,
        }
    }

    pub(crate) fn local(&self) -> &LocalStore {
        &self.local
    }

    /// What went wrong with the file since the last call.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Keeps the first error: the operator fails with it at its next record or checkpoint.
    pub(crate) fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    /// Bytes the cache holds (an estimate).
    pub(crate) fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// The value of `key` in the file (not in the cache).
    fn load(&mut self, key: &[u8]) -> Option<V> {
        load_from(
            &self.local,
            &*self.form,
            &self.removed,
            &mut self.error,
            key,
        )
    }

    /// The cached entry of `key`, read from the file if needed, else made by `create` if
    /// given (then `true`); not marked changed. Evicts first when over budget.
    fn slot(
        &mut self,
        key: &[u8],
        create: Option<impl FnOnce() -> V>,
    ) -> Option<(&mut Cached<V>, bool)> {
        if self.cache_bytes > self.max_bytes {
            self.evict();
        }
        // One lookup when cached: the fields are borrowed apart.
        let DiskMap {
            local,
            form,
            cache,
            cache_bytes,
            removed,
            error,
            ..
        } = self;
        match cache.entry_ref(key) {
            hashbrown::hash_map::EntryRef::Occupied(o) => {
                let e = o.into_mut();
                e.hot = true;
                Some((e, false))
            }
            hashbrown::hash_map::EntryRef::Vacant(v) => {
                let (value, created) = match load_from(local, &**form, removed, error, key) {
                    Some(value) => (value, false),
                    None => {
                        let create = create?;
                        removed.remove(key);
                        (create(), true)
                    }
                };
                let size = entry_size(key, form.heap_bytes(&value));
                *cache_bytes += size;
                let e = v.insert_with_key(
                    Box::from(key),
                    Cached {
                        value,
                        dirty: created,
                        hot: true,
                        size,
                    },
                );
                Some((e, created))
            }
        }
    }

    fn cached(&mut self, key: &[u8]) -> Option<&mut Cached<V>> {
        self.slot(key, None::<fn() -> V>).map(|(e, _)| e)
    }

    /// The value of `key` without counting it as changed.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<&V> {
        self.cached(key).map(|e| &e.value)
    }

    /// The value of `key`, if it has one, not counted as changed: a caller that changes it
    /// calls `mark` next (before any other call).
    pub(crate) fn peek_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.cached(key).map(|e| &mut e.value)
    }

    /// Counts the cached value of `key` as changed (after `peek_mut`).
    pub(crate) fn mark(&mut self, key: &[u8]) {
        if let Some(e) = self.cache.get_mut(key) {
            e.dirty = true;
        }
    }

    /// The value of `key`, if it has one (counted as changed: the caller may change it).
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.cached(key).map(|e| {
            e.dirty = true;
            &mut e.value
        })
    }

    /// The value of `key`, created by `create` if it has none (and then `true`); counted as
    /// changed. No allocation when the key is cached.
    pub(crate) fn entry(&mut self, key: &[u8], create: impl FnOnce() -> V) -> (&mut V, bool) {
        let (e, created) = self.slot(key, Some(create)).expect("made when missing");
        e.dirty = true;
        (&mut e.value, created)
    }

    /// Drops the value of `key`.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let value = match self.cache.remove(key) {
            Some(e) => {
                self.cache_bytes -= e.size;
                Some(e.value)
            }
            None => self.load(key),
        };
        if value.is_some() {
            self.removed.insert(Box::from(key));
        }
        value
    }

    /// Drops the cached values `keep` says no to (as `remove` does); returns how many.
    pub(crate) fn remove_cached_if(&mut self, mut keep: impl FnMut(&V) -> bool) -> usize {
        let (mut n, mut freed) = (0, 0);
        let removed = &mut self.removed;
        self.cache.retain(|k, e| {
            if keep(&e.value) {
                return true;
            }
            removed.insert(k.clone());
            freed += e.size;
            n += 1;
            false
        });
        self.cache_bytes -= freed;
        n
    }

    /// Whether the cache or a removal decides the value of `key` (the file's is not seen).
    pub(crate) fn hides(&self, key: &[u8]) -> bool {
        self.cache.contains_key(key) || self.removed.contains(key)
    }

    /// Drops the value of `key` that only the file holds.
    pub(crate) fn remove_uncached(&mut self, key: &[u8]) {
        self.removed.insert(Box::from(key));
    }

    /// Puts the dirty cached values of `pick`ed keys into the batch, as written but not
    /// logged.
    fn spill_where(&mut self, mut pick: impl FnMut(&[u8]) -> bool) {
        for (k, e) in self.cache.iter_mut().filter(|(k, e)| e.dirty && pick(k)) {
            self.value_buf.clear();
            self.form.save(&e.value, &mut self.value_buf);
            self.batch.put(k, &self.value_buf);
            e.dirty = false;
            if self.logging {
                self.spilled.insert(k.clone());
            }
        }
    }

    /// Writes the changed values of keys starting with `prefix` (and whatever the batch
    /// holds) to the file, so that a scan of the file sees them.
    pub(crate) fn spill(&mut self, prefix: &[u8]) -> Result<()> {
        self.spill_where(|k| k.starts_with(prefix));
        self.local.apply(&mut self.batch, false)?;
        self.batch.clear();
        Ok(())
    }

    /// Drops the cached values of keys starting with `prefix`, changed or not (their file
    /// entries are the caller's to delete).
    pub(crate) fn forget(&mut self, prefix: &[u8]) {
        let mut freed = 0;
        self.cache.retain(|k, e| {
            let keep = !k.starts_with(prefix);
            if !keep {
                freed += e.size;
            }
            keep
        });
        self.cache_bytes -= freed;
    }

    /// Writes every dirty entry to the file, then drops entries not used since the last
    /// pass (and, if that is not enough, any) until the cache is down to 3/4 of its budget.
    fn evict(&mut self) {
        self.spill_where(|_| true);
        if let Err(e) = self.local.apply(&mut self.batch, false) {
            self.fail(e);
            return;
        }
        self.batch.clear();
        let target = self.max_bytes / 4 * 3;
        let mut bytes = self.cache_bytes;
        self.cache.retain(|_, e| {
            if bytes <= target {
                return true;
            }
            if e.hot {
                e.hot = false;
                return true;
            }
            bytes -= e.size;
            false
        });
        if bytes > target {
            self.cache.retain(|_, e| {
                if bytes <= target {
                    return true;
                }
                bytes -= e.size;
                false
            });
        }
        self.cache_bytes = bytes;
    }

    /// Puts into the batch (and, with `log`, the changelog) what changed since the last
    /// flush: values spilled since (read back from the file), removed keys (tombstones),
    /// dirty values. `commit` then writes the batch.
    pub(crate) async fn write_changes(&mut self, mut log: Option<&mut Changelog>) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(log) = log.as_deref_mut() {
            for key in std::mem::take(&mut self.spilled) {
                log.key.clear();
                log.key.extend_from_slice(&key);
                let found = self.local.get(&key, |v| {
                    log.value.clear();
                    log.value.extend_from_slice(v);
                })?;
                if found.is_some() {
                    log.put().await?;
                }
            }
        }
        for key in self.removed.drain() {
            self.batch.delete(&key);
            if let Some(log) = log.as_deref_mut() {
                log.key.clear();
                log.key.extend_from_slice(&key);
                log.delete().await?;
            }
        }
        let mut bytes = 0;
        for (k, e) in self.cache.iter_mut() {
            if e.dirty {
                e.dirty = false;
                self.value_buf.clear();
                self.form.save(&e.value, &mut self.value_buf);
                self.batch.put(k, &self.value_buf);
                e.size = entry_size(k, self.form.heap_bytes(&e.value));
                if let Some(log) = log.as_deref_mut() {
                    log.key.clear();
                    log.key.extend_from_slice(k);
                    std::mem::swap(&mut log.value, &mut self.value_buf);
                    let r = log.put().await;
                    std::mem::swap(&mut log.value, &mut self.value_buf);
                    r?;
                }
            }
            bytes += e.size;
        }
        self.cache_bytes = bytes;
        Ok(())
    }

    /// Puts `key` (`None`: deletes it) into the batch and, with `log`, the changelog: an
    /// entry the operator keeps outside the cache (a timer, a window's clock).
    pub(crate) async fn write_raw(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        log: Option<&mut Changelog>,
    ) -> Result<()> {
        self.batch.set(key, value);
        if let Some(log) = log {
            log.key.clear();
            log.key.extend_from_slice(key);
            match value {
                Some(v) => {
                    log.value.clear();
                    log.value.extend_from_slice(v);
                    log.put().await?;
                }
                None => log.delete().await?,
            }
        }
        if self.batch.len_bytes() >= RESTORE_BATCH_BYTES {
            self.local.apply(&mut self.batch, false)?;
            self.batch.clear();
        }
        Ok(())
    }

    /// Writes the batch to the file in one transaction; the last changelog write of `log`
    /// is where the next checkpoint is.
    pub(crate) fn commit(&mut self, log: Option<&mut Changelog>) -> Result<()> {
        self.local.apply(&mut self.batch, false)?;
        self.batch.clear();
        if let Some(log) = log {
            self.local.wrote(log.last.take());
        }
        Ok(())
    }
}

/// The value of `key` in the file of `local` unless `removed` hides it; an unreadable one
/// is recorded in `error` and reads as none.
fn load_from<V>(
    local: &LocalStore,
    form: &dyn StateForm<V>,
    removed: &HashSet<Box<[u8]>>,
    error: &mut Option<Error>,
    key: &[u8],
) -> Option<V> {
    if removed.contains(key) {
        return None;
    }
    let got = local.get(key, |bytes| {
        let mut input = bytes;
        form.load(&mut input).filter(|_| input.is_empty())
    });
    match got {
        Ok(Some(Some(found))) => Some(found),
        Ok(None) => None,
        Ok(Some(None)) => {
            error.get_or_insert(Error::Io {
                context: local.context("reading"),
                source: std::io::Error::other(format!(
                    "key \"{}\": unreadable state",
                    key.escape_ascii()
                )),
            });
            None
        }
        Err(e) => {
            error.get_or_insert(e);
            None
        }
    }
}

/// A keyed function's state and when it was last written (the TTL's clock): the file holds
/// the time first.
struct Timed<S> {
    state: S,
    written: i64,
}

struct TimedForm<S>(Box<dyn StateForm<S>>);

impl<S: StateSize> StateForm<Timed<S>> for TimedForm<S> {
    fn save(&self, t: &Timed<S>, out: &mut Vec<u8>) -> bool {
        t.written.encode(out);
        self.0.save(&t.state, out)
    }

    fn load(&self, input: &mut &[u8]) -> Option<Timed<S>> {
        let written = i64::decode(input)?;
        let state = self.0.load(input)?;
        Some(Timed { state, written })
    }

    fn heap_bytes(&self, t: &Timed<S>) -> usize {
        t.state.heap_bytes()
    }
}

/// The on-disk keyed store: the [`KeyedStore`] of a keyed function under `state.store = disk`.
pub(crate) struct DiskStore<S> {
    map: DiskMap<Timed<S>>,
    /// Keys with state.
    keys: usize,
    /// The file key being looked up (tag 0 + key).
    key_buf: Vec<u8>,
    /// The `before` of the last scan of the file by `expire`.
    swept: Option<i64>,
}

impl<S> std::fmt::Debug for DiskStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("keys", &self.keys)
            .field("map", &self.map)
            .finish()
    }
}

impl<S> DiskStore<S> {
    /// What went wrong with the file since the last call.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.map.take_error()
    }
}

impl<S: Default + StateSize + 'static> DiskStore<S> {
    /// The store over `local` with a cache of about `max_bytes`; `logging`: a changelog
    /// follows it.
    pub(crate) fn new(
        local: Rc<LocalStore>,
        form: Box<dyn StateForm<S>>,
        max_bytes: usize,
        logging: bool,
    ) -> Result<Self> {
        let mut keys = 0usize;
        local.scan(0, |_, _| keys += 1)?;
        Ok(DiskStore {
            map: DiskMap::new(local, Box::new(TimedForm(form)), max_bytes, logging),
            keys,
            key_buf: Vec::new(),
            swept: None,
        })
    }

    /// Writes what changed since the last flush to the file in one transaction and, with
    /// `log`, to the changelog: keys evicted since (read back from the file), removed keys
    /// (tombstones), dirty entries, then `timers` (set or deleted, in order).
    pub(crate) async fn flush(
        &mut self,
        mut log: Option<&mut Changelog>,
        timers: &mut Vec<(bool, TimeDomain, i64, Box<[u8]>)>,
    ) -> Result<()> {
        self.map.write_changes(log.as_deref_mut()).await?;
        for (set, domain, ts, key) in timers.drain(..) {
            state_key(&mut self.key_buf, 1, Some((domain, ts)), &key);
            let value: Option<&[u8]> = if set { Some(&[]) } else { None };
            self.map
                .write_raw(&self.key_buf, value, log.as_deref_mut())
                .await?;
        }
        self.map.commit(log)
    }
}

impl<S: Default + StateSize + 'static> KeyedStore<S> for DiskStore<S> {
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut S> {
        state_key(&mut self.key_buf, 0, None, key);
        self.map.get_mut(&self.key_buf).map(|t| &mut t.state)
    }

    fn entry(&mut self, key: &[u8], now: i64) -> &mut S {
        state_key(&mut self.key_buf, 0, None, key);
        let (t, created) = self.map.entry(&self.key_buf, || Timed {
            state: S::default(),
            written: now,
        });
        if created {
            self.keys += 1;
        }
        t.written = now;
        &mut t.state
    }

    fn written(&mut self, key: &[u8]) -> Option<i64> {
        state_key(&mut self.key_buf, 0, None, key);
        self.map.get(&self.key_buf).map(|t| t.written)
    }

    fn remove(&mut self, key: &[u8]) -> Option<S> {
        state_key(&mut self.key_buf, 0, None, key);
        let state = self.map.remove(&self.key_buf).map(|t| t.state);
        if state.is_some() {
            self.keys -= 1;
        }
        state
    }

    fn expire(&mut self, before: i64) -> usize {
        let mut n = self.map.remove_cached_if(|t| t.written >= before);
        if self
            .swept
            .is_none_or(|s| before.saturating_sub(s) >= SWEEP_MS)
        {
            self.swept = Some(before);
            let mut old = Vec::new();
            let map = &self.map;
            let scanned = map.local().scan(0, |k, mut v| {
                if !map.hides(k) && i64::decode(&mut v).is_some_and(|w| w < before) {
                    old.push(Box::<[u8]>::from(k));
                }
            });
            match scanned {
                Ok(()) => {
                    n += old.len();
                    for k in old {
                        self.map.remove_uncached(&k);
                    }
                }
                Err(e) => self.map.fail(e),
            }
        }
        self.keys -= n;
        n
    }

    fn len(&self) -> usize {
        self.keys
    }

    fn size_bytes(&self) -> usize {
        self.map.cache_bytes()
    }
}

mod due;

pub(crate) use due::DueIndex;

#[cfg(test)]
mod tests;
