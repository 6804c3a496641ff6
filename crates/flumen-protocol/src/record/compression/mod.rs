//! Batch compression codecs and the reusable, capped decompression buffer.
//!
//! Codec choices: gzip through `flate2`, Snappy through `snap` (raw blocks; the xerial framing
//! the Java client writes is handled here), LZ4 frames through `lz4_flex`, Zstandard through
//! `zstd` (C, builds with musl-tools). All but zstd are pure Rust.
//!
//! Invariant: no decompressor writes more than the cap (plus one probe byte) into the buffer,
//! whatever the input claims about its size.

mod gzip;
mod lz4;
mod snappy;
mod zstd;

use bytes::{Bytes, BytesMut};

use super::batch::Compression;
use super::error::{RecordError, Result};

/// Default cap on one batch's decompressed size: 64 MiB.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Why a codec stopped.
#[derive(Debug)]
pub(crate) enum CodecFailure {
    /// Output would pass the cap.
    TooLarge,
    /// The codec rejected its input.
    Corrupt(String),
}

impl From<std::io::Error> for CodecFailure {
    fn from(e: std::io::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// Reusable decompression state: one output buffer (kept across batches) and a hard cap.
///
/// Decompressed records are exposed as `Bytes` so that [`RecordRef::key_bytes`] stays zero-copy;
/// when the caller has dropped every such slice, the next batch reuses the same allocation.
///
/// [`RecordRef::key_bytes`]: super::RecordRef::key_bytes
pub struct Decompressor {
    /// The whole buffer, initialised up to its length; reclaimed when `view` and every slice
    /// handed out are gone.
    buf: Bytes,
    /// The current batch's decompressed bytes: a prefix of `buf`.
    view: Bytes,
    limit: usize,
    zstd: Option<zstd::ZstdState>,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Decompressor {
    /// A decompressor with the default 64 MiB cap. Allocates nothing until first used.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_DECOMPRESSED_BYTES)
    }

    /// A decompressor refusing any batch that decompresses to more than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Bytes::new(),
            view: Bytes::new(),
            limit,
            zstd: None,
        }
    }

    /// The cap in force.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Decompresses `input` (a batch payload found at `payload_offset` in its batch) and returns
    /// the decompressed bytes, valid until the next call.
    pub fn decompress(
        &mut self,
        codec: Compression,
        input: &[u8],
        payload_offset: usize,
    ) -> Result<&Bytes> {
        // Take the previous buffer back if nobody else holds a slice of it. Its old contents
        // stay in place as scratch space: codecs overwrite them instead of zeroing the buffer
        // again, and the buffer is never shortened (its length is what is initialised).
        self.view = Bytes::new();
        let mut out = match std::mem::take(&mut self.buf).try_into_mut() {
            Ok(m) => m,
            Err(_) => BytesMut::new(),
        };
        let limit = self.limit;
        let res = match codec {
            Compression::None => {
                out.clear();
                if input.len() > limit {
                    Err(CodecFailure::TooLarge)
                } else {
                    out.extend_from_slice(input);
                    Ok(input.len())
                }
            }
            Compression::Gzip => gzip::decompress(input, &mut out, limit),
            Compression::Snappy => snappy::decompress(input, &mut out, limit),
            Compression::Lz4 => lz4::decompress(input, &mut out, limit),
            Compression::Zstd => self
                .zstd
                .get_or_insert_with(zstd::ZstdState::default)
                .decompress(input, &mut out, limit),
        };
        self.buf = out.freeze();
        match res {
            Ok(len) => {
                self.view = self.buf.slice(..len);
                Ok(&self.view)
            }
            Err(CodecFailure::TooLarge) => Err(RecordError::DecompressedTooLarge {
                offset: payload_offset,
                codec,
                limit,
            }),
            Err(CodecFailure::Corrupt(reason)) => Err(RecordError::Decompression {
                offset: payload_offset,
                codec,
                reason,
            }),
        }
    }
}

/// Compresses `input` with `codec`, appending to `out` in the form the Java client writes.
pub(crate) fn compress(codec: Compression, input: &[u8], out: &mut BytesMut) -> Result<()> {
    let res = match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => gzip::compress(input, out),
        Compression::Snappy => snappy::compress(input, out),
        Compression::Lz4 => lz4::compress(input, out),
        Compression::Zstd => zstd::compress(input, out),
    };
    res.map_err(|_| RecordError::Encode {
        reason: "compression failed",
    })
}

/// Reads `reader` to its end into the front of `out` and returns the length (`out`'s old bytes
/// are scratch space; it is never shortened), failing as soon as more than `limit` bytes come out. `hint` is the first growth
/// step (a guess at the output size).
pub(crate) fn read_capped<R: std::io::Read>(
    mut reader: R,
    out: &mut BytesMut,
    limit: usize,
    hint: usize,
) -> Result<usize, CodecFailure> {
    let mut filled = 0;
    let mut step = hint.clamp(4096, 1 << 20);
    loop {
        if filled == out.len() {
            let written = filled;
            if written > limit {
                return Err(CodecFailure::TooLarge);
            }
            // One byte past the cap is enough to detect a bomb.
            let grow = step.min(limit + 1 - written);
            out.resize(filled + grow, 0);
            step = step.saturating_mul(2).min(8 << 20);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if filled > limit {
        return Err(CodecFailure::TooLarge);
    }
    Ok(filled)
}
