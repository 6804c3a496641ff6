//! Keyed state and timers: a [`KeyedProcess`] function sees, for each record, the state of
//! the record's key and may set event-time and processing-time timers for it (Flink's
//! `KeyedProcessFunction`).
//!
//! State belongs to the task (one partition of the keys), lives in a [`KeyedStore`], and is
//! typed per key by the function: a struct whose fields are the values, lists and maps the
//! function keeps ([`ValueState`], [`ListState`], [`MapState`] or plain fields).
//!
//! # Invariants
//! - Timers are per key and timestamp (setting the same one twice keeps one) and fire in
//!   timestamp order: event-time timers once the watermark reaches them, processing-time
//!   timers once the wall clock does; a timer set while firing that is already due fires in
//!   the same pass.
//! - With a TTL, a key's state not written for that long (processing time) is dropped: on
//!   its next access, or by the sweep on each tick, whichever comes first.
//! - The in-memory store is the default; `state.store = disk` puts a keyed function's state
//!   in an embedded key-value file per task with a bounded cache in front (window stores too,
//!   see [`crate::window`]). Both are behind [`KeyedStore`], as one enum: the memory path pays
//!   one branch. On disk the timers are in the file too, memory holding the earliest only
//!   (`timers.rs`).

use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

use hashbrown::HashMap;

use crate::changelog::{Changelog, changelog_topic};
use crate::codec::StateCodec;
use crate::context::RecordContext;
use crate::disk_store::{DiskStore, LocalStore, StateForm};
use crate::error::{Error, Result};
use crate::format::{Decode, Family, Owned};
use crate::operator::{Operator, OperatorMetrics, pass_on};
use crate::stream::{Chain, Stream};
use crate::task::TaskEnv;
use crate::time::Time;

mod timers;

use timers::Timers;

/// Per-key state of a task.
pub trait KeyedStore<S> {
    /// The state of `key`, if it has any (counted as changed: the caller may change it).
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut S>;
    /// When the state of `key` was last written, if it has state.
    fn written(&mut self, key: &[u8]) -> Option<i64>;
    /// The state of `key`, created with `S::default()` if it has none. `now` is the
    /// processing time of the write (for the TTL).
    fn entry(&mut self, key: &[u8], now: i64) -> &mut S;
    /// Drops the state of `key`.
    fn remove(&mut self, key: &[u8]) -> Option<S>;
    /// Drops states last written before `before`; returns how many.
    fn expire(&mut self, before: i64) -> usize;
    /// Keys with state.
    fn len(&self) -> usize;
    /// Whether no key has state.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held (keys, states and table overhead; an estimate).
    fn size_bytes(&self) -> usize;
}

/// A state's heap bytes beyond its own size, for the state-size metric.
pub trait StateSize {
    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        0
    }
}

struct Entry<S> {
    state: S,
    written: i64,
    /// Written since the last checkpoint.
    dirty: bool,
}

/// The in-memory store.
pub struct MemoryStore<S> {
    map: HashMap<Box<[u8]>, Entry<S>>,
    /// Keys removed since the last checkpoint (kept only while the store is logged).
    removed: Option<Vec<Box<[u8]>>>,
}

impl<S> Default for MemoryStore<S> {
    fn default() -> Self {
        MemoryStore {
            map: HashMap::new(),
            removed: None,
        }
    }
}

impl<S> std::fmt::Debug for MemoryStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.map.len())
            .finish()
    }
}

impl<S: Default + StateSize> KeyedStore<S> for MemoryStore<S> {
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut S> {
        self.map.get_mut(key).map(|e| {
            e.dirty = true;
            &mut e.state
        })
    }

    fn written(&mut self, key: &[u8]) -> Option<i64> {
        self.map.get(key).map(|e| e.written)
    }

    fn entry(&mut self, key: &[u8], now: i64) -> &mut S {
        // No allocation when the key has state already.
        if !self.map.contains_key(key) {
            self.map.insert(
                Box::from(key),
                Entry {
                    state: S::default(),
                    written: now,
                    dirty: true,
                },
            );
        }
        let e = self.map.get_mut(key).expect("present");
        e.written = now;
        e.dirty = true;
        &mut e.state
    }

    fn remove(&mut self, key: &[u8]) -> Option<S> {
        let (key, e) = self.map.remove_entry(key)?;
        if let Some(removed) = &mut self.removed {
            removed.push(key);
        }
        Some(e.state)
    }

    fn expire(&mut self, before: i64) -> usize {
        let n = self.map.len();
        match &mut self.removed {
            Some(removed) => self.map.retain(|k, e| {
                let keep = e.written >= before;
                if !keep {
                    removed.push(k.clone());
                }
                keep
            }),
            None => self.map.retain(|_, e| e.written >= before),
        }
        n - self.map.len()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn size_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(Box<[u8]>, Entry<S>)>() + 1;
        self.map.capacity() * slot
            + self
                .map
                .iter()
                .map(|(k, e)| k.len().next_multiple_of(16) + e.state.heap_bytes())
                .sum::<usize>()
    }
}

/// The store of a keyed function: in memory, or on disk (`state.store`).
enum Store<S> {
    Memory(MemoryStore<S>),
    Disk(Box<DiskStore<S>>),
}

impl<S: Default + StateSize + 'static> KeyedStore<S> for Store<S> {
    #[inline]
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut S> {
        match self {
            Store::Memory(m) => m.get_mut(key),
            Store::Disk(d) => d.get_mut(key),
        }
    }

    #[inline]
    fn written(&mut self, key: &[u8]) -> Option<i64> {
        match self {
            Store::Memory(m) => m.written(key),
            Store::Disk(d) => d.written(key),
        }
    }

    #[inline]
    fn entry(&mut self, key: &[u8], now: i64) -> &mut S {
        match self {
            Store::Memory(m) => m.entry(key, now),
            Store::Disk(d) => d.entry(key, now),
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<S> {
        match self {
            Store::Memory(m) => m.remove(key),
            Store::Disk(d) => d.remove(key),
        }
    }

    fn expire(&mut self, before: i64) -> usize {
        match self {
            Store::Memory(m) => m.expire(before),
            Store::Disk(d) => d.expire(before),
        }
    }

    fn len(&self) -> usize {
        match self {
            Store::Memory(m) => m.len(),
            Store::Disk(d) => d.len(),
        }
    }

    fn size_bytes(&self) -> usize {
        match self {
            Store::Memory(m) => m.size_bytes(),
            Store::Disk(d) => d.size_bytes(),
        }
    }
}

impl<S> Store<S> {
    /// What went wrong with the disk store's file, if anything.
    fn take_error(&mut self) -> Option<Error> {
        match self {
            Store::Memory(_) => None,
            Store::Disk(d) => d.take_error(),
        }
    }
}

/// A keyed function's `save_state` / `load_state`, for the disk store.
struct ProcessForm<F, P>(P, PhantomData<fn() -> F>);

impl<F: Family, P: KeyedProcess<F>> StateForm<P::State> for ProcessForm<F, P> {
    fn save(&self, state: &P::State, out: &mut Vec<u8>) -> bool {
        self.0.save_state(state, out)
    }

    fn load(&self, input: &mut &[u8]) -> Option<P::State> {
        self.0.load_state(input)
    }
}

/// One value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValueState<T>(pub Option<T>);

impl<T> ValueState<T> {
    /// The value.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
    /// Sets the value.
    pub fn set(&mut self, value: T) {
        self.0 = Some(value);
    }
    /// Clears the value.
    pub fn clear(&mut self) -> Option<T> {
        self.0.take()
    }
}

impl<T> StateSize for ValueState<T> {}

/// A list of values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListState<T>(pub Vec<T>);

impl<T> Default for ListState<T> {
    fn default() -> Self {
        ListState(Vec::new())
    }
}

impl<T> ListState<T> {
    /// Appends a value.
    pub fn push(&mut self, value: T) {
        self.0.push(value);
    }
    /// The values, oldest first.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
    /// Takes every value out.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.0)
    }
}

impl<T> StateSize for ListState<T> {
    fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<T>()
    }
}

/// A map of values.
#[derive(Clone, Debug)]
pub struct MapState<K, V>(pub HashMap<K, V>);

impl<K, V> Default for MapState<K, V> {
    fn default() -> Self {
        MapState(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq, V> MapState<K, V> {
    /// The value of `k`.
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        Q: std::hash::Hash + hashbrown::Equivalent<K> + ?Sized,
    {
        self.0.get(k)
    }
    /// Sets the value of `k`.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.0.insert(k, v)
    }
    /// Removes `k`.
    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        Q: std::hash::Hash + hashbrown::Equivalent<K> + ?Sized,
    {
        self.0.remove(k)
    }
    /// The entries, in no order.
    pub fn iter(&self) -> hashbrown::hash_map::Iter<'_, K, V> {
        self.0.iter()
    }
}

impl<K, V> StateSize for MapState<K, V> {
    fn heap_bytes(&self) -> usize {
        self.0.capacity() * (std::mem::size_of::<(K, V)>() + 1)
    }
}

impl<T: StateCodec> StateCodec for ValueState<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        Some(ValueState(Option::decode(input)?))
    }
}

impl<T: StateCodec> StateCodec for ListState<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        Some(ListState(Vec::decode(input)?))
    }
}

impl<K: StateCodec + std::hash::Hash + Eq, V: StateCodec> StateCodec for MapState<K, V> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        Some(MapState(HashMap::decode(input)?))
    }
}

impl StateSize for () {}
impl StateSize for u64 {}
impl StateSize for i64 {}
impl StateSize for f64 {}

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// The task's watermark.
    EventTime,
    /// The wall clock.
    ProcessingTime,
}

/// A timer that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// When it was set for (ms).
    pub timestamp: i64,
    /// Its clock.
    pub domain: TimeDomain,
}

/// What a [`KeyedProcess`] function sees for one record or timer.
pub struct KeyedContext<'c, S, O> {
    key: &'c [u8],
    timestamp: i64,
    watermark: i64,
    now: i64,
    /// The key's state.
    pub state: &'c mut S,
    out: &'c mut Vec<O>,
    timers: &'c mut Timers,
    failed: &'c mut Option<String>,
}

impl<S, O> KeyedContext<'_, S, O> {
    /// The key.
    pub fn key(&self) -> &[u8] {
        self.key
    }
    /// The record's event time (or the timer's timestamp).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
    /// The task's watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }
    /// Processing time (ms since the epoch).
    pub fn processing_time(&self) -> i64 {
        self.now
    }
    /// Emits `item` downstream, with the key and this timestamp.
    pub fn emit(&mut self, item: O) {
        self.out.push(item);
    }
    /// Calls `on_timer` for this key once the watermark reaches `timestamp`.
    pub fn set_event_timer(&mut self, timestamp: i64) {
        self.timers.set(TimeDomain::EventTime, timestamp, self.key);
    }
    /// Calls `on_timer` for this key once the wall clock reaches `timestamp`.
    pub fn set_processing_timer(&mut self, timestamp: i64) {
        self.timers
            .set(TimeDomain::ProcessingTime, timestamp, self.key);
    }
    /// Deletes this key's event-time timer at `timestamp`.
    pub fn delete_event_timer(&mut self, timestamp: i64) {
        self.timers
            .delete(TimeDomain::EventTime, timestamp, self.key);
    }
    /// Deletes this key's processing-time timer at `timestamp`.
    pub fn delete_processing_timer(&mut self, timestamp: i64) {
        self.timers
            .delete(TimeDomain::ProcessingTime, timestamp, self.key);
    }
    /// Fails the pipeline with `message`.
    pub fn fail(&mut self, message: impl Into<String>) {
        *self.failed = Some(message.into());
    }
}

/// A function over a keyed stream with per-key state and timers.
pub trait KeyedProcess<F: Family>: Clone + Send + Sync + 'static {
    /// The state of one key.
    type State: Default + StateSize + 'static;
    /// What it emits.
    type Out: 'static;
    /// Handles one item of the key `cx.key()`.
    fn process(&mut self, cx: &mut KeyedContext<'_, Self::State, Self::Out>, item: F::Item<'_>);
    /// A timer of the key `cx.key()` fired.
    fn on_timer(&mut self, cx: &mut KeyedContext<'_, Self::State, Self::Out>, timer: Timer) {
        let _ = (cx, timer);
    }

    /// Appends a key's state in its changelog form (e.g. through [`StateCodec`], which
    /// [`ValueState`], [`ListState`] and [`MapState`] implement), or returns false: the
    /// state then lives in memory only, which exactly-once refuses. Default: false.
    fn save_state(&self, state: &Self::State, out: &mut Vec<u8>) -> bool {
        let _ = (state, out);
        false
    }

    /// Reads a state [`KeyedProcess::save_state`] wrote, from the front of `input`.
    fn load_state(&self, input: &mut &[u8]) -> Option<Self::State> {
        let _ = input;
        None
    }
}

/// The keyed-process operator.
pub struct KeyedProcessOp<F, P: KeyedProcess<F>, N>
where
    F: Family,
{
    f: P,
    store: Store<P::State>,
    timers: Timers,
    ttl: Option<i64>,
    out: Vec<P::Out>,
    watermark: i64,
    now: i64,
    count: u64,
    next: N,
    /// Where the state and timers are logged (runs against Kafka).
    log: Option<Changelog>,
    /// A state without a changelog form is an error (exactly-once).
    strict: bool,
    /// The function's states have a changelog form.
    loggable: bool,
    /// What went wrong restoring: the operator fails with it.
    broken: Option<Error>,
    _family: PhantomData<fn() -> F>,
}

/// A keyed store's changelog key: tag 0 + key -> (last write, state); tag 1 + domain (0
/// event, 1 processing) + timestamp (8 bytes, big-endian) + key -> a timer.
pub(crate) fn state_key(out: &mut Vec<u8>, tag: u8, timer: Option<(TimeDomain, i64)>, key: &[u8]) {
    out.clear();
    out.push(tag);
    if let Some((domain, timestamp)) = timer {
        out.push(u8::from(domain == TimeDomain::ProcessingTime));
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    out.extend_from_slice(key);
}

impl<F, P, N> KeyedProcessOp<F, P, N>
where
    F: Family,
    P: KeyedProcess<F>,
{
    /// Logs to `log` from now on, starting from what `restored` holds.
    fn with_changelog(
        mut self,
        log: Changelog,
        strict: bool,
        restored: crate::changelog::Restored,
    ) -> Self {
        self.broken = log.restore_with(restored, |k, v| self.restore_one(k, v));
        // Whether states have a changelog form, asked once.
        self.loggable = self.f.save_state(&P::State::default(), &mut Vec::new());
        if let Store::Memory(m) = &mut self.store {
            m.removed = Some(Vec::new());
        }
        self.timers.changes = Some(Vec::new());
        self.log = Some(log);
        self.strict = strict;
        self
    }

    /// Keeps the state in the file of `local` (restored already), with a cache of about
    /// `cache_bytes`, and logs to `log` if given.
    fn with_local(
        mut self,
        log: Option<Changelog>,
        strict: bool,
        local: Rc<LocalStore>,
        cache_bytes: usize,
    ) -> Self
    where
        F: 'static,
    {
        self.loggable = self.f.save_state(&P::State::default(), &mut Vec::new());
        if !self.loggable {
            self.broken = Some(crate::disk_store::needs_binary_form(
                "the keyed function's state",
                "KeyedProcess::save_state / load_state",
            ));
            return self;
        }
        let form = Box::new(ProcessForm(self.f.clone(), PhantomData));
        match DiskStore::new(local.clone(), form, cache_bytes, log.is_some()) {
            Ok(disk) => self.store = Store::Disk(Box::new(disk)),
            Err(e) => {
                self.broken = Some(e);
                return self;
            }
        }
        // Timers stay in the file; memory holds the earliest, about a quarter of the cache.
        self.timers
            .on_disk(&local, (cache_bytes / 4 / 64).clamp(64, 1 << 16));
        self.timers.changes = Some(Vec::new());
        self.log = log;
        self.strict = strict;
        self
    }

    fn restore_one(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), String> {
        let (&tag, rest) = key.split_first().ok_or("empty key")?;
        match tag {
            0 => {
                let mut input = value;
                let written = i64::decode(&mut input).ok_or("bad write time")?;
                let state = self
                    .f
                    .load_state(&mut input)
                    .filter(|_| input.is_empty())
                    .ok_or("unreadable state")?;
                if let Store::Memory(m) = &mut self.store {
                    m.map.insert(
                        Box::from(rest),
                        Entry {
                            state,
                            written,
                            dirty: false,
                        },
                    );
                }
            }
            1 => {
                let (&domain, rest) = rest.split_first().ok_or("short timer key")?;
                let (ts, k) = rest.split_at_checked(8).ok_or("short timer key")?;
                let ts = i64::from_be_bytes(ts.try_into().map_err(|_| "short timer key")?);
                let domain = match domain {
                    0 => TimeDomain::EventTime,
                    1 => TimeDomain::ProcessingTime,
                    _ => return Err(format!("unknown timer domain {domain}")),
                };
                self.timers.restore(domain, ts, k);
            }
            tag => return Err(format!("unexpected tag {tag}")),
        }
        Ok(())
    }

    /// Writes what changed since the last checkpoint.
    async fn log_state(&mut self) -> Result<()> {
        let KeyedProcessOp {
            f,
            store,
            timers,
            log,
            strict,
            loggable,
            ..
        } = self;
        let store = match store {
            Store::Memory(m) => m,
            Store::Disk(disk) => {
                let changes = timers.changes.get_or_insert_with(Vec::new);
                disk.flush(log.as_mut(), changes).await?;
                timers.flushed();
                return Ok(());
            }
        };
        let Some(changelog) = log.as_mut() else {
            return Ok(());
        };
        if !*loggable {
            changelog.unsupported(
                *strict,
                "the keyed function's state has no changelog form \
                 (KeyedProcess::save_state): it is not fault tolerant",
            )?;
            *log = None;
            store.removed = None;
            timers.changes = None;
            return Ok(());
        }
        for key in store.removed.iter_mut().flat_map(|r| r.drain(..)) {
            state_key(&mut changelog.key, 0, None, &key);
            changelog.delete().await?;
        }
        for (key, e) in store.map.iter_mut().filter(|(_, e)| e.dirty) {
            e.dirty = false;
            state_key(&mut changelog.key, 0, None, key);
            changelog.value.clear();
            e.written.encode(&mut changelog.value);
            f.save_state(&e.state, &mut changelog.value);
            changelog.put().await?;
        }
        for (set, domain, ts, key) in timers.changes.iter_mut().flat_map(|c| c.drain(..)) {
            state_key(&mut changelog.key, 1, Some((domain, ts)), &key);
            changelog.value.clear();
            if set {
                changelog.put().await?;
            } else {
                changelog.delete().await?;
            }
        }
        Ok(())
    }
}

impl<F, P, N> KeyedProcessOp<F, P, N>
where
    F: Family,
    P: KeyedProcess<F>,
    N: Operator<Owned<P::Out>>,
{
    /// Emits what the function collected, with `key` and `timestamp`.
    async fn flush(
        &mut self,
        tp: &flumen_client::TopicPartition,
        offset: i64,
        key: &[u8],
        timestamp: i64,
        failed: Option<String>,
    ) -> Result<()> {
        if let Some(message) = failed {
            self.out.clear();
            return Err(Error::User {
                tp: tp.clone(),
                offset,
                message,
            });
        }
        let cx = RecordContext::new(tp, offset, timestamp, Some(key));
        let mut items = std::mem::take(&mut self.out);
        let mut result = Ok(());
        for item in items.drain(..) {
            if result.is_ok() {
                result = self.next.push(&cx, item).await;
            }
        }
        self.out = items;
        result
    }

    /// Fires the due timers of `domain` up to `until`, earliest first.
    async fn fire(
        &mut self,
        tp: &flumen_client::TopicPartition,
        domain: TimeDomain,
        until: i64,
    ) -> Result<()> {
        while let Some((timestamp, key)) = self.timers.pop_due(domain, until)? {
            let mut failed = None;
            {
                // A timer does not refresh the state's TTL: only records write it.
                if self.store.get_mut(&key).is_none() {
                    self.store.entry(&key, self.now);
                }
                let state = self.store.get_mut(&key).expect("present");
                let mut cx = KeyedContext {
                    key: &key,
                    timestamp,
                    watermark: self.watermark,
                    now: self.now,
                    state,
                    out: &mut self.out,
                    timers: &mut self.timers,
                    failed: &mut failed,
                };
                self.f.on_timer(&mut cx, Timer { timestamp, domain });
            }
            if let Some(e) = self.store.take_error().or_else(|| self.timers.take_error()) {
                return Err(e);
            }
            self.flush(tp, -1, &key, timestamp, failed).await?;
        }
        Ok(())
    }
}

impl<F, P, N> Operator<F> for KeyedProcessOp<F, P, N>
where
    F: Family,
    P: KeyedProcess<F>,
    N: Operator<Owned<P::Out>>,
{
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
        self.count += 1;
        let key = cx.key().unwrap_or_default();
        if let Some(ttl) = self.ttl {
            let expired = self.store.written(key).is_some_and(|w| w < self.now - ttl);
            if expired {
                self.store.remove(key);
            }
        }
        let mut failed = None;
        {
            let state = self.store.entry(key, self.now);
            let mut kcx = KeyedContext {
                key,
                timestamp: cx.timestamp(),
                watermark: self.watermark,
                now: self.now,
                state,
                out: &mut self.out,
                timers: &mut self.timers,
                failed: &mut failed,
            };
            self.f.process(&mut kcx, item);
        }
        if let Some(e) = self.store.take_error().or_else(|| self.timers.take_error()) {
            return Err(e);
        }
        self.flush(
            cx.topic_partition(),
            cx.offset(),
            key,
            cx.timestamp(),
            failed,
        )
        .await
    }

    async fn advance(&mut self, time: &Time<'_>) -> Result<()> {
        self.now = time.processing_time();
        let tp = time.topic_partition();
        if time.watermark() > self.watermark {
            self.watermark = time.watermark();
            self.fire(tp, TimeDomain::EventTime, self.watermark).await?;
        }
        let until = if time.watermark() == i64::MAX {
            i64::MAX
        } else {
            self.now
        };
        self.fire(tp, TimeDomain::ProcessingTime, until).await?;
        if time.publish()
            && let Some(ttl) = self.ttl
        {
            self.store.expire(self.now - ttl);
        }
        self.next.advance(time).await
    }

    pass_on!(side);

    async fn checkpoint(&mut self) -> Result<()> {
        self.log_state().await?;
        self.next.checkpoint().await
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        out.push(OperatorMetrics {
            name: format!("{}:process_keyed", out.len()),
            records_in: self.count,
            state_bytes: (self.store.size_bytes() + self.timers.size_bytes()) as u64,
            state_keys: self.store.len() as u64,
            ..OperatorMetrics::default()
        });
        self.next.metrics(out);
    }
}

/// Description of a `process_keyed`.
pub struct KeyedProcessLink<C, P, F> {
    /// The state store's name (its changelog topic is `<application.id>-<store>-changelog`).
    store: String,
    chain: C,
    f: P,
    ttl: Option<i64>,
    _family: PhantomData<fn() -> F>,
}

impl<C: Clone, P: Clone, F> Clone for KeyedProcessLink<C, P, F> {
    fn clone(&self) -> Self {
        KeyedProcessLink {
            store: self.store.clone(),
            chain: self.chain.clone(),
            f: self.f.clone(),
            ttl: self.ttl,
            _family: PhantomData,
        }
    }
}

impl<In, F, C, P> Chain<In, Owned<P::Out>> for KeyedProcessLink<C, P, F>
where
    In: Family,
    F: Family,
    C: Chain<In, F>,
    P: KeyedProcess<F>,
{
    type Out<N: Operator<Owned<P::Out>>> = C::Out<KeyedProcessOp<F, P, N>>;
    fn build<N: Operator<Owned<P::Out>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        let mut op = KeyedProcessOp {
            f: self.f.clone(),
            store: Store::Memory(MemoryStore::default()),
            timers: Timers::default(),
            ttl: self.ttl,
            out: Vec::new(),
            watermark: i64::MIN,
            now: env.now,
            count: 0,
            next,
            log: None,
            strict: false,
            loggable: false,
            broken: None,
            _family: PhantomData,
        };
        if env.stores.logged {
            let log = Changelog::new(
                changelog_topic(&env.application_id, &self.store),
                env.partition,
                env.output.clone(),
            );
            op = match env.stores.take_local(&self.store) {
                Some(local) => {
                    op.with_local(Some(log), env.stores.strict, local, env.stores.cache_bytes)
                }
                None => op.with_changelog(log, env.stores.strict, env.stores.take(&self.store)),
            };
        } else if let Some(local) = env.stores.take_local(&self.store) {
            op = op.with_local(None, false, local, env.stores.cache_bytes);
        }
        self.chain.build(env, op)
    }
}

impl<'p, D, F, C> Stream<'p, D, F, C>
where
    D: Decode,
    F: Family,
    C: Chain<D::Family, F>,
{
    /// Runs `f` on each item with the state of the record's key and timers per key (the
    /// key is the record's: after a `key_by`, or the Kafka key).
    #[allow(clippy::type_complexity)]
    pub fn process_keyed<P: KeyedProcess<F>>(
        self,
        f: P,
    ) -> Stream<'p, D, Owned<P::Out>, KeyedProcessLink<C, P, F>> {
        self.process_keyed_with_ttl(f, None)
    }

    /// As [`Stream::process_keyed`], dropping a key's state once it has not been written for
    /// `ttl` (processing time).
    #[allow(clippy::type_complexity)]
    pub fn process_keyed_with_ttl<P: KeyedProcess<F>>(
        self,
        f: P,
        ttl: Option<Duration>,
    ) -> Stream<'p, D, Owned<P::Out>, KeyedProcessLink<C, P, F>> {
        let mut this = self;
        let store = format!("process-{}", this.pipeline.stores);
        this.pipeline.stores += 1;
        this.stores.push(store.clone());
        let link = KeyedProcessLink {
            store,
            chain: this.chain.clone(),
            f,
            ttl: ttl.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            _family: PhantomData,
        };
        this.then("process_keyed", link)
    }
}
