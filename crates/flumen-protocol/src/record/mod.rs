//! The record layer: Kafka `RecordBatch` v2 as a zero-copy view over `Bytes`, and its builder.
//!
//! - [`RecordBatch`]: one batch; header fields read lazily at fixed offsets, CRC32C on demand.
//! - [`RecordBatches`]: the batches of a fetched blob, tolerating a partial last batch.
//! - [`Records`] / [`RecordRef`] / [`Headers`]: records and headers by reference, with no
//!   heap allocation per record.
//! - [`Decompressor`]: a reusable, capped buffer for gzip / snappy / lz4 / zstd batches.
//! - [`ControlRecord`]: transaction markers in control batches.
//! - [`BatchBuilder`]: encodes records straight into a batch buffer.
//!
//! Message formats v0/v1 are rejected with [`RecordError::UnsupportedMagic`] (Kafka 4 dropped them).
//!
//! ```
//! use flumen_protocol::record::{BatchBuilder, Compression, Decompressor, RecordBatches};
//!
//! let mut b = BatchBuilder::new(Compression::Lz4);
//! b.append(10, None, Some(b"a"), &[])?;
//! b.append(11, None, Some(b"b"), &[])?;
//! let blob = b.seal()?;
//! let mut scratch = Decompressor::new();
//! let mut values = Vec::new();
//! for batch in RecordBatches::new(blob) {
//!     let batch = batch?;
//!     batch.verify_crc()?;
//!     for record in batch.records(&mut scratch)? {
//!         values.push(record?.value().unwrap_or_default().to_vec());
//!     }
//! }
//! assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);
//! # Ok::<(), flumen_protocol::record::RecordError>(())
//! ```
//!
//! # References
//! KIP-98 (the v2 format), KIP-57 (LZ4 frame checksum), KIP-110 (zstd).

mod batch;
mod batches;
mod builder;
mod compression;
mod control;
mod crc;
mod error;
mod records;
mod varint;

pub use batch::{Compression, HEADER_LEN, LOG_OVERHEAD, RecordBatch, TimestampType};
pub use batches::RecordBatches;
pub use builder::{BatchBuilder, HeaderRef};
pub use compression::{DEFAULT_MAX_DECOMPRESSED_BYTES, Decompressor};
pub use control::{ControlRecord, ControlRecordType, EndTransactionMarker};
pub use error::{RecordError, Result};
pub use records::{Headers, RecordRef, Records};
