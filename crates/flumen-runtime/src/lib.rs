//! Thread-per-core stream processing over Kafka (Flink's DataStream model, Kafka as the
//! distributed engine).
//!
//! Empty for now: the pipeline API, windows, state and exactly-once delivery land here once
//! the producer and consumer in `flumen-client` are done. See `docs/DESIGN.md`.
#![warn(missing_docs)]
