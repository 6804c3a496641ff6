//! `Records`: the iterator over a batch's records, yielding borrowed [`RecordRef`]s with no allocation.
//!
//! Each record (KIP-98):
//!
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//! keyLength varint | key | valueLength varint | value
//! headerCount varint | (headerKeyLength varint | headerKey | headerValueLength varint | headerValue)*
//! ```
//!
//! Every field is read within the record's declared length, and the fields must fill it
//! exactly. Headers are validated while the record is parsed, so iterating them cannot fail.
//!
//! Speed: the only dependency from one record to the next is the length varint, so the parser
//! keeps the work per record small and lets the CPU overlap records. `next` first tries the
//! common shape (`common_record`): a header-less record of at least 8 bytes whose varints are
//! 1 or 2 bytes. Its frame is checked once; the prefix fields come from a fixed 8-byte window;
//! the value is located from the record's end (it must stop on the zero header count) and its
//! length varint only compared. Anything else — headers, wide or over-long varints, null values,
//! malformed bytes — goes to the general, field-by-field path (`general_record`), which reads
//! the record again and reports exact offsets; the fast path never yields what the general path
//! would not. Both are free functions over values so the iterator's state stays in registers
//! (about 100 instructions per 100-byte record, callgrind, bench loop included).

use bytes::Bytes;

use super::error::{RecordError, Result};
use super::varint::{read_varint, read_varlong};

/// Iterator over the records of one batch. Yields `Err` once and then stops on malformed input.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    /// `parent`'s bytes, held directly so the hot loop keeps pointer and length in registers.
    data: &'a [u8],
    parent: &'a Bytes,
    /// The bytes not yet read: a suffix of `data`, so the next record needs no start check.
    rest: &'a [u8],
    remaining: u32,
    declared: i32,
    base_offset: i64,
    base_timestamp: i64,
    in_decompressed: bool,
    done: bool,
}

impl<'a> Records<'a> {
    pub(crate) fn new(
        parent: &'a Bytes,
        start: usize,
        count: i32,
        base_offset: i64,
        base_timestamp: i64,
        in_decompressed: bool,
    ) -> Self {
        Self {
            data: parent,
            parent,
            rest: parent.get(start..).unwrap_or_default(),
            remaining: count.max(0) as u32,
            declared: count,
            base_offset,
            base_timestamp,
            in_decompressed,
            done: false,
        }
    }

    /// Records not yet yielded, per the batch header.
    pub fn remaining(&self) -> usize {
        if self.done {
            0
        } else {
            self.remaining as usize
        }
    }
}

// The hot loop keeps the iterator's fields in registers only if no pointer to it escapes, so
// the out-of-line paths below take values and return values; `next` alone updates the state.
// The two small error constructors are inlined: built through a call's return slot, an error
// shares memory with the yielded record, and the compiler then keeps storing every record's
// fields there (~30% more instructions per record, measured with callgrind).

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>>;

    // Always inlined: called from a second loop in the same crate, LLVM outlined it, and the
    // record then went through memory on every call (2x the time per record, measured).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            // The end of the batch, or after an error (which zeroes `remaining`).
            if self.done {
                return None;
            }
            self.done = true;
            return trailing_bytes(self.rest.len(), self.data.len(), self.in_decompressed).map(Err);
        }
        let (rec, rest) = match common_record(self.rest) {
            Some(found) => found,
            None => match general_record(self.data, self.rest.len(), self.in_decompressed) {
                Ok(found) => found,
                Err(err) => {
                    let err = count_mismatch_or(
                        err,
                        self.rest.len(),
                        self.data.len(),
                        self.declared,
                        self.remaining,
                        self.in_decompressed,
                    );
                    self.done = true;
                    self.remaining = 0;
                    return Some(Err(err));
                }
            },
        };
        prefetch_ahead(self.rest, rest);
        self.rest = rest;
        self.remaining -= 1;
        Some(Ok(RecordRef {
            offset: self.base_offset.wrapping_add(i64::from(rec.offset_delta)),
            timestamp: self.base_timestamp.wrapping_add(rec.timestamp_delta),
            attributes: rec.attributes,
            key: rec.key,
            value: rec.value,
            headers: rec.headers,
            header_count: rec.header_count,
            parent: self.parent,
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // The declared count is an upper bound only if the data is well formed; 0 is a safe low.
        (0, Some(self.remaining() + 1))
    }
}

/// Asks for the bytes a few records ahead, guessing that the next records are about as long as
/// this one (`before` minus `after`).
///
/// Each record's position depends on the previous record's length, so on a batch that is not
/// in cache (one checked long before it is read, or never checked) the parser waits for one
/// memory access per record; with records of a KiB and more, that wait is the whole cost.
/// Hardware prefetchers follow sequential lines, not 1 KiB strides.
#[inline(always)]
fn prefetch_ahead(before: &[u8], after: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let stride = before.len() - after.len();
        // Records under two cache lines are covered by the hardware prefetcher.
        if stride >= 128 {
            let ahead = after.as_ptr().wrapping_add(4 * stride);
            // SAFETY: a prefetch is only a hint: it never faults and changes no program state,
            // whatever the address (`wrapping_add` keeps the pointer arithmetic defined).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (before, after);
}

/// The error for bytes left after the declared records, if any (`rest` of `len` unread).
#[cold]
#[inline(always)]
fn trailing_bytes(rest: usize, len: usize, in_decompressed: bool) -> Option<RecordError> {
    (rest != 0).then(|| RecordError::TrailingBytes {
        offset: len - rest,
        remaining: rest,
        in_decompressed,
    })
}

/// Running out of bytes before the declared count is a count mismatch; anything else is `err`.
#[cold]
#[inline(always)]
fn count_mismatch_or(
    err: RecordError,
    rest: usize,
    len: usize,
    declared: i32,
    remaining: u32,
    in_decompressed: bool,
) -> RecordError {
    if rest == 0 {
        RecordError::RecordCountMismatch {
            offset: len,
            declared,
            found: i64::from(declared) - i64::from(remaining),
            in_decompressed,
        }
    } else {
        err
    }
}

/// The fields of one record, relative to its batch.
struct Parsed<'a> {
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
}

/// The common record, read with one bounds check for its frame: every varint 1 or 2 bytes, at
/// least 8 bytes long, no headers. `None` means "not this shape" (or malformed): the general
/// path then reads it again and reports exactly what is wrong.
///
/// The length varint is decoded from one 2-byte load. Once the record slice is known to hold 8
/// bytes, the four prefix fields (attributes, two deltas, key length: at most 7 bytes) are read
/// from a fixed 8-byte window without further checks. The key and value are then checked against the
/// record's end, and a header-less record's value must end exactly one byte before it, on the
/// zero header count.
#[inline(always)]
fn common_record(rest: &[u8]) -> Option<(Parsed<'_>, &[u8])> {
    let h = u16::from_le_bytes(*rest.first_chunk::<2>()?);
    // A zigzag length is non-negative when bit 0 of its first byte is clear.
    let (len, n) = if h & 0x8081 == 0x0080 {
        (usize::from(((h >> 1) & 0x3f) | ((h >> 2) & 0x1fc0)), 2)
    } else if h & 0x81 == 0 {
        (usize::from((h & 0x7e) >> 1), 1)
    } else {
        return None;
    };
    let end = n + len;
    let rec = rest.get(n..end)?;
    let w: &[u8; 8] = rec.first_chunk()?;
    let attributes = w[0] as i8;
    // Window indices stay below 8 (1 + 2 + 2 + 2); masking with 7 lets the compiler drop checks.
    let (ts, n1) = varint2(w[1], w[2])?;
    let i = 1 + n1;
    let (off, n2) = varint2(w[i & 7], w[(i + 1) & 7])?;
    let i = i + n2;
    let (key_len, n3) = varint2(w[i & 7], w[(i + 1) & 7])?;
    let p = i + n3;
    let (key, p) = if key_len & 1 == 0 {
        let key_end = p + (key_len >> 1) as usize;
        (Some(rec.get(p..key_end)?), key_end)
    } else if key_len == 1 {
        (None, p)
    } else {
        return None;
    };
    // No headers: the record's last byte is a zero header count and the value fills the bytes
    // between its length varint and that count. So the value's length is known from where it
    // must end; the varint only has to match it (canonical 1- or 2-byte encoding).
    let last = rec.len() - 1;
    if rec[last] != 0 {
        return None;
    }
    let tail = rec.get(p..last)?;
    let room = tail.len();
    let head = u16::from_le_bytes(*tail.first_chunk::<2>()?);
    let width = if room <= 64 {
        // 1-byte varint: value length room - 1, at most 63.
        if usize::from(head & 0xff) != (room - 1) << 1 {
            return None;
        }
        1
    } else {
        // 2-byte varint: value length room - 2, from 63 up to 8191.
        if head & 0x8080 != 0x0080 {
            return None;
        }
        let raw = (head & 0x7f) | ((head >> 1) & 0x3f80);
        if usize::from(raw) != (room - 2) << 1 {
            return None;
        }
        2
    };
    let value = tail.get(width..)?;
    Some((
        Parsed {
            attributes,
            timestamp_delta: i64::from(unzigzag(ts)),
            offset_delta: unzigzag(off),
            key,
            value: Some(value),
            headers: &[],
            header_count: 0,
        },
        rest.get(end..)?,
    ))
}

/// A raw (still zigzagged) varint of 1 or 2 bytes from its first two bytes, with its width.
#[inline(always)]
fn varint2(b0: u8, b1: u8) -> Option<(u32, usize)> {
    if b0 < 0x80 {
        Some((u32::from(b0), 1))
    } else if b1 < 0x80 {
        Some((u32::from(b0 & 0x7f) | (u32::from(b1) << 7), 2))
    } else {
        None
    }
}

/// Any record, field by field, with the exact error and offset on malformed input.
#[inline(never)]
fn general_record(data: &[u8], rest: usize, in_decompressed: bool) -> Result<(Parsed<'_>, &[u8])> {
    let start = data.len() - rest;
    // Common case first: length, attributes, timestamp delta, offset delta and key length
    // all within 1-2 byte varints, read from one 16-byte window with a single bounds check.
    let (len, body, attributes, ts_delta, offset_delta, key_len, p) = match read_prefix(data, start)
    {
        Some(prefix) => prefix,
        None => read_prefix_slow(data, start, in_decompressed)?,
    };
    let end = body.wrapping_add(len as usize);
    if len < 0 || end > data.len() || p > end {
        return Err(RecordError::InvalidLength {
            offset: start,
            length: i64::from(len),
            in_decompressed,
        });
    }
    // Every read below is bounded by the record, not the batch.
    let rec = &data[..end];
    let (key, p) = if key_len >= 0 {
        let key_end = p + key_len as usize;
        match rec.get(p..key_end) {
            Some(k) => (Some(k), key_end),
            None => return Err(key_len_err(p, key_len, in_decompressed)),
        }
    } else if key_len == -1 {
        (None, p)
    } else {
        return Err(key_len_err(p, key_len, in_decompressed));
    };
    // Most records have no headers: the value then ends one byte before the record, whose
    // last byte is a zero header count. Check that layout first; anything else takes the
    // general path.
    let (value, headers_start, header_count) = match no_header_value(rec, p, end) {
        Some(value) => (value, end, 0),
        None => value_and_headers(rec, start, body, p, in_decompressed)?,
    };
    Ok((
        Parsed {
            attributes,
            timestamp_delta: ts_delta,
            offset_delta,
            key,
            value,
            headers: &rec[headers_start..end],
            header_count: header_count as u32,
        },
        &data[end..],
    ))
}

/// The record prefix when some varint in it is wider than 2 bytes, or the record sits in
/// the last 16 bytes of the buffer.
#[cold]
#[inline(never)]
fn read_prefix_slow(data: &[u8], start: usize, in_decompressed: bool) -> Result<Prefix> {
    let varint_err = |offset| RecordError::MalformedVarint {
        offset,
        in_decompressed,
    };
    let (len, body) = read_varint(data, start).ok_or_else(|| varint_err(start))?;
    let end = body.wrapping_add(len as usize);
    if len < 0 || end > data.len() {
        return Err(RecordError::InvalidLength {
            offset: start,
            length: i64::from(len),
            in_decompressed,
        });
    }
    let rec = &data[..end];
    let attributes = *rec.get(body).ok_or_else(|| varint_err(body))? as i8;
    let p = body + 1;
    let (ts_delta, p) = read_varlong(rec, p).ok_or_else(|| varint_err(p))?;
    let (offset_delta, p) = read_varint(rec, p).ok_or_else(|| varint_err(p))?;
    let (key_len, q) = read_varint(rec, p).ok_or_else(|| varint_err(p))?;
    Ok((len, body, attributes, ts_delta, offset_delta, key_len, q))
}

/// Value and headers in general: reads and validates every header.
fn value_and_headers(
    rec: &[u8],
    start: usize,
    body: usize,
    p: usize,
    in_decompressed: bool,
) -> Result<(Option<&[u8]>, usize, i32)> {
    let end = rec.len();
    let varint_err = |offset| RecordError::MalformedVarint {
        offset,
        in_decompressed,
    };
    let (value, p) = read_bytes(rec, p, in_decompressed)?;
    let (header_count, headers_start) = read_varint(rec, p).ok_or_else(|| varint_err(p))?;
    if header_count < 0 {
        return Err(RecordError::InvalidLength {
            offset: p,
            length: i64::from(header_count),
            in_decompressed,
        });
    }
    let mut p = headers_start;
    for _ in 0..header_count {
        let hk = p;
        let (klen, q) = read_varint(rec, p).ok_or_else(|| varint_err(p))?;
        if klen < 0 || q + klen as usize > end {
            return Err(RecordError::InvalidLength {
                offset: hk,
                length: i64::from(klen),
                in_decompressed,
            });
        }
        let (_, q) = read_bytes(rec, q + klen as usize, in_decompressed)?;
        p = q;
    }
    if p != end {
        return Err(RecordError::RecordLengthMismatch {
            offset: start,
            declared: end - body,
            used: p - body,
            in_decompressed,
        });
    }
    Ok((value, headers_start, header_count))
}

/// Record length, body start, attributes, timestamp delta, offset delta, key length, and the
/// position after the key length.
type Prefix = (i32, usize, i8, i64, i32, i32, usize);

/// Fast path for the record prefix: five fields from one 16-byte window, each varint at most
/// 2 bytes (records up to 8 KiB, deltas up to 8191). `None` sends the caller to the general path.
#[inline(always)]
fn read_prefix(data: &[u8], start: usize) -> Option<Prefix> {
    let w: &[u8; 16] = data.get(start..)?.first_chunk::<16>()?;
    let mut i = 0usize;
    let len = unzigzag(window_varint(w, &mut i)?);
    let body_at = i;
    let attributes = w[body_at & 15] as i8;
    i += 1;
    let ts = unzigzag(window_varint(w, &mut i)?);
    let off = unzigzag(window_varint(w, &mut i)?);
    let key_len = unzigzag(window_varint(w, &mut i)?);
    Some((
        len,
        start + body_at,
        attributes,
        i64::from(ts),
        off,
        key_len,
        start + i,
    ))
}

/// A varint of at most 2 bytes at `*i` in the window. Indices stay below 10; masking with 15
/// lets the compiler drop the bounds checks.
#[inline(always)]
fn window_varint(w: &[u8; 16], i: &mut usize) -> Option<u32> {
    let b0 = w[*i & 15];
    if b0 < 0x80 {
        *i += 1;
        return Some(u32::from(b0));
    }
    let b1 = w[(*i + 1) & 15];
    if b1 >= 0x80 {
        return None;
    }
    *i += 2;
    Some(u32::from(b0 & 0x7f) | (u32::from(b1) << 7))
}

#[inline(always)]
fn unzigzag(raw: u32) -> i32 {
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

#[cold]
fn key_len_err(p: usize, key_len: i32, in_decompressed: bool) -> RecordError {
    // `p` is past the key length varint; report the varint's own position when it is 1 byte
    // (the common case) — the general path reports exact positions.
    let width = if (-64..64).contains(&key_len) { 1 } else { 2 };
    RecordError::InvalidLength {
        offset: p - width,
        length: i64::from(key_len),
        in_decompressed,
    }
}

/// The value of a record without headers, when `rec` (ending at the record's end) has exactly
/// that layout from `p`: value length, value, a zero header count as the last byte.
#[inline(always)]
fn no_header_value(rec: &[u8], p: usize, end: usize) -> Option<Option<&[u8]>> {
    let last = end.checked_sub(1)?;
    if *rec.get(last)? != 0 {
        return None;
    }
    let (len, q) = read_varint(rec, p)?;
    if len >= 0 && q.wrapping_add(len as usize) == last {
        Some(rec.get(q..last))
    } else if len == -1 && q == last {
        Some(None)
    } else {
        None
    }
}

/// Reads a nullable length-prefixed byte string at `p`, bounded by `rec`.
#[inline(always)]
fn read_bytes(rec: &[u8], p: usize, in_decompressed: bool) -> Result<(Option<&[u8]>, usize)> {
    let (len, q) = read_varint(rec, p).ok_or(RecordError::MalformedVarint {
        offset: p,
        in_decompressed,
    })?;
    if len < 0 {
        if len == -1 {
            return Ok((None, q));
        }
    } else if let Some(bytes) = rec.get(q..q + len as usize) {
        return Ok((Some(bytes), q + len as usize));
    }
    Err(RecordError::InvalidLength {
        offset: p,
        length: i64::from(len),
        in_decompressed,
    })
}

/// One record, borrowed from its batch (or from the decompression buffer).
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    offset: i64,
    timestamp: i64,
    attributes: i8,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
    parent: &'a Bytes,
}

impl std::fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> RecordRef<'a> {
    /// Absolute offset: the batch's base offset plus the record's delta.
    #[inline]
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Absolute timestamp: the batch's base timestamp plus the record's delta. For
    /// `LogAppendTime` batches the meaningful time is the batch's `max_timestamp`.
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The record's own attributes byte (unused by Kafka today).
    #[inline]
    pub fn attributes(&self) -> i8 {
        self.attributes
    }

    /// The key, `None` when null.
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value, `None` when null (a tombstone).
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// The key as an owned `Bytes` sharing the batch's (or decompression buffer's) memory: no copy.
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.key.map(|k| self.parent.slice_ref(k))
    }

    /// The value as an owned `Bytes` sharing the batch's memory: no copy.
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.value.map(|v| self.parent.slice_ref(v))
    }

    /// Turns a slice borrowed from this record (a header key or value, say) into an owned
    /// `Bytes` without copying; `None` if `part` does not come from this record's buffer.
    pub fn to_bytes(&self, part: &'a [u8]) -> Option<Bytes> {
        let base = self.parent.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        let inside = at >= base && at + part.len() <= base + self.parent.len();
        inside.then(|| self.parent.slice_ref(part))
    }

    /// Number of headers.
    #[inline]
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }

    /// The headers in wire order, duplicates preserved.
    #[inline]
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            buf: self.headers,
            pos: 0,
            remaining: self.header_count,
        }
    }
}

/// Iterator over a record's headers: `(key, value)` with `value` `None` when null.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // Validated when the record was parsed; a failure here would mean a logic error, and we
        // end the iteration instead of panicking.
        let (key, p) = read_bytes(self.buf, self.pos, false).ok()?;
        let (value, p) = read_bytes(self.buf, p, false).ok()?;
        self.pos = p;
        self.remaining -= 1;
        Some((key.unwrap_or_default(), value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `v` as a zigzag varint padded with continuation bytes to at least `width` bytes
    /// (Kafka's readers accept such over-long encodings).
    fn varint(out: &mut Vec<u8>, v: i64, width: usize) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut n = 1;
        while z >= 0x80 || n < width {
            out.push(z as u8 | 0x80);
            z >>= 7;
            n += 1;
        }
        out.push(z as u8);
    }

    /// One header-less record: length, attributes, deltas, key, value, zero header count.
    fn record(
        ts: i64,
        off: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        vwidth: usize,
    ) -> Vec<u8> {
        let mut body = vec![0u8];
        varint(&mut body, ts, 1);
        varint(&mut body, off, 1);
        for (field, width) in [(key, 1), (value, vwidth)] {
            match field {
                Some(b) => {
                    varint(&mut body, b.len() as i64, width);
                    body.extend_from_slice(b);
                }
                None => varint(&mut body, -1, 1),
            }
        }
        body.push(0);
        let mut rec = Vec::new();
        varint(&mut rec, body.len() as i64, 1);
        rec.extend_from_slice(&body);
        rec
    }

    fn assert_same(fast: &Parsed<'_>, general: &Parsed<'_>) {
        assert_eq!(fast.attributes, general.attributes);
        assert_eq!(fast.timestamp_delta, general.timestamp_delta);
        assert_eq!(fast.offset_delta, general.offset_delta);
        assert_eq!(fast.key, general.key);
        assert_eq!(fast.value, general.value);
        assert_eq!(fast.header_count, general.header_count);
    }

    #[test]
    fn fast_path_reads_what_the_general_path_reads_at_every_varint_boundary() {
        let long_key = [7u8; 70];
        let keys: [Option<&[u8]>; 4] = [None, Some(b""), Some(b"key-1"), Some(&long_key)];
        let mut fast_hits = 0;
        for key in keys {
            for value_len in [0usize, 1, 6, 7, 62, 63, 64, 65, 100, 1024, 8190, 8191, 8192] {
                let value = vec![0xabu8; value_len];
                for (ts, off) in [(0i64, 0i64), (-64, 63), (-65, 64), (8191, -8192), (8192, 1)] {
                    let rec = record(ts, off, key, Some(&value), 1);
                    let (general, rest) = general_record(&rec, rec.len(), false).expect("valid");
                    assert!(rest.is_empty());
                    if let Some((fast, rest)) = common_record(&rec) {
                        assert!(rest.is_empty());
                        assert_same(&fast, &general);
                        fast_hits += 1;
                    }
                }
            }
        }
        // Every shape within the fast path's limits took it (value 1..8191 bytes, 2-byte
        // deltas, records under 8 KiB): not just the trivial ones.
        assert!(fast_hits > 100, "fast path taken {fast_hits} times");
    }

    #[test]
    fn over_long_and_null_values_leave_the_fast_path_but_still_decode() {
        let padded = record(1, 1, Some(b"k"), Some(b"12345"), 2);
        assert!(common_record(&padded).is_none());
        let (general, _) = general_record(&padded, padded.len(), false).expect("valid");
        assert_eq!(general.value, Some(&b"12345"[..]));

        let tombstone = record(1, 1, Some(b"k"), None, 1);
        assert!(common_record(&tombstone).is_none());
        let (general, _) = general_record(&tombstone, tombstone.len(), false).expect("valid");
        assert_eq!(general.value, None);
    }

    #[test]
    fn a_value_length_that_misses_the_header_count_is_not_taken_by_the_fast_path() {
        // Value length claims one byte less than the record holds: the last byte is then not
        // the header count, and the general path must report the mismatch.
        let mut rec = record(1, 1, Some(b"k"), Some(&[0u8; 100]), 1);
        // The value length (zigzag 200: 2 bytes) sits before the 100 value bytes and the count.
        let vpos = rec.len() - 1 - 100 - 2;
        assert_eq!(rec[vpos..vpos + 2], [0xc8, 0x01]);
        rec[vpos] -= 2; // 100 -> 99 (zigzag 200 -> 198)
        assert!(common_record(&rec).is_none());
        assert!(general_record(&rec, rec.len(), false).is_err());
    }
}
