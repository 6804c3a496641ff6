//! Feeds arbitrary bytes, in arbitrary chunks, through `FrameDecoder`, then decodes each frame's
//! response header and a few response bodies: nothing may panic, hang or allocate without bound.
#![no_main]

use bytes::BytesMut;
use flumen_protocol::frame::FrameDecoder;
use flumen_protocol::header::{decode_response, decode_response_header, response_correlation_id};
use flumen_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest,
};
use libfuzzer_sys::fuzz_target;

/// Header versions 0 and 1 both get exercised: ApiVersions always answers with v0,
/// the others switch to v1 at their first flexible version.
const KEYS: [(ApiKey, i16); 6] = [
    (ApiKey::ApiVersions, 3),
    (ApiKey::Metadata, 8),
    (ApiKey::Metadata, 12),
    (ApiKey::Fetch, 11),
    (ApiKey::Fetch, 16),
    (ApiKey::Produce, 9),
];

fuzz_target!(|data: &[u8]| {
    // Byte 0: frame cap (0..=255 plus a small base, so oversized prefixes are common).
    // Bytes 1..9: chunk sizes (each 0..=15, 0 meaning "feed nothing this round").
    // Byte 9: whether to finish with decode_eof. The rest is the stream.
    if data.len() < 10 {
        return;
    }
    let max = usize::from(data[0]) * 4;
    let chunks: Vec<usize> = data[1..9].iter().map(|b| usize::from(b & 0x0f)).collect();
    let eof = data[9] & 1 == 1;
    let mut stream = &data[10..];
    let decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut round = 0usize;
    // Every round either feeds a byte or decodes a frame, so this terminates.
    let mut stalls = 0;
    loop {
        let want = chunks[round % chunks.len()];
        round += 1;
        let take = want.min(stream.len());
        buf.extend_from_slice(&stream[..take]);
        stream = &stream[take..];
        let _ = decoder.peek_len(&buf);
        let mut progressed = take > 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    progressed = true;
                    assert!(frame.len() <= max);
                    check_frame(frame);
                }
                Ok(None) => break,
                // A bad prefix poisons the connection: a real reader drops it.
                Err(_) => return,
            }
        }
        if stream.is_empty() {
            break;
        }
        stalls = if progressed { 0 } else { stalls + 1 };
        if stalls > chunks.len() {
            // All chunk sizes are zero: feed the rest at once.
            buf.extend_from_slice(stream);
            stream = &[];
        }
    }
    if eof {
        while let Ok(Some(frame)) = decoder.decode_eof(&mut buf) {
            check_frame(frame);
        }
    }
});

fn check_frame(frame: bytes::Bytes) {
    let _ = response_correlation_id(&frame);
    for (key, version) in KEYS {
        let mut body = frame.clone();
        let _ = decode_response_header(&mut body, key, version);
    }
    let _ = decode_response::<ApiVersionsRequest>(frame.clone(), 3);
    let _ = decode_response::<MetadataRequest>(frame.clone(), 12);
    let _ = decode_response::<MetadataRequest>(frame.clone(), 1);
    let _ = decode_response::<FetchRequest>(frame.clone(), 16);
    let _ = decode_response::<ProduceRequest>(frame, 9);
}
