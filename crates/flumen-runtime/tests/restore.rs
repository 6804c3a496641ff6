//! Window state logged to changelogs and restored, run in memory: a run that crashes after a
//! checkpoint and restarts from it (its later outputs dropped, as an aborted transaction's)
//! emits exactly what a run without failure emits, and its stores hold exactly the same state;
//! the same with the window stores in on-disk files behind a cache far smaller than the state.

use std::time::Duration;

use flumen_runtime::aggregate::{self, Aggregate};
use flumen_runtime::format::{Json, Owned, Utf8};
use flumen_runtime::testing::MemoryRun;
use flumen_runtime::testing::visits::{Visit, VisitGen};
use flumen_runtime::time::Watermarks;
use flumen_runtime::window::{Emit, Windows};
use flumen_runtime::{Kafka, MemoryRecord, Pipeline};

/// Per URL and 1-second window: views, distinct users, errors, latency percentiles (past 64
/// values: the histogram form) and the top 3 users; then per window the top 2 URLs (a second
/// window store, after a repartition).
/// Views, users, errors, latency percentiles, top users.
type Stats = (u64, u64, u64, Vec<u64>, Vec<(String, u64)>);

fn stats() -> impl Aggregate<Owned<Visit>, Out = Stats> {
    (
        aggregate::count(),
        aggregate::distinct_count_by_ref(|v: &Visit| v.user.as_str()),
        aggregate::sum(|v: &Visit| u64::from(v.is_error())),
        aggregate::percentiles(&[0.5, 0.99], |v: &Visit| u64::from(v.latency_ms)),
        aggregate::top_n(3, |v: &Visit| (v.user.clone(), u64::from(v.latency_ms))),
    )
}

/// A store's contents with each accumulator (tag 0 keys) read back and shown as its result:
/// the bytes of hash sets and maps depend on their iteration order, their contents do not.
fn decoded<A: Aggregate<Owned<Visit>>>(entries: Vec<(Vec<u8>, Vec<u8>)>, agg: &A) -> Vec<String>
where
    A::Out: std::fmt::Debug,
{
    entries
        .into_iter()
        .map(|(k, v)| {
            if k.first() == Some(&0) {
                let acc = agg.load(&mut v.as_slice()).expect("readable accumulator");
                format!("{k:?} {:?}", agg.result(&acc))
            } else {
                format!("{k:?} {v:?}")
            }
        })
        .collect()
}

fn visits_pipeline(windows: Windows) -> Pipeline {
    let mut p = Pipeline::new();
    p.source(
        Kafka::topic("visits")
            .format(Json::<Visit>::new())
            .timestamps(|v: &Visit| v.ts)
            .watermarks(Watermarks::bounded(Duration::from_millis(200))),
    )
    .key_by("by-url", |v: &Visit| v.url.clone(), Json::<Visit>::new())
    .window(windows)
    .allowed_lateness(Duration::from_millis(300))
    .late_to("late", Json::<Visit>::new())
    .aggregate(stats())
    .map(|w| {
        let url = w.key_str().into_owned();
        let (views, users, errors, latency, top) = w.value;
        serde_json::json!({
            "url": url, "start": w.start, "views": views, "users": users,
            "errors": errors, "p50": latency[0], "p99": latency[1], "top": top,
        })
    })
    .also_to(
        "stats",
        Json::<serde_json::Value>::new(),
        |s: &serde_json::Value| Some(s.clone()),
    )
    .key_by(
        "by-window",
        |s: &serde_json::Value| s["start"].to_string(),
        Json::<serde_json::Value>::new(),
    )
    .window(windows)
    .allowed_lateness(Duration::from_millis(300))
    .aggregate(aggregate::top_n(2, |s: &serde_json::Value| {
        (
            s["url"].as_str().unwrap_or_default().to_owned(),
            s["views"].as_u64().unwrap_or_default(),
        )
    }))
    .map(|w| serde_json::json!({"start": w.start, "top": w.value}))
    .to("top", Json::<serde_json::Value>::new());
    p
}

fn visit_records(n: usize) -> Vec<MemoryRecord> {
    VisitGen::new(7)
        .users(40)
        .start_ms(1_000_000)
        .events_per_sec(2_000.0)
        .out_of_order_ms(150)
        .late(0.01, 800)
        .error_share(0.05)
        .visits()
        .take(n)
        .map(|v| {
            MemoryRecord::new(
                Some(v.user.as_bytes()),
                &serde_json::to_vec(&v).expect("json"),
                v.ts,
            )
        })
        .collect()
}

/// Every output record, `topic value`, sorted.
fn outputs(run: &MemoryRun<'_>) -> Vec<String> {
    let mut out: Vec<String> = run
        .output()
        .iter()
        .map(|r| format!("{} {}", r.topic, String::from_utf8_lossy(&r.value)))
        .collect();
    out.sort();
    out
}

/// A logged run, its stores in files under `disk` (with a 4 KiB cache) if given.
fn logged<'p>(p: &'p Pipeline, app: &str, disk: Option<&std::path::Path>) -> MemoryRun<'p> {
    let run = MemoryRun::new(p, app).with_changelogs();
    match disk {
        Some(dir) => run.with_disk_state(dir, 4 << 10),
        None => run,
    }
}

fn run_with_crash<'p>(
    p: &'p Pipeline,
    records: &[MemoryRecord],
    crash_at: Option<(usize, usize)>,
    disk: Option<&std::path::Path>,
) -> MemoryRun<'p> {
    let mut run = logged(p, "restore-app", disk);
    let mut i = 0;
    let chunk = 97;
    while i < records.len() {
        let end = (i + chunk).min(records.len());
        run.push("visits", 0, &records[i..end]).expect("push");
        i = end;
        if let Some((checkpoint, lost)) = crash_at
            && i >= checkpoint
            && i < checkpoint + chunk
        {
            run.checkpoint().expect("checkpoint");
            // Processed after the checkpoint, then lost in the crash.
            let lost_end = (i + lost).min(records.len());
            run.push("visits", 0, &records[i..lost_end]).expect("push");
            run.restart();
        }
        if i % (chunk * 5) == 0 {
            run.checkpoint().expect("checkpoint");
        }
    }
    run.end_of_input().expect("end");
    run.checkpoint().expect("checkpoint");
    run
}

#[test]
fn a_restart_from_the_changelogs_emits_exactly_what_a_run_without_failure_emits() {
    for windows in [
        Windows::tumbling(Duration::from_secs(1)),
        Windows::sliding(Duration::from_secs(2), Duration::from_secs(1)),
    ] {
        let p = visits_pipeline(windows);
        let records = visit_records(6_000);
        let clean = run_with_crash(&p, &records, None, None);
        let a = outputs(&clean);
        assert!(a.iter().any(|l| l.starts_with("top ")), "top lists emitted");
        assert!(a.iter().any(|l| l.contains("\"p99\"")), "stats emitted");
        let dir = tempfile::tempdir().expect("tempdir");
        for (crash, disk) in [
            (true, None),
            (false, Some(dir.path())),
            (true, Some(dir.path())),
        ] {
            let crash_at = crash.then_some((2_910, 700));
            let run = run_with_crash(&p, &records, crash_at, disk);
            let b = outputs(&run);
            let what = format!("{windows:?}, crash {crash}, on disk {}", disk.is_some());
            assert_eq!(a.len(), b.len(), "{what}: as many results");
            assert_eq!(a, b, "{what}: the same results");
            // The stores' final contents (windows still within their lateness at the end
            // are dropped by the final watermark: both logs say so the same way).
            assert_eq!(
                clean.changelog("window-1", 0).len(),
                run.changelog("window-1", 0).len(),
                "{what}: store window-1"
            );
            assert_eq!(
                decoded(clean.changelog("window-0", 0), &stats()),
                decoded(run.changelog("window-0", 0), &stats()),
                "{what}: store window-0"
            );
        }
    }
}

#[test]
fn the_store_holds_the_same_state_mid_stream_after_a_restore() {
    let p = visits_pipeline(Windows::tumbling(Duration::from_secs(1)));
    let records = visit_records(3_000);
    let mut clean = MemoryRun::new(&p, "restore-app").with_changelogs();
    clean.push("visits", 0, &records[..2_000]).expect("push");
    clean.checkpoint().expect("checkpoint");

    let mut crashed = MemoryRun::new(&p, "restore-app").with_changelogs();
    crashed.push("visits", 0, &records[..1_000]).expect("push");
    crashed.checkpoint().expect("checkpoint");
    crashed
        .push("visits", 0, &records[1_000..1_500])
        .expect("push");
    crashed.restart();
    crashed
        .push("visits", 0, &records[1_000..2_000])
        .expect("push");
    crashed.checkpoint().expect("checkpoint");

    let state = decoded(clean.changelog("window-0", 0), &stats());
    assert!(
        state.len() > 8,
        "open windows of several URLs: {}",
        state.len()
    );
    assert_eq!(state, decoded(crashed.changelog("window-0", 0), &stats()));
    assert!(!clean.changelog("window-1", 0).is_empty());
}

#[test]
fn session_and_count_windows_restore_too() {
    let sessions = |emit: Emit| {
        let mut p = Pipeline::new();
        p.source(Kafka::topic("in").format(Utf8))
            .window(Windows::session(Duration::from_millis(50)))
            .emit(emit)
            .count()
            .map(|w| format!("{} {} {} {}", w.key_str(), w.start, w.end, w.value))
            .to("out", Utf8);
        p
    };
    let records: Vec<MemoryRecord> = (0..400)
        .map(|i| {
            let key = format!("k{}", i % 7);
            let ts = i64::from(i) * 9
                + if i % 50 < 10 {
                    0
                } else {
                    100 * i64::from(i / 50)
                };
            MemoryRecord::new(Some(key.as_bytes()), key.as_bytes(), ts)
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    for emit in [Emit::Final, Emit::EveryUpdate] {
        let p = sessions(emit);
        let mut clean = MemoryRun::new(&p, "s").with_changelogs();
        clean.push("in", 0, &records).expect("push");
        clean.end_of_input().expect("end");
        for disk in [None, Some(dir.path())] {
            let mut crashed = logged(&p, "s", disk);
            crashed.push("in", 0, &records[..150]).expect("push");
            crashed.checkpoint().expect("checkpoint");
            crashed.push("in", 0, &records[150..260]).expect("push");
            crashed.restart();
            crashed.push("in", 0, &records[150..]).expect("push");
            crashed.end_of_input().expect("end");
            let what = format!("sessions {emit:?}, on disk {}", disk.is_some());
            assert_eq!(outputs(&clean), outputs(&crashed), "{what}");
        }
    }

    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .window(Windows::global_count(5))
        .count()
        .map(|w| format!("{} {}", w.key_str(), w.value))
        .to("out", Utf8);
    let mut clean = MemoryRun::new(&p, "g").with_changelogs();
    clean.push("in", 0, &records).expect("push");
    for disk in [None, Some(dir.path())] {
        let mut crashed = logged(&p, "g", disk);
        crashed.push("in", 0, &records[..123]).expect("push");
        crashed.checkpoint().expect("checkpoint");
        crashed.push("in", 0, &records[123..200]).expect("push");
        crashed.restart();
        crashed.push("in", 0, &records[123..]).expect("push");
        let what = format!("count windows, on disk {}", disk.is_some());
        assert_eq!(outputs(&clean), outputs(&crashed), "{what}");
    }
    assert!(!outputs(&clean).is_empty());
}

#[test]
fn a_window_over_an_aggregation_without_a_changelog_form_fails_clearly_when_logged() {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .window(Windows::tumbling(Duration::from_millis(10)))
        .aggregate(aggregate::from_fns(
            || 0u64,
            |n: &mut u64, _: &&str| *n += 1,
            |a: &mut u64, b| *a += b,
            |n: &u64| *n,
        ))
        .map(|w| w.value.to_string())
        .to("out", Utf8);
    let mut run = MemoryRun::new(&p, "f").with_changelogs();
    run.push("in", 0, &[MemoryRecord::new(Some(b"k"), b"x", 1)])
        .expect("push");
    let err = run.checkpoint().expect_err("not loggable");
    assert!(err.to_string().contains("changelog form"), "{err}");
    // On disk, the first record fails, naming the setting and what is missing.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = MemoryRun::new(&p, "f").with_disk_state(dir.path(), 1 << 10);
    let err = run
        .push("in", 0, &[MemoryRecord::new(Some(b"k"), b"x", 1)])
        .expect_err("no binary form");
    let text = err.to_string();
    assert!(
        text.contains("state.store") && text.contains("Aggregate::save / load"),
        "{text}"
    );
}

#[test]
fn a_changelog_record_that_does_not_decode_fails_the_task_naming_the_changelog_partition() {
    let p = visits_pipeline(Windows::tumbling(Duration::from_secs(1)));
    let records = visit_records(500);
    let mut run = MemoryRun::new(&p, "broken-app").with_changelogs();
    run.push("visits", 0, &records[..300]).expect("push");
    run.checkpoint().expect("checkpoint");
    // A window key (tag 0, start, key) whose value is not an accumulator.
    let mut key = vec![0u8];
    key.extend_from_slice(&1_000_000i64.to_be_bytes());
    key.extend_from_slice(b"/broken");
    run.write_changelog("window-0", 0, &key, Some(&[0xff, 0xff, 0xff]));
    run.restart();
    let err = run
        .push("visits", 0, &records[300..])
        .expect_err("the restore fails");
    let text = err.to_string();
    assert!(
        text.contains("broken-app-window-0-changelog-0 at offset ") && text.contains("/broken"),
        "{text}"
    );
    assert!(
        matches!(err, flumen_runtime::Error::Restore { .. }),
        "{err:?}"
    );
}

/// Per key: every value and a count, in state logged through `StateCodec`; 50 ms of event
/// time after a key's first record (an event-time timer) it emits what it holds and starts
/// over.
#[derive(Clone)]
struct Sessionize;

#[derive(Default)]
struct Seen {
    count: flumen_runtime::state::ValueState<u64>,
    values: flumen_runtime::state::ListState<String>,
}

impl flumen_runtime::state::StateSize for Seen {}

impl flumen_runtime::state::KeyedProcess<flumen_runtime::format::StrView> for Sessionize {
    type State = Seen;
    type Out = String;

    fn process(
        &mut self,
        cx: &mut flumen_runtime::state::KeyedContext<'_, Seen, String>,
        value: &str,
    ) {
        let n = cx.state.count.get().copied().unwrap_or(0);
        if n == 0 {
            let at = cx.timestamp() + 50;
            cx.set_event_timer(at);
        }
        cx.state.count.set(n + 1);
        cx.state.values.push(value.to_owned());
    }

    fn on_timer(
        &mut self,
        cx: &mut flumen_runtime::state::KeyedContext<'_, Seen, String>,
        timer: flumen_runtime::state::Timer,
    ) {
        let key = String::from_utf8_lossy(cx.key()).into_owned();
        let n = cx.state.count.clear().unwrap_or(0);
        let values = cx.state.values.take().join(",");
        cx.emit(format!("{key}@{} n={n}: {values}", timer.timestamp));
    }

    fn save_state(&self, state: &Seen, out: &mut Vec<u8>) -> bool {
        use flumen_runtime::codec::StateCodec;
        state.count.encode(out);
        state.values.encode(out);
        true
    }

    fn load_state(&self, input: &mut &[u8]) -> Option<Seen> {
        use flumen_runtime::codec::StateCodec;
        Some(Seen {
            count: StateCodec::decode(input)?,
            values: StateCodec::decode(input)?,
        })
    }
}

#[test]
fn keyed_state_and_timers_restore_so_the_output_is_that_of_a_run_without_failure() {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .process_keyed(Sessionize)
        .to("out", Utf8);
    let records: Vec<MemoryRecord> = (0..600)
        .map(|i| {
            let key = format!("k{}", i % 9);
            MemoryRecord::new(
                Some(key.as_bytes()),
                format!("v{i}").as_bytes(),
                i64::from(i) * 3,
            )
        })
        .collect();
    let mut clean = MemoryRun::new(&p, "keyed").with_changelogs();
    clean.push("in", 0, &records).expect("push");
    clean.end_of_input().expect("end");
    for (checkpoint, lost) in [(100, 50), (333, 120), (598, 2)] {
        let mut crashed = MemoryRun::new(&p, "keyed").with_changelogs();
        crashed.push("in", 0, &records[..checkpoint]).expect("push");
        crashed.checkpoint().expect("checkpoint");
        crashed
            .push("in", 0, &records[checkpoint..checkpoint + lost])
            .expect("push");
        crashed.restart();
        crashed.push("in", 0, &records[checkpoint..]).expect("push");
        crashed.end_of_input().expect("end");
        assert_eq!(
            outputs(&clean),
            outputs(&crashed),
            "crash after {checkpoint} records"
        );
        assert!(!crashed.changelog("process-0", 0).is_empty() || checkpoint == 0);
    }
    assert!(outputs(&clean).len() > 20);
}

#[test]
fn a_two_stream_join_restores_its_buffers_so_the_output_is_that_of_a_run_without_failure() {
    use flumen_runtime::join::StreamJoinKind;
    for kind in [
        StreamJoinKind::Inner,
        StreamJoinKind::Left,
        StreamJoinKind::Outer,
    ] {
        let mut p = Pipeline::new();
        p.source2(
            Kafka::topic("clicks")
                .format(Json::<String>::new())
                .watermarks(Watermarks::bounded(Duration::from_millis(5))),
            Kafka::topic("views")
                .format(Json::<String>::new())
                .watermarks(Watermarks::bounded(Duration::from_millis(5))),
        )
        .join_within(
            Duration::from_millis(20),
            kind,
            |c: Option<&String>, v: Option<&String>| format!("{c:?} {v:?}"),
        )
        .to("out", Utf8);
        // A view every 3 ms, a click every 5 ms: pairs, and records that never meet a partner
        // (left and outer joins emit those at expiry, which a restore must not repeat).
        let records = |topic: &str, from: usize, to: usize| -> Vec<MemoryRecord> {
            // Views of 5 of the 7 keys: clicks of the other two never meet one.
            let (step, keys) = if topic == "clicks" { (5, 7) } else { (3, 5) };
            (from..to)
                .map(|i| {
                    let key = format!("k{}", (i * 3) % keys);
                    let value = format!("\"{topic} {i}\"");
                    MemoryRecord::new(Some(key.as_bytes()), value.as_bytes(), (i * step) as i64)
                })
                .collect()
        };
        let push = |run: &mut MemoryRun<'_>, from: usize, to: usize| {
            run.push("clicks", 0, &records("clicks", from, to))
                .expect("push");
            run.push("views", 0, &records("views", from, to))
                .expect("push");
        };
        let mut clean = MemoryRun::new(&p, "join").with_changelogs();
        for at in (0..400).step_by(40) {
            push(&mut clean, at, at + 40);
        }
        clean.end_of_input().expect("end");
        let dir = tempfile::tempdir().expect("tempdir");
        // Unlogged, the buffers on disk: the memory store's outputs.
        let mut disk = MemoryRun::new(&p, "join-unlogged").with_disk_state(dir.path(), 1 << 10);
        for at in (0..400).step_by(40) {
            push(&mut disk, at, at + 40);
        }
        disk.end_of_input().expect("end");
        assert_eq!(
            outputs(&clean),
            outputs(&disk),
            "{kind:?}: unlogged, on disk"
        );
        let cases = [(40, 30), (200, 40), (360, 40)];
        for ((checkpoint, lost), on_disk) in cases.iter().flat_map(|&c| [(c, false), (c, true)]) {
            // A checkpoint every 40 records of each side: buffered records logged at one
            // expire before the next, which must log their tombstones.
            let mut crashed = logged(&p, "join", on_disk.then_some(dir.path()));
            for at in (0..checkpoint).step_by(40) {
                push(&mut crashed, at, at + 40);
                crashed.checkpoint().expect("checkpoint");
            }
            assert!(
                !crashed.changelog("join-0", 0).is_empty(),
                "{kind:?}: buffers logged"
            );
            push(&mut crashed, checkpoint, checkpoint + lost);
            crashed.restart();
            for at in (checkpoint..400).step_by(40) {
                push(&mut crashed, at, at + 40);
            }
            crashed.end_of_input().expect("end");
            assert_eq!(
                outputs(&clean),
                outputs(&crashed),
                "{kind:?}: crash after {checkpoint} records of each side, on disk {on_disk}"
            );
        }
        let out = outputs(&clean);
        assert!(
            out.iter()
                .any(|o| o.contains("Some(\"clicks") && o.contains("Some(\"views"))
        );
        if kind != StreamJoinKind::Inner {
            assert!(
                out.iter().any(|o| o.ends_with(" None")),
                "{kind:?}: unmatched clicks"
            );
        }
    }
}

#[test]
fn a_join_buffer_record_that_does_not_decode_fails_the_task_naming_its_changelog() {
    use flumen_runtime::join::StreamJoinKind;
    let mut p = Pipeline::new();
    p.source2(
        Kafka::topic("clicks").format(Json::<String>::new()),
        Kafka::topic("views").format(Json::<String>::new()),
    )
    .join_within(
        Duration::from_millis(10),
        StreamJoinKind::Inner,
        |c: Option<&String>, v: Option<&String>| format!("{c:?}{v:?}"),
    )
    .to("out", Utf8);
    let mut run = MemoryRun::new(&p, "j").with_changelogs();
    run.write_changelog("join-0", 0, b"\x07short", Some(b"x"));
    run.restart();
    let err = run
        .push("clicks", 0, &[MemoryRecord::new(Some(b"k"), b"\"c\"", 1)])
        .expect_err("a broken restore");
    let text = err.to_string();
    assert!(text.contains("j-join-0-changelog"), "{text}");
}
