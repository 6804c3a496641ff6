//! What the demo shows: on a terminal, one screen redrawn in place (plain ANSI: home, clear
//! to the end) with the last closed window's table and the latest alerts; otherwise plain
//! lines, one block per closed window and one line per alert, as they happen.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use super::windows::{Alert, ClosedWindow};

/// URLs shown per window.
pub const TOP: usize = 10;
/// Alerts kept on the terminal screen.
const ALERTS_SHOWN: usize = 8;

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
pub fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// A closed window: a title line, the column names, then its top URLs.
pub fn window_lines(w: &ClosedWindow) -> Vec<String> {
    let mut lines = vec![
        format!(
            "window {}-{} UTC: {} views, {} URLs, {} errors ({})",
            clock(w.start),
            clock(w.end),
            thousands(w.views()),
            w.urls.len(),
            thousands(w.errors()),
            percent(w.error_rate())
        ),
        format!(
            "  {:<24} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8}",
            "url", "views", "users", "errors", "err%", "p50 ms", "p99 ms"
        ),
    ];
    for u in w.urls.iter().take(TOP) {
        lines.push(format!(
            "  {:<24} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8}",
            u.url,
            thousands(u.views),
            thousands(u.users),
            thousands(u.errors),
            percent(u.error_rate()),
            u.p50_ms,
            u.p99_ms
        ));
    }
    lines
}

/// One alert.
pub fn alert_line(a: &Alert) -> String {
    format!(
        "alert {}-{} UTC: {} error rate {} ({} errors in {} views)",
        clock(a.window_start),
        clock(a.window_end),
        a.url,
        percent(a.error_rate),
        thousands(a.errors),
        thousands(a.views)
    )
}

/// The counters of the header.
pub struct Status<'a> {
    /// Where the job runs.
    pub bootstrap: &'a str,
    /// The metrics page.
    pub metrics: &'a str,
    /// Visits per second asked for.
    pub rate: u32,
    /// Visits sent so far.
    pub sent: u64,
    /// When the traffic started.
    pub started: Instant,
    /// Windows shown so far.
    pub windows: u64,
    /// Alerts shown so far.
    pub alerts: u64,
}

/// Where the demo writes what it shows.
pub enum Screen {
    /// A terminal: one screen, redrawn.
    Terminal {
        /// The latest window.
        window: Option<ClosedWindow>,
        /// The latest alerts, oldest first.
        alerts: VecDeque<Alert>,
    },
    /// Plain lines.
    Lines,
}

impl Screen {
    /// A terminal screen if stdout is one, plain lines otherwise.
    pub fn for_stdout() -> Screen {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            Screen::Terminal {
                window: None,
                alerts: VecDeque::new(),
            }
        } else {
            Screen::Lines
        }
    }

    /// A window closed.
    pub fn window(&mut self, w: ClosedWindow) {
        match self {
            Screen::Terminal { window, .. } => *window = Some(w),
            Screen::Lines => {
                let mut out = std::io::stdout().lock();
                for line in window_lines(&w) {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
        }
    }

    /// An alert fired.
    pub fn alert(&mut self, a: Alert) {
        match self {
            Screen::Terminal { alerts, .. } => {
                if alerts.len() == ALERTS_SHOWN {
                    alerts.pop_front();
                }
                alerts.push_back(a);
            }
            Screen::Lines => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", alert_line(&a));
                let _ = out.flush();
            }
        }
    }

    /// Redraws the terminal screen (nothing for plain lines).
    pub fn draw(&self, status: &Status<'_>) {
        let Screen::Terminal { window, alerts } = self else {
            return;
        };
        let secs = status.started.elapsed().as_secs_f64();
        let mut lines = vec![
            format!(
                "flumen demo: visit_analytics on {}, {} visits/s; metrics at {}; Ctrl-C stops",
                status.bootstrap,
                thousands(u64::from(status.rate)),
                status.metrics
            ),
            format!(
                "{} visits sent in {:.0} s ({}/s), {} windows closed, {} alerts",
                thousands(status.sent),
                secs,
                thousands((status.sent as f64 / secs.max(0.001)) as u64),
                status.windows,
                status.alerts
            ),
            String::new(),
        ];
        match window {
            Some(w) => lines.extend(window_lines(w)),
            None => lines.push("waiting for the first window to close...".to_owned()),
        }
        lines.push(String::new());
        lines.push("alerts (newest last):".to_owned());
        lines.extend(alerts.iter().map(alert_line));
        let mut out = std::io::stdout().lock();
        // Home, then each line over the old one (clearing its rest), then clear below.
        let _ = write!(out, "\x1b[H");
        for line in lines {
            let _ = write!(out, "{line}\x1b[K\r\n");
        }
        let _ = write!(out, "\x1b[J");
        let _ = out.flush();
    }

    /// Starts the terminal screen (clears it).
    pub fn start(&self) {
        if let Screen::Terminal { .. } = self {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\x1b[2J\x1b[H");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::windows::UrlStats;
    use super::*;

    #[test]
    fn a_window_shows_its_top_urls_with_their_numbers() {
        let urls: Vec<UrlStats> = (0..12)
            .map(|i| UrlStats {
                url: format!("/page/{i}"),
                views: 1_000 - i * 10,
                users: 500,
                errors: i,
                p50_ms: 30,
                p99_ms: 950,
            })
            .collect();
        let w = ClosedWindow {
            start: 1_700_000_010_000,
            end: 1_700_000_020_000,
            urls,
        };
        let lines = window_lines(&w);
        assert_eq!(
            lines[0],
            "window 22:13:30-22:13:40 UTC: 11,340 views, 12 URLs, 66 errors (0.6%)"
        );
        assert_eq!(lines.len(), 2 + TOP);
        assert!(lines[2].contains("/page/0") && lines[2].contains("1,000"));
        assert!(lines[2].ends_with("30      950"), "{}", lines[2]);
        let a = Alert {
            window_start: w.start,
            window_end: w.end,
            url: "/cart".into(),
            views: 1_096,
            errors: 342,
            error_rate: 342.0 / 1_096.0,
        };
        assert_eq!(
            alert_line(&a),
            "alert 22:13:30-22:13:40 UTC: /cart error rate 31.2% (342 errors in 1,096 views)"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
