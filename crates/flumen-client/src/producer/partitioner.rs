//! Partition choice: Java-compatible murmur2 for keyed records, uniform sticky (KIP-794) for keyless.
//!
//! `murmur2` is bit-for-bit the Java client's `Utils.murmur2` (seed `0x9747b28c`, signed
//! 32-bit arithmetic, tail bytes sign-extended as Java's `byte` is) and `to_positive` is
//! `Utils.toPositive` (`x & 0x7fffffff`), so a keyed record lands in the same partition
//! as it would from a Java producer with the same partition count.

/// Chooses partitions for records that name none.
pub trait Partitioner: Send + Sync + 'static {
    /// The partition for a record with `key` in `topic` of `partition_count` (> 0) partitions.
    /// Returning `None` asks for the default keyless choice (sticky).
    fn partition(&self, topic: &str, key: Option<&[u8]>, partition_count: i32) -> Option<i32>;
}

/// The Java client's default: murmur2 of the key; keyless records go to the sticky partition.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPartitioner {
    /// `partitioner.ignore.keys`: treat keyed records like keyless ones.
    pub ignore_keys: bool,
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, _topic: &str, key: Option<&[u8]>, partition_count: i32) -> Option<i32> {
        match key {
            Some(key) if !self.ignore_keys => Some(partition_for_key(key, partition_count)),
            _ => None,
        }
    }
}

/// The partition Java's default partitioner picks for `key`: `toPositive(murmur2(key)) % count`.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    to_positive(murmur2(key)) % partition_count.max(1)
}

/// Java's `Utils.toPositive`.
pub fn to_positive(x: i32) -> i32 {
    x & 0x7fff_ffff
}

/// Java's `Utils.murmur2` (32-bit MurmurHash2, seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // Java reads the tail as signed bytes and masks each with 0xff, so the sign does not leak.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// KIP-794 uniform sticky choice for keyless records: stay on one partition until about
/// `batch.size` bytes went there, then move to another chosen at random, so batches fill
/// up instead of many small batches each lingering.
#[derive(Debug)]
pub(crate) struct StickyPartition {
    current: i32,
    bytes: usize,
}

impl StickyPartition {
    pub(crate) fn new() -> Self {
        StickyPartition {
            current: -1,
            bytes: 0,
        }
    }

    /// The partition for a keyless record of `size` bytes, with `batch_size` as the switch point.
    #[inline]
    pub(crate) fn next(&mut self, partition_count: i32, size: usize, batch_size: usize) -> i32 {
        if self.current < 0 || self.current >= partition_count || self.bytes >= batch_size {
            let mut next = rand::random::<u32>() as i32 & 0x7fff_ffff;
            next %= partition_count.max(1);
            if partition_count > 1 && next == self.current {
                next = (next + 1) % partition_count;
            }
            self.current = next;
            self.bytes = 0;
        }
        self.bytes += size;
        self.current
    }

    /// The current partition's batch is full: the next keyless record goes elsewhere.
    pub(crate) fn move_on(&mut self) {
        self.bytes = usize::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_partition_moves_on_after_a_batch_worth_of_bytes() {
        let mut s = StickyPartition::new();
        let first = s.next(12, 100, 1000);
        for _ in 0..9 {
            assert_eq!(s.next(12, 100, 1000), first);
        }
        assert_ne!(s.next(12, 100, 1000), first);
    }

    #[test]
    fn sticky_partition_moves_on_when_told_its_batch_is_full() {
        let mut s = StickyPartition::new();
        let first = s.next(12, 100, 1000);
        assert_eq!(s.next(12, 100, 1000), first);
        s.move_on();
        let second = s.next(12, 100, 1000);
        assert_ne!(second, first);
        assert_eq!(s.next(12, 100, 1000), second);
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(42), 42);
    }
}
