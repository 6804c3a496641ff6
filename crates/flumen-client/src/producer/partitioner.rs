//! Partition choice: Java-compatible murmur2 for keyed records, sticky (KIP-794, adaptive) for keyless.
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

/// KIP-794 sticky choice for keyless records: stay on one partition until about
/// `batch.size` bytes went there, then move to another chosen at random (weighted by
/// [`PartitionLoad`] when adaptive), so batches fill up instead of many small batches each
/// lingering.
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
    /// The partition for a keyless record of `size` bytes: the current one until about
    /// `batch_size` bytes went there, then a new choice, weighted by `load` when it has
    /// weights (adaptive partitioning), else uniform.
    #[inline]
    pub(crate) fn next(
        &mut self,
        partition_count: i32,
        size: usize,
        batch_size: usize,
        load: &PartitionLoad,
    ) -> i32 {
        if self.current < 0 || self.current >= partition_count || self.bytes >= batch_size {
            let random = rand::random::<u32>();
            self.current = match load.pick(random) {
                Some(p) if p < partition_count => p,
                _ => {
                    let mut next = random as i32 & 0x7fff_ffff;
                    next %= partition_count.max(1);
                    if partition_count > 1 && next == self.current {
                        next = (next + 1) % partition_count;
                    }
                    next
                }
            };
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

/// How keyless records are spread over a topic's partitions by adaptive partitioning
/// (KIP-794, as the Java client's `BuiltInPartitioner`): each partition that may take records
/// is weighted by how many fewer batches wait in its queue than in the longest queue (plus
/// one), so a partition whose leader is slow gets fewer new records. The sender rebuilds the
/// table from the queue lengths each time it drains; with every partition equally loaded
/// (the usual case) the table is empty and the choice is uniform.
#[derive(Debug, Default)]
pub(crate) struct PartitionLoad {
    /// Running sums of the weights, one per entry of `partitions`.
    cumulative: Vec<u32>,
    partitions: Vec<i32>,
    /// Queue lengths while rebuilding.
    waiting: Vec<u32>,
}

impl PartitionLoad {
    /// Starts a rebuild.
    pub(crate) fn begin(&mut self) {
        self.partitions.clear();
        self.waiting.clear();
        self.cumulative.clear();
    }

    /// Adds a partition that may take records, with the number of batches in its queue.
    pub(crate) fn push(&mut self, partition: i32, batches_waiting: usize) {
        self.partitions.push(partition);
        self.waiting.push(
            u32::try_from(batches_waiting)
                .unwrap_or(u32::MAX / 2)
                .min(u32::MAX / 2),
        );
    }

    /// Ends a rebuild of a topic with `partition_count` partitions.
    pub(crate) fn finish(&mut self, partition_count: usize) {
        let max = self.waiting.iter().copied().max().unwrap_or(0);
        let all_equal = self.waiting.iter().all(|&w| w == max);
        // Nothing available (then any partition, as Java) or all alike: uniform.
        if self.partitions.is_empty() || (all_equal && self.partitions.len() == partition_count) {
            self.partitions.clear();
            return;
        }
        let mut total = 0u32;
        for &w in &self.waiting {
            total = total.saturating_add(max - w + 1);
            self.cumulative.push(total);
        }
    }

    /// A partition drawn with the weights, from a uniform `random`; `None`: choose uniformly.
    #[inline]
    pub(crate) fn pick(&self, random: u32) -> Option<i32> {
        let total = *self.cumulative.last()?;
        let r = random % total;
        let at = self.cumulative.partition_point(|&c| c <= r);
        self.partitions.get(at).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_choice_favours_short_queues_and_skips_unavailable_partitions() {
        let mut load = PartitionLoad::default();
        load.begin();
        // Partition 1 is left out (its leader is unavailable); 3 has a long queue.
        for (p, waiting) in [(0, 0), (2, 0), (3, 5)] {
            load.push(p, waiting);
        }
        load.finish(4);
        let mut counts = [0u32; 4];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..13_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            counts[load.pick(x as u32).expect("weighted") as usize] += 1;
        }
        // Weights 6, 6 and 1 of 13.
        assert_eq!(counts[1], 0);
        assert!((5_500..6_500).contains(&counts[0]), "{counts:?}");
        assert!((5_500..6_500).contains(&counts[2]), "{counts:?}");
        assert!((700..1_300).contains(&counts[3]), "{counts:?}");
    }

    #[test]
    fn equal_queues_on_every_partition_mean_a_uniform_choice() {
        let mut load = PartitionLoad::default();
        load.begin();
        for p in 0..4 {
            load.push(p, 2);
        }
        load.finish(4);
        assert_eq!(load.pick(7), None);
        // Equal, but one partition missing: only the available ones.
        load.begin();
        for p in [0, 1, 3] {
            load.push(p, 2);
        }
        load.finish(4);
        assert!((0..300).all(|r| load.pick(r) != Some(2)));
        // None available: uniform over all, as the Java client does.
        load.begin();
        load.finish(4);
        assert_eq!(load.pick(7), None);
    }

    #[test]
    fn sticky_partition_moves_on_after_a_batch_worth_of_bytes() {
        let mut s = StickyPartition::new();
        let first = s.next(12, 100, 1000, &PartitionLoad::default());
        for _ in 0..9 {
            assert_eq!(s.next(12, 100, 1000, &PartitionLoad::default()), first);
        }
        assert_ne!(s.next(12, 100, 1000, &PartitionLoad::default()), first);
    }

    #[test]
    fn sticky_partition_moves_on_when_told_its_batch_is_full() {
        let mut s = StickyPartition::new();
        let first = s.next(12, 100, 1000, &PartitionLoad::default());
        assert_eq!(s.next(12, 100, 1000, &PartitionLoad::default()), first);
        s.move_on();
        let second = s.next(12, 100, 1000, &PartitionLoad::default());
        assert_ne!(second, first);
        assert_eq!(s.next(12, 100, 1000, &PartitionLoad::default()), second);
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(42), 42);
    }
}
