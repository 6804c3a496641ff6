//! Windows at their edges, run in memory: boundaries, out-of-order records within the bound,
//! late records within and beyond the allowed lateness, idle inputs, session merges, count
//! windows, and watermarks carried through a repartition.

use std::time::Duration;

use flumen_runtime::format::{Json, Utf8};
use flumen_runtime::testing::MemoryRun;
use flumen_runtime::time::Watermarks;
use flumen_runtime::window::{Emit, Windows};
use flumen_runtime::{Kafka, MemoryRecord, Pipeline};
use serde_json::Value;

fn rec(key: &str, ts: i64) -> MemoryRecord {
    MemoryRecord::new(Some(key.as_bytes()), format!("{key}@{ts}").as_bytes(), ts)
}

/// `key start end count` lines written to `out` since the last call.
fn results(run: &mut MemoryRun<'_>) -> Vec<String> {
    let mut out: Vec<String> = run
        .take_output()
        .into_iter()
        .filter(|r| r.topic == "out")
        .map(|r| String::from_utf8(r.value).expect("utf-8"))
        .collect();
    out.sort();
    out
}

/// The values written to `topic`, in order.
fn values<'a>(out: &'a [flumen_runtime::CapturedRecord], topic: &str) -> Vec<&'a [u8]> {
    out.iter()
        .filter(|r| r.topic == topic)
        .map(|r| r.value.as_slice())
        .collect()
}

fn counting(windows: Windows, ooo: u64, lateness: u64, emit: Emit) -> Pipeline {
    let mut p = Pipeline::new();
    p.source(
        Kafka::topic("in")
            .format(Utf8)
            .watermarks(Watermarks::bounded(Duration::from_millis(ooo))),
    )
    .window(windows)
    .allowed_lateness(Duration::from_millis(lateness))
    .emit(emit)
    .late_to("late", Utf8)
    .count()
    .map(|w| format!("{} {} {} {}", w.key_str(), w.start, w.end, w.value))
    .to("out", Utf8);
    p
}

#[test]
fn tumbling_windows_fire_when_the_watermark_reaches_their_last_timestamp() {
    let p = counting(
        Windows::tumbling(Duration::from_millis(10)),
        0,
        0,
        Emit::Final,
    );
    let mut run = MemoryRun::new(&p, "app");
    run.push("in", 0, &[rec("a", 0), rec("a", 9)]).expect("run");
    assert!(results(&mut run).is_empty(), "watermark 8: nothing closed");
    // 10 is the first timestamp of the next window; the watermark becomes 9 = end - 1.
    run.push("in", 0, &[rec("a", 10), rec("b", 19)])
        .expect("run");
    assert_eq!(results(&mut run), ["a 0 10 2"]);
    run.push("in", 0, &[rec("a", 20)]).expect("run");
    assert_eq!(results(&mut run), ["a 10 20 1", "b 10 20 1"]);
    run.end_of_input().expect("end");
    assert_eq!(results(&mut run), ["a 20 30 1"]);
    assert_eq!(run.watermark(0, 0), Some(i64::MAX));
}

#[test]
fn out_of_order_records_within_the_bound_count_in_their_window() {
    let p = counting(
        Windows::tumbling(Duration::from_millis(10)),
        5,
        0,
        Emit::Final,
    );
    let mut run = MemoryRun::new(&p, "app");
    // Watermark after 12: 12 - 5 - 1 = 6, so 8 is on time.
    run.push("in", 0, &[rec("a", 0), rec("a", 12), rec("a", 8)])
        .expect("run");
    assert!(results(&mut run).is_empty());
    run.push("in", 0, &[rec("a", 16)]).expect("run");
    assert_eq!(results(&mut run), ["a 0 10 2"]);
    assert!(run.take_output().iter().all(|r| r.topic != "late"));
}

#[test]
fn late_records_update_within_the_lateness_and_go_to_the_late_output_beyond() {
    let p = counting(
        Windows::tumbling(Duration::from_millis(10)),
        0,
        5,
        Emit::Final,
    );
    let mut run = MemoryRun::new(&p, "app");
    run.push("in", 0, &[rec("a", 0), rec("a", 5), rec("a", 12)])
        .expect("run");
    assert_eq!(results(&mut run), ["a 0 10 2"]);
    // Watermark 11: [0, 10) is kept until 9 + 5 = 14, so 3 updates and re-emits it.
    run.push("in", 0, &[rec("a", 3)]).expect("run");
    assert_eq!(results(&mut run), ["a 0 10 3"]);
    // 14 reaches the cleanup time of [0, 10) exactly: 4 is now beyond the lateness.
    run.push("in", 0, &[rec("a", 15), rec("a", 4)])
        .expect("run");
    let out = run.take_output();
    assert_eq!(values(&out, "late"), [b"a@4".as_slice()]);
    assert!(out.iter().all(|r| r.topic != "out"), "{out:?}");
    let (_, ops) = run.task_metrics(0, 0).expect("task");
    let window = ops
        .iter()
        .find(|o| o.name.contains("window"))
        .expect("window");
    assert_eq!(window.records_late, 1);
    assert_eq!(window.records_in, 6);
}

#[test]
fn sliding_windows_take_each_record_into_size_over_slide_windows() {
    let p = counting(
        Windows::sliding(Duration::from_millis(10), Duration::from_millis(5)),
        0,
        0,
        Emit::Final,
    );
    let mut run = MemoryRun::new(&p, "app");
    run.push("in", 0, &[rec("a", 7), rec("a", 10)])
        .expect("run");
    // Watermark 9: [0, 10) closed with 7 only.
    assert_eq!(results(&mut run), ["a 0 10 1"]);
    run.end_of_input().expect("end");
    assert_eq!(results(&mut run), ["a 10 20 1", "a 5 15 2"]);
}

#[test]
fn session_windows_merge_when_a_record_bridges_them() {
    let p = counting(
        Windows::session(Duration::from_millis(12)),
        20,
        0,
        Emit::Final,
    );
    let mut run = MemoryRun::new(&p, "app");
    run.push("in", 0, &[rec("a", 50), rec("a", 70), rec("b", 71)])
        .expect("run");
    // 60 reaches [50, 62) and [70, 82): one session [50, 82) of three.
    run.push("in", 0, &[rec("a", 60)]).expect("run");
    assert!(results(&mut run).is_empty(), "watermark 50");
    run.push("in", 0, &[rec("c", 110)]).expect("run");
    assert_eq!(results(&mut run), ["a 50 82 3", "b 71 83 1"]);
    run.end_of_input().expect("end");
    assert_eq!(results(&mut run), ["c 110 122 1"]);
}

#[test]
fn global_count_windows_fire_every_n_items_per_key() {
    let p = counting(Windows::global_count(2), 0, 0, Emit::Final);
    let mut run = MemoryRun::new(&p, "app");
    let input: Vec<MemoryRecord> = (0..5).map(|i| rec("a", i)).collect();
    run.push("in", 0, &input).expect("run");
    run.push("in", 0, &[rec("b", 9)]).expect("run");
    let min = i64::MIN;
    let max = i64::MAX;
    assert_eq!(
        results(&mut run),
        [format!("a {min} {max} 2"), format!("a {min} {max} 2")]
    );
}

#[test]
fn every_update_emits_each_change() {
    let p = counting(
        Windows::tumbling(Duration::from_millis(10)),
        0,
        0,
        Emit::EveryUpdate,
    );
    let mut run = MemoryRun::new(&p, "app");
    run.push("in", 0, &[rec("a", 1), rec("a", 2), rec("a", 11)])
        .expect("run");
    assert_eq!(results(&mut run), ["a 0 10 1", "a 0 10 2", "a 10 20 1"]);
    run.end_of_input().expect("end");
    assert!(results(&mut run).is_empty(), "nothing more at the close");
}

#[test]
fn an_idle_input_stops_holding_the_watermark_back() {
    let mut p = Pipeline::new();
    p.source(
        Kafka::topics(["x", "y"])
            .format(Utf8)
            .watermarks(Watermarks::bounded(Duration::ZERO).idleness(Duration::from_secs(1))),
    )
    .window(Windows::tumbling(Duration::from_millis(10)))
    .count()
    .map(|w| format!("{} {} {} {}", w.key_str(), w.start, w.end, w.value))
    .to("out", Utf8);
    let mut run = MemoryRun::new(&p, "app");
    run.push("x", 0, &[rec("a", 1), rec("a", 25)]).expect("run");
    assert!(results(&mut run).is_empty(), "y holds the task back");
    run.set_processing_time(999).expect("tick");
    assert!(results(&mut run).is_empty(), "not idle yet");
    run.push("x", 0, &[rec("a", 26)]).expect("run");
    run.set_processing_time(1_000).expect("tick");
    assert_eq!(
        results(&mut run),
        ["a 0 10 1"],
        "y idle: the watermark is x's, 25"
    );
    assert_eq!(run.watermark(0, 0), Some(25));
    // y comes back behind the task's watermark: it holds the task again from now on, but
    // never moves it back.
    run.push("y", 0, &[rec("b", 22)]).expect("run");
    run.push("x", 0, &[rec("a", 40)]).expect("run");
    assert_eq!(run.watermark(0, 0), Some(25));
    assert!(results(&mut run).is_empty());
    run.push("y", 0, &[rec("b", 35)]).expect("run");
    assert_eq!(run.watermark(0, 0), Some(34));
    assert_eq!(results(&mut run), ["a 20 30 2", "b 20 30 1"]);
}

#[test]
fn a_repartition_carries_the_slowest_upstream_watermark() {
    let mut p = Pipeline::new();
    p.source(
        Kafka::topic("in")
            .format(Json::<Value>::new())
            .timestamps(|v: &Value| v["ts"].as_i64().unwrap_or_default()),
    )
    .key_by(
        "by-user",
        |v: &Value| v["user"].as_str().unwrap_or_default().to_owned(),
        Json::<Value>::new(),
    )
    .window(Windows::tumbling(Duration::from_millis(100)))
    .count()
    .map(|w| format!("{} {} {} {}", w.key_str(), w.start, w.end, w.value))
    .to("out", Utf8);
    let mut run = MemoryRun::new(&p, "app").with_partitions(2);
    let visit = |user: &str, ts: i64| MemoryRecord {
        value: Some(format!(r#"{{"user":"{user}","ts":{ts}}}"#).into_bytes()),
        ..MemoryRecord::default()
    };
    run.push(
        "in",
        0,
        &[visit("u1", 10), visit("u2", 20), visit("u1", 250)],
    )
    .expect("run");
    assert!(
        results(&mut run).is_empty(),
        "upstream task 1 has published nothing: the downstream tasks wait"
    );
    run.push("in", 1, &[visit("u1", 150)]).expect("run");
    // Downstream watermark = min(249, 149) = 149: [0, 100) closes, [100, 200) does not.
    assert_eq!(results(&mut run), ["u1 0 100 1", "u2 0 100 1"]);
    run.end_of_input().expect("end");
    assert_eq!(results(&mut run), ["u1 100 200 1", "u1 200 300 1"]);
    assert_eq!(run.watermark(1, 0), Some(i64::MAX));
    assert_eq!(run.watermark(1, 1), Some(i64::MAX));
}

#[test]
fn a_late_record_within_the_lateness_for_a_window_that_had_nothing_emits_at_once() {
    let p = counting(
        Windows::tumbling(Duration::from_millis(10)),
        0,
        50,
        Emit::Final,
    );
    let mut run = MemoryRun::new(&p, "app");
    run.push("in", 0, &[rec("a", 0), rec("a", 35)])
        .expect("run");
    assert_eq!(results(&mut run), ["a 0 10 1"]);
    // [20, 30) closed with nothing in it; 25 is within its lateness.
    run.push("in", 0, &[rec("b", 25)]).expect("run");
    assert_eq!(results(&mut run), ["b 20 30 1"]);
}

#[test]
fn late_to_if_writes_late_records_with_a_topic_and_counts_them_without() {
    for topic in [Some("late"), None] {
        let mut p = Pipeline::new();
        p.source(Kafka::topic("in").format(Utf8))
            .window(Windows::tumbling(Duration::from_millis(10)))
            .late_to_if(topic.map(|t| (t.to_owned(), Utf8)))
            .count()
            .map(|w| format!("{} {} {} {}", w.key_str(), w.start, w.end, w.value))
            .to("out", Utf8);
        assert_eq!(
            p.describe().contains("late->late"),
            topic.is_some(),
            "{topic:?}: {}",
            p.describe()
        );
        let mut run = MemoryRun::new(&p, "app");
        run.push("in", 0, &[rec("a", 0), rec("a", 12), rec("a", 3)])
            .expect("run");
        let out = run.take_output();
        let want: &[&[u8]] = if topic.is_some() { &[b"a@3"] } else { &[] };
        assert_eq!(values(&out, "late"), want, "{topic:?}");
        assert_eq!(values(&out, "out"), [b"a 0 10 1".as_slice()], "{topic:?}");
        let (_, ops) = run.task_metrics(0, 0).expect("task");
        let window = ops
            .iter()
            .find(|o| o.name.contains("window"))
            .expect("window");
        assert_eq!(window.records_late, 1, "{topic:?}");
    }
}
