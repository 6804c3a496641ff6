//! Zigzag varints as Kafka's record format writes them (`ByteUtils.readVarint`/`readVarlong`).
//!
//! Decoding is on the hot path of every consumer: the one- and two-byte cases (all lengths up
//! to 8 KiB, and most deltas) are inlined branches; longer encodings go to an out-of-line loop.
//! Like the Java client, a varint is at most 5 bytes and a varlong at most 10; bits past the
//! width are ignored.

/// Decodes a zigzag varint (32-bit) at `pos`. Returns the value and the position after it, or
/// `None` if the input ends first or the encoding is longer than 5 bytes.
#[inline(always)]
pub(crate) fn read_varint(buf: &[u8], pos: usize) -> Option<(i32, usize)> {
    let b0 = *buf.get(pos)?;
    if b0 < 0x80 {
        return Some((unzigzag32(u32::from(b0)), pos + 1));
    }
    let b1 = *buf.get(pos + 1)?;
    if b1 < 0x80 {
        let raw = u32::from(b0 & 0x7f) | (u32::from(b1) << 7);
        return Some((unzigzag32(raw), pos + 2));
    }
    read_varint_slow(buf, pos)
}

#[cold]
#[inline(never)]
fn read_varint_slow(buf: &[u8], pos: usize) -> Option<(i32, usize)> {
    let mut raw: u32 = 0;
    for i in 0..5 {
        let b = *buf.get(pos + i)?;
        raw |= u32::from(b & 0x7f).wrapping_shl(7 * i as u32);
        if b < 0x80 {
            return Some((unzigzag32(raw), pos + i + 1));
        }
    }
    None
}

/// Decodes a zigzag varlong (64-bit) at `pos`; at most 10 bytes.
#[inline(always)]
pub(crate) fn read_varlong(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    let b0 = *buf.get(pos)?;
    if b0 < 0x80 {
        return Some((unzigzag64(u64::from(b0)), pos + 1));
    }
    let b1 = *buf.get(pos + 1)?;
    if b1 < 0x80 {
        let raw = u64::from(b0 & 0x7f) | (u64::from(b1) << 7);
        return Some((unzigzag64(raw), pos + 2));
    }
    read_varlong_slow(buf, pos)
}

#[cold]
#[inline(never)]
fn read_varlong_slow(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(pos + i)?;
        raw |= u64::from(b & 0x7f).wrapping_shl(7 * i as u32);
        if b < 0x80 {
            return Some((unzigzag64(raw), pos + i + 1));
        }
    }
    None
}

#[inline(always)]
fn unzigzag32(raw: u32) -> i32 {
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

#[inline(always)]
fn unzigzag64(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

#[inline(always)]
pub(crate) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Encoded width of `v` as a zigzag varlong (also correct for varints: same zigzag, same width).
#[inline(always)]
pub(crate) fn varlong_len(v: i64) -> usize {
    let z = zigzag64(v) | 1;
    // ceil(bits / 7) for bits in 1..=64, without a division.
    let bits = 64 - z.leading_zeros() as usize;
    (bits * 9 + 64) >> 6
}

/// Writes `v` as a zigzag varlong at the start of `dst`, returning the width (the reference
/// encoder the tests check reading against; the builder writes through its own writer).
#[cfg(test)]
fn put_varlong(dst: &mut [u8], v: i64) -> usize {
    let mut z = zigzag64(v);
    let mut i = 0;
    while z >= 0x80 {
        dst[i] = (z as u8) | 0x80;
        z >>= 7;
        i += 1;
    }
    dst[i] = z as u8;
    i + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_round_trips_at_every_width() {
        let mut buf = [0u8; 10];
        let cases = [
            0i64,
            -1,
            1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            8192,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ];
        for v in cases {
            let n = put_varlong(&mut buf, v);
            assert_eq!(n, varlong_len(v), "width of {v}");
            assert_eq!(read_varlong(&buf[..n], 0), Some((v, n)), "value {v}");
            if let Ok(v32) = i32::try_from(v) {
                assert_eq!(read_varint(&buf[..n], 0), Some((v32, n)), "varint {v}");
            }
        }
    }

    #[test]
    fn overlong_varints_are_rejected() {
        assert_eq!(read_varint(&[0x80; 6], 0), None);
        assert_eq!(read_varlong(&[0x80; 11], 0), None);
        assert_eq!(read_varint(&[0x80, 0x80], 0), None);
    }
}
