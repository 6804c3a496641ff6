//! End-to-end latency sampling: from a sink record's event time (its timestamp) to the
//! broker's acknowledgement of that record, per worker and sink topic.
//!
//! Sampled, so that the record path stays free of clocks, locks and allocations: it pays one
//! `Cell<bool>` test per written record.
//!
//! # How a sample is taken
//! - Every 10 ms the worker's sampler arms itself until the next period, if some topic it
//!   knows has no sample in flight (and every 100 ms in any case, to meet topics it has not
//!   seen yet).
//! - While armed, the next record written to a topic without a sample in flight hands over
//!   its delivery future and timestamp, and the sampler disarms. So a topic has at most one
//!   sample in flight, and a worker takes at most one new sample per 10 ms; topics are
//!   sampled in the order their records come, so a quiet topic gets fewer samples.
//! - Memory: a topic's slot is allocated the first time the sampler meets the topic; polling a
//!   sampled delivery registers the worker's waker with that record's batch (at most one small
//!   allocation per sample). Nothing per record.
//! - The sampler runs as part of the worker's task (polled next to its loop, on its thread):
//!   when a delivery resolves, `now - timestamp` is counted. That is up to the
//!   acknowledgement, not up to `send`. A failed delivery is not counted (it fails the
//!   worker at its next commit).
//!
//! The ack is seen when the worker's thread next runs its task (the sampler is polled before
//! the worker's loop), and the producer reads the broker's answer on that same thread: a
//! sample is late by at most the time the worker spends between two awaits. Timestamps are
//! in ms, so latencies are too.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use flumen_client::producer::DeliveryFuture;

use crate::metrics::{Histogram, SinkLatency};
use crate::time::now_ms;

/// How often a worker takes a new sample, at most.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Every this many periods the sampler arms even with every known topic busy.
const DISCOVER_EVERY: u32 = 10;

/// One worker's latency sampler (shared by its sinks through `Output`).
#[derive(Debug, Default)]
pub(crate) struct LatencySampler {
    armed: Cell<bool>,
    topics: RefCell<Vec<TopicSamples>>,
}

#[derive(Debug)]
struct TopicSamples {
    topic: String,
    /// The sampled record's delivery and timestamp (ms).
    in_flight: Option<(DeliveryFuture, i64)>,
    histogram: Histogram,
}

impl LatencySampler {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(LatencySampler::default())
    }

    /// Whether the next written record is wanted as a sample ([`Self::offer`]).
    #[inline]
    pub(crate) fn armed(&self) -> bool {
        self.armed.get()
    }

    /// A record written to `topic` with timestamp `timestamp` (ms): sampled unless `topic`
    /// has a sample in flight already. Allocates only the first time it meets a topic.
    pub(crate) fn offer(&self, topic: &str, delivery: DeliveryFuture, timestamp: i64) {
        let mut topics = self.topics.borrow_mut();
        let at = match topics.iter().position(|t| t.topic == topic) {
            Some(at) => at,
            None => {
                topics.push(TopicSamples {
                    topic: topic.to_owned(),
                    in_flight: None,
                    histogram: Histogram::default(),
                });
                topics.len() - 1
            }
        };
        let slot = &mut topics[at];
        if slot.in_flight.is_none() {
            slot.in_flight = Some((delivery, timestamp));
            self.armed.set(false);
        }
    }

    /// Arms every 10 ms and counts the samples as they are acknowledged; never returns.
    pub(crate) async fn run(&self) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        std::future::poll_fn(|cx| {
            let mut topics = self.topics.borrow_mut();
            let mut acked_at = None;
            for t in topics.iter_mut() {
                let Some((delivery, timestamp)) = &mut t.in_flight else {
                    continue;
                };
                if let Poll::Ready(result) = Pin::new(delivery).poll(cx) {
                    if result.is_ok() {
                        let now = *acked_at.get_or_insert_with(now_ms);
                        t.histogram
                            .observe(now.saturating_sub(*timestamp) as f64 / 1e3);
                    }
                    t.in_flight = None;
                }
            }
            // Armed for one period at most: a new sample at most every 10 ms.
            while tick.poll_tick(cx).is_ready() {
                ticks = ticks.wrapping_add(1);
                let idle = topics.iter().any(|t| t.in_flight.is_none());
                self.armed
                    .set(idle || topics.is_empty() || ticks % DISCOVER_EVERY == 0);
            }
            Poll::<()>::Pending
        })
        .await;
    }

    /// The histograms so far, per topic.
    pub(crate) fn snapshot(&self) -> Vec<SinkLatency> {
        self.topics
            .borrow()
            .iter()
            .map(|t| SinkLatency {
                topic: t.topic.clone(),
                histogram: t.histogram.clone(),
            })
            .collect()
    }
}
