//! Synthetic visit logs: the input of the seed's `visit_analytics` job, one JSON object per
//! record (`{"ts":1700000000000,"user":"u42","url":"/cart","status":200,"latency_ms":35}`).
//!
//! [`VisitGen`] describes the log (users, URLs with a Zipf-like popularity, event-time rate,
//! errors and an error burst, disorder and late records) and [`Visits`] yields it. The same
//! seed and settings give the same records on every machine and release: the generator is a
//! SplitMix64 written here, not a library's RNG whose stream may change.
//!
//! Event time: record `i` is due at `start_ms + i * 1000 / events_per_sec`. With
//! `out_of_order_ms = d`, its timestamp is drawn in `[due - d, due]`, so no timestamp is more
//! than `d` older than the largest one emitted before it. A late record (a share
//! `late_share` of them, once a first record exists) has exactly the largest timestamp so far
//! minus `late_by_ms`: with `late_by_ms > d` it is behind any bounded-out-of-orderness
//! watermark of `d`.
//!
//! ```
//! use flumen_runtime::format::{Decode, Json};
//! use flumen_runtime::testing::visits::{Visit, VisitGen};
//!
//! let visits: Vec<Visit> = VisitGen::new(7).users(100).url_count(20).visits().take(1000).collect();
//! let line = visits[0].to_json();
//! assert_eq!(Json::<Visit>::new().decode(Some(&line)).unwrap(), visits[0]);
//! ```

use serde::{Deserialize, Serialize};

/// One visit: what the `visit_analytics` job reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Visit {
    /// Event time, milliseconds since the epoch.
    pub ts: i64,
    /// The user, `u<number>`.
    pub user: String,
    /// The path visited.
    pub url: String,
    /// HTTP status: 200, or 500 / 503 for an error.
    pub status: u16,
    /// Server latency in milliseconds.
    pub latency_ms: u32,
}

impl Visit {
    /// Whether the status is a server error (5xx).
    pub fn is_error(&self) -> bool {
        self.status >= 500
    }

    /// The JSON object, without a line end: a record value.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        self.write_json(&mut out);
        out
    }

    /// Appends the JSON object (without a line end) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing a struct of strings and integers into a Vec cannot fail.
        serde_json::to_writer(out, self).expect("a Visit always serializes");
    }
}

/// An error burst: from `from_ms` (inclusive) to `until_ms` (exclusive) of event time, visits
/// of `url` fail with probability `error_share`.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorBurst {
    /// The URL that fails.
    pub url: String,
    /// Start of the burst (event time, ms).
    pub from_ms: i64,
    /// End of the burst, exclusive (event time, ms).
    pub until_ms: i64,
    /// Share of that URL's visits that fail during the burst.
    pub error_share: f64,
}

/// The description of a visit log (a builder); [`visits`](Self::visits) yields it.
#[derive(Clone, Debug)]
pub struct VisitGen {
    seed: u64,
    users: u64,
    urls: Vec<String>,
    zipf_exponent: f64,
    start_ms: i64,
    events_per_sec: f64,
    error_share: f64,
    burst: Option<ErrorBurst>,
    out_of_order_ms: i64,
    late_share: f64,
    late_by_ms: i64,
}

/// The URLs of [`VisitGen::url_count`]: these first, then `/page/<n>`.
const URL_NAMES: [&str; 12] = [
    "/",
    "/search",
    "/product/42",
    "/cart",
    "/product/7",
    "/checkout",
    "/login",
    "/api/recommendations",
    "/account",
    "/help",
    "/product/1",
    "/logout",
];

impl VisitGen {
    /// A log from `seed`: 1,000 users, 50 URLs with Zipf exponent 1, 1,000 events per second
    /// of event time from 2024-01-01T00:00:00Z, 1% errors, in order, nothing late.
    pub fn new(seed: u64) -> VisitGen {
        VisitGen {
            seed,
            users: 1000,
            urls: Self::url_names(50),
            zipf_exponent: 1.0,
            start_ms: 1_704_067_200_000,
            events_per_sec: 1000.0,
            error_share: 0.01,
            burst: None,
            out_of_order_ms: 0,
            late_share: 0.0,
            late_by_ms: 0,
        }
    }

    /// The first `n` URL names [`url_count`](Self::url_count) uses, most visited first.
    pub fn url_names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| match URL_NAMES.get(i) {
                Some(name) => (*name).to_owned(),
                None => format!("/page/{i}"),
            })
            .collect()
    }

    /// Users `u0` to `u<n-1>`, equally likely (at least one).
    pub fn users(mut self, n: u64) -> Self {
        self.users = n.max(1);
        self
    }

    /// These URLs, most visited first (at least one; an empty list keeps the current ones).
    pub fn urls<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if !urls.is_empty() {
            self.urls = urls;
        }
        self
    }

    /// `n` URLs named by [`url_names`](Self::url_names) (at least one).
    pub fn url_count(mut self, n: usize) -> Self {
        self.urls = Self::url_names(n.max(1));
        self
    }

    /// URL popularity: the URL of rank `r` (from 1) is drawn with weight `1 / r^s`
    /// (0: uniform; 1, the default, is Zipf's law).
    pub fn zipf_exponent(mut self, s: f64) -> Self {
        self.zipf_exponent = s.max(0.0);
        self
    }

    /// Event time of the first record, ms since the epoch.
    pub fn start_ms(mut self, ms: i64) -> Self {
        self.start_ms = ms;
        self
    }

    /// Records per second of event time (positive).
    pub fn events_per_sec(mut self, rate: f64) -> Self {
        if rate > 0.0 {
            self.events_per_sec = rate;
        }
        self
    }

    /// Share of visits (outside a burst) that fail with 500 or 503, in `[0, 1]`.
    pub fn error_share(mut self, share: f64) -> Self {
        self.error_share = share.clamp(0.0, 1.0);
        self
    }

    /// An error burst on `url`: from `from_ms` to `until_ms` (event time, end exclusive), a
    /// share `error_share` of its visits fail.
    pub fn error_burst(
        mut self,
        url: impl Into<String>,
        from_ms: i64,
        until_ms: i64,
        error_share: f64,
    ) -> Self {
        self.burst = Some(ErrorBurst {
            url: url.into(),
            from_ms,
            until_ms,
            error_share: error_share.clamp(0.0, 1.0),
        });
        self
    }

    /// Disorder: a record's timestamp is up to `ms` older than the largest one emitted before.
    pub fn out_of_order_ms(mut self, ms: i64) -> Self {
        self.out_of_order_ms = ms.max(0);
        self
    }

    /// Late records: a share `share` of records (after the first) have the largest timestamp
    /// so far minus `by_ms`.
    pub fn late(mut self, share: f64, by_ms: i64) -> Self {
        self.late_share = share.clamp(0.0, 1.0);
        self.late_by_ms = by_ms.max(0);
        self
    }

    /// The URLs, most visited first.
    pub fn url_list(&self) -> &[String] {
        &self.urls
    }

    /// The visits (an endless iterator: `take` what you need).
    pub fn visits(self) -> Visits {
        let weights: Vec<f64> = (1..=self.urls.len())
            .map(|rank| (rank as f64).powf(-self.zipf_exponent))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        let url_cdf = weights
            .iter()
            .map(|w| {
                cumulative += w / total;
                cumulative
            })
            .collect();
        Visits {
            rng: SplitMix64(self.seed),
            index: 0,
            max_ts: None,
            url_cdf,
            spec: self,
        }
    }
}

impl IntoIterator for VisitGen {
    type Item = Visit;
    type IntoIter = Visits;

    fn into_iter(self) -> Visits {
        self.visits()
    }
}

/// The visits of a [`VisitGen`], endless.
#[derive(Clone, Debug)]
pub struct Visits {
    spec: VisitGen,
    rng: SplitMix64,
    index: u64,
    max_ts: Option<i64>,
    url_cdf: Vec<f64>,
}

impl Visits {
    /// The largest timestamp emitted so far.
    pub fn max_ts(&self) -> Option<i64> {
        self.max_ts
    }

    /// The next visit's JSON object (see [`Visit::to_json`]), appended to `out`.
    pub fn next_json(&mut self, out: &mut Vec<u8>) -> Visit {
        let visit = self.next_visit();
        visit.write_json(out);
        visit
    }

    /// The next visit.
    pub fn next_visit(&mut self) -> Visit {
        let g = &self.spec;
        let due = g.start_ms + (self.index as f64 * 1000.0 / g.events_per_sec) as i64;
        self.index += 1;
        let ts = match self.max_ts {
            Some(max) if g.late_share > 0.0 && self.rng.next_f64() < g.late_share => {
                max - g.late_by_ms
            }
            _ => {
                // `due` never decreases and every timestamp so far is at most the `due` of
                // its own record, so `due - jitter` is at least `max_ts - out_of_order_ms`.
                let jitter = self.rng.below(g.out_of_order_ms as u64 + 1) as i64;
                due - jitter
            }
        };
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));

        let u = self.rng.next_f64();
        let rank = self
            .url_cdf
            .partition_point(|c| *c < u)
            .min(g.urls.len() - 1);
        let url = &g.urls[rank];
        let user = self.rng.below(g.users);

        let share = match &g.burst {
            Some(b) if b.url == *url && (b.from_ms..b.until_ms).contains(&ts) => b.error_share,
            _ => g.error_share,
        };
        let r = self.rng.next_u64();
        let error = (r >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < share;
        let status = match (error, r % 3) {
            (false, _) => 200,
            (true, 0) => 503,
            (true, _) => 500,
        };

        // A per-URL base (10 to 70 ms), a spread of ±50%, a 1% slow tail, and slow errors.
        let base = 10 + (rank as u64 % 7) * 10;
        let mut latency = base / 2 + self.rng.below(base + 1);
        if self.rng.below(100) == 0 {
            latency += 200 + self.rng.below(1800);
        }
        if error {
            latency += 100 + self.rng.below(900);
        }

        Visit {
            ts,
            user: format!("u{user}"),
            url: url.clone(),
            status,
            latency_ms: latency as u32,
        }
    }
}

impl Iterator for Visits {
    type Item = Visit;

    fn next(&mut self) -> Option<Visit> {
        Some(self.next_visit())
    }
}

/// SplitMix64 (Steele, Lea and Flood): small, fast, and fixed forever.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (n > 0), by Lemire's multiply-shift (bias below 2^-64 * n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::format::{Decode, Encode, Json, Owned};

    #[test]
    fn the_same_seed_gives_the_same_log_and_another_seed_another() {
        let make = |seed| {
            VisitGen::new(seed)
                .out_of_order_ms(500)
                .late(0.01, 5_000)
                .visits()
                .take(2_000)
                .collect::<Vec<_>>()
        };
        assert_eq!(make(1), make(1));
        assert_ne!(make(1), make(2));
    }

    #[test]
    fn no_timestamp_is_older_than_the_bound_except_late_records() {
        let bound = 250;
        let late_by = 10_000;
        let mut visits = VisitGen::new(3)
            .events_per_sec(5_000.0)
            .out_of_order_ms(bound)
            .late(0.02, late_by)
            .visits();
        let (mut max, mut late, mut disordered) = (None::<i64>, 0u32, 0u32);
        let n = 50_000;
        for _ in 0..n {
            let v = visits.next_visit();
            if let Some(max) = max {
                if v.ts < max - bound {
                    assert_eq!(
                        v.ts,
                        max - late_by,
                        "a late record is exactly late_by behind"
                    );
                    late += 1;
                } else if v.ts < max {
                    disordered += 1;
                }
            }
            max = Some(max.map_or(v.ts, |m| m.max(v.ts)));
            assert_eq!(visits.max_ts(), max);
        }
        // 2% of 50,000 is 1,000; three standard deviations are about 94.
        assert!((900..1100).contains(&late), "{late} late records");
        assert!(disordered > n / 2, "{disordered} records out of order");
    }

    #[test]
    fn in_order_without_disorder_and_the_event_rate_holds() {
        let visits: Vec<Visit> = VisitGen::new(9)
            .start_ms(1_000)
            .events_per_sec(100.0)
            .visits()
            .take(1_001)
            .collect();
        assert!(visits.windows(2).all(|w| w[0].ts <= w[1].ts));
        assert_eq!(visits[0].ts, 1_000);
        assert_eq!(visits[1_000].ts, 11_000);
    }

    #[test]
    fn json_round_trips_through_the_runtime_format() {
        let json = Json::<Visit>::new();
        let mut scratch = Vec::new();
        for v in VisitGen::new(5).visits().take(200) {
            let line = v.to_json();
            assert_eq!(json.decode(Some(&line)).expect("decode"), v);
            scratch.clear();
            let encoded = <Json<Visit> as Encode<Owned<Visit>>>::encode(&json, &v, &mut scratch)
                .expect("enc");
            assert_eq!(encoded, line.as_slice());
        }
        let v = Visit {
            ts: 1,
            user: "u42".into(),
            url: "/cart".into(),
            status: 200,
            latency_ms: 35,
        };
        assert_eq!(
            v.to_json(),
            br#"{"ts":1,"user":"u42","url":"/cart","status":200,"latency_ms":35}"#
        );
    }

    #[test]
    fn urls_are_skewed_errors_are_near_their_share_and_the_burst_fires() {
        let start = 0;
        let visits: Vec<Visit> = VisitGen::new(11)
            .start_ms(start)
            .events_per_sec(1_000.0)
            .url_count(20)
            .error_share(0.01)
            .error_burst("/cart", 10_000, 20_000, 0.5)
            .visits()
            .take(60_000)
            .collect();
        let mut per_url: HashMap<&str, u32> = HashMap::new();
        for v in &visits {
            *per_url.entry(&v.url).or_default() += 1;
            assert!(v.user.starts_with('u'));
            assert!(matches!(v.status, 200 | 500 | 503));
        }
        let names = VisitGen::url_names(20);
        // Zipf with s = 1: the first URL gets twice the second's visits, ten times the tenth's.
        let (first, second, tenth) = (
            per_url[&*names[0]],
            per_url[&*names[1]],
            per_url[&*names[9]],
        );
        assert!(
            first > second * 17 / 10 && first < second * 23 / 10,
            "{first} {second}"
        );
        assert!(first > tenth * 8 && first < tenth * 12, "{first} {tenth}");

        let errors = |url: &str, from: i64, until: i64| {
            let seen: Vec<&Visit> = visits
                .iter()
                .filter(|v| v.url == url && (from..until).contains(&v.ts))
                .collect();
            seen.iter().filter(|v| v.is_error()).count() as f64 / seen.len() as f64
        };
        let in_burst = errors("/cart", 10_000, 20_000);
        let outside = errors("/cart", 20_000, 60_000);
        let others = errors("/", 0, 60_000);
        assert!((0.4..0.6).contains(&in_burst), "{in_burst}");
        assert!(outside < 0.03, "{outside}");
        assert!(others < 0.03, "{others}");
    }
}
