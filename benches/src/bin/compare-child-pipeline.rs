//! One run of `compare pipeline` (the runtime, or the hand-written loop), started by `compare`:
//! a program of its own so that CPU time and peak RSS are that engine's alone.

fn main() {
    flumen_benches::compare::pipeline::child_main();
}
