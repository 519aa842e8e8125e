//! The router between real TLS endpoints on loopback: two "databases" that answer an
//! SSLRequest with `S` and then serve TLS with their own certificates (as PostgreSQL does),
//! and clients that verify them. A client that completes its handshake and reads the
//! database's answer proves the router passed TLS through without terminating it: the router
//! has no key for either certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tusk_api::tunnel_request;
use tusk_router::limits::Limits;
use tusk_router::metrics::Metrics;
use tusk_router::routes::{Route, RouteTable};
use tusk_router::server::{Router, Settings};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const ELEPHANT: &str = "elephant.shop.db.example.com";
const MAMMOTH: &str = "mammoth.zoo.db.example.com";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and, per name, a server certificate it signed.
struct Pki {
    ca: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        Self {
            ca: ca.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn server(&self, name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    }
}

/// A stand-in for PostgreSQL's TLS start: `S` to an SSLRequest, then TLS with `name`'s
/// certificate; it answers each line with `<name>:<line>`. Returns its address.
async fn database(pki: &Pki, name: &'static str) -> SocketAddr {
    let (cert, key) = pki.server(name);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                stream.read_exact(&mut request).await?;
                assert_eq!(request, SSL_REQUEST, "the router asks for TLS first");
                stream.write_all(b"S").await?;
                let mut tls = acceptor.accept(stream).await?;
                let mut buffer = [0u8; 64];
                loop {
                    let read = tls.read(&mut buffer).await?;
                    if read == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    let answer = format!("{name}:{}", String::from_utf8_lossy(&buffer[..read]));
                    tls.write_all(answer.as_bytes()).await?;
                }
            });
        }
    });
    address
}

fn route(namespace: &str, cluster: &str, backend: SocketAddr, allowed: &[&str]) -> Route {
    Route {
        namespace: namespace.to_owned(),
        cluster: cluster.to_owned(),
        backend,
        allowed: allowed.iter().map(|range| range.parse().unwrap()).collect(),
        tunnel_digests: Vec::new(),
    }
}

struct Fixture {
    pki: Pki,
    address: SocketAddr,
    table: watch::Sender<Arc<RouteTable>>,
    metrics: Metrics,
    elephant: SocketAddr,
    mammoth: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

impl Fixture {
    /// Two databases, both routed and open to loopback, behind one router.
    async fn start(proxy_protocol: bool) -> Self {
        Self::start_with(
            proxy_protocol,
            Limits {
                per_source_rate: 1000.0,
                per_source_burst: 1000.0,
                per_source_connections: 100,
                per_database_connections: 100,
            },
        )
        .await
    }

    /// The same, under `limits`.
    async fn start_with(proxy_protocol: bool, limits: Limits) -> Self {
        let pki = Pki::new();
        let elephant = database(&pki, ELEPHANT).await;
        let mammoth = database(&pki, MAMMOTH).await;
        let (table, receiver) = watch::channel(Arc::new(RouteTable::default()));
        let metrics = Metrics::new();
        let settings = Settings {
            handshake_timeout: Duration::from_secs(1),
            max_client_hello: 16 * 1024,
            proxy_protocol,
            limits,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(
            Router::new(settings, receiver, metrics.clone()).serve(listener, stop.clone()),
        );
        let fixture = Self {
            pki,
            address,
            table,
            metrics,
            elephant,
            mammoth,
            _stop: stop.drop_guard(),
        };
        fixture.set_routes(&["127.0.0.0/8"], &["127.0.0.1/32", "::1/128"]);
        fixture
    }

    fn set_routes(&self, elephant: &[&str], mammoth: &[&str]) {
        let mut routes = Vec::new();
        if !elephant.is_empty() {
            routes.push((
                ELEPHANT.to_owned(),
                route("shop", "elephant", self.elephant, elephant),
            ));
        }
        if !mammoth.is_empty() {
            routes.push((
                MAMMOTH.to_owned(),
                route("zoo", "mammoth", self.mammoth, mammoth),
            ));
        }
        self.table
            .send_replace(Arc::new(RouteTable::from_routes(routes)));
    }

    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pki.ca.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// Connects the classic way (SSLRequest, `S`, TLS), verifying `name`; sends `line`,
    /// returns the answer or the error.
    async fn classic(&self, prefix: &[u8], name: &str, line: &str) -> Result<String, String> {
        let mut stream = TcpStream::connect(self.address).await.unwrap();
        stream.write_all(prefix).await.unwrap();
        stream.write_all(&SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if answer[0] != b'S' {
            return Err(format!("answered {:?}", answer[0] as char));
        }
        self.talk(stream, &[], name, line).await
    }

    async fn talk(
        &self,
        stream: TcpStream,
        alpn: &[&[u8]],
        name: &str,
        line: &str,
    ) -> Result<String, String> {
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let mut tls = self
            .connector(alpn)
            .connect(server_name, stream)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buffer = [0u8; 128];
        let read = tls.read(&mut buffer).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }

    /// A TLS session with elephant the classic way, after `prefix`, that has carried a line
    /// there and back.
    async fn session(&self, prefix: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut stream = TcpStream::connect(self.address).await.unwrap();
        stream.write_all(prefix).await.unwrap();
        stream.write_all(&SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.unwrap();
        let server_name = ServerName::try_from(ELEPHANT.to_owned()).unwrap();
        let mut tls = self
            .connector(&[])
            .connect(server_name, stream)
            .await
            .unwrap();
        tls.write_all(b"one").await.unwrap();
        let mut buffer = [0u8; 128];
        let read = tls.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..read], format!("{ELEPHANT}:one").as_bytes());
        tls
    }

    fn refused(&self, reason: &str) -> u64 {
        let text = self.metrics.encode();
        let prefix = format!("tusk_router_connections_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |value| value.trim().parse().unwrap())
    }
}

/// Sends `bytes` in one write and reads what the router answers until it closes.
async fn exchange(address: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test]
async fn each_name_reaches_its_own_database_with_its_own_certificate() {
    let fixture = Fixture::start(false).await;
    assert_eq!(
        fixture.classic(&[], ELEPHANT, "hello").await.unwrap(),
        format!("{ELEPHANT}:hello")
    );
    assert_eq!(
        fixture.classic(&[], MAMMOTH, "hello").await.unwrap(),
        format!("{MAMMOTH}:hello")
    );
    // Names are case-insensitive, as DNS names are.
    assert_eq!(
        fixture
            .classic(&[], &ELEPHANT.to_uppercase(), "x")
            .await
            .unwrap(),
        format!("{ELEPHANT}:x")
    );
}

#[tokio::test]
async fn a_direct_tls_client_must_offer_alpn_postgresql() {
    let fixture = Fixture::start(false).await;
    let stream = TcpStream::connect(fixture.address).await.unwrap();
    assert_eq!(
        fixture
            .talk(stream, &[b"postgresql"], MAMMOTH, "direct")
            .await
            .unwrap(),
        format!("{MAMMOTH}:direct")
    );
    let stream = TcpStream::connect(fixture.address).await.unwrap();
    let error = fixture
        .talk(stream, &[b"h2"], MAMMOTH, "direct")
        .await
        .unwrap_err();
    assert!(error.contains("NoApplicationProtocol"), "{error}");
    assert_eq!(fixture.refused("no_alpn"), 1);
}

#[tokio::test]
async fn unknown_names_and_sources_outside_the_allow_list_are_refused_alike() {
    let fixture = Fixture::start(false).await;
    let error = fixture
        .classic(&[], "nobody.shop.db.example.com", "x")
        .await
        .unwrap_err();
    assert!(error.contains("UnrecognisedName"), "{error}");
    fixture.set_routes(&["203.0.113.0/24"], &["127.0.0.1/32"]);
    let error = fixture.classic(&[], ELEPHANT, "x").await.unwrap_err();
    assert!(error.contains("UnrecognisedName"), "{error}");
    assert_eq!(fixture.refused("unknown_name"), 1);
    assert_eq!(fixture.refused("source_not_allowed"), 1);
}

#[tokio::test]
async fn plaintext_and_pipelined_bytes_get_an_error_response() {
    let fixture = Fixture::start(false).await;
    // A StartupMessage for user app, protocol 3.0.
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0app\0\0");
    let length = startup.len() as u32;
    startup[..4].copy_from_slice(&length.to_be_bytes());
    let answer = exchange(fixture.address, &startup).await;
    assert_eq!(answer[0], b'E');
    assert!(
        String::from_utf8_lossy(&answer).contains("sslmode=verify-full"),
        "{answer:?}"
    );
    // An SSLRequest with a StartupMessage right behind it: the injection of CVE-2021-23214.
    let answer = exchange(fixture.address, &[&SSL_REQUEST[..], &startup].concat()).await;
    assert_eq!(answer[0], b'E', "no S before the error: {answer:?}");
    assert!(
        String::from_utf8_lossy(&answer).contains("after the SSLRequest"),
        "{answer:?}"
    );
    let cancel = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2];
    let answer = exchange(fixture.address, &cancel).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("cancel request"),
        "{answer:?}"
    );
    assert_eq!(fixture.refused("plaintext"), 1);
    assert_eq!(fixture.refused("pipelined"), 1);
    assert_eq!(fixture.refused("plaintext_cancel"), 1);
}

#[tokio::test]
async fn a_gssenc_request_is_declined_and_the_client_goes_on() {
    let fixture = Fixture::start(false).await;
    let gssenc = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let mut stream = TcpStream::connect(fixture.address).await.unwrap();
    stream.write_all(&gssenc).await.unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'N');
    stream.write_all(&SSL_REQUEST).await.unwrap();
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S');
    assert_eq!(
        fixture.talk(stream, &[], ELEPHANT, "on").await.unwrap(),
        format!("{ELEPHANT}:on")
    );
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_cut_at_the_deadline() {
    let fixture = Fixture::start(false).await;
    let mut stream = TcpStream::connect(fixture.address).await.unwrap();
    stream.write_all(&SSL_REQUEST).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the router closes the connection")
        .unwrap();
    assert_eq!(answer, b"S");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fixture.refused("handshake_timeout"), 1);
}

#[tokio::test]
async fn losing_the_route_closes_open_connections_at_once() {
    let fixture = Fixture::start(false).await;
    let mut tls = fixture.session(&[]).await;
    let mut buffer = [0u8; 128];
    // Mammoth's allow-list changes: elephant's connection stays.
    fixture.set_routes(&["127.0.0.0/8"], &["127.0.0.1/32"]);
    tls.write_all(b"two").await.unwrap();
    let read = tls.read(&mut buffer).await.unwrap();
    assert_eq!(&buffer[..read], format!("{ELEPHANT}:two").as_bytes());
    // Elephant closes to loopback: its connection ends within a second.
    let closed_at = Instant::now();
    fixture.set_routes(&["203.0.113.0/24"], &["127.0.0.1/32"]);
    let read = tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buffer))
        .await
        .expect("closed within a second");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(closed_at.elapsed() < Duration::from_secs(1));
}

fn proxy_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn behind_a_load_balancer_the_proxy_header_gives_the_client_address() {
    let fixture = Fixture::start(true).await;
    let inside: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let outside: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let v6: SocketAddr = "[::1]:40000".parse().unwrap();
    let header = proxy_header(inside, fixture.address);
    assert_eq!(
        fixture.classic(&header, MAMMOTH, "via lb").await.unwrap(),
        format!("{MAMMOTH}:via lb")
    );
    let header = proxy_header(v6, "[::1]:5432".parse().unwrap());
    assert_eq!(
        fixture.classic(&header, MAMMOTH, "v6").await.unwrap(),
        format!("{MAMMOTH}:v6")
    );
    // The peer is loopback, but the client the header names is not allowed.
    let header = proxy_header(outside, fixture.address);
    let error = fixture.classic(&header, MAMMOTH, "x").await.unwrap_err();
    assert!(error.contains("UnrecognisedName"), "{error}");
    // No header at all: refused before anything else.
    let error = fixture.classic(&[], MAMMOTH, "x").await.unwrap_err();
    assert!(!error.is_empty());
    assert_eq!(fixture.refused("proxy_header"), 1);
    assert_eq!(fixture.refused("source_not_allowed"), 1);
}

/// Sends an SSLRequest and waits for the `S`: the connection then holds its place under the
/// per-source limit while the router waits for its ClientHello.
async fn started(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    stream
}

#[tokio::test]
async fn an_oversized_client_hello_and_connections_over_the_limits_are_refused() {
    let fixture = Fixture::start_with(
        false,
        Limits {
            per_source_rate: 1000.0,
            per_source_burst: 1000.0,
            per_source_connections: 2,
            per_database_connections: 1,
        },
    )
    .await;
    // A ClientHello that claims 64 KiB, sent in small records: cut at --max-client-hello.
    let mut stream = started(fixture.address).await;
    let mut records = Vec::new();
    let message = [&[1u8, 0x00, 0xff, 0xff][..], &[0u8; 20_000]].concat();
    for chunk in message.chunks(1000) {
        records.extend_from_slice(&[0x16, 3, 1]);
        records.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        records.extend_from_slice(chunk);
    }
    let _ = stream.write_all(&records).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert_eq!(answer, [21, 3, 3, 0, 2, 2, 40], "a handshake_failure alert");
    assert_eq!(fixture.refused("client_hello_too_large"), 1);

    // One routed connection fills elephant: the next is refused.
    let server_name = ServerName::try_from(ELEPHANT.to_owned()).unwrap();
    let mut routed = fixture
        .connector(&[])
        .connect(server_name, started(fixture.address).await)
        .await
        .unwrap();
    routed.write_all(b"held").await.unwrap();
    let mut buffer = [0u8; 64];
    let read = routed.read(&mut buffer).await.unwrap();
    assert_eq!(&buffer[..read], format!("{ELEPHANT}:held").as_bytes());
    let error = fixture.classic(&[], ELEPHANT, "x").await.unwrap_err();
    assert!(error.contains("InternalError"), "{error}");
    assert_eq!(fixture.refused("database_connections"), 1);
    // The refused connection gives its place back as its task ends, just after its alert.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Two connections from one source are its limit (the routed one and this one): a third
    // is closed without an answer.
    let _second = started(fixture.address).await;
    let mut third = TcpStream::connect(fixture.address).await.unwrap();
    third.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(fixture.refused("source_connections"), 1);
    drop(routed);
}

/// The table with elephant open to no source by name and linked to a tunnel with `token`
/// (when given), and mammoth open to loopback by name.
fn tunnel_routes(fixture: &Fixture, token: Option<&str>) {
    let mut elephant = route("shop", "elephant", fixture.elephant, &[]);
    elephant.tunnel_digests = token
        .map(tunnel_request::token_digest)
        .into_iter()
        .collect();
    let mammoth = route("zoo", "mammoth", fixture.mammoth, &["127.0.0.0/8"]);
    fixture
        .table
        .send_replace(Arc::new(RouteTable::from_routes([
            (ELEPHANT.to_owned(), elephant),
            (MAMMOTH.to_owned(), mammoth),
        ])));
}

#[tokio::test]
async fn a_tunnel_reaches_its_own_database_by_its_token_and_no_other() {
    let fixture = Fixture::start(false).await;
    let token = "ab".repeat(32);
    tunnel_routes(&fixture, Some(&token));
    let request = |name: &str, token: &str| tunnel_request::encode(name, token).unwrap();
    // The tunnel's request, then the client's own SSLRequest and TLS, unchanged: the client
    // verifies elephant's own certificate.
    assert_eq!(
        fixture
            .classic(&request(ELEPHANT, &token), ELEPHANT, "hello")
            .await
            .unwrap(),
        format!("{ELEPHANT}:hello")
    );
    // By name, elephant is open to no source.
    assert!(fixture.classic(&[], ELEPHANT, "hello").await.is_err());
    assert_eq!(fixture.refused("source_not_allowed"), 1);
    // The attacks: a made-up token for elephant; elephant's token for mammoth, which is open
    // by name to this very source (the tunnel's way in does not fall back on the allow-list).
    let forged = "cd".repeat(32);
    assert!(
        fixture
            .classic(&request(ELEPHANT, &forged), ELEPHANT, "hello")
            .await
            .is_err()
    );
    assert!(
        fixture
            .classic(&request(MAMMOTH, &token), MAMMOTH, "hello")
            .await
            .is_err()
    );
    assert_eq!(fixture.refused("tunnel_not_allowed"), 2);
    // A request after another opening, and a malformed one, are refused before any answer.
    let gssenc = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let late = [&gssenc[..], &request(ELEPHANT, &token)].concat();
    assert_eq!(exchange(fixture.address, &late).await, b"N");
    let mut cut = request(ELEPHANT, &token);
    cut.truncate(cut.len() - 2);
    let length = u32::try_from(cut.len()).unwrap().to_be_bytes();
    cut[..4].copy_from_slice(&length);
    assert_eq!(exchange(fixture.address, &cut).await, b"");
    assert_eq!(fixture.refused("tunnel_request"), 2);
}

#[tokio::test]
async fn unlinking_closes_the_tunnels_open_connections() {
    let fixture = Fixture::start(false).await;
    let token = "ab".repeat(32);
    tunnel_routes(&fixture, Some(&token));
    let mut tls = fixture
        .session(&tunnel_request::encode(ELEPHANT, &token).unwrap())
        .await;
    tunnel_routes(&fixture, None);
    let mut buffer = [0u8; 128];
    let read = tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buffer))
        .await
        .expect("closed within a second");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_tunnels_connections_are_not_held_to_the_per_source_limits() {
    let fixture = Fixture::start_with(
        false,
        Limits {
            per_source_rate: 0.001,
            per_source_burst: 2.0,
            per_source_connections: 2,
            per_database_connections: 100,
        },
    )
    .await;
    let token = "ab".repeat(32);
    tunnel_routes(&fixture, Some(&token));
    let request = tunnel_request::encode(ELEPHANT, &token).unwrap();
    // Five tunnel sessions held open at once from this one address: over both the source's
    // burst and its concurrency, each still reaches elephant.
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(fixture.session(&request).await);
    }
    for session in &mut sessions {
        session.write_all(b"through").await.unwrap();
        let mut buffer = [0u8; 64];
        let read = session.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..read], format!("{ELEPHANT}:through").as_bytes());
    }
    // A wrong token keeps the place and the rate it took: with the bucket empty after two of
    // them, the address's next connection is refused for its rate.
    let forged = tunnel_request::encode(ELEPHANT, &"cd".repeat(32)).unwrap();
    for _ in 0..2 {
        assert!(fixture.classic(&forged, ELEPHANT, "x").await.is_err());
    }
    assert_eq!(fixture.refused("tunnel_not_allowed"), 2);
    assert!(fixture.classic(&request, ELEPHANT, "x").await.is_err());
    assert_eq!(fixture.refused("source_rate"), 1);
}
