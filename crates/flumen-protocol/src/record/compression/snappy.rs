//! Snappy batches (codec 2): raw Snappy, or the xerial stream framing the Java client writes.
//!
//! xerial framing (snappy-java `SnappyOutputStream`): a 16-byte header — magic
//! `\x82SNAPPY\x00`, version i32, compatible-version i32 — then blocks, each a big-endian i32
//! compressed length followed by one raw Snappy block. Like snappy-java's reader, input without
//! the magic is taken as one raw block.

use bytes::BytesMut;

use super::CodecFailure;

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const XERIAL_HEADER_LEN: usize = 16;
/// snappy-java's default block size; the Java client uses it.
const XERIAL_BLOCK: usize = 32 * 1024;

/// Decompresses into the front of `out` and returns the length. `out`'s old bytes are scratch
/// space, overwritten rather than zeroed again; it is never shortened.
pub(super) fn decompress(
    input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<usize, CodecFailure> {
    let mut written = 0;
    let mut decoder = snap::raw::Decoder::new();
    if input.len() < XERIAL_HEADER_LEN || &input[..XERIAL_MAGIC.len()] != XERIAL_MAGIC {
        raw_block(&mut decoder, input, out, &mut written, limit)?;
        return Ok(written);
    }
    let mut pos = XERIAL_HEADER_LEN;
    while pos < input.len() {
        let Some(len) = input.get(pos..pos + 4) else {
            return Err(CodecFailure::Corrupt(format!(
                "xerial block length truncated at {pos}"
            )));
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        pos += 4;
        let Some(block) = input.get(pos..pos.saturating_add(len)) else {
            return Err(CodecFailure::Corrupt(format!(
                "xerial block of {len} bytes at {pos} runs past the payload"
            )));
        };
        raw_block(&mut decoder, block, out, &mut written, limit)?;
        pos += len;
    }
    Ok(written)
}

fn raw_block(
    decoder: &mut snap::raw::Decoder,
    block: &[u8],
    out: &mut BytesMut,
    written: &mut usize,
    limit: usize,
) -> Result<(), CodecFailure> {
    let n = snap::raw::decompress_len(block).map_err(|e| CodecFailure::Corrupt(e.to_string()))?;
    let at = *written;
    if at.saturating_add(n) > limit {
        return Err(CodecFailure::TooLarge);
    }
    if out.len() < at + n {
        out.resize(at + n, 0);
    }
    match decoder.decompress(block, &mut out[at..at + n]) {
        Ok(got) if got == n => {
            *written = at + n;
            Ok(())
        }
        Ok(got) => Err(CodecFailure::Corrupt(format!(
            "snappy block declared {n} bytes but produced {got}"
        ))),
        Err(e) => Err(CodecFailure::Corrupt(e.to_string())),
    }
}

pub(super) fn compress(input: &[u8], out: &mut BytesMut) -> Result<(), CodecFailure> {
    let mut encoder = snap::raw::Encoder::new();
    out.extend_from_slice(XERIAL_HEADER);
    for chunk in input.chunks(XERIAL_BLOCK) {
        let len_at = out.len();
        let max = snap::raw::max_compress_len(chunk.len());
        out.resize(len_at + 4 + max, 0);
        let n = encoder
            .compress(chunk, &mut out[len_at + 4..])
            .map_err(|e| CodecFailure::Corrupt(e.to_string()))?;
        out[len_at..len_at + 4].copy_from_slice(&(n as u32).to_be_bytes());
        out.truncate(len_at + 4 + n);
    }
    Ok(())
}
