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
//! keeps the work per record small and lets the CPU overlap records. Two fast paths carry the
//! common case — a 16-byte window for the five prefix fields when each varint is at most two
//! bytes, and, for header-less records, the value located from the record's end and checked in
//! one comparison — and anything else falls back to the general, field-by-field path, which
//! reports exact offsets.

use bytes::Bytes;

use super::error::{RecordError, Result};
use super::varint::{read_varint, read_varlong};

/// Iterator over the records of one batch. Yields `Err` once and then stops on malformed input.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    parent: &'a Bytes,
    pos: usize,
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
            parent,
            pos: start,
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

    #[cold]
    fn fail(&mut self, err: RecordError) -> Option<Result<RecordRef<'a>>> {
        self.done = true;
        Some(Err(err))
    }

    /// The record prefix when some varint in it is wider than 2 bytes, or the record sits in
    /// the last 16 bytes of the buffer.
    #[cold]
    #[inline(never)]
    fn read_prefix_slow(&self, start: usize) -> Result<Prefix> {
        let data: &[u8] = self.parent;
        let in_decompressed = self.in_decompressed;
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
    #[inline(never)]
    fn value_and_headers(
        &self,
        rec: &'a [u8],
        start: usize,
        body: usize,
        p: usize,
    ) -> Result<(Option<&'a [u8]>, usize, i32)> {
        let in_decompressed = self.in_decompressed;
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

    #[inline(always)]
    fn parse(&self, start: usize) -> Result<(RecordRef<'a>, usize)> {
        let data: &'a [u8] = self.parent;
        let in_decompressed = self.in_decompressed;
        // Common case first: length, attributes, timestamp delta, offset delta and key length
        // all within 1-2 byte varints, read from one 16-byte window with a single bounds check.
        let (len, body, attributes, ts_delta, offset_delta, key_len, p) =
            match read_prefix(data, start) {
                Some(prefix) => prefix,
                None => self.read_prefix_slow(start)?,
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
            None => self.value_and_headers(rec, start, body, p)?,
        };
        Ok((
            RecordRef {
                offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
                timestamp: self.base_timestamp.wrapping_add(ts_delta),
                attributes,
                key,
                value,
                headers: &rec[headers_start..end],
                header_count: header_count as u32,
                parent: self.parent,
            },
            end,
        ))
    }
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

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.done {
            if !self.done {
                self.done = true;
                if self.pos != self.parent.len() {
                    return Some(Err(RecordError::TrailingBytes {
                        offset: self.pos,
                        remaining: self.parent.len().saturating_sub(self.pos),
                        in_decompressed: self.in_decompressed,
                    }));
                }
            }
            return None;
        }
        match self.parse(self.pos) {
            Ok((rec, end)) => {
                self.pos = end;
                self.remaining -= 1;
                Some(Ok(rec))
            }
            Err(err) => {
                // Running out of bytes before the declared count is a count mismatch.
                let err = if self.pos == self.parent.len() {
                    RecordError::RecordCountMismatch {
                        offset: self.pos,
                        declared: self.declared,
                        found: i64::from(self.declared) - i64::from(self.remaining),
                        in_decompressed: self.in_decompressed,
                    }
                } else {
                    err
                };
                self.fail(err)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // The declared count is an upper bound only if the data is well formed; 0 is a safe low.
        (0, Some(self.remaining() + 1))
    }
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
