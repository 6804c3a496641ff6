//! A request frame as a chain of `Bytes`: the encoded fields in one buffer, large payloads
//! (record batches) referenced instead of copied, ready for a vectored write.
//!
//! kafka-protocol encodes a `Bytes` field with `put_slice`. Our writer watches for
//! slices that *are* one of the payloads it was given (same address and length) and, instead
//! of copying them, closes the current segment and links the payload's `Bytes` (a reference
//! count increment). Everything else goes into one buffer allocated once at its final size.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

use crate::error::{Error, Result};
use crate::frame::{LENGTH_PREFIX_BYTES, frame_len_prefix};
use crate::header::{api_name, check_version};
use crate::messages::{Encodable, Request, RequestHeader, StrBytes};

/// Payloads shorter than this are copied: an extra iovec costs more than the copy.
pub const MIN_LINKED_PAYLOAD: usize = 1024;

/// An encoded request frame (length prefix included) in one or more segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// Kept apart so a one-piece frame needs no `Vec` allocation.
    first: Bytes,
    rest: Vec<Bytes>,
    len: usize,
}

impl RequestFrame {
    /// A frame in one piece.
    pub fn contiguous(bytes: Bytes) -> Self {
        RequestFrame {
            len: bytes.len(),
            first: bytes,
            rest: Vec::new(),
        }
    }

    /// Total length in bytes, length prefix included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty (never, for an encoded request).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many segments the frame has.
    pub fn segment_count(&self) -> usize {
        1 + self.rest.len()
    }

    /// The segments, in wire order.
    pub fn segments(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// The segments, in wire order.
    pub fn into_segments(self) -> impl Iterator<Item = Bytes> {
        std::iter::once(self.first).chain(self.rest)
    }

    /// The whole frame copied into one buffer (for tests and logging).
    pub fn to_contiguous(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len);
        for s in self.segments() {
            out.put_slice(s);
        }
        out.freeze()
    }
}

/// Encodes `request` as one frame whose `payloads` (e.g. a produce request's record batches)
/// are linked, not copied, when they are at least [`MIN_LINKED_PAYLOAD`] bytes long.
pub fn encode_request_chained<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<&StrBytes>,
    payloads: &[Bytes],
) -> Result<RequestFrame> {
    check_version::<R>(version)?;
    let api = api_name::<R>();
    let encode_err = |e: &dyn std::fmt::Display| Error::Encode {
        api,
        version,
        message: e.to_string(),
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.cloned());
    let header_version = R::header_version(version);
    let size = header
        .compute_size(header_version)
        .map_err(|e| encode_err(&e))?
        + request.compute_size(version).map_err(|e| encode_err(&e))?;
    let prefix = frame_len_prefix(size)?;
    let linked: usize = payloads
        .iter()
        .filter(|p| p.len() >= MIN_LINKED_PAYLOAD)
        .map(Bytes::len)
        .sum();
    let total = LENGTH_PREFIX_BYTES + size;
    let mut writer = ChainWriter {
        current: BytesMut::with_capacity(total.saturating_sub(linked)),
        first: None,
        rest: Vec::new(),
        payloads,
    };
    writer.put_i32(prefix);
    header
        .encode(&mut writer, header_version)
        .map_err(|e| encode_err(&e))?;
    request
        .encode(&mut writer, version)
        .map_err(|e| encode_err(&e))?;
    let frame = writer.finish();
    if frame.len != total {
        return Err(Error::Encode {
            api,
            version,
            message: format!(
                "computed size {size} but wrote {}",
                frame.len - LENGTH_PREFIX_BYTES
            ),
        });
    }
    Ok(frame)
}

/// A `BufMut` that links known payloads instead of copying them.
struct ChainWriter<'a> {
    current: BytesMut,
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    payloads: &'a [Bytes],
}

impl ChainWriter<'_> {
    fn push(&mut self, segment: Bytes) {
        match self.first {
            None => self.first = Some(segment),
            Some(_) => self.rest.push(segment),
        }
    }

    fn finish(mut self) -> RequestFrame {
        if !self.current.is_empty() || self.first.is_none() {
            let tail = self.current.split().freeze();
            self.push(tail);
        }
        let first = self.first.unwrap_or_default();
        let len = first.len() + self.rest.iter().map(Bytes::len).sum::<usize>();
        RequestFrame {
            first,
            rest: self.rest,
            len,
        }
    }

    fn payload_for(&self, src: &[u8]) -> Option<&Bytes> {
        if src.len() < MIN_LINKED_PAYLOAD {
            return None;
        }
        self.payloads
            .iter()
            .find(|p| p.as_ptr() == src.as_ptr() && p.len() == src.len())
    }
}

// SAFETY: every method forwards to the inner `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` only adds segments before the inner buffer's uninitialised tail.
unsafe impl BufMut for ChainWriter<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut()`, which is the inner buffer's.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some(payload) = self.payload_for(src).cloned() {
            if !self.current.is_empty() {
                let head = self.current.split().freeze();
                self.push(head);
            }
            self.push(payload);
        } else {
            self.current.put_slice(src);
        }
    }
}

impl ByteBufMut for ChainWriter<'_> {
    // Gaps (seek/range) are only used by kafka-protocol's record encoder, never by message
    // encoders; they act on the current segment.
    fn offset(&self) -> usize {
        self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        self.current.resize(offset, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.current[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::encode_request;
    use crate::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use crate::messages::{ProduceRequest, TopicName};

    fn produce(records: &[Bytes]) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_data(
                        records
                            .iter()
                            .enumerate()
                            .map(|(i, r)| {
                                PartitionProduceData::default()
                                    .with_index(i as i32)
                                    .with_records(Some(r.clone()))
                            })
                            .collect(),
                    ),
            ])
    }

    #[test]
    fn chained_frame_equals_contiguous_and_links_large_payloads() {
        let big = Bytes::from(vec![7u8; 64 * 1024]);
        let small = Bytes::from(vec![9u8; 100]);
        let other_big = Bytes::from(vec![5u8; 4096]);
        let payloads = [big.clone(), small.clone(), other_big.clone()];
        let request = produce(&payloads);
        for version in [3, 8, 9, 13] {
            let chained = encode_request_chained(&request, version, 5, None, &payloads).unwrap();
            let contiguous = encode_request(&request, version, 5, None).unwrap();
            assert_eq!(chained.to_contiguous(), contiguous.freeze(), "v{version}");
            // The two large batches are the caller's own buffers, not copies.
            let linked: Vec<_> = chained.segments().map(|s| s.as_ptr()).collect();
            assert!(linked.contains(&big.as_ptr()));
            assert!(linked.contains(&other_big.as_ptr()));
            assert!(!linked.contains(&small.as_ptr()));
            // head, big, middle, other_big, and from v9 (flexible) a tail of tagged fields.
            let expected = if version >= 9 { 5 } else { 4 };
            assert_eq!(chained.segment_count(), expected, "v{version}");
        }
    }

    #[test]
    fn without_payloads_the_frame_is_one_segment() {
        let request = produce(&[Bytes::from(vec![1u8; 2048])]);
        let frame = encode_request_chained(&request, 9, 1, None, &[]).unwrap();
        assert_eq!(frame.segment_count(), 1);
    }
}
