//! The sender: drains ready batches into one ProduceRequest per broker and handles the answers.
//!
//! One background task per producer loops: drain what is ready (full batches, batches past
//! `linger.ms`, everything while flushing or while `send` waits for memory), group it by
//! partition leader, seal the batches outside the state lock, and spawn one task per
//! request. A batch past `linger.ms` is closed only when it can leave at once (nothing ahead
//! of it in its queue, a request slot free at its leader): until then records keep joining
//! it. A broker gets at most `max.in.flight.requests.per.connection` requests at once;
//! each request carries at most one batch per partition (the broker's de-duplication
//! window is per batch) and up to `max.request.size` bytes.
//!
//! Ordering: a partition's batches leave in queue order; across partitions, the oldest
//! front batch goes first (so no partition waits behind others). A batch that fails retriably goes
//! back to the head of its queue in sequence order and the partition then sends one batch
//! at a time until it is through; with idempotence, later batches already in flight are
//! rejected with OUT_OF_ORDER_SEQUENCE_NUMBER, recognised as "an earlier one is being
//! retried" and re-queued behind it, so the log keeps the order of `send`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use flumen_protocol::ErrorCode;
use flumen_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use flumen_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, StrBytes, TopicName, TransactionalId,
};
use tokio::time::Instant;

use super::accumulator::{BrokerReadiness, ClosedBatch, PartitionQueue, Payload};
use super::config::Acks;
use super::delivery::{BatchAck, BatchCompletion};
use super::idempotence::{increment_sequence, restamp};
use super::split::{Piece, halve};
use super::transaction::TransactionVersion;
use super::{Inner, ProduceError};
use crate::cluster::ConnectionKind;
use crate::error::Error;

/// The highest Produce version we send: v13 identifies topics by id only. Transactional
/// producers go lower under the classic protocol (`TransactionVersion::max_produce_version`):
/// v12 announces transaction protocol v2 (KIP-890), where the leader adds the partition.
const MAX_PRODUCE_VERSION: i16 = 12;

/// One batch on its way, with where it goes.
pub(crate) struct InFlight {
    pub(crate) batch: ClosedBatch,
    pub(crate) bytes: Bytes,
}

/// The sender task.
pub(crate) async fn run(inner: Arc<Inner>) {
    let retry_backoff = inner.config.client.retry_backoff;
    loop {
        let woken = inner.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();

        let closing = inner.closing.load(Ordering::Acquire);
        let (bump, in_flight_total) = {
            let s = inner.state();
            (s.idem.bump_needed, s.acc.in_flight.values().sum::<usize>())
        };
        if closing && inner.state().acc.unfinished == 0 {
            inner.idle.notify_waiters();
            // The last handle is gone and nothing is left: stop. With handles left, a
            // closed producer still answers `flush` (trivially), so staying is harmless.
            if Arc::strong_count(&inner) <= 2 {
                break;
            }
        }
        if bump && in_flight_total == 0 {
            if let Err(e) = super::idempotence::init_producer_id(&inner).await {
                tracing::warn!(error = %e, "producer epoch bump failed");
                if matches!(e, ProduceError::Fenced(_)) {
                    fail_all(&inner, e.clone());
                    inner.state().fatal = Some(e);
                }
                tokio::time::sleep(retry_backoff).await;
            }
            continue;
        }
        if inner.transactional() {
            match super::transaction::add_pending_partitions(&inner).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "AddPartitionsToTxn failed");
                    tokio::time::sleep(retry_backoff).await;
                    continue;
                }
            }
        }

        let stale = std::mem::take(&mut inner.state().acc.metadata_stale);
        if stale {
            // Leaders moved (or a broker died): look again before sending anything, or the
            // retries would keep going to the old leader.
            inner.cluster.invalidate_metadata();
            if let Err(e) = inner.cluster.refresh_metadata().await {
                tracing::debug!(error = %e, "metadata refresh failed");
                inner.state().acc.metadata_stale = true;
            }
        }
        // Metadata older than metadata.max.age.ms is fetched again even without an error, so
        // new partitions and moved leaders are learnt (the Java client's periodic refresh).
        let metadata = match inner.cluster.metadata_refreshed_if_old().await {
            Ok(metadata) => metadata,
            Err(e) => {
                tracing::debug!(error = %e, "metadata refresh failed");
                inner.cluster.metadata()
            }
        };
        let now = Instant::now();
        let drained = drain(&inner, &metadata, now);
        if drained.missing_leader {
            inner.cluster.invalidate_metadata();
            if let Err(e) = inner.cluster.refresh_metadata().await {
                tracing::debug!(error = %e, "metadata refresh failed");
                tokio::time::sleep(retry_backoff).await;
            }
        }
        let progress = !drained.requests.is_empty();
        for (broker, batches) in drained.requests {
            let requests = seal(&inner, batches);
            if requests.is_empty() {
                release_broker(&inner, broker);
                continue;
            }
            tokio::spawn(send_request(inner.clone(), broker, requests));
        }
        if drained.missing_leader || progress {
            // Maybe more is ready for brokers that still have room; the yield lets the
            // request tasks start writing first.
            tokio::task::yield_now().await;
            continue;
        }
        if drained.txn_blocked && inner.state().txn.can_drain() {
            continue;
        }
        match drained.next_deadline {
            Some(deadline) => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => woken.await,
        }
    }
}

struct Drained {
    requests: Vec<(i32, Vec<ClosedBatch>)>,
    /// Partitions wait for AddPartitionsToTxn: go round again at once.
    txn_blocked: bool,
    next_deadline: Option<Instant>,
    missing_leader: bool,
}

/// Moves what is ready out of the queues, grouped per leader, under the state lock.
fn drain(inner: &Inner, metadata: &crate::cluster::Metadata, now: Instant) -> Drained {
    let config = &inner.config;
    let mut guard = inner.state();
    let s = &mut *guard;
    let mut out = Drained {
        requests: Vec::new(),
        next_deadline: None,
        missing_leader: false,
        txn_blocked: false,
    };
    if s.idem.bump_needed {
        return out;
    }
    let hurry = s.acc.flushing > 0
        || inner.closing.load(Ordering::Relaxed)
        || inner.memory.exhausted()
        || s.txn.committing();
    let idempotent = config.idempotence;
    let (pid, epoch) = (s.idem.producer_id, s.idem.epoch);
    let txn_ready = !inner.transactional() || s.txn.can_drain();
    let mut expired = Vec::new();
    // The partitions whose front batch could go now, with its leader.
    let mut candidates: Vec<(Instant, Arc<str>, usize, i32)> = Vec::new();
    let unfinished = &mut s.acc.unfinished;
    let brokers = &mut s.acc.brokers;
    let broker_in_flight = &s.acc.in_flight;
    let adaptive = config.adaptive_partitioning;
    let availability = config.partitioner_availability_timeout;
    // A broker that had batches ready but took none for longer than the availability
    // timeout gets no new keyless records (the Java client's rule).
    let available = |brokers: &HashMap<i32, BrokerReadiness>, leader: i32| {
        availability.is_zero()
            || brokers
                .get(&leader)
                .is_none_or(|b| b.ready.saturating_duration_since(b.drained) <= availability)
    };
    // A partition that sends one batch at a time and has one in flight.
    let partition_busy = |q: &PartitionQueue| {
        q.in_flight > 0
            && (q.retrying
                || (idempotent && !q.confirmed)
                || (!idempotent && config.max_in_flight == 1))
    };
    // Whether a partition's next batch cannot leave before a request in flight (its own or
    // its leader's) is answered; that answer wakes the sender.
    let waits_for_answer = |q: &PartitionQueue, leader: Option<i32>| {
        partition_busy(q)
            || leader.is_some_and(|l| {
                broker_in_flight.get(&l).copied().unwrap_or(0) >= config.max_in_flight
            })
    };
    for topic in s.acc.topics.values_mut() {
        let topic_meta = metadata.topic(&topic.name);
        // Partitions added to the topic since its queues were made: from now on keys hash
        // over the new count, as in the Java client (partition counts only grow).
        let count = topic_meta.map_or(0, |t| t.partitions.len());
        if count > topic.partitions.len() {
            topic.partitions.resize_with(count, Default::default);
        }
        if adaptive {
            topic.load.begin();
        }
        for (p, q) in topic.partitions.iter_mut().enumerate() {
            let leader = topic_meta
                .and_then(|t| t.partition(p as i32))
                .and_then(|pm| pm.leader);
            if adaptive && leader.is_some_and(|l| available(brokers, l)) {
                topic
                    .load
                    .push(p as i32, q.ready.len() + usize::from(q.open.is_some()));
            }
            // A batch that could not leave now stays open, as in the Java client (which
            // closes a batch when it drains it): the records that arrive meanwhile join it.
            // Closed at once, with linger.ms=0 each later record would make a batch of its
            // own behind it, and a request carries one batch per partition: the queue would
            // grow by a batch per record and drain by one per request. One past
            // delivery.timeout.ms is closed all the same, for the check below to fail it.
            let mut held_open = false;
            if let Some(open) = &q.open {
                let due = open.created + config.linger;
                let timed_out = open.created + config.delivery_timeout <= now;
                if !hurry && due > now {
                    out.next_deadline = Some(out.next_deadline.map_or(due, |d| d.min(due)));
                } else if !timed_out && (!q.ready.is_empty() || waits_for_answer(q, leader)) {
                    held_open = true;
                } else {
                    q.close_open();
                }
            }
            // Batches that waited longer than delivery.timeout.ms fail without being sent
            // (only unsent ones: a sent one may be written, and idempotence keeps order).
            while let Some(front) = q.ready.front() {
                if front.base_sequence < 0 && front.created + config.delivery_timeout <= now {
                    if let Some(b) = q.ready.pop_front() {
                        expired.push(b);
                        *unfinished -= 1;
                    }
                } else {
                    break;
                }
            }
            if held_open && q.ready.is_empty() && !waits_for_answer(q, leader) {
                // What was queued ahead of it expired: nothing else would wake the sender.
                q.close_open();
                held_open = false;
            }
            // A batch held open for a busy broker counts as ready for
            // partitioner.availability.timeout.ms, as a closed one would.
            if (held_open || !q.ready.is_empty())
                && let Some(leader) = leader
            {
                brokers
                    .entry(leader)
                    .or_insert(BrokerReadiness {
                        ready: now,
                        drained: now,
                    })
                    .ready = now;
            }
            let Some(front) = q.ready.front() else {
                continue;
            };
            if !txn_ready {
                out.txn_blocked = true;
                continue;
            }
            if idempotent && pid < 0 {
                continue;
            }
            if let Some(at) = front.retry_at
                && at > now
            {
                out.next_deadline = Some(out.next_deadline.map_or(at, |d| d.min(at)));
                continue;
            }
            if partition_busy(q) {
                continue;
            }
            let Some(leader) = leader else {
                out.missing_leader = true;
                continue;
            };
            candidates.push((front.created, topic.name.clone(), p, leader));
        }
        if adaptive {
            topic.load.finish(topic.partitions.len());
        }
    }
    // Oldest batch first, across partitions: requests hold at most max.request.size, so a
    // fixed partition order would let the first partitions starve the last ones, and a
    // batch's wait would depend on its partition number rather than on its age.
    candidates.sort_by_key(|c| c.0);
    let mut per_broker: HashMap<i32, (usize, Vec<ClosedBatch>)> = HashMap::new();
    for (_, topic, p, leader) in candidates {
        let Some(q) = s
            .acc
            .topics
            .get_mut(&*topic)
            .and_then(|t| t.partitions.get_mut(p))
        else {
            continue;
        };
        let Some(front) = q.ready.front() else {
            continue;
        };
        let in_flight = s.acc.in_flight.get(&leader).copied().unwrap_or(0);
        let entry = per_broker.entry(leader).or_insert((0, Vec::new()));
        if entry.1.is_empty() && in_flight >= config.max_in_flight {
            continue;
        }
        let size = front.size();
        if !entry.1.is_empty() && entry.0 + size > config.max_request_size {
            continue;
        }
        let Some(mut batch) = q.ready.pop_front() else {
            continue;
        };
        if idempotent && batch.base_sequence < 0 {
            batch.base_sequence = q.next_sequence;
            batch.epoch = epoch;
            q.next_sequence = increment_sequence(q.next_sequence, batch.records);
            if let Payload::Sealed(bytes) = &batch.payload {
                batch.payload = Payload::Sealed(restamp(bytes, pid, epoch, batch.base_sequence));
            }
        }
        batch.attempts += 1;
        batch.producer_id = pid;
        q.in_flight += 1;
        entry.0 += size;
        entry.1.push(batch);
    }
    for (broker, (_, batches)) in per_broker {
        if batches.is_empty() {
            continue;
        }
        if let Some(b) = s.acc.brokers.get_mut(&broker) {
            b.drained = now;
        }
        *s.acc.in_flight.entry(broker).or_insert(0) += 1;
        out.requests.push((broker, batches));
    }
    let idle = s.acc.unfinished == 0;
    drop(guard);
    let timeout = config.delivery_timeout;
    for b in expired {
        b.fail(ProduceError::DeliveryTimeout(timeout), &inner.failures);
    }
    if idle {
        inner.idle.notify_waiters();
    }
    out
}

/// Seals (compresses, checksums) freshly drained batches, outside the state lock.
fn seal(inner: &Inner, batches: Vec<ClosedBatch>) -> Vec<InFlight> {
    let transactional = inner.transactional();
    let mut out = Vec::with_capacity(batches.len());
    let mut failed = Vec::new();
    for mut batch in batches {
        let payload = std::mem::replace(&mut batch.payload, Payload::Sealed(Bytes::new()));
        let bytes = match payload {
            Payload::Sealed(b) => Ok(b),
            Payload::Builder(builder) => {
                let builder = if inner.config.idempotence {
                    builder.producer(batch.producer_id, batch.epoch, batch.base_sequence)
                } else {
                    builder
                };
                builder.transactional(transactional).seal()
            }
        };
        match bytes {
            Ok(bytes) => {
                batch.payload = Payload::Sealed(bytes.clone());
                out.push(InFlight { batch, bytes });
            }
            Err(e) => failed.push((batch, ProduceError::Encode(e.to_string()))),
        }
    }
    if !failed.is_empty() {
        let mut s = inner.state();
        for (batch, _) in &failed {
            if let Some(q) = s
                .acc
                .topics
                .get_mut(batch.completion.topic())
                .and_then(|t| t.partitions.get_mut(batch.completion.partition() as usize))
            {
                q.in_flight = q.in_flight.saturating_sub(1);
            }
            s.acc.unfinished -= 1;
        }
        drop(s);
        for (batch, e) in failed {
            batch.fail(e, &inner.failures);
        }
    }
    out
}

fn release_broker(inner: &Inner, broker: i32) {
    let mut s = inner.state();
    if let Some(n) = s.acc.in_flight.get_mut(&broker) {
        *n = n.saturating_sub(1);
    }
}

/// A partition's answer in a ProduceResponse: code, base offset, log-append time, message.
type PartitionAnswer = (ErrorCode, i64, i64, Option<String>);

/// What became of one batch.
enum Outcome {
    Done(BatchAck),
    Retry(ProduceError),
    Fail(ProduceError),
    /// Failed for a reason that needs a new epoch (KIP-360).
    FailAndBump(ProduceError),
    /// Needs a new epoch, then a retry.
    RetryAfterBump(ProduceError),
    /// Refused as too large (MESSAGE_TOO_LARGE) with more than one record: split it.
    Split(ProduceError),
    /// A `Split`, cut in two outside the state lock.
    Halves(Box<[Piece; 2]>),
}

async fn send_request(inner: Arc<Inner>, broker: i32, batches: Vec<InFlight>) {
    let config = &inner.config;
    let mut topics: Vec<TopicProduceData> = Vec::new();
    // Topic ids too: acks=0 requests go out at the highest version both sides speak
    // (the connection picks it, as no answer is awaited), and v13 names topics by id.
    let metadata = inner.cluster.metadata();
    for b in &batches {
        let name = b.batch.completion.topic();
        let data = PartitionProduceData::default()
            .with_index(b.batch.completion.partition())
            .with_records(Some(b.bytes.clone()));
        match topics.iter_mut().find(|t| &*t.name.0 == name) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                    .with_topic_id(metadata.topic(name).map(|t| t.id).unwrap_or_default())
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let timeout_ms = i32::try_from(config.client.request_timeout.as_millis()).unwrap_or(i32::MAX);
    let request = ProduceRequest::default()
        .with_transactional_id(
            config
                .transactional_id
                .as_ref()
                .map(|id| TransactionalId(StrBytes::from_string(id.clone()))),
        )
        .with_acks(config.acks.wire())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(topics);
    let result: Result<Option<ProduceResponse>, Error> = async {
        let conn = inner
            .cluster
            .broker_connection(broker, ConnectionKind::Produce)
            .await?;
        if config.acks == Acks::None {
            conn.send_no_response(request).await?;
            return Ok(None);
        }
        let cap = if inner.transactional() {
            let version = inner.state().txn.version.unwrap_or(TransactionVersion::V1);
            version.max_produce_version().min(MAX_PRODUCE_VERSION)
        } else {
            MAX_PRODUCE_VERSION
        };
        let version = conn
            .api_version(ApiKey::Produce)
            .map(|v| v.min(cap))
            .ok_or_else(|| Error::UnsupportedVersion {
                addr: conn.addr().to_owned(),
                api: "Produce",
            })?;
        conn.send_version(request, version).await.map(Some)
    }
    .await;
    let outcomes: Vec<Outcome> = match result {
        Err(e) => {
            tracing::debug!(broker, error = %e, "produce request failed");
            inner.cluster.note_error(&e);
            let retriable = e.is_retriable();
            let e = ProduceError::from(e);
            batches
                .iter()
                .map(|_| {
                    if retriable {
                        Outcome::Retry(e.clone())
                    } else {
                        Outcome::Fail(e.clone())
                    }
                })
                .collect()
        }
        Ok(None) => batches
            .iter()
            .map(|_| {
                Outcome::Done(BatchAck {
                    base_offset: -1,
                    log_append_time: -1,
                })
            })
            .collect(),
        Ok(Some(response)) => {
            let mut by_partition: HashMap<(&str, i32), PartitionAnswer> = HashMap::new();
            for t in &response.responses {
                for p in &t.partition_responses {
                    by_partition.insert(
                        (&*t.name.0, p.index),
                        (
                            ErrorCode::from_code(p.error_code),
                            p.base_offset,
                            p.log_append_time_ms,
                            p.error_message.as_ref().map(|m| m.to_string()),
                        ),
                    );
                }
            }
            let s = inner.state();
            let out = batches
                .iter()
                .map(|b| {
                    let topic = b.batch.completion.topic();
                    let partition = b.batch.completion.partition();
                    let acked = s
                        .acc
                        .topics
                        .get(topic)
                        .and_then(|t| t.partitions.get(partition as usize))
                        .map_or(-1, |q| q.acked_sequence);
                    match by_partition.get(&(topic, partition)) {
                        None => Outcome::Retry(ProduceError::from(Error::Broker {
                            code: ErrorCode::UnknownServerError,
                            api: "Produce",
                            topic: Some(topic.to_owned()),
                            partition: Some(partition),
                            message: Some("no answer for this partition".to_owned()),
                        })),
                        Some((code, base, append, message)) => classify(
                            &inner,
                            &b.batch,
                            acked,
                            *code,
                            *base,
                            *append,
                            message.clone(),
                        ),
                    }
                })
                .collect();
            drop(s);
            out
        }
    };
    finish(&inner, broker, batches, outcomes);
}

fn classify(
    inner: &Inner,
    batch: &ClosedBatch,
    acked_sequence: i32,
    code: ErrorCode,
    base_offset: i64,
    log_append_time: i64,
    message: Option<String>,
) -> Outcome {
    if code != ErrorCode::None {
        tracing::debug!(
            topic = batch.completion.topic(),
            partition = batch.completion.partition(),
            sequence = batch.base_sequence,
            acked_sequence,
            attempts = batch.attempts,
            ?code,
            ?message,
            "produce error"
        );
    }
    let topic = batch.completion.topic();
    let partition = batch.completion.partition();
    let error = || {
        let e = Error::Broker {
            code,
            api: "Produce",
            topic: Some(topic.to_owned()),
            partition: Some(partition),
            message: message.clone(),
        };
        inner.cluster.note_error(&e);
        ProduceError::from(e)
    };
    match code {
        ErrorCode::None => Outcome::Done(BatchAck {
            base_offset,
            log_append_time,
        }),
        // Written before (a retry of a batch whose first answer was lost): success; the
        // broker no longer remembers its offset.
        ErrorCode::DuplicateSequenceNumber => Outcome::Done(BatchAck {
            base_offset: -1,
            log_append_time: -1,
        }),
        ErrorCode::OutOfOrderSequenceNumber
            if batch.base_sequence != acked_sequence && !sequence_passed(batch, acked_sequence) =>
        {
            // An earlier batch of this partition failed and is being retried: retry behind it.
            Outcome::Retry(error())
        }
        ErrorCode::OutOfOrderSequenceNumber => {
            if inner.transactional() {
                Outcome::Fail(ProduceError::AbortableTransaction(error().to_string()))
            } else {
                Outcome::FailAndBump(ProduceError::OutOfOrderSequence {
                    topic: topic.to_owned(),
                    partition,
                })
            }
        }
        ErrorCode::UnknownProducerId if !inner.transactional() => Outcome::RetryAfterBump(error()),
        // As the Java client does: the records may each fit, only not all together.
        ErrorCode::MessageTooLarge if batch.records > 1 => Outcome::Split(error()),
        ErrorCode::ProducerFenced
        | ErrorCode::InvalidProducerEpoch
        | ErrorCode::TransactionalIdAuthorizationFailed => {
            Outcome::Fail(ProduceError::Fenced(error().to_string()))
        }
        // Transaction protocol v2: the leader could not add the partition to the
        // transaction (as Java: abort it, the producer stays usable).
        ErrorCode::TransactionAbortable => {
            Outcome::Fail(ProduceError::AbortableTransaction(error().to_string()))
        }
        c if c.is_retriable() => Outcome::Retry(error()),
        _ => Outcome::Fail(error()),
    }
}

/// Whether later batches of the partition were acknowledged already: then this one can
/// never be written in order.
fn sequence_passed(batch: &ClosedBatch, acked_sequence: i32) -> bool {
    // Sequences wrap at i32::MAX; a distance over half the range means "behind".
    let distance = acked_sequence.wrapping_sub(batch.base_sequence);
    distance > 0 && distance < i32::MAX / 2
}

/// Applies the outcomes: completes, re-queues or fails each batch.
fn finish(inner: &Inner, broker: i32, batches: Vec<InFlight>, mut outcomes: Vec<Outcome>) {
    let config = &inner.config;
    let now = Instant::now();
    let mut completed: Vec<(ClosedBatch, Result<BatchAck, ProduceError>)> = Vec::new();
    let mut split: Vec<SplitBatch> = Vec::new();
    let mut fatal = None;
    // Re-encoding a refused batch is the one heavy step here: done before the lock.
    for (b, outcome) in batches.iter().zip(outcomes.iter_mut()) {
        let Outcome::Split(e) = outcome else {
            continue;
        };
        *outcome = match halve(&b.bytes, config.compression) {
            Ok(Some(halves)) => Outcome::Halves(Box::new(halves)),
            Ok(None) => Outcome::Fail(e.clone()),
            Err(decode) => {
                tracing::warn!(error = %decode, "cannot split a batch refused as too large");
                Outcome::Fail(e.clone())
            }
        };
    }
    // With idempotence, a batch that fails after it was given sequence numbers leaves a
    // gap the broker would never accept past: a new epoch starts the sequences again
    // (transactional producers abort instead).
    let gap = |batch: &ClosedBatch, e: &ProduceError| {
        config.idempotence
            && !inner.transactional()
            && batch.base_sequence >= 0
            && !matches!(e, ProduceError::Fenced(_))
    };
    {
        let mut guard = inner.state();
        let s = &mut *guard;
        if let Some(n) = s.acc.in_flight.get_mut(&broker) {
            *n = n.saturating_sub(1);
        }
        for (InFlight { mut batch, .. }, outcome) in batches.into_iter().zip(outcomes) {
            let Some(q) = s
                .acc
                .topics
                .get_mut(batch.completion.topic())
                .and_then(|t| t.partitions.get_mut(batch.completion.partition() as usize))
            else {
                completed.push((batch, Err(ProduceError::Closed)));
                continue;
            };
            q.in_flight = q.in_flight.saturating_sub(1);
            let retry = |e: ProduceError, batch: &ClosedBatch| -> Option<ProduceError> {
                let expired = batch.created + config.delivery_timeout <= now;
                if expired || batch.attempts > config.retries {
                    Some(if expired {
                        ProduceError::DeliveryTimeout(config.delivery_timeout)
                    } else {
                        e
                    })
                } else {
                    None
                }
            };
            match outcome {
                Outcome::Halves(halves) => {
                    s.acc.unfinished += 1;
                    split.push(requeue_halves(q, batch, *halves));
                }
                Outcome::Split(e) => completed.push((batch, Err(e))),
                Outcome::Done(ack) => {
                    if batch.base_sequence >= 0 {
                        q.acked_sequence = increment_sequence(batch.base_sequence, batch.records);
                    }
                    q.retrying = false;
                    q.confirmed = true;
                    completed.push((batch, Ok(ack)));
                }
                Outcome::Retry(e) => match retry(e, &batch) {
                    Some(e) => {
                        s.idem.bump_needed |= gap(&batch, &e);
                        completed.push((batch, Err(e)));
                    }
                    None => {
                        s.acc.metadata_stale = true;
                        batch.retry_at = Some(now + config.client.retry_backoff);
                        q.requeue(batch);
                    }
                },
                Outcome::RetryAfterBump(e) => match retry(e, &batch) {
                    Some(e) => {
                        s.idem.bump_needed |= gap(&batch, &e);
                        completed.push((batch, Err(e)));
                    }
                    None => {
                        s.idem.bump_needed = true;
                        q.requeue(batch);
                    }
                },
                Outcome::FailAndBump(e) => {
                    s.idem.bump_needed = true;
                    completed.push((batch, Err(e)));
                }
                Outcome::Fail(e) => {
                    if matches!(e, ProduceError::Fenced(_)) {
                        fatal = Some(e.clone());
                    }
                    s.idem.bump_needed |= gap(&batch, &e);
                    if let ProduceError::AbortableTransaction(_) = &e {
                        s.txn.set_abortable(e.to_string());
                    } else if inner.transactional() {
                        s.txn.set_abortable(e.to_string());
                    }
                    completed.push((batch, Err(e)));
                }
            }
        }
        s.acc.unfinished -= completed.len();
        if let Some(e) = &fatal {
            s.fatal = Some(e.clone());
        }
    }
    for (batch, result) in completed {
        if let Err(e) = &result {
            inner.failures.note(batch.records, e);
        }
        // The reservation is dropped with the batch: memory goes back to `send`.
        batch.completion.complete(result);
    }
    for (original, parts) in split {
        original.split_into(parts);
    }
    if let Some(e) = fatal {
        fail_all(inner, e);
    }
    if inner.state().acc.unfinished == 0 {
        inner.idle.notify_waiters();
    }
    inner.wake.notify_one();
}

/// A split batch's completion, and its pieces' (index of first record, completion).
type SplitBatch = (Arc<BatchCompletion>, Vec<(i32, Arc<BatchCompletion>)>);

/// Puts the two halves of a batch refused as too large at the head of its partition's
/// queue, in its place; returns the original completion and the halves' (first index,
/// completion), for the records' futures to follow.
fn requeue_halves(q: &mut PartitionQueue, batch: ClosedBatch, halves: [Piece; 2]) -> SplitBatch {
    let mut reservation = batch._reservation;
    let mut sequence = batch.base_sequence;
    let mut start = 0;
    let mut parts = Vec::with_capacity(2);
    let mut pieces = Vec::with_capacity(2);
    for (i, piece) in halves.into_iter().enumerate() {
        let completion = Arc::new(BatchCompletion::new(
            batch.completion.topic_name().clone(),
            batch.completion.partition(),
        ));
        parts.push((start, completion.clone()));
        start += piece.records;
        let share = if i == 0 {
            reservation.split_off(piece.builder.size_in_bytes())
        } else {
            reservation.split_off(usize::MAX)
        };
        pieces.push(ClosedBatch {
            records: piece.records,
            payload: Payload::Builder(piece.builder),
            completion,
            // The delivery timeout still counts from when the records were sent.
            created: batch.created,
            _reservation: share,
            attempts: 0,
            // The original's sequence numbers, in record order: the batches after it stay valid.
            base_sequence: sequence,
            epoch: batch.epoch,
            producer_id: batch.producer_id,
            retry_at: None,
        });
        if sequence >= 0 {
            sequence = increment_sequence(sequence, piece.records);
        }
    }
    // Each goes to the head (or its place in sequence order): the second half first.
    for piece in pieces.into_iter().rev() {
        q.requeue(piece);
    }
    (batch.completion, parts)
}

/// Fails every batch not yet sent (open and queued) with `error`.
pub(crate) fn fail_all(inner: &Inner, error: ProduceError) {
    let mut failed = Vec::new();
    {
        let mut s = inner.state();
        for topic in s.acc.topics.values_mut() {
            for q in &mut topic.partitions {
                q.close_open();
                failed.extend(q.ready.drain(..));
            }
        }
        s.acc.unfinished -= failed.len();
    }
    for b in failed {
        b.fail(error.clone(), &inner.failures);
    }
    inner.idle.notify_waiters();
}
