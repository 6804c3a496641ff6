//! Min-of-N timing for the examples that compare codec paths on a shared machine.

use std::time::{Duration, Instant};

/// The shortest of `reps` runs of `f`: on a loaded machine, the best approximation of the
/// uncontended time (a mean absorbs every preemption).
pub fn min_time(reps: usize, mut f: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
}
