//! LZ4 batches (codec 3): the standard LZ4 frame format (Kafka's frames carry a correct header
//! checksum since KIP-57), 64 KiB independent blocks as the Java client writes them.
//!
//! Decoding goes through `lz4_flex`'s frame decoder, which also handles linked blocks and
//! verifies the frame's checksums. (Walking the frame by hand and decompressing each block
//! straight into the output measured slower with `lz4_flex`'s safe block decoder.)

use std::io::Write as _;

use bytes::{BufMut as _, BytesMut};
use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::{CodecFailure, read_capped};

/// Decompresses into the front of `out` and returns the length (`out`'s old bytes are scratch
/// space; it is never shortened).
pub(super) fn decompress(
    input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<usize, CodecFailure> {
    read_capped(
        FrameDecoder::new(input),
        out,
        limit,
        input.len().saturating_mul(3),
    )
}

pub(super) fn compress(input: &[u8], out: &mut BytesMut) -> Result<(), CodecFailure> {
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent);
    let mut enc = FrameEncoder::with_frame_info(info, out.writer());
    enc.write_all(input)?;
    enc.finish()
        .map_err(|e| CodecFailure::Corrupt(e.to_string()))?;
    Ok(())
}
