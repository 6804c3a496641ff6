//! The encode workload as kafka-protocol's `RecordBatchEncoder` takes it, shared by the
//! `record_encode` bench and the `record_codec_min_time` example so both time the same input.

use bytes::Bytes;
use flumen_benches::record_data::Sample;
use kafka_protocol::records::{Record, TimestampType};

/// `samples` as one producer's records with consecutive offsets and sequences (so the
/// encoder writes a single batch), key and value as `Bytes`, built outside any timing.
pub fn kafka_protocol_records(samples: &[Sample]) -> Vec<Record> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: 1,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: s.timestamp,
            key: Some(Bytes::from(s.key.clone())),
            value: Some(Bytes::from(s.value.clone())),
            headers: Default::default(),
        })
        .collect()
}
