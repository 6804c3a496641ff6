//! Deleting records: moving partitions' log start offsets forward (DeleteRecords).

use std::collections::BTreeMap;

use flumen_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use flumen_protocol::messages::{DeleteRecordsRequest, StrBytes, TopicName};

use super::{Admin, partition_result};
use crate::cluster::{Cluster, TopicPartition};
use crate::error::Result;

impl Admin {
    /// Deletes every record before the given offset of each partition (-1: up to the high
    /// watermark), on the partition leaders. One result per partition: the new low watermark.
    pub async fn delete_records(
        &self,
        before: &[(TopicPartition, i64)],
    ) -> Result<BTreeMap<TopicPartition, Result<i64>>> {
        let deadline = self.deadline();
        self.by_leader(before.to_vec(), deadline, |conn, share| async move {
            let mut request = DeleteRecordsRequest::default();
            request.timeout_ms = Cluster::remaining_ms(deadline);
            let mut topics: Vec<DeleteRecordsTopic> = Vec::new();
            for (tp, offset) in &share {
                let mut p = DeleteRecordsPartition::default();
                p.partition_index = tp.partition;
                p.offset = *offset;
                match topics.iter_mut().find(|t| t.name.0.as_str() == tp.topic) {
                    Some(t) => t.partitions.push(p),
                    None => {
                        let mut t = DeleteRecordsTopic::default();
                        t.name = TopicName(StrBytes::from_string(tp.topic.clone()));
                        t.partitions = vec![p];
                        topics.push(t);
                    }
                }
            }
            request.topics = topics;
            let response = conn.send(request).await?;
            Ok(share
                .iter()
                .map(|(tp, _)| {
                    let answer = response
                        .topics
                        .iter()
                        .filter(|t| t.name.0.as_str() == tp.topic)
                        .flat_map(|t| t.partitions.iter())
                        .find(|p| p.partition_index == tp.partition);
                    let result = partition_result(
                        "DeleteRecords",
                        tp,
                        answer,
                        |p| p.error_code,
                        |p| p.low_watermark,
                    );
                    (tp.clone(), result)
                })
                .collect())
        })
        .await
    }
}
