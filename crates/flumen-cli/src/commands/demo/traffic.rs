//! The demo's live traffic: VisitGen's visits at a steady rate, with recent timestamps and an
//! error burst on one URL at the start of every minute.
//!
//! Event time follows the wall clock: visit `i` is due `i / rate` seconds after the start and
//! is sent when that moment has come, with a timestamp up to [`OUT_OF_ORDER_MS`] before it.
//! The log is cut into [`SEGMENT_MS`] segments, each a `VisitGen` of its own (seeded from the
//! demo's seed and the segment number) whose burst covers the segment's first
//! [`BURST_MS`]: so the first windows of a run already raise an alert.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flumen_client::producer::{Producer, ProducerRecord};
use flumen_runtime::testing::visits::{Visit, VisitGen, Visits};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::error::{CliError, Result};

/// Length of one segment of the log (event time).
pub const SEGMENT_MS: i64 = 60_000;
/// How long each segment's error burst lasts, from the segment's start.
pub const BURST_MS: i64 = 20_000;
/// Share of the burst URL's visits that fail during a burst.
pub const BURST_ERROR_SHARE: f64 = 0.3;
/// Share of other visits that fail: low enough that a URL's window rarely crosses the
/// pipeline's alert threshold by chance.
pub const ERROR_SHARE: f64 = 0.002;
/// How far out of order the visits are (the pipeline allows more).
pub const OUT_OF_ORDER_MS: i64 = 1_000;
/// Distinct URLs visited.
pub const URLS: usize = 20;
/// Distinct users.
pub const USERS: u64 = 5_000;
/// The URLs that fail, one per segment in turn (all among the most visited, so that a burst
/// has the views an alert needs).
pub const BURST_URLS: [&str; 4] = ["/cart", "/checkout", "/search", "/login"];

/// Visits at `rate` per second of event time from `start_ms`, segment after segment.
pub struct Traffic {
    seed: u64,
    rate: u32,
    start_ms: i64,
    segment: i64,
    left_in_segment: u64,
    visits: Visits,
}

impl Traffic {
    /// The traffic of `seed` at `rate` visits per second (at least 1) from `start_ms`.
    pub fn new(seed: u64, rate: u32, start_ms: i64) -> Traffic {
        let rate = rate.max(1);
        Traffic {
            seed,
            rate,
            start_ms,
            segment: 0,
            left_in_segment: Self::per_segment(rate),
            visits: Self::segment(seed, rate, start_ms, 0),
        }
    }

    fn per_segment(rate: u32) -> u64 {
        u64::from(rate) * (SEGMENT_MS as u64) / 1000
    }

    /// The URL failing in segment `n`.
    pub fn burst_url(n: i64) -> &'static str {
        BURST_URLS[n.rem_euclid(BURST_URLS.len() as i64) as usize]
    }

    fn segment(seed: u64, rate: u32, start_ms: i64, n: i64) -> Visits {
        let from = start_ms + n * SEGMENT_MS;
        VisitGen::new(seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .users(USERS)
            .url_count(URLS)
            .start_ms(from)
            .events_per_sec(f64::from(rate))
            .error_share(ERROR_SHARE)
            .error_burst(Self::burst_url(n), from, from + BURST_MS, BURST_ERROR_SHARE)
            .out_of_order_ms(OUT_OF_ORDER_MS)
            .visits()
    }

    /// The next visit.
    pub fn next_visit(&mut self) -> Visit {
        if self.left_in_segment == 0 {
            self.segment += 1;
            self.left_in_segment = Self::per_segment(self.rate);
            self.visits = Self::segment(self.seed, self.rate, self.start_ms, self.segment);
        }
        self.left_in_segment -= 1;
        self.visits.next_visit()
    }
}

/// What the traffic task did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Visits the broker acknowledged or that are still in flight.
    pub sent: u64,
    /// Visits that failed.
    pub failed: u64,
    /// The largest timestamp sent.
    pub max_ts: Option<i64>,
}

/// Sends `traffic` to `topic` at its rate (`sent` counts the visits as they go) until `stop`
/// turns true; then flushes and closes the producer.
pub async fn send(
    producer: Producer,
    topic: String,
    mut traffic: Traffic,
    sent: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Sent> {
    let started = Instant::now();
    let rate = u128::from(traffic.rate);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut pending = FuturesUnordered::new();
    let mut report = Sent::default();
    let mut value = Vec::with_capacity(128);
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => continue,
        }
        let due = u64::try_from(started.elapsed().as_millis() * rate / 1000).unwrap_or(u64::MAX);
        while report.sent < due && !*stop.borrow() {
            let visit = traffic.next_visit();
            value.clear();
            visit.write_json(&mut value);
            let record = ProducerRecord::new(&topic)
                .key(visit.user.as_bytes())
                .value(&value)
                .timestamp(visit.ts);
            pending.push(
                producer
                    .send(record)
                    .await
                    .map_err(|e| CliError::produce(&e))?,
            );
            report.sent += 1;
            report.max_ts = Some(report.max_ts.map_or(visit.ts, |m| m.max(visit.ts)));
            sent.store(report.sent, Ordering::Relaxed);
            while let Some(Some(r)) = pending.next().now_or_never() {
                report.failed += u64::from(r.is_err());
            }
        }
    }
    // A broker that went away (Ctrl-C reaches a local broker too) must not hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), producer.flush()).await;
    while let Some(Some(r)) = pending.next().now_or_never() {
        report.failed += u64::from(r.is_err());
    }
    let _ = producer.close(Duration::from_secs(2)).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_each_other_at_the_rate_and_each_starts_with_a_burst() {
        let rate = 100;
        let mut t = Traffic::new(1, rate, 0);
        let n = (Traffic::per_segment(rate) * 3) as usize;
        let visits: Vec<Visit> = (0..n).map(|_| t.next_visit()).collect();
        // Out of order by at most OUT_OF_ORDER_MS, and never ahead of the wall clock.
        for (i, v) in visits.iter().enumerate() {
            let due = i as i64 * 1000 / i64::from(rate);
            assert!(
                v.ts <= due && v.ts >= due - OUT_OF_ORDER_MS - 10,
                "{i}: {v:?}"
            );
        }
        for segment in 0..3 {
            let url = Traffic::burst_url(segment);
            let from = segment * SEGMENT_MS;
            let rate_in = |a: i64, b: i64| {
                let of_url: Vec<&Visit> = visits
                    .iter()
                    .filter(|v| v.url == url && (from + a..from + b).contains(&v.ts))
                    .collect();
                of_url.iter().filter(|v| v.is_error()).count() as f64 / of_url.len() as f64
            };
            let burst = rate_in(0, BURST_MS);
            let after = rate_in(BURST_MS, SEGMENT_MS);
            assert!(burst > 0.15, "segment {segment}: {burst}");
            assert!(after < 0.05, "segment {segment}: {after}");
        }
    }
}
