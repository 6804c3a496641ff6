//! Event time: watermark strategies, the time operators see, and a task's clock.
//!
//! A task tracks one clock per input: per source partition (the highest event time seen,
//! minus the allowed out-of-orderness), or, for a task reading a repartition topic, per
//! upstream task (the watermark that task last published into the topic as a marker record).
//! The task's watermark is the minimum over the inputs that are not idle, and never goes back.
//!
//! # Invariants
//! - A watermark `w` promises that no record with a timestamp `<= w` is still to come from
//!   that input, except late ones (Flink's definition: bounded out-of-orderness `d` gives
//!   `w = max_ts - d - 1`).
//! - The watermark advances after the record that moved it has gone through the chain, so a
//!   record is never late relative to itself.
//! - An input idle for longer than `idleness` stops holding the task back until it has a
//!   record (or marker) again; an input that was never heard from counts as idle after
//!   `idleness` from the task's start. Without `idleness`, a silent input holds the task back.
//! - A bounded run ends every source task with the watermark `i64::MAX`, which closes every
//!   window; a repartition carries it downstream like any other watermark.

use std::time::Duration;

use flumen_client::TopicPartition;

/// How a source derives watermarks from its records' event times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    pub(crate) out_of_orderness: i64,
    pub(crate) idleness: Option<i64>,
}

impl Default for Watermarks {
    /// In-order event time (no out-of-orderness allowed), no idleness.
    fn default() -> Self {
        Watermarks::bounded(Duration::ZERO)
    }
}

impl Watermarks {
    /// Records may arrive up to `d` later (in event time) than the newest record seen on their
    /// partition: the partition's watermark is `max_ts - d - 1`.
    pub fn bounded(d: Duration) -> Self {
        Watermarks {
            out_of_orderness: millis(d),
            idleness: None,
        }
    }

    /// A partition with no record for `d` (processing time) stops holding the watermark
    /// back until it has data again.
    pub fn idleness(mut self, d: Duration) -> Self {
        self.idleness = Some(millis(d).max(1));
        self
    }
}

/// A duration as the runtime's programs take it on their command line and in pipeline
/// files: `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 5s or 2m"))?;
    let unit = unit.trim_start();
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "{s:?} is not a duration such as 500ms, 5s or 2m (units: ms, s, m, h)"
        )),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The wall clock in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// Time as an operator sees it when it moves: the task's event-time watermark and the
/// processing time.
#[derive(Clone, Copy, Debug)]
pub struct Time<'a> {
    pub(crate) tp: &'a TopicPartition,
    pub(crate) watermark: i64,
    pub(crate) now: i64,
    pub(crate) publish: bool,
}

impl<'a> Time<'a> {
    /// The task's event-time watermark (`i64::MIN` before any, `i64::MAX` at the end of a
    /// bounded run).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Processing time, ms since the epoch.
    pub fn processing_time(&self) -> i64 {
        self.now
    }

    /// The task's partition number.
    pub fn partition(&self) -> i32 {
        self.tp.partition
    }

    /// The task's first input partition (the context of records an operator emits on its own,
    /// such as window results).
    pub fn topic_partition(&self) -> &'a TopicPartition {
        self.tp
    }

    /// Whether this is a moment to publish the watermark to other tasks (at the end of a
    /// fetched chunk or a timer tick, not after every record).
    pub fn publish(&self) -> bool {
        self.publish
    }
}

#[derive(Clone, Debug)]
struct Input {
    /// Highest event time (partition inputs) or watermark (upstream-task inputs) seen.
    max: i64,
    last_active: i64,
    idle: bool,
}

/// A task's watermark over its inputs.
#[derive(Debug)]
pub(crate) struct TaskClock {
    inputs: Vec<Input>,
    /// Subtracted from an input's `max` to give its watermark.
    lag: i64,
    idleness: Option<i64>,
    watermark: i64,
}

impl TaskClock {
    /// A clock over `inputs` inputs, started at processing time `now`. Partition inputs lag
    /// by the out-of-orderness (plus one); upstream-task inputs carry watermarks as they are.
    pub(crate) fn new(inputs: usize, strategy: &Watermarks, partitions: bool, now: i64) -> Self {
        TaskClock {
            inputs: vec![
                Input {
                    max: i64::MIN,
                    last_active: now,
                    idle: false,
                };
                inputs.max(1)
            ],
            lag: if partitions {
                strategy.out_of_orderness.saturating_add(1)
            } else {
                0
            },
            idleness: strategy.idleness,
            watermark: i64::MIN,
        }
    }

    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Adds an input (a partition first seen after the task started: pattern sources).
    pub(crate) fn add_input(&mut self, now: i64) -> usize {
        self.inputs.push(Input {
            max: i64::MIN,
            last_active: now,
            idle: false,
        });
        self.inputs.len() - 1
    }

    pub(crate) fn inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Input `i` saw event time (or watermark) `t` at processing time `now`; returns the new
    /// task watermark if it advanced.
    #[inline]
    pub(crate) fn observe(&mut self, i: usize, t: i64, now: i64) -> Option<i64> {
        let input = &mut self.inputs[i];
        input.last_active = now;
        let woke = std::mem::replace(&mut input.idle, false);
        if t > input.max {
            input.max = t;
        } else if !woke {
            return None;
        }
        self.recompute()
    }

    /// Marks inputs silent for longer than `idleness` as idle; returns the new watermark if
    /// that let it advance.
    pub(crate) fn check_idle(&mut self, now: i64) -> Option<i64> {
        let idleness = self.idleness?;
        let mut changed = false;
        for input in &mut self.inputs {
            if !input.idle && now.saturating_sub(input.last_active) >= idleness {
                input.idle = true;
                changed = true;
            }
        }
        if changed { self.recompute() } else { None }
    }

    /// The end of a bounded input: everything closes.
    pub(crate) fn end(&mut self) -> Option<i64> {
        for input in &mut self.inputs {
            input.max = i64::MAX;
        }
        (self.watermark < i64::MAX).then(|| {
            self.watermark = i64::MAX;
            i64::MAX
        })
    }

    fn recompute(&mut self) -> Option<i64> {
        let lag = self.lag;
        let min = self
            .inputs
            .iter()
            .filter(|i| !i.idle)
            .map(|i| {
                if i.max == i64::MAX {
                    i64::MAX
                } else {
                    i.max.saturating_sub(lag)
                }
            })
            .min()?;
        (min > self.watermark).then(|| {
            self.watermark = min;
            min
        })
    }
}

/// The header of a watermark marker in a repartition topic: the upstream task's partition
/// number (4 bytes) and its watermark (8 bytes), big-endian.
pub(crate) const MARKER_HEADER: &[u8] = b"flumen.watermark";

pub(crate) fn encode_marker(task: i32, watermark: i64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&task.to_be_bytes());
    out[4..].copy_from_slice(&watermark.to_be_bytes());
    out
}

pub(crate) fn decode_marker(value: &[u8]) -> Option<(i32, i64)> {
    let task = i32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    let wm = i64::from_be_bytes(value.get(4..12)?.try_into().ok()?);
    Some((task, wm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_lags_the_newest_record() {
        let mut c = TaskClock::new(1, &Watermarks::bounded(Duration::from_millis(100)), true, 0);
        assert_eq!(c.observe(0, 1_000, 0), Some(899));
        assert_eq!(
            c.observe(0, 950, 0),
            None,
            "an older record does not move it"
        );
        assert_eq!(c.observe(0, 1_001, 0), Some(900));
    }

    #[test]
    fn the_slowest_input_holds_the_task_back_until_idle() {
        let strategy = Watermarks::bounded(Duration::ZERO).idleness(Duration::from_millis(50));
        let mut c = TaskClock::new(2, &strategy, true, 0);
        assert_eq!(c.observe(0, 500, 10), None, "input 1 has seen nothing");
        assert_eq!(c.check_idle(40), None, "not idle yet");
        assert_eq!(
            c.check_idle(55),
            Some(499),
            "input 1 idle (never heard from)"
        );
        assert_eq!(c.observe(0, 600, 70), Some(599));
        // Input 1 comes back behind: it holds the task again, but never moves it back.
        assert_eq!(c.observe(1, 100, 80), None);
        assert_eq!(c.watermark(), 599);
        assert_eq!(c.observe(0, 700, 90), None, "input 1 is now the minimum");
        assert_eq!(c.observe(1, 650, 95), Some(649));
    }

    #[test]
    fn without_idleness_a_silent_input_holds_forever() {
        let mut c = TaskClock::new(2, &Watermarks::default(), true, 0);
        assert_eq!(c.observe(0, 500, 0), None);
        assert_eq!(c.check_idle(i64::MAX), None);
        assert_eq!(c.end(), Some(i64::MAX));
        assert_eq!(c.end(), None);
    }

    #[test]
    fn upstream_watermarks_are_taken_as_they_are() {
        let mut c = TaskClock::new(2, &Watermarks::bounded(Duration::from_secs(5)), false, 0);
        assert_eq!(c.observe(0, 1_000, 0), None);
        assert_eq!(c.observe(1, 2_000, 0), Some(1_000));
        assert_eq!(c.observe(0, i64::MAX, 0), Some(2_000));
        assert_eq!(c.observe(1, i64::MAX, 0), Some(i64::MAX));
    }

    #[test]
    fn markers_round_trip() {
        let m = encode_marker(5, -3);
        assert_eq!(decode_marker(&m), Some((5, -3)));
        assert_eq!(decode_marker(&m[..11]), None);
    }
}
