//! The producer against a real broker, checked by clients nobody here wrote (kcat and
//! Kafka's Java console consumer): a million keyed records exactly once and in order,
//! every compression codec, transactions under read_committed, fencing, transactional
//! offsets, the Java partition choice for keyed records, and, with linger.ms=0, batching
//! while the broker is busy and the way from `send` to a consumer already waiting in `poll`.
//!
//! Every test runs on a tokio current-thread runtime: the producer must not need more.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use flumen_client::admin::NewTopic;
use flumen_client::producer::partitioner::partition_for_key;
use flumen_client::producer::{
    ConsumerGroupMetadata, ProduceError, Producer, ProducerConfig, ProducerRecord,
    TransactionVersion,
};
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_testcontainers::{ClusterSpec, KafkaCluster};

async fn admin(kafka: &KafkaCluster) -> Admin {
    Admin::connect(
        ClientConfig::from_properties([("bootstrap.servers", kafka.bootstrap())]).expect("config"),
    )
    .await
    .expect("admin")
}

async fn create_topic(kafka: &KafkaCluster, prefix: &str, partitions: i32) -> String {
    create_topic_with(kafka, prefix, partitions, &[]).await
}

/// A new topic with topic-level `configs` (e.g. `max.message.bytes`).
async fn create_topic_with(
    kafka: &KafkaCluster,
    prefix: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> String {
    let topic = KafkaCluster::unique_topic(prefix);
    let mut new = NewTopic::new(&topic)
        .partitions(partitions)
        .replication_factor(1);
    for (k, v) in configs {
        new = new.config(*k, *v);
    }
    admin(kafka)
        .await
        .create_topic(new)
        .await
        .expect("create topic");
    topic
}

async fn producer(kafka: &KafkaCluster, extra: &[(&str, &str)]) -> Producer {
    let mut props = vec![("bootstrap.servers".to_owned(), kafka.bootstrap())];
    props.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Producer::connect(ProducerConfig::from_properties(props).expect("config"))
        .await
        .expect("producer")
}

/// One record as kcat prints it with `-f '%p %o %k %s\n'`.
#[derive(Debug)]
struct Consumed {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

/// Reads the whole topic with kcat (to the end, then exit), with extra `-X` settings.
fn kcat(kafka: &KafkaCluster, topic: &str, extra: &[&str]) -> Vec<Consumed> {
    let mut cmd = Command::new("kcat");
    cmd.args([
        "-C",
        "-b",
        &kafka.bootstrap(),
        "-t",
        topic,
        "-e",
        "-q",
        "-f",
        "%p %o %k %s\n",
    ]);
    for x in extra {
        cmd.args(["-X", x]);
    }
    let out = cmd
        .output()
        .expect("kcat runs (the Debian package is installed)");
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let mut next = || f.next().unwrap_or_else(|| panic!("kcat line {line:?}"));
            Consumed {
                partition: next().parse().expect("partition"),
                offset: next().parse().expect("offset"),
                key: next().to_owned(),
                value: next().to_owned(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_million_keyed_records_arrive_exactly_once_and_in_order_per_partition() {
    const N: usize = 1_000_000;
    const PARTITIONS: i32 = 12;
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "million", PARTITIONS).await;
    let producer = producer(kafka, &[("acks", "all"), ("enable.idempotence", "true")]).await;
    let started = Instant::now();
    let mut futures = Vec::with_capacity(N);
    let mut key = String::new();
    let mut value = String::new();
    for i in 0..N {
        use std::fmt::Write;
        key.clear();
        value.clear();
        let _ = write!(key, "k{}", i % 5000);
        let _ = write!(value, "{i}");
        let record = ProducerRecord::new(&topic)
            .key(key.as_bytes())
            .value(value.as_bytes());
        futures.push(producer.send(record).await.expect("send"));
    }
    producer.flush().await.expect("flush");
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    for (i, f) in futures.into_iter().enumerate() {
        let m = f.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        let key = format!("k{}", i % 5000);
        assert_eq!(m.partition, partition_for_key(key.as_bytes(), PARTITIONS));
        let last = offsets.entry(m.partition).or_insert(-1);
        assert!(m.offset > *last, "offsets grow per partition");
        *last = m.offset;
    }
    eprintln!("produced {N} records in {:?}", started.elapsed());
    producer
        .close(Duration::from_secs(10))
        .await
        .expect("close");

    let records = kcat(kafka, &topic, &[]);
    assert_eq!(records.len(), N, "kcat read every record, no more");
    let mut seen = vec![false; N];
    let mut last_in_partition: HashMap<i32, usize> = HashMap::new();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    for r in &records {
        let expected = next_offset.entry(r.partition).or_insert(0);
        assert_eq!(
            r.offset, *expected,
            "offsets are contiguous: nothing was written twice"
        );
        *expected += 1;
        let i: usize = r.value.parse().expect("value is the sequence number");
        assert!(!seen[i], "record {i} duplicated");
        seen[i] = true;
        assert_eq!(r.key, format!("k{}", i % 5000));
        assert_eq!(r.partition, partition_for_key(r.key.as_bytes(), PARTITIONS));
        if let Some(prev) = last_in_partition.insert(r.partition, i) {
            assert!(prev < i, "partition {} has {prev} before {i}", r.partition);
        }
    }
    assert!(seen.iter().all(|s| *s), "every record present");
}

#[tokio::test(flavor = "current_thread")]
async fn every_codec_is_readable_by_kcat_and_by_the_java_console_consumer() {
    let kafka = KafkaCluster::shared();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = create_topic(kafka, codec, 3).await;
        let producer = producer(kafka, &[("compression.type", codec), ("linger.ms", "20")]).await;
        let mut futures = Vec::new();
        for i in 0..500 {
            let value = format!("{codec}-value-{i}-{}", "x".repeat(i % 50));
            futures.push(
                producer
                    .send(
                        ProducerRecord::new(&topic)
                            .key(format!("{i}").as_bytes())
                            .value(value.as_bytes()),
                    )
                    .await
                    .expect("send"),
            );
        }
        for f in futures {
            f.await.unwrap_or_else(|e| panic!("{codec}: {e}"));
        }
        producer
            .close(Duration::from_secs(10))
            .await
            .expect("close");

        let mut values: Vec<String> = kcat(kafka, &topic, &[])
            .into_iter()
            .map(|r| r.value)
            .collect();
        values.sort();
        let mut expected: Vec<String> = (0..500)
            .map(|i| format!("{codec}-value-{i}-{}", "x".repeat(i % 50)))
            .collect();
        expected.sort();
        assert_eq!(values, expected, "kcat reads the {codec} batches");

        let out = kafka
            .run_java_tool(
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                &[
                    "--bootstrap-server",
                    &kafka.bootstrap(),
                    "--topic",
                    &topic,
                    "--from-beginning",
                    "--max-messages",
                    "500",
                    "--timeout-ms",
                    "30000",
                ],
                None,
            )
            .expect("java console consumer");
        let mut java: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(codec))
            .map(str::to_owned)
            .collect();
        java.sort();
        assert_eq!(
            java,
            expected,
            "the Java consumer reads the {codec} batches: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn transactional(kafka: &KafkaCluster, id: &str) -> Producer {
    producer(
        kafka,
        &[
            ("transactional.id", id),
            ("transaction.timeout.ms", "30000"),
        ],
    )
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn aborted_records_are_invisible_to_read_committed_readers_and_committed_ones_visible() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "txn", 3).await;
    let p = transactional(kafka, &KafkaCluster::unique_topic("txn-id")).await;
    assert_eq!(p.transaction_version(), None, "chosen by init_transactions");
    p.init_transactions().await.expect("init_transactions");
    assert_eq!(
        p.transaction_version(),
        Some(TransactionVersion::V2),
        "Kafka 4.1.1 formatted with its defaults finalizes transaction.version 2 (KIP-890)"
    );

    p.begin_transaction().await.expect("begin");
    for i in 0..100 {
        let _delivery = p
            .send(
                ProducerRecord::new(&topic)
                    .key(b"c")
                    .value(format!("committed-{i}").as_bytes()),
            )
            .await
            .expect("send");
    }
    p.commit_transaction().await.expect("commit");

    p.begin_transaction().await.expect("begin 2");
    let mut aborted = Vec::new();
    for i in 0..100 {
        aborted.push(
            p.send(ProducerRecord::new(&topic).value(format!("aborted-{i}").as_bytes()))
                .await
                .expect("send"),
        );
    }
    // Make sure they reach the log before the abort, so the test shows they are filtered.
    p.flush().await.expect("flush");
    for f in aborted {
        f.await.expect("written before the abort");
    }
    p.abort_transaction().await.expect("abort");

    p.begin_transaction().await.expect("begin 3");
    for i in 0..10 {
        let _delivery = p
            .send(ProducerRecord::new(&topic).value(format!("after-{i}").as_bytes()))
            .await
            .expect("send");
    }
    p.commit_transaction().await.expect("commit 3");

    let committed = kcat(kafka, &topic, &["isolation.level=read_committed"]);
    let values: Vec<&str> = committed.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values.len(), 110, "{values:?}");
    assert!(
        values.iter().all(|v| !v.starts_with("aborted")),
        "{values:?}"
    );
    assert_eq!(
        values.iter().filter(|v| v.starts_with("committed")).count(),
        100
    );
    let uncommitted = kcat(kafka, &topic, &["isolation.level=read_uncommitted"]);
    assert_eq!(
        uncommitted
            .iter()
            .filter(|r| r.value.starts_with("aborted"))
            .count(),
        100,
        "the aborted records were written, only hidden"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_newer_producer_with_the_same_transactional_id_fences_the_older_one() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "fence", 1).await;
    let id = KafkaCluster::unique_topic("fence-id");
    let old = transactional(kafka, &id).await;
    old.init_transactions().await.expect("init old");
    old.begin_transaction().await.expect("begin old");
    let _delivery = old
        .send(ProducerRecord::new(&topic).value(b"old"))
        .await
        .expect("send old");
    old.flush().await.expect("flush");

    let new = transactional(kafka, &id).await;
    new.init_transactions()
        .await
        .expect("init new (aborts the old one's transaction)");
    assert_eq!(new.transaction_version(), Some(TransactionVersion::V2));

    let err = old
        .commit_transaction()
        .await
        .expect_err("the old producer is fenced");
    assert!(matches!(err, ProduceError::Fenced(_)), "{err:?}");
    assert!(err.to_string().contains("fenced"), "{err}");

    new.begin_transaction().await.expect("begin new");
    let _delivery = new
        .send(ProducerRecord::new(&topic).value(b"new"))
        .await
        .expect("send new");
    new.commit_transaction().await.expect("commit new");
    let values: Vec<String> = kcat(kafka, &topic, &["isolation.level=read_committed"])
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, ["new"]);
}

#[tokio::test(flavor = "current_thread")]
async fn offsets_sent_to_a_transaction_are_committed_with_it_and_not_when_it_aborts() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "txn-offsets", 2).await;
    let group = KafkaCluster::unique_topic("txn-group");
    let p = transactional(kafka, &KafkaCluster::unique_topic("offsets-id")).await;
    p.init_transactions().await.expect("init");
    let metadata = ConsumerGroupMetadata::new(&group);

    p.begin_transaction().await.expect("begin");
    let _delivery = p
        .send(ProducerRecord::new(&topic).value(b"v"))
        .await
        .expect("send");
    p.send_offsets_to_transaction(&[(TopicPartition::new(&topic, 0), 7)], &metadata)
        .await
        .expect("send offsets");
    p.abort_transaction().await.expect("abort");

    p.begin_transaction().await.expect("begin 2");
    p.send_offsets_to_transaction(&[(TopicPartition::new(&topic, 1), 42)], &metadata)
        .await
        .expect("send offsets 2");
    p.commit_transaction().await.expect("commit");

    let admin = admin(kafka).await;
    // The coordinator applies transactional offsets when it writes the commit marker, just
    // after EndTxn is answered: wait until they show.
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = loop {
        let offsets = admin
            .list_group_offsets(&group, None)
            .await
            .expect("group offsets");
        let committed: Vec<(i32, i64)> = offsets
            .iter()
            .map(|(tp, o)| (tp.partition, o.as_ref().expect("offset").offset))
            .collect();
        if !committed.is_empty() || Instant::now() >= deadline {
            break committed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        committed,
        [(1, 42)],
        "only the committed transaction's offset"
    );
}

/// KIP-890 (transaction protocol v2): every EndTxn hands the producer the next epoch, so
/// each transaction's batches carry an epoch of their own, with sequences from 0 again; the
/// markers still end exactly the right transactions for read_committed readers.
#[tokio::test(flavor = "current_thread")]
async fn under_transaction_v2_each_transaction_writes_with_the_next_epoch_and_readers_see_only_commits()
 {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "txn-v2-epochs", 1).await;
    let p = transactional(kafka, &KafkaCluster::unique_topic("epochs-id")).await;
    p.init_transactions().await.expect("init");
    assert_eq!(p.transaction_version(), Some(TransactionVersion::V2));

    let transactions = [("one", true), ("two", true), ("aborted", false)];
    for (name, commit) in transactions {
        p.begin_transaction().await.expect("begin");
        let mut deliveries = Vec::new();
        for i in 0..3 {
            deliveries.push(
                p.send(ProducerRecord::new(&topic).value(format!("{name}-{i}").as_bytes()))
                    .await
                    .expect("send"),
            );
        }
        // In the log before the transaction ends, aborted ones included.
        p.flush().await.expect("flush");
        for d in deliveries {
            d.await.expect("written");
        }
        if commit {
            p.commit_transaction().await.expect("commit");
        } else {
            p.abort_transaction().await.expect("abort");
        }
    }

    let committed: Vec<String> = kcat(kafka, &topic, &["isolation.level=read_committed"])
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        committed,
        ["one-0", "one-1", "one-2", "two-0", "two-1", "two-2"]
    );

    // The log itself: data batches of one producer id, one epoch per transaction, each
    // epoch's first batch at sequence 0; one marker per transaction.
    let batches = log_batch_headers(&p, &topic, 0).await;
    let data: Vec<&LogBatch> = batches.iter().filter(|b| !b.control).collect();
    assert!(
        data.iter().all(|b| b.producer_id == data[0].producer_id),
        "{batches:?}"
    );
    let mut epochs: Vec<i16> = data.iter().map(|b| b.epoch).collect();
    epochs.dedup();
    assert_eq!(epochs.len(), 3, "an epoch per transaction: {batches:?}");
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{batches:?}");
    for epoch in &epochs {
        let first = data.iter().find(|b| b.epoch == *epoch).expect("a batch");
        assert_eq!(
            first.base_sequence, 0,
            "sequences restart per epoch: {batches:?}"
        );
    }
    assert_eq!(
        batches.iter().filter(|b| b.control).count(),
        3,
        "a commit, a commit and an abort marker: {batches:?}"
    );
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// Under transaction protocol v2 the partition leader adds partitions to transactions, so a
/// zombie's write reaches the leader without an AddPartitionsToTxn to refuse it first: the
/// leader must refuse it, and nothing the zombie wrote becomes visible.
#[tokio::test(flavor = "current_thread")]
async fn a_zombie_producer_writing_after_it_was_fenced_is_refused_under_transaction_v2() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "zombie", 2).await;
    let id = KafkaCluster::unique_topic("zombie-id");
    let zombie = transactional(kafka, &id).await;
    zombie.init_transactions().await.expect("init zombie");
    assert_eq!(zombie.transaction_version(), Some(TransactionVersion::V2));
    zombie.begin_transaction().await.expect("begin zombie");
    zombie
        .send(
            ProducerRecord::new(&topic)
                .partition(0)
                .value(b"zombie-before"),
        )
        .await
        .expect("send")
        .await
        .expect("written before the fence");

    let successor = transactional(kafka, &id).await;
    successor.init_transactions().await.expect("init successor");

    // A partition the zombie had not touched yet (the leader asks the coordinator to add
    // it, which refuses the old epoch), then one it wrote before. Once one write was
    // refused the producer knows it is fenced and refuses the next send itself.
    for partition in [1, 0] {
        let outcome = match zombie
            .send(
                ProducerRecord::new(&topic)
                    .partition(partition)
                    .value(b"zombie-after"),
            )
            .await
        {
            Ok(delivery) => delivery.await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = outcome.expect_err("the old epoch is refused");
        assert!(
            matches!(err, ProduceError::Fenced(_)),
            "partition {partition}: {err:?}"
        );
    }
    assert!(
        zombie.commit_transaction().await.is_err(),
        "the zombie cannot commit"
    );

    successor
        .begin_transaction()
        .await
        .expect("begin successor");
    let _delivery = successor
        .send(ProducerRecord::new(&topic).partition(1).value(b"successor"))
        .await
        .expect("send");
    successor
        .commit_transaction()
        .await
        .expect("commit successor");
    let values: Vec<String> = kcat(kafka, &topic, &["isolation.level=read_committed"])
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(values, ["successor"]);
}

/// The protocol follows the cluster's finalized `transaction.version`, not the request
/// versions a broker offers: a Kafka 4.x cluster formatted with `transaction.version` 0
/// offers Produce v12 and EndTxn v5, yet only the classic protocol works there. The
/// producer uses it, and keeps one epoch across transactions.
#[tokio::test(flavor = "current_thread")]
async fn a_4x_cluster_formatted_without_transaction_version_2_gets_the_classic_protocol() {
    let kafka = KafkaCluster::start(ClusterSpec::single().with_transaction_version(0))
        .expect("start a 4.x cluster with transaction.version 0");
    let topic = create_topic(&kafka, "txn-v1-on-4x", 1).await;
    let p = transactional(&kafka, &KafkaCluster::unique_topic("v1-id")).await;
    p.init_transactions().await.expect("init");
    assert_eq!(p.transaction_version(), Some(TransactionVersion::V1));
    let group = KafkaCluster::unique_topic("v1-group");

    for (name, commit) in [("one", true), ("aborted", false), ("two", true)] {
        p.begin_transaction().await.expect("begin");
        let mut deliveries = Vec::new();
        for i in 0..3 {
            deliveries.push(
                p.send(ProducerRecord::new(&topic).value(format!("{name}-{i}").as_bytes()))
                    .await
                    .expect("send"),
            );
        }
        p.flush().await.expect("flush");
        for d in deliveries {
            d.await.expect("written");
        }
        p.send_offsets_to_transaction(
            &[(TopicPartition::new(&topic, 0), 1)],
            &ConsumerGroupMetadata::new(&group),
        )
        .await
        .expect("offsets through AddOffsetsToTxn");
        if commit {
            p.commit_transaction().await.expect("commit");
        } else {
            p.abort_transaction().await.expect("abort");
        }
    }
    let committed: Vec<String> = kcat(&kafka, &topic, &["isolation.level=read_committed"])
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        committed,
        ["one-0", "one-1", "one-2", "two-0", "two-1", "two-2"]
    );
    let batches = log_batch_headers(&p, &topic, 0).await;
    let mut epochs: Vec<i16> = batches
        .iter()
        .filter(|b| !b.control)
        .map(|b| b.epoch)
        .collect();
    epochs.dedup();
    assert_eq!(
        epochs.len(),
        1,
        "one epoch for the producer's life: {batches:?}"
    );
    p.close(Duration::from_secs(10)).await.expect("close");
}

#[tokio::test(flavor = "current_thread")]
async fn send_outside_a_transaction_and_commit_without_one_are_refused_clearly() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "txn-state", 1).await;
    let p = transactional(kafka, &KafkaCluster::unique_topic("state-id")).await;
    let err = p
        .begin_transaction()
        .await
        .expect_err("init_transactions first");
    assert!(matches!(err, ProduceError::TransactionState(_)), "{err:?}");
    p.init_transactions().await.expect("init");
    let err = p
        .send(ProducerRecord::new(&topic).value(b"v"))
        .await
        .expect_err("no transaction open");
    assert!(err.to_string().contains("begin_transaction"), "{err}");
    let err = p.commit_transaction().await.expect_err("nothing to commit");
    assert!(matches!(err, ProduceError::TransactionState(_)), "{err:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_transaction_that_wrote_nothing_commits_and_aborts_without_a_broker_error() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "txn-empty", 1).await;
    let p = transactional(kafka, &KafkaCluster::unique_topic("empty-id")).await;
    p.init_transactions().await.expect("init");
    p.begin_transaction().await.expect("begin");
    p.commit_transaction()
        .await
        .expect("an empty transaction commits");
    p.begin_transaction().await.expect("begin again");
    p.abort_transaction()
        .await
        .expect("an empty transaction aborts");
    p.begin_transaction().await.expect("begin a third time");
    p.send(ProducerRecord::new(&topic).value(b"v"))
        .await
        .expect("send")
        .await
        .expect("delivered");
    p.commit_transaction()
        .await
        .expect("commit after empty ones");
}

#[tokio::test(flavor = "current_thread")]
async fn explicit_partitions_timestamps_and_headers_reach_the_log() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "explicit", 4).await;
    let p = producer(kafka, &[]).await;
    let headers: [(&[u8], Option<&[u8]>); 1] = [(b"h", Some(b"v"))];
    let f = p
        .send(
            ProducerRecord::new(&topic)
                .partition(3)
                .key(b"k")
                .value(b"v")
                .timestamp(1_600_000_000_000)
                .headers(&headers),
        )
        .await
        .expect("send");
    let m = f.await.expect("delivered");
    assert_eq!(
        (m.partition, m.offset, m.timestamp),
        (3, 0, 1_600_000_000_000)
    );
    let err = p
        .send(ProducerRecord::new(&topic).partition(4).value(b"v"))
        .await
        .expect_err("no partition 4");
    assert!(
        matches!(err, ProduceError::InvalidPartition { count: 4, .. }),
        "{err:?}"
    );
    let out = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &kafka.bootstrap(),
            "-t",
            &topic,
            "-e",
            "-q",
            "-f",
            "%p %T %h %k %s\n",
        ])
        .output()
        .expect("kcat");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "3 1600000000000 h=v k v\n"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn acks_zero_and_one_deliver_and_acks_zero_reports_no_offset() {
    let kafka = KafkaCluster::shared();
    for acks in ["0", "1"] {
        let topic = create_topic(kafka, &format!("acks{acks}"), 2).await;
        // A fresh partition refuses writes for a moment, and with acks=0 nobody would hear
        // of it: warm both partitions up with acknowledged writes first.
        let warm = producer(kafka, &[]).await;
        for partition in 0..2 {
            warm.send(
                ProducerRecord::new(&topic)
                    .partition(partition)
                    .value(b"warm-up"),
            )
            .await
            .expect("send")
            .await
            .expect("warm-up write");
        }
        let p = producer(kafka, &[("acks", acks)]).await;
        assert!(!p.config().idempotence, "acks={acks} turns idempotence off");
        let mut futures = Vec::new();
        for i in 0..1000 {
            futures.push(
                p.send(ProducerRecord::new(&topic).value(format!("{i}").as_bytes()))
                    .await
                    .expect("send"),
            );
        }
        for f in futures {
            let m = f.await.expect("delivered");
            if acks == "0" {
                assert_eq!(m.offset, -1, "acks=0 has no offset to report");
            } else {
                assert!(m.offset >= 0);
            }
        }
        p.close(Duration::from_secs(10)).await.expect("close");
        // acks=0 gives no confirmation: wait for the log to catch up.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = kcat(kafka, &topic, &[])
                .iter()
                .filter(|r| r.value != "warm-up")
                .count();
            if n == 1000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "acks={acks}: only {n} of 1000 records"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `max.request.size` below `batch.size` limits records, not batch reservations: small
/// records are delivered, and only a record whose own batch exceeds the limit is refused.
#[tokio::test(flavor = "current_thread")]
async fn max_request_size_below_batch_size_refuses_only_records_over_it() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "max-request", 1).await;
    let p = producer(
        kafka,
        &[("max.request.size", "4096"), ("batch.size", "16384")],
    )
    .await;
    let small = p
        .send(ProducerRecord::new(&topic).value(b"small"))
        .await
        .expect("a small record is accepted")
        .await
        .expect("delivered");
    assert_eq!(small.offset, 0);
    let big = vec![b'x'; 8192];
    let err = match p.send(ProducerRecord::new(&topic).value(&big)).await {
        Ok(_) => panic!("an 8 KiB record passed a 4 KiB max.request.size"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ProduceError::RecordTooLarge { max: 4096, size } if size > 8192),
        "{err}"
    );
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// A record over `max.request.size` is refused even when the open batch (`batch.size` far
/// above the limit) has room for it, as the Java client checks every record.
#[tokio::test(flavor = "current_thread")]
async fn a_record_over_max_request_size_is_refused_even_with_room_in_the_open_batch() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "max-request-open", 1).await;
    let p = producer(
        kafka,
        &[
            ("max.request.size", "20000"),
            ("batch.size", "1000000"),
            ("linger.ms", "1000"),
        ],
    )
    .await;
    let small = p
        .send(ProducerRecord::new(&topic).value(b"small"))
        .await
        .expect("a small record is accepted");
    let big = vec![b'x'; 50_000];
    let err = match p.send(ProducerRecord::new(&topic).value(&big)).await {
        Ok(_) => panic!("a 50 kB record joined an open batch past a 20 kB max.request.size"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ProduceError::RecordTooLarge { max: 20000, size } if size > 50_000),
        "{err}"
    );
    p.flush().await.expect("flushed");
    assert_eq!(small.await.expect("delivered").offset, 0);
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// Partitions added to a topic while a producer writes to it are learnt from the metadata
/// refreshed every `metadata.max.age.ms`; from then on, keys hash over the new count (the
/// partition the Java client picks), and records reach the new partitions.
#[tokio::test(flavor = "current_thread")]
async fn keys_follow_partitions_added_while_producing() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "grow", 2).await;
    let p = producer(kafka, &[("metadata.max.age.ms", "300"), ("linger.ms", "0")]).await;
    // A key that lands on partition 2 or 3 of 4, so only the new count can place it there.
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_for_key(k.as_bytes(), 4) >= 2)
        .expect("some key hashes past partition 1");
    let before = p
        .send(
            ProducerRecord::new(&topic)
                .key(key.as_bytes())
                .value(b"before"),
        )
        .await
        .expect("send")
        .await
        .expect("delivered");
    assert_eq!(before.partition, partition_for_key(key.as_bytes(), 2));

    let created = admin(kafka)
        .await
        .create_partitions(&[(topic.as_str(), 4)], false)
        .await
        .expect("create partitions");
    assert!(created.values().all(Result::is_ok), "{created:?}");

    // Keyless records keep the sender going (it refreshes metadata as it drains) while the
    // producer has not seen the new partitions yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.partitions_for(&topic).await.expect("partitions") < 4 {
        assert!(
            Instant::now() < deadline,
            "the producer never saw the new partitions"
        );
        p.send(ProducerRecord::new(&topic).value(b"filler"))
            .await
            .expect("send")
            .await
            .expect("delivered");
    }
    let after = p
        .send(
            ProducerRecord::new(&topic)
                .key(key.as_bytes())
                .value(b"after"),
        )
        .await
        .expect("send")
        .await
        .expect("delivered");
    assert_eq!(after.partition, partition_for_key(key.as_bytes(), 4));
    assert!(after.partition >= 2, "a new partition: {}", after.partition);
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// Printable values that compress poorly (hex of a xorshift stream), so compressed batches
/// stay over a small topic limit.
fn noisy_value(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

/// A topic whose `max.message.bytes` is far below the producer's `batch.size`: the broker
/// refuses the batches (MESSAGE_TOO_LARGE), and the producer splits them, as the Java
/// client does, until they fit. Every record arrives once, in send order per partition,
/// at the offset its future reported, uncompressed and compressed.
#[tokio::test(flavor = "current_thread")]
async fn batches_over_the_topic_limit_are_split_and_every_record_arrives_once_in_order() {
    let kafka = KafkaCluster::shared();
    for codec in ["none", "zstd"] {
        let topic = create_topic_with(kafka, "split", 2, &[("max.message.bytes", "16384")]).await;
        let p = producer(
            kafka,
            &[
                ("batch.size", "262144"),
                ("linger.ms", "200"),
                ("compression.type", codec),
            ],
        )
        .await;
        let records = 3000u64;
        let mut futures = Vec::new();
        for i in 0..records {
            let key = format!("k{}", i % 7);
            let value = format!("{i} {}", noisy_value(i, 200));
            futures.push((
                key.clone(),
                value.clone(),
                p.send(
                    ProducerRecord::new(&topic)
                        .key(key.as_bytes())
                        .value(value.as_bytes()),
                )
                .await
                .expect("send"),
            ));
        }
        let mut reported = HashMap::new();
        for (key, value, f) in futures {
            let m = f.await.unwrap_or_else(|e| panic!("{codec}: {e}"));
            assert_eq!(m.partition, partition_for_key(key.as_bytes(), 2));
            reported.insert((m.partition, m.offset), (key, value));
        }
        assert_eq!(
            reported.len() as u64,
            records,
            "{codec}: offsets are distinct"
        );
        let consumed = kcat(kafka, &topic, &[]);
        assert_eq!(consumed.len() as u64, records, "{codec}: each record once");
        let mut last_seen: HashMap<String, u64> = HashMap::new();
        for c in &consumed {
            let (key, value) = reported.get(&(c.partition, c.offset)).unwrap_or_else(|| {
                panic!("{codec}: no future reported {}@{}", c.partition, c.offset)
            });
            assert_eq!((&c.key, &c.value), (key, value), "{codec}");
            // Per key (so per partition), the log keeps the order of `send`.
            let n: u64 = value
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("n");
            if let Some(prev) = last_seen.insert(key.clone(), n) {
                assert!(prev < n, "{codec}: key {key}: {prev} then {n}");
            }
        }
        p.close(Duration::from_secs(10)).await.expect("close");
    }
}

/// A record over the topic's limit in a batch with others: the batch is split until that
/// record is alone, which fails with MESSAGE_TOO_LARGE; the records around it are delivered
/// in order, and the idempotent producer goes on past the gap its sequence left.
#[tokio::test(flavor = "current_thread")]
async fn a_record_over_the_topic_limit_fails_alone_and_the_others_are_delivered_in_order() {
    let kafka = KafkaCluster::shared();
    let topic = create_topic_with(kafka, "too-large", 1, &[("max.message.bytes", "4096")]).await;
    let p = producer(kafka, &[("batch.size", "65536"), ("linger.ms", "200")]).await;
    let big = noisy_value(1, 8000);
    let values: Vec<String> = (0..6)
        .map(|i| {
            if i == 2 {
                big.clone()
            } else {
                format!("small-{i}")
            }
        })
        .collect();
    let mut futures = Vec::new();
    for v in &values {
        futures.push(
            p.send(ProducerRecord::new(&topic).value(v.as_bytes()))
                .await
                .expect("send"),
        );
    }
    let mut offsets = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        match f.await {
            Ok(m) => offsets.push(m.offset),
            Err(e) => {
                assert_eq!(i, 2, "only the large record fails: {e}");
                assert_eq!(
                    e.code(),
                    Some(flumen_protocol::ErrorCode::MessageTooLarge),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(offsets.len(), 5);
    // Records sent after the failure (with a new epoch) still arrive, after the others.
    let after = p
        .send(ProducerRecord::new(&topic).value(b"after"))
        .await
        .expect("send")
        .await
        .expect("delivered after the gap");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(after.offset > offsets[4]);
    let consumed: Vec<String> = kcat(kafka, &topic, &[])
        .into_iter()
        .map(|c| c.value)
        .collect();
    let mut expected: Vec<String> = values.into_iter().filter(|v| v.len() < 100).collect();
    expected.push("after".to_owned());
    assert_eq!(consumed, expected);
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// What a record batch in the log says about who wrote it.
#[derive(Debug)]
#[allow(dead_code)] // `records` is read through Debug only
struct LogBatch {
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    records: i32,
    control: bool,
}

/// The raw records of one plain Fetch (read_uncommitted, no session) of `topic`-`partition`
/// from `offset`: empty at the log end.
async fn fetch_raw(p: &Producer, topic: &str, partition: i32, offset: i64) -> bytes::Bytes {
    use flumen_client::cluster::ConnectionKind;
    use flumen_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use flumen_protocol::messages::{BrokerId, FetchRequest, StrBytes, TopicName};

    let cluster = p.cluster();
    let leader = cluster.leader(topic, partition).await.expect("leader");
    let conn = cluster
        .connection(&leader, ConnectionKind::Fetch)
        .await
        .expect("connection");
    let mut part = FetchPartition::default();
    part.partition = partition;
    part.fetch_offset = offset;
    part.partition_max_bytes = 1 << 20;
    let mut wanted = FetchTopic::default();
    wanted.topic = TopicName(StrBytes::from_string(topic.to_owned()));
    wanted.partitions = vec![part];
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_bytes = 1 << 20;
    request.topics = vec![wanted];
    let response = conn.send_version(request, 12).await.expect("fetch");
    response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

/// The headers of every record batch in `topic`-`partition` (transaction markers included),
/// read to the log end with plain read_uncommitted Fetch requests.
async fn log_batch_headers(p: &Producer, topic: &str, partition: i32) -> Vec<LogBatch> {
    use flumen_protocol::record::RecordBatches;

    let mut batches = Vec::new();
    let mut offset = 0;
    loop {
        let records = fetch_raw(p, topic, partition, offset).await;
        if records.is_empty() {
            return batches;
        }
        for batch in RecordBatches::new(records) {
            let batch = batch.expect("a well-formed batch");
            batches.push(LogBatch {
                producer_id: batch.producer_id(),
                epoch: batch.producer_epoch(),
                base_sequence: batch.base_sequence(),
                records: batch.record_count(),
                control: batch.is_control(),
            });
            offset = batch.next_offset();
        }
    }
}

/// The record batches in `topic`-`partition` up to offset `end`, as record counts in log
/// order, read with plain Fetch requests (no session).
async fn log_batches(p: &Producer, topic: &str, partition: i32, end: i64) -> Vec<i32> {
    use flumen_protocol::record::RecordBatches;

    let mut counts = Vec::new();
    let mut offset = 0;
    while offset < end {
        let records = fetch_raw(p, topic, partition, offset).await;
        assert!(
            !records.is_empty(),
            "the log ends at {offset}, before {end}"
        );
        for batch in RecordBatches::new(records) {
            let batch = batch.expect("a well-formed batch");
            counts.push(batch.record_count());
            offset = batch.next_offset();
        }
    }
    counts
}

/// With linger.ms=0, a batch that only waits for the broker to answer a request in flight
/// stays open, so the records sent meanwhile join it (as in the Java client). Closed at once,
/// it left each later record a batch of its own, and as a request carries one batch per
/// partition, a producer offered more than its one-record requests could carry fell
/// further behind with every record: 48 ms median from send to read at 50 000 records/s in
/// `compare pipeline --latency-engine none`, against 0.4 ms for the Java client.
#[tokio::test(flavor = "current_thread")]
async fn with_linger_zero_records_sent_while_the_broker_is_busy_share_a_batch() {
    const RECORDS: usize = 5_000;
    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "linger-zero", 1).await;
    let p = producer(kafka, &[("linger.ms", "0")]).await;
    let value = [b'v'; 100];
    // Sent in a loop that never waits: the broker's answers come while the records do.
    for _ in 0..RECORDS {
        drop(
            p.send(ProducerRecord::new(&topic).value(&value))
                .await
                .expect("send"),
        );
    }
    p.flush().await.expect("flush");
    assert_eq!(p.failed_records(), 0);
    let batches = log_batches(&p, &topic, 0, RECORDS as i64).await;
    assert_eq!(batches.iter().sum::<i32>(), RECORDS as i32);
    // About 130 records fill a 16 KiB batch; one record per batch was the failure.
    assert!(
        batches.len() * 10 <= RECORDS,
        "{} batches for {RECORDS} records: {:?}",
        batches.len(),
        &batches[..batches.len().min(40)]
    );
    p.close(Duration::from_secs(10)).await.expect("close");
}

/// A record sent with linger.ms=0 reaches a consumer whose fetch is already waiting on the
/// broker as soon as it is written: nothing on the way waits for a timer (the consumer's
/// `fetch.max.wait.ms` is 5 s here, so a fetch answered only when it runs out fails clearly).
/// The median of nine sends is checked, so one slow moment of a busy machine does not fail it.
#[tokio::test(flavor = "current_thread")]
async fn a_record_sent_with_linger_zero_reaches_an_already_polling_consumer_at_once() {
    use flumen_client::consumer::{Consumer, ConsumerConfig};

    let kafka = KafkaCluster::shared();
    let topic = create_topic(kafka, "send-to-poll", 1).await;
    let p = producer(kafka, &[("linger.ms", "0")]).await;
    p.partitions_for(&topic).await.expect("metadata");
    let mut c = Consumer::connect(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", kafka.bootstrap().as_str()),
            ("fetch.max.wait.ms", "5000"),
            ("auto.offset.reset", "earliest"),
        ])
        .expect("config"),
    )
    .await
    .expect("consumer");
    c.assign([TopicPartition::new(&topic, 0)]).expect("assign");
    let mut waits = Vec::new();
    // The first round also finds the position and starts the fetcher: not counted.
    for round in 0..10 {
        let value = format!("record-{round}");
        let (polled, sent) = tokio::join!(
            async {
                let mut got = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while got.is_empty() && Instant::now() < deadline {
                    let mut records = c.poll(Duration::from_secs(10)).await.expect("poll");
                    for r in records.iter() {
                        got.push(r.expect("record").value().unwrap_or_default().to_vec());
                    }
                }
                (got, Instant::now())
            },
            async {
                // Time for the consumer's fetch to reach the broker and wait there.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let sent = Instant::now();
                let delivery = p
                    .send(ProducerRecord::new(&topic).value(value.as_bytes()))
                    .await
                    .expect("send");
                (sent, delivery)
            }
        );
        let (got, read_at) = polled;
        let (sent_at, delivery) = sent;
        assert_eq!(got, vec![value.into_bytes()], "round {round}");
        delivery.await.expect("delivered");
        if round > 0 {
            waits.push(read_at - sent_at);
        }
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    assert!(
        median < Duration::from_millis(50),
        "median {median:?} from send to poll: {waits:?}"
    );
    p.close(Duration::from_secs(10)).await.expect("close");
}
