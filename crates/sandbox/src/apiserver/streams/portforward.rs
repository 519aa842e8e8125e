//! A port-forward session: kubectl's SPDY streams, paired by `requestid` into an error stream
//! and a data stream per forwarded connection, each pair carried to a TCP connection to the
//! pod's address, as the kubelet carries them into the pod's network namespace.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::spdy::{self, Frame, FrameReader, FrameWriter};

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a connection's output one DATA frame carries at most.
const CHUNK: usize = 32 * 1024;

/// The pod a session forwards to.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// Its address on the pod network, from the runtime.
    pub address: Ipv4Addr,
    /// Its name, for error messages.
    pub pod: String,
    /// Its uid, for error messages.
    pub uid: String,
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: String,
}

/// What the session passes to a connection: bytes from the client, or the end of them.
type ToPod = mpsc::Sender<Option<Vec<u8>>>;

/// Serves one session until the client leaves, the protocol breaks, or the server shuts down.
/// `incoming` is the client's byte stream; each frame for the client goes to `outgoing`.
pub(super) async fn serve(
    mut incoming: impl Stream<Item = Vec<u8>> + Unpin,
    outgoing: mpsc::Sender<Vec<u8>>,
    target: Target,
    shutdown: CancellationToken,
) {
    let mut reader = FrameReader::default();
    let mut writer = FrameWriter::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut to_pod: HashMap<u32, (ToPod, AbortHandle)> = HashMap::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            chunk = incoming.next() => match chunk {
                Some(bytes) => reader.push(&bytes),
                None => return,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.cancelled() => return,
        }
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "ending a port-forward session");
                    return;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let Ok(reply) = writer.syn_reply(stream_id) else {
                        return;
                    };
                    if outgoing.send(reply).await.is_err() {
                        return;
                    }
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(key, _)| key == name)
                            .map(|(_, value)| value.clone())
                            .unwrap_or_default()
                    };
                    let request = header("requestid");
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = header("port");
                    match header("streamtype").as_str() {
                        "error" => pair.error = Some(stream_id),
                        "data" => pair.data = Some(stream_id),
                        _ => {}
                    }
                    if let Pair {
                        error: Some(error),
                        data: Some(data),
                        port,
                    } = pair
                    {
                        let (error, data, port) = (*error, *data, port.clone());
                        pairs.remove(&request);
                        let (sender, receiver) = mpsc::channel(8);
                        let forward = forward(
                            target.clone(),
                            port,
                            error,
                            data,
                            receiver,
                            outgoing.clone(),
                        );
                        let handle = connections.spawn(forward);
                        to_pod.insert(data, (sender, handle));
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    if let Some((sender, _)) = to_pod.get(&stream_id) {
                        if !data.is_empty() {
                            let _ = sender.send(Some(data)).await;
                        }
                        if fin {
                            let _ = sender.send(None).await;
                            to_pod.remove(&stream_id);
                        }
                    }
                }
                Frame::RstStream { stream_id } => {
                    if let Some((_, handle)) = to_pod.remove(&stream_id) {
                        handle.abort();
                    }
                }
                Frame::Ping { id } => {
                    if outgoing.send(spdy::ping(id)).await.is_err() {
                        return;
                    }
                }
                Frame::GoAway => return,
                Frame::Ignored => {}
            }
        }
    }
}

/// Carries one forwarded connection: connects to the pod's port, then copies both ways. A
/// failure is reported on the error stream, in the kubelet's words.
async fn forward(
    target: Target,
    port: String,
    error_stream: u32,
    data_stream: u32,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    outgoing: mpsc::Sender<Vec<u8>>,
) {
    let fail = |cause: String| {
        let outgoing = outgoing.clone();
        let message = format!(
            "error forwarding port {port} to pod {}, uid {}: {cause}",
            target.pod, target.uid
        );
        async move {
            let _ = outgoing
                .send(spdy::data(error_stream, true, message.as_bytes()))
                .await;
            let _ = outgoing.send(spdy::data(data_stream, true, &[])).await;
        }
    };
    let number = match port.parse::<u16>() {
        Ok(number) if number > 0 => number,
        _ => return fail(format!("invalid port {port:?}")).await,
    };
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.address, number)),
    )
    .await;
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let cause = format!("failed to connect to {}:{number}: {error}", target.address);
            return fail(cause).await;
        }
        Err(_) => {
            let cause = format!(
                "failed to connect to {}:{number}: timed out",
                target.address
            );
            return fail(cause).await;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut from_pod, mut to_pod) = stream.into_split();
    let upstream = async move {
        while let Some(Some(bytes)) = from_client.recv().await {
            if to_pod.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // The client will send no more: the pod reads the end of its input.
        let _ = to_pod.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0; CHUNK];
        loop {
            match from_pod.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if outgoing
                        .send(spdy::data(data_stream, false, &buffer[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = outgoing.send(spdy::data(data_stream, true, &[])).await;
        let _ = outgoing.send(spdy::data(error_stream, true, &[])).await;
    };
    tokio::join!(upstream, downstream);
}
