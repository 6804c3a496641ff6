//! Cross-checks with the `kafka-protocol` crate's record codec, in both directions and for every
//! codec: its encoder's batches read correctly through our view, and our builder's batches
//! decode correctly with its decoder.

use bytes::{Bytes, BytesMut};
use flumen_protocol::messages::StrBytes;
use flumen_protocol::record::{BatchBuilder, Compression, Decompressor, RecordBatches};
use kafka_protocol::records::{
    Compression as KpCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType as KpTimestampType,
};

const CODECS: [(Compression, KpCompression); 5] = [
    (Compression::None, KpCompression::None),
    (Compression::Gzip, KpCompression::Gzip),
    (Compression::Snappy, KpCompression::Snappy),
    (Compression::Lz4, KpCompression::Lz4),
    (Compression::Zstd, KpCompression::Zstd),
];

struct Sample {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    // kafka-protocol keeps headers in a map: keys are unique here.
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            timestamp: 1_700_000_000_000 + (i as i64 * 13) % 97 - 40,
            key: (i % 7 != 2).then(|| format!("k{i}").into_bytes()),
            value: (i % 11 != 4).then(|| vec![(i % 251) as u8; i * 37 % 3000]),
            headers: (0..i % 3)
                .map(|h| {
                    (
                        format!("hdr{h}"),
                        (h != 1).then(|| format!("v{i}.{h}").into_bytes()),
                    )
                })
                .collect(),
        })
        .collect()
}

#[test]
fn kafka_protocol_batches_read_through_our_view() {
    let samples = samples(300);
    for (ours, theirs) in CODECS {
        let base_offset = 5_000;
        let records: Vec<Record> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 9,
                producer_id: 77,
                producer_epoch: 3,
                timestamp_type: KpTimestampType::Creation,
                offset: base_offset + i as i64,
                sequence: 40 + i as i32,
                timestamp: s.timestamp,
                key: s.key.clone().map(Bytes::from),
                value: s.value.clone().map(Bytes::from),
                headers: s
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: theirs,
            },
        )
        .unwrap();
        let mut scratch = Decompressor::new();
        let mut n = 0usize;
        for batch in RecordBatches::new(buf.freeze()) {
            let batch = batch.unwrap();
            batch.verify_crc().unwrap();
            assert_eq!(batch.compression(), ours);
            assert!(batch.is_transactional());
            assert_eq!(batch.producer_id(), 77);
            assert_eq!(batch.producer_epoch(), 3);
            assert_eq!(batch.partition_leader_epoch(), 9);
            assert_eq!(
                batch.base_sequence(),
                40 + (batch.base_offset() - base_offset) as i32
            );
            for rec in batch.records(&mut scratch).unwrap() {
                let rec = rec.unwrap();
                let s = &samples[n];
                assert_eq!(rec.offset(), base_offset + n as i64, "{ours:?}");
                assert_eq!(rec.timestamp(), s.timestamp, "{ours:?}");
                assert_eq!(rec.key(), s.key.as_deref(), "{ours:?}");
                assert_eq!(rec.value(), s.value.as_deref(), "{ours:?}");
                let hs: Vec<_> = rec.headers().collect();
                let want: Vec<_> = s
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                    .collect();
                assert_eq!(hs, want, "{ours:?}");
                n += 1;
            }
        }
        assert_eq!(n, samples.len(), "{ours:?}");
    }
}

#[test]
fn our_batches_decode_with_kafka_protocol() {
    let samples = samples(300);
    for (ours, theirs) in CODECS {
        // Two batches back to back, as a produce request would carry them.
        let mut blob = BytesMut::new();
        for (part, chunk) in samples.chunks(150).enumerate() {
            let mut b = BatchBuilder::new(ours)
                .base_offset(part as i64 * 150)
                .producer(12, 1, part as i32 * 150)
                .transactional(true);
            for s in chunk {
                let hs: Vec<(&[u8], Option<&[u8]>)> = s
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                    .collect();
                b.append(s.timestamp, s.key.as_deref(), s.value.as_deref(), &hs)
                    .unwrap();
            }
            blob.extend_from_slice(&b.seal().unwrap());
        }
        let mut blob = blob.freeze();
        let sets = RecordBatchDecoder::decode_all(&mut blob).unwrap();
        let records: Vec<_> = sets.iter().flat_map(|s| &s.records).collect();
        assert_eq!(records.len(), samples.len(), "{ours:?}");
        for set in &sets {
            assert_eq!(set.compression, theirs);
        }
        for (i, (r, s)) in records.iter().zip(&samples).enumerate() {
            assert_eq!(r.offset, i as i64, "{ours:?}");
            assert_eq!(r.sequence, i as i32, "{ours:?}");
            assert_eq!(r.producer_id, 12);
            assert!(r.transactional);
            assert_eq!(r.timestamp, s.timestamp, "{ours:?}");
            assert_eq!(r.key.as_deref(), s.key.as_deref(), "{ours:?}");
            assert_eq!(r.value.as_deref(), s.value.as_deref(), "{ours:?}");
            let hs: Vec<_> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                .collect();
            let want: Vec<_> = s
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                .collect();
            assert_eq!(hs, want, "{ours:?}");
        }
    }
}
