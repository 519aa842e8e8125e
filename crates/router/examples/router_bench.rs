//! The parts of `bench/router`, each its own process so that the router's memory is measured
//! alone:
//!
//! - `serve ROUTES NAME=ADDRESS...`: the router on 127.0.0.1 with a fixed routing table of
//!   `ROUTES` names (the given ones and made-up others), open to loopback; prints
//!   `port <port>`.
//! - `backend`: a stand-in database for idle connections: it answers the router's SSLRequest
//!   with `S`, reads the forwarded ClientHello, answers one byte `!` and then holds the
//!   connection; prints `port <port>`.
//! - `hold COUNT PORT NAME`: opens `COUNT` connections through the router at `PORT` for `NAME`
//!   the classic way (SSLRequest, `S`, ClientHello), waits for each one's `!` from the
//!   backend, prints `held <COUNT>` and holds them until its standard input closes.
//!
//! The router here is the library's [`Router`] with the limits raised, without the watches
//! (no API server): the path of a connection is the one `tusk router` runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tusk_router::limits::Limits;
use tusk_router::metrics::Metrics;
use tusk_router::routes::{Route, RouteTable};
use tusk_router::server::{Router, Settings};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const USAGE: &str =
    "usage: router_bench serve ROUTES NAME=ADDRESS... | backend | hold COUNT PORT NAME";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]).await,
        Some("backend") => backend().await,
        Some("hold") => hold(&args[1..]).await,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn loopback_route(namespace: &str, cluster: &str, backend: SocketAddr) -> Route {
    Route {
        namespace: namespace.to_owned(),
        cluster: cluster.to_owned(),
        backend,
        allowed: vec!["127.0.0.0/8".parse().expect("a CIDR")],
        tunnel_digests: Vec::new(),
    }
}

async fn serve(args: &[String]) {
    let size: usize = args
        .first()
        .and_then(|text| text.parse().ok())
        .expect(USAGE);
    let mut routes: Vec<(String, Route)> = args[1..]
        .iter()
        .map(|pair| {
            let (name, address) = pair.split_once('=').expect(USAGE);
            let backend = address.parse().expect("NAME=IP:PORT");
            (name.to_owned(), loopback_route("bench", name, backend))
        })
        .collect();
    // Made-up databases, so that the table has the size of a large installation.
    let unused = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 1), 5432));
    for i in routes.len()..size {
        let (namespace, cluster) = (format!("tenant-{}", i % 97), format!("cluster-{i}"));
        routes.push((
            format!("{cluster}.{namespace}.db.tusk.local"),
            loopback_route(&namespace, &cluster, unused),
        ));
    }
    let table = RouteTable::from_routes(routes);
    let (_sender, receiver) = tokio::sync::watch::channel(Arc::new(table));
    let settings = Settings {
        handshake_timeout: Duration::from_secs(10),
        max_client_hello: 16 * 1024,
        proxy_protocol: false,
        // Every connection of the benchmark comes from 127.0.0.1.
        limits: Limits {
            per_source_rate: 1e6,
            per_source_burst: 1e6,
            per_source_connections: 1_000_000,
            per_database_connections: 1_000_000,
        },
    };
    let listener = TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .await
        .expect("a port");
    println!("port {}", listener.local_addr().expect("bound").port());
    Router::new(settings, receiver, Metrics::new())
        .serve(listener, CancellationToken::new())
        .await;
}

async fn backend() {
    let listener = TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .await
        .expect("a port");
    println!("port {}", listener.local_addr().expect("bound").port());
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut request = [0u8; 8];
            stream.read_exact(&mut request).await?;
            stream.write_all(b"S").await?;
            let mut hello = [0u8; 4096];
            if stream.read(&mut hello).await? == 0 {
                return Ok(());
            }
            stream.write_all(b"!").await?;
            // Hold the connection until the other side closes it.
            while stream.read(&mut hello).await? > 0 {}
            Ok::<_, std::io::Error>(())
        });
    }
}

/// A ClientHello for `name`, as rustls' client writes it.
fn client_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("a DNS name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("a client");
    let mut bytes = Vec::new();
    client.write_tls(&mut bytes).expect("a ClientHello");
    bytes
}

async fn hold(args: &[String]) {
    let [count, port, name] = args else {
        panic!("{USAGE}");
    };
    let count: usize = count.parse().expect(USAGE);
    let port: u16 = port.parse().expect(USAGE);
    let hello = Arc::new(client_hello(name));
    let mut held = Vec::with_capacity(count);
    // In batches, as a pool of clients would connect.
    for batch in (0..count).collect::<Vec<_>>().chunks(50) {
        let opened = futures::future::join_all(batch.iter().map(|_| {
            let hello = hello.clone();
            async move {
                let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
                stream.write_all(&SSL_REQUEST).await?;
                let mut answer = [0u8; 1];
                stream.read_exact(&mut answer).await?;
                stream.write_all(&hello).await?;
                stream.read_exact(&mut answer).await?;
                if answer != *b"!" {
                    return Err(std::io::Error::other("not routed to the backend"));
                }
                Ok::<_, std::io::Error>(stream)
            }
        }))
        .await;
        for stream in opened {
            held.push(stream.expect("a routed connection"));
        }
    }
    println!("held {}", held.len());
    let mut stdin = tokio::io::stdin();
    let mut rest = Vec::new();
    let _ = stdin.read_to_end(&mut rest).await;
}
