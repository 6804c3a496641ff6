//! Behaviour that needs a broker configured in ways the test cluster is not: scripted fake
//! brokers on 127.0.0.1 for KIP-368 re-authentication, the ApiVersions fallback, and answers
//! that arrive in pieces.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use flumen_client::{Connection, ConnectionConfig, Error, SaslConfig, SaslMechanism, Security};
use flumen_protocol::ErrorCode;
use flumen_protocol::messages::api_versions_response::ApiVersion;
use flumen_protocol::messages::{
    ApiKey, ApiVersionsResponse, MetadataRequest, MetadataResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, StrBytes,
};
use tokio::time::Instant;

use support::{api_versions, listen, read_request, respond};

const SESSION: Duration = Duration::from_millis(400);

#[derive(Default)]
struct SaslBrokerLog {
    authentications: AtomicUsize,
    /// A request arrived between SaslHandshake and the end of SaslAuthenticate.
    interleaved: AtomicBool,
    /// A request arrived after the session had expired.
    expired: AtomicBool,
}

/// A broker with a SASL PLAIN listener that grants sessions of [`SESSION`] and closes the
/// connection on any request after a session expired, as a real broker does.
async fn sasl_broker(log: Arc<SaslBrokerLog>) -> String {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut expires: Option<Instant> = None;
        let mut authenticating = false;
        while let Some(request) = read_request(&mut stream).await {
            match request.key() {
                ApiKey::ApiVersions => respond(&mut stream, &request, &api_versions()).await,
                ApiKey::SaslHandshake => {
                    let hs: SaslHandshakeRequest = request.decode();
                    assert_eq!(hs.mechanism.as_str(), "PLAIN");
                    authenticating = true;
                    let response = SaslHandshakeResponse::default()
                        .with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
                    respond(&mut stream, &request, &response).await;
                }
                ApiKey::SaslAuthenticate => {
                    let auth: SaslAuthenticateRequest = request.decode();
                    assert_eq!(&auth.auth_bytes[..], b"\0alice\0secret");
                    authenticating = false;
                    expires = Some(Instant::now() + SESSION);
                    log.authentications.fetch_add(1, Ordering::SeqCst);
                    let response = SaslAuthenticateResponse::default()
                        .with_session_lifetime_ms(SESSION.as_millis() as i64);
                    respond(&mut stream, &request, &response).await;
                }
                _ => {
                    if authenticating {
                        log.interleaved.store(true, Ordering::SeqCst);
                    }
                    if expires.is_none_or(|at| Instant::now() > at) {
                        log.expired.store(true, Ordering::SeqCst);
                        return;
                    }
                    respond(&mut stream, &request, &MetadataResponse::default()).await;
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "current_thread")]
async fn sasl_session_is_renewed_before_it_expires() {
    let log = Arc::new(SaslBrokerLog::default());
    let addr = sasl_broker(log.clone()).await;
    let config = ConnectionConfig {
        security: Security::SaslPlaintext(SaslConfig::new(SaslMechanism::Plain, "alice", "secret")),
        ..ConnectionConfig::default()
    };
    let conn = Connection::connect(&addr, &config).await.expect("connect");
    // Keep requests flowing across three session lifetimes.
    let deadline = Instant::now() + SESSION * 3;
    let mut answered = 0;
    while Instant::now() < deadline {
        let batch = futures::future::join_all(
            (0..5).map(|_| conn.send(MetadataRequest::default().with_topics(Some(vec![])))),
        )
        .await;
        for response in batch {
            response.expect("request during re-authentication");
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!conn.is_closed(), "{:?}", conn.close_reason());
    assert!(answered > 50, "only {answered} requests answered");
    assert!(log.authentications.load(Ordering::SeqCst) >= 3);
    assert!(
        !log.interleaved.load(Ordering::SeqCst),
        "a request went between SASL messages"
    );
    assert!(
        !log.expired.load(Ordering::SeqCst),
        "a request arrived after the session expired"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn api_versions_falls_back_when_the_broker_is_older() {
    let (listener, addr) = listen().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_by_broker = seen.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        while let Some(mut request) = read_request(&mut stream).await {
            let version = request.header.request_api_version;
            seen_by_broker.lock().expect("lock").push(version);
            if version > 2 {
                // What an old broker does: UNSUPPORTED_VERSION in the v0 layout, with its range.
                let old = ApiVersionsResponse::default()
                    .with_error_code(ErrorCode::UnsupportedVersion.code())
                    .with_api_keys(vec![
                        ApiVersion::default()
                            .with_api_key(ApiKey::ApiVersions as i16)
                            .with_max_version(2),
                    ]);
                request.header.request_api_version = 0;
                respond(&mut stream, &request, &old).await;
            } else {
                let mut response = api_versions();
                for key in &mut response.api_keys {
                    if key.api_key == ApiKey::ApiVersions as i16 {
                        key.max_version = 2;
                    }
                }
                respond(&mut stream, &request, &response).await;
            }
        }
    });
    let conn = Connection::connect(&addr, &ConnectionConfig::default())
        .await
        .expect("connect to an older broker");
    assert_eq!(*seen.lock().expect("lock"), vec![4, 2]);
    assert_eq!(conn.api_version(ApiKey::ApiVersions), Some(2));
    assert_eq!(conn.api_version(ApiKey::Metadata), Some(12));
}

#[tokio::test(flavor = "current_thread")]
async fn sasl_mechanism_the_listener_lacks_is_an_authentication_error() {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        while let Some(request) = read_request(&mut stream).await {
            match request.key() {
                ApiKey::ApiVersions => respond(&mut stream, &request, &api_versions()).await,
                _ => {
                    let response = SaslHandshakeResponse::default()
                        .with_error_code(ErrorCode::UnsupportedSaslMechanism.code())
                        .with_mechanisms(vec![StrBytes::from_static_str("GSSAPI")]);
                    respond(&mut stream, &request, &response).await;
                }
            }
        }
    });
    let config = ConnectionConfig {
        security: Security::SaslPlaintext(SaslConfig::new(SaslMechanism::ScramSha256, "u", "p")),
        ..ConnectionConfig::default()
    };
    let err = Connection::connect(&addr, &config)
        .await
        .expect_err("mechanism not enabled");
    match &err {
        Error::Authentication { message, .. } => {
            assert!(message.contains("UNSUPPORTED_SASL_MECHANISM"), "{message}");
            assert!(message.contains("GSSAPI"), "{message}");
        }
        other => panic!("expected an authentication error, got {other}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_last_handle_closes_the_socket() {
    let (listener, addr) = listen().await;
    let (hung_up_tx, hung_up_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        while let Some(request) = read_request(&mut stream).await {
            respond(&mut stream, &request, &api_versions()).await;
        }
        // `read_request` returned `None`: the client closed its side.
        let _ = hung_up_tx.send(());
    });
    let conn = Connection::connect(&addr, &ConnectionConfig::default())
        .await
        .expect("connect");
    let clone = conn.clone();
    drop(conn);
    assert!(!clone.is_closed(), "a clone keeps the connection open");
    drop(clone);
    tokio::time::timeout(Duration::from_secs(5), hung_up_rx)
        .await
        .expect("the socket is closed once no handle is left")
        .expect("fake broker saw the hang-up");
}

#[tokio::test(flavor = "current_thread")]
async fn close_fails_requests_in_flight_and_later_ones() {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        support::answer_api_versions(&mut stream).await;
        // Swallow everything else without answering.
        while read_request(&mut stream).await.is_some() {}
    });
    let conn = Connection::connect(&addr, &ConnectionConfig::default())
        .await
        .expect("connect");
    let pending = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.send(MetadataRequest::default()).await })
    };
    // Let the request task run up to waiting for its response (current-thread runtime).
    tokio::task::yield_now().await;
    conn.close();
    let err = pending
        .await
        .expect("task")
        .expect_err("closed while in flight");
    assert!(
        matches!(&err, Error::ConnectionClosed { reason, .. } if reason.contains("closed by the client")),
        "{err}"
    );
    assert!(err.is_retriable());
    assert!(conn.is_closed());
    assert!(conn.send(MetadataRequest::default()).await.is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn acks_zero_produce_through_send_is_refused_instead_of_hanging() {
    let addr = support::misbehaving_peer(|_stream, _request| async move {}).await;
    let conn = Connection::connect(&addr, &ConnectionConfig::default())
        .await
        .expect("connect");
    let err = conn
        .send_version(
            flumen_protocol::messages::ProduceRequest::default().with_acks(0),
            9,
        )
        .await
        .expect_err("acks=0 has no response");
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "acks"),
        "{err}"
    );
}

/// Answers of a megabyte and more are read into a buffer of their own: one that arrives in
/// odd-sized pieces, with the start of the next answer in the same write, comes out whole
/// and in order.
#[tokio::test(flavor = "current_thread")]
async fn large_answer_in_pieces_is_delivered_whole_and_in_order() {
    const TOPICS: usize = 12_000;
    let name = |i: usize| format!("topic-{i:05}-{}", "x".repeat(100));
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut stream, _) = listener.accept().await.expect("accept");
        let request = read_request(&mut stream).await.expect("ApiVersions");
        respond(&mut stream, &request, &api_versions()).await;
        let big_request = read_request(&mut stream).await.expect("first metadata");
        let small_request = read_request(&mut stream).await.expect("second metadata");
        let topics = (0..TOPICS)
            .map(|i| {
                flumen_protocol::messages::metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(StrBytes::from_string(name(i)).into()))
            })
            .collect();
        let big = MetadataResponse::default().with_topics(topics);
        let small =
            MetadataResponse::default().with_cluster_id(Some(StrBytes::from_static_str("small")));
        // Both answers into one byte string, then written in pieces of 7, 4096 and 65,537
        // bytes in turn, so frame boundaries fall anywhere.
        let mut wire = Vec::new();
        for (request, body) in [(&big_request, &big), (&small_request, &small)] {
            let mut one = support::encode_response(request, body);
            wire.append(&mut one);
        }
        assert!(wire.len() > 1024 * 1024, "the first answer must be large");
        let sizes = [7usize, 4096, 65_537];
        let (mut at, mut i) = (0, 0);
        while at < wire.len() {
            let end = (at + sizes[i % sizes.len()]).min(wire.len());
            stream.write_all(&wire[at..end]).await.expect("write");
            stream.flush().await.expect("flush");
            tokio::task::yield_now().await;
            at = end;
            i += 1;
        }
        std::future::pending::<()>().await;
    });
    let conn = Connection::connect(&addr, &ConnectionConfig::default())
        .await
        .expect("connect");
    let (big, small) = tokio::join!(
        conn.send(MetadataRequest::default()),
        conn.send(MetadataRequest::default())
    );
    let big = big.expect("large answer");
    assert_eq!(big.topics.len(), TOPICS);
    for (i, t) in big.topics.iter().enumerate() {
        assert_eq!(t.name.as_ref().map(|n| n.as_str()), Some(name(i).as_str()));
    }
    let small = small.expect("small answer after it");
    assert_eq!(small.cluster_id.as_ref().map(|c| c.as_str()), Some("small"));
}

/// `connections.max.idle.ms` counts from the last answer: a request the broker takes longer
/// than that to answer (a long poll) does not make the connection idle.
#[tokio::test(flavor = "current_thread")]
async fn request_in_flight_keeps_an_idle_limited_connection_open() {
    let max_idle = Duration::from_millis(200);
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let request = read_request(&mut stream).await.expect("ApiVersions");
        respond(&mut stream, &request, &api_versions()).await;
        let request = read_request(&mut stream).await.expect("metadata");
        // The broker holds the answer for three idle periods, as a long poll would.
        tokio::time::sleep(3 * max_idle).await;
        respond(&mut stream, &request, &MetadataResponse::default()).await;
        std::future::pending::<()>().await;
    });
    let config = ConnectionConfig {
        max_idle: Some(max_idle),
        ..ConnectionConfig::default()
    };
    let conn = Connection::connect(&addr, &config).await.expect("connect");
    conn.send(MetadataRequest::default())
        .await
        .expect("the slow answer arrives on the open connection");
    let answered = Instant::now();
    while !conn.is_closed() {
        assert!(
            answered.elapsed() < Duration::from_secs(10),
            "the connection never became idle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
