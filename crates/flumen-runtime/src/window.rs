//! Windows on a keyed stream: tumbling, sliding, session and global (count) windows, each
//! key's items aggregated by an [`Aggregate`], results emitted when a window closes (or on
//! every update), late items sent to a side output.
//!
//! The key is the record's key: after a `key_by`, or the Kafka key of a source that is
//! already partitioned by it.
//!
//! # Invariants
//! - Tumbling and sliding windows are aligned to the epoch: a window starts at
//!   `t - (t - offset) mod slide`; `[start, end)` holds timestamps `start <= t < end`.
//! - A window fires when the watermark reaches `end - 1` (its last timestamp). With allowed
//!   lateness `l` its state is kept until the watermark reaches `end - 1 + l`; a record for it
//!   in between updates it and re-emits the key's result. A record all of whose windows are
//!   past that point is late: it goes to the late output and is counted, never dropped
//!   silently.
//! - Per record, an already-seen key of an open window costs a hash lookup and the
//!   aggregate's `add`: no allocation.
//! - Results carry the key, `timestamp = end - 1`, and no headers.
//! - Changelog (runs against Kafka): at each checkpoint the operator writes every changed
//!   `(window, key)` accumulator, every window that fired since, and its clock; a window
//!   dropped past its lateness is tombstoned when it is dropped. Keys: tag 0 + start (8 bytes,
//!   big-endian) + key -> accumulator; tag 1 + key -> the key's sessions; tag 2 + key -> a
//!   global window's count and accumulator; tag 3 -> the clock; tag 4 + start -> the window
//!   fired. A restore rebuilds exactly that, so a window never emits its final result twice
//!   and a window dropped before the failure is not opened again by a late record.
//! - On disk (`state.store = disk`) the store file holds those same keys and values, behind
//!   a bounded cache of decoded accumulators (`DiskMap` in `disk_store.rs`); memory holds
//!   per open aligned window its key count and flags. The sessions' due index is in the file
//!   too, under tag 5 (not logged; written anew from the sessions when a task starts), with
//!   its earliest entries in memory (`DueIndex`). A window fires by writing its changed accumulators to the file and reading
//!   the file's `tag 0 + start` range in key order, a chunk at a time; a dropped window leaves
//!   the cache at once and the file at the next checkpoint (each key tombstoned then), or at
//!   once when nothing is logged. The clock and firing markers go to the file with the
//!   checkpoint's changelog writes. Results are the memory store's, in key order per window.
//! - A session has one due entry (when it ends) whatever the number of its records: a
//!   session merged into a longer one leaves its entry, which leads to the longer one's end
//!   when it comes up.

use std::collections::{BTreeMap, BinaryHeap};
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

use hashbrown::HashMap;

use crate::aggregate::{Aggregate, Count};
use crate::changelog::{Changelog, changelog_topic};
use crate::codec::StateCodec;
use crate::context::RecordContext;
use crate::disk_store::{Batch, DiskMap, DueIndex, LocalStore, StateForm};
use crate::error::{Error, Result};
use crate::format::{Decode, Encode, Family};
use crate::operator::{Operator, OperatorMetrics, pass_on};
use crate::stream::{Chain, Stream};
use crate::task::TaskEnv;
use crate::time::Time;

/// Which windows items fall into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    kind: Kind,
    processing_time: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Aligned { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
    GlobalCount { count: u64 },
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl Windows {
    /// Back-to-back windows of `size`, aligned to the epoch.
    pub fn tumbling(size: Duration) -> Self {
        Windows::sliding(size, size)
    }

    /// Windows of `size` starting every `slide` (hopping), aligned to the epoch; an item
    /// belongs to `size / slide` of them.
    ///
    /// # Panics
    /// If `slide` is longer than `size` (items would fall between windows).
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        let (size, slide) = (ms(size), ms(slide));
        assert!(slide <= size, "a window's slide must not exceed its size");
        Windows {
            kind: Kind::Aligned {
                size,
                slide,
                offset: 0,
            },
            processing_time: false,
        }
    }

    /// Per key, a window that grows while items keep coming less than `gap` apart.
    pub fn session(gap: Duration) -> Self {
        Windows {
            kind: Kind::Session { gap: ms(gap) },
            processing_time: false,
        }
    }

    /// One window per key that fires (and starts over) every `count` items; no time.
    pub fn global_count(count: u64) -> Self {
        Windows {
            kind: Kind::GlobalCount {
                count: count.max(1),
            },
            processing_time: false,
        }
    }

    /// Shifts aligned windows by `offset` (a 1-day window starting at 02:00, say).
    pub fn offset(mut self, offset: Duration) -> Self {
        if let Kind::Aligned {
            slide,
            offset: ref mut o,
            ..
        } = self.kind
        {
            *o = ms(offset) % slide;
        }
        self
    }

    /// Windows over processing time (the wall clock when an item is processed) instead of
    /// event time.
    pub fn processing_time(mut self) -> Self {
        self.processing_time = true;
        self
    }

    fn describe(&self) -> String {
        let domain = if self.processing_time {
            ", processing time"
        } else {
            ""
        };
        match self.kind {
            Kind::Aligned { size, slide, .. } if size == slide => {
                format!("tumbling({size} ms{domain})")
            }
            Kind::Aligned { size, slide, .. } => {
                format!("sliding({size} ms every {slide} ms{domain})")
            }
            Kind::Session { gap } => format!("session(gap {gap} ms{domain})"),
            Kind::GlobalCount { count } => format!("global(every {count})"),
        }
    }
}

/// When a window emits its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Emit {
    /// Once when the window closes, and again for each late update within the allowed
    /// lateness (Flink's event-time trigger). The default.
    #[default]
    Final,
    /// After every item (a changelog of the result, as Kafka Streams emits).
    EveryUpdate,
}

/// A window's result for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windowed<'a, R> {
    /// The key.
    pub key: &'a [u8],
    /// The window's first timestamp (ms; `i64::MIN` for global windows).
    pub start: i64,
    /// The first timestamp after the window (ms, exclusive; `i64::MAX` for global windows).
    pub end: i64,
    /// The aggregate's result.
    pub value: R,
}

impl<R> Windowed<'_, R> {
    /// The key as UTF-8 (lossy).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.key)
    }
}

/// The family of window results: [`Windowed`] items borrowing the key from the window state.
pub struct WindowedView<R>(PhantomData<fn() -> R>);

impl<R: 'static> Family for WindowedView<R> {
    type Item<'a> = Windowed<'a, R>;
}

type Key = Box<[u8]>;

struct Slot<Acc> {
    acc: Acc,
    /// Changed since the last checkpoint.
    dirty: bool,
}

struct Pane<Acc> {
    keys: HashMap<Key, Slot<Acc>>,
    fired: bool,
    /// A slot changed, or the pane fired, since the last checkpoint.
    dirty: bool,
    /// Its firing is in the changelog.
    fired_logged: bool,
}

impl<Acc> Pane<Acc> {
    fn new() -> Self {
        Pane {
            keys: HashMap::new(),
            fired: false,
            dirty: false,
            fired_logged: false,
        }
    }
}

struct Session<Acc> {
    start: i64,
    end: i64,
    acc: Acc,
    fired: bool,
}

enum State<Acc> {
    /// Aligned windows by start.
    Aligned(BTreeMap<i64, Pane<Acc>>),
    /// Sessions per key (sorted by start, disjoint), and when to look at them again:
    /// `(time, session end, key)`, earliest first; entries whose session has changed since
    /// are skipped.
    Session {
        keys: HashMap<Key, Vec<Session<Acc>>>,
        due: BinaryHeap<std::cmp::Reverse<(i64, i64, Key)>>,
        /// Keys whose sessions changed since the last checkpoint (logged runs only).
        dirty: hashbrown::HashSet<Key>,
    },
    /// Count and accumulator per key, and whether they changed since the last checkpoint.
    Global(HashMap<Key, (u64, Acc, bool)>),
    /// `state.store = disk`: the accumulators in the task's store file under their changelog
    /// keys, behind a bounded cache; per window, only its key count and flags in memory.
    DiskAligned(Box<DiskPanes<Acc>>),
    /// `state.store = disk`: each key's sessions in the file; when to look at them again, in
    /// memory (as `Session`'s `due`).
    DiskSession {
        map: Box<DiskMap<Vec<Session<Acc>>>>,
        due: Box<DueIndex>,
        keys: u64,
    },
    /// `state.store = disk`: each key's count and accumulator in the file.
    DiskGlobal {
        map: Box<DiskMap<(u64, Acc)>>,
        keys: u64,
    },
}

/// Aligned windows on disk.
struct DiskPanes<Acc> {
    /// `tag 0 + start + key` -> accumulator.
    map: DiskMap<Acc>,
    panes: BTreeMap<i64, DiskPane>,
    /// Windows dropped since the last checkpoint (start, firing logged): their entries leave
    /// the file, each tombstoned in the changelog, at the checkpoint.
    dropped: Vec<(i64, bool)>,
}

#[derive(Default)]
struct DiskPane {
    keys: u64,
    fired: bool,
    /// Its firing is in the changelog.
    fired_logged: bool,
}

/// The window operator (built by [`crate::Stream::window`]).
pub struct WindowOp<F, A: Aggregate<F>, L, N>
where
    F: Family,
{
    windows: Windows,
    lateness: i64,
    emit: Emit,
    agg: A,
    state: State<A::Acc>,
    late: L,
    next: N,
    /// Event-time watermark (or processing time, for processing-time windows).
    clock: i64,
    now: i64,
    count: u64,
    late_count: u64,
    /// Window starts of the record being added (sliding windows), reused.
    starts: Vec<i64>,
    /// Where the state is logged (runs against Kafka).
    log: Option<Changelog>,
    /// The aggregate has no changelog form: under exactly-once that is an error.
    strict: bool,
    /// The aggregate's accumulators have a changelog form.
    loggable: bool,
    /// The clock value last logged.
    logged_clock: i64,
    /// Windows dropped since the last checkpoint (start, keys, firing logged): their
    /// tombstones go out with the checkpoint, so under at-least-once the changelog never gets
    /// ahead of the committed offsets.
    dropped: Vec<(i64, Vec<Key>, bool)>,
    /// What went wrong restoring the state: the operator fails with it.
    broken: Option<Error>,
    /// A key in the store file, being built (disk state).
    file_key: Vec<u8>,
    _family: PhantomData<fn() -> F>,
}

impl<F: Family, A: Aggregate<F>, L, N> WindowOp<F, A, L, N> {
    pub(crate) fn new(
        windows: Windows,
        lateness: i64,
        emit: Emit,
        agg: A,
        late: L,
        next: N,
    ) -> Self {
        let state = match windows.kind {
            Kind::Aligned { .. } => State::Aligned(BTreeMap::new()),
            Kind::Session { .. } => State::Session {
                keys: HashMap::new(),
                due: BinaryHeap::new(),
                dirty: hashbrown::HashSet::new(),
            },
            Kind::GlobalCount { .. } => State::Global(HashMap::new()),
        };
        WindowOp {
            windows,
            lateness,
            emit,
            agg,
            state,
            late,
            next,
            clock: i64::MIN,
            now: 0,
            count: 0,
            late_count: 0,
            starts: Vec::new(),
            log: None,
            strict: false,
            loggable: false,
            logged_clock: i64::MIN,
            dropped: Vec::new(),
            broken: None,
            file_key: Vec::new(),
            _family: PhantomData,
        }
    }

    /// Logs the state to `log` from now on, starting from what `restored` holds (the latest
    /// value per changelog key).
    fn with_changelog(
        mut self,
        log: Changelog,
        strict: bool,
        restored: crate::changelog::Restored,
    ) -> Self {
        self.broken = log.restore_with(restored, |k, v| self.restore_one(k, v));
        // Whether accumulators have a changelog form, asked once.
        self.loggable = self.agg.save(&self.agg.create(), &mut Vec::new());
        self.logged_clock = self.clock;
        self.log = Some(log);
        self.strict = strict;
        self
    }

    /// Keeps the state in the file of `local` (restored already) behind a cache of about
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
        self.loggable = self.agg.save(&self.agg.create(), &mut Vec::new());
        if !self.loggable {
            self.broken = Some(crate::disk_store::needs_binary_form(
                "the window's aggregation",
                "Aggregate::save / load",
            ));
            return self;
        }
        let logging = log.is_some();
        let agg = &self.agg;
        let mut bad = None;
        let mut note = |r: std::result::Result<(), String>| {
            if let Err(message) = r {
                bad.get_or_insert(message);
            }
        };
        let mut scanned = local.get(&[3], i64::decode_all).map(|clock| match clock {
            Some(Some(clock)) => self.clock = clock,
            Some(None) => note(Err("bad clock".to_owned())),
            None => {}
        });
        let state = match self.windows.kind {
            Kind::Aligned { .. } => {
                let mut panes = BTreeMap::<i64, DiskPane>::new();
                scanned = scanned.and_then(|()| {
                    local.scan(0, |k, _| match window_start(&k[1..]) {
                        Ok((start, _)) => panes.entry(start).or_default().keys += 1,
                        Err(e) => note(Err(e)),
                    })
                });
                scanned = scanned.and_then(|()| {
                    local.scan(4, |k, _| match window_start(&k[1..]) {
                        Ok((start, _)) => {
                            let pane = panes.entry(start).or_default();
                            pane.fired = true;
                            pane.fired_logged = true;
                        }
                        Err(e) => note(Err(e)),
                    })
                });
                let form = Box::new(AccForm(agg.clone(), PhantomData));
                State::DiskAligned(Box::new(DiskPanes {
                    map: DiskMap::new(local.clone(), form, cache_bytes, logging),
                    panes,
                    dropped: Vec::new(),
                }))
            }
            Kind::Session { .. } => {
                let head = DueIndex::head_for(cache_bytes);
                let mut due = Box::new(DueIndex::new(local.clone(), DUE_TAG, head));
                let (mut keys, mut batch, mut written) = (0, Batch::default(), Ok(()));
                // An entry per session, straight to the file: a restore brought the sessions
                // without their entries.
                scanned = scanned.and_then(|()| {
                    local.scan(1, |k, mut v| match load_sessions(agg, &mut v) {
                        Some(sessions) if v.is_empty() => {
                            keys += 1;
                            for s in sessions {
                                if written.is_ok() {
                                    written = due.write_now(&mut batch, s.end - 1, s.end, &k[1..]);
                                }
                            }
                        }
                        _ => note(Err("unreadable sessions".to_owned())),
                    })
                });
                scanned = scanned
                    .and(written)
                    .and_then(|()| due.write_end(&mut batch));
                let form = Box::new(SessionsForm(agg.clone(), PhantomData));
                State::DiskSession {
                    map: Box::new(DiskMap::new(local.clone(), form, cache_bytes, logging)),
                    due,
                    keys,
                }
            }
            Kind::GlobalCount { .. } => {
                let mut keys = 0;
                scanned = scanned.and_then(|()| local.scan(2, |_, _| keys += 1));
                let form = Box::new(GlobalForm(agg.clone(), PhantomData));
                State::DiskGlobal {
                    map: Box::new(DiskMap::new(local.clone(), form, cache_bytes, logging)),
                    keys,
                }
            }
        };
        self.state = state;
        if let Some(message) = bad {
            self.broken = Some(Error::Io {
                context: format!("{local:?}: restoring the window state"),
                source: std::io::Error::other(message),
            });
        } else if let Err(e) = scanned {
            self.broken = Some(e);
        }
        self.logged_clock = self.clock;
        self.log = log;
        self.strict = strict;
        self
    }

    fn restore_one(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), String> {
        let (&tag, rest) = key.split_first().ok_or("empty key")?;
        let start_of = |rest: &[u8]| window_start(rest).map(|(start, k)| (start, Key::from(k)));
        let mut input = value;
        match (&mut self.state, tag) {
            (State::Aligned(panes), 0) => {
                let (start, k) = start_of(rest)?;
                let acc = self
                    .agg
                    .load(&mut input)
                    .filter(|_| input.is_empty())
                    .ok_or("unreadable accumulator")?;
                let pane = panes.entry(start).or_insert_with(Pane::new);
                pane.keys.insert(k, Slot { acc, dirty: false });
            }
            (State::Aligned(panes), 4) => {
                let (start, _) = start_of(rest)?;
                let pane = panes.entry(start).or_insert_with(Pane::new);
                pane.fired = true;
                pane.fired_logged = true;
            }
            (State::Session { keys, due, .. }, 1) => {
                let sessions = load_sessions(&self.agg, &mut input)
                    .filter(|_| input.is_empty())
                    .ok_or("unreadable sessions")?;
                for s in &sessions {
                    due.push(std::cmp::Reverse((s.end - 1, s.end, Key::from(rest))));
                }
                keys.insert(Key::from(rest), sessions);
            }
            (State::Global(keys), 2) => {
                let (count, acc) = load_global(&self.agg, &mut input)
                    .filter(|_| input.is_empty())
                    .ok_or("unreadable count and accumulator")?;
                keys.insert(Key::from(rest), (count, acc, false));
            }
            (_, 3) => {
                self.clock = i64::decode_all(value).ok_or("bad clock")?;
            }
            (_, tag) => return Err(format!("unexpected tag {tag} for this window kind")),
        }
        Ok(())
    }
}

/// Emits one result downstream.
async fn emit<R: 'static, N: Operator<WindowedView<R>>>(
    next: &mut N,
    tp: &flumen_client::TopicPartition,
    key: &[u8],
    start: i64,
    end: i64,
    value: R,
) -> Result<()> {
    let timestamp = if end == i64::MAX { end } else { end - 1 };
    let cx = RecordContext::new(tp, -1, timestamp, Some(key));
    next.push(
        &cx,
        Windowed {
            key,
            start,
            end,
            value,
        },
    )
    .await
}

impl<F, A, L, N> Operator<F> for WindowOp<F, A, L, N>
where
    F: Family,
    A: Aggregate<F>,
    L: Operator<F>,
    N: Operator<WindowedView<A::Out>>,
{
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        self.count += 1;
        let key = cx.key().unwrap_or_default();
        let t = if self.windows.processing_time {
            self.now
        } else {
            cx.timestamp()
        };
        let WindowOp {
            windows,
            lateness,
            emit: mode,
            agg,
            state,
            next,
            clock,
            starts,
            log,
            broken,
            file_key,
            ..
        } = self;
        if let Some(e) = broken.take() {
            return Err(e);
        }
        let logged = log.is_some();
        let (lateness, clock) = (*lateness, *clock);
        let every = *mode == Emit::EveryUpdate;
        let accepted = match (state, windows.kind) {
            (
                State::Aligned(panes),
                Kind::Aligned {
                    size,
                    slide,
                    offset,
                },
            ) => {
                aligned_starts(starts, t, (size, slide, offset), lateness, clock);
                for &start in starts.iter() {
                    let end = start + size;
                    let pane = panes.entry(start).or_insert_with(Pane::new);
                    let slot = match pane.keys.get_mut(key) {
                        Some(s) => s,
                        None => pane.keys.entry(Key::from(key)).or_insert_with(|| Slot {
                            acc: agg.create(),
                            dirty: false,
                        }),
                    };
                    agg.add(&mut slot.acc, &item);
                    slot.dirty = true;
                    pane.dirty = true;
                    // A window the clock has passed (fired, or first seen now, within its
                    // lateness) emits on every late update.
                    if end - 1 <= clock {
                        pane.fired = true;
                    }
                    if every || pane.fired {
                        let value = agg.result(&slot.acc);
                        emit(next, cx.topic_partition(), key, start, end, value).await?;
                    }
                }
                !starts.is_empty()
            }
            (State::Session { keys, due, dirty }, Kind::Session { gap }) => {
                let (start, end) = (t, t.saturating_add(gap));
                if (end - 1).saturating_add(lateness) <= clock {
                    false
                } else {
                    let sessions = match keys.get_mut(key) {
                        Some(s) => s,
                        None => keys.entry(Key::from(key)).or_default(),
                    };
                    let (pos, new) = merge_session(agg, sessions, start, end, &item);
                    let (s_start, s_end) = (sessions[pos].start, sessions[pos].end);
                    if new {
                        due.push(std::cmp::Reverse((s_end - 1, s_end, Key::from(key))));
                    }
                    if logged && !dirty.contains(key) {
                        dirty.insert(Key::from(key));
                    }
                    if every || (s_end - 1) <= clock {
                        let value = agg.result(&sessions[pos].acc);
                        emit(next, cx.topic_partition(), key, s_start, s_end, value).await?;
                    }
                    true
                }
            }
            (State::Global(keys), Kind::GlobalCount { count }) => {
                let entry = match keys.get_mut(key) {
                    Some(e) => e,
                    None => keys
                        .entry(Key::from(key))
                        .or_insert((0, agg.create(), false)),
                };
                entry.2 = true;
                add_global(
                    agg,
                    next,
                    cx,
                    (&mut entry.0, &mut entry.1),
                    count,
                    every,
                    &item,
                )
                .await?;
                true
            }
            (
                State::DiskAligned(d),
                Kind::Aligned {
                    size,
                    slide,
                    offset,
                },
            ) => {
                aligned_starts(starts, t, (size, slide, offset), lateness, clock);
                for &start in starts.iter() {
                    let end = start + size;
                    let pane = d.panes.entry(start).or_default();
                    window_key(file_key, 0, Some(start), key);
                    let (acc, created) = d.map.entry(file_key, || agg.create());
                    pane.keys += u64::from(created);
                    agg.add(acc, &item);
                    if end - 1 <= clock {
                        pane.fired = true;
                    }
                    if every || pane.fired {
                        let value = agg.result(acc);
                        emit(next, cx.topic_partition(), key, start, end, value).await?;
                    }
                }
                if let Some(e) = d.map.take_error() {
                    return Err(e);
                }
                !starts.is_empty()
            }
            (State::DiskSession { map, due, keys }, Kind::Session { gap }) => {
                let (start, end) = (t, t.saturating_add(gap));
                if (end - 1).saturating_add(lateness) <= clock {
                    false
                } else {
                    window_key(file_key, 1, None, key);
                    let (sessions, created) = map.entry(file_key, Vec::new);
                    *keys += u64::from(created);
                    let (pos, new) = merge_session(agg, sessions, start, end, &item);
                    let (s_start, s_end) = (sessions[pos].start, sessions[pos].end);
                    if new {
                        due.push(s_end - 1, s_end, key);
                    }
                    if every || (s_end - 1) <= clock {
                        let value = agg.result(&sessions[pos].acc);
                        emit(next, cx.topic_partition(), key, s_start, s_end, value).await?;
                    }
                    if let Some(e) = map.take_error() {
                        return Err(e);
                    }
                    true
                }
            }
            (State::DiskGlobal { map, keys }, Kind::GlobalCount { count }) => {
                window_key(file_key, 2, None, key);
                let (entry, created) = map.entry(file_key, || (0, agg.create()));
                *keys += u64::from(created);
                add_global(
                    agg,
                    next,
                    cx,
                    (&mut entry.0, &mut entry.1),
                    count,
                    every,
                    &item,
                )
                .await?;
                if let Some(e) = map.take_error() {
                    return Err(e);
                }
                true
            }
            _ => unreachable!("window state matches its kind"),
        };
        if accepted {
            Ok(())
        } else {
            self.late_count += 1;
            self.late.push(cx, item).await
        }
    }

    async fn advance(&mut self, time: &Time<'_>) -> Result<()> {
        self.now = time.processing_time();
        let clock = if self.windows.processing_time {
            // Processing-time windows close once the wall clock has passed their end; at the
            // end of a bounded run, every one closes.
            if time.watermark() == i64::MAX {
                i64::MAX
            } else {
                time.processing_time() - 1
            }
        } else {
            time.watermark()
        };
        if clock > self.clock {
            self.clock = clock;
            self.fire(time).await?;
        }
        self.late.advance(time).await?;
        self.next.advance(time).await
    }

    pass_on!(side);

    async fn checkpoint(&mut self) -> Result<()> {
        self.log_state().await?;
        self.late.checkpoint().await?;
        self.next.checkpoint().await
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        let (keys, bytes) = self.state_size();
        out.push(OperatorMetrics {
            name: format!("{}:window {}", out.len(), self.windows.describe()),
            records_in: self.count,
            records_late: self.late_count,
            state_bytes: bytes,
            state_keys: keys,
        });
        self.next.metrics(out);
    }
}

impl<F, A, L, N> WindowOp<F, A, L, N>
where
    F: Family,
    A: Aggregate<F>,
    N: Operator<WindowedView<A::Out>>,
{
    /// Emits the windows the clock has passed, and drops the state past its lateness.
    async fn fire(&mut self, time: &Time<'_>) -> Result<()> {
        let WindowOp {
            windows,
            lateness,
            agg,
            state,
            next,
            clock,
            emit: mode,
            log,
            dropped,
            file_key,
            ..
        } = self;
        let (lateness, clock) = (*lateness, *clock);
        // Every-update windows emitted each change already: closing only drops state.
        let final_results = *mode == Emit::Final;
        let tp = time.topic_partition();
        match (state, windows.kind) {
            (State::Aligned(panes), Kind::Aligned { size, .. }) => {
                // Panes whose last timestamp the clock has reached, oldest first.
                let limit = clock.saturating_sub(size - 1);
                for (&start, pane) in panes.range_mut(..=limit) {
                    if !pane.fired && final_results {
                        for (key, slot) in &pane.keys {
                            let value = agg.result(&slot.acc);
                            emit(next, tp, key, start, start + size, value).await?;
                        }
                    }
                    if !pane.fired {
                        pane.fired = true;
                        pane.dirty = true;
                    }
                }
                while let Some(entry) = panes.first_entry() {
                    if (*entry.key() + size - 1).saturating_add(lateness) > clock {
                        break;
                    }
                    let (start, pane) = entry.remove_entry();
                    if log.is_some() {
                        dropped.push((start, pane.keys.into_keys().collect(), pane.fired_logged));
                    }
                }
            }
            (State::Session { keys, due, dirty }, Kind::Session { .. }) => {
                while let Some(std::cmp::Reverse((at, _, _))) = due.peek() {
                    if *at > clock {
                        break;
                    }
                    let std::cmp::Reverse((_, end, key)) = due.pop().expect("peeked");
                    let Some(sessions) = keys.get_mut(&key) else {
                        continue;
                    };
                    let i = match find_due(sessions, end) {
                        Due::At(i) => i,
                        Due::Moved(end) => {
                            due.push(std::cmp::Reverse((end - 1, end, key)));
                            continue;
                        }
                        Due::Gone => continue,
                    };
                    let (result, again) =
                        close_session(agg, sessions, i, (lateness, clock), final_results);
                    if sessions.is_empty() {
                        keys.remove(&key);
                    }
                    if log.is_some() && !dirty.contains(&key) {
                        dirty.insert(key.clone());
                    }
                    if let Some((start, end, value)) = result {
                        emit(next, tp, &key, start, end, value).await?;
                    }
                    if let Some(cleanup) = again {
                        due.push(std::cmp::Reverse((cleanup, end, key)));
                    }
                }
            }
            (State::DiskAligned(d), Kind::Aligned { size, .. }) => {
                let limit = clock.saturating_sub(size - 1);
                let closing: Vec<i64> = (d.panes.range(..=limit))
                    .filter(|(_, p)| !p.fired)
                    .map(|(&start, _)| start)
                    .collect();
                for start in closing {
                    if final_results {
                        emit_window(agg, next, tp, &mut d.map, start, size).await?;
                    }
                    d.panes.get_mut(&start).expect("open").fired = true;
                }
                while let Some(entry) = d.panes.first_entry() {
                    if (*entry.key() + size - 1).saturating_add(lateness) > clock {
                        break;
                    }
                    let (start, pane) = entry.remove_entry();
                    window_key(file_key, 0, Some(start), &[]);
                    d.map.forget(file_key);
                    if log.is_some() {
                        d.dropped.push((start, pane.fired_logged));
                    } else {
                        delete_window(&mut d.map, start, None).await?;
                    }
                }
            }
            (State::DiskSession { map, due, keys }, Kind::Session { .. }) => {
                while due.peek()?.is_some_and(|at| at <= clock) {
                    let (_, end, key) = due.pop()?.expect("peeked");
                    window_key(file_key, 1, None, &key);
                    let i = match map.get(file_key).map(|s| find_due(s, end)) {
                        Some(Due::At(i)) => i,
                        Some(Due::Moved(end)) => {
                            due.push(end - 1, end, &key);
                            continue;
                        }
                        Some(Due::Gone) | None => continue,
                    };
                    let sessions = map.get_mut(file_key).expect("read");
                    let (result, again) =
                        close_session(agg, sessions, i, (lateness, clock), final_results);
                    if sessions.is_empty() {
                        map.remove(file_key);
                        *keys -= 1;
                    }
                    if let Some((start, end, value)) = result {
                        emit(next, tp, &key, start, end, value).await?;
                    }
                    if let Some(cleanup) = again {
                        due.push(cleanup, end, &key);
                    }
                }
                if let Some(e) = map.take_error() {
                    return Err(e);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes what changed since the last checkpoint to the changelog.
    async fn log_state(&mut self) -> Result<()> {
        let WindowOp {
            agg,
            state,
            clock,
            log,
            strict,
            loggable,
            logged_clock,
            dropped,
            ..
        } = self;
        if let State::DiskSession { due, .. } = state {
            // Not logged: the index follows the sessions, with a changelog or without.
            due.flush()?;
        }
        let Some(changelog) = log.as_mut() else {
            return Ok(());
        };
        if !*loggable {
            changelog.unsupported(
                *strict,
                "the window's aggregation has no changelog form (Aggregate::save): \
                 its state is not fault tolerant",
            )?;
            *log = None;
            dropped.clear();
            return Ok(());
        }
        let mut clock_bytes = Vec::new();
        if *clock != *logged_clock {
            clock.encode(&mut clock_bytes);
        }
        let clock_changed = (!clock_bytes.is_empty()).then_some(&clock_bytes[..]);
        match state {
            State::DiskAligned(d) => {
                let DiskPanes {
                    map,
                    panes,
                    dropped,
                } = &mut **d;
                let mut fired = Vec::new();
                for (start, fired_logged) in dropped.drain(..) {
                    delete_window(map, start, Some(changelog)).await?;
                    if fired_logged {
                        window_key(&mut fired, 4, Some(start), &[]);
                        map.write_raw(&fired, None, Some(changelog)).await?;
                    }
                }
                for (&start, pane) in panes.iter_mut() {
                    if pane.fired && !pane.fired_logged {
                        pane.fired_logged = true;
                        window_key(&mut fired, 4, Some(start), &[]);
                        map.write_raw(&fired, Some(&[]), Some(changelog)).await?;
                    }
                }
                flush_disk(map, changelog, clock_changed).await?;
            }
            State::DiskSession { map, .. } => flush_disk(map, changelog, clock_changed).await?,
            State::DiskGlobal { map, .. } => flush_disk(map, changelog, clock_changed).await?,
            _ => {}
        }
        if matches!(
            state,
            State::DiskAligned(_) | State::DiskSession { .. } | State::DiskGlobal { .. }
        ) {
            *logged_clock = *clock;
            return Ok(());
        }
        for (start, keys, fired_logged) in dropped.drain(..) {
            for key in keys {
                window_key(&mut changelog.key, 0, Some(start), &key);
                changelog.delete().await?;
            }
            if fired_logged {
                window_key(&mut changelog.key, 4, Some(start), &[]);
                changelog.delete().await?;
            }
        }
        if *clock != *logged_clock {
            window_key(&mut changelog.key, 3, None, &[]);
            changelog.value.clear();
            clock.encode(&mut changelog.value);
            changelog.put().await?;
            *logged_clock = *clock;
        }
        match state {
            State::Aligned(panes) => {
                for (&start, pane) in panes.iter_mut().filter(|(_, p)| p.dirty) {
                    pane.dirty = false;
                    for (key, slot) in pane.keys.iter_mut().filter(|(_, s)| s.dirty) {
                        slot.dirty = false;
                        window_key(&mut changelog.key, 0, Some(start), key);
                        changelog.value.clear();
                        agg.save(&slot.acc, &mut changelog.value);
                        changelog.put().await?;
                    }
                    if pane.fired && !pane.fired_logged {
                        pane.fired_logged = true;
                        window_key(&mut changelog.key, 4, Some(start), &[]);
                        changelog.value.clear();
                        changelog.put().await?;
                    }
                }
            }
            State::Session { keys, dirty, .. } => {
                for key in dirty.drain() {
                    window_key(&mut changelog.key, 1, None, &key);
                    match keys.get(&key) {
                        Some(sessions) => {
                            changelog.value.clear();
                            save_sessions(agg, sessions, &mut changelog.value);
                            changelog.put().await?;
                        }
                        None => changelog.delete().await?,
                    }
                }
            }
            State::Global(keys) => {
                for (key, (count, acc, dirty)) in keys.iter_mut().filter(|(_, e)| e.2) {
                    *dirty = false;
                    window_key(&mut changelog.key, 2, None, key);
                    changelog.value.clear();
                    count.encode(&mut changelog.value);
                    agg.save(acc, &mut changelog.value);
                    changelog.put().await?;
                }
            }
            State::DiskAligned(_) | State::DiskSession { .. } | State::DiskGlobal { .. } => {}
        }
        Ok(())
    }

    fn state_size(&self) -> (u64, u64) {
        let entry = |key: &Key| key.len().next_multiple_of(16) as u64 + 1;
        let acc = std::mem::size_of::<A::Acc>() as u64;
        match &self.state {
            State::Aligned(panes) => panes.values().fold((0, 0), |(k, b), p| {
                let slot = (std::mem::size_of::<Key>() as u64 + acc) * p.keys.capacity() as u64
                    / p.keys.len().max(1) as u64;
                let bytes: u64 = p
                    .keys
                    .iter()
                    .map(|(key, s)| entry(key) + slot + self.agg.heap_bytes(&s.acc) as u64)
                    .sum();
                (k + p.keys.len() as u64, b + bytes)
            }),
            State::Session { keys, due, .. } => {
                let mut bytes = due.len() as u64 * 40;
                for (key, sessions) in keys {
                    bytes += entry(key) + 40;
                    for s in sessions {
                        bytes += 24 + acc + self.agg.heap_bytes(&s.acc) as u64;
                    }
                }
                (keys.len() as u64, bytes)
            }
            State::Global(keys) => {
                let bytes = keys
                    .iter()
                    .map(|(key, (_, a, _))| entry(key) + 24 + acc + self.agg.heap_bytes(a) as u64)
                    .sum();
                (keys.len() as u64, bytes)
            }
            State::DiskAligned(d) => (
                d.panes.values().map(|p| p.keys).sum(),
                d.map.cache_bytes() as u64 + d.panes.len() as u64 * 64,
            ),
            State::DiskSession { map, due, keys } => {
                (*keys, (map.cache_bytes() + due.size_bytes()) as u64)
            }
            State::DiskGlobal { map, keys } => (*keys, map.cache_bytes() as u64),
        }
    }
}

/// The starts of the aligned windows (`size`, `slide`, `offset`) that timestamp `t` falls
/// into and that are not past their lateness at `clock`, latest first.
fn aligned_starts(
    starts: &mut Vec<i64>,
    t: i64,
    (size, slide, offset): (i64, i64, i64),
    lateness: i64,
    clock: i64,
) {
    starts.clear();
    let mut start = t - (t - offset).rem_euclid(slide);
    while start > t.saturating_sub(size) {
        // Late for this window: its state is gone or about to go.
        if start.saturating_add(size - 1).saturating_add(lateness) > clock {
            starts.push(start);
        }
        start -= slide;
    }
}

/// Adds an item's session `[start, end)` to a key's sessions (sorted by start, disjoint),
/// merging the ones it overlaps into it; returns the merged session's index, and whether it
/// is new (merged no session: it needs a due entry; a merged one's entries lead to it).
fn merge_session<F: Family, A: Aggregate<F>>(
    agg: &A,
    sessions: &mut Vec<Session<A::Acc>>,
    start: i64,
    end: i64,
    item: &F::Item<'_>,
) -> (usize, bool) {
    let mut merged = Session {
        start,
        end,
        acc: agg.create(),
        fired: false,
    };
    agg.add(&mut merged.acc, item);
    let (mut i, mut new) = (0, true);
    while i < sessions.len() {
        let s = &sessions[i];
        if s.start < merged.end && merged.start < s.end {
            new = false;
            let s = sessions.remove(i);
            merged.start = merged.start.min(s.start);
            merged.end = merged.end.max(s.end);
            merged.fired |= s.fired;
            let mut acc = s.acc;
            agg.merge(&mut acc, merged.acc);
            merged.acc = acc;
        } else {
            i += 1;
        }
    }
    let pos = sessions.partition_point(|s| s.start < merged.start);
    sessions.insert(pos, merged);
    (pos, new)
}

/// What a due entry for a key's session ending at `end` finds.
enum Due {
    /// No session holds `end` any more.
    Gone,
    /// The session merged into a longer one, ending here: its entry leads there.
    Moved(i64),
    /// The session, at this index.
    At(usize),
}

fn find_due<Acc>(sessions: &[Session<Acc>], end: i64) -> Due {
    if let Some(i) = sessions.iter().position(|s| s.end == end) {
        return Due::At(i);
    }
    match sessions.iter().find(|s| s.start < end && end < s.end) {
        Some(s) => Due::Moved(s.end),
        None => Due::Gone,
    }
}

/// A due session (session `i`): marks it fired, and returns its final result if it had not
/// fired and `final_results`, and when to look at it again (`None`: past its lateness at
/// `clock`, it is removed from `sessions`).
#[allow(clippy::type_complexity)]
fn close_session<F: Family, A: Aggregate<F>>(
    agg: &A,
    sessions: &mut Vec<Session<A::Acc>>,
    i: usize,
    (lateness, clock): (i64, i64),
    final_results: bool,
) -> (Option<(i64, i64, A::Out)>, Option<i64>) {
    let s = &mut sessions[i];
    let end = s.end;
    let mut result = None;
    if !s.fired {
        s.fired = true;
        if final_results {
            result = Some((s.start, s.end, agg.result(&s.acc)));
        }
    }
    let cleanup = (end - 1).saturating_add(lateness);
    if cleanup <= clock {
        sessions.remove(i);
        (result, None)
    } else {
        (result, Some(cleanup))
    }
}

/// Adds an item to a global window's count and accumulator; emits the result on every
/// update, or when the count is reached (then starting the window over).
async fn add_global<F: Family, A: Aggregate<F>, N: Operator<WindowedView<A::Out>>>(
    agg: &A,
    next: &mut N,
    cx: &RecordContext<'_>,
    (n, acc): (&mut u64, &mut A::Acc),
    count: u64,
    every: bool,
    item: &F::Item<'_>,
) -> Result<()> {
    agg.add(acc, item);
    *n += 1;
    if !every && *n < count {
        return Ok(());
    }
    let value = agg.result(acc);
    if *n >= count {
        *n = 0;
        *acc = agg.create();
    }
    let key = cx.key().unwrap_or_default();
    let context = RecordContext::new(cx.topic_partition(), -1, cx.timestamp(), Some(key));
    next.push(
        &context,
        Windowed {
            key,
            start: i64::MIN,
            end: i64::MAX,
            value,
        },
    )
    .await
}

/// Emits the final result of every key of aligned window `start` (on disk): its changed
/// accumulators are written to the file first, then the file is read in key order, a chunk
/// at a time.
async fn emit_window<F: Family, A: Aggregate<F>, N: Operator<WindowedView<A::Out>>>(
    agg: &A,
    next: &mut N,
    tp: &flumen_client::TopicPartition,
    map: &mut DiskMap<A::Acc>,
    start: i64,
    size: i64,
) -> Result<()> {
    let mut from = Vec::new();
    window_key(&mut from, 0, Some(start), &[]);
    map.spill(&from)?;
    let to = prefix_end(&from);
    let mut chunk = crate::disk_store::Batch::default();
    loop {
        chunk.clear();
        map.local().scan_range(&from, &to, |k, v| {
            chunk.put(k, v);
            chunk.len_bytes() < 1 << 20
        })?;
        let mut last = None;
        for (k, v) in chunk.iter() {
            let mut input = v.unwrap_or_default();
            let acc = agg
                .load(&mut input)
                .filter(|_| input.is_empty())
                .ok_or_else(|| Error::Io {
                    context: format!("{:?}: window {start}", map.local()),
                    source: std::io::Error::other(format!(
                        "key \"{}\": unreadable accumulator",
                        k.escape_ascii()
                    )),
                })?;
            emit(next, tp, &k[9..], start, start + size, agg.result(&acc)).await?;
            last = Some(k);
        }
        let Some(last) = last else {
            return Ok(());
        };
        // Next: the first key after the last one read.
        from.clear();
        from.extend_from_slice(last);
        from.push(0);
    }
}

/// Deletes aligned window `start`'s entries from the file (on disk), a chunk at a time,
/// and with `log` tombstones each in the changelog.
async fn delete_window<Acc>(
    map: &mut DiskMap<Acc>,
    start: i64,
    mut log: Option<&mut Changelog>,
) -> Result<()> {
    let mut from = Vec::new();
    window_key(&mut from, 0, Some(start), &[]);
    let to = prefix_end(&from);
    let mut chunk = crate::disk_store::Batch::default();
    loop {
        chunk.clear();
        map.local().scan_range(&from, &to, |k, _| {
            chunk.delete(k);
            chunk.len_bytes() < 1 << 20
        })?;
        if chunk.is_empty() {
            return Ok(());
        }
        for (k, _) in chunk.iter() {
            map.write_raw(k, None, log.as_deref_mut()).await?;
        }
        // The next scan starts past what this one deleted.
        map.commit(None)?;
    }
}

/// Writes a disk window store's changes to the file and the changelog (with the clock, if
/// it changed).
async fn flush_disk<V>(
    map: &mut DiskMap<V>,
    log: &mut Changelog,
    clock: Option<&[u8]>,
) -> Result<()> {
    if let Some(clock) = clock {
        map.write_raw(&[3], Some(clock), Some(log)).await?;
    }
    map.write_changes(Some(log)).await?;
    map.commit(Some(log))
}

/// The tag of the sessions' due index in the store file (not logged; see `DueIndex`).
const DUE_TAG: u8 = 5;

/// The smallest key above every key starting with `prefix` (which is not all `0xff`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            break;
        }
    }
    end
}

/// A window key's start (8 bytes, big-endian) and the rest.
fn window_start(rest: &[u8]) -> std::result::Result<(i64, &[u8]), String> {
    let (start, k) = rest.split_at_checked(8).ok_or("short window key")?;
    let start = i64::from_be_bytes(start.try_into().map_err(|_| "short window key")?);
    Ok((start, k))
}

/// A key's sessions in the changelog: their count, then each one's start, end, fired flag
/// and accumulator.
fn save_sessions<F: Family, A: Aggregate<F>>(
    agg: &A,
    sessions: &[Session<A::Acc>],
    out: &mut Vec<u8>,
) -> bool {
    crate::codec::put_varint(out, sessions.len() as u64);
    sessions.iter().all(|s| {
        s.start.encode(out);
        s.end.encode(out);
        s.fired.encode(out);
        agg.save(&s.acc, out)
    })
}

fn load_sessions<F: Family, A: Aggregate<F>>(
    agg: &A,
    input: &mut &[u8],
) -> Option<Vec<Session<A::Acc>>> {
    let n = crate::codec::get_varint(input)?;
    let mut sessions = Vec::with_capacity(usize::try_from(n).ok()?.min(1024));
    for _ in 0..n {
        let start = i64::decode(input)?;
        let end = i64::decode(input)?;
        let fired = bool::decode(input)?;
        let acc = agg.load(input)?;
        sessions.push(Session {
            start,
            end,
            acc,
            fired,
        });
    }
    Some(sessions)
}

fn load_global<F: Family, A: Aggregate<F>>(agg: &A, input: &mut &[u8]) -> Option<(u64, A::Acc)> {
    let count = u64::decode(input)?;
    Some((count, agg.load(input)?))
}

/// The store file's form of an aligned window's accumulator (its changelog value).
struct AccForm<F, A>(A, PhantomData<fn() -> F>);

impl<F: Family, A: Aggregate<F>> StateForm<A::Acc> for AccForm<F, A> {
    fn save(&self, acc: &A::Acc, out: &mut Vec<u8>) -> bool {
        self.0.save(acc, out)
    }

    fn load(&self, input: &mut &[u8]) -> Option<A::Acc> {
        self.0.load(input)
    }

    fn heap_bytes(&self, acc: &A::Acc) -> usize {
        self.0.heap_bytes(acc)
    }
}

/// The store file's form of a key's sessions.
struct SessionsForm<F, A>(A, PhantomData<fn() -> F>);

impl<F: Family, A: Aggregate<F>> StateForm<Vec<Session<A::Acc>>> for SessionsForm<F, A> {
    fn save(&self, sessions: &Vec<Session<A::Acc>>, out: &mut Vec<u8>) -> bool {
        save_sessions(&self.0, sessions, out)
    }

    fn load(&self, input: &mut &[u8]) -> Option<Vec<Session<A::Acc>>> {
        load_sessions(&self.0, input)
    }

    fn heap_bytes(&self, sessions: &Vec<Session<A::Acc>>) -> usize {
        let each = std::mem::size_of::<Session<A::Acc>>();
        sessions.capacity() * each
            + sessions
                .iter()
                .map(|s| self.0.heap_bytes(&s.acc))
                .sum::<usize>()
    }
}

/// The store file's form of a global window's count and accumulator.
struct GlobalForm<F, A>(A, PhantomData<fn() -> F>);

impl<F: Family, A: Aggregate<F>> StateForm<(u64, A::Acc)> for GlobalForm<F, A> {
    fn save(&self, (count, acc): &(u64, A::Acc), out: &mut Vec<u8>) -> bool {
        count.encode(out);
        self.0.save(acc, out)
    }

    fn load(&self, input: &mut &[u8]) -> Option<(u64, A::Acc)> {
        load_global(&self.0, input)
    }

    fn heap_bytes(&self, (_, acc): &(u64, A::Acc)) -> usize {
        self.0.heap_bytes(acc)
    }
}

/// A window store's changelog key: `tag`, the window start (big-endian) if any, the key.
fn window_key(out: &mut Vec<u8>, tag: u8, start: Option<i64>, key: &[u8]) {
    out.clear();
    out.push(tag);
    if let Some(start) = start {
        out.extend_from_slice(&start.to_be_bytes());
    }
    out.extend_from_slice(key);
}

/// Where late items go: nowhere but the count ([`NoLate`]), or a topic.
pub trait LateSpec<F: Family>: Send + Sync + 'static {
    /// The operator late items are pushed into.
    type Op: Operator<F>;
    /// Builds it for one task.
    fn build(&self, env: &TaskEnv) -> Self::Op;
    /// For the operator graph.
    fn describe(&self) -> Option<String>;
}

/// Late items are counted (`records_late` in the window's metrics) and logged, not written.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLate;

/// Counts late items it is handed and logs the first.
#[derive(Debug, Default)]
pub struct CountLate {
    seen: u64,
}

impl<F: Family> Operator<F> for CountLate {
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, _: F::Item<'a>) -> Result<()> {
        if self.seen == 0 {
            tracing::warn!(tp = %cx.topic_partition(), offset = cx.offset(), timestamp = cx.timestamp(),
                "a record came after its windows closed; it is counted as late (set a late output to keep it)");
        }
        self.seen += 1;
        Ok(())
    }

    async fn advance(&mut self, _: &Time<'_>) -> Result<()> {
        Ok(())
    }

    fn metrics(&self, _: &mut Vec<OperatorMetrics>) {}
}

impl<F: Family> LateSpec<F> for NoLate {
    type Op = CountLate;
    fn build(&self, _: &TaskEnv) -> CountLate {
        CountLate::default()
    }
    fn describe(&self) -> Option<String> {
        None
    }
}

/// Late items are written to a topic with a format, key, headers and timestamp kept.
pub struct LateTo<E> {
    pub(crate) topic: String,
    pub(crate) encoder: E,
}

impl<F, E> LateSpec<F> for LateTo<E>
where
    F: Family,
    E: crate::format::Encode<F>,
{
    type Op = crate::operator::Sink<E, crate::stream::FixedTopic<F>>;
    fn build(&self, env: &TaskEnv) -> Self::Op {
        crate::operator::Sink {
            topic: crate::operator::TopicChoice::Fixed(self.topic.clone()),
            encoder: self.encoder.clone(),
            output: env.output.clone(),
            scratch: Vec::new(),
            headers: Vec::new(),
            count: 0,
        }
    }
    fn describe(&self) -> Option<String> {
        Some(self.topic.clone())
    }
}

/// Late items go to a topic if there is one, else are counted as with [`NoLate`]: one type
/// for both, for programs that choose at run time ([`WindowedStream::late_to_if`]).
impl<F, E> LateSpec<F> for Option<LateTo<E>>
where
    F: Family,
    E: crate::format::Encode<F>,
{
    type Op = MaybeLate<<LateTo<E> as LateSpec<F>>::Op>;
    fn build(&self, env: &TaskEnv) -> Self::Op {
        match self {
            Some(to) => MaybeLate::To(LateSpec::<F>::build(to, env)),
            None => MaybeLate::Count(CountLate::default()),
        }
    }
    fn describe(&self) -> Option<String> {
        self.as_ref().and_then(LateSpec::<F>::describe)
    }
}

/// The late operator of an `Option<LateTo<_>>`: counting, or writing to the topic.
#[derive(Debug)]
pub enum MaybeLate<O> {
    /// No late output: late items are counted.
    Count(CountLate),
    /// The late output's sink.
    To(O),
}

impl<F: Family, O: Operator<F>> Operator<F> for MaybeLate<O> {
    async fn push<'a>(&mut self, cx: &RecordContext<'a>, item: F::Item<'a>) -> Result<()> {
        match self {
            MaybeLate::Count(c) => Operator::<F>::push(c, cx, item).await,
            MaybeLate::To(o) => o.push(cx, item).await,
        }
    }

    async fn advance(&mut self, time: &Time<'_>) -> Result<()> {
        match self {
            MaybeLate::Count(c) => Operator::<F>::advance(c, time).await,
            MaybeLate::To(o) => o.advance(time).await,
        }
    }

    async fn checkpoint(&mut self) -> Result<()> {
        match self {
            MaybeLate::Count(c) => Operator::<F>::checkpoint(c).await,
            MaybeLate::To(o) => o.checkpoint().await,
        }
    }

    fn metrics(&self, out: &mut Vec<OperatorMetrics>) {
        match self {
            MaybeLate::Count(c) => Operator::<F>::metrics(c, out),
            MaybeLate::To(o) => o.metrics(out),
        }
    }
}

/// A stream cut into windows, before its aggregation (built by [`Stream::window`]).
pub struct WindowedStream<'p, D: Decode, F: Family, C, L> {
    stream: Stream<'p, D, F, C>,
    windows: Windows,
    lateness: i64,
    emit: Emit,
    late: L,
}

impl<D: Decode, F: Family, C, L> std::fmt::Debug for WindowedStream<'_, D, F, C, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream")
            .field("windows", &self.windows)
            .field("lateness", &self.lateness)
            .field("emit", &self.emit)
            .finish_non_exhaustive()
    }
}

impl<'p, D, F, C> Stream<'p, D, F, C>
where
    D: Decode,
    F: Family,
    C: Chain<D::Family, F>,
{
    /// Cuts the stream, per record key, into `windows`; an aggregation
    /// ([`WindowedStream::aggregate`], [`WindowedStream::count`]) follows.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flumen_runtime::{Kafka, Pipeline, format::{Json, Utf8}, window::Windows};
    ///
    /// let mut pipeline = Pipeline::new();
    /// pipeline
    ///     .source(Kafka::topic("words").format(Utf8))
    ///     .window(Windows::tumbling(Duration::from_secs(5)))
    ///     .count()
    ///     .map(|w| serde_json::json!({"word": w.key_str(), "start": w.start, "count": w.value}))
    ///     .to("counts", Json::<serde_json::Value>::new());
    /// ```
    pub fn window(self, windows: Windows) -> WindowedStream<'p, D, F, C, NoLate> {
        WindowedStream {
            stream: self,
            windows,
            lateness: 0,
            emit: Emit::Final,
            late: NoLate,
        }
    }
}

impl<'p, D, F, C, L> WindowedStream<'p, D, F, C, L>
where
    D: Decode,
    F: Family,
    C: Chain<D::Family, F>,
    L: LateSpec<F>,
{
    /// How long after a window closes a late record still updates it (and re-emits its
    /// result); default zero.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// When results are emitted (default [`Emit::Final`]).
    pub fn emit(mut self, emit: Emit) -> Self {
        self.emit = emit;
        self
    }

    /// Writes records too late for their windows to `topic` with `format`, key, headers and
    /// timestamp kept (a late side output).
    pub fn late_to<E: Encode<F>>(
        self,
        topic: impl Into<String>,
        format: E,
    ) -> WindowedStream<'p, D, F, C, LateTo<E>> {
        self.with_late(LateTo {
            topic: topic.into(),
            encoder: format,
        })
    }

    /// [`late_to`](Self::late_to) with `Some((topic, format))`; with `None`, late records
    /// are counted as without a late output. One stream type for both, for a program that
    /// reads the choice from its configuration.
    pub fn late_to_if<E: Encode<F>>(
        self,
        late: Option<(String, E)>,
    ) -> WindowedStream<'p, D, F, C, Option<LateTo<E>>> {
        self.with_late(late.map(|(topic, encoder)| LateTo { topic, encoder }))
    }

    fn with_late<L2>(self, late: L2) -> WindowedStream<'p, D, F, C, L2> {
        WindowedStream {
            stream: self.stream,
            windows: self.windows,
            lateness: self.lateness,
            emit: self.emit,
            late,
        }
    }

    /// Aggregates each key's items per window with `agg`.
    #[allow(clippy::type_complexity)]
    pub fn aggregate<A: Aggregate<F>>(
        self,
        agg: A,
    ) -> Stream<'p, D, WindowedView<A::Out>, WindowLink<C, A, L, F>> {
        let WindowedStream {
            mut stream,
            windows,
            lateness,
            emit,
            late,
        } = self;
        let mut name = format!("window {}", windows.describe());
        if lateness > 0 {
            name.push_str(&format!(" lateness {lateness} ms"));
        }
        if let Some(topic) = late.describe() {
            name.push_str(&format!(" late->{topic}"));
            stream.side_outputs.push(topic);
        }
        let store = format!("window-{}", stream.pipeline.stores);
        stream.pipeline.stores += 1;
        stream.stores.push(store.clone());
        let link = WindowLink {
            store,
            chain: stream.chain.clone(),
            windows,
            lateness,
            emit,
            agg,
            late: std::sync::Arc::new(late),
            _family: PhantomData,
        };
        stream.then(&name, link)
    }

    /// Counts each key's items per window.
    #[allow(clippy::type_complexity)]
    pub fn count(self) -> Stream<'p, D, WindowedView<u64>, WindowLink<C, Count, L, F>> {
        self.aggregate(Count)
    }
}

/// Description of a window and its aggregation.
pub struct WindowLink<C, A, L, F> {
    /// The state store's name (its changelog topic is `<application.id>-<store>-changelog`).
    store: String,
    chain: C,
    windows: Windows,
    lateness: i64,
    emit: Emit,
    agg: A,
    late: std::sync::Arc<L>,
    _family: PhantomData<fn() -> F>,
}

impl<C: Clone, A: Clone, L, F> Clone for WindowLink<C, A, L, F> {
    fn clone(&self) -> Self {
        WindowLink {
            store: self.store.clone(),
            chain: self.chain.clone(),
            windows: self.windows,
            lateness: self.lateness,
            emit: self.emit,
            agg: self.agg.clone(),
            late: self.late.clone(),
            _family: PhantomData,
        }
    }
}

impl<In, F, C, A, L> Chain<In, WindowedView<A::Out>> for WindowLink<C, A, L, F>
where
    In: Family,
    F: Family,
    C: Chain<In, F>,
    A: Aggregate<F>,
    L: LateSpec<F>,
{
    type Out<N: Operator<WindowedView<A::Out>>> = C::Out<WindowOp<F, A, L::Op, N>>;
    fn build<N: Operator<WindowedView<A::Out>>>(&self, env: &TaskEnv, next: N) -> Self::Out<N> {
        let mut op = WindowOp::new(
            self.windows,
            self.lateness,
            self.emit,
            self.agg.clone(),
            self.late.build(env),
            next,
        );
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
