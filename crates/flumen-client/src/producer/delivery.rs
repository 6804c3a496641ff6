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
//!
//! # Waker registration
//!
//! Registering costs O(1) whatever the number of futures waiting on the batch, and the
//! completion wakes each registered waker once (O(wakers)):
//!
//! - A future remembers the slot it registered in (`slot`, an index into the batch's waker
//!   list). Re-polled with the waker already there, it does nothing; with another waker, it
//!   replaces its own slot's waker when it is the slot's only user, else it leaves the slot
//!   to the others and takes a new one. No scan over the other futures' wakers.
//! - A future first polled by the task that registered last joins that slot (one
//!   `will_wake` check against the last entry): one task polling many futures of a batch,
//!   in order, registers one waker, not one per record.
//! - A slot is an index into one batch's list: it is reset when the future moves on to a
//!   piece of a split batch.
//!
//! A slot's user count may overstate its users (a future dropped while waiting does not
//! leave its slot); that only costs a new slot or a spurious wake-up, never a lost one.

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
    wakers: Mutex<Vec<WakerSlot>>,
}

/// A registered waker and the number of waiting futures that use it.
#[derive(Debug)]
struct WakerSlot {
    waker: Waker,
    users: u32,
}

/// `DeliveryFuture::slot` of a future not registered with its current batch.
const NO_SLOT: u32 = u32::MAX;

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
        for slot in wakers {
            slot.waker.wake();
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
    /// The index of this future's entry in `batch`'s waker list, or `NO_SLOT`.
    slot: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub(crate) fn new(batch: Arc<BatchCompletion>, index: i32, timestamp: i64) -> Self {
        DeliveryFuture {
            batch,
            index,
            slot: NO_SLOT,
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
                            this.slot = register(&mut wakers, this.slot, cx.waker());
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
            (this.batch, this.index, this.slot) = (next.clone(), index, NO_SLOT);
        }
    }
}

/// Registers `waker` for the future whose slot in `wakers` is `slot` (`NO_SLOT` if none);
/// returns the future's slot. O(1): see the module docs.
fn register(wakers: &mut Vec<WakerSlot>, slot: u32, waker: &Waker) -> u32 {
    if let Some(own) = wakers.get_mut(slot as usize) {
        if own.waker.will_wake(waker) {
            return slot;
        }
        if own.users <= 1 {
            own.waker.clone_from(waker);
            return slot;
        }
        // Others still wait on the old waker: leave it to them.
        own.users -= 1;
    }
    if let Some(last) = wakers.last_mut()
        && last.waker.will_wake(waker)
    {
        last.users += 1;
        return (wakers.len() - 1) as u32;
    }
    // A batch holds far fewer than `NO_SLOT` records; past it the future still registers,
    // only without remembering where.
    let new = u32::try_from(wakers.len()).unwrap_or(NO_SLOT);
    wakers.push(WakerSlot {
        waker: waker.clone(),
        users: 1,
    });
    new
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

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter::default());
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Counter) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn poll_with(f: &mut DeliveryFuture, w: &Waker) -> Poll<Result<RecordMetadata, ProduceError>> {
        Pin::new(f).poll(&mut Context::from_waker(w))
    }

    fn registered(batch: &BatchCompletion) -> usize {
        batch.wakers.lock().expect("not poisoned").len()
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

    #[test]
    fn a_future_re_polled_with_a_new_waker_wakes_the_new_one() {
        let batch = Arc::new(BatchCompletion::new(Arc::from("t"), 0));
        let mut f = DeliveryFuture::new(batch.clone(), 0, 0);
        let (old, old_waker) = counter();
        let (new, new_waker) = counter();
        assert!(poll_with(&mut f, &old_waker).is_pending());
        assert!(poll_with(&mut f, &new_waker).is_pending());
        assert!(poll_with(&mut f, &new_waker).is_pending());
        // The future's own slot was reused: one waker registered, the new one.
        assert_eq!(registered(&batch), 1);
        batch.complete(ack(5));
        assert_eq!((woken(&old), woken(&new)), (0, 1));
        assert!(matches!(poll_with(&mut f, &new_waker), Poll::Ready(Ok(m)) if m.offset == 5));
    }

    #[test]
    fn a_future_leaving_a_shared_waker_keeps_it_for_the_others() {
        let batch = Arc::new(BatchCompletion::new(Arc::from("t"), 0));
        let mut a = DeliveryFuture::new(batch.clone(), 0, 0);
        let mut b = DeliveryFuture::new(batch.clone(), 1, 0);
        let (shared, shared_waker) = counter();
        let (moved, moved_waker) = counter();
        assert!(poll_with(&mut a, &shared_waker).is_pending());
        assert!(poll_with(&mut b, &shared_waker).is_pending());
        assert_eq!(registered(&batch), 1);
        // `a` moves to another task; `b` still waits on the first one.
        assert!(poll_with(&mut a, &moved_waker).is_pending());
        assert_eq!(registered(&batch), 2);
        batch.complete(ack(0));
        assert_eq!((woken(&shared), woken(&moved)), (1, 1));
    }

    #[test]
    fn many_futures_of_one_batch_register_once_per_task() {
        const N: i32 = 10_000;
        let batch = Arc::new(BatchCompletion::new(Arc::from("t"), 0));
        let mut futures: Vec<_> = (0..N)
            .map(|i| DeliveryFuture::new(batch.clone(), i, 0))
            .collect();
        // One task polling every future, twice.
        let (one, one_waker) = counter();
        for _ in 0..2 {
            assert!(
                futures
                    .iter_mut()
                    .all(|f| poll_with(f, &one_waker).is_pending())
            );
        }
        assert_eq!(registered(&batch), 1);
        // Then each future from its own task (as `FuturesUnordered` does), twice.
        let own: Vec<_> = (0..N).map(|_| counter()).collect();
        for _ in 0..2 {
            for (f, (_, w)) in futures.iter_mut().zip(&own) {
                assert!(poll_with(f, w).is_pending());
            }
        }
        // One slot per task: the last future to leave the first task's slot took it over.
        assert_eq!(registered(&batch), N as usize);
        batch.complete(ack(1000));
        // The first task no longer waits on any of them: its waker was replaced.
        assert_eq!(woken(&one), 0);
        assert!(own.iter().all(|(c, _)| woken(c) == 1));
        for (i, (f, (_, w))) in futures.iter_mut().zip(&own).enumerate() {
            match poll_with(f, w) {
                Poll::Ready(Ok(m)) => assert_eq!(m.offset, 1000 + i as i64),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn futures_moved_to_a_split_piece_register_afresh_there() {
        let topic: Arc<str> = Arc::from("t");
        let original = Arc::new(BatchCompletion::new(topic.clone(), 0));
        let mut futures: Vec<_> = (0..4)
            .map(|i| DeliveryFuture::new(original.clone(), i, 0))
            .collect();
        let wakers: Vec<_> = (0..4).map(|_| counter()).collect();
        for (f, (_, w)) in futures.iter_mut().zip(&wakers) {
            assert!(poll_with(f, w).is_pending());
        }
        let a = Arc::new(BatchCompletion::new(topic.clone(), 0));
        let b = Arc::new(BatchCompletion::new(topic, 0));
        original.split_into(vec![(0, a.clone()), (2, b.clone())]);
        assert!(wakers.iter().all(|(c, _)| woken(c) == 1));
        // Record 1 registers in piece `a` first; record 0, which held slot 0 of the
        // original batch, must not take record 1's slot 0 in `a`.
        for i in [1, 0, 3, 2] {
            assert!(poll_with(&mut futures[i], &wakers[i].1).is_pending());
        }
        assert_eq!((registered(&a), registered(&b)), (2, 2));
        a.complete(ack(10));
        assert_eq!(
            wakers.iter().map(|(c, _)| woken(c)).collect::<Vec<_>>(),
            [2, 2, 1, 1]
        );
        b.complete(ack(20));
        assert!(wakers.iter().all(|(c, _)| woken(c) == 2));
        let offsets: Vec<i64> = futures
            .iter_mut()
            .zip(&wakers)
            .map(|(f, (_, w))| match poll_with(f, w) {
                Poll::Ready(Ok(m)) => m.offset,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, [10, 11, 20, 21]);
    }
}
