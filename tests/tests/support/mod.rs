//! Helpers shared by the connection tests: a scripted fake broker on 127.0.0.1.

#![allow(dead_code)]

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flumen_protocol::messages::api_versions_response::ApiVersion;
use flumen_protocol::messages::{
    ApiKey, ApiVersionsResponse, Decodable, Encodable, RequestHeader, ResponseHeader,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests larger than this are a bug in the client under test.
const MAX_REQUEST: usize = 1 << 20;

/// A listener on a free loopback port and its `host:port`.
pub async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr").to_string();
    (listener, addr)
}

/// One request as the fake broker sees it.
pub struct Received {
    pub header: RequestHeader,
    pub body: Bytes,
}

impl Received {
    pub fn key(&self) -> ApiKey {
        ApiKey::try_from(self.header.request_api_key).expect("known API key")
    }

    pub fn decode<T: Decodable>(&self) -> T {
        T::decode(&mut self.body.clone(), self.header.request_api_version)
            .expect("decodable request")
    }
}

/// Reads one request frame; `None` when the client closed the connection.
pub async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let len = usize::try_from(i32::from_be_bytes(len)).expect("non-negative request length");
    assert!(len <= MAX_REQUEST, "request of {len} bytes");
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await.ok()?;
    let mut frame = Bytes::from(frame);
    let key = ApiKey::try_from((&frame[..2]).get_i16()).expect("known API key");
    let version = (&frame[2..4]).get_i16();
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .expect("request header");
    Some(Received {
        header,
        body: frame,
    })
}

/// Writes `body` as the response to `request`, in the layout of the request's version.
pub async fn respond<T: Encodable>(stream: &mut TcpStream, request: &Received, body: &T) {
    let _ = stream.write_all(&encode_response(request, body)).await;
}

/// `body` as the framed response to `request` (length prefix included).
pub fn encode_response<T: Encodable>(request: &Received, body: &T) -> Vec<u8> {
    let version = request.header.request_api_version;
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(request.header.correlation_id)
        .encode(&mut buf, request.key().response_header_version(version))
        .expect("response header");
    body.encode(&mut buf, version).expect("response body");
    let len = i32::try_from(buf.len() - 4).expect("frame under 2 GiB");
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// Writes one length-prefixed frame.
pub async fn write_frame(stream: &mut TcpStream, payload: &[u8]) {
    let mut out = BytesMut::with_capacity(4 + payload.len());
    out.put_i32(i32::try_from(payload.len()).expect("small frame"));
    out.put_slice(payload);
    let _ = stream.write_all(&out).await;
}

/// The versions the fake broker announces.
pub fn api_versions() -> ApiVersionsResponse {
    let range = |key: ApiKey, max: i16| {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(key.valid_versions().min)
            .with_max_version(max)
    };
    ApiVersionsResponse::default().with_api_keys(vec![
        range(ApiKey::ApiVersions, 4),
        range(ApiKey::Metadata, 12),
        range(ApiKey::SaslHandshake, 1),
        range(ApiKey::SaslAuthenticate, 2),
    ])
}

/// Reads the client's ApiVersions request and answers it.
pub async fn answer_api_versions(stream: &mut TcpStream) {
    let request = read_request(stream).await.expect("ApiVersions request");
    assert_eq!(request.key(), ApiKey::ApiVersions);
    respond(stream, &request, &api_versions()).await;
}

/// Accepts one connection, answers ApiVersions, reads the next request and hands the
/// stream and that request to `then`.
pub async fn misbehaving_peer<F, Fut>(then: F) -> String
where
    F: FnOnce(TcpStream, Received) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        answer_api_versions(&mut stream).await;
        if let Some(request) = read_request(&mut stream).await {
            then(stream, request).await;
        }
    });
    addr
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}
