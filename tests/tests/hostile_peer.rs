//! A peer that breaks the protocol gets a typed error, never a panic, a hang or a huge allocation.
//!
//! The peers are local fake brokers on 127.0.0.1 that answer ApiVersions correctly and then
//! misbehave on the next request. A counting global allocator records the largest single
//! allocation of this test binary, so "no allocation of that size" is checked, not assumed.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flumen_client::{Connection, ConnectionConfig, Error};
use flumen_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, ProduceRequest};
use tokio::io::AsyncWriteExt;

use support::{misbehaving_peer, respond, write_frame};

struct CountingAllocator;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Nothing in this binary legitimately allocates this much at once.
const ALLOCATION_BOUND: usize = 16 * 1024 * 1024;

fn config() -> ConnectionConfig {
    ConnectionConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..ConnectionConfig::default()
    }
}

fn metadata() -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![]))
}

/// After a fatal protocol error the connection is closed and further requests fail fast.
async fn assert_closed_and_failing(conn: &Connection) {
    assert!(conn.is_closed(), "connection still open");
    let started = Instant::now();
    let err = conn
        .send(metadata())
        .await
        .expect_err("request on a closed connection");
    assert!(matches!(err, Error::ConnectionClosed { .. }), "{err}");
    assert!(err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "current_thread")]
async fn two_gib_length_prefix_is_refused_without_allocating_it() {
    let addr = misbehaving_peer(|mut stream, _request| async move {
        let _ = stream.write_all(&i32::MAX.to_be_bytes()).await;
        let _ = stream.write_all(&[0u8; 1024]).await;
        // Keep the socket open: the client must give up by itself.
        std::future::pending::<()>().await;
    })
    .await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let err = conn.send(metadata()).await.expect_err("a 2 GiB frame");
    assert!(
        matches!(
            err,
            Error::Protocol(flumen_protocol::Error::FrameTooLarge { len, .. }) if len == i32::MAX as usize
        ),
        "{err}"
    );
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert_closed_and_failing(&conn).await;
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn negative_length_prefix_is_a_typed_error() {
    let addr = misbehaving_peer(|mut stream, _request| async move {
        let _ = stream.write_all(&(-5i32).to_be_bytes()).await;
        std::future::pending::<()>().await;
    })
    .await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let err = conn.send(metadata()).await.expect_err("negative length");
    assert!(
        matches!(
            err,
            Error::Protocol(flumen_protocol::Error::NegativeFrameLength(-5))
        ),
        "{err}"
    );
    assert_closed_and_failing(&conn).await;
}

/// A peer announces a `len`-byte answer, sends its first `sent` bytes (correlation id first)
/// and closes: the request fails with `Truncated` counting the length prefix, and the
/// connection is closed.
async fn assert_frame_cut_short_is_truncated(len: usize, sent: usize) {
    let addr = misbehaving_peer(move |mut stream, request| async move {
        let mut partial = Vec::with_capacity(4 + sent);
        partial.extend_from_slice(&(len as i32).to_be_bytes());
        partial.extend_from_slice(&request.header.correlation_id.to_be_bytes());
        partial.resize(4 + sent, 0);
        let _ = stream.write_all(&partial).await;
        // Dropping the stream closes it mid-frame.
    })
    .await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let err = conn.send(metadata()).await.expect_err("truncated frame");
    assert!(
        matches!(
            err,
            Error::Protocol(flumen_protocol::Error::Truncated {
                needed,
                available,
                ..
            }) if needed == 4 + len && available == 4 + sent
        ),
        "{err}"
    );
    assert_closed_and_failing(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn truncated_frame_then_close_is_a_typed_error() {
    assert_frame_cut_short_is_truncated(100, 10).await;
}

/// Large answers (fetches) are read into a buffer of their own: a peer that closes in the
/// middle of one gets the same error as in the middle of a small one.
#[tokio::test(flavor = "current_thread")]
async fn large_frame_cut_short_is_the_same_typed_error() {
    assert_frame_cut_short_is_truncated(3 * 1024 * 1024, 1024 * 1024 + 17).await;
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_text_is_refused_as_an_oversized_frame() {
    let addr = misbehaving_peer(|mut stream, _request| async move {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        std::future::pending::<()>().await;
    })
    .await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let err = conn.send(metadata()).await.expect_err("garbage");
    assert!(
        matches!(
            err,
            Error::Protocol(flumen_protocol::Error::FrameTooLarge { .. })
        ),
        "{err}"
    );
    assert_closed_and_failing(&conn).await;
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_body_is_a_decode_error() {
    let addr = misbehaving_peer(|mut stream, request| async move {
        let mut payload = request.header.correlation_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0xff; 7]);
        write_frame(&mut stream, &payload).await;
        std::future::pending::<()>().await;
    })
    .await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let err = conn.send(metadata()).await.expect_err("garbage body");
    assert!(
        matches!(err, Error::Protocol(flumen_protocol::Error::Decode { .. })),
        "{err}"
    );
    // A body that does not decode is that request's problem; the stream itself is still in step.
    assert!(!conn.is_closed());
}

/// A well-framed response whose array count claims 2^31 - 1 elements in a 14-byte body.
/// Reserving for the count before checking it aborts the process (kafka-protocol 0.18; see
/// vendor/kafka-protocol/PATCHED.md); it must be a decode error instead.
#[tokio::test(flavor = "current_thread")]
async fn huge_array_count_in_response_is_an_error_not_an_abort() {
    let addr = misbehaving_peer(|mut stream, request| async move {
        let version = request.header.request_api_version;
        assert!(
            version >= 9,
            "the fake broker offers flexible Metadata versions"
        );
        let mut payload = request.header.correlation_id.to_be_bytes().to_vec();
        payload.push(0); // response header v1: no tagged fields
        payload.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
        payload.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]); // brokers: 2^31 - 1 entries
        write_frame(&mut stream, &payload).await;
        std::future::pending::<()>().await;
    })
    .await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let err = conn
        .send(metadata())
        .await
        .expect_err("a lying array count");
    assert!(
        matches!(err, Error::Protocol(flumen_protocol::Error::Decode { .. })),
        "{err}"
    );
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_correlation_id_is_a_typed_error() {
    let addr = misbehaving_peer(|mut stream, mut request| async move {
        let expected = request.header.correlation_id;
        request.header.correlation_id = expected.wrapping_add(1000);
        respond(&mut stream, &request, &MetadataResponse::default()).await;
        std::future::pending::<()>().await;
    })
    .await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let err = conn
        .send(metadata())
        .await
        .expect_err("wrong correlation id");
    match &err {
        Error::CorrelationMismatch {
            expected: Some(expected),
            received,
            ..
        } => assert_eq!(*received, expected + 1000),
        other => panic!("expected a correlation mismatch, got {other}"),
    }
    assert_closed_and_failing(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn unanswered_request_times_out_and_closes_the_connection() {
    let addr = misbehaving_peer(|stream, _request| async move {
        // Hold the socket open and never answer.
        let _open = stream;
        std::future::pending::<()>().await;
    })
    .await;
    let config = ConnectionConfig {
        request_timeout: Duration::from_millis(300),
        ..config()
    };
    let conn = Connection::connect(&addr, &config).await.expect("connect");
    let started = Instant::now();
    let err = conn.send(metadata()).await.expect_err("no answer");
    assert!(
        matches!(
            err,
            Error::RequestTimeout {
                api: "MetadataRequest",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_closed_and_failing(&conn).await;
}

#[tokio::test(flavor = "current_thread")]
async fn peer_closing_fails_every_request_in_flight_with_a_retriable_error() {
    let (listener, addr) = support::listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        support::answer_api_versions(&mut stream).await;
        // Read three requests, answer none, hang up.
        for _ in 0..3 {
            support::read_request(&mut stream).await.expect("request");
        }
    });
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    let results = futures::future::join_all((0..3).map(|_| conn.send(metadata()))).await;
    for result in results {
        let err = result.expect_err("peer hung up");
        assert!(err.is_retriable(), "{err}");
        assert!(matches!(err, Error::ConnectionClosed { .. }), "{err}");
    }
    assert!(conn.is_closed());
}

#[tokio::test(flavor = "current_thread")]
async fn unsupported_api_is_refused_before_sending() {
    let addr = misbehaving_peer(|_stream, _request| async move {}).await;
    let conn = Connection::connect(&addr, &config())
        .await
        .expect("connect");
    assert_eq!(conn.api_version(ApiKey::Produce), None);
    let err = conn
        .send(ProduceRequest::default())
        .await
        .expect_err("the fake broker has no Produce");
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                api: "ProduceRequest",
                ..
            }
        ),
        "{err}"
    );
}
