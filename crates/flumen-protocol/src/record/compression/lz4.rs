//! LZ4 batches (codec 3): the standard LZ4 frame format (Kafka's frames carry a correct header
//! checksum since KIP-57), 64 KiB independent blocks as the Java client writes them.
//!
//! The frames Kafka clients write (independent blocks, no block or content checksum, no
//! dictionary) are walked here: each block is decompressed by `lz4_flex`'s block decoder
//! straight into the output buffer. `lz4_flex`'s `FrameDecoder` reads every block into a buffer
//! of its own, decompresses into a second one and then copies out, and allocates and zeroes
//! both for every frame, i.e. every batch; skipping that measured about a quarter off the codec
//! time on 16 KiB batches of 100-byte records. Any other frame (linked blocks, checksums,
//! dictionary, several frames, or anything malformed) goes to the `FrameDecoder`, which also
//! gives the error message.

use std::io::Write as _;

use bytes::{BufMut as _, BytesMut};
use lz4_flex::block::DecompressError;
use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::{CodecFailure, read_capped};

const MAGIC: u32 = 0x184D_2204;
/// FLG bits: version (must be 01), independent blocks, block checksums, content size,
/// content checksum, reserved, dictionary id.
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_INDEPENDENT: u8 = 0b0010_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
/// Block checksums, content checksum, reserved bit, dictionary id: none may be set for the
/// walked path.
const FLG_UNWALKED: u8 = 0b0001_0111;
const BLOCK_STORED_BIT: u32 = 0x8000_0000;

/// Decompresses into the front of `out` and returns the length (`out`'s old bytes are scratch
/// space; it is never shortened).
pub(super) fn decompress(
    input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<usize, CodecFailure> {
    match walk_independent_blocks(input, out, limit) {
        Some(result) => result,
        None => read_capped(
            FrameDecoder::new(input),
            out,
            limit,
            input.len().saturating_mul(3),
        ),
    }
}

/// The common frame, block by block into `out`. `None`: not that kind of frame, or malformed
/// (the caller then lets `FrameDecoder` decode it or name the problem).
fn walk_independent_blocks(
    input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Option<Result<usize, CodecFailure>> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(*input.get(at..)?.first_chunk::<4>()?))
    };
    if word(0)? != MAGIC {
        return None;
    }
    let (flg, bd) = (*input.get(4)?, *input.get(5)?);
    if flg & FLG_VERSION_MASK != FLG_VERSION_01
        || flg & FLG_INDEPENDENT == 0
        || flg & FLG_UNWALKED != 0
        || bd & !0x70 != 0
    {
        return None;
    }
    // The content size, when present, is only a claim: the limit bounds the output anyway.
    let descriptor_end = if flg & FLG_CONTENT_SIZE != 0 { 14 } else { 6 };
    let descriptor = input.get(4..descriptor_end)?;
    let checksum = (twox_hash::XxHash32::oneshot(0, descriptor) >> 8) as u8;
    if *input.get(descriptor_end)? != checksum {
        return None;
    }
    let max_block: usize = match bd >> 4 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return None,
    };
    let mut pos = descriptor_end + 1;
    let mut filled = 0usize;
    loop {
        let size = word(pos)?;
        pos += 4;
        if size == 0 {
            break;
        }
        let len = (size & !BLOCK_STORED_BIT) as usize;
        let block = input.get(pos..pos.checked_add(len)?)?;
        pos += len;
        // Room for one more block, but never more than one byte past the cap (which is how a
        // bomb is told from a batch exactly at the cap).
        let end = filled
            .saturating_add(max_block)
            .min(limit.saturating_add(1));
        if out.len() < end {
            out.resize(end, 0);
        }
        if size & BLOCK_STORED_BIT != 0 {
            if len > max_block {
                return None;
            }
            if filled + len > limit {
                return Some(Err(CodecFailure::TooLarge));
            }
            out[filled..filled + len].copy_from_slice(block);
            filled += len;
        } else {
            match lz4_flex::block::decompress_into(block, &mut out[filled..end]) {
                Ok(n) => filled += n,
                Err(DecompressError::OutputTooSmall { .. }) if end <= limit => return None,
                Err(DecompressError::OutputTooSmall { .. }) => {
                    return Some(Err(CodecFailure::TooLarge));
                }
                Err(_) => return None,
            }
        }
        if filled > limit {
            return Some(Err(CodecFailure::TooLarge));
        }
    }
    // Another frame after this one: the general decoder handles concatenated frames.
    (pos == input.len()).then_some(Ok(filled))
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

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::record::RecordBatch;

    fn frame(input: &[u8], info: FrameInfo) -> Vec<u8> {
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(input).expect("write");
        enc.finish().expect("finish")
    }

    fn independent() -> FrameInfo {
        FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent)
    }

    fn reference(framed: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameDecoder::new(framed)
            .read_to_end(&mut out)
            .expect("reference decode");
        out
    }

    /// Text-like bytes (compressible) followed by pseudo-random ones (stored blocks).
    fn mixed(len: usize) -> Vec<u8> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        (0..len)
            .map(|i| {
                if i < len / 2 {
                    b"{\"user\":42,\"event\":\"click\"}"[i % 27]
                } else {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                }
            })
            .collect()
    }

    #[test]
    fn walked_frames_decode_like_the_frame_decoder_across_blocks_and_stored_blocks() {
        for len in [0, 1, 100, 65_536, 65_537, 300_000] {
            let input = mixed(len);
            let framed = frame(&input, independent());
            let mut out = BytesMut::new();
            let n = walk_independent_blocks(&framed, &mut out, usize::MAX >> 1)
                .expect("walked")
                .expect("decoded");
            assert_eq!(&out[..n], &input[..], "len {len}");
            assert_eq!(reference(&framed), input, "len {len}");
        }
    }

    #[test]
    fn java_written_lz4_batch_takes_the_walked_path() {
        let bytes = include_bytes!("../../../tests/fixtures/java_lz4.bin");
        let batch = RecordBatch::new(bytes::Bytes::from_static(bytes)).expect("batch");
        let mut out = BytesMut::new();
        let n = walk_independent_blocks(batch.payload(), &mut out, 1 << 30)
            .expect("the Java client's frame is walked")
            .expect("decoded");
        assert_eq!(&out[..n], &reference(batch.payload())[..]);
    }

    #[test]
    fn walked_path_stops_one_byte_past_the_cap() {
        let input = vec![7u8; 300_000];
        let framed = frame(&input, independent());
        let mut out = BytesMut::new();
        let res = walk_independent_blocks(&framed, &mut out, 100_000).expect("walked");
        assert!(matches!(res, Err(CodecFailure::TooLarge)));
        assert!(out.len() <= 100_001, "wrote {} bytes", out.len());
        // Exactly at the cap is fine.
        let res = walk_independent_blocks(&framed, &mut out, 300_000).expect("walked");
        assert!(matches!(res, Ok(300_000)));
    }

    #[test]
    fn frames_with_checksums_or_linked_blocks_go_to_the_frame_decoder() {
        let input = mixed(100_000);
        for info in [
            independent().content_checksum(true),
            independent().block_checksums(true),
            FrameInfo::new().block_mode(BlockMode::Linked),
        ] {
            let framed = frame(&input, info);
            let mut out = BytesMut::new();
            assert!(walk_independent_blocks(&framed, &mut out, 1 << 30).is_none());
            let n = decompress(&framed, &mut out, 1 << 30).expect("decoded");
            assert_eq!(&out[..n], &input[..]);
        }
    }

    #[test]
    fn a_bad_header_checksum_or_truncated_block_is_left_to_the_frame_decoder_to_report() {
        let framed = frame(&mixed(1000), independent());
        let mut bad_hc = framed.clone();
        bad_hc[6] ^= 1;
        let truncated = &framed[..framed.len() - 10];
        for input in [&bad_hc[..], truncated] {
            let mut out = BytesMut::new();
            assert!(walk_independent_blocks(input, &mut out, 1 << 30).is_none());
            assert!(matches!(
                decompress(input, &mut out, 1 << 30),
                Err(CodecFailure::Corrupt(_))
            ));
        }
    }
}
