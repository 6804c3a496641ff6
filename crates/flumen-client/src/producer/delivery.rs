//! Delivery results: one shared completion per batch, and a light future per record.
//!
//! A record's [`DeliveryFuture`] is the batch's `Arc` plus the record's index in it: no
//! allocation per record. When the broker answers, the batch's result is set once and the
//! wakers registered so far are woken; each future computes its own offset as
//! `base_offset + index`.

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

/// The completion shared by every record of one batch.
#[derive(Debug)]
pub(crate) struct BatchCompletion {
    topic: Arc<str>,
    partition: i32,
    result: OnceLock<Result<BatchAck, ProduceError>>,
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
        let _ = self.result.set(result);
        let wakers =
            std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn topic(&self) -> &str {
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
        self.batch.result.get().map(|r| self.metadata(r))
    }

    fn metadata(
        &self,
        result: &Result<BatchAck, ProduceError>,
    ) -> Result<RecordMetadata, ProduceError> {
        match result {
            Ok(ack) => Ok(RecordMetadata {
                topic: self.batch.topic.clone(),
                partition: self.batch.partition,
                offset: if ack.base_offset < 0 {
                    -1
                } else {
                    ack.base_offset + i64::from(self.index)
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.batch.result.get() {
            return Poll::Ready(self.metadata(r));
        }
        let mut wakers = self
            .batch
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: `complete` sets the result before taking the wakers.
        if let Some(r) = self.batch.result.get() {
            drop(wakers);
            return Poll::Ready(self.metadata(r));
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
