//! The benchmark report: records/s, MB/s and latency percentiles (HdrHistogram), as text
//! or one JSON object; and the progress bar shown on stderr while a benchmark runs.

use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// Latencies are recorded in microseconds, up to one hour, with 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// What one benchmark run measured.
#[derive(Debug)]
pub struct Report {
    /// `produce`, `consume` or `e2e`.
    pub kind: &'static str,
    /// Topic used.
    pub topic: String,
    /// Records that completed (acknowledged or consumed).
    pub records: u64,
    /// Records that failed.
    pub failed: u64,
    /// Payload bytes (keys + values) of the completed records.
    pub bytes: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latency of each record, in microseconds (ack latency, or produce-to-consume).
    pub latency: Option<Histogram<u64>>,
}

impl Report {
    /// Completed records per second.
    pub fn records_per_sec(&self) -> f64 {
        per_sec(self.records as f64, self.elapsed)
    }

    /// Payload megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        per_sec(self.bytes as f64 / 1e6, self.elapsed)
    }

    fn percentiles_ms(&self) -> Option<[(&'static str, f64); 6]> {
        let h = self.latency.as_ref().filter(|h| !h.is_empty())?;
        let ms = |us: u64| us as f64 / 1000.0;
        Some([
            ("p50", ms(h.value_at_quantile(0.50))),
            ("p90", ms(h.value_at_quantile(0.90))),
            ("p99", ms(h.value_at_quantile(0.99))),
            ("p99.9", ms(h.value_at_quantile(0.999))),
            ("max", ms(h.max())),
            ("mean", h.mean() / 1000.0),
        ])
    }

    /// The text report.
    pub fn human(&self) -> String {
        let mut s = format!(
            "{}: {} records ({} failed) to/from {} in {:.2} s\n  {:.0} records/s, {:.2} MB/s\n",
            self.kind,
            self.records,
            self.failed,
            self.topic,
            self.elapsed.as_secs_f64(),
            self.records_per_sec(),
            self.mb_per_sec()
        );
        if let Some(p) = self.percentiles_ms() {
            let parts: Vec<String> = p.iter().map(|(n, v)| format!("{n} {v:.3}")).collect();
            s.push_str(&format!("  latency ms: {}\n", parts.join(", ")));
        }
        s
    }

    /// The JSON report (one object).
    pub fn json(&self) -> serde_json::Value {
        let mut v = json!({
            "benchmark": self.kind,
            "topic": self.topic,
            "records": self.records,
            "failed": self.failed,
            "bytes": self.bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "records_per_s": self.records_per_sec(),
            "mb_per_s": self.mb_per_sec(),
        });
        if let Some(p) = self.percentiles_ms() {
            let latency: serde_json::Map<String, serde_json::Value> =
                p.iter().map(|(n, v)| ((*n).to_owned(), json!(v))).collect();
            v["latency_ms"] = serde_json::Value::Object(latency);
        }
        v
    }

    /// Prints the report to stdout in the chosen form.
    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.json());
        } else {
            print!("{}", self.human());
        }
    }
}

fn per_sec(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("in range");
        }
        Report {
            kind: "produce",
            topic: "t".into(),
            records: 2_000_000,
            failed: 0,
            bytes: 200_000_000,
            elapsed: Duration::from_secs(2),
            latency: Some(h),
        }
    }

    #[test]
    fn rates_divide_by_elapsed_time() {
        let r = report();
        assert_eq!(r.records_per_sec(), 1_000_000.0);
        assert_eq!(r.mb_per_sec(), 100.0);
    }

    #[test]
    fn json_has_rates_and_every_percentile() {
        let v = report().json();
        assert_eq!(v["records"], 2_000_000);
        let lat = &v["latency_ms"];
        for key in ["p50", "p90", "p99", "p99.9", "max"] {
            assert!(lat[key].as_f64().is_some(), "missing {key} in {v}");
        }
        // 1..=1000 ms uniformly: the median is about 500 ms, the max 1000 ms.
        let p50 = lat["p50"].as_f64().expect("number");
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        let max = lat["max"].as_f64().expect("number");
        assert!((999.0..=1001.0).contains(&max), "{max}");
    }

    #[test]
    fn human_report_names_throughput_and_latency() {
        let text = report().human();
        assert!(text.contains("1000000 records/s"), "{text}");
        assert!(text.contains("100.00 MB/s"), "{text}");
        assert!(text.contains("p99.9"), "{text}");
    }

    #[test]
    fn zero_elapsed_time_gives_zero_rates_not_infinity() {
        let r = Report {
            elapsed: Duration::ZERO,
            latency: None,
            ..report()
        };
        assert_eq!(r.records_per_sec(), 0.0);
        assert!(r.json().get("latency_ms").is_none());
    }
}
