//! The record layer's error type: every malformed input maps to a variant carrying a byte offset.
//!
//! Offsets are relative to the start of the batch (its `baseOffset` field) for header and
//! uncompressed record errors, and to the start of the decompressed record area for errors found
//! inside a compressed batch's records (`in_decompressed` says which). [`RecordBatches`]
//! re-bases batch offsets onto the fetched blob.
//!
//! [`RecordBatches`]: super::RecordBatches

use super::Compression;

/// Result type of the record layer.
pub type Result<T, E = RecordError> = std::result::Result<T, E>;

/// What went wrong while reading or writing a record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The input ends before a field or length-delimited area does.
    #[error("truncated input at byte {offset}: need {needed} bytes, {available} available")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The batch's magic byte is not 2 (v0/v1 message sets are not supported; Kafka 4 dropped them).
    #[error("unsupported record batch magic {magic} at byte {offset} (only v2 is supported)")]
    UnsupportedMagic {
        /// Offset of the magic byte.
        offset: usize,
        /// The magic value found.
        magic: i8,
    },
    /// The `batchLength` field is smaller than a v2 header or negative.
    #[error("invalid batch length {length} at byte {offset}")]
    InvalidBatchLength {
        /// Offset of the length field.
        offset: usize,
        /// The declared length.
        length: i32,
    },
    /// The stored CRC32C does not match the batch contents.
    #[error(
        "CRC mismatch in batch at byte {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        /// Offset of the CRC field.
        offset: usize,
        /// CRC found in the header.
        stored: u32,
        /// CRC computed over the batch.
        computed: u32,
    },
    /// The attributes name a compression codec that does not exist.
    #[error("unknown compression codec {codec} at byte {offset}")]
    UnknownCompression {
        /// Offset of the attributes field.
        offset: usize,
        /// The codec number (attributes & 0x7).
        codec: u8,
    },
    /// A varint runs past its maximum width or past the end of its record.
    #[error("malformed varint at byte {offset}{}", ctx(*in_decompressed))]
    MalformedVarint {
        /// Offset of the first byte of the varint.
        offset: usize,
        /// Whether the offset is in the decompressed record area.
        in_decompressed: bool,
    },
    /// A length field is negative (other than -1 for null) or points past the end of its record.
    #[error("invalid length {length} at byte {offset}{}", ctx(*in_decompressed))]
    InvalidLength {
        /// Offset of the length field.
        offset: usize,
        /// The declared length.
        length: i64,
        /// Whether the offset is in the decompressed record area.
        in_decompressed: bool,
    },
    /// A record's fields do not fill exactly its declared length.
    #[error("record at byte {offset}{} declares {declared} bytes but its fields use {used}", ctx(*in_decompressed))]
    RecordLengthMismatch {
        /// Offset of the record's length varint.
        offset: usize,
        /// Declared record length.
        declared: usize,
        /// Bytes its fields actually use.
        used: usize,
        /// Whether the offset is in the decompressed record area.
        in_decompressed: bool,
    },
    /// The header's record count disagrees with the records present.
    #[error("record count mismatch at byte {offset}{}: header says {declared}, found {found}", ctx(*in_decompressed))]
    RecordCountMismatch {
        /// Where the disagreement was noticed (end of records or end of data).
        offset: usize,
        /// The header's record count.
        declared: i32,
        /// Records actually read.
        found: i64,
        /// Whether the offset is in the decompressed record area.
        in_decompressed: bool,
    },
    /// Bytes are left after the declared number of records.
    #[error("{remaining} unexpected bytes after the last declared record at byte {offset}{}", ctx(*in_decompressed))]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        remaining: usize,
        /// Whether the offset is in the decompressed record area.
        in_decompressed: bool,
    },
    /// The compressed payload could not be decompressed.
    #[error("{codec:?} decompression failed for batch records at byte {offset}: {reason}")]
    Decompression {
        /// Offset of the compressed payload in the batch.
        offset: usize,
        /// The codec in use.
        codec: Compression,
        /// What the codec reported.
        reason: String,
    },
    /// The decompressed payload would exceed the configured cap (a decompression bomb, or a cap set too low).
    #[error("{codec:?} batch at byte {offset} decompresses to more than the {limit}-byte cap")]
    DecompressedTooLarge {
        /// Offset of the compressed payload in the batch.
        offset: usize,
        /// The codec in use.
        codec: Compression,
        /// The cap in force.
        limit: usize,
    },
    /// A control record's key or value does not follow the control record schema.
    #[error("malformed control record at byte {offset}: {reason}")]
    MalformedControlRecord {
        /// Offset of the record (0 when the record's own position is unknown).
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The builder was asked for something the v2 format cannot represent.
    #[error("cannot encode batch: {reason}")]
    Encode {
        /// What cannot be represented.
        reason: &'static str,
    },
}

fn ctx(in_decompressed: bool) -> &'static str {
    if in_decompressed {
        " of the decompressed records"
    } else {
        ""
    }
}

impl RecordError {
    /// The byte offset the error points at, if it has one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            Self::Truncated { offset, .. }
            | Self::UnsupportedMagic { offset, .. }
            | Self::InvalidBatchLength { offset, .. }
            | Self::CrcMismatch { offset, .. }
            | Self::UnknownCompression { offset, .. }
            | Self::MalformedVarint { offset, .. }
            | Self::InvalidLength { offset, .. }
            | Self::RecordLengthMismatch { offset, .. }
            | Self::RecordCountMismatch { offset, .. }
            | Self::TrailingBytes { offset, .. }
            | Self::Decompression { offset, .. }
            | Self::DecompressedTooLarge { offset, .. }
            | Self::MalformedControlRecord { offset, .. } => Some(*offset),
            Self::Encode { .. } => None,
        }
    }

    /// Moves batch-relative offsets by `base` (used to report positions within a fetched blob).
    /// Offsets inside decompressed data are left alone: they are relative to that data.
    pub(crate) fn rebase(mut self, base: usize) -> Self {
        match &mut self {
            Self::Truncated { offset, .. }
            | Self::UnsupportedMagic { offset, .. }
            | Self::InvalidBatchLength { offset, .. }
            | Self::CrcMismatch { offset, .. }
            | Self::UnknownCompression { offset, .. }
            | Self::Decompression { offset, .. }
            | Self::DecompressedTooLarge { offset, .. }
            | Self::MalformedControlRecord { offset, .. } => *offset += base,
            Self::MalformedVarint {
                offset,
                in_decompressed,
            }
            | Self::InvalidLength {
                offset,
                in_decompressed,
                ..
            }
            | Self::RecordLengthMismatch {
                offset,
                in_decompressed,
                ..
            }
            | Self::RecordCountMismatch {
                offset,
                in_decompressed,
                ..
            }
            | Self::TrailingBytes {
                offset,
                in_decompressed,
                ..
            } => {
                if !*in_decompressed {
                    *offset += base;
                }
            }
            Self::Encode { .. } => {}
        }
        self
    }
}
