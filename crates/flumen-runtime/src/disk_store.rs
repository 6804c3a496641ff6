//! The on-disk keyed store (`state.store = disk`): a task's keyed state in an embedded redb
//! file, a bounded cache of decoded states in front of it, and a local checkpoint of the
//! changelog offset up to which the file is complete.
//!
//! # Invariants
//! - The file mirrors the store's changelog partition: the same keys (tag 0 + key -> last
//!   write time and state; tag 1 + domain + timestamp + key -> a timer) with the same values,
//!   so a restore writes changelog records into it as they come, without decoding them, and
//!   never holds the state in memory.
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
const CHECKPOINT_HEADER: &str = "flumen-state-checkpoint 1";
/// A batch written by a restore is committed once it holds this many bytes.
pub(crate) const RESTORE_BATCH_BYTES: usize = 4 << 20;
/// How often (in the TTL's processing time) `expire` scans the file, not only the cache.
const SWEEP_MS: i64 = 10_000;

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

    /// Orders the items by key; the same key's items keep their order.
    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.items
            .sort_by(|a, b| bytes[a.0..a.0 + a.1].cmp(&bytes[b.0..b.0 + b.1]));
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
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("creating the state directory {}", dir.display()),
            source,
        })?;
        let file = dir.join("state.redb");
        let deadline = tokio::time::Instant::now() + wait;
        let mut checkpoint = read_checkpoint(dir);
        let db = loop {
            match engine::Db::open(&file, cache_bytes.max(1 << 20)) {
                Ok(db) => break db,
                Err(engine::OpenError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(engine::OpenError::Locked(e)) => {
                    return Err(Error::Io {
                        context: format!("opening {}", file.display()),
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
                Err(engine::OpenError::Unreadable(e)) => {
                    tracing::warn!(file = %file.display(), error = %e, "state file unreadable: starting it anew");
                    checkpoint = None;
                    let _ = std::fs::remove_file(dir.join(CHECKPOINT));
                    std::fs::remove_file(&file).map_err(|source| Error::Io {
                        context: format!("removing {}", file.display()),
                        source,
                    })?;
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
        let items = batch.items.iter().map(|&(at, klen, vlen)| {
            let key = &batch.bytes[at..at + klen];
            (
                key,
                vlen.map(|vlen| &batch.bytes[at + klen..at + klen + vlen]),
            )
        });
        self.db.write(items, durable).map_err(|e| Error::Io {
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
    pub(crate) fn scan(&self, tag: u8, f: impl FnMut(&[u8], &[u8])) -> Result<()> {
        self.db.scan(tag, f).map_err(|e| Error::Io {
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
        let path = self.dir.join(CHECKPOINT);
        let tmp = self.dir.join("checkpoint.tmp");
        let io = |source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        };
        std::fs::write(&tmp, format!("{CHECKPOINT_HEADER}\n{next}\n")).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.checkpointed.set(true);
        Ok(())
    }

    /// Deletes the checkpoint: until the next one, the file counts as incomplete.
    pub(crate) fn delete_checkpoint(&self) -> Result<()> {
        self.checkpointed.set(false);
        let path = self.dir.join(CHECKPOINT);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                context: format!("deleting {}", path.display()),
                source: e,
            }),
            _ => Ok(()),
        }
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

        pub(super) fn scan(&self, tag: u8, mut f: impl FnMut(&[u8], &[u8])) -> std::io::Result<()> {
            let tx = self.0.begin_read().map_err(io)?;
            let table = match tx.open_table(TABLE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(io(e)),
            };
            let (from, to) = ([tag], [tag + 1]);
            for entry in table.range::<&[u8]>(&from[..]..&to[..]).map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                f(k.value(), v.value());
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

        pub(super) fn scan(&self, _: u8, _: impl FnMut(&[u8], &[u8])) -> std::io::Result<()> {
            match *self {}
        }

        #[cfg(test)]
        pub(super) fn len(&self) -> std::io::Result<u64> {
            match *self {}
        }
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

/// How a store's states are written and read (the keyed function's `save_state` /
/// `load_state`).
pub(crate) trait StateForm<S> {
    fn save(&self, state: &S, out: &mut Vec<u8>) -> bool;
    fn load(&self, input: &mut &[u8]) -> Option<S>;
}

struct Cached<S> {
    state: S,
    written: i64,
    /// Changed since it was last written to the file.
    dirty: bool,
    /// Used since the last eviction pass (second chance).
    hot: bool,
    /// Its estimated bytes in the cache.
    size: usize,
}

/// The on-disk store: the [`KeyedStore`] of a keyed function under `state.store = disk`.
pub(crate) struct DiskStore<S> {
    local: Rc<LocalStore>,
    form: Box<dyn StateForm<S>>,
    cache: HashMap<Box<[u8]>, Cached<S>>,
    cache_bytes: usize,
    max_bytes: usize,
    /// Keys removed since the last flush (they hide the file's entries).
    removed: HashSet<Box<[u8]>>,
    /// Keys written to the file by an eviction and not logged yet.
    spilled: HashSet<Box<[u8]>>,
    /// Whether a changelog follows the store (evicted keys are then remembered for it).
    logging: bool,
    /// Keys with state.
    keys: usize,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    batch: Batch,
    /// The `before` of the last scan of the file by `expire`.
    swept: Option<i64>,
    /// What went wrong reading or writing the file: the operator fails with it.
    error: Option<Error>,
}

impl<S> std::fmt::Debug for DiskStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("keys", &self.keys)
            .field("cached", &self.cache.len())
            .finish()
    }
}

fn entry_size<S: StateSize>(key: &[u8], state: &S) -> usize {
    std::mem::size_of::<(Box<[u8]>, Cached<S>)>()
        + 1
        + key.len().next_multiple_of(16)
        + state.heap_bytes()
}

impl<S> DiskStore<S> {
    /// What went wrong with the file since the last call.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }
}

impl<S: Default + StateSize> DiskStore<S> {
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
            local,
            form,
            cache: HashMap::new(),
            cache_bytes: 0,
            max_bytes,
            removed: HashSet::new(),
            spilled: HashSet::new(),
            logging,
            keys,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            batch: Batch::default(),
            swept: None,
            error: None,
        })
    }

    /// The state and last write time of `key` in the file (not in the cache).
    fn load(&mut self, key: &[u8]) -> Option<(S, i64)> {
        if self.removed.contains(key) {
            return None;
        }
        state_key(&mut self.key_buf, 0, None, key);
        let form = &self.form;
        let got = self.local.get(&self.key_buf, |bytes| {
            let mut input = bytes;
            let written = i64::decode(&mut input)?;
            let state = form.load(&mut input).filter(|_| input.is_empty())?;
            Some((state, written))
        });
        match got {
            Ok(Some(Some(found))) => Some(found),
            Ok(None) => None,
            Ok(Some(None)) => {
                self.error.get_or_insert_with(|| Error::Io {
                    context: self.local.context("reading"),
                    source: std::io::Error::other(format!(
                        "key \"{}\": unreadable state",
                        key.escape_ascii()
                    )),
                });
                None
            }
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// Caches `state` for `key` (evicting first when over budget).
    fn insert(&mut self, key: &[u8], state: S, written: i64, dirty: bool) {
        if self.cache_bytes > self.max_bytes {
            self.evict();
        }
        let size = entry_size(key, &state);
        self.cache_bytes += size;
        self.cache.insert(
            Box::from(key),
            Cached {
                state,
                written,
                dirty,
                hot: true,
                size,
            },
        );
    }

    /// Writes every dirty entry to the file, then drops entries not used since the last
    /// pass (and, if that is not enough, any) until the cache is down to 3/4 of its budget.
    fn evict(&mut self) {
        self.batch.clear();
        for (k, e) in self.cache.iter_mut().filter(|(_, e)| e.dirty) {
            state_key(&mut self.key_buf, 0, None, k);
            self.value_buf.clear();
            e.written.encode(&mut self.value_buf);
            self.form.save(&e.state, &mut self.value_buf);
            self.batch.put(&self.key_buf, &self.value_buf);
            e.dirty = false;
            if self.logging {
                self.spilled.insert(k.clone());
            }
        }
        if let Err(e) = self.local.apply(&mut self.batch, false) {
            self.error.get_or_insert(e);
            return;
        }
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

    /// Writes what changed since the last flush to the file in one transaction and, with
    /// `log`, to the changelog: keys evicted since (read back from the file), removed keys
    /// (tombstones), dirty entries, then `timers` (set or deleted, in order).
    pub(crate) async fn flush(
        &mut self,
        mut log: Option<&mut Changelog>,
        timers: &mut Vec<(bool, TimeDomain, i64, Box<[u8]>)>,
    ) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.batch.clear();
        if let Some(log) = log.as_deref_mut() {
            for key in std::mem::take(&mut self.spilled) {
                state_key(&mut log.key, 0, None, &key);
                let found = self.local.get(&log.key, |v| {
                    log.value.clear();
                    log.value.extend_from_slice(v);
                })?;
                if found.is_some() {
                    log.put().await?;
                }
            }
        }
        for key in self.removed.drain() {
            state_key(&mut self.key_buf, 0, None, &key);
            self.batch.delete(&self.key_buf);
            if let Some(log) = log.as_deref_mut() {
                state_key(&mut log.key, 0, None, &key);
                log.delete().await?;
            }
        }
        let mut bytes = 0;
        for (k, e) in self.cache.iter_mut() {
            if e.dirty {
                e.dirty = false;
                state_key(&mut self.key_buf, 0, None, k);
                self.value_buf.clear();
                e.written.encode(&mut self.value_buf);
                self.form.save(&e.state, &mut self.value_buf);
                self.batch.put(&self.key_buf, &self.value_buf);
                e.size = entry_size(k, &e.state);
                if let Some(log) = log.as_deref_mut() {
                    std::mem::swap(&mut log.key, &mut self.key_buf);
                    std::mem::swap(&mut log.value, &mut self.value_buf);
                    let r = log.put().await;
                    std::mem::swap(&mut log.key, &mut self.key_buf);
                    std::mem::swap(&mut log.value, &mut self.value_buf);
                    r?;
                }
            }
            bytes += e.size;
        }
        self.cache_bytes = bytes;
        for (set, domain, ts, key) in timers.drain(..) {
            state_key(&mut self.key_buf, 1, Some((domain, ts)), &key);
            if set {
                self.batch.put(&self.key_buf, &[]);
            } else {
                self.batch.delete(&self.key_buf);
            }
            if let Some(log) = log.as_deref_mut() {
                std::mem::swap(&mut log.key, &mut self.key_buf);
                log.value.clear();
                let r = if set {
                    log.put().await
                } else {
                    log.delete().await
                };
                std::mem::swap(&mut log.key, &mut self.key_buf);
                r?;
            }
        }
        self.local.apply(&mut self.batch, false)?;
        if let Some(log) = log {
            self.local.wrote(log.last.take());
        }
        Ok(())
    }
}

impl<S: Default + StateSize> KeyedStore<S> for DiskStore<S> {
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut S> {
        if !self.cache.contains_key(key) {
            let (state, written) = self.load(key)?;
            self.insert(key, state, written, false);
        }
        let e = self.cache.get_mut(key).expect("cached");
        // The caller may change it (a timer's function does).
        e.dirty = true;
        e.hot = true;
        Some(&mut e.state)
    }

    fn entry(&mut self, key: &[u8], now: i64) -> &mut S {
        if !self.cache.contains_key(key) {
            let state = match self.load(key) {
                Some((state, _)) => state,
                None => {
                    self.keys += 1;
                    self.removed.remove(key);
                    S::default()
                }
            };
            self.insert(key, state, now, true);
        }
        let e = self.cache.get_mut(key).expect("cached");
        e.written = now;
        e.dirty = true;
        e.hot = true;
        &mut e.state
    }

    fn written(&mut self, key: &[u8]) -> Option<i64> {
        if !self.cache.contains_key(key) {
            let (state, written) = self.load(key)?;
            self.insert(key, state, written, false);
        }
        self.cache.get(key).map(|e| e.written)
    }

    fn remove(&mut self, key: &[u8]) -> Option<S> {
        let state = match self.cache.remove(key) {
            Some(e) => {
                self.cache_bytes -= e.size;
                Some(e.state)
            }
            None => self.load(key).map(|(s, _)| s),
        };
        if state.is_some() {
            self.keys -= 1;
            self.removed.insert(Box::from(key));
        }
        state
    }

    fn expire(&mut self, before: i64) -> usize {
        let mut n = 0;
        let mut freed = 0;
        let removed = &mut self.removed;
        self.cache.retain(|k, e| {
            if e.written >= before {
                return true;
            }
            removed.insert(k.clone());
            freed += e.size;
            n += 1;
            false
        });
        self.cache_bytes -= freed;
        if self
            .swept
            .is_none_or(|s| before.saturating_sub(s) >= SWEEP_MS)
        {
            self.swept = Some(before);
            let (cache, removed) = (&self.cache, &mut self.removed);
            let scanned = self.local.scan(0, |k, mut v| {
                let key = &k[1..];
                if cache.contains_key(key) || removed.contains(key) {
                    return;
                }
                if i64::decode(&mut v).is_some_and(|w| w < before) {
                    removed.insert(Box::from(key));
                    n += 1;
                }
            });
            if let Err(e) = scanned {
                self.error.get_or_insert(e);
            }
        }
        self.keys -= n;
        n
    }

    fn len(&self) -> usize {
        self.keys
    }

    fn size_bytes(&self) -> usize {
        self.cache_bytes
    }
}

#[cfg(test)]
mod tests;
