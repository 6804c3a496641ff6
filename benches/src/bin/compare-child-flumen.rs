//! One round of `compare consume` read with flumen alone, started by `compare`: a program of its
//! own so that its peak RSS is that of a program using this client, and no other.

fn main() {
    use flumen_benches::compare::{ClientKind, consume};
    consume::child_main(ClientKind::Flumen, consume::read_flumen);
}
