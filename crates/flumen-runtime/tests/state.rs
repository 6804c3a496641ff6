//! Keyed state and timers, run in memory: per-key values, lists and maps, event-time and
//! processing-time timers firing in timestamp order, and the state TTL.

use std::time::Duration;

use flumen_runtime::format::StrView;
use flumen_runtime::format::Utf8;
use flumen_runtime::state::{
    KeyedContext, KeyedProcess, ListState, MapState, StateSize, TimeDomain, Timer, ValueState,
};
use flumen_runtime::testing::MemoryRun;
use flumen_runtime::{Kafka, MemoryRecord, Pipeline};

fn rec(key: &str, value: &str, ts: i64) -> MemoryRecord {
    MemoryRecord::new(Some(key.as_bytes()), value.as_bytes(), ts)
}

fn out(run: &mut MemoryRun<'_>) -> Vec<String> {
    run.take_output()
        .into_iter()
        .map(|r| String::from_utf8(r.value).expect("utf-8"))
        .collect()
}

#[derive(Default)]
struct Seen {
    count: ValueState<u64>,
    values: ListState<String>,
    per_value: MapState<String, u64>,
}

impl StateSize for Seen {}

/// Keeps every value of a key; 10 ms of event time after a key's first record, emits what
/// it saw; a processing-time timer reports the key's count.
#[derive(Clone)]
struct Collect;

impl KeyedProcess<StrView> for Collect {
    type State = Seen;
    type Out = String;

    fn process(&mut self, cx: &mut KeyedContext<'_, Seen, String>, value: &str) {
        let n = cx.state.count.get().copied().unwrap_or(0);
        if n == 0 {
            let at = cx.timestamp() + 10;
            cx.set_event_timer(at);
            cx.set_event_timer(at); // the same timer twice is one
        }
        cx.state.count.set(n + 1);
        cx.state.values.push(value.to_owned());
        *cx.state.per_value.0.entry(value.to_owned()).or_default() += 1;
        if value == "ping" {
            let at = cx.processing_time() + 100;
            cx.set_processing_timer(at);
        }
    }

    fn on_timer(&mut self, cx: &mut KeyedContext<'_, Seen, String>, timer: Timer) {
        let key = String::from_utf8_lossy(cx.key()).into_owned();
        match timer.domain {
            TimeDomain::EventTime => {
                let values = cx.state.values.take().join(",");
                let dup = cx.state.per_value.get("x").copied().unwrap_or(0);
                cx.emit(format!("{key}@{}:{values}:x{dup}", timer.timestamp));
            }
            TimeDomain::ProcessingTime => {
                let n = cx.state.count.get().copied().unwrap_or(0);
                cx.emit(format!("{key} pinged at {}: {n}", timer.timestamp));
            }
        }
    }
}

fn pipeline(ttl: Option<Duration>) -> Pipeline {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .process_keyed_with_ttl(Collect, ttl)
        .to("out", Utf8);
    p
}

#[test]
fn event_timers_fire_in_timestamp_order_with_the_state_of_their_key() {
    let p = pipeline(None);
    let mut run = MemoryRun::new(&p, "app");
    run.push(
        "in",
        0,
        &[
            rec("b", "x", 5),
            rec("a", "x", 7),
            rec("a", "y", 8),
            rec("b", "x", 9),
        ],
    )
    .expect("run");
    assert!(out(&mut run).is_empty(), "watermark 8: no timer due");
    // Watermark 16: b's timer (15) is due, a's (17) is not.
    run.push("in", 0, &[rec("c", "z", 17)]).expect("run");
    assert_eq!(out(&mut run), ["b@15:x,x:x2"]);
    run.end_of_input().expect("end");
    assert_eq!(out(&mut run), ["a@17:x,y:x1", "c@27:z:x0"]);
}

#[test]
fn processing_timers_fire_when_the_clock_reaches_them() {
    let p = pipeline(None);
    let mut run = MemoryRun::new(&p, "app");
    run.set_processing_time(1_000).expect("tick");
    run.push("in", 0, &[rec("a", "ping", 1), rec("a", "q", 2)])
        .expect("run");
    run.set_processing_time(1_099).expect("tick");
    assert!(out(&mut run).is_empty());
    run.set_processing_time(1_100).expect("tick");
    assert_eq!(out(&mut run), ["a pinged at 1100: 2"]);
}

#[test]
fn state_not_written_for_the_ttl_is_dropped() {
    let p = pipeline(Some(Duration::from_millis(500)));
    let mut run = MemoryRun::new(&p, "app");
    run.push("in", 0, &[rec("a", "ping", 1)]).expect("run");
    let keys = |run: &MemoryRun<'_>| run.task_metrics(0, 0).expect("task").1[0].state_keys;
    assert_eq!(keys(&run), 1);
    run.set_processing_time(400).expect("tick");
    assert_eq!(keys(&run), 1);
    // The processing timer (at 100) found the state; the sweep at 600 drops it.
    assert_eq!(out(&mut run), ["a pinged at 100: 1"]);
    run.set_processing_time(600).expect("tick");
    assert_eq!(keys(&run), 0);
    run.push("in", 0, &[rec("a", "ping", 2)]).expect("run");
    run.set_processing_time(800).expect("tick");
    assert_eq!(
        out(&mut run),
        ["a pinged at 700: 1"],
        "counting starts over"
    );
}
