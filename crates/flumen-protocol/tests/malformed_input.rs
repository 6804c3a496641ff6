//! Malformed input of each kind gives its typed error, with the byte offset of the bad field.

use bytes::Bytes;
use flumen_protocol::record::{
    BatchBuilder, Compression, Decompressor, HEADER_LEN, RecordBatch, RecordBatches, RecordError,
};

fn one_record_batch(compression: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new(compression);
    b.append(5, Some(b"k"), Some(b"value"), &[(b"h", Some(b"v"))])
        .unwrap();
    b.seal().unwrap().to_vec()
}

/// Recomputes the CRC after a deliberate edit, so the record parser (not the CRC) sees it.
fn refresh_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn first_record_error(batch: Vec<u8>) -> RecordError {
    let batch = RecordBatch::new(Bytes::from(batch)).expect("framing is valid");
    batch.verify_crc().expect("crc refreshed");
    let mut scratch = Decompressor::new();
    match batch.records(&mut scratch) {
        Err(e) => e,
        Ok(mut records) => records
            .find_map(Result::err)
            .expect("an error while iterating"),
    }
}

#[test]
fn input_shorter_than_the_length_prefix_is_truncated_at_zero() {
    let err = RecordBatch::new(Bytes::from_static(&[0; 5])).unwrap_err();
    assert!(
        matches!(err, RecordError::Truncated { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn batch_cut_short_is_truncated() {
    let mut b = one_record_batch(Compression::None);
    b.truncate(b.len() - 1);
    let err = RecordBatch::new(Bytes::from(b)).unwrap_err();
    assert!(
        matches!(err, RecordError::Truncated { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn magic_v1_is_unsupported_at_byte_16() {
    let mut b = one_record_batch(Compression::None);
    b[16] = 1;
    let err = RecordBatch::new(Bytes::from(b)).unwrap_err();
    assert_eq!(
        err,
        RecordError::UnsupportedMagic {
            offset: 16,
            magic: 1
        }
    );
    assert_eq!(err.offset(), Some(16));
}

#[test]
fn batch_length_below_the_header_is_invalid_at_byte_8() {
    let mut b = one_record_batch(Compression::None);
    b[8..12].copy_from_slice(&10i32.to_be_bytes());
    let err = RecordBatch::new(Bytes::from(b)).unwrap_err();
    assert_eq!(
        err,
        RecordError::InvalidBatchLength {
            offset: 8,
            length: 10
        }
    );
}

#[test]
fn codec_6_is_unknown_at_byte_21() {
    let mut b = one_record_batch(Compression::None);
    b[22] |= 6;
    let err = RecordBatch::new(Bytes::from(b)).unwrap_err();
    assert_eq!(
        err,
        RecordError::UnknownCompression {
            offset: 21,
            codec: 6
        }
    );
}

#[test]
fn flipped_payload_bit_is_a_crc_mismatch_at_byte_17() {
    let mut b = one_record_batch(Compression::None);
    let last = b.len() - 1;
    b[last] ^= 0x40;
    let batch = RecordBatch::new(Bytes::from(b)).unwrap();
    let err = batch.verify_crc().unwrap_err();
    assert!(
        matches!(err, RecordError::CrcMismatch { offset: 17, .. }),
        "{err}"
    );
}

#[test]
fn overlong_varint_is_malformed_at_its_first_byte() {
    let mut b = one_record_batch(Compression::None);
    // Record length varint at 61: replace the record with continuation bytes.
    for byte in &mut b[HEADER_LEN..] {
        *byte = 0xff;
    }
    refresh_crc(&mut b);
    let err = first_record_error(b);
    assert_eq!(
        err,
        RecordError::MalformedVarint {
            offset: HEADER_LEN,
            in_decompressed: false
        }
    );
}

#[test]
fn key_length_past_the_record_is_invalid_at_the_length_field() {
    let mut b = one_record_batch(Compression::None);
    // length(1) attributes(1) tsDelta(1) offsetDelta(1) -> key length at 61 + 4.
    let key_len_at = HEADER_LEN + 4;
    b[key_len_at] = 2 * 50; // zigzag(50)
    refresh_crc(&mut b);
    let err = first_record_error(b);
    assert_eq!(
        err,
        RecordError::InvalidLength {
            offset: key_len_at,
            length: 50,
            in_decompressed: false
        }
    );
}

#[test]
fn negative_value_length_other_than_null_is_invalid() {
    let mut b = one_record_batch(Compression::None);
    let value_len_at = HEADER_LEN + 4 + 2; // after key length (1) and key "k" (1)
    b[value_len_at] = 3; // zigzag(-2)
    refresh_crc(&mut b);
    let err = first_record_error(b);
    assert_eq!(
        err,
        RecordError::InvalidLength {
            offset: value_len_at,
            length: -2,
            in_decompressed: false
        }
    );
}

#[test]
fn header_count_larger_than_the_record_is_an_error_not_an_allocation() {
    let mut b = one_record_batch(Compression::None);
    // Record: len attr ts off keylen k vallen "value" hcount ...
    let hcount_at = HEADER_LEN + 4 + 2 + 1 + 5;
    assert_eq!(b[hcount_at], 2, "one header");
    b[hcount_at] = 0x7e; // 63 headers
    refresh_crc(&mut b);
    let err = first_record_error(b);
    assert!(err.offset().is_some(), "{err}");
}

#[test]
fn declared_count_above_the_records_present_is_a_count_mismatch() {
    let mut b = one_record_batch(Compression::None);
    b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    refresh_crc(&mut b);
    let len = b.len();
    let err = first_record_error(b);
    assert_eq!(
        err,
        RecordError::RecordCountMismatch {
            offset: len,
            declared: i32::MAX,
            found: 1,
            in_decompressed: false
        }
    );
}

#[test]
fn negative_record_count_is_rejected_before_iterating() {
    let mut b = one_record_batch(Compression::None);
    b[57..61].copy_from_slice(&(-5i32).to_be_bytes());
    refresh_crc(&mut b);
    let err = first_record_error(b);
    assert!(
        matches!(
            err,
            RecordError::RecordCountMismatch {
                offset: 57,
                declared: -5,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bytes_after_the_declared_records_are_reported() {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1, None, Some(b"a"), &[]).unwrap();
    b.append(2, None, Some(b"b"), &[]).unwrap();
    let mut b = b.seal().unwrap().to_vec();
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    refresh_crc(&mut b);
    let err = first_record_error(b);
    assert!(
        matches!(
            err,
            RecordError::TrailingBytes {
                offset: 69,
                remaining: 8,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn zstd_bomb_hits_the_cap_not_the_allocator() {
    let mut b = BatchBuilder::new(Compression::Zstd);
    let zeros = vec![0u8; 4 << 20];
    b.append(0, None, Some(&zeros), &[]).unwrap();
    let batch = RecordBatch::new(b.seal().unwrap()).unwrap();
    assert!(
        batch.encoded_len() < 2000,
        "4 MiB of zeros compresses to almost nothing"
    );
    let mut scratch = Decompressor::with_limit(1 << 20);
    let err = batch.records(&mut scratch).unwrap_err();
    assert_eq!(
        err,
        RecordError::DecompressedTooLarge {
            offset: HEADER_LEN,
            codec: Compression::Zstd,
            limit: 1 << 20
        }
    );
}

#[test]
fn every_codec_enforces_the_cap() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut b = BatchBuilder::new(codec);
        b.append(0, None, Some(&vec![1u8; 300_000]), &[]).unwrap();
        let batch = RecordBatch::new(b.seal().unwrap()).unwrap();
        let mut scratch = Decompressor::with_limit(100_000);
        let err = batch.records(&mut scratch).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::DecompressedTooLarge { limit: 100_000, .. }
            ),
            "{codec:?}: {err}"
        );
        // The same batch under a sufficient cap decodes.
        let mut scratch = Decompressor::with_limit(400_000);
        assert_eq!(batch.records(&mut scratch).unwrap().count(), 1, "{codec:?}");
    }
}

#[test]
fn garbage_compressed_payload_is_a_decompression_error_at_the_payload() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut b = one_record_batch(codec);
        for byte in &mut b[HEADER_LEN..] {
            *byte = 0xA5;
        }
        refresh_crc(&mut b);
        let err = first_record_error(b);
        assert!(
            matches!(
                err,
                RecordError::Decompression {
                    offset: HEADER_LEN,
                    ..
                }
            ),
            "{codec:?}: {err}"
        );
    }
}

#[test]
fn blob_errors_point_into_the_blob() {
    let good = one_record_batch(Compression::None);
    let mut bad = good.clone();
    bad[16] = 0;
    let mut blob = good.clone();
    blob.extend_from_slice(&bad);
    let mut it = RecordBatches::new(Bytes::from(blob));
    assert!(it.next().unwrap().is_ok());
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(
        err,
        RecordError::UnsupportedMagic {
            offset: good.len() + 16,
            magic: 0
        }
    );
    assert!(it.next().is_none(), "iteration stops after an error");
}

#[test]
fn corrupt_length_in_a_blob_is_an_error_not_a_partial_tail() {
    let mut b = one_record_batch(Compression::None);
    b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    let err = RecordBatches::new(Bytes::from(b))
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::InvalidBatchLength {
                offset: 8,
                length: -1
            }
        ),
        "{err}"
    );
}
