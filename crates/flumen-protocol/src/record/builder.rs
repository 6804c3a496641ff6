//! `BatchBuilder`: encodes records straight into one v2 batch buffer, compressing and checksumming at seal.
//!
//! Each record's length is computed arithmetically from its field widths before anything is
//! written, so every record is written once, front to back, with no length back-patching and no
//! intermediate record struct. The header is a 61-byte placeholder filled in by
//! [`BatchBuilder::seal`].

use bytes::{Bytes, BytesMut};

use super::batch::{
    ATTRIBUTES_OFFSET, CONTROL_BIT, CRC_OFFSET, Compression, HEADER_LEN, LOG_OVERHEAD,
    TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT, TimestampType,
};
use super::error::{RecordError, Result};

use super::varint::{varlong_len, zigzag64};

/// A record header to encode: key and nullable value.
pub type HeaderRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// Builds one v2 record batch.
///
/// ```
/// use flumen_protocol::record::{BatchBuilder, Compression, Decompressor, RecordBatch};
///
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[(b"h", Some(b"v"))])?;
/// let batch = RecordBatch::new(builder.seal()?)?;
/// batch.verify_crc()?;
/// let mut scratch = Decompressor::new();
/// let record = batch.records(&mut scratch)?.next().unwrap()?;
/// assert_eq!(record.value(), Some(&b"value"[..]));
/// # Ok::<(), flumen_protocol::record::RecordError>(())
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    compression: Compression,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    timestamp_type: TimestampType,
    first_timestamp: i64,
    max_timestamp: i64,
    count: i32,
}

/// Encoded width of a nullable length-prefixed byte string.
#[inline(always)]
fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varlong_len(b.len() as i64) + b.len(),
        None => 1,
    }
}

impl BatchBuilder {
    /// An empty batch using `compression`, with room for 16 KiB of records before growing.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 16 * 1024)
    }

    /// An empty batch with room for `capacity` bytes of (uncompressed) records.
    pub fn with_capacity(compression: Compression, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + capacity);
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            compression,
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            timestamp_type: TimestampType::CreateTime,
            first_timestamp: -1,
            max_timestamp: -1,
            count: 0,
        }
    }

    /// Sets the idempotence fields: producer id, epoch and the sequence of the first record.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of a transaction.
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Marks the batch as holding control records (brokers write these; useful for tests).
    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    /// Sets the base offset (producers leave it 0; the broker assigns offsets).
    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    /// Sets the partition leader epoch (-1 by default, as producers send it).
    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets the timestamp type attribute.
    pub fn timestamp_type(mut self, timestamp_type: TimestampType) -> Self {
        self.timestamp_type = timestamp_type;
        self
    }

    /// The codec `seal` will use.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Records appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if sealed now without compression: header plus records. For a
    /// compressed batch this is an upper bound in practice (the producer's `batch.size` check).
    pub fn size_in_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes that appending this record would add, so a producer can cut at `batch.size` first.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        let body = self.body_len(timestamp, key, value, headers);
        varlong_len(body as i64) + body
    }

    #[inline(always)]
    fn body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        let ts_delta = if self.count == 0 {
            0
        } else {
            timestamp.wrapping_sub(self.first_timestamp)
        };
        let mut body = 1
            + varlong_len(ts_delta)
            + varlong_len(i64::from(self.count))
            + bytes_len(key)
            + bytes_len(value)
            + varlong_len(headers.len() as i64);
        for (k, v) in headers {
            body += bytes_len(Some(k)) + bytes_len(*v);
        }
        body
    }

    /// Appends a record; returns its offset delta within the batch.
    #[inline]
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> Result<i32> {
        const MAX: usize = i32::MAX as usize;
        if self.count == i32::MAX {
            return Err(RecordError::Encode {
                reason: "more than i32::MAX records",
            });
        }
        if key.is_some_and(|k| k.len() > MAX)
            || value.is_some_and(|v| v.len() > MAX)
            || headers.len() > MAX
        {
            return Err(RecordError::Encode {
                reason: "field longer than i32::MAX bytes",
            });
        }
        let body = self.body_len(timestamp, key, value, headers);
        if body > MAX {
            return Err(RecordError::Encode {
                reason: "record longer than i32::MAX bytes",
            });
        }
        if self.count == 0 {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else if timestamp > self.max_timestamp {
            self.max_timestamp = timestamp;
        }
        let ts_delta = timestamp.wrapping_sub(self.first_timestamp);
        let delta = self.count;
        let total = varlong_len(body as i64) + body;
        self.buf.reserve(total);
        let len = self.buf.len();
        let spare = self.buf.spare_capacity_mut();
        // One check for the whole record; the writes below are then unchecked.
        assert!(spare.len() >= total, "reserve gave room for the record");
        let mut w = RawWriter {
            ptr: spare.as_mut_ptr().cast::<u8>(),
            #[cfg(debug_assertions)]
            end: total,
            pos: 0,
        };
        // SAFETY (every `RawWriter` call): `total` is `body_len` plus the width of `body`,
        // computed with `varlong_len` from the same values these calls write, so the calls write
        // exactly `total` bytes, all inside the `total` bytes of spare capacity checked above.
        unsafe {
            w.varint(body as i64);
            w.byte(0);
            w.varint(ts_delta);
            w.varint(i64::from(delta));
            w.nullable(key);
            w.nullable(value);
            w.varint(headers.len() as i64);
            for (k, v) in headers {
                w.nullable(Some(k));
                w.nullable(*v);
            }
        }
        let written = w.pos;
        debug_assert_eq!(written, total, "record size computed exactly");
        // SAFETY: the writer initialised the `written` bytes right after `len`, within capacity.
        unsafe { self.buf.set_len(len + written) };
        self.count += 1;
        Ok(delta)
    }

    /// Finishes the batch: compresses the records, writes the header, lengths and CRC.
    pub fn seal(self) -> Result<Bytes> {
        if self.count == 0 {
            return Err(RecordError::Encode {
                reason: "a batch needs at least one record",
            });
        }
        let mut out = if self.compression == Compression::None {
            self.buf
        } else {
            let records = &self.buf[HEADER_LEN..];
            let mut out = BytesMut::with_capacity(HEADER_LEN + records.len() / 2 + 64);
            out.resize(HEADER_LEN, 0);
            super::compression::compress(self.compression, records, &mut out)?;
            out
        };
        let batch_length =
            i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| RecordError::Encode {
                reason: "batch longer than i32::MAX bytes",
            })?;
        let mut attributes = i16::from(self.compression.id());
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= TIMESTAMP_TYPE_BIT;
        }
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attributes |= CONTROL_BIT;
        }
        let header = &mut out[..HEADER_LEN];
        header[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        header[8..12].copy_from_slice(&batch_length.to_be_bytes());
        header[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        header[16] = 2;
        header[21..23].copy_from_slice(&attributes.to_be_bytes());
        header[23..27].copy_from_slice(&(self.count - 1).to_be_bytes());
        header[27..35].copy_from_slice(&self.first_timestamp.to_be_bytes());
        header[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        header[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        header[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        header[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = super::crc::crc32c(&out[ATTRIBUTES_OFFSET..]);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
    }
}

/// Writes a record into reserved, uninitialised capacity through a raw pointer: the room for
/// the whole record is checked once (its exact size comes from `body_len`), not per byte.
struct RawWriter {
    ptr: *mut u8,
    #[cfg(debug_assertions)]
    end: usize,
    pos: usize,
}

impl RawWriter {
    /// # Safety
    /// `ptr + pos` must be inside the reserved room.
    #[inline(always)]
    unsafe fn byte(&mut self, b: u8) {
        #[cfg(debug_assertions)]
        assert!(self.pos < self.end);
        // SAFETY: the caller guarantees `pos` is inside the reservation.
        unsafe { self.ptr.add(self.pos).write(b) };
        self.pos += 1;
    }

    /// # Safety
    /// The `varlong_len(v)` bytes from `pos` must be inside the reserved room.
    #[inline(always)]
    unsafe fn varint(&mut self, v: i64) {
        let mut z = zigzag64(v);
        // SAFETY (all four): the encoding is `varlong_len(v)` bytes, which the caller reserved.
        if z < 0x80 {
            unsafe { self.byte(z as u8) };
            return;
        }
        if z < 0x4000 {
            // Two bytes (lengths up to 8 KiB, most deltas) in one store.
            let two = (z as u16 & 0x7f) | 0x80 | (((z >> 7) as u16) << 8);
            #[cfg(debug_assertions)]
            assert!(self.pos + 2 <= self.end);
            unsafe {
                self.ptr
                    .add(self.pos)
                    .cast::<[u8; 2]>()
                    .write_unaligned(two.to_le_bytes())
            };
            self.pos += 2;
            return;
        }
        while z >= 0x80 {
            unsafe { self.byte(z as u8 | 0x80) };
            z >>= 7;
        }
        unsafe { self.byte(z as u8) };
    }

    /// # Safety
    /// The `src.len()` bytes from `pos` must be inside the reserved room.
    #[inline(always)]
    unsafe fn bytes(&mut self, src: &[u8]) {
        #[cfg(debug_assertions)]
        assert!(self.pos + src.len() <= self.end);
        let (s, d, n) = (src.as_ptr(), self.ptr.wrapping_add(self.pos), src.len());
        // Keys are typically a few bytes: two overlapping word copies beat a `memcpy` call.
        // SAFETY: every read is within `src[..n]` and every write within `d[..n]`, in bounds per
        // the caller; `src` (caller memory) cannot overlap the builder's spare capacity, which
        // is borrowed mutably for the whole write.
        unsafe {
            if (8..=16).contains(&n) {
                let head = s.cast::<u64>().read_unaligned();
                let tail = s.add(n - 8).cast::<u64>().read_unaligned();
                d.cast::<u64>().write_unaligned(head);
                d.add(n - 8).cast::<u64>().write_unaligned(tail);
            } else if (4..8).contains(&n) {
                let head = s.cast::<u32>().read_unaligned();
                let tail = s.add(n - 4).cast::<u32>().read_unaligned();
                d.cast::<u32>().write_unaligned(head);
                d.add(n - 4).cast::<u32>().write_unaligned(tail);
            } else {
                std::ptr::copy_nonoverlapping(s, d, n);
            }
        }
        self.pos += src.len();
    }

    /// # Safety
    /// The encoded width of `b` (see `bytes_len`) from `pos` must be inside the reserved room.
    #[inline(always)]
    unsafe fn nullable(&mut self, b: Option<&[u8]>) {
        // SAFETY: `bytes_len(b)` bytes are reserved: the length varint, then the bytes.
        unsafe {
            match b {
                Some(b) => {
                    self.varint(b.len() as i64);
                    self.bytes(b);
                }
                None => self.byte(1), // zigzag(-1)
            }
        }
    }
}
