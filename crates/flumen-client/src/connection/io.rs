//! The two tasks behind a connection: a writer that coalesces queued requests into vectored
//! writes, and a reader that splits the stream into frames and hands each to the oldest request.
//!
//! Invariants:
//! - The writer registers a request in the in-flight queue *before* writing its bytes, so the
//!   reader always finds the entry when the response arrives.
//! - Kafka answers in request order on one connection, so the in-flight set is a FIFO; a
//!   response whose correlation id is not the front's means the stream is out of step, and the
//!   connection is closed.
//! - Whoever ends first (reader error, writer error, `close()`, last handle dropped) closes the
//!   shared [`State`]; the other task then stops, and every request in flight fails.
//! - With `connections.max.idle.ms`, the writer closes the connection once nothing has been
//!   written or read for that long and no request is in flight (a long poll is not idleness).
//!   A request racing the close fails with a retriable error, as in the Java client.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use flumen_protocol::frame::FrameDecoder;
use flumen_protocol::header::response_correlation_id;
use flumen_protocol::request_frame::RequestFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::buf_list::BufList;
use crate::error::{Error, Result};

/// A byte stream to a broker: TCP or TLS over TCP.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

pub(crate) type BoxStream = Box<dyn Stream>;

/// Stop writing more in one batch once this many bytes are queued.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long a closing connection may spend saying goodbye (TLS close_notify).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Responses at least this large are read into a memory mapping of their own.
const LARGE_FRAME_BYTES: usize = 1024 * 1024;
/// Transparent huge pages are this large on x86-64 and most 64-bit ARM kernels.
const HUGE_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Bytes of a frame's length prefix.
const LENGTH_PREFIX: usize = 4;

/// Where a response (or the failure) goes.
pub(crate) type Responder = oneshot::Sender<Result<Bytes>>;

/// One encoded request on its way to the writer.
pub(crate) struct Outgoing {
    pub(crate) frame: RequestFrame,
    pub(crate) correlation_id: i32,
    /// `None` for requests the broker does not answer (acks=0 produce).
    pub(crate) responder: Option<Responder>,
}

/// What the writer receives on the main lane.
pub(crate) enum Command {
    Request(Outgoing),
    /// Write only what arrives on this lane until it closes (SASL re-authentication: no other
    /// request may sit between its messages).
    Exclusive(mpsc::UnboundedReceiver<Outgoing>),
}

/// A request written and not yet answered.
struct InFlight {
    correlation_id: i32,
    responder: Responder,
}

/// Open/closed state shared by the handle and both tasks.
pub(crate) struct State {
    addr: Arc<str>,
    closed: AtomicBool,
    reason: Mutex<Option<String>>,
    shutdown: watch::Sender<bool>,
    /// Requests written and not yet answered.
    in_flight: AtomicUsize,
    /// When bytes last went either way, in milliseconds since `opened`.
    last_activity_ms: AtomicU64,
    opened: Instant,
}

impl State {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection; the first reason given is the one kept.
    pub(crate) fn close(&self, reason: String) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.closed.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
    }

    pub(crate) fn reason(&self) -> String {
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "closed".to_owned())
    }

    /// Notes that bytes went either way now.
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection becomes idle for `max_idle` if nothing happens before: `None` if
    /// it already is (nothing in flight, no traffic for that long).
    fn idle_deadline(&self, max_idle: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(now + max_idle);
        }
        let last =
            self.opened + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        let deadline = last + max_idle;
        (deadline > now).then_some(deadline)
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::ConnectionClosed {
            addr: self.addr.to_string(),
            reason: self.reason(),
        }
    }
}

/// Splits `stream`, spawns the reader and writer on the current runtime, and returns the
/// main lane and the shared state.
pub(crate) fn spawn(
    addr: &str,
    stream: BoxStream,
    max_frame_bytes: usize,
    max_idle: Option<Duration>,
) -> (mpsc::UnboundedSender<Command>, Arc<State>) {
    let (shutdown, _) = watch::channel(false);
    let state = Arc::new(State {
        addr: Arc::from(addr),
        closed: AtomicBool::new(false),
        reason: Mutex::new(None),
        shutdown,
        in_flight: AtomicUsize::new(0),
        last_activity_ms: AtomicU64::new(0),
        opened: Instant::now(),
    });
    let (read_half, write_half) = tokio::io::split(stream);
    let (lane_tx, lane_rx) = mpsc::unbounded_channel();
    let (inflight_tx, inflight_rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(
        write_half,
        lane_rx,
        inflight_tx,
        state.clone(),
        max_idle,
    ));
    tokio::spawn(reader(
        read_half,
        inflight_rx,
        state.clone(),
        FrameDecoder::new(max_frame_bytes),
    ));
    (lane_tx, state)
}

async fn writer(
    mut half: WriteHalf<BoxStream>,
    mut lane: mpsc::UnboundedReceiver<Command>,
    inflight: mpsc::UnboundedSender<InFlight>,
    state: Arc<State>,
    max_idle: Option<Duration>,
) {
    let mut shutdown = state.shutdown.subscribe();
    let result = write_loop(
        &mut half,
        &mut lane,
        &inflight,
        &mut shutdown,
        &state,
        max_idle,
    )
    .await;
    match result {
        Ok(()) => state.close("connection dropped by the client".to_owned()),
        Err(e) => state.close(format!("write failed: {e}")),
    }
    // Requests still queued are dropped here; their callers see the close reason.
    lane.close();
    while lane.try_recv().is_ok() {}
    // A TLS close_notify can block on a peer that stopped reading; do not wait for it long.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, half.shutdown()).await;
}

async fn write_loop(
    half: &mut WriteHalf<BoxStream>,
    lane: &mut mpsc::UnboundedReceiver<Command>,
    inflight: &mpsc::UnboundedSender<InFlight>,
    shutdown: &mut watch::Receiver<bool>,
    state: &State,
    max_idle: Option<Duration>,
) -> std::io::Result<()> {
    let mut exclusive: Option<mpsc::UnboundedReceiver<Outgoing>> = None;
    let mut batch = BufList::default();
    // One timer for the connection's life: activity is recorded in `state`, and the timer is
    // re-armed from it only when it fires, so requests cost no timer work.
    let idle_check = max_idle.unwrap_or(Duration::from_secs(86_400));
    let idle = tokio::time::sleep(idle_check);
    tokio::pin!(idle);
    loop {
        let first = match &mut exclusive {
            Some(ex) => tokio::select! {
                biased;
                _ = shutdown.wait_for(|closed| *closed) => return Ok(()),
                next = ex.recv() => match next {
                    Some(o) => o,
                    None => { exclusive = None; continue; }
                },
            },
            None => tokio::select! {
                biased;
                _ = shutdown.wait_for(|closed| *closed) => return Ok(()),
                next = lane.recv() => match next {
                    None => return Ok(()),
                    Some(Command::Request(o)) => o,
                    Some(Command::Exclusive(rx)) => { exclusive = Some(rx); continue; }
                },
                () = &mut idle, if max_idle.is_some() => {
                    match state.idle_deadline(idle_check) {
                        Some(deadline) => idle.as_mut().reset(deadline),
                        None => {
                            state.close(format!(
                                "idle for {} ms (connections.max.idle.ms)",
                                idle_check.as_millis()
                            ));
                            return Ok(());
                        }
                    }
                    continue;
                }
            },
        };
        let mut queued = Vec::new();
        let mut bytes = first.frame.len();
        queued.push(first);
        // Coalesce whatever else is already waiting on the same lane.
        while bytes < MAX_BATCH_BYTES {
            let next = match &mut exclusive {
                Some(ex) => ex.try_recv().ok(),
                None => match lane.try_recv() {
                    Ok(Command::Request(o)) => Some(o),
                    Ok(Command::Exclusive(rx)) => {
                        exclusive = Some(rx);
                        None
                    }
                    Err(_) => None,
                },
            };
            let Some(next) = next else { break };
            bytes += next.frame.len();
            queued.push(next);
        }
        for o in queued {
            if let Some(responder) = o.responder {
                state.in_flight.fetch_add(1, Ordering::AcqRel);
                // The reader outlives no writer; if it is gone the connection is closing anyway.
                let _ = inflight.send(InFlight {
                    correlation_id: o.correlation_id,
                    responder,
                });
            }
            for segment in o.frame.into_segments() {
                batch.push(segment);
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|closed| *closed) => return Ok(()),
            written = async {
                half.write_all_buf(&mut batch).await?;
                half.flush().await
            } => written?,
        }
        state.touch();
    }
}

async fn reader(
    mut half: ReadHalf<BoxStream>,
    mut inflight_rx: mpsc::UnboundedReceiver<InFlight>,
    state: Arc<State>,
    decoder: FrameDecoder,
) {
    let mut queue = VecDeque::new();
    let mut shutdown = state.shutdown.subscribe();
    let err = read_loop(
        &mut half,
        &mut inflight_rx,
        &mut queue,
        &state,
        &mut shutdown,
        decoder,
    )
    .await;
    state.close(err.to_string());
    inflight_rx.close();
    while let Ok(f) = inflight_rx.try_recv() {
        queue.push_back(f);
    }
    // The oldest request gets the error itself; the others learn the connection closed.
    if let Some(front) = queue.pop_front() {
        let _ = front.responder.send(Err(err));
    }
    for f in queue {
        let _ = f.responder.send(Err(state.closed_error()));
    }
}

async fn read_loop(
    half: &mut ReadHalf<BoxStream>,
    inflight_rx: &mut mpsc::UnboundedReceiver<InFlight>,
    queue: &mut VecDeque<InFlight>,
    state: &State,
    shutdown: &mut watch::Receiver<bool>,
    decoder: FrameDecoder,
) -> Error {
    let addr = &*state.addr;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut answered = 0u64;
    loop {
        loop {
            let len = match decoder.peek_len(&buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => return sniff_tls(addr, &buf, e),
            };
            let frame = if buf.len() >= LENGTH_PREFIX + len {
                buf.advance(LENGTH_PREFIX);
                buf.split_to(len).freeze()
            } else if len >= LARGE_FRAME_BYTES {
                match read_large_frame(half, &mut buf, len, state, shutdown).await {
                    Ok(frame) => frame,
                    Err(e) => return e,
                }
            } else {
                buf.reserve(LENGTH_PREFIX + len - buf.len());
                break;
            };
            if let Err(e) = answer(frame, inflight_rx, queue, addr) {
                return e;
            }
            state.in_flight.fetch_sub(1, Ordering::AcqRel);
            answered += 1;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 16 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            _ = shutdown.wait_for(|closed| *closed) => return state.closed_error(),
            read = half.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                return match decoder.decode_eof(&mut buf) {
                    Err(e) => e.into(),
                    Ok(_) if answered == 0 => Error::ConnectionClosed {
                        addr: addr.to_owned(),
                        reason: "the peer closed the connection before answering anything (if this is an SSL or \
                                 SASL listener, check the security protocol)"
                            .to_owned(),
                    },
                    Ok(_) => Error::ConnectionClosed {
                        addr: addr.to_owned(),
                        reason: "closed by the peer".to_owned(),
                    },
                };
            }
            Ok(_) => state.touch(),
            Err(e) => return Error::Io(e),
        }
    }
}

/// Hands a response frame to the oldest request in flight, checking it is that request's answer.
fn answer(
    frame: Bytes,
    inflight_rx: &mut mpsc::UnboundedReceiver<InFlight>,
    queue: &mut VecDeque<InFlight>,
    addr: &str,
) -> std::result::Result<(), Error> {
    let received = response_correlation_id(&frame)?;
    while let Ok(f) = inflight_rx.try_recv() {
        queue.push_back(f);
    }
    let Some(front) = queue.pop_front() else {
        return Err(Error::CorrelationMismatch {
            addr: addr.to_owned(),
            expected: None,
            received,
        });
    };
    if front.correlation_id != received {
        let expected = Some(front.correlation_id);
        queue.push_front(front);
        return Err(Error::CorrelationMismatch {
            addr: addr.to_owned(),
            expected,
            received,
        });
    }
    // The caller may have given up (timeout); nothing to do then.
    let _ = front.responder.send(Ok(frame));
    Ok(())
}

/// Reads a frame of `len` bytes (its length prefix at the front of `buf`) into a memory
/// mapping of its own, returned to the system as soon as the last slice of it is dropped.
///
/// Large responses (fetches) come and go at the pace of the application. Taken from the
/// general-purpose heap, glibc keeps freed ones around (its mmap threshold rises to the
/// largest block freed), so a consumer would hold about one response more than it uses; a
/// mapping of its own keeps the resident size at what is really alive. `len` was checked
/// against `max_frame_bytes` by the caller.
async fn read_large_frame(
    half: &mut ReadHalf<BoxStream>,
    buf: &mut BytesMut,
    len: usize,
    state: &State,
    shutdown: &mut watch::Receiver<bool>,
) -> std::result::Result<Bytes, Error> {
    let mut options = memmap2::MmapOptions::new();
    options.len(len);
    if len < HUGE_PAGE_BYTES {
        // Below a huge page, the pages are faulted in by the one mmap call rather than one
        // trap per 4 KiB page as the frame is written.
        options.populate();
    }
    let mut map = options.map_anon().map_err(Error::Io)?;
    #[cfg(target_os = "linux")]
    if len >= HUGE_PAGE_BYTES {
        // Fewer, larger page faults while the frame is written; only advice.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    buf.advance(LENGTH_PREFIX);
    let mut filled = buf.len().min(len);
    map[..filled].copy_from_slice(&buf[..filled]);
    buf.advance(filled);
    while filled < len {
        let read = tokio::select! {
            biased;
            _ = shutdown.wait_for(|closed| *closed) => return Err(state.closed_error()),
            read = half.read(&mut map[filled..]) => read,
        };
        match read {
            Ok(0) => {
                // The same error as for a small frame cut short (`FrameDecoder::decode_eof`).
                return Err(flumen_protocol::Error::Truncated {
                    what: "frame",
                    needed: LENGTH_PREFIX + len,
                    available: LENGTH_PREFIX + filled,
                }
                .into());
            }
            Ok(n) => {
                filled += n;
                state.touch();
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(Bytes::from_owner(map))
}

/// A bad length prefix that is really a TLS record header means we spoke plaintext to a TLS port.
fn sniff_tls(addr: &str, buf: &[u8], e: flumen_protocol::Error) -> Error {
    if looks_like_tls_record(buf) {
        return Error::TlsMismatch {
            addr: addr.to_owned(),
            message: "the peer answered with a TLS record: the port probably expects TLS \
                      (an SSL or SASL_SSL listener); set the security protocol accordingly"
                .to_owned(),
        };
    }
    e.into()
}

/// Content type 20..=23 (change_cipher_spec, alert, handshake, application_data), version 3.x.
pub(crate) fn looks_like_tls_record(buf: &[u8]) -> bool {
    matches!(buf, [0x14..=0x17, 0x03, 0x00..=0x04, ..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};

    /// A stream that counts write calls and accepts every vectored write whole.
    struct CountingStream {
        inner: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountingStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            Pin::new(&mut self.inner).poll_write(cx, &joined)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queued_requests_are_coalesced_into_few_writes() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let stream = CountingStream {
            inner: ours,
            writes: writes.clone(),
        };
        let (lane, _state) = spawn("test:0", Box::new(stream), 1 << 20, None);
        // Queue 100 requests before the writer task first runs (current-thread runtime).
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let frame = Bytes::from(vec![0, 0, 0, 1, i]);
            expected.extend_from_slice(&frame);
            let sent = lane.send(Command::Request(Outgoing {
                frame: RequestFrame::contiguous(frame),
                correlation_id: i32::from(i),
                responder: None,
            }));
            assert!(sent.is_ok());
        }
        let mut received = vec![0u8; expected.len()];
        peer.read_exact(&mut received).await.unwrap();
        assert_eq!(received, expected);
        // tokio hands at most 64 slices to one vectored write.
        assert!(
            writes.load(Ordering::Relaxed) <= 2,
            "{} writes",
            writes.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn tls_alert_is_recognised() {
        assert!(looks_like_tls_record(&[
            0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28
        ]));
        assert!(!looks_like_tls_record(&[0x00, 0x00, 0x00, 0x10]));
    }
}
