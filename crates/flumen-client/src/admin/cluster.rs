//! Describing the cluster: id, controller and brokers (DescribeCluster).

use flumen_protocol::messages::DescribeClusterRequest;

use super::{Admin, check};
use crate::cluster::{BrokerInfo, ConnectionKind};
use crate::error::Result;

/// The cluster as one broker describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: String,
    /// The broker named as controller (in KRaft mode, a random live broker).
    pub controller_id: Option<i32>,
    /// Live brokers, by id.
    pub brokers: Vec<BrokerInfo>,
}

impl Admin {
    /// Describes the cluster: its id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let response = self
            .cluster
            .retry(self.deadline(), || async {
                let conn = self
                    .cluster
                    .any_connection(ConnectionKind::Metadata)
                    .await?;
                let mut request = DescribeClusterRequest::default();
                // 1 = brokers (KIP-919), the only type a client may ask for.
                request.endpoint_type = 1;
                let response = conn.send(request).await?;
                check(
                    response.error_code,
                    "DescribeCluster",
                    None,
                    None,
                    response.error_message.as_deref(),
                )?;
                Ok(response)
            })
            .await?;
        let mut brokers: Vec<BrokerInfo> = response
            .brokers
            .into_iter()
            .filter(|b| !b.is_fenced)
            .map(|b| BrokerInfo {
                id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            brokers,
        })
    }
}
