//! Keyed state in on-disk stores, run in memory: with a cache far smaller than the state, a
//! run gives the memory store's outputs, also across a crash and a full restore of the file
//! from the changelog, and the TTL drops states that only the file holds.

use std::time::Duration;

use flumen_runtime::aggregate;
use flumen_runtime::codec::StateCodec;
use flumen_runtime::format::{Json, StrView, Utf8};
use flumen_runtime::state::{KeyedContext, KeyedProcess, StateSize, Timer, ValueState};
use flumen_runtime::testing::MemoryRun;
use flumen_runtime::window::{Emit, Windows};
use flumen_runtime::{Kafka, MemoryRecord, Pipeline};

/// Per key: a count and the sum of the values; an event-time timer 100 ms after a key's
/// first record reports both.
#[derive(Clone)]
struct Tally;

#[derive(Default)]
struct State(ValueState<u64>, ValueState<u64>);

impl StateSize for State {}

impl KeyedProcess<StrView> for Tally {
    type State = State;
    type Out = String;

    fn process(&mut self, cx: &mut KeyedContext<'_, State, String>, value: &str) {
        let n = cx.state.0.get().copied().unwrap_or(0);
        if n == 0 {
            let at = cx.timestamp() + 100;
            cx.set_event_timer(at);
        }
        cx.state.0.set(n + 1);
        let sum = cx.state.1.get().copied().unwrap_or(0) + value.parse::<u64>().unwrap_or(0);
        cx.state.1.set(sum);
        cx.emit(format!(
            "{}={}/{sum}",
            String::from_utf8_lossy(cx.key()),
            n + 1
        ));
    }

    fn on_timer(&mut self, cx: &mut KeyedContext<'_, State, String>, timer: Timer) {
        let n = cx.state.0.get().copied().unwrap_or(0);
        // A timer's change to the state is kept like a record's.
        cx.state.1.set(0);
        cx.emit(format!(
            "{}@{}:{n}",
            String::from_utf8_lossy(cx.key()),
            timer.timestamp
        ));
    }

    fn save_state(&self, state: &State, out: &mut Vec<u8>) -> bool {
        state.0.encode(out);
        state.1.encode(out);
        true
    }

    fn load_state(&self, input: &mut &[u8]) -> Option<State> {
        Some(State(
            ValueState::decode(input)?,
            ValueState::decode(input)?,
        ))
    }
}

fn pipeline(ttl: Option<Duration>) -> Pipeline {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .process_keyed_with_ttl(Tally, ttl)
        .to("out", Utf8);
    p
}

/// 3 000 keys, each seen several times, timestamps rising by 1 ms per record.
fn input() -> Vec<MemoryRecord> {
    (0..12_000u64)
        .map(|i| {
            let key = format!("k{}", (i * 7919) % 3_000);
            MemoryRecord::new(Some(key.as_bytes()), i.to_string().as_bytes(), i as i64)
        })
        .collect()
}

fn values(run: &mut MemoryRun<'_>) -> Vec<String> {
    run.take_output()
        .into_iter()
        .map(|r| String::from_utf8(r.value).expect("utf-8"))
        .collect()
}

/// Runs `input` in chunks of 1 000 with a checkpoint after each; with `crash`, the 7th
/// chunk's first half is processed, lost in a crash, and the chunk pushed again.
fn run(mut run: MemoryRun<'_>, crash: bool) -> (Vec<String>, u64) {
    let input = input();
    for (n, chunk) in input.chunks(1_000).enumerate() {
        if crash && n == 6 {
            run.push("in", 0, &chunk[..500]).expect("push");
            run.restart();
        }
        run.push("in", 0, chunk).expect("push");
        run.checkpoint().expect("checkpoint");
    }
    run.end_of_input().expect("end");
    let keys = run.task_metrics(0, 0).expect("task").1[0].state_keys;
    (values(&mut run), keys)
}

#[test]
fn a_small_cache_over_the_disk_gives_the_memory_stores_outputs_also_across_a_crash() {
    let p = pipeline(None);
    let (memory, memory_keys) = run(MemoryRun::new(&p, "app").with_changelogs(), false);
    assert_eq!(memory_keys, 3_000);
    for crash in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = MemoryRun::new(&p, "app")
            .with_changelogs()
            .with_disk_state(dir.path(), 16 << 10);
        let (out, keys) = run(disk, crash);
        assert_eq!(keys, 3_000);
        assert_eq!(out.len(), memory.len(), "crash: {crash}");
        assert!(out == memory, "crash: {crash}: outputs differ");
    }
}

#[test]
fn the_ttl_drops_states_that_only_the_file_holds() {
    let p = pipeline(Some(Duration::from_millis(500)));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = MemoryRun::new(&p, "app").with_disk_state(dir.path(), 4 << 10);
    let records: Vec<MemoryRecord> = (0..1_000)
        .map(|i| MemoryRecord::new(Some(format!("k{i}").as_bytes()), b"1", 0))
        .collect();
    run.push("in", 0, &records).expect("push");
    let keys = |run: &MemoryRun<'_>| run.task_metrics(0, 0).expect("task").1[0].state_keys;
    assert_eq!(keys(&run), 1_000);
    // Most states were evicted to the file; the sweep drops those too.
    run.set_processing_time(100_000).expect("tick");
    assert_eq!(keys(&run), 0);
    run.take_output();
    run.push("in", 0, &records[..1]).expect("push");
    assert_eq!(
        run.take_output()
            .into_iter()
            .map(|r| String::from_utf8(r.value).expect("utf-8"))
            .collect::<Vec<_>>(),
        ["k0=1/1"],
        "counting starts over"
    );
}

/// Per key and window, the count and the sum of the values (`Emit::Final`, or every update).
fn windowed(windows: Windows, emit: Emit) -> Pipeline {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .window(windows)
        .allowed_lateness(Duration::from_millis(50))
        .emit(emit)
        .aggregate((
            aggregate::count(),
            aggregate::sum(|v: &&str| v.parse::<u64>().unwrap_or(0)),
        ))
        .map(|w| format!("{} {} {} {:?}", w.key_str(), w.start, w.end, w.value))
        .to("out", Utf8);
    p
}

/// Window state of 8 000 keys per window in files behind a 16 KiB cache: the outputs of the
/// memory store, also across a crash, as many keys, a fraction of its bytes in memory
/// (sessions' due index included); the dropped windows leave the file, with or without a
/// changelog.
#[test]
fn window_state_on_disk_gives_the_memory_stores_outputs_with_a_small_cache() {
    let records: Vec<MemoryRecord> = (0..24_000u64)
        .map(|i| {
            let key = format!("k{}", (i * 7919) % 8_000);
            let ts = (i / 8) as i64;
            MemoryRecord::new(Some(key.as_bytes()), i.to_string().as_bytes(), ts)
        })
        .collect();
    // The share of the memory store's bytes the disk state may keep in memory at most.
    let cases = [
        (
            Windows::tumbling(Duration::from_millis(1_000)),
            Emit::Final,
            4,
        ),
        (
            Windows::sliding(Duration::from_millis(1_000), Duration::from_millis(500)),
            Emit::Final,
            4,
        ),
        (
            Windows::tumbling(Duration::from_millis(700)),
            Emit::EveryUpdate,
            4,
        ),
        (Windows::session(Duration::from_millis(300)), Emit::Final, 4),
        (Windows::global_count(2), Emit::Final, 4),
    ];
    for (windows, emit, share) in cases {
        let p = windowed(windows, emit);
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let state = |run: &MemoryRun<'_>| {
            let m = &run.task_metrics(0, 0).expect("task").1[0];
            (m.state_keys, m.state_bytes)
        };
        let mut memory = MemoryRun::new(&p, "app");
        memory.push("in", 0, &records[..16_000]).expect("push");
        let (memory_keys, memory_bytes) = state(&memory);
        memory.push("in", 0, &records[16_000..]).expect("push");
        memory.end_of_input().expect("end");
        let expected = sorted(values(&mut memory));
        assert!(expected.len() >= 8_000, "{windows:?}: {}", expected.len());
        for logged in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let run = MemoryRun::new(&p, "app");
            let run = if logged { run.with_changelogs() } else { run };
            let mut disk = run.with_disk_state(dir.path(), 16 << 10);
            disk.push("in", 0, &records[..16_000]).expect("push");
            let what = format!("{windows:?} {emit:?}, logged {logged}");
            // After a checkpoint: what a flush leaves in memory.
            disk.checkpoint().expect("checkpoint");
            let (keys, bytes) = state(&disk);
            assert_eq!(keys, memory_keys, "{what}: keys");
            assert!(
                bytes * share < memory_bytes,
                "{what}: {bytes} bytes in memory, the memory store's {memory_bytes}"
            );
            assert!(
                dir.path().join("app/window-0-0/state.redb").exists(),
                "{what}"
            );
            if logged {
                // A crash: the tasks start again from the changelogs, into emptied files.
                disk.push("in", 0, &records[16_000..20_000]).expect("push");
                disk.restart();
            }
            disk.push("in", 0, &records[16_000..]).expect("push");
            disk.end_of_input().expect("end");
            disk.checkpoint().expect("checkpoint");
            assert!(
                sorted(values(&mut disk)) == expected,
                "{what}: outputs differ"
            );
            if windows != Windows::global_count(2) {
                assert_eq!(state(&disk).0, 0, "{what}: every window dropped");
            }
        }
    }
}

/// A two-stream join's buffers (several records per key) in files behind a 16 KiB cache: the
/// memory store's outputs (pairs and, outer, the unpaired), also across a crash, and a
/// fraction of its bytes in memory (the due index included).
#[test]
fn join_buffers_on_disk_give_the_memory_stores_outputs_with_a_small_cache() {
    use flumen_runtime::join::StreamJoinKind;
    let mut p = Pipeline::new();
    p.source2(
        Kafka::topic("clicks").format(Json::<String>::new()),
        Kafka::topic("views").format(Json::<String>::new()),
    )
    .join_within(
        Duration::from_millis(40),
        StreamJoinKind::Outer,
        |c: Option<&String>, v: Option<&String>| format!("{c:?} {v:?}"),
    )
    .to("out", Utf8);
    let side = |topic: &str, keys: u64, step: i64| -> Vec<MemoryRecord> {
        (0..12_000u64)
            .map(|i| {
                let key = format!("k{}", (i * 7919) % keys);
                let value = format!("\"{topic} {i}\"");
                MemoryRecord::new(Some(key.as_bytes()), value.as_bytes(), i as i64 / step)
            })
            .collect()
    };
    // Clicks of 500 keys; views of 400 of them, at another pace.
    let (clicks, views) = (side("clicks", 500, 60), side("views", 400, 50));
    let run = |mut run: MemoryRun<'_>, crash: bool| {
        for (n, (c, v)) in clicks.chunks(1_000).zip(views.chunks(1_000)).enumerate() {
            if crash && n == 6 {
                // Lost in a crash: the tasks start again from the changelogs.
                run.push("clicks", 0, &c[..500]).expect("push");
                run.push("views", 0, &v[..500]).expect("push");
                run.restart();
            }
            run.push("clicks", 0, c).expect("push");
            run.push("views", 0, v).expect("push");
            run.checkpoint().expect("checkpoint");
        }
        let m = &run.task_metrics(0, 0).expect("task").1[0];
        let (keys, bytes) = (m.state_keys, m.state_bytes);
        run.end_of_input().expect("end");
        let mut out = values(&mut run);
        out.sort();
        (out, keys, bytes)
    };
    let (expected, keys, memory_bytes) = run(MemoryRun::new(&p, "app").with_changelogs(), false);
    assert!(
        expected.iter().any(|o| o.ends_with(" None")),
        "unpaired clicks"
    );
    assert!(expected.iter().any(|o| !o.contains("None")), "pairs");
    for logged in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = MemoryRun::new(&p, "app");
        let disk = if logged { disk.with_changelogs() } else { disk };
        let (out, disk_keys, bytes) = run(disk.with_disk_state(dir.path(), 16 << 10), logged);
        assert_eq!(disk_keys, keys, "logged {logged}");

        assert!(
            bytes * 4 < memory_bytes,
            "logged {logged}: {bytes} bytes in memory, the memory store's {memory_bytes}"
        );
        assert!(out == expected, "logged {logged}: outputs differ");
    }
}

/// Per key, a timeout 5 s of event time after its last record (the previous timeout
/// deleted): the timer reports how many records the key had.
#[derive(Clone)]
struct Timeout;

#[derive(Default)]
struct Pending(ValueState<u64>, ValueState<i64>);

impl StateSize for Pending {}

impl KeyedProcess<StrView> for Timeout {
    type State = Pending;
    type Out = String;

    fn process(&mut self, cx: &mut KeyedContext<'_, Pending, String>, _: &str) {
        if let Some(&at) = cx.state.1.get() {
            cx.delete_event_timer(at);
        }
        let at = cx.timestamp() + 5_000;
        cx.set_event_timer(at);
        cx.state.1.set(at);
        let n = cx.state.0.get().copied().unwrap_or(0);
        cx.state.0.set(n + 1);
    }

    fn on_timer(&mut self, cx: &mut KeyedContext<'_, Pending, String>, timer: Timer) {
        let n = cx.state.0.get().copied().unwrap_or(0);
        cx.state.0.set(0);
        cx.emit(format!(
            "{}@{}:{n}",
            String::from_utf8_lossy(cx.key()),
            timer.timestamp
        ));
    }

    fn save_state(&self, state: &Pending, out: &mut Vec<u8>) -> bool {
        state.0.encode(out);
        state.1.encode(out);
        true
    }

    fn load_state(&self, input: &mut &[u8]) -> Option<Pending> {
        Some(Pending(
            ValueState::decode(input)?,
            ValueState::decode(input)?,
        ))
    }
}

/// Thousands of timers pending at once: on disk, memory holds only the earliest of them (the
/// state-size metric, which counts timers, stays a fraction of the memory store's), and the
/// timers fire as they do in memory, in the same order, also across a crash and a restore.
#[test]
fn timers_on_disk_fire_as_in_memory_while_memory_holds_only_the_earliest() {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .process_keyed(Timeout)
        .to("out", Utf8);
    // Two records in three: 20 000 keys, each seen every 30 s of event time (a timeout
    // each time: about 3 300 pending). The third: 100 keys seen every 300 ms, which time out
    // at the end only.
    let input: Vec<MemoryRecord> = (0..60_000u64)
        .map(|i| {
            let key = if i % 3 == 0 {
                format!("hot{}", i % 300)
            } else {
                format!("k{}", (i * 7919) % 20_000)
            };
            MemoryRecord::new(Some(key.as_bytes()), b"1", i as i64)
        })
        .collect();
    let run = |mut run: MemoryRun<'_>, crash: bool| {
        let mut bytes = 0;
        for (n, chunk) in input.chunks(5_000).enumerate() {
            if crash && n == 7 {
                run.push("in", 0, &chunk[..2_500]).expect("push");
                run.restart();
            }
            run.push("in", 0, chunk).expect("push");
            run.checkpoint().expect("checkpoint");
            bytes = bytes.max(run.task_metrics(0, 0).expect("task").1[0].state_bytes);
        }
        run.end_of_input().expect("end");
        (values(&mut run), bytes)
    };
    let (expected, memory_bytes) = run(MemoryRun::new(&p, "app").with_changelogs(), false);
    let counts: Vec<u64> = expected
        .iter()
        .map(|o| {
            o.rsplit_once(':')
                .and_then(|(_, n)| n.parse().ok())
                .expect("count")
        })
        .collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        60_000,
        "every record in one timeout"
    );
    assert_eq!(
        counts.iter().filter(|&&n| n == 200).count(),
        100,
        "hot keys"
    );
    assert_eq!(counts.len(), 40_000 + 100);
    for crash in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = MemoryRun::new(&p, "app")
            .with_changelogs()
            .with_disk_state(dir.path(), 16 << 10);
        let (out, bytes) = run(disk, crash);
        assert!(
            bytes * 8 < memory_bytes,
            "crash {crash}: {bytes} bytes in memory, the memory store's {memory_bytes}"
        );
        assert_eq!(out.len(), expected.len(), "crash {crash}");
        assert!(out == expected, "crash {crash}: outputs differ");
    }
}
