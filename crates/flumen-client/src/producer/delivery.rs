//! Delivery results: one shared completion per batch, and a light future per record.
//!
//! A record's [`DeliveryFuture`] is the batch's `Arc` plus the record's index in it: no
//! allocation per record. When the broker answers, the batch's result is set once and the
//! wakers registered so far are woken; each future computes its own offset as
//! `base_offset + index`.
//!
//! A batch the broker refused as too large is split into smaller batches (see
//! `producer::split`); its completion then resolves to the pieces, and each record's future
//! moves on to the piece that holds it (with its index there) and waits for that one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use super::ProduceError;

/// Where a record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordMetadata {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset; -1 when unknown (acks=0, or a duplicate whose first write
    /// the broker no longer remembers).
    pub offset: i64,
    /// The record's timestamp: the broker's log-append time if the topic uses it, else the
    /// create time sent.
    pub timestamp: i64,
}

/// The broker's answer for a whole batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchAck {
    pub(crate) base_offset: i64,
    /// -1 unless the topic uses log-append time.
    pub(crate) log_append_time: i64,
}

/// How a batch ended.
#[derive(Debug)]
enum Resolution {
    /// The broker's answer (or the error that ended the batch).
    Acked(Result<BatchAck, ProduceError>),
    /// Split into smaller batches: `(index of the piece's first record, its completion)`,
    /// in record order, the first piece starting at 0.
    Split(Vec<(i32, Arc<BatchCompletion>)>),
}

/// The completion shared by every record of one batch.
#[derive(Debug)]
pub(crate) struct BatchCompletion {
    topic: Arc<str>,
    partition: i32,
    result: OnceLock<Resolution>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchCompletion {
    pub(crate) fn new(topic: Arc<str>, partition: i32) -> Self {
        BatchCompletion {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Sets the result (the first call wins) and wakes every waiting record future.
    pub(crate) fn complete(&self, result: Result<BatchAck, ProduceError>) {
        self.resolve(Resolution::Acked(result));
    }

    /// Hands the records over to the batches this one was split into: `parts` holds, in
    /// record order, the index of each piece's first record and the piece's completion.
    pub(crate) fn split_into(&self, parts: Vec<(i32, Arc<BatchCompletion>)>) {
        debug_assert!(parts.first().is_some_and(|p| p.0 == 0));
        self.resolve(Resolution::Split(parts));
    }

    fn resolve(&self, resolution: Resolution) {
        let _ = self.result.set(resolution);
        let wakers =
            std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic name as the producer's queues share it.
    pub(crate) fn topic_name(&self) -> &Arc<str> {
        &self.topic
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }
}

/// Resolves when the record is acknowledged (or has failed). Dropping it does not cancel
/// the send.
#[derive(Debug)]
#[must_use = "dropping the future does not cancel the send, but loses its result"]
pub struct DeliveryFuture {
    batch: Arc<BatchCompletion>,
    index: i32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub(crate) fn new(batch: Arc<BatchCompletion>, index: i32, timestamp: i64) -> Self {
        DeliveryFuture {
            batch,
            index,
            timestamp,
        }
    }

    /// The result if it is already known, without waiting.
    pub fn try_result(&self) -> Option<Result<RecordMetadata, ProduceError>> {
        let (mut batch, mut index) = (&self.batch, self.index);
        loop {
            match batch.result.get()? {
                Resolution::Acked(r) => return Some(self.metadata(batch, index, r)),
                Resolution::Split(parts) => (batch, index) = piece(parts, index),
            }
        }
    }

    fn metadata(
        &self,
        batch: &BatchCompletion,
        index: i32,
        result: &Result<BatchAck, ProduceError>,
    ) -> Result<RecordMetadata, ProduceError> {
        match result {
            Ok(ack) => Ok(RecordMetadata {
                topic: batch.topic.clone(),
                partition: batch.partition,
                offset: if ack.base_offset < 0 {
                    -1
                } else {
                    ack.base_offset + i64::from(index)
                },
                timestamp: if ack.log_append_time >= 0 {
                    ack.log_append_time
                } else {
                    self.timestamp
                },
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = &mut *self;
            let batch = &this.batch;
            let resolved = match batch.result.get() {
                Some(r) => r,
                None => {
                    let mut wakers = batch.wakers.lock().unwrap_or_else(PoisonError::into_inner);
                    // Checked again under the lock: `resolve` sets the result before it
                    // takes the wakers.
                    match batch.result.get() {
                        Some(r) => r,
                        None => {
                            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                                wakers.push(cx.waker().clone());
                            }
                            return Poll::Pending;
                        }
                    }
                }
            };
            // Only a split batch hands the future on (one `Arc` clone, once per split).
            let (next, index) = match resolved {
                Resolution::Acked(r) => return Poll::Ready(this.metadata(batch, this.index, r)),
                Resolution::Split(parts) => piece(parts, this.index),
            };
            (this.batch, this.index) = (next.clone(), index);
        }
    }
}

/// The piece of a split batch that holds the record at `index`, and its index there.
fn piece(parts: &[(i32, Arc<BatchCompletion>)], index: i32) -> (&Arc<BatchCompletion>, i32) {
    // The last piece starting at or before `index`; `parts` is never empty and starts at 0.
    let at = parts.partition_point(|(start, _)| *start <= index).max(1) - 1;
    let (start, batch) = &parts[at];
    (batch, index - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(f: &mut DeliveryFuture) -> Poll<Result<RecordMetadata, ProduceError>> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn ack(base_offset: i64) -> Result<BatchAck, ProduceError> {
        Ok(BatchAck {
            base_offset,
            log_append_time: -1,
        })
    }

    #[test]
    fn records_of_a_split_batch_take_the_offsets_of_their_piece() {
        let topic: Arc<str> = Arc::from("t");
        let original = Arc::new(BatchCompletion::new(topic.clone(), 3));
        let mut futures: Vec<_> = (0..5)
            .map(|i| DeliveryFuture::new(original.clone(), i, 1000 + i64::from(i)))
            .collect();
        // One future waits before the split, the others are first polled after it.
        assert!(poll(&mut futures[4]).is_pending());
        let a = Arc::new(BatchCompletion::new(topic.clone(), 3));
        let b = Arc::new(BatchCompletion::new(topic.clone(), 3));
        original.split_into(vec![(0, a.clone()), (3, b.clone())]);
        assert!(futures.iter_mut().all(|f| poll(f).is_pending()));
        assert!(futures.iter().all(|f| f.try_result().is_none()));
        b.complete(ack(200));
        a.complete(ack(100));
        let offsets: Vec<i64> = futures
            .iter_mut()
            .map(|f| match poll(f) {
                Poll::Ready(Ok(m)) => m.offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, [100, 101, 102, 200, 201]);
        let fresh = DeliveryFuture::new(original.clone(), 4, 7);
        let m = fresh.try_result().expect("known").expect("ok");
        assert_eq!((m.offset, m.partition, m.timestamp), (201, 3, 7));
    }

    #[test]
    fn a_failed_piece_fails_only_its_records() {
        let topic: Arc<str> = Arc::from("t");
        let original = Arc::new(BatchCompletion::new(topic.clone(), 0));
        let mut futures: Vec<_> = (0..4)
            .map(|i| DeliveryFuture::new(original.clone(), i, 0))
            .collect();
        let a = Arc::new(BatchCompletion::new(topic.clone(), 0));
        let b = Arc::new(BatchCompletion::new(topic, 0));
        original.split_into(vec![(0, a.clone()), (1, b.clone())]);
        a.complete(Err(ProduceError::Closed));
        b.complete(ack(10));
        let results: Vec<_> = futures
            .iter_mut()
            .map(|f| match poll(f) {
                Poll::Ready(r) => r.map(|m| m.offset).ok(),
                Poll::Pending => panic!("resolved"),
            })
            .collect();
        assert_eq!(results, [None, Some(10), Some(11), Some(12)]);
    }
}
