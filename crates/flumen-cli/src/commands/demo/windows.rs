//! The pipeline's output rows grouped by window, and when a window is complete.
//!
//! The per-URL rows of one window come from every task of the windowed stage, each when its
//! own watermark passes the window's end; the watermarks of those tasks follow the same
//! markers, so the rows arrive together, a window size before the next window's rows. A
//! window is therefore complete once a later window's rows arrive, or once its top-URL list
//! arrives (the job computes that list from the per-URL rows), or when no row of it came for
//! [`Book::quiet`]. Rows of a window already shown (a late visit re-emits it) are counted and
//! otherwise left out. Alerts are shown as their rows arrive.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The job's statistics of one URL in one window.
#[derive(Clone, Debug, PartialEq)]
pub struct UrlStats {
    /// The URL.
    pub url: String,
    /// Visits.
    pub views: u64,
    /// Distinct users.
    pub users: u64,
    /// Visits that failed (5xx).
    pub errors: u64,
    /// Median latency.
    pub p50_ms: u64,
    /// 99th percentile latency.
    pub p99_ms: u64,
}

impl UrlStats {
    /// Errors per view.
    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / self.views.max(1) as f64
    }
}

/// A `{"window_start", "window_end", ...}` row's window.
fn window_of(v: &Value) -> Option<(i64, i64)> {
    Some((v["window_start"].as_i64()?, v["window_end"].as_i64()?))
}

fn number(v: &Value, key: &str) -> u64 {
    match &v[key] {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.max(0.0).round() as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

/// A per-URL statistics row: `{"window_start", "window_end", "url", "views", "users",
/// "errors", "p50_ms", "p99_ms"}`.
pub fn parse_stats(v: &Value) -> Option<((i64, i64), UrlStats)> {
    Some((
        window_of(v)?,
        UrlStats {
            url: v["url"].as_str()?.to_owned(),
            views: number(v, "views"),
            users: number(v, "users"),
            errors: number(v, "errors"),
            p50_ms: number(v, "p50_ms"),
            p99_ms: number(v, "p99_ms"),
        },
    ))
}

/// An error-rate alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The window's start (ms since the epoch).
    pub window_start: i64,
    /// The window's end.
    pub window_end: i64,
    /// The failing URL.
    pub url: String,
    /// Its visits in the window.
    pub views: u64,
    /// Its errors in the window.
    pub errors: u64,
    /// Errors per view.
    pub error_rate: f64,
}

/// An alert row: `{"window_start", "window_end", "url", "views", "errors", "error_rate"}`
/// (the rate is computed when absent).
pub fn parse_alert(v: &Value) -> Option<Alert> {
    let (window_start, window_end) = window_of(v)?;
    let (views, errors) = (number(v, "views"), number(v, "errors"));
    Some(Alert {
        window_start,
        window_end,
        url: v["url"].as_str()?.to_owned(),
        views,
        errors,
        error_rate: v["error_rate"]
            .as_f64()
            .unwrap_or(errors as f64 / views.max(1) as f64),
    })
}

/// The window of a top-URLs record: its `window_start` field, or else its key (the Rust
/// example keys its top lists by window start).
pub fn top_window(key: Option<&str>, v: &Value) -> Option<i64> {
    v["window_start"]
        .as_i64()
        .or_else(|| key?.trim().parse().ok())
}

/// A complete window: every URL's statistics, most viewed first.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedWindow {
    /// Start, ms since the epoch.
    pub start: i64,
    /// End (exclusive).
    pub end: i64,
    /// Per URL, by views (descending), then URL.
    pub urls: Vec<UrlStats>,
}

impl ClosedWindow {
    /// Visits in the window.
    pub fn views(&self) -> u64 {
        self.urls.iter().map(|u| u.views).sum()
    }

    /// Failed visits in the window.
    pub fn errors(&self) -> u64 {
        self.urls.iter().map(|u| u.errors).sum()
    }

    /// Errors per view.
    pub fn error_rate(&self) -> f64 {
        self.errors() as f64 / self.views().max(1) as f64
    }
}

struct Open {
    end: i64,
    urls: BTreeMap<String, UrlStats>,
    last_row: Instant,
}

/// Rows grouped by window until each is complete.
pub struct Book {
    open: BTreeMap<i64, Open>,
    /// The start of the latest window shown.
    shown: Option<i64>,
    /// The end of the latest window shown (`i64::MIN` before the first).
    last_end: i64,
    /// How long a window with no new row waits before it counts as complete.
    pub quiet: Duration,
    /// Rows that came for windows already shown.
    pub ignored: u64,
}

impl Default for Book {
    fn default() -> Self {
        Book {
            open: BTreeMap::new(),
            shown: None,
            last_end: i64::MIN,
            quiet: Duration::from_millis(1500),
            ignored: 0,
        }
    }
}

impl Book {
    /// Whether the window starting at `start` was shown, or an earlier one than the latest
    /// shown.
    fn is_past(&self, start: i64) -> bool {
        self.shown.is_some_and(|s| start <= s)
    }

    /// Adds a statistics row; returns the windows it completes, oldest first.
    pub fn add_stats(
        &mut self,
        (start, end): (i64, i64),
        stats: UrlStats,
        now: Instant,
    ) -> Vec<ClosedWindow> {
        if self.is_past(start) {
            self.ignored += 1;
            return Vec::new();
        }
        let open = self.open.entry(start).or_insert_with(|| Open {
            end,
            urls: BTreeMap::new(),
            last_row: now,
        });
        open.last_row = now;
        open.urls.insert(stats.url.clone(), stats);
        let earlier: Vec<i64> = self.open.range(..start).map(|(s, _)| *s).collect();
        self.close(earlier)
    }

    /// Notes that the top list of the window starting at `start` arrived; returns the
    /// windows that completes (it and any earlier one).
    pub fn add_top(&mut self, start: i64) -> Vec<ClosedWindow> {
        if self.is_past(start) {
            return Vec::new();
        }
        if !self.open.contains_key(&start) {
            // No row of it yet: the top list alone has no statistics to show.
            return Vec::new();
        }
        let upto: Vec<i64> = self.open.range(..=start).map(|(s, _)| *s).collect();
        self.close(upto)
    }

    /// The windows that have had no row for [`quiet`](Self::quiet) at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<ClosedWindow> {
        let quiet: Vec<i64> = self
            .open
            .iter()
            .filter(|(_, o)| now.duration_since(o.last_row) >= self.quiet)
            .map(|(s, _)| *s)
            .collect();
        let upto = match quiet.last() {
            Some(last) => self.open.range(..=*last).map(|(s, _)| *s).collect(),
            None => Vec::new(),
        };
        self.close(upto)
    }

    /// Whether a window ending at `end` or later was shown.
    pub fn shown_upto(&self, end: i64) -> bool {
        self.last_end >= end
    }

    fn close(&mut self, starts: Vec<i64>) -> Vec<ClosedWindow> {
        let mut out = Vec::new();
        for start in starts {
            if let Some(open) = self.open.remove(&start) {
                let mut urls: Vec<UrlStats> = open.urls.into_values().collect();
                urls.sort_by(|a, b| b.views.cmp(&a.views).then_with(|| a.url.cmp(&b.url)));
                self.shown = Some(self.shown.map_or(start, |s| s.max(start)));
                self.last_end = self.last_end.max(open.end);
                out.push(ClosedWindow {
                    start,
                    end: open.end,
                    urls,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(start: i64, url: &str, views: u64, errors: u64) -> ((i64, i64), UrlStats) {
        parse_stats(&json!({
            "window_start": start, "window_end": start + 10_000, "url": url,
            "views": views, "users": views / 2, "errors": errors, "p50_ms": 30, "p99_ms": 900
        }))
        .expect("a stats row")
    }

    #[test]
    fn a_window_completes_when_a_later_one_starts_its_top_list_comes_or_it_goes_quiet() {
        let t0 = Instant::now();
        let mut book = Book::default();
        let (w, s) = row(0, "/a", 5, 0);
        assert!(book.add_stats(w, s, t0).is_empty());
        let (w, s) = row(0, "/b", 9, 1);
        assert!(book.add_stats(w, s, t0).is_empty());
        let (w, s) = row(10_000, "/a", 7, 0);
        let closed = book.add_stats(w, s, t0);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].start, closed[0].end), (0, 10_000));
        let urls: Vec<&str> = closed[0].urls.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(urls, ["/b", "/a"]);
        assert_eq!((closed[0].views(), closed[0].errors()), (14, 1));
        assert!(book.shown_upto(10_000) && !book.shown_upto(20_000));

        // A row re-emitted for a window already shown is left out.
        let (w, s) = row(0, "/c", 1, 0);
        assert!(book.add_stats(w, s, t0).is_empty());
        assert_eq!(book.ignored, 1);

        // The top list completes its window (the window is its key or its field).
        assert_eq!(top_window(Some("10000"), &json!([])), Some(10_000));
        assert_eq!(
            top_window(None, &json!({"window_start": 10_000})),
            Some(10_000)
        );
        let closed = book.add_top(10_000);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].start, 10_000);

        // Quiet long enough.
        let (w, s) = row(20_000, "/a", 3, 0);
        assert!(book.add_stats(w, s, t0).is_empty());
        assert!(book.tick(t0 + Duration::from_millis(100)).is_empty());
        let closed = book.tick(t0 + book.quiet);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].start, 20_000);
    }

    #[test]
    fn an_alert_row_reads_with_or_without_its_rate() {
        let row = json!({
            "window_start": 0, "window_end": 10_000, "url": "/cart", "views": 100, "errors": 30
        });
        let alert = parse_alert(&row).expect("an alert");
        assert_eq!(alert.url, "/cart");
        assert!((alert.error_rate - 0.3).abs() < 1e-9);
        let mut with_rate = row.clone();
        with_rate["error_rate"] = json!(0.25);
        assert_eq!(parse_alert(&with_rate).map(|a| a.error_rate), Some(0.25));
        assert_eq!(parse_alert(&json!({"url": "/cart"})), None);
    }
}
