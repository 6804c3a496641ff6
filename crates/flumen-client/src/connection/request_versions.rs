//! The versions of each API that kafka-protocol can encode, from its request structs.
//!
//! `ApiKey::valid_versions()` is not that: in kafka-protocol 0.18.0 it claims OffsetCommit
//! v10, OffsetFetch v10 and InitProducerId v6 while the request structs stop at v9, v9 and
//! v5. Negotiating with it picked OffsetFetch v10 against a Kafka 4.4.0 broker (which offers
//! OffsetFetch and OffsetCommit v10), and the request then failed to encode: every group
//! consumer broke on its first poll. The request struct's `VERSIONS` is what encoding checks,
//! so negotiation uses it (`tests/tests/broker_versions.rs` runs against 4.4.0).

use flumen_protocol::messages::*;

/// The versions of `key`'s request that can be encoded.
pub(crate) fn request_versions(key: ApiKey) -> VersionRange {
    match key {
        ApiKey::Produce => ProduceRequest::VERSIONS,
        ApiKey::Fetch => FetchRequest::VERSIONS,
        ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
        ApiKey::Metadata => MetadataRequest::VERSIONS,
        ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
        ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
        ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
        ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
        ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
        ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
        ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
        ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
        ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
        ApiKey::SaslHandshake => SaslHandshakeRequest::VERSIONS,
        ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
        ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
        ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
        ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
        ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
        ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::VERSIONS,
        ApiKey::AddPartitionsToTxn => AddPartitionsToTxnRequest::VERSIONS,
        ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::VERSIONS,
        ApiKey::EndTxn => EndTxnRequest::VERSIONS,
        ApiKey::WriteTxnMarkers => WriteTxnMarkersRequest::VERSIONS,
        ApiKey::TxnOffsetCommit => TxnOffsetCommitRequest::VERSIONS,
        ApiKey::DescribeAcls => DescribeAclsRequest::VERSIONS,
        ApiKey::CreateAcls => CreateAclsRequest::VERSIONS,
        ApiKey::DeleteAcls => DeleteAclsRequest::VERSIONS,
        ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
        ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
        ApiKey::AlterReplicaLogDirs => AlterReplicaLogDirsRequest::VERSIONS,
        ApiKey::DescribeLogDirs => DescribeLogDirsRequest::VERSIONS,
        ApiKey::SaslAuthenticate => SaslAuthenticateRequest::VERSIONS,
        ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
        ApiKey::CreateDelegationToken => CreateDelegationTokenRequest::VERSIONS,
        ApiKey::RenewDelegationToken => RenewDelegationTokenRequest::VERSIONS,
        ApiKey::ExpireDelegationToken => ExpireDelegationTokenRequest::VERSIONS,
        ApiKey::DescribeDelegationToken => DescribeDelegationTokenRequest::VERSIONS,
        ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
        ApiKey::ElectLeaders => ElectLeadersRequest::VERSIONS,
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
        ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::VERSIONS,
        ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::VERSIONS,
        ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
        ApiKey::DescribeClientQuotas => DescribeClientQuotasRequest::VERSIONS,
        ApiKey::AlterClientQuotas => AlterClientQuotasRequest::VERSIONS,
        ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::VERSIONS,
        ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::VERSIONS,
        ApiKey::Vote => VoteRequest::VERSIONS,
        ApiKey::BeginQuorumEpoch => BeginQuorumEpochRequest::VERSIONS,
        ApiKey::EndQuorumEpoch => EndQuorumEpochRequest::VERSIONS,
        ApiKey::DescribeQuorum => DescribeQuorumRequest::VERSIONS,
        ApiKey::AlterPartition => AlterPartitionRequest::VERSIONS,
        ApiKey::UpdateFeatures => UpdateFeaturesRequest::VERSIONS,
        ApiKey::Envelope => EnvelopeRequest::VERSIONS,
        ApiKey::FetchSnapshot => FetchSnapshotRequest::VERSIONS,
        ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
        ApiKey::DescribeProducers => DescribeProducersRequest::VERSIONS,
        ApiKey::BrokerRegistration => BrokerRegistrationRequest::VERSIONS,
        ApiKey::BrokerHeartbeat => BrokerHeartbeatRequest::VERSIONS,
        ApiKey::UnregisterBroker => UnregisterBrokerRequest::VERSIONS,
        ApiKey::DescribeTransactions => DescribeTransactionsRequest::VERSIONS,
        ApiKey::ListTransactions => ListTransactionsRequest::VERSIONS,
        ApiKey::AllocateProducerIds => AllocateProducerIdsRequest::VERSIONS,
        ApiKey::ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest::VERSIONS,
        ApiKey::ConsumerGroupDescribe => ConsumerGroupDescribeRequest::VERSIONS,
        ApiKey::ControllerRegistration => ControllerRegistrationRequest::VERSIONS,
        ApiKey::GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest::VERSIONS,
        ApiKey::PushTelemetry => PushTelemetryRequest::VERSIONS,
        ApiKey::AssignReplicasToDirs => AssignReplicasToDirsRequest::VERSIONS,
        ApiKey::ListConfigResources => ListConfigResourcesRequest::VERSIONS,
        ApiKey::DescribeTopicPartitions => DescribeTopicPartitionsRequest::VERSIONS,
        ApiKey::ShareGroupHeartbeat => ShareGroupHeartbeatRequest::VERSIONS,
        ApiKey::ShareGroupDescribe => ShareGroupDescribeRequest::VERSIONS,
        ApiKey::ShareFetch => ShareFetchRequest::VERSIONS,
        ApiKey::ShareAcknowledge => ShareAcknowledgeRequest::VERSIONS,
        ApiKey::AddRaftVoter => AddRaftVoterRequest::VERSIONS,
        ApiKey::RemoveRaftVoter => RemoveRaftVoterRequest::VERSIONS,
        ApiKey::UpdateRaftVoter => UpdateRaftVoterRequest::VERSIONS,
        ApiKey::InitializeShareGroupState => InitializeShareGroupStateRequest::VERSIONS,
        ApiKey::ReadShareGroupState => ReadShareGroupStateRequest::VERSIONS,
        ApiKey::WriteShareGroupState => WriteShareGroupStateRequest::VERSIONS,
        ApiKey::DeleteShareGroupState => DeleteShareGroupStateRequest::VERSIONS,
        ApiKey::ReadShareGroupStateSummary => ReadShareGroupStateSummaryRequest::VERSIONS,
        ApiKey::DescribeShareGroupOffsets => DescribeShareGroupOffsetsRequest::VERSIONS,
        ApiKey::AlterShareGroupOffsets => AlterShareGroupOffsetsRequest::VERSIONS,
        ApiKey::DeleteShareGroupOffsets => DeleteShareGroupOffsetsRequest::VERSIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_wider_than_what_kafka_protocol_claims_and_narrower_where_it_overclaims() {
        for key in ApiKey::iter() {
            let ours = request_versions(key);
            let claimed = key.valid_versions();
            assert!(
                ours.min >= claimed.min && ours.max <= claimed.max,
                "{key:?}"
            );
        }
        assert_eq!(
            request_versions(ApiKey::OffsetFetch).max,
            OffsetFetchRequest::VERSIONS.max
        );
        assert_eq!(
            request_versions(ApiKey::OffsetCommit).max,
            OffsetCommitRequest::VERSIONS.max
        );
        assert_eq!(
            request_versions(ApiKey::InitProducerId).max,
            InitProducerIdRequest::VERSIONS.max
        );
    }
}
