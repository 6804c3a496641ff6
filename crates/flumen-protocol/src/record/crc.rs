//! CRC32C (Castagnoli) over batch contents, the checksum of v2 record batches.
//!
//! The `crc32c` crate detects SSE4.2 at run time and uses the hardware instruction with three
//! interleaved streams; see `benches/benches/crc.rs` for the measurement behind the choice.

/// CRC32C of `data`.
#[inline]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}
