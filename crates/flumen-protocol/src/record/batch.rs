//! `RecordBatch`: a zero-copy view of one v2 record batch, header fields read lazily at fixed offsets.
//!
//! Layout (KIP-98), all big-endian:
//!
//! ```text
//!  0 baseOffset i64        8 batchLength i32     12 partitionLeaderEpoch i32
//! 16 magic i8             17 crc u32 (CRC32C of bytes 21..end)
//! 21 attributes i16       23 lastOffsetDelta i32 27 baseTimestamp i64
//! 35 maxTimestamp i64     43 producerId i64      51 producerEpoch i16
//! 53 baseSequence i32     57 recordCount i32     61 records...
//! ```
//!
//! Invariant kept by [`RecordBatch::new`]: the view holds exactly `12 + batchLength` bytes,
//! at least [`HEADER_LEN`], with magic 2 and a known codec, so every accessor is infallible.

use bytes::Bytes;

use super::compression::Decompressor;
use super::error::{RecordError, Result};
use super::records::Records;

/// Bytes before the records: the whole v2 batch header.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the part of a batch not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;

pub(crate) const BATCH_LENGTH_OFFSET: usize = 8;
pub(crate) const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
pub(crate) const MAGIC_OFFSET: usize = 16;
pub(crate) const CRC_OFFSET: usize = 17;
pub(crate) const ATTRIBUTES_OFFSET: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub(crate) const BASE_TIMESTAMP_OFFSET: usize = 27;
pub(crate) const MAX_TIMESTAMP_OFFSET: usize = 35;
pub(crate) const PRODUCER_ID_OFFSET: usize = 43;
pub(crate) const PRODUCER_EPOCH_OFFSET: usize = 51;
pub(crate) const BASE_SEQUENCE_OFFSET: usize = 53;
pub(crate) const RECORD_COUNT_OFFSET: usize = 57;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub(crate) const TRANSACTIONAL_BIT: i16 = 0x10;
pub(crate) const CONTROL_BIT: i16 = 0x20;
pub(crate) const DELETE_HORIZON_BIT: i16 = 0x40;

/// The compression codec of a batch (attributes bits 0–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Records stored as is.
    #[default]
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Snappy, raw or in the xerial framing the Java client writes.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec number in the attributes field.
    pub fn id(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// The codec for an attributes codec number, `None` if unknown.
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }
}

/// What a batch's timestamps mean (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// Set by the producer when the record was created.
    #[default]
    CreateTime,
    /// Set by the broker when the batch was appended to the log.
    LogAppendTime,
}

/// A view of one v2 record batch over shared bytes.
///
/// Cloning is cheap (a reference count). Header accessors read at fixed offsets; nothing is
/// decoded until asked for.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    buf: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("len", &self.buf.len())
            .field("records", &self.record_count())
            .field("compression", &self.compression())
            .field("transactional", &self.is_transactional())
            .field("control", &self.is_control())
            .finish()
    }
}

impl RecordBatch {
    /// Views the batch at the front of `buf`. Bytes after it are ignored
    /// ([`encoded_len`](Self::encoded_len) says how many the batch took).
    ///
    /// Checks the framing only: length, magic 2 and a known codec. The CRC is checked by
    /// [`verify_crc`](Self::verify_crc), the records when they are iterated.
    pub fn new(buf: Bytes) -> Result<Self> {
        let total = Self::frame_len(&buf)?;
        Ok(Self {
            buf: if total == buf.len() {
                buf
            } else {
                buf.slice(..total)
            },
        })
    }

    /// Wraps bytes already checked by [`frame_len`](Self::frame_len), exactly one batch long.
    pub(crate) fn from_validated(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Validates the header at the front of `buf` and returns the batch's total length.
    pub(crate) fn frame_len(buf: &[u8]) -> Result<usize> {
        if buf.len() < LOG_OVERHEAD {
            return Err(RecordError::Truncated {
                offset: 0,
                needed: LOG_OVERHEAD,
                available: buf.len(),
            });
        }
        if let Some(&magic) = buf.get(MAGIC_OFFSET) {
            let magic = magic as i8;
            if magic != 2 {
                return Err(RecordError::UnsupportedMagic {
                    offset: MAGIC_OFFSET,
                    magic,
                });
            }
        }
        let length = i32::from_be_bytes(read_array(buf, BATCH_LENGTH_OFFSET));
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(RecordError::InvalidBatchLength {
                offset: BATCH_LENGTH_OFFSET,
                length,
            });
        }
        let total = LOG_OVERHEAD + length as usize;
        if buf.len() < total {
            return Err(RecordError::Truncated {
                offset: 0,
                needed: total,
                available: buf.len(),
            });
        }
        let attributes = i16::from_be_bytes(read_array(buf, ATTRIBUTES_OFFSET));
        let codec = (attributes & COMPRESSION_MASK) as u8;
        if Compression::from_id(codec).is_none() {
            return Err(RecordError::UnknownCompression {
                offset: ATTRIBUTES_OFFSET,
                codec,
            });
        }
        Ok(total)
    }

    #[inline(always)]
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        read_array(&self.buf, at)
    }

    /// The whole batch, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// Gives back the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }

    /// Bytes the batch occupies on the wire (`12 + batchLength`).
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        i64::from_be_bytes(self.array(0))
    }

    /// The `batchLength` field: bytes after it.
    pub fn batch_length(&self) -> i32 {
        i32::from_be_bytes(self.array(BATCH_LENGTH_OFFSET))
    }

    /// Leader epoch the broker stamped on the batch (-1 from producers).
    pub fn partition_leader_epoch(&self) -> i32 {
        i32::from_be_bytes(self.array(PARTITION_LEADER_EPOCH_OFFSET))
    }

    /// Format version; always 2 for a constructed view.
    pub fn magic(&self) -> i8 {
        self.buf[MAGIC_OFFSET] as i8
    }

    /// The stored CRC32C.
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(self.array(CRC_OFFSET))
    }

    /// The raw attributes field.
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(self.array(ATTRIBUTES_OFFSET))
    }

    /// The batch's compression codec.
    pub fn compression(&self) -> Compression {
        // `new` rejected unknown codecs.
        Compression::from_id((self.attributes() & COMPRESSION_MASK) as u8).unwrap_or_default()
    }

    /// Whether timestamps are producer create times or broker append times.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch was written inside a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers) instead of user data.
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }

    /// Whether log compaction set a delete horizon (`baseTimestamp` then holds it).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & DELETE_HORIZON_BIT != 0
    }

    /// Offset delta of the last record.
    pub fn last_offset_delta(&self) -> i32 {
        i32::from_be_bytes(self.array(LAST_OFFSET_DELTA_OFFSET))
    }

    /// Offset of the last record (which may have been compacted away).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }

    /// The offset after this batch: where the next fetch starts.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Timestamp the record timestamp deltas are relative to.
    pub fn base_timestamp(&self) -> i64 {
        i64::from_be_bytes(self.array(BASE_TIMESTAMP_OFFSET))
    }

    /// Largest record timestamp (the append time for `LogAppendTime` batches).
    pub fn max_timestamp(&self) -> i64 {
        i64::from_be_bytes(self.array(MAX_TIMESTAMP_OFFSET))
    }

    /// Producer id (-1 when not idempotent).
    pub fn producer_id(&self) -> i64 {
        i64::from_be_bytes(self.array(PRODUCER_ID_OFFSET))
    }

    /// Producer epoch (-1 when not idempotent).
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes(self.array(PRODUCER_EPOCH_OFFSET))
    }

    /// Sequence number of the first record (-1 when not idempotent).
    pub fn base_sequence(&self) -> i32 {
        i32::from_be_bytes(self.array(BASE_SEQUENCE_OFFSET))
    }

    /// Number of records the header declares.
    pub fn record_count(&self) -> i32 {
        i32::from_be_bytes(self.array(RECORD_COUNT_OFFSET))
    }

    /// The bytes after the header: the records, or their compressed form.
    pub fn payload(&self) -> &[u8] {
        &self.buf[HEADER_LEN..]
    }

    /// Checks the stored CRC32C against the batch contents (one pass over the batch).
    pub fn verify_crc(&self) -> Result<()> {
        let computed = super::crc::crc32c(&self.buf[ATTRIBUTES_OFFSET..]);
        let stored = self.crc();
        if computed == stored {
            Ok(())
        } else {
            Err(RecordError::CrcMismatch {
                offset: CRC_OFFSET,
                stored,
                computed,
            })
        }
    }

    /// Checks the CRC ([`verify_crc`](Self::verify_crc)), then iterates the records
    /// ([`records`](Self::records)): the way to read an untrusted batch. Checking each batch just
    /// before reading it leaves the batch in cache for the parse; checking every batch of a
    /// large fetch first reads each one from memory twice.
    pub fn verified_records<'a>(&'a self, scratch: &'a mut Decompressor) -> Result<Records<'a>> {
        self.verify_crc()?;
        self.records(scratch)
    }

    /// Iterates the records. Uncompressed batches are read in place; compressed ones are first
    /// decompressed into `scratch`, whose buffer is reused from batch to batch and capped.
    ///
    /// The CRC is not checked here: call [`verify_crc`](Self::verify_crc) first for untrusted input.
    pub fn records<'a>(&'a self, scratch: &'a mut Decompressor) -> Result<Records<'a>> {
        let count = self.record_count();
        if count < 0 {
            return Err(RecordError::RecordCountMismatch {
                offset: RECORD_COUNT_OFFSET,
                declared: count,
                found: 0,
                in_decompressed: false,
            });
        }
        let (base_offset, base_timestamp) = (self.base_offset(), self.base_timestamp());
        match self.compression() {
            Compression::None => Ok(Records::new(
                &self.buf,
                HEADER_LEN,
                count,
                base_offset,
                base_timestamp,
                false,
            )),
            codec => {
                let data = scratch.decompress(codec, self.payload(), HEADER_LEN)?;
                Ok(Records::new(
                    data,
                    0,
                    count,
                    base_offset,
                    base_timestamp,
                    true,
                ))
            }
        }
    }
}

/// Reads `N` bytes at `at`. Callers have checked the length; a short buffer yields zeros
/// rather than a panic.
#[inline(always)]
pub(crate) fn read_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}
