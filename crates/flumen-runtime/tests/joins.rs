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

mod two_streams {
    use std::time::Duration;

    use flumen_runtime::format::{Json, Utf8};
    use flumen_runtime::join::StreamJoinKind;
    use flumen_runtime::testing::MemoryRun;
    use flumen_runtime::{Kafka, MemoryRecord, Pipeline};

    fn at(key: &str, value: &str, ts: i64) -> MemoryRecord {
        MemoryRecord::new(Some(key.as_bytes()), format!("\"{value}\"").as_bytes(), ts)
    }

    fn pipeline(kind: StreamJoinKind) -> Pipeline {
        let mut p = Pipeline::new();
        p.source2(
            Kafka::topic("clicks").format(Json::<String>::new()),
            Kafka::topic("views").format(Json::<String>::new()),
        )
        .join_within(
            Duration::from_millis(10),
            kind,
            |click: Option<&String>, view: Option<&String>| {
                format!(
                    "{}+{}",
                    click.map_or("-", String::as_str),
                    view.map_or("-", String::as_str)
                )
            },
        )
        .to("out", Utf8);
        p
    }

    fn out(run: &mut MemoryRun<'_>) -> Vec<String> {
        let mut v: Vec<String> = run
            .take_output()
            .into_iter()
            .map(|r| {
                format!(
                    "{}@{}",
                    String::from_utf8(r.value).expect("utf-8"),
                    r.timestamp
                )
            })
            .collect();
        v.sort();
        v
    }

    fn feed(run: &mut MemoryRun<'_>) {
        // k: a click at 100 pairs with the views at 95 and 110 (not the one at 111); the
        // click at 200 finds none; the view at 300 finds none.
        run.push("views", 0, &[at("k", "v95", 95), at("k", "v110", 110)])
            .expect("run");
        run.push("clicks", 0, &[at("k", "c100", 100)]).expect("run");
        run.push("views", 0, &[at("k", "v111", 111)]).expect("run");
        run.push("clicks", 0, &[at("k", "c200", 200)]).expect("run");
        run.push("views", 0, &[at("k", "v300", 300)]).expect("run");
    }

    #[test]
    fn an_inner_join_pairs_records_within_the_bound_on_both_sides() {
        let p = pipeline(StreamJoinKind::Inner);
        let mut run = MemoryRun::new(&p, "app");
        feed(&mut run);
        run.end_of_input().expect("end");
        assert_eq!(out(&mut run), ["c100+v110@110", "c100+v95@100"]);
    }

    #[test]
    fn left_and_outer_joins_emit_the_unpaired_once_their_window_has_passed() {
        let p = pipeline(StreamJoinKind::Left);
        let mut run = MemoryRun::new(&p, "app");
        feed(&mut run);
        // The task's watermark is the slower partition's: clicks, 199.
        assert_eq!(out(&mut run), ["c100+v110@110", "c100+v95@100"]);
        // Clicks move to 249: c200's window (to 210) has passed.
        run.push("clicks", 0, &[at("k", "c250", 250)]).expect("run");
        assert_eq!(out(&mut run), ["c200+-@200"]);
        run.end_of_input().expect("end");
        assert_eq!(
            out(&mut run),
            ["c250+-@250"],
            "unpaired views are not a left join's"
        );

        let p = pipeline(StreamJoinKind::Outer);
        let mut run = MemoryRun::new(&p, "app");
        feed(&mut run);
        run.push("clicks", 0, &[at("k", "c250", 250)]).expect("run");
        run.end_of_input().expect("end");
        assert_eq!(
            out(&mut run),
            [
                "-+v111@111",
                "-+v300@300",
                "c100+v110@110",
                "c100+v95@100",
                "c200+-@200",
                "c250+-@250"
            ]
        );
    }
}

#[test]
fn a_table_joined_after_a_two_stream_join_gets_its_records() {
    use std::time::Duration;

    use flumen_runtime::join::StreamJoinKind;

    let users = Table::new(Kafka::topic("users").format(Json::<Value>::new()));
    let mut p = Pipeline::new();
    p.source2(
        Kafka::topic("clicks").format(Json::<String>::new()),
        Kafka::topic("views").format(Json::<String>::new()),
    )
    .join_within(
        Duration::from_millis(10),
        StreamJoinKind::Inner,
        |c: Option<&String>, v: Option<&String>| {
            format!(
                "{}+{}",
                c.map_or("-", String::as_str),
                v.map_or("-", String::as_str)
            )
        },
    )
    .join_table(
        &users,
        JoinKind::Left,
        |pair: String, user: Option<&Value>| {
            format!(
                "{pair} {}",
                user.and_then(|u| u["country"].as_str()).unwrap_or("-")
            )
        },
    )
    .to("out", Utf8);
    let mut run = MemoryRun::new(&p, "app");
    run.push("users", 0, &[rec("u1", r#"{"country":"CN"}"#)])
        .expect("run");
    let at = |topic_value: &str, ts: i64| {
        MemoryRecord::new(Some(b"u1"), format!("\"{topic_value}\"").as_bytes(), ts)
    };
    run.push("clicks", 0, &[at("c", 100)]).expect("run");
    run.push("views", 0, &[at("v", 105)]).expect("run");
    assert_eq!(out(&mut run), ["u1: c+v CN"]);
}
