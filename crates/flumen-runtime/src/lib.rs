//! Thread-per-core stream processing over Kafka: Flink's DataStream model, with Kafka as the
//! distributed engine (Kafka Streams' task model).
//!
//! A [`Pipeline`] is built from [`Kafka`] sources, typed operators on a [`Stream`] and sinks.
//! It is cut into sub-topologies at every `key_by` (a repartition through a Kafka topic); a
//! *task* is one sub-topology over one partition number of its input topics. A [`Runtime`]
//! runs the pipeline on N worker threads, each with its own consumer (a member of the
//! application's consumer group) and producer; several processes with the same
//! `application.id` share the tasks through the group.
//!
//! ```no_run
//! use flumen_runtime::{Kafka, Pipeline, Runtime, RuntimeConfig, format::Utf8};
//!
//! let mut pipeline = Pipeline::new();
//! pipeline
//!     .source(Kafka::topic("input").format(Utf8))
//!     .map(|v| v.to_uppercase())
//!     .to("output", Utf8);
//! let config = RuntimeConfig::new("localhost:9092", "uppercase").workers(2);
//! let summary = Runtime::new(config, pipeline).run_until_end()?;
//! println!("{} records in", summary.records_in());
//! # Ok::<(), flumen_runtime::Error>(())
//! ```
//!
//! Delivery is at-least-once: a task's input offsets are committed only after the producer
//! has flushed every output derived from them (see `docs/DESIGN.md`).
#![warn(missing_docs)]

pub mod aggregate;
mod changelog;
pub mod codec;
mod context;
mod disk_store;
mod error;
pub mod format;
pub mod join;
mod latency;
mod metrics;
mod operator;
mod runtime;
mod serve;
pub mod state;
mod stream;
mod task;
pub mod testing;
pub mod time;
pub mod window;
mod worker;

pub use changelog::RestoreStats;
pub use context::RecordContext;
pub use error::{Error, Result};
pub use metrics::{
    HISTOGRAM_BOUNDS, Histogram, PartitionLag, Phase, RECENT_RECORDS, RecentRecord, RuntimeMetrics,
    SinkLatency, TaskMetrics, WorkerMetrics,
};
pub use operator::{CapturedRecord, Collector, Operator, OperatorMetrics};
pub use runtime::{Guarantee, RunSummary, Runtime, RuntimeConfig, ShutdownHandle, StateStore};
pub use stream::{
    Chain, DivertLink, FilterLink, FilterMapLink, FixedTopic, FlatMapLink, Identity, InspectLink,
    Kafka, KafkaSource, MapLink, OnError, Pipeline, ProcessLink, ProcessOut, Stream, TapLink,
    UserFn,
};
pub use task::{MemoryRecord, TaskCounters};

/// The README's Rust examples (the client's and the runtime's), compiled as this crate's doc
/// tests so that they keep up with the API: this crate sees both.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
