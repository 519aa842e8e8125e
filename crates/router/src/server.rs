//! The listener: each connection's handshake, the routing decision, and the splice.
//!
//! Nothing reaches a database before the route and the allow-list say yes; the router never
//! completes a TLS handshake itself, so the client verifies the database's own certificate and
//! channel binding holds end to end.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tusk_api::tunnel_request::{self, TunnelRequest};

use crate::handshake::{self, Alert, Classified, HelloParse, Opening};
use crate::limits::{Exceeded, Limiter, Limits, Permit};
use crate::metrics::Metrics;
use crate::routes::{Decision, Route, RouteTable};

/// The longest PROXY protocol v2 header accepted: the fixed 16 bytes, the largest address
/// block (216, for Unix sockets) and room for a load balancer's TLVs.
const MAX_PROXY_HEADER: usize = 1024;
/// How long the router waits for a database to answer its SSLRequest.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How the router handles connections.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a client has from connecting to a complete ClientHello.
    pub handshake_timeout: Duration,
    /// The most bytes of TLS records read for a ClientHello.
    pub max_client_hello: usize,
    /// Whether every connection starts with a PROXY protocol v2 header (from the load
    /// balancer) that gives the client's address.
    pub proxy_protocol: bool,
    /// The limits against abuse.
    pub limits: Limits,
}

/// Why a connection was refused: the label of the refusal counter and what the log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No PROXY protocol v2 header, or a malformed one, where one is required.
    ProxyHeader,
    /// A plaintext StartupMessage.
    Plaintext,
    /// A CancelRequest outside TLS.
    PlaintextCancel,
    /// Bytes after the SSLRequest, before the answer (CVE-2021-23214).
    Pipelined,
    /// Not a ClientHello.
    BadClientHello,
    /// A ClientHello larger than the bound.
    ClientHelloTooLarge,
    /// A direct TLS ClientHello without ALPN `postgresql`.
    NoAlpn,
    /// A ClientHello without a server name.
    NoServerName,
    /// A name with no open database.
    UnknownName,
    /// A database open, but not to this source.
    SourceNotAllowed,
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// The source opens connections too fast.
    SourceRate,
    /// The source holds too many connections.
    SourceConnections,
    /// The database has too many routed connections.
    DatabaseConnections,
    /// The database did not accept the router's connection or SSLRequest.
    BackendUnavailable,
    /// The client closed the connection, or it failed, during the handshake.
    ConnectionLost,
    /// A malformed TunnelRequest, or one that is not the connection's first message.
    TunnelRequest,
    /// A TunnelRequest whose token none of the named database's links publishes.
    TunnelNotAllowed,
}

impl Refusal {
    /// The `reason` label of `tusk_router_connections_refused`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ProxyHeader => "proxy_header",
            Self::Plaintext => "plaintext",
            Self::PlaintextCancel => "plaintext_cancel",
            Self::Pipelined => "pipelined",
            Self::BadClientHello => "bad_client_hello",
            Self::ClientHelloTooLarge => "client_hello_too_large",
            Self::NoAlpn => "no_alpn",
            Self::NoServerName => "no_server_name",
            Self::UnknownName => "unknown_name",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::SourceRate => "source_rate",
            Self::SourceConnections => "source_connections",
            Self::DatabaseConnections => "database_connections",
            Self::BackendUnavailable => "backend_unavailable",
            Self::ConnectionLost => "connection_lost",
            Self::TunnelRequest => "tunnel_request",
            Self::TunnelNotAllowed => "tunnel_not_allowed",
        }
    }
}

impl From<Exceeded> for Refusal {
    fn from(exceeded: Exceeded) -> Self {
        match exceeded {
            Exceeded::SourceRate => Self::SourceRate,
            Exceeded::SourceConnections => Self::SourceConnections,
            Exceeded::DatabaseConnections => Self::DatabaseConnections,
        }
    }
}

/// What the client is told when refused, which depends on how far the handshake went.
enum Answer {
    /// Nothing: the connection just closes.
    Nothing,
    /// A PostgreSQL ErrorResponse, before the client started TLS.
    Error(&'static str),
    /// A TLS alert, after the client started TLS.
    Alert(Alert),
}

/// A refusal and the answer that goes with it.
struct Refused {
    refusal: Refusal,
    answer: Answer,
    /// The server name the client asked for, for the log.
    name: Option<String>,
}

impl Refused {
    fn new(refusal: Refusal, answer: Answer) -> Self {
        Self {
            refusal,
            answer,
            name: None,
        }
    }

    fn alert(refusal: Refusal, alert: Alert, name: Option<String>) -> Self {
        Self {
            refusal,
            answer: Answer::Alert(alert),
            name,
        }
    }
}

/// A connection ready to splice: the database's connection, after its `S`, with the client's
/// ClientHello already forwarded.
struct Routed {
    /// The client's address: the peer's, or the one the PROXY header gives.
    source: SocketAddr,
    backend: TcpStream,
    route: Route,
    name: String,
    /// The token of the tunnel the connection came through, if it did: the route is checked
    /// again by it, not by the allow-list, when the table changes.
    tunnel_token: Option<String>,
}

/// The router: settings, the current routing table, limits and metrics.
#[derive(Clone)]
pub struct Router {
    settings: Settings,
    table: watch::Receiver<Arc<RouteTable>>,
    limiter: Limiter,
    metrics: Metrics,
}

impl Router {
    /// A router that routes by the tables `table` receives.
    pub fn new(
        settings: Settings,
        table: watch::Receiver<Arc<RouteTable>>,
        metrics: Metrics,
    ) -> Self {
        Self {
            limiter: Limiter::new(settings.limits),
            settings,
            table,
            metrics,
        }
    }

    /// Accepts connections on `listener` until `shutdown`; each is handled on its own task
    /// and closed at shutdown.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let mut last_sweep = Instant::now();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if last_sweep.elapsed() > Duration::from_secs(60) {
                self.limiter.forget_idle(Instant::now());
                last_sweep = Instant::now();
            }
            let router = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = router.handle(stream, peer) => {}
                }
            });
        }
    }

    /// Handles one connection from its first byte to its end.
    async fn handle(&self, mut client: TcpStream, peer: SocketAddr) {
        let _ = client.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + self.settings.handshake_timeout;
        let handshake = tokio::time::timeout_at(deadline, self.handshake(&mut client, peer));
        let (routed, _permit) = match handshake.await {
            Ok(Ok(routed)) => routed,
            Ok(Err((refused, source))) => {
                self.refuse(&mut client, refused, source).await;
                return;
            }
            Err(_) => {
                let refused = Refused::new(Refusal::HandshakeTimeout, Answer::Nothing);
                self.refuse(&mut client, refused, peer.ip()).await;
                return;
            }
        };
        let Routed {
            source,
            mut backend,
            route,
            name,
            tunnel_token,
        } = routed;
        let _open = self.metrics.routed();
        tracing::info!(
            client = %source,
            name,
            namespace = route.namespace,
            cluster = route.cluster,
            through_tunnel = tunnel_token.is_some(),
            decision = "routed",
            "routed a connection"
        );
        let mut table = self.table.clone();
        let splice = tokio::io::copy_bidirectional(&mut client, &mut backend);
        tokio::pin!(splice);
        loop {
            tokio::select! {
                result = &mut splice => {
                    if let Err(error) = result {
                        tracing::debug!(%error, name, "a routed connection ended");
                    }
                    return;
                }
                changed = table.changed() => {
                    let still = changed.is_ok() && {
                        let table_now = table.borrow_and_update();
                        let decision = match &tunnel_token {
                            Some(token) => table_now.decide_tunnel(&name, token),
                            None => table_now.decide(Some(&name), source.ip()),
                        };
                        matches!(decision, Decision::Forward(current) if current.backend == route.backend)
                    };
                    if !still {
                        tracing::info!(
                            client = %source,
                            name,
                            decision = "closed",
                            "closed a routed connection: its route is gone or no longer admits the client"
                        );
                        return;
                    }
                }
            }
        }
    }

    /// Writes the answer of a refusal, counts and logs it, and lets the connection close.
    async fn refuse(&self, client: &mut TcpStream, refused: Refused, source: IpAddr) {
        self.metrics.refused(refused.refusal.reason());
        tracing::info!(
            client = %source,
            name = refused.name.as_deref().unwrap_or(""),
            decision = "refused",
            reason = refused.refusal.reason(),
            "refused a connection"
        );
        let bytes = match refused.answer {
            Answer::Nothing => Vec::new(),
            Answer::Error(message) => handshake::error_response(message),
            Answer::Alert(alert) => handshake::tls_alert(alert).to_vec(),
        };
        if !bytes.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = client.write_all(&bytes).await;
                let _ = client.shutdown().await;
            })
            .await;
        }
    }

    /// Everything up to a database connection ready to splice, or the refusal (with the
    /// client's address as far as known). The returned permit holds the connection's places
    /// under the limits.
    async fn handshake(
        &self,
        client: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<(Routed, Permit), (Refused, IpAddr)> {
        let mut buffer = Vec::with_capacity(512);
        let source = if self.settings.proxy_protocol {
            read_proxy_header(client, &mut buffer)
                .await
                .map_err(|refused| (refused, peer.ip()))?
                .unwrap_or(peer)
        } else {
            peer
        };
        let source_ip = source.ip().to_canonical();
        let fail = |refused: Refused| (refused, source_ip);
        let mut permit = self
            .limiter
            .admit_source(source_ip, Instant::now())
            .map_err(|exceeded| fail(Refused::new(exceeded.into(), Answer::Nothing)))?;

        // A tunnel's request, which may only come first.
        let mut tunnel: Option<TunnelRequest> = None;
        let mut first = true;
        let hello = loop {
            match handshake::classify(&buffer) {
                Classified::NeedMore => {
                    // Only a TunnelRequest is longer than the 8 bytes that tell the opening.
                    let limit = if buffer.len() < handshake::REQUEST_LENGTH {
                        handshake::REQUEST_LENGTH
                    } else {
                        tunnel_request::MAX_LENGTH
                    };
                    read_more(client, &mut buffer, limit).await.map_err(|_| {
                        fail(Refused::new(Refusal::ConnectionLost, Answer::Nothing))
                    })?;
                }
                Classified::Opening(Opening::TunnelRequest, used) => {
                    let request = first
                        .then(|| tunnel_request::decode(&buffer[..used]))
                        .flatten();
                    let Some(request) = request else {
                        return Err(fail(Refused::new(Refusal::TunnelRequest, Answer::Nothing)));
                    };
                    buffer.drain(..used);
                    tunnel = Some(request);
                    first = false;
                }
                Classified::Opening(Opening::GssEncRequest, used) => {
                    first = false;
                    buffer.drain(..used);
                    client
                        .write_all(&[handshake::GSSENC_DECLINED])
                        .await
                        .map_err(|_| {
                            fail(Refused::new(Refusal::ConnectionLost, Answer::Nothing))
                        })?;
                }
                Classified::Opening(Opening::SslRequest, used) => {
                    buffer.drain(..used);
                    if !buffer.is_empty() || has_pending_bytes(client) {
                        return Err(fail(Refused::new(
                            Refusal::Pipelined,
                            Answer::Error(handshake::PIPELINED_MESSAGE),
                        )));
                    }
                    client
                        .write_all(&[handshake::SSL_ACCEPTED])
                        .await
                        .map_err(|_| {
                            fail(Refused::new(Refusal::ConnectionLost, Answer::Nothing))
                        })?;
                    let hello = self
                        .read_client_hello(client, &mut buffer)
                        .await
                        .map_err(fail)?;
                    break hello;
                }
                Classified::Opening(Opening::DirectTls, _) => {
                    let hello = self
                        .read_client_hello(client, &mut buffer)
                        .await
                        .map_err(fail)?;
                    if !hello.offers_postgres_alpn {
                        return Err(fail(Refused::alert(
                            Refusal::NoAlpn,
                            Alert::NoApplicationProtocol,
                            hello.server_name,
                        )));
                    }
                    break hello;
                }
                Classified::Opening(Opening::CancelRequest, _) => {
                    return Err(fail(Refused::new(
                        Refusal::PlaintextCancel,
                        Answer::Error(handshake::CANCEL_MESSAGE),
                    )));
                }
                Classified::Opening(Opening::Plaintext, _) => {
                    return Err(fail(Refused::new(
                        Refusal::Plaintext,
                        Answer::Error(handshake::PLAINTEXT_MESSAGE),
                    )));
                }
            }
        };

        // A tunnel names the database itself: the client behind it names the tunnel Service.
        let (name, decision) = match &tunnel {
            Some(request) => (
                Some(request.name.clone()),
                self.table
                    .borrow()
                    .decide_tunnel(&request.name, &request.token),
            ),
            None => {
                let decision = self
                    .table
                    .borrow()
                    .decide(hello.server_name.as_deref(), source_ip);
                (hello.server_name, decision)
            }
        };
        let route = match decision {
            Decision::Forward(route) => route,
            Decision::NoName => {
                return Err(fail(Refused::alert(
                    Refusal::NoServerName,
                    Alert::UnrecognizedName,
                    None,
                )));
            }
            // A source outside the allow-list is told what an unknown name is told: the
            // router does not reveal which databases exist to those who may not reach them.
            Decision::UnknownName => {
                return Err(fail(Refused::alert(
                    Refusal::UnknownName,
                    Alert::UnrecognizedName,
                    name,
                )));
            }
            Decision::NotAllowed => {
                let refusal = if tunnel.is_some() {
                    Refusal::TunnelNotAllowed
                } else {
                    Refusal::SourceNotAllowed
                };
                return Err(fail(Refused::alert(refusal, Alert::UnrecognizedName, name)));
            }
        };
        let name = name.unwrap_or_default();
        if tunnel.is_some() {
            // A tunnel whose token the database's link published: the customer's own cluster.
            self.limiter.release_source(&mut permit);
        }
        self.limiter
            .admit_database(&mut permit, &route.namespace, &route.cluster)
            .map_err(|exceeded| {
                fail(Refused::alert(
                    exceeded.into(),
                    Alert::InternalError,
                    Some(name.clone()),
                ))
            })?;
        let backend = open_backend(route.backend, &buffer)
            .await
            .map_err(|error| {
                tracing::warn!(%error, backend = %route.backend, name, "cannot reach the database");
                fail(Refused::alert(
                    Refusal::BackendUnavailable,
                    Alert::InternalError,
                    Some(name.clone()),
                ))
            })?;
        Ok((
            Routed {
                source,
                backend,
                route,
                name,
                tunnel_token: tunnel.map(|request| request.token),
            },
            permit,
        ))
    }

    /// Reads TLS records into `buffer` until they hold a whole ClientHello, within the bound.
    async fn read_client_hello(
        &self,
        client: &mut TcpStream,
        buffer: &mut Vec<u8>,
    ) -> Result<handshake::Hello, Refused> {
        loop {
            match handshake::client_hello(buffer) {
                HelloParse::Hello(hello) => return Ok(hello),
                HelloParse::Invalid => {
                    return Err(Refused::alert(
                        Refusal::BadClientHello,
                        Alert::HandshakeFailure,
                        None,
                    ));
                }
                HelloParse::NeedMore if buffer.len() >= self.settings.max_client_hello => {
                    return Err(Refused::alert(
                        Refusal::ClientHelloTooLarge,
                        Alert::HandshakeFailure,
                        None,
                    ));
                }
                HelloParse::NeedMore => {
                    read_more(client, buffer, self.settings.max_client_hello)
                        .await
                        .map_err(|_| Refused::new(Refusal::ConnectionLost, Answer::Nothing))?;
                }
            }
        }
    }
}

/// Reads once more into `buffer`, never beyond `limit` bytes in all. End of stream is an
/// error.
async fn read_more(client: &mut TcpStream, buffer: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let room = limit.saturating_sub(buffer.len()).max(1);
    let mut chunk = vec![0; room.min(16 * 1024)];
    let read = client.read(&mut chunk).await?;
    if read == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// Whether the client has sent bytes the router has not read yet.
fn has_pending_bytes(client: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    // A non-blocking read: `Ok(n > 0)` means bytes wait (they are refused anyway);
    // `WouldBlock` means none have arrived.
    matches!(client.try_read(&mut probe), Ok(read) if read > 0)
}

/// Reads a PROXY protocol v2 header at the start of the connection. Returns the client's
/// address it gives, or `None` for a LOCAL header (the load balancer's own health check).
/// Bytes after the header stay in `buffer`.
async fn read_proxy_header(
    client: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<Option<SocketAddr>, Refused> {
    use ppp::v2::{Addresses, Command, Header, ParseError};
    let refused = || Refused::new(Refusal::ProxyHeader, Answer::Nothing);
    loop {
        match Header::try_from(buffer.as_slice()) {
            Ok(header) => {
                let length = header.len();
                let source = match (header.command, header.addresses) {
                    (Command::Local, _) => None,
                    (Command::Proxy, Addresses::IPv4(ip)) => {
                        Some(SocketAddr::from((ip.source_address, ip.source_port)))
                    }
                    (Command::Proxy, Addresses::IPv6(ip)) => {
                        Some(SocketAddr::from((ip.source_address, ip.source_port)))
                    }
                    // A client address that is not an IP cannot be checked against an
                    // allow-list.
                    (Command::Proxy, _) => return Err(refused()),
                };
                buffer.drain(..length);
                return Ok(source);
            }
            Err(ParseError::Incomplete(_) | ParseError::Partial(..))
                if buffer.len() < MAX_PROXY_HEADER =>
            {
                read_more(client, buffer, MAX_PROXY_HEADER)
                    .await
                    .map_err(|_| refused())?;
            }
            Err(_) => return Err(refused()),
        }
    }
}

/// Connects to the database at `backend`, asks it for TLS with an SSLRequest, requires its
/// `S`, and forwards the client's ClientHello (`hello`, as received).
async fn open_backend(backend: SocketAddr, hello: &[u8]) -> io::Result<TcpStream> {
    let open = async {
        let mut stream = TcpStream::connect(backend).await?;
        let _ = stream.set_nodelay(true);
        stream.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        if answer[0] != handshake::SSL_ACCEPTED {
            return Err(io::Error::other(format!(
                "the database answered the SSLRequest with {:?}, not S",
                answer[0] as char
            )));
        }
        stream.write_all(hello).await?;
        Ok(stream)
    };
    tokio::time::timeout(BACKEND_TIMEOUT, open)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the database did not answer"))?
}

/// The SSLRequest the router sends to a database.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
