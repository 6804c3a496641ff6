//! Benchmarks for Flumen: criterion micro-benchmarks (`benches/benches/`) and the
//! comparison harness against other Kafka clients.

pub mod compare;
pub mod record_data;
pub mod timing;
