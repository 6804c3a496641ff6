//! Splitting a batch the broker refused as too large (MESSAGE_TOO_LARGE) into two smaller ones.
//!
//! The Java client splits such a batch instead of failing its records: a batch may exceed
//! the topic's `max.message.bytes` although every record fits (`batch.size` above the
//! topic's limit, or a batch that compressed worse than hoped). We cannot know the limit,
//! so a refused batch is cut in two halves of about equal size; a half that is still too
//! large is refused and cut again, until a single record is left, which then fails with the
//! broker's error. The pieces keep the records' order, timestamps, keys, values and headers,
//! and with idempotence they take the original batch's sequence numbers in order, so the
//! batches after it in the partition stay valid.

use bytes::Bytes;
use flumen_protocol::record::{
    BatchBuilder, Compression, Decompressor, HEADER_LEN, HeaderRef, RecordBatch, RecordError,
};

/// One half of a split batch, not yet sealed.
pub(crate) struct Piece {
    pub(crate) builder: BatchBuilder,
    pub(crate) records: i32,
}

/// Re-encodes the records of the sealed batch `batch` into two batches (`compression`, as
/// the producer writes) of about half its uncompressed size each. `None` for fewer than two
/// records, which cannot be split.
pub(crate) fn halve(
    batch: &Bytes,
    compression: Compression,
) -> Result<Option<[Piece; 2]>, RecordError> {
    let view = RecordBatch::new(batch.clone())?;
    if view.record_count() < 2 {
        return Ok(None);
    }
    // The limit in force for the producer's own batches: at most what it encoded itself.
    let mut scratch = Decompressor::new();
    let mut headers: Vec<HeaderRef<'_>> = Vec::new();
    let records: Vec<_> = view.records(&mut scratch)?.collect::<Result<_, _>>()?;
    if records.len() < 2 {
        return Ok(None);
    }
    let size_of = |r: &flumen_protocol::record::RecordRef<'_>| {
        r.key().map_or(0, <[u8]>::len)
            + r.value().map_or(0, <[u8]>::len)
            + r.headers().map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len)).sum::<usize>()
            // Varints and attributes: a rough constant is enough to balance the halves.
            + 16
    };
    let total: usize = records.iter().map(size_of).sum();
    // The first half takes records until it holds half the bytes, and always leaves one.
    let mut first_len = 0;
    let mut taken = 0;
    for r in &records[..records.len() - 1] {
        if first_len > 0 && taken * 2 >= total {
            break;
        }
        taken += size_of(r);
        first_len += 1;
    }
    let mut pieces = [
        (&records[..first_len], taken),
        (&records[first_len..], total - taken),
    ]
    .map(|(part, bytes)| {
        (
            part,
            Piece {
                builder: BatchBuilder::with_capacity(compression, HEADER_LEN + bytes),
                records: part.len() as i32,
            },
        )
    });
    for (part, piece) in &mut pieces {
        for r in part.iter() {
            headers.clear();
            headers.extend(r.headers());
            piece
                .builder
                .append(r.timestamp(), r.key(), r.value(), &headers)?;
        }
    }
    let [(_, a), (_, b)] = pieces;
    Ok(Some([a, b]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(compression: Compression, n: usize) -> Bytes {
        let mut b = BatchBuilder::new(compression);
        for i in 0..n {
            let key = format!("k{i}");
            let value = vec![i as u8; 10 + i];
            let header_value = format!("h{i}");
            let headers: [HeaderRef<'_>; 2] = [
                (b"h".as_slice(), Some(header_value.as_bytes())),
                (b"h".as_slice(), None),
            ];
            b.append(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                Some(&value),
                &headers,
            )
            .expect("append");
        }
        b.seal().expect("seal")
    }

    /// (timestamp, key, value, headers) of every record of a sealed batch.
    type Decoded = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn decode(batch: Bytes) -> Vec<Decoded> {
        let view = RecordBatch::new(batch).expect("batch");
        view.verify_crc().expect("crc");
        let mut scratch = Decompressor::new();
        view.records(&mut scratch)
            .expect("records")
            .map(|r| {
                let r = r.expect("record");
                (
                    r.timestamp(),
                    r.key().map(<[u8]>::to_vec),
                    r.value().map(<[u8]>::to_vec),
                    r.headers()
                        .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn halves_keep_every_record_in_order_with_timestamps_and_headers() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            for n in [2, 3, 7, 100] {
                let original = sealed(compression, n);
                let [a, b] = halve(&original, compression)
                    .expect("split")
                    .expect("two or more records split");
                assert_eq!(a.records + b.records, n as i32);
                assert!(a.records >= 1 && b.records >= 1);
                let mut got = decode(a.builder.seal().expect("seal"));
                got.extend(decode(b.builder.seal().expect("seal")));
                assert_eq!(got, decode(original), "{compression:?}, {n} records");
            }
        }
    }

    #[test]
    fn halves_are_about_equal_in_size() {
        let original = sealed(Compression::None, 100);
        let [a, b] = halve(&original, Compression::None)
            .expect("split")
            .expect("two");
        let (a, b) = (a.builder.size_in_bytes(), b.builder.size_in_bytes());
        assert!(a.abs_diff(b) < original.len() / 8, "{a} vs {b}");
    }

    #[test]
    fn a_single_record_is_not_split() {
        let original = sealed(Compression::None, 1);
        assert!(halve(&original, Compression::None).expect("read").is_none());
    }

    #[test]
    fn a_corrupt_batch_is_an_error_not_a_panic() {
        let original = sealed(Compression::None, 5);
        let cut = original.slice(..original.len() - 3);
        assert!(halve(&cut, Compression::None).is_err());
    }
}
