//! gzip batches (codec 1): RFC 1952 members, possibly concatenated, as `GZIPInputStream` reads them.

use std::io::Write as _;

use bytes::{BufMut as _, BytesMut};

use super::{CodecFailure, read_capped};

pub(super) fn decompress(
    input: &[u8],
    out: &mut BytesMut,
    limit: usize,
) -> Result<usize, CodecFailure> {
    let decoder = flate2::bufread::MultiGzDecoder::new(input);
    read_capped(decoder, out, limit, input.len().saturating_mul(4))
}

pub(super) fn compress(input: &[u8], out: &mut BytesMut) -> Result<(), CodecFailure> {
    let mut enc = flate2::write::GzEncoder::new(out.writer(), flate2::Compression::default());
    enc.write_all(input)?;
    enc.finish()?;
    Ok(())
}
