//! `Cluster` and `Admin` against scripted fake brokers on 127.0.0.1, for broker answers the
//! real test cluster will not give on demand: `NOT_LEADER_OR_FOLLOWER` from a partition
//! leader, `NOT_COORDINATOR` from a group coordinator, and a broker that only speaks
//! FindCoordinator v3 (one key per request).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flumen_client::admin::{IsolationLevel, OffsetSpec};
use flumen_client::cluster::CoordinatorType;
use flumen_client::{Admin, ClientConfig, TopicPartition};
use flumen_protocol::ErrorCode;
use flumen_protocol::messages::api_versions_response::ApiVersion;
use flumen_protocol::messages::find_coordinator_response::Coordinator;
use flumen_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use flumen_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use flumen_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use flumen_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataResponse, OffsetFetchRequest,
    OffsetFetchResponse, StrBytes, TopicName,
};
use support::{listen, read_request, respond};
use tokio::net::TcpStream;

const TOPIC: &str = "scripted";
const GROUP: &str = "scripted-group";

/// What the fake broker was asked, and how it should misbehave.
#[derive(Default)]
struct Script {
    find_coordinator_max: i16,
    /// Answer this many ListOffsets with NOT_LEADER_OR_FOLLOWER first.
    not_leader: AtomicUsize,
    /// Answer this many OffsetFetch with NOT_COORDINATOR first.
    not_coordinator: AtomicUsize,
    metadata_requests: AtomicUsize,
    list_offsets_requests: AtomicUsize,
    find_coordinator_requests: AtomicUsize,
    find_coordinator_versions: std::sync::Mutex<Vec<i16>>,
}

fn versions(find_coordinator_max: i16) -> ApiVersionsResponse {
    let range = |key: ApiKey, max: i16| {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(key.valid_versions().min)
            .with_max_version(max)
    };
    ApiVersionsResponse::default().with_api_keys(vec![
        range(ApiKey::ApiVersions, 3),
        range(ApiKey::Metadata, 12),
        range(ApiKey::ListOffsets, 9),
        range(ApiKey::FindCoordinator, find_coordinator_max),
        range(ApiKey::OffsetFetch, 9),
    ])
}

/// A one-broker cluster (node 1 at its own address) hosting `TOPIC` with one partition.
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
        match request.key() {
            ApiKey::ApiVersions => {
                respond(
                    &mut stream,
                    &request,
                    &versions(script.find_coordinator_max),
                )
                .await
            }
            ApiKey::Metadata => {
                script.metadata_requests.fetch_add(1, Ordering::SeqCst);
                let broker = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(port);
                let partition = MetadataResponsePartition::default()
                    .with_partition_index(0)
                    .with_leader_id(BrokerId(1))
                    .with_leader_epoch(5)
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
            ApiKey::ListOffsets => {
                script.list_offsets_requests.fetch_add(1, Ordering::SeqCst);
                let asked: ListOffsetsRequest = request.decode();
                let refuse = script
                    .not_leader
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let topics = asked
                    .topics
                    .iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let answer = ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_timestamp(-1);
                                        if refuse {
                                            answer.with_error_code(
                                                ErrorCode::NotLeaderOrFollower.code(),
                                            )
                                        } else {
                                            answer.with_offset(42).with_leader_epoch(5)
                                        }
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                respond(
                    &mut stream,
                    &request,
                    &ListOffsetsResponse::default().with_topics(topics),
                )
                .await;
            }
            ApiKey::FindCoordinator => {
                script
                    .find_coordinator_requests
                    .fetch_add(1, Ordering::SeqCst);
                let version = request.header.request_api_version;
                script
                    .find_coordinator_versions
                    .lock()
                    .expect("lock")
                    .push(version);
                let asked: FindCoordinatorRequest = request.decode();
                let body = if version >= 4 {
                    FindCoordinatorResponse::default().with_coordinators(
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
                    )
                } else {
                    FindCoordinatorResponse::default()
                        .with_node_id(BrokerId(1))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(port)
                };
                respond(&mut stream, &request, &body).await;
            }
            ApiKey::OffsetFetch => {
                let asked: OffsetFetchRequest = request.decode();
                let refuse = script
                    .not_coordinator
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let group = asked
                    .groups
                    .first()
                    .map(|g| g.group_id.clone())
                    .unwrap_or_default();
                let answer = if refuse {
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group)
                        .with_error_code(ErrorCode::NotCoordinator.code())
                } else {
                    let partition = OffsetFetchResponsePartitions::default()
                        .with_partition_index(0)
                        .with_committed_offset(7)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(StrBytes::from_static_str("m")));
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group)
                        .with_topics(vec![
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                                .with_partitions(vec![partition]),
                        ])
                };
                respond(
                    &mut stream,
                    &request,
                    &OffsetFetchResponse::default().with_groups(vec![answer]),
                )
                .await;
            }
            other => panic!("the fake broker does not expect {other:?}"),
        }
    }
}

async fn admin_for(addr: &str) -> Admin {
    let config = ClientConfig::from_properties([
        ("bootstrap.servers", addr),
        ("retry.backoff.ms", "10"),
        ("retry.backoff.max.ms", "50"),
        ("default.api.timeout.ms", "5000"),
    ])
    .expect("config");
    Admin::connect(config)
        .await
        .expect("bootstrap from the fake broker")
}

#[tokio::test(flavor = "current_thread")]
async fn not_leader_or_follower_refreshes_metadata_and_retries_the_partition() {
    let script = Arc::new(Script {
        find_coordinator_max: 4,
        not_leader: AtomicUsize::new(2),
        ..Script::default()
    });
    let admin = admin_for(&fake_broker(script.clone()).await).await;
    let tp = TopicPartition::new(TOPIC, 0);
    let listed = admin
        .list_offsets(
            &[(tp.clone(), OffsetSpec::Latest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .expect("answered");
    let offset = listed[&tp]
        .as_ref()
        .expect("retried until the leader answered");
    assert_eq!((offset.offset, offset.leader_epoch), (42, Some(5)));
    assert_eq!(script.list_offsets_requests.load(Ordering::SeqCst), 3);
    // Bootstrap, then one refresh per NOT_LEADER_OR_FOLLOWER.
    assert_eq!(script.metadata_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn not_coordinator_forgets_the_coordinator_and_finds_it_again() {
    let script = Arc::new(Script {
        find_coordinator_max: 4,
        not_coordinator: AtomicUsize::new(1),
        ..Script::default()
    });
    let admin = admin_for(&fake_broker(script.clone()).await).await;
    let offsets = admin
        .list_group_offsets(GROUP, None)
        .await
        .expect("group offsets");
    let committed = offsets[&TopicPartition::new(TOPIC, 0)]
        .as_ref()
        .expect("offset");
    assert_eq!((committed.offset, committed.metadata.as_str()), (7, "m"));
    assert_eq!(script.find_coordinator_requests.load(Ordering::SeqCst), 2);
    // The cache now holds the coordinator: no further lookup.
    admin.list_group_offsets(GROUP, None).await.expect("again");
    assert_eq!(script.find_coordinator_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn find_coordinator_falls_back_to_one_key_per_request_before_v4() {
    let script = Arc::new(Script {
        find_coordinator_max: 3,
        ..Script::default()
    });
    let admin = admin_for(&fake_broker(script.clone()).await).await;
    let keys: Vec<String> = ["a", "b", "c"].iter().map(|k| (*k).to_owned()).collect();
    let found = admin
        .cluster()
        .find_coordinators(CoordinatorType::Group, &keys)
        .await
        .expect("lookup");
    assert_eq!(
        found.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );
    assert!(
        found
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|b| b.id == 1))
    );
    assert_eq!(
        *script.find_coordinator_versions.lock().expect("lock"),
        vec![3, 3, 3]
    );

    let batched = Arc::new(Script {
        find_coordinator_max: 4,
        ..Script::default()
    });
    let batched_admin = admin_for(&fake_broker(batched.clone()).await).await;
    batched_admin
        .cluster()
        .find_coordinators(CoordinatorType::Transaction, &keys)
        .await
        .expect("lookup");
    assert_eq!(
        *batched.find_coordinator_versions.lock().expect("lock"),
        vec![4]
    );
}
