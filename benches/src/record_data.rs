//! Deterministic record sets and batch blobs shared by the record codec benches.

use bytes::Bytes;
use flumen_protocol::record::{BatchBuilder, Compression};

/// Producer batch size used to cut blobs into batches (the Java client's default `batch.size`).
pub const BATCH_SIZE: usize = 16 * 1024;

/// One record to encode.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Create time.
    pub timestamp: i64,
    /// Key (`key-<n>`).
    pub key: Vec<u8>,
    /// Value: text-like bytes that compress about as well as typical JSON.
    pub value: Vec<u8>,
}

/// Records of `value_len`-byte values until their encoded size reaches `total_bytes`.
pub fn samples(value_len: usize, total_bytes: usize) -> Vec<Sample> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // JSON-ish: repeated field names, a few status words, random digits. Compresses ~2-4x
    // like typical event payloads (random letters would not compress at all).
    let words: [&[u8]; 8] = [
        b"{\"user\":",
        b",\"event\":\"click\"",
        b",\"page\":\"/home\"",
        b",\"ms\":",
        b",\"status\":\"ok\"",
        b",\"event\":\"view\"",
        b",\"region\":\"eu-west\"",
        b"}",
    ];
    let mut out = Vec::new();
    let mut size = 0;
    let mut i = 0i64;
    while size < total_bytes {
        let key = format!("key-{i}").into_bytes();
        let mut value = Vec::with_capacity(value_len + 32);
        while value.len() < value_len {
            let r = next();
            value.extend_from_slice(words[(r % 8) as usize]);
            value.extend_from_slice(format!("{}", (r >> 8) % 100_000).as_bytes());
        }
        value.truncate(value_len);
        size += key.len() + value.len() + 12;
        out.push(Sample {
            timestamp: 1_700_000_000_000 + i,
            key,
            value,
        });
        i += 1;
    }
    out
}

/// Encodes `samples` into consecutive batches of at most [`BATCH_SIZE`] uncompressed bytes.
pub fn blob(samples: &[Sample], compression: Compression) -> Bytes {
    let mut out = Vec::new();
    let mut builder = BatchBuilder::new(compression);
    let mut base = 0i64;
    for s in samples {
        let size = builder.record_size(s.timestamp, Some(&s.key), Some(&s.value), &[]);
        if !builder.is_empty() && builder.size_in_bytes() + size > BATCH_SIZE {
            let n = builder.len() as i64;
            let full = std::mem::replace(&mut builder, BatchBuilder::new(compression));
            out.extend_from_slice(&full.base_offset(base).seal().expect("seal"));
            base += n;
        }
        builder
            .append(s.timestamp, Some(&s.key), Some(&s.value), &[])
            .expect("append");
    }
    out.extend_from_slice(&builder.base_offset(base).seal().expect("seal"));
    Bytes::from(out)
}
