//! One broker connection: TCP or TLS, ApiVersions negotiation, SASL, and pipelined requests.
//!
//! A [`Connection`] is a cheap handle; clones share the same socket. Requests are encoded by
//! the caller (one exactly-sized buffer each), queued to a writer task that coalesces them,
//! and answered in order by a reader task (see `io.rs` for the invariants). A request that
//! times out closes the connection, like the Java client, because a later response cannot be
//! matched any more; a broken connection fails all its requests with retriable errors and
//! stays closed ([`Connection::is_closed`]): the cluster layer opens a new one.

mod api_versions;
mod buf_list;
mod config;
mod io;
mod request_versions;

use std::any::Any;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use flumen_protocol::header::{api_name, decode_response, encode_request};
use flumen_protocol::messages::{ApiKey, ProduceRequest, Request, StrBytes};
use flumen_protocol::request_frame::{MIN_LINKED_PAYLOAD, RequestFrame, encode_request_chained};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

pub use self::api_versions::ApiVersions;
pub use self::config::{ConnectionConfig, SaslConfig, SaslMechanism, Security, TlsConfig};
use self::io::{BoxStream, Command, Outgoing, State};
use crate::error::{Error, Result};

/// A cheap-to-clone handle to one broker connection; requests are pipelined.
///
/// ```no_run
/// use flumen_client::{Connection, ConnectionConfig};
/// use flumen_protocol::messages::MetadataRequest;
///
/// # async fn run() -> flumen_client::Result<()> {
/// let conn = Connection::connect("127.0.0.1:9092", &ConnectionConfig::default()).await?;
/// let metadata = conn.send(MetadataRequest::default()).await?;
/// println!("{} brokers", metadata.brokers.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    client_id: StrBytes,
    request_timeout: Duration,
    lane: mpsc::UnboundedSender<Command>,
    state: Arc<State>,
    next_correlation_id: AtomicI32,
    versions: OnceLock<ApiVersions>,
}

/// Which queue a request goes through.
#[derive(Clone, Copy)]
pub(crate) enum Lane<'a> {
    /// The normal, shared queue.
    Main,
    /// A queue that has the writer to itself (SASL re-authentication).
    Exclusive(&'a mpsc::UnboundedSender<Outgoing>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), runs the TLS handshake, ApiVersions and SASL as
    /// configured, all within `config.connect_timeout`.
    pub async fn connect(addr: &str, config: &ConnectionConfig) -> Result<Connection> {
        let deadline = Instant::now() + config.connect_timeout;
        let timed_out = |stage: &'static str| Error::ConnectTimeout {
            addr: addr.to_owned(),
            timeout: config.connect_timeout,
            stage,
        };
        let tcp = timeout_at(deadline, tcp_connect(addr))
            .await
            .map_err(|_| timed_out("TCP connect"))??;
        let stream: BoxStream = match config.security.tls() {
            Some(tls) => Box::new(
                timeout_at(deadline, crate::tls::handshake(addr, tcp, tls))
                    .await
                    .map_err(|_| timed_out("TLS handshake"))??,
            ),
            None => Box::new(tcp),
        };
        let conn = Connection::start(addr, stream, config);
        let versions = timeout_at(deadline, api_versions::negotiate(&conn))
            .await
            .map_err(|_| timed_out("ApiVersions"))??;
        // Freshly created, so nothing else can have set it.
        let _ = conn.inner.versions.set(versions);
        if let Some(sasl) = config.security.sasl() {
            let lifetime = timeout_at(deadline, crate::sasl::authenticate(&conn, Lane::Main, sasl))
                .await
                .map_err(|_| timed_out("SASL authentication"))??;
            if let Some(lifetime) = lifetime {
                crate::sasl::schedule_reauthentication(&conn, sasl.clone(), lifetime);
            }
        }
        Ok(conn)
    }

    /// Starts the reader and writer tasks over an established stream.
    fn start(addr: &str, stream: BoxStream, config: &ConnectionConfig) -> Connection {
        let (lane, state) = io::spawn(addr, stream, config.max_frame_bytes, config.max_idle);
        Connection {
            inner: Arc::new(Inner {
                addr: addr.to_owned(),
                client_id: StrBytes::from_string(config.client_id.clone()),
                request_timeout: config.request_timeout,
                lane,
                state,
                next_correlation_id: AtomicI32::new(0),
                versions: OnceLock::new(),
            }),
        }
    }

    /// Sends at the highest version both sides support and waits for the response.
    pub async fn send<R: Request + 'static>(&self, request: R) -> Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_on(Lane::Main, &request, version).await
    }

    /// Sends at an explicit version and waits for the response.
    pub async fn send_version<R: Request + 'static>(
        &self,
        request: R,
        version: i16,
    ) -> Result<R::Response> {
        self.send_on(Lane::Main, &request, version).await
    }

    /// Sends a request the broker does not answer (acks=0 produce); returns once it is queued.
    pub async fn send_no_response<R: Request + 'static>(&self, request: R) -> Result<()> {
        let version = self.version_for::<R>()?;
        let (frame, correlation_id) = self.encode(&request, version)?;
        self.enqueue(
            Lane::Main,
            Outgoing {
                frame,
                correlation_id,
                responder: None,
            },
        )
    }

    /// The highest version of `key` both sides support (`None`: the broker lacks it).
    pub fn api_version(&self, key: ApiKey) -> Option<i16> {
        self.inner.versions.get().and_then(|v| v.max_version(key))
    }

    /// The versions the broker announced, as negotiated at connect time.
    pub fn api_versions(&self) -> Option<&ApiVersions> {
        self.inner.versions.get()
    }

    /// Whether the connection is closed (then every request fails; open a new one).
    pub fn is_closed(&self) -> bool {
        self.inner.state.is_closed()
    }

    /// Why the connection closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.is_closed().then(|| self.inner.state.reason())
    }

    /// Closes the connection; requests in flight fail with [`Error::ConnectionClosed`].
    pub fn close(&self) {
        self.inner.state.close("closed by the client".to_owned());
    }

    pub(crate) fn close_with(&self, reason: String) {
        self.inner.state.close(reason);
    }

    /// The address this connection was opened to, as given.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    fn version_for<R: Request>(&self) -> Result<i16> {
        ApiKey::try_from(R::KEY)
            .ok()
            .and_then(|key| self.api_version(key))
            .ok_or_else(|| Error::UnsupportedVersion {
                addr: self.inner.addr.clone(),
                api: api_name::<R>(),
            })
    }

    fn encode<R: Request + 'static>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<(RequestFrame, i32)> {
        let correlation_id = self
            .inner
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed);
        let client_id = Some(&self.inner.client_id);
        let payloads = record_payloads(request);
        let frame = if payloads.is_empty() {
            RequestFrame::contiguous(
                encode_request(request, version, correlation_id, client_id)?.freeze(),
            )
        } else {
            encode_request_chained(request, version, correlation_id, client_id, &payloads)?
        };
        Ok((frame, correlation_id))
    }

    fn enqueue(&self, lane: Lane<'_>, outgoing: Outgoing) -> Result<()> {
        if self.is_closed() {
            return Err(self.inner.state.closed_error());
        }
        let sent = match lane {
            Lane::Main => self
                .inner
                .lane
                .send(Command::Request(outgoing))
                .map_err(|_| ()),
            Lane::Exclusive(tx) => tx.send(outgoing).map_err(|_| ()),
        };
        sent.map_err(|()| self.inner.state.closed_error())
    }

    /// Sends `request` and returns the raw response frame (header included).
    pub(crate) async fn round_trip<R: Request + 'static>(
        &self,
        lane: Lane<'_>,
        request: &R,
        version: i16,
    ) -> Result<Bytes> {
        if is_unanswered(request) {
            return Err(Error::Config {
                key: "acks".to_owned(),
                message:
                    "a produce request with acks=0 gets no response; send it with send_no_response"
                        .to_owned(),
            });
        }
        let (frame, correlation_id) = self.encode(request, version)?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            lane,
            Outgoing {
                frame,
                correlation_id,
                responder: Some(tx),
            },
        )?;
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => Err(self.inner.state.closed_error()),
            Err(_elapsed) => {
                let api = api_name::<R>();
                let timeout = self.inner.request_timeout;
                self.inner
                    .state
                    .close(format!("{api} timed out after {timeout:?}"));
                Err(Error::RequestTimeout {
                    addr: self.inner.addr.clone(),
                    api,
                    timeout,
                })
            }
        }
    }

    /// Sends `request` at `version` through `lane` and decodes the response.
    pub(crate) async fn send_on<R: Request + 'static>(
        &self,
        lane: Lane<'_>,
        request: &R,
        version: i16,
    ) -> Result<R::Response> {
        let frame = self.round_trip(lane, request, version).await?;
        let (_header, response) = decode_response::<R>(frame, version)?;
        Ok(response)
    }

    /// Opens a lane that has the writer to itself until the returned sender is dropped.
    pub(crate) fn exclusive_lane(&self) -> Result<mpsc::UnboundedSender<Outgoing>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .lane
            .send(Command::Exclusive(rx))
            .map_err(|_| self.inner.state.closed_error())?;
        Ok(tx)
    }

    /// A reference that does not keep the connection open.
    pub(crate) fn downgrade(&self) -> WeakConnection {
        WeakConnection(Arc::downgrade(&self.inner))
    }
}

/// A [`Connection`] reference for background work that must not keep it alive.
pub(crate) struct WeakConnection(Weak<Inner>);

impl WeakConnection {
    /// The connection, if some handle still holds it.
    pub(crate) fn upgrade(&self) -> Option<Connection> {
        self.0.upgrade().map(|inner| Connection { inner })
    }
}

/// Whether the broker will not answer `request` (a produce request with acks=0).
fn is_unanswered<R: 'static>(request: &R) -> bool {
    (request as &dyn Any)
        .downcast_ref::<ProduceRequest>()
        .is_some_and(|produce| produce.acks == 0)
}

/// The record batches of a produce request, which are written by reference, not copied.
fn record_payloads<R: 'static>(request: &R) -> Vec<Bytes> {
    let Some(produce) = (request as &dyn Any).downcast_ref::<ProduceRequest>() else {
        return Vec::new();
    };
    produce
        .topic_data
        .iter()
        .flat_map(|topic| &topic.partition_data)
        .filter_map(|partition| partition.records.clone())
        .filter(|records| records.len() >= MIN_LINKED_PAYLOAD)
        .collect()
}

async fn tcp_connect(addr: &str) -> Result<TcpStream> {
    let connect_err = |source| Error::Connect {
        addr: addr.to_owned(),
        source,
    };
    let mut last_err = None;
    for sock_addr in tokio::net::lookup_host(addr).await.map_err(connect_err)? {
        match TcpStream::connect(sock_addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true).map_err(connect_err)?;
                return Ok(tcp);
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(connect_err(last_err.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolved to no address",
        )
    })))
}
