//! `tusk tunnel` against real servers: an echo server and a real PostgreSQL.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tusk_instance::tunnel::{Tunnel, TunnelConfig, TunnelError};

/// A TCP server that writes back whatever it reads, on as many connections as it gets.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    address
}

struct RunningTunnel {
    address: SocketAddr,
    health: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), TunnelError>>,
}

async fn start_tunnel(configure: impl FnOnce(&mut TunnelConfig), target: String) -> RunningTunnel {
    let mut config = TunnelConfig::new("127.0.0.1:0".parse().unwrap(), target);
    configure(&mut config);
    let tunnel = Tunnel::bind(config).await.unwrap();
    let address = tunnel.local_addr().unwrap();
    let health = tunnel.health_addr().map(Result::unwrap);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tunnel.serve(async move {
        let _ = stopped.await;
    }));
    RunningTunnel {
        address,
        health,
        shutdown: Some(shutdown),
        task,
    }
}

/// Sends `payload` and reads as many bytes back.
async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).await.unwrap();
    let mut echoed = vec![0; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .expect("no echo within 10s")
        .unwrap();
    echoed
}

/// Whether the peer closed the connection (EOF or reset) within a few seconds.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn bytes_go_both_ways_through_the_tunnel() {
    let tunnel = start_tunnel(|_| {}, echo_server().await.to_string()).await;
    let mut client = TcpStream::connect(tunnel.address).await.unwrap();
    // More than any socket buffer, so that both directions stream concurrently.
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut reader, mut writer) = client.split();
    let send = async {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let receive = reader.read_to_end(&mut echoed);
    let ((), received) = tokio::join!(send, receive);
    received.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echoed bytes differ from those sent");
}

#[tokio::test]
async fn the_connection_beyond_the_limit_is_refused() {
    let tunnel = start_tunnel(
        |config| config.max_connections = 2,
        echo_server().await.to_string(),
    )
    .await;
    let mut first = TcpStream::connect(tunnel.address).await.unwrap();
    let mut second = TcpStream::connect(tunnel.address).await.unwrap();
    assert_eq!(round_trip(&mut first, b"one").await, b"one");
    assert_eq!(round_trip(&mut second, b"two").await, b"two");

    let mut third = TcpStream::connect(tunnel.address).await.unwrap();
    assert!(
        closed_by_peer(&mut third).await,
        "the third connection was not closed although the limit is 2"
    );
    assert_eq!(round_trip(&mut first, b"still here").await, b"still here");

    // Closing one frees its slot for a newcomer.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = TcpStream::connect(tunnel.address).await.unwrap();
        if next.write_all(b"four").await.is_ok() {
            let mut echoed = [0u8; 4];
            let read =
                tokio::time::timeout(Duration::from_secs(5), next.read_exact(&mut echoed)).await;
            if matches!(read, Ok(Ok(_))) {
                assert_eq!(&echoed, b"four");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_open_connections() {
    let mut tunnel = start_tunnel(
        |config| config.drain_grace = Duration::from_secs(30),
        echo_server().await.to_string(),
    )
    .await;
    let mut open = TcpStream::connect(tunnel.address).await.unwrap();
    assert_eq!(round_trip(&mut open, b"before").await, b"before");

    tunnel.shutdown.take().unwrap().send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(tunnel.address).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the tunnel still accepts after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open connection keeps working while the tunnel drains...
    assert_eq!(round_trip(&mut open, b"during").await, b"during");
    assert!(!tunnel.task.is_finished());
    // ...and the tunnel ends once it is closed.
    drop(open);
    tokio::time::timeout(Duration::from_secs(10), tunnel.task)
        .await
        .expect("the tunnel did not end after its last connection closed")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn connections_still_open_after_the_grace_period_are_closed() {
    let mut tunnel = start_tunnel(
        |config| config.drain_grace = Duration::from_millis(300),
        echo_server().await.to_string(),
    )
    .await;
    let mut idle = TcpStream::connect(tunnel.address).await.unwrap();
    assert_eq!(round_trip(&mut idle, b"hello").await, b"hello");
    tunnel.shutdown.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), tunnel.task)
        .await
        .expect("the tunnel did not end after its grace period")
        .unwrap()
        .unwrap();
    assert!(
        closed_by_peer(&mut idle).await,
        "the idle connection survived the tunnel"
    );
}

#[tokio::test]
async fn readiness_follows_the_target() {
    let target = echo_server().await;
    let tunnel = start_tunnel(
        |config| config.health = Some("127.0.0.1:0".parse().unwrap()),
        target.to_string(),
    )
    .await;
    let health = tunnel.health.unwrap();
    assert_eq!(common::http_status(health, "/readyz").await, Some(200));
    assert_eq!(common::http_status(health, "/livez").await, Some(200));

    // A port nothing listens on: bind one, note it, close it.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = start_tunnel(
        |config| config.health = Some("127.0.0.1:0".parse().unwrap()),
        closed_port.to_string(),
    )
    .await;
    let health = unreachable.health.unwrap();
    assert_eq!(common::http_status(health, "/readyz").await, Some(503));
    assert_eq!(common::http_status(health, "/livez").await, Some(200));
    // A client of an unreachable target is closed rather than left hanging.
    let mut client = TcpStream::connect(unreachable.address).await.unwrap();
    assert!(closed_by_peer(&mut client).await);
}

#[tokio::test]
async fn a_real_postgresql_is_reachable_through_the_tunnel() {
    let mut instance = common::Instance::start("work_mem = '4MB'\n");
    instance.wait_ready().await;
    let target = format!("{}:5432", instance.config.listen_host);
    let tunnel = start_tunnel(|_| {}, target).await;

    let client = common::connect(
        "127.0.0.1",
        tunnel.address.port(),
        common::OWNER,
        common::OWNER_PASSWORD,
        common::OWNER,
    )
    .await
    .expect("cannot connect to PostgreSQL through the tunnel");
    // A query that sends a sizeable parameter and brings a larger result back.
    let text = "tusk".repeat(50_000);
    let row = client
        .query_one("SELECT repeat($1::text, 5), current_user::text", &[&text])
        .await
        .unwrap();
    let echoed: String = row.get(0);
    let user: String = row.get(1);
    assert_eq!(echoed.len(), text.len() * 5);
    assert_eq!(user, common::OWNER);
    // The server sees the tunnel, not the client, as its peer.
    let peer: Option<String> = client
        .query_one("SELECT host(inet_client_addr())", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(peer.as_deref(), Some("127.0.0.1"));
    drop(client);
    instance.stop().await.unwrap();
}
