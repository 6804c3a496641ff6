//! Readiness probes: real Kafka requests (ApiVersions, Metadata) sent to a listener.
//!
//! A listener is ready when it answers ApiVersions without error (over TLS for an SSL
//! listener; before authentication for a SASL listener, as Kafka allows), and a broker has
//! joined when the cluster's Metadata lists every broker. There is no fixed sleep: callers
//! poll with a short interval until a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Responses larger than this are refused (the probes ask for tiny answers).
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Per-socket-operation timeout of a probe.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait between two probes of a listener that is not ready yet.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How to talk to a listener.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Plain TCP (PLAINTEXT and SASL_PLAINTEXT listeners).
    Plain,
    /// TLS with this client configuration (SSL listener).
    Tls(Arc<rustls::ClientConfig>),
}

/// Sends ApiVersions to `addr` and checks the answer carries no error.
pub(crate) fn api_versions(addr: &str, transport: &Transport) -> Result<(), String> {
    const VERSION: i16 = 3;
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("flumen-testcontainers"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let mut body = exchange(addr, transport, ApiKey::ApiVersions, VERSION, &request)?;
    let response = ApiVersionsResponse::decode(&mut body, VERSION)
        .map_err(|e| format!("undecodable ApiVersions response: {e}"))?;
    if response.error_code != 0 {
        return Err(format!(
            "ApiVersions answered error code {}",
            response.error_code
        ));
    }
    Ok(())
}

/// Sends Metadata (no topics) to a PLAINTEXT listener and returns the ids of the brokers
/// the cluster reports as alive.
pub(crate) fn metadata_brokers(addr: &str) -> Result<Vec<i32>, String> {
    const VERSION: i16 = 12;
    let request = MetadataRequest::default().with_topics(Some(Vec::new()));
    let mut body = exchange(addr, &Transport::Plain, ApiKey::Metadata, VERSION, &request)?;
    let response = MetadataResponse::decode(&mut body, VERSION)
        .map_err(|e| format!("undecodable Metadata response: {e}"))?;
    Ok(response.brokers.iter().map(|b| b.node_id.0).collect())
}

fn exchange<R: Encodable>(
    addr: &str,
    transport: &Transport,
    key: ApiKey,
    version: i16,
    request: &R,
) -> Result<Bytes, String> {
    let sock_addr: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let tcp = TcpStream::connect_timeout(&sock_addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;

    let frame = encode_request(key, version, request)?;
    match transport {
        Transport::Plain => round_trip(tcp, &frame, key, version),
        Transport::Tls(config) => {
            let name =
                rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let conn = rustls::ClientConnection::new(Arc::clone(config), name)
                .map_err(|e| format!("TLS setup: {e}"))?;
            round_trip(rustls::StreamOwned::new(conn, tcp), &frame, key, version)
        }
    }
}

fn encode_request<R: Encodable>(key: ApiKey, version: i16, request: &R) -> Result<Vec<u8>, String> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("flumen-testcontainers")));
    let mut buf = BytesMut::new();
    buf.put_i32(0); // length, patched below
    header
        .encode(&mut buf, key.request_header_version(version))
        .map_err(|e| format!("encoding request header: {e}"))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| format!("encoding request: {e}"))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| "request too large".to_owned())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.to_vec())
}

fn round_trip<S: Read + Write>(
    mut stream: S,
    frame: &[u8],
    key: ApiKey,
    version: i16,
) -> Result<Bytes, String> {
    stream
        .write_all(frame)
        .map_err(|e| format!("sending request: {e}"))?;
    stream
        .flush()
        .map_err(|e| format!("sending request: {e}"))?;
    let mut len_buf = [0u8; 4];
    stream
        .read_exact(&mut len_buf)
        .map_err(|e| format!("reading response length: {e}"))?;
    let len = usize::try_from(i32::from_be_bytes(len_buf))
        .map_err(|_| "negative response length".to_owned())?;
    if len > MAX_RESPONSE_BYTES {
        return Err(format!(
            "response of {len} bytes exceeds the probe's {MAX_RESPONSE_BYTES} byte limit"
        ));
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("reading response: {e}"))?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
        .map_err(|e| format!("undecodable response header: {e}"))?;
    if header.correlation_id != 1 {
        return Err(format!(
            "unexpected correlation id {}",
            header.correlation_id
        ));
    }
    if !body.has_remaining() {
        return Err("empty response body".to_owned());
    }
    Ok(body)
}
