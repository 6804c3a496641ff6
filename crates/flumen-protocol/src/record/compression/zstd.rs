//! Zstandard batches (codec 4): one or more zstd frames, streamed into the capped buffer with a
//! decompression context kept across batches.

use bytes::BytesMut;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use super::CodecFailure;

/// The level the Java client uses by default (`ZSTD_CLEVEL_DEFAULT`).
const LEVEL: i32 = 3;

#[derive(Default)]
pub(super) struct ZstdState {
    decoder: Option<Decoder<'static>>,
}

impl ZstdState {
    pub(super) fn decompress(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<usize, CodecFailure> {
        let decoder = match &mut self.decoder {
            Some(d) => {
                d.reinit()?;
                d
            }
            None => self.decoder.insert(Decoder::new()?),
        };
        // `out`'s old contents are scratch space, overwritten rather than zeroed again.
        let mut src = InBuffer::around(input);
        let mut filled = 0;
        let mut step = input.len().saturating_mul(4).clamp(4096, 1 << 20);
        let mut frame_done;
        loop {
            if filled == out.len() {
                if filled > limit {
                    return Err(CodecFailure::TooLarge);
                }
                let grow = step.min(limit + 1 - filled);
                out.resize(filled + grow, 0);
                step = step.saturating_mul(2).min(8 << 20);
            }
            let mut dst = OutBuffer::around(&mut out[filled..]);
            let hint = decoder.run(&mut src, &mut dst)?;
            let produced = dst.pos();
            filled += produced;
            if hint == 0 {
                frame_done = true;
                if src.pos() == input.len() {
                    break;
                }
                // Another frame follows.
                decoder.reinit()?;
            } else {
                frame_done = false;
                if src.pos() == input.len() && produced == 0 && filled < out.len() {
                    break;
                }
            }
        }
        if filled > limit {
            return Err(CodecFailure::TooLarge);
        }
        if !frame_done {
            return Err(CodecFailure::Corrupt("zstd frame truncated".into()));
        }
        Ok(filled)
    }
}

pub(super) fn compress(input: &[u8], out: &mut BytesMut) -> Result<(), CodecFailure> {
    let compressed = zstd::bulk::compress(input, LEVEL)?;
    out.extend_from_slice(&compressed);
    Ok(())
}
