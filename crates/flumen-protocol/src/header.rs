//! Request and response headers: which version goes with which API version, and whole-frame encode/decode.
//!
//! Kafka picks the header version from the API key and version (flexible versions use request
//! header v2 / response header v1 with tagged fields; ApiVersions responses always use v0 so a
//! client can parse them before it knows anything). kafka-protocol knows the mapping; this
//! module frames requests into one exactly-sized buffer and decodes responses from `Bytes`, so
//! byte fields (records) in a response are slices of the received frame, not copies.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::frame::{LENGTH_PREFIX_BYTES, frame_len_prefix};
use crate::messages::{
    ApiKey, Decodable, Encodable, HeaderVersion, Message, Request, RequestHeader, ResponseHeader,
    StrBytes,
};

/// The short type name of a message, e.g. `"MetadataRequest"`, for errors and logs.
pub fn api_name<R>() -> &'static str {
    let full = std::any::type_name::<R>();
    full.rsplit("::").next().unwrap_or(full)
}

/// The request header version for `key` at `version`.
pub fn request_header_version(key: ApiKey, version: i16) -> i16 {
    key.request_header_version(version)
}

/// The response header version for `key` at `version`.
pub fn response_header_version(key: ApiKey, version: i16) -> i16 {
    key.response_header_version(version)
}

/// Checks that `R` can be written at `version`.
pub fn check_version<R: Message>(version: i16) -> Result<()> {
    let range = R::VERSIONS;
    if version < range.min || version > range.max {
        return Err(Error::UnsupportedVersion {
            api: api_name::<R>(),
            version,
            min: range.min,
            max: range.max,
        });
    }
    Ok(())
}

/// Encodes `request` with its header as one complete frame (length prefix included).
///
/// The buffer is allocated once, at its exact final size.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<&StrBytes>,
) -> Result<BytesMut> {
    check_version::<R>(version)?;
    let api = api_name::<R>();
    let encode_err = |e: &dyn std::fmt::Display| Error::Encode {
        api,
        version,
        message: e.to_string(),
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.cloned());
    let header_version = R::header_version(version);
    let size = header
        .compute_size(header_version)
        .map_err(|e| encode_err(&e))?
        + request.compute_size(version).map_err(|e| encode_err(&e))?;
    let prefix = frame_len_prefix(size)?;
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + size);
    buf.put_i32(prefix);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| encode_err(&e))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| encode_err(&e))?;
    if buf.len() != LENGTH_PREFIX_BYTES + size {
        return Err(Error::Encode {
            api,
            version,
            message: format!(
                "computed size {size} but wrote {}",
                buf.len() - LENGTH_PREFIX_BYTES
            ),
        });
    }
    Ok(buf)
}

/// The correlation id at the start of a response frame (the same place in every header version).
pub fn response_correlation_id(frame: &[u8]) -> Result<i32> {
    match frame.first_chunk::<4>() {
        Some(id) => Ok(i32::from_be_bytes(*id)),
        None => Err(Error::Truncated {
            what: "response header",
            needed: 4,
            available: frame.len(),
        }),
    }
}

/// Decodes the response header at the front of `frame`, leaving the body in `frame`.
pub fn decode_response_header(
    frame: &mut Bytes,
    key: ApiKey,
    version: i16,
) -> Result<ResponseHeader> {
    let header_version = key.response_header_version(version);
    ResponseHeader::decode(frame, header_version).map_err(|e| Error::Decode {
        api: "ResponseHeader",
        version: header_version,
        message: e.to_string(),
    })
}

/// Decodes a whole response frame (header and body) for request type `R` sent at `version`.
///
/// Returns the response header (with the correlation id) and the body. The body must use up
/// the frame exactly.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
) -> Result<(ResponseHeader, R::Response)> {
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(|e| Error::Decode {
        api: "ResponseHeader",
        version: header_version,
        message: e.to_string(),
    })?;
    let api = api_name::<R::Response>();
    let body = R::Response::decode(&mut frame, version).map_err(|e| Error::Decode {
        api,
        version,
        message: e.to_string(),
    })?;
    if !frame.is_empty() {
        return Err(Error::TrailingBytes {
            api,
            version,
            extra: frame.len(),
        });
    }
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;
    use crate::messages::{
        ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse,
    };
    use proptest::prelude::*;

    fn all_key_versions() -> impl Strategy<Value = (ApiKey, i16)> {
        let keys: Vec<ApiKey> = ApiKey::iter().collect();
        prop::sample::select(keys).prop_flat_map(|key| {
            let range = key.valid_versions();
            (Just(key), range.min..=range.max)
        })
    }

    proptest! {
        #[test]
        fn request_header_round_trips_for_every_api_and_version(
            (key, version) in all_key_versions(),
            correlation_id in any::<i32>(),
            client_id in proptest::option::of("[a-z0-9.-]{0,20}"),
        ) {
            let header = RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(version)
                .with_correlation_id(correlation_id)
                .with_client_id(client_id.map(StrBytes::from_string));
            let hv = request_header_version(key, version);
            let mut buf = BytesMut::new();
            header.encode(&mut buf, hv).unwrap();
            let decoded = RequestHeader::decode(&mut buf.freeze(), hv).unwrap();
            prop_assert_eq!(decoded, header);
        }

        #[test]
        fn response_header_round_trips_for_every_api_and_version(
            (key, version) in all_key_versions(),
            correlation_id in any::<i32>(),
        ) {
            let header = ResponseHeader::default().with_correlation_id(correlation_id);
            let hv = response_header_version(key, version);
            let mut buf = BytesMut::new();
            header.encode(&mut buf, hv).unwrap();
            buf.put_slice(b"body");
            let mut frame = buf.freeze();
            prop_assert_eq!(response_correlation_id(&frame), Ok(correlation_id));
            let decoded = decode_response_header(&mut frame, key, version).unwrap();
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(&frame[..], b"body");
        }
    }

    fn round_trip_request<R: Request + PartialEq + std::fmt::Debug>(request: R) {
        for version in R::VERSIONS.min..=R::VERSIONS.max {
            let mut wire =
                encode_request(&request, version, 7, Some(&StrBytes::from_static_str("t")))
                    .unwrap();
            let mut frame = FrameDecoder::default().decode(&mut wire).unwrap().unwrap();
            let header = RequestHeader::decode(&mut frame, R::header_version(version)).unwrap();
            assert_eq!(header.request_api_key, R::KEY);
            assert_eq!(header.request_api_version, version);
            assert_eq!(header.correlation_id, 7);
            assert_eq!(
                R::decode(&mut frame, version).unwrap(),
                request,
                "v{version}"
            );
            assert!(frame.is_empty());
        }
    }

    fn round_trip_response<R: Request>(response: R::Response)
    where
        R::Response: PartialEq + std::fmt::Debug,
    {
        for version in R::VERSIONS.min..=R::VERSIONS.max {
            let hv = <R::Response as HeaderVersion>::header_version(version);
            let mut buf = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(42)
                .encode(&mut buf, hv)
                .unwrap();
            response.encode(&mut buf, version).unwrap();
            let (header, body) = decode_response::<R>(buf.freeze(), version).unwrap();
            assert_eq!(header.correlation_id, 42);
            assert_eq!(body, response, "v{version}");
        }
    }

    #[test]
    fn requests_round_trip_at_every_version() {
        round_trip_request(ApiVersionsRequest::default());
        round_trip_request(MetadataRequest::default().with_topics(Some(vec![])));
        round_trip_request(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000),
        );
    }

    #[test]
    fn responses_round_trip_at_every_version() {
        round_trip_response::<ApiVersionsRequest>(ApiVersionsResponse::default());
        round_trip_response::<MetadataRequest>(MetadataResponse::default());
        round_trip_response::<ProduceRequest>(ProduceResponse::default());
    }

    #[test]
    fn fetched_records_are_slices_of_the_frame() {
        use crate::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use crate::messages::{FetchRequest, FetchResponse};

        let records = Bytes::from(vec![0xab; 4096]);
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(vec![
                PartitionData::default().with_records(Some(records.clone())),
            ]),
        ]);
        let version = 12;
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .encode(
                &mut buf,
                <FetchResponse as HeaderVersion>::header_version(version),
            )
            .unwrap();
        response.encode(&mut buf, version).unwrap();
        let frame = buf.freeze();
        let range = frame.as_ptr_range();
        let (_, decoded) = decode_response::<FetchRequest>(frame.clone(), version).unwrap();
        let got = decoded.responses[0].partitions[0].records.as_ref().unwrap();
        assert_eq!(got, &records);
        // Zero-copy: the decoded bytes point into the received frame.
        assert!(range.contains(&got.as_ptr()));
    }

    #[test]
    fn unsupported_version_is_refused() {
        let err = encode_request(&ApiVersionsRequest::default(), 99, 1, None).unwrap_err();
        assert!(matches!(
            err,
            Error::UnsupportedVersion {
                api: "ApiVersionsRequest",
                version: 99,
                ..
            }
        ));
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let mut buf = BytesMut::new();
        ResponseHeader::default().encode(&mut buf, 0).unwrap();
        ApiVersionsResponse::default().encode(&mut buf, 0).unwrap();
        buf.put_u8(0);
        let err = decode_response::<ApiVersionsRequest>(buf.freeze(), 0).unwrap_err();
        assert!(
            matches!(err, Error::TrailingBytes { extra: 1, .. }),
            "{err}"
        );
    }
}
