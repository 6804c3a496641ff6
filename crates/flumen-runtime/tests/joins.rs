//! Stream–table joins, run in memory: the table's value at the time of each stream record
//! (updated before and after it), tombstones, inner and left joins.

use flumen_runtime::format::{Json, Utf8};
use flumen_runtime::join::{JoinKind, Table};
use flumen_runtime::testing::MemoryRun;
use flumen_runtime::{Kafka, MemoryRecord, Pipeline};
use serde_json::Value;

fn rec(key: &str, value: &str) -> MemoryRecord {
    MemoryRecord::new(Some(key.as_bytes()), value.as_bytes(), 0)
}

fn tombstone(key: &str) -> MemoryRecord {
    MemoryRecord {
        key: Some(key.as_bytes().to_vec()),
        value: None,
        ..MemoryRecord::default()
    }
}

fn pipeline(kind: JoinKind) -> Pipeline {
    let users = Table::new(Kafka::topic("users").format(Json::<Value>::new()));
    let mut p = Pipeline::new();
    p.source(Kafka::topic("visits").format(Utf8))
        .join_table(&users, kind, |url: &str, user: Option<&Value>| {
            let country = user.and_then(|u| u["country"].as_str()).unwrap_or("-");
            format!("{url} {country}")
        })
        .to("out", Utf8);
    p
}

fn out(run: &mut MemoryRun<'_>) -> Vec<String> {
    run.take_output()
        .into_iter()
        .map(|r| {
            let key = String::from_utf8(r.key.unwrap_or_default()).expect("utf-8");
            format!("{key}: {}", String::from_utf8(r.value).expect("utf-8"))
        })
        .collect()
}

#[test]
fn each_record_sees_the_table_as_it_is_when_the_record_is_processed() {
    let p = pipeline(JoinKind::Left);
    let mut run = MemoryRun::new(&p, "app");
    run.push("visits", 0, &[rec("u1", "/a")]).expect("run");
    run.push("users", 0, &[rec("u1", r#"{"country":"CN"}"#)])
        .expect("run");
    run.push("visits", 0, &[rec("u1", "/b")]).expect("run");
    run.push("users", 0, &[rec("u1", r#"{"country":"FR"}"#)])
        .expect("run");
    run.push("visits", 0, &[rec("u1", "/c"), rec("u2", "/d")])
        .expect("run");
    run.push("users", 0, &[tombstone("u1")]).expect("run");
    run.push("visits", 0, &[rec("u1", "/e")]).expect("run");
    assert_eq!(
        out(&mut run),
        ["u1: /a -", "u1: /b CN", "u1: /c FR", "u2: /d -", "u1: /e -"]
    );
    let (_, ops) = run.task_metrics(0, 0).expect("task");
    assert_eq!(ops[0].state_keys, 0, "the tombstone deleted u1");
}

#[test]
fn an_inner_join_drops_records_whose_key_has_no_value() {
    let p = pipeline(JoinKind::Inner);
    let mut run = MemoryRun::new(&p, "app");
    run.push("users", 0, &[rec("u1", r#"{"country":"CN"}"#)])
        .expect("run");
    run.push("visits", 0, &[rec("u1", "/a"), rec("u2", "/b")])
        .expect("run");
    assert_eq!(out(&mut run), ["u1: /a CN"]);
    assert!(p.describe().contains("table users"), "{}", p.describe());
}

#[test]
fn a_table_value_that_does_not_decode_names_topic_partition_and_offset() {
    let p = pipeline(JoinKind::Left);
    let mut run = MemoryRun::new(&p, "app");
    let err = run
        .push("users", 0, &[rec("u1", "{}"), rec("u2", "not json")])
        .expect_err("fails");
    let text = err.to_string();
    assert!(text.contains("users") && text.contains("1"), "{text}");
}
