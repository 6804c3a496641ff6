//! Kafka's 4-byte big-endian length-prefixed frames, with a hard size cap checked before allocating.
//!
//! [`FrameDecoder`] is a pure function over a `BytesMut` that may hold any prefix of the stream:
//! it returns a frame once one is complete, asks for more bytes otherwise, and rejects a bad
//! length prefix (negative, or over `max_frame_bytes`) *before* any buffer grows for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// Size of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Default cap on a frame's payload length: 100 MiB (the Java client's `socket.request.max.bytes`).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Incremental frame reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// The payload cap.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Validates the length prefix at the front of `buf`, if four bytes are there.
    ///
    /// Returns the payload length, `None` if fewer than four bytes are buffered, or an error
    /// for a negative or oversized length.
    pub fn peek_len(&self, buf: &[u8]) -> Result<Option<usize>> {
        let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let len = i32::from_be_bytes(*prefix);
        let len = usize::try_from(len).map_err(|_| Error::NegativeFrameLength(len))?;
        if len > self.max_frame_bytes {
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(len))
    }

    /// Takes one complete frame's payload off the front of `buf`, if one is there.
    ///
    /// When the frame is incomplete, reserves room for the rest of it (the length having been
    /// validated first) and returns `None`. The returned `Bytes` shares `buf`'s allocation.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        let Some(len) = self.peek_len(buf)? else {
            return Ok(None);
        };
        let total = LENGTH_PREFIX_BYTES + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// Like [`decode`](Self::decode), for a stream that has ended: leftover bytes are an error.
    pub fn decode_eof(&self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => {
                let needed = match self.peek_len(buf)? {
                    Some(len) => LENGTH_PREFIX_BYTES + len,
                    None => LENGTH_PREFIX_BYTES,
                };
                Err(Error::Truncated {
                    what: "frame",
                    needed,
                    available: buf.len(),
                })
            }
        }
    }
}

/// Appends `payload` to `dst` as one frame.
pub fn write_frame(dst: &mut BytesMut, payload: &[u8]) -> Result<()> {
    let len = frame_len_prefix(payload.len())?;
    dst.reserve(LENGTH_PREFIX_BYTES + payload.len());
    dst.put_i32(len);
    dst.put_slice(payload);
    Ok(())
}

/// The length prefix for a payload of `len` bytes, or an error if it does not fit in an `i32`.
pub fn frame_len_prefix(len: usize) -> Result<i32> {
    i32::try_from(len).map_err(|_| Error::FrameTooLarge {
        len,
        max: i32::MAX as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_prefix_is_rejected_before_reserving() {
        let decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::with_capacity(8);
        buf.put_i32(i32::MAX);
        let capacity = buf.capacity();
        assert_eq!(
            decoder.decode(&mut buf),
            Err(Error::FrameTooLarge {
                len: i32::MAX as usize,
                max: 1024
            })
        );
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn negative_prefix_is_rejected() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert_eq!(
            FrameDecoder::default().decode(&mut buf),
            Err(Error::NegativeFrameLength(-2))
        );
    }

    #[test]
    fn truncated_stream_is_an_error_at_eof() {
        let mut buf = BytesMut::new();
        buf.put_i32(10);
        buf.put_slice(b"abc");
        assert_eq!(
            FrameDecoder::default().decode_eof(&mut buf),
            Err(Error::Truncated {
                what: "frame",
                needed: 14,
                available: 7
            })
        );
    }

    #[test]
    fn empty_frame_is_valid() {
        let mut buf = BytesMut::new();
        write_frame(&mut buf, b"").unwrap();
        let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert!(frame.is_empty());
        assert!(buf.is_empty());
    }

    proptest! {
        #[test]
        fn frames_round_trip_across_any_split(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut wire = BytesMut::new();
            for p in &payloads {
                write_frame(&mut wire, p).unwrap();
            }
            let wire = wire.freeze();
            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let decoder = FrameDecoder::new(300);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            for cut in cuts {
                buf.extend_from_slice(&wire[at..cut]);
                at = cut;
                while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                    got.push(frame.to_vec());
                }
            }
            prop_assert_eq!(decoder.decode_eof(&mut buf), Ok(None));
            prop_assert_eq!(got, payloads);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let decoder = FrameDecoder::new(32);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decoder.decode(&mut buf) {}
            prop_assert!(buf.capacity() <= 64 + 36);
        }
    }
}
