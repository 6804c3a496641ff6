//! Each operator, the error policies and repartitioning, run in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flumen_runtime::format::{Bytes, Json, Utf8};
use flumen_runtime::testing::{MemoryRun, murmur2};
use flumen_runtime::{Error, Kafka, MemoryRecord, OnError, Pipeline};
use serde_json::{Value, json};

fn values(run: &MemoryRun<'_>) -> Vec<String> {
    run.output()
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).expect("utf-8"))
        .collect()
}

#[test]
fn map_filter_filter_map_flat_map_and_inspect_compose_in_order() {
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .filter(|s| !s.is_empty())
        .inspect(move |_, _| {
            seen2.fetch_add(1, Ordering::Relaxed);
        })
        .flat_map(|s| s.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|w: String| (w.len() > 1).then(|| w.to_uppercase()))
        .map(|w: String| format!("<{w}>"))
        .to("out", Utf8);
    let mut run = MemoryRun::new(&p, "app");
    run.push_values("in", 0, &[b"ab c de", b"", b"x yz"])
        .expect("run");
    assert_eq!(values(&run), ["<AB>", "<DE>", "<YZ>"]);
    assert_eq!(seen.load(Ordering::Relaxed), 2);
    let (counters, ops) = run.task_metrics(0, 0).expect("task");
    assert_eq!(counters.records_in, 3);
    let counts: Vec<u64> = ops.iter().map(|o| o.records_in).collect();
    // filter 3, inspect 2, flat_map 2, filter_map 5 words, map 3, sink 3.
    assert_eq!(counts, [3, 2, 2, 5, 3, 3]);
    assert!(ops[0].name.ends_with("filter") && ops[5].name.ends_with("to:out"));
}

#[test]
fn sinks_keep_the_input_key_timestamp_and_headers_free_order() {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Bytes))
        .map(|v: &[u8]| v.to_ascii_uppercase())
        .to("out", Bytes);
    let mut run = MemoryRun::new(&p, "app");
    let input = [
        MemoryRecord {
            key: Some(b"k1".to_vec()),
            value: Some(b"a".to_vec()),
            timestamp: 10,
            ..MemoryRecord::default()
        },
        MemoryRecord {
            key: None,
            value: Some(b"b".to_vec()),
            timestamp: 20,
            ..MemoryRecord::default()
        },
    ];
    run.push("in", 3, &input).expect("run");
    let out = run.take_output();
    assert_eq!(out.len(), 2);
    assert_eq!(
        (
            out[0].key.as_deref(),
            out[0].value.as_slice(),
            out[0].timestamp
        ),
        (Some(&b"k1"[..]), &b"A"[..], 10)
    );
    assert_eq!((out[1].key.as_deref(), out[1].timestamp), (None, 20));
}

#[test]
fn process_sees_the_context_and_emits_any_number_of_outputs() {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Utf8))
        .process(|cx, v: &str, out| {
            for _ in 0..v.len() {
                out.emit(format!("{}@{}:{v}", cx.partition(), cx.offset()));
            }
            if v == "bad" {
                out.fail("bad record");
            }
        })
        .to("out", Utf8);
    let mut run = MemoryRun::new(&p, "app");
    let rec = |v: &str| MemoryRecord {
        key: None,
        value: Some(v.as_bytes().to_vec()),
        timestamp: 0,
        ..MemoryRecord::default()
    };
    run.push("in", 2, &[rec("ab"), rec(""), rec("c")])
        .expect("run");
    assert_eq!(values(&run), ["2@0:ab", "2@0:ab", "2@2:c"]);
    let err = run.push("in", 2, &[rec("bad")]).expect_err("fails");
    match err {
        Error::User {
            tp,
            offset,
            message,
        } => {
            assert_eq!((tp.topic.as_str(), tp.partition, offset), ("in", 2, 3));
            assert_eq!(message, "bad record");
        }
        other => panic!("{other:?}"),
    }
}

fn json_pipeline(policy: OnError) -> Pipeline {
    let mut p = Pipeline::new();
    p.source(
        Kafka::topic("in")
            .format(Json::<Value>::new())
            .on_error(policy),
    )
    .map(|v: Value| v["n"].as_i64().unwrap_or(-1))
    .to("out", Json::<Value>::new());
    p
}

#[test]
fn a_record_that_does_not_deserialize_follows_the_policy() {
    let good = b"{\"n\": 1}".as_slice();
    let bad = b"not json".as_slice();
    // Fail: the error names topic, partition and offset.
    let p = json_pipeline(OnError::Fail);
    let mut run = MemoryRun::new(&p, "app");
    let err = run.push_values("in", 4, &[good, bad]).expect_err("fails");
    let text = err.to_string();
    assert!(
        text.contains("in/4") || text.contains("in-4") || text.contains("in"),
        "{text}"
    );
    match err {
        Error::Deserialize {
            tp,
            offset,
            message,
        } => {
            assert_eq!((tp.topic.as_str(), tp.partition, offset), ("in", 4, 1));
            assert!(message.contains("invalid JSON"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Skip: counted, the rest goes on.
    let p = json_pipeline(OnError::Skip);
    let mut run = MemoryRun::new(&p, "app");
    run.push_values("in", 0, &[bad, good, bad]).expect("skips");
    assert_eq!(values(&run), ["1"]);
    assert_eq!(run.task_metrics(0, 0).expect("task").0.records_skipped, 2);
    // Dead letter: the record, unchanged, with the error and its origin in headers.
    let p = json_pipeline(OnError::DeadLetter("dlq".into()));
    let mut run = MemoryRun::new(&p, "app");
    run.push_values("in", 1, &[good, bad])
        .expect("dead-letters");
    let out = run.take_output();
    assert_eq!(out.len(), 2);
    let dead = out.iter().find(|r| r.topic == "dlq").expect("dead letter");
    assert_eq!(dead.value, bad);
    let header = |name: &[u8]| {
        dead.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v).expect("utf-8"))
    };
    assert!(
        header(b"flumen.error")
            .expect("error")
            .contains("invalid JSON")
    );
    assert_eq!(header(b"flumen.source").as_deref(), Some("in/1@1"));
    assert_eq!(
        run.task_metrics(0, 1)
            .expect("task")
            .0
            .records_dead_lettered,
        1
    );
}

#[test]
fn key_by_writes_the_new_key_and_the_next_sub_topology_reads_it() {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Json::<Value>::new()))
        .key_by(
            "by-user",
            |v: &Value| v["user"].as_str().unwrap_or_default().to_owned(),
            Json::<Value>::new(),
        )
        .map(|v: Value| v["n"].as_i64().unwrap_or(-1))
        .to("out", Json::<Value>::new());
    assert_eq!(p.describe().lines().count(), 2, "{}", p.describe());
    let mut run = MemoryRun::new(&p, "app");
    let records: Vec<Vec<u8>> = (0..6)
        .map(|n| {
            json!({"user": format!("u{}", n % 3), "n": n})
                .to_string()
                .into_bytes()
        })
        .collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    run.push_values("in", 0, &refs).expect("run");
    let out = run.take_output();
    assert_eq!(out.len(), 6);
    for r in &out {
        assert_eq!(r.topic, "out");
        let n: i64 = serde_json::from_slice(&r.value).expect("number");
        assert_eq!(r.key.as_deref(), Some(format!("u{}", n % 3).as_bytes()));
    }
}

#[test]
fn murmur2_matches_the_java_client() {
    // Values from Kafka's UtilsTest.testMurmur2.
    assert_eq!(murmur2(b"21") as i32, -973932308);
    assert_eq!(murmur2(b"foobar") as i32, -790332482);
    assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
    assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
        -58897971
    );
    assert_eq!(murmur2(b"abc") as i32, 479470107);
}

/// A user format: comma-separated integers.
#[derive(Clone)]
struct Csv;

impl flumen_runtime::format::Decode for Csv {
    type Family = flumen_runtime::format::Owned<Vec<i64>>;
    fn decode(
        &self,
        value: Option<&[u8]>,
    ) -> Result<Vec<i64>, flumen_runtime::format::FormatError> {
        let text = std::str::from_utf8(value.unwrap_or_default())
            .map_err(|e| flumen_runtime::format::FormatError::new(e.to_string()))?;
        text.split(',')
            .map(|n| {
                n.trim().parse().map_err(|_| {
                    flumen_runtime::format::FormatError::new(format!("{n:?} is not a number"))
                })
            })
            .collect()
    }
}

impl flumen_runtime::format::Encode<flumen_runtime::format::Owned<Vec<i64>>> for Csv {
    fn encode<'b>(
        &self,
        item: &'b Vec<i64>,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], flumen_runtime::format::FormatError> {
        let text: Vec<String> = item.iter().map(i64::to_string).collect();
        scratch.extend_from_slice(text.join(",").as_bytes());
        Ok(scratch)
    }
}

#[test]
fn a_user_format_decodes_and_encodes_and_its_errors_follow_the_policy() {
    let mut p = Pipeline::new();
    p.source(Kafka::topic("in").format(Csv).on_error(OnError::Skip))
        .map(|v: Vec<i64>| v.into_iter().rev().collect::<Vec<i64>>())
        .to("out", Csv);
    let mut run = MemoryRun::new(&p, "app");
    run.push_values("in", 0, &[b"1,2,3", b"4,x", b"5"])
        .expect("run");
    assert_eq!(values(&run), ["3,2,1", "5"]);
    assert_eq!(run.task_metrics(0, 0).expect("task").0.records_skipped, 1);
}

#[test]
fn a_pattern_source_reads_matching_topics_and_a_chooser_picks_each_output_topic() {
    let mut p = Pipeline::new();
    p.source(Kafka::pattern("visits-[a-z]+").format(Utf8))
        .to_topic_by(
            |cx, v: &&str| {
                if v.starts_with("err") || cx.topic().ends_with("eu") {
                    "alerts"
                } else {
                    "normal"
                }
            },
            Utf8,
        );
    let mut run = MemoryRun::new(&p, "app");
    run.push_values("visits-us", 0, &[b"ok", b"error"])
        .expect("us");
    run.push_values("visits-eu", 1, &[b"ok"]).expect("eu");
    assert!(
        run.push_values("visits-1", 0, &[b"ok"]).is_err(),
        "the pattern is anchored"
    );
    let topics: Vec<(String, String)> = run
        .output()
        .iter()
        .map(|r| {
            (
                r.topic.clone(),
                String::from_utf8(r.value.clone()).expect("utf-8"),
            )
        })
        .collect();
    assert_eq!(
        topics,
        [
            ("normal".to_owned(), "ok".to_owned()),
            ("alerts".to_owned(), "error".to_owned()),
            ("alerts".to_owned(), "ok".to_owned()),
        ]
    );
}
