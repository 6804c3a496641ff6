//! Idempotence: the producer id and epoch, per-partition sequence numbers, and KIP-360 epoch bumps.
//!
//! The broker keeps, per producer id and partition, the last five batches' sequence ranges.
//! A batch is stamped with `(producer id, epoch, base sequence)` when it is first drained;
//! a retry re-sends the same bytes, so the broker recognises a batch it already wrote
//! (answering DUPLICATE_SEQUENCE_NUMBER, or the original offset). When the broker answers
//! OUT_OF_ORDER_SEQUENCE_NUMBER for the batch right after the last acknowledged one (so no
//! earlier batch is merely being retried), its state for us is gone: as the Java client
//! does since KIP-360, that batch fails, and once nothing is in flight the producer asks
//! InitProducerId for the next epoch of the same id and restarts every partition's
//! sequence at 0, re-stamping the batches still queued.

use bytes::{Bytes, BytesMut};
use flumen_protocol::ErrorCode;
use flumen_protocol::messages::StrBytes;
use flumen_protocol::messages::{InitProducerIdRequest, ProducerId, TransactionalId};

use super::{Inner, ProduceError, State};
use crate::cluster::CoordinatorType;
use crate::error::Error;

/// The producer's identity as the brokers know it.
#[derive(Debug)]
pub(crate) struct IdempotenceState {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    /// An unrecoverable sequence error happened: bump the epoch once nothing is in flight.
    pub(crate) bump_needed: bool,
}

impl Default for IdempotenceState {
    fn default() -> Self {
        IdempotenceState {
            producer_id: -1,
            epoch: -1,
            bump_needed: false,
        }
    }
}

/// The sequence after `sequence` once `records` more were sent (wrapping to 0 past
/// `i32::MAX`, as the broker expects).
pub(crate) fn increment_sequence(sequence: i32, records: i32) -> i32 {
    if sequence > i32::MAX - records {
        records - (i32::MAX - sequence) - 1
    } else {
        sequence + records
    }
}

const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// A copy of a sealed batch with a new producer id, epoch and base sequence (and its CRC
/// recomputed, since the CRC covers them). Only after an epoch bump, so the copy is rare.
pub(crate) fn restamp(batch: &Bytes, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
    let mut out = BytesMut::from(&batch[..]);
    if out.len() < flumen_protocol::record::HEADER_LEN {
        return batch.clone();
    }
    out[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&producer_id.to_be_bytes());
    out[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2].copy_from_slice(&epoch.to_be_bytes());
    out[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
        .copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc_fast::checksum(
        crc_fast::CrcAlgorithm::Crc32Iscsi,
        &out[ATTRIBUTES_OFFSET..],
    ) as u32;
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// Gets a producer id (first call) or the next epoch of the current one (after a sequence
/// error), from any broker, or from the transaction coordinator for a transactional producer.
pub(crate) async fn init_producer_id(inner: &Inner) -> Result<(), ProduceError> {
    let (current_id, current_epoch) = {
        let s = inner.state();
        (s.idem.producer_id, s.idem.epoch)
    };
    let cluster = &inner.cluster;
    let txn_id = inner.config.transactional_id.clone();
    let timeout_ms =
        i32::try_from(inner.config.transaction_timeout.as_millis()).unwrap_or(i32::MAX);
    let deadline = tokio::time::Instant::now() + inner.config.max_block;
    let response = cluster
        .retry(deadline, || {
            let txn_id = txn_id.clone();
            async move {
                let conn = match &txn_id {
                    Some(id) => {
                        cluster
                            .coordinator_connection(CoordinatorType::Transaction, id)
                            .await?
                    }
                    None => {
                        cluster
                            .any_connection(crate::cluster::ConnectionKind::Metadata)
                            .await?
                    }
                };
                let request = InitProducerIdRequest::default()
                    .with_transactional_id(
                        txn_id
                            .clone()
                            .map(|id| TransactionalId(StrBytes::from_string(id))),
                    )
                    .with_transaction_timeout_ms(timeout_ms)
                    .with_producer_id(ProducerId(current_id))
                    .with_producer_epoch(current_epoch);
                let response = conn.send(request).await?;
                let code = ErrorCode::from_code(response.error_code);
                if code != ErrorCode::None {
                    let e = Error::Broker {
                        code,
                        api: "InitProducerId",
                        topic: None,
                        partition: None,
                        message: None,
                    };
                    if let Some(id) = &txn_id {
                        cluster.note_coordinator_error(CoordinatorType::Transaction, id, &e);
                    }
                    // The previous transaction of this id is still being completed: try again.
                    if code == ErrorCode::ConcurrentTransactions {
                        return Err(Error::Broker {
                            code: ErrorCode::CoordinatorLoadInProgress,
                            api: "InitProducerId",
                            topic: None,
                            partition: None,
                            message: Some("CONCURRENT_TRANSACTIONS".to_owned()),
                        });
                    }
                    return Err(e);
                }
                Ok(response)
            }
        })
        .await
        .map_err(|e| match e.code() {
            Some(ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch) => {
                ProduceError::Fenced(e.to_string())
            }
            _ => ProduceError::from(e),
        })?;
    let mut s = inner.state();
    s.idem.bump_needed = false;
    adopt_identity(&mut s, response.producer_id.0, response.producer_epoch);
    Ok(())
}

/// Takes `(producer_id, epoch)` as the producer's identity: every partition's sequence
/// numbers start again at 0 (the broker keeps sequences per producer id and epoch). Used
/// after InitProducerId, and after a KIP-890 EndTxn, which hands out the next transaction's
/// epoch (or a new producer id when the epoch would overflow).
pub(crate) fn adopt_identity(s: &mut State, producer_id: i64, epoch: i16) {
    s.idem.producer_id = producer_id;
    s.idem.epoch = epoch;
    for topic in s.acc.topics.values_mut() {
        for q in &mut topic.partitions {
            q.restart_sequences();
        }
    }
}

/// The identity an EndTxn answer gives the next transaction: v5+ (transaction protocol v2)
/// carries the bumped epoch, or a new producer id with epoch 0 when the epoch ran out;
/// older versions carry -1 (keep the current identity).
pub(crate) fn identity_after_end_txn(producer_id: i64, epoch: i16) -> Option<(i64, i16)> {
    (producer_id >= 0 && epoch >= 0).then_some((producer_id, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_to_zero_past_i32_max() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 2, 3), 0);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 5), 3);
    }

    #[test]
    fn end_txn_identity_is_adopted_only_from_v5_answers() {
        // EndTxn v4 and older: producer id and epoch default to -1.
        assert_eq!(identity_after_end_txn(-1, -1), None);
        // v5, the usual case: same id, next epoch.
        assert_eq!(identity_after_end_txn(4000, 8), Some((4000, 8)));
        // v5 after the epoch reached i16::MAX: a new id, epoch 0.
        assert_eq!(identity_after_end_txn(4001, 0), Some((4001, 0)));
    }

    #[test]
    fn restamped_batch_keeps_a_valid_crc() {
        use flumen_protocol::record::{BatchBuilder, Compression, RecordBatch};
        let mut b = BatchBuilder::new(Compression::None).producer(7, 1, 10);
        b.append(1, None, Some(b"v"), &[]).expect("append");
        let sealed = b.seal().expect("seal");
        let again = RecordBatch::new(restamp(&sealed, 7, 2, 0)).expect("batch");
        again.verify_crc().expect("crc");
        assert_eq!(
            (
                again.producer_id(),
                again.producer_epoch(),
                again.base_sequence()
            ),
            (7, 2, 0)
        );
    }
}
