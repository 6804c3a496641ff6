//! The on-disk keyed store (`state.store = disk`) against a real broker: a keyed count over
//! 100 000 keys with a 256 KiB cache, and a pending timer per key, gives exactly the memory
//! store's results (timers fired included); a restart
//! with the same state directory reads only the changelog's tail (at-least-once, and
//! exactly-once after a clean stop); with the directory emptied it restores everything and
//! the results are still exact.

mod runtime_support;

use std::collections::BTreeMap;
use std::path::Path;

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_runtime::codec::StateCodec;
use flumen_runtime::format::{StrView, Utf8};
use flumen_runtime::state::{KeyedContext, KeyedProcess, Timer, ValueState};
use flumen_runtime::{
    Guarantee, Kafka, Pipeline, RestoreStats, Runtime, RuntimeConfig, StateStore,
};
use flumen_testcontainers::KafkaCluster;
use runtime_support::{kafka, read_all, read_committed, topic};

const KEYS: usize = 100_000;

/// Counts records per key and emits `<count>` with the key after each one. With a
/// `timeout`, each key also has an event-time timer after every record's timestamp, moved at
/// each of its records (the one at `timeout + count - 1` deleted, one at `timeout + count`
/// set), which emits the count again when it fires: at the end of a bounded run.
#[derive(Clone)]
struct Count {
    timeout: Option<i64>,
}

impl KeyedProcess<StrView> for Count {
    type State = ValueState<u64>;
    type Out = String;

    fn process(&mut self, cx: &mut KeyedContext<'_, ValueState<u64>, String>, _value: &str) {
        let n = cx.state.get().copied().unwrap_or(0) + 1;
        cx.state.set(n);
        cx.emit(n.to_string());
        if let Some(at) = self.timeout {
            cx.delete_event_timer(at + n as i64 - 1);
            cx.set_event_timer(at + n as i64);
        }
    }

    fn on_timer(&mut self, cx: &mut KeyedContext<'_, ValueState<u64>, String>, timer: Timer) {
        let n = cx.state.get().copied().unwrap_or(0);
        let latest = self.timeout.map(|at| at + n as i64);
        assert_eq!(Some(timer.timestamp), latest, "the key's latest timer");
        cx.emit(n.to_string());
    }

    fn save_state(&self, state: &ValueState<u64>, out: &mut Vec<u8>) -> bool {
        state.encode(out);
        true
    }

    fn load_state(&self, input: &mut &[u8]) -> Option<ValueState<u64>> {
        ValueState::decode(input)
    }
}

/// Writes one record per key `key-<i>` for `i` in `keys`.
async fn produce(topic: &str, keys: impl Iterator<Item = usize>) -> usize {
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka().bootstrap().as_str()),
            ("linger.ms", "5"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    let mut n = 0;
    for i in keys {
        let key = format!("key-{i}");
        let _delivery = producer
            .send(ProducerRecord::new(topic).key(key.as_bytes()).value(b"x"))
            .await
            .expect("send");
        n += 1;
    }
    producer.flush().await.expect("flush");
    assert_eq!(producer.failed_records(), 0);
    n
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("after 1970").as_millis() as i64
}

/// Runs the count bounded from `input` to `output` as application `app`; returns what its
/// tasks restored, added up.
async fn run(
    app: &str,
    input: &str,
    output: &str,
    (store, timeout): (StateStore, Option<i64>),
    dir: &Path,
    guarantee: Guarantee,
) -> (u64, RestoreStats) {
    let mut pipeline = Pipeline::new();
    pipeline
        .source(Kafka::topic(input).format(Utf8))
        .process_keyed(Count { timeout })
        .to(output, Utf8);
    let config = RuntimeConfig::new(kafka().bootstrap(), app)
        .workers(1)
        .pin_workers(false)
        .state_store(store)
        .state_dir(dir)
        .state_cache_max_bytes(256 << 10)
        .guarantee(guarantee);
    let summary =
        tokio::task::spawn_blocking(move || Runtime::new(config, pipeline).run_until_end())
            .await
            .expect("runtime thread")
            .expect("bounded run");
    let mut total = RestoreStats::default();
    for t in &summary.metrics().tasks {
        if let Some(r) = &t.restore {
            total.records += r.records;
            total.keys += r.keys;
        }
    }
    (summary.records_in(), total)
}

/// The last count the output shows per key (each key's records are in one partition, in
/// order).
fn last_counts(output: &str, at_least: usize) -> BTreeMap<String, u64> {
    read_committed(output, at_least)
        .into_iter()
        .map(|r| (r.key, r.value.parse().expect("a count")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_store_with_a_cache_far_smaller_than_its_state_gives_the_memory_stores_results() {
    let input = topic("disk-in", 2).await;
    // Every key once, then every third key again.
    let n = produce(&input, (0..KEYS).chain((0..KEYS).step_by(3))).await;
    let dirs = tempfile::tempdir().expect("tempdir");
    // Ahead of every record, but within the hour the broker takes a timestamp ahead of its
    // clock (a timer's output carries the timer's time).
    let timeout = Some(now_ms() + 30 * 60 * 1000);
    let memory_out = topic("disk-mem-out", 2).await;
    let disk_out = topic("disk-disk-out", 2).await;
    let (read, _) = run(
        &KafkaCluster::unique_topic("disk-mem-app"),
        &input,
        &memory_out,
        (StateStore::Memory, timeout),
        dirs.path(),
        Guarantee::AtLeastOnce,
    )
    .await;
    assert_eq!(read as usize, n);
    let (read, _) = run(
        &KafkaCluster::unique_topic("disk-disk-app"),
        &input,
        &disk_out,
        (StateStore::Disk, timeout),
        dirs.path(),
        Guarantee::AtLeastOnce,
    )
    .await;
    assert_eq!(read as usize, n);
    // A count per record, and one per key when its timer fires at the end.
    let memory = read_all(&memory_out, n + KEYS);
    let disk = read_all(&disk_out, n + KEYS);
    assert_eq!(memory.len(), n + KEYS);
    assert_eq!(disk.len(), n + KEYS);
    let sorted = |reads: Vec<runtime_support::Read>| {
        let mut v: Vec<(i32, String, String)> = reads
            .into_iter()
            .map(|r| (r.partition, r.key, r.value))
            .collect();
        v.sort();
        v
    };
    assert_eq!(sorted(memory), sorted(disk), "the same records, key by key");
    let counts = last_counts(&disk_out, n + KEYS);
    assert_eq!(counts.len(), KEYS);
    assert_eq!(counts["key-3"], 2);
    assert_eq!(counts["key-4"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_same_state_dir_reads_only_the_changelogs_tail_and_an_emptied_one_restores_all()
 {
    restarts(Guarantee::AtLeastOnce, KEYS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_a_restart_after_a_clean_stop_reads_only_the_tail() {
    restarts(Guarantee::ExactlyOnce, KEYS / 10).await;
}

/// Three bounded runs of one application over `keys` keys: the first from nothing, the
/// second with the state directory it left, the third with that directory emptied.
async fn restarts(guarantee: Guarantee, keys: usize) {
    let input = topic("disk-restart-in", 2).await;
    let output = topic("disk-restart-out", 2).await;
    let app = KafkaCluster::unique_topic("disk-restart-app");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let count = |expected: &mut BTreeMap<String, u64>, keys: &mut dyn Iterator<Item = usize>| {
        for i in keys {
            *expected.entry(format!("key-{i}")).or_default() += 1;
        }
    };

    // First run: every key once; the changelog then holds one record per key.
    let mut total = produce(&input, 0..keys).await;
    count(&mut expected, &mut (0..keys));
    let (_, first) = run(
        &app,
        &input,
        &output,
        (StateStore::Disk, None),
        dir.path(),
        guarantee,
    )
    .await;
    assert_eq!(first.records, 0, "nothing to restore at first");

    // Second run, same directory: the checkpoint covers the whole changelog.
    total += produce(&input, (0..keys).step_by(10)).await;
    count(&mut expected, &mut (0..keys).step_by(10));
    let (read, second) = run(
        &app,
        &input,
        &output,
        (StateStore::Disk, None),
        dir.path(),
        guarantee,
    )
    .await;
    assert_eq!(read as usize, keys / 10);
    assert!(
        second.records < keys as u64 / 100,
        "read {} changelog records; the changelog holds at least {keys}",
        second.records
    );
    assert_eq!(second.keys, keys as u64, "the file holds every key");
    assert_eq!(last_counts(&output, total), expected);

    // Third run, directory emptied: the whole changelog is read back.
    std::fs::remove_dir_all(dir.path()).expect("empty the state dir");
    total += produce(&input, (0..keys).step_by(7)).await;
    count(&mut expected, &mut (0..keys).step_by(7));
    let (read, third) = run(
        &app,
        &input,
        &output,
        (StateStore::Disk, None),
        dir.path(),
        guarantee,
    )
    .await;
    assert_eq!(read as usize, keys.div_ceil(7));
    assert!(
        third.records >= keys as u64,
        "read {} changelog records, expected the whole changelog",
        third.records
    );
    assert_eq!(third.keys, keys as u64);
    assert_eq!(last_counts(&output, total), expected);
}

/// Session windows (1 s gap) with their state on disk behind a 4 KiB cache, against a real
/// broker: 500 keys, each with three sessions of four records, all open at once within each
/// burst. The bounded run gives every session with its exact count, as the memory store does
/// (the sessions' due index lives in the file too, memory holding its earliest entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_windows_on_disk_give_every_session_as_in_memory() {
    use flumen_runtime::window::Windows;

    let input = topic("disk-sessions-in", 2).await;
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", kafka().bootstrap().as_str()),
            ("linger.ms", "5"),
        ])
        .expect("config"),
    )
    .await
    .expect("producer");
    // Rounds 400 ms apart, in bursts of four rounds 10 s apart: a session per key and burst.
    let base = now_ms() - 60_000;
    let mut expected = Vec::new();
    for round in 0..12i64 {
        let ts = base + round * 400 + (round / 4) * 10_000;
        for k in 0..500 {
            let key = format!("k{k}");
            let _delivery = producer
                .send(
                    ProducerRecord::new(&input)
                        .key(key.as_bytes())
                        .value(b"x")
                        .timestamp(ts),
                )
                .await
                .expect("send");
            if round % 4 == 3 {
                let start = ts - 3 * 400;
                expected.push(format!("{key} {start} {} 4", ts + 1_000));
            }
        }
    }
    producer.flush().await.expect("flush");
    assert_eq!(producer.failed_records(), 0);
    expected.sort();
    let dir = tempfile::tempdir().expect("tempdir");
    for store in [StateStore::Memory, StateStore::Disk] {
        let output = topic("disk-sessions-out", 2).await;
        let mut pipeline = Pipeline::new();
        pipeline
            .source(Kafka::topic(&input).format(Utf8))
            .window(Windows::session(std::time::Duration::from_secs(1)))
            .count()
            .map(|w| format!("{} {} {} {}", w.key_str(), w.start, w.end, w.value))
            .to(&output, Utf8);
        let config = RuntimeConfig::new(kafka().bootstrap(), KafkaCluster::unique_topic("ses"))
            .workers(1)
            .pin_workers(false)
            .state_store(store)
            .state_dir(dir.path())
            .state_cache_max_bytes(4 << 10);
        tokio::task::spawn_blocking(move || Runtime::new(config, pipeline).run_until_end())
            .await
            .expect("runtime thread")
            .expect("bounded run");
        let mut got: Vec<String> = read_all(&output, expected.len())
            .into_iter()
            .map(|r| r.value)
            .collect();
        got.sort();
        assert_eq!(got.len(), expected.len(), "{store:?}");
        assert!(got == expected, "{store:?}: sessions differ");
    }
}
