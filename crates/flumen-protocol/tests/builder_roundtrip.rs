//! Property tests: whatever records, headers and codec go into `BatchBuilder`, the
//! `RecordBatch` view gives back exactly, and `record_size` predicts each append exactly.

use flumen_protocol::record::{
    BatchBuilder, Compression, Decompressor, RecordBatch, RecordBatches, RecordError, TimestampType,
};
use proptest::prelude::*;

type Header = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
struct Rec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn record() -> impl Strategy<Value = Rec> {
    (
        prop_oneof![any::<i64>(), 1_600_000_000_000i64..1_800_000_000_000],
        prop::option::of(bytes(40)),
        // Values long enough to need multi-byte lengths and several codec blocks.
        prop::option::of(prop_oneof![bytes(200), bytes(20_000)]),
        prop::collection::vec((bytes(12), prop::option::of(bytes(30))), 0..5),
    )
        .prop_map(|(timestamp, key, value, headers)| Rec {
            timestamp,
            key,
            value,
            headers,
        })
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn builder_output_reads_back_identically(
        records in prop::collection::vec(record(), 1..40),
        codec in codec(),
        base_offset in any::<i64>(),
        producer in (any::<i64>(), any::<i16>(), any::<i32>()),
        transactional in any::<bool>(),
        log_append in any::<bool>(),
    ) {
        let ts_type = if log_append { TimestampType::LogAppendTime } else { TimestampType::CreateTime };
        let mut b = BatchBuilder::new(codec)
            .base_offset(base_offset)
            .producer(producer.0, producer.1, producer.2)
            .transactional(transactional)
            .timestamp_type(ts_type);
        for r in &records {
            let hs: Vec<(&[u8], Option<&[u8]>)> =
                r.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
            let before = b.size_in_bytes();
            let predicted = b.record_size(r.timestamp, r.key.as_deref(), r.value.as_deref(), &hs);
            b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &hs).unwrap();
            prop_assert_eq!(b.size_in_bytes() - before, predicted);
        }
        let uncompressed_size = b.size_in_bytes();
        let sealed = b.seal().unwrap();
        if codec == Compression::None {
            prop_assert_eq!(sealed.len(), uncompressed_size);
        }
        let mut batches = RecordBatches::new(sealed.clone());
        let batch = batches.next().unwrap().unwrap();
        prop_assert!(batches.next().is_none());
        batch.verify_crc().unwrap();
        prop_assert_eq!(batch.compression(), codec);
        prop_assert_eq!(batch.base_offset(), base_offset);
        prop_assert_eq!(batch.producer_id(), producer.0);
        prop_assert_eq!(batch.producer_epoch(), producer.1);
        prop_assert_eq!(batch.base_sequence(), producer.2);
        prop_assert_eq!(batch.is_transactional(), transactional);
        prop_assert_eq!(batch.timestamp_type(), ts_type);
        prop_assert_eq!(batch.record_count() as usize, records.len());
        prop_assert_eq!(batch.last_offset_delta() as usize, records.len() - 1);
        prop_assert_eq!(batch.base_timestamp(), records[0].timestamp);
        prop_assert_eq!(batch.max_timestamp(), records.iter().map(|r| r.timestamp).max().unwrap());

        let mut scratch = Decompressor::new();
        let got: Vec<_> = batch.records(&mut scratch).unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got.len(), records.len());
        for (i, (rec, want)) in got.iter().zip(&records).enumerate() {
            prop_assert_eq!(rec.offset(), base_offset.wrapping_add(i as i64));
            prop_assert_eq!(rec.timestamp(), want.timestamp);
            prop_assert_eq!(rec.key(), want.key.as_deref());
            prop_assert_eq!(rec.value(), want.value.as_deref());
            let owned = rec.value_bytes();
            prop_assert_eq!(owned.as_deref(), want.value.as_deref());
            let hs: Vec<_> = rec.headers().collect();
            let want_hs: Vec<_> = want.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
            prop_assert_eq!(hs, want_hs);
            prop_assert_eq!(rec.header_count(), want.headers.len());
        }
    }

    #[test]
    fn any_single_byte_corruption_is_an_error_or_a_crc_mismatch_never_a_panic(
        records in prop::collection::vec(record(), 1..8),
        codec in codec(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut b = BatchBuilder::new(codec);
        for r in &records {
            let hs: Vec<(&[u8], Option<&[u8]>)> =
                r.headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
            b.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &hs).unwrap();
        }
        let mut bytes = b.seal().unwrap().to_vec();
        let at = flip.index(bytes.len());
        bytes[at] ^= 1 << bit;
        match RecordBatch::new(bytes.into()) {
            // Only the length, magic or codec fields can make the view itself fail.
            Err(e) => prop_assert!(matches!(at, 8..=11 | 16 | 21..=22), "{e} at {at}"),
            Ok(batch) => {
                // Bytes 12..=16 (leader epoch, magic) and 0..8 (base offset) are outside the CRC.
                let mut scratch = Decompressor::new();
                if at >= 17 {
                    prop_assert!(batch.verify_crc().is_err(), "flip at {at} must break the CRC");
                    // The checked way in hands out no record of a corrupt batch.
                    prop_assert!(
                        matches!(
                            batch.verified_records(&mut scratch),
                            Err(RecordError::CrcMismatch { .. })
                        ),
                        "flip at {at}: verified_records must refuse the batch"
                    );
                }
                if let Ok(records) = batch.records(&mut scratch) {
                    for r in records {
                        if r.is_err() { break; }
                    }
                }
            }
        }
    }
}

/// The decompression buffer keeps its old bytes as scratch space; a smaller batch after a
/// larger one must not see any of them.
#[test]
fn reused_decompressor_forgets_the_previous_batch() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut scratch = Decompressor::new();
        for (count, fill) in [(500usize, 1u8), (3, 2), (40, 3), (1, 4)] {
            let mut b = BatchBuilder::new(codec);
            for i in 0..count {
                b.append(i as i64, None, Some(&vec![fill; 100 + i % 50]), &[])
                    .unwrap();
            }
            let batch = RecordBatch::new(b.seal().unwrap()).unwrap();
            let records: Vec<_> = batch
                .records(&mut scratch)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{codec:?} batch of {count}: {e}"));
            assert_eq!(records.len(), count, "{codec:?}");
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.value(), Some(&vec![fill; 100 + i % 50][..]), "{codec:?}");
            }
        }
    }
}

#[test]
fn header_values_become_owned_bytes_without_copy_and_foreign_slices_are_refused() {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1, Some(b"k"), Some(b"v"), &[(b"trace", Some(b"abc"))])
        .unwrap();
    let batch = RecordBatch::new(b.seal().unwrap()).unwrap();
    let mut scratch = Decompressor::new();
    let rec = batch
        .records(&mut scratch)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let (_, value) = rec.headers().next().unwrap();
    let owned = rec.to_bytes(value.unwrap()).unwrap();
    assert_eq!(&owned[..], b"abc");
    assert_eq!(
        owned.as_ptr(),
        value.unwrap().as_ptr(),
        "shares the batch's memory"
    );
    let foreign = vec![1u8, 2, 3];
    assert!(rec.to_bytes(&foreign).is_none());
}

/// An owned value from a compressed batch stays intact while the decompressor moves on: the
/// buffer is only reused once nothing else holds it.
#[test]
fn owned_values_survive_the_next_decompression() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch_of = |fill: u8| {
            let mut b = BatchBuilder::new(codec);
            for _ in 0..20 {
                b.append(0, None, Some(&[fill; 300]), &[]).unwrap();
            }
            RecordBatch::new(b.seal().unwrap()).unwrap()
        };
        let (first, second) = (batch_of(1), batch_of(2));
        let mut scratch = Decompressor::new();
        let kept = first
            .records(&mut scratch)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .value_bytes()
            .unwrap();
        let n = second
            .records(&mut scratch)
            .unwrap()
            .map(|r| r.unwrap().value().unwrap()[0])
            .filter(|&b| b == 2)
            .count();
        assert_eq!(n, 20, "{codec:?}");
        assert_eq!(
            &kept[..],
            &[1u8; 300][..],
            "{codec:?}: kept value unchanged"
        );
    }
}
