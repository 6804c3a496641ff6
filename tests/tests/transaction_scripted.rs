//! The transactional producer against a scripted fake broker, for answers a real broker gives
//! only after 32 767 transactions of one producer: an EndTxn v5 (KIP-890, transaction
//! protocol v2) that hands out a new producer id at epoch 0 because the epoch would overflow.
//! The same broker without the finalized feature `transaction.version` 2 checks the classic
//! flow's requests.

mod support;

use std::sync::{Arc, Mutex};

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord, TransactionVersion};
use flumen_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};
use flumen_protocol::messages::find_coordinator_response::Coordinator;
use flumen_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use flumen_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use flumen_protocol::messages::{
    AddPartitionsToTxnResponse, ApiKey, ApiVersionsResponse, BrokerId, EndTxnRequest,
    EndTxnResponse, FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdResponse,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, StrBytes, TopicName,
};
use flumen_protocol::record::RecordBatch;
use support::{listen, read_request, respond};
use tokio::net::TcpStream;

const TOPIC: &str = "scripted-txn";
const PRODUCER_ID: i64 = 1000;
/// The producer id the coordinator hands out once the first one's epochs run out.
const NEXT_PRODUCER_ID: i64 = 2000;

/// What the fake broker was asked.
#[derive(Default)]
struct Log {
    /// Per batch: (Produce version, producer id, epoch, base sequence).
    batches: Vec<(i16, i64, i16, i32)>,
    /// Per EndTxn: (version, producer id, epoch, commit).
    end_txns: Vec<(i16, i64, i16, bool)>,
    add_partitions: usize,
}

struct Script {
    tv2: bool,
    log: Mutex<Log>,
}

fn versions(tv2: bool) -> ApiVersionsResponse {
    let range = |key: ApiKey, max: i16| {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(key.valid_versions().min)
            .with_max_version(max)
    };
    // A Kafka 4.x broker's versions either way; only the finalized feature differs.
    ApiVersionsResponse::default()
        .with_api_keys(vec![
            range(ApiKey::ApiVersions, 4),
            range(ApiKey::Metadata, 12),
            range(ApiKey::FindCoordinator, 6),
            range(ApiKey::InitProducerId, 5),
            range(ApiKey::Produce, 12),
            range(ApiKey::AddPartitionsToTxn, 5),
            range(ApiKey::EndTxn, 5),
            range(ApiKey::TxnOffsetCommit, 5),
        ])
        .with_finalized_features_epoch(3)
        .with_finalized_features(vec![
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str("transaction.version"))
                .with_max_version_level(if tv2 { 2 } else { 0 }),
        ])
}

/// A one-broker cluster (node 1 at its own address): leader of `TOPIC`'s one partition and
/// transaction coordinator.
async fn fake_broker(script: Arc<Script>) -> String {
    let (listener, addr) = listen().await;
    let port: i32 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, port, script.clone()));
        }
    });
    addr
}

async fn serve(mut stream: TcpStream, port: i32, script: Arc<Script>) {
    while let Some(request) = read_request(&mut stream).await {
        let version = request.header.request_api_version;
        match request.key() {
            ApiKey::ApiVersions => respond(&mut stream, &request, &versions(script.tv2)).await,
            ApiKey::Metadata => {
                let broker = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(port);
                let partition = MetadataResponsePartition::default()
                    .with_partition_index(0)
                    .with_leader_id(BrokerId(1))
                    .with_replica_nodes(vec![BrokerId(1)])
                    .with_isr_nodes(vec![BrokerId(1)]);
                let topic = MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))
                    .with_partitions(vec![partition]);
                let body = MetadataResponse::default()
                    .with_brokers(vec![broker])
                    .with_controller_id(BrokerId(1))
                    .with_cluster_id(Some(StrBytes::from_static_str("scripted")))
                    .with_topics(vec![topic]);
                respond(&mut stream, &request, &body).await;
            }
            ApiKey::FindCoordinator => {
                let asked: FindCoordinatorRequest = request.decode();
                let body = FindCoordinatorResponse::default().with_coordinators(
                    asked
                        .coordinator_keys
                        .iter()
                        .map(|k| {
                            Coordinator::default()
                                .with_key(k.clone())
                                .with_node_id(BrokerId(1))
                                .with_host(StrBytes::from_static_str("127.0.0.1"))
                                .with_port(port)
                        })
                        .collect(),
                );
                respond(&mut stream, &request, &body).await;
            }
            ApiKey::InitProducerId => {
                // One transaction before the epoch reaches i16::MAX.
                let body = InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(PRODUCER_ID))
                    .with_producer_epoch(i16::MAX - 1);
                respond(&mut stream, &request, &body).await;
            }
            ApiKey::AddPartitionsToTxn => {
                script.log.lock().expect("log").add_partitions += 1;
                // Partition results left empty: no error anywhere.
                respond(
                    &mut stream,
                    &request,
                    &AddPartitionsToTxnResponse::default(),
                )
                .await;
            }
            ApiKey::Produce => {
                let asked: ProduceRequest = request.decode();
                let mut responses = Vec::new();
                for t in &asked.topic_data {
                    let mut partitions = Vec::new();
                    for p in &t.partition_data {
                        let records = p.records.clone().expect("records");
                        let batch = RecordBatch::new(records).expect("a record batch");
                        script.log.lock().expect("log").batches.push((
                            version,
                            batch.producer_id(),
                            batch.producer_epoch(),
                            batch.base_sequence(),
                        ));
                        partitions.push(
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_base_offset(0),
                        );
                    }
                    responses.push(
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_partition_responses(partitions),
                    );
                }
                respond(
                    &mut stream,
                    &request,
                    &ProduceResponse::default().with_responses(responses),
                )
                .await;
            }
            ApiKey::EndTxn => {
                let asked: EndTxnRequest = request.decode();
                let (pid, epoch) = (asked.producer_id.0, asked.producer_epoch);
                script.log.lock().expect("log").end_txns.push((
                    version,
                    pid,
                    epoch,
                    asked.committed,
                ));
                // v5: the next transaction's identity; at i16::MAX a new producer id.
                // Older versions have no such fields.
                let body = if version >= 5 {
                    let next = if epoch == i16::MAX {
                        (NEXT_PRODUCER_ID, 0)
                    } else {
                        (pid, epoch + 1)
                    };
                    EndTxnResponse::default()
                        .with_producer_id(ProducerId(next.0))
                        .with_producer_epoch(next.1)
                } else {
                    EndTxnResponse::default()
                };
                respond(&mut stream, &request, &body).await;
            }
            other => panic!("the fake broker does not expect {other:?}"),
        }
    }
}

/// Three transactions of two batches each (commit, abort, commit) against the fake broker.
async fn three_transactions(tv2: bool) -> (Option<TransactionVersion>, Log) {
    let script = Arc::new(Script {
        tv2,
        log: Mutex::new(Log::default()),
    });
    let addr = fake_broker(script.clone()).await;
    let config = ProducerConfig::from_properties([
        ("bootstrap.servers", addr.as_str()),
        ("transactional.id", "scripted"),
        ("linger.ms", "0"),
        ("retry.backoff.ms", "10"),
        ("max.block.ms", "10000"),
    ])
    .expect("config");
    let p = Producer::connect(config).await.expect("connect");
    p.init_transactions().await.expect("init");
    for commit in [true, false, true] {
        p.begin_transaction().await.expect("begin");
        for value in [b"a", b"b"] {
            // Acknowledged one at a time: two batches, sequences 0 and 1.
            p.send(ProducerRecord::new(TOPIC).partition(0).value(value))
                .await
                .expect("send")
                .await
                .expect("written");
        }
        if commit {
            p.commit_transaction().await.expect("commit");
        } else {
            p.abort_transaction().await.expect("abort");
        }
    }
    let version = p.transaction_version();
    drop(p);
    let log = std::mem::take(&mut *script.log.lock().expect("log"));
    (version, log)
}

#[tokio::test(flavor = "current_thread")]
async fn under_transaction_v2_an_end_txn_past_the_last_epoch_moves_the_producer_to_a_new_id() {
    let (version, log) = three_transactions(true).await;
    assert_eq!(version, Some(TransactionVersion::V2));
    let max = i16::MAX;
    assert_eq!(
        log.batches,
        [
            (12, PRODUCER_ID, max - 1, 0),
            (12, PRODUCER_ID, max - 1, 1),
            (12, PRODUCER_ID, max, 0),
            (12, PRODUCER_ID, max, 1),
            // The epoch ran out at the abort: a new id, epoch 0, sequences from 0.
            (12, NEXT_PRODUCER_ID, 0, 0),
            (12, NEXT_PRODUCER_ID, 0, 1),
        ]
    );
    assert_eq!(
        log.end_txns,
        [
            (5, PRODUCER_ID, max - 1, true),
            (5, PRODUCER_ID, max, false),
            (5, NEXT_PRODUCER_ID, 0, true),
        ]
    );
    assert_eq!(log.add_partitions, 0, "the leader adds partitions under v2");
}

#[tokio::test(flavor = "current_thread")]
async fn without_transaction_version_2_a_4x_broker_gets_the_classic_requests() {
    let (version, log) = three_transactions(false).await;
    assert_eq!(version, Some(TransactionVersion::V1));
    let epoch = i16::MAX - 1;
    assert_eq!(
        log.batches,
        [
            (11, PRODUCER_ID, epoch, 0),
            (11, PRODUCER_ID, epoch, 1),
            (11, PRODUCER_ID, epoch, 2),
            (11, PRODUCER_ID, epoch, 3),
            (11, PRODUCER_ID, epoch, 4),
            (11, PRODUCER_ID, epoch, 5),
        ],
        "Produce v11, one epoch, sequences running on across transactions"
    );
    assert_eq!(
        log.end_txns,
        [
            (4, PRODUCER_ID, epoch, true),
            (4, PRODUCER_ID, epoch, false),
            (4, PRODUCER_ID, epoch, true),
        ]
    );
    assert_eq!(
        log.add_partitions, 3,
        "one AddPartitionsToTxn per transaction"
    );
}
