//! exec and attach over a WebSocket, in the channel protocols of apimachinery's wsstream that
//! kubectl speaks (`v5.channel.k8s.io`, and `v4.channel.k8s.io` before it): each binary message
//! starts with its channel, 0 stdin, 1 stdout, 2 stderr, 3 error (a `Status` once the command
//! has ended), 4 resize (`{"Width":..,"Height":..}`); v5 adds 255, whose next byte names a
//! channel the client closes (stdin, when its input ends).

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::apiserver::LogStream;
use crate::runtime::exec::{ExecError, ExecInput, ExecProcess, resize, write_input};

/// The subprotocols served, the preferred first.
pub(super) const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How much of a stream one message carries at most.
const CHUNK: usize = 32 * 1024;

/// The `Status` the kubelet writes on the error channel when a command ends with `code`.
fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The kubelet's `Status` for a command that could not run at all.
fn internal_error(error: &ExecError) -> Value {
    let cause = format!("error executing command in container: {error}");
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {cause}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    })
}

fn message(channel: u8, bytes: &[u8]) -> Message {
    let mut framed = Vec::with_capacity(bytes.len() + 1);
    framed.push(channel);
    framed.extend_from_slice(bytes);
    Message::Binary(framed.into())
}

/// Copies a process's output to a channel until it ends.
async fn pump(
    reader: Option<Box<dyn AsyncRead + Send + Unpin>>,
    channel: u8,
    out: mpsc::Sender<Message>,
) {
    let Some(mut reader) = reader else { return };
    let mut buffer = vec![0; CHUNK];
    loop {
        match reader.read(&mut buffer).await {
            // A terminal reports its end as an error (EIO) once the process is gone.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(message(channel, &buffer[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends the final `Status` and closes the WebSocket normally.
async fn finish<S>(ws: &mut futures::stream::SplitSink<WebSocketStream<S>, Message>, status: &Value)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let body = serde_json::to_vec(status).unwrap_or_default();
    let _ = ws.send(message(ERROR, &body)).await;
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = ws.send(Message::Close(Some(close))).await;
}

/// Runs an exec session: the caller's input to the process, its output back, and its exit
/// status last. The process dies with the session, and the session ends when the container
/// stops or the server shuts down.
pub(super) async fn serve_exec<S>(
    ws: WebSocketStream<S>,
    process: Result<ExecProcess, ExecError>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut incoming) = ws.split();
    let mut process = match process {
        Ok(process) => process,
        Err(error) => return finish(&mut sink, &internal_error(&error)).await,
    };
    let stopped = process.container_stopped.clone();
    let killer = process.killer();
    let mut killed = false;
    let mut input = std::mem::replace(&mut process.input, ExecInput::None);
    let (out, mut outputs) = mpsc::channel::<Message>(16);
    let stdout = tokio::spawn(pump(process.stdout.take(), STDOUT, out.clone()));
    let stderr = tokio::spawn(pump(process.stderr.take(), STDERR, out));
    let child = &mut process.child;
    let ended = async move {
        let _ = stdout.await;
        let _ = stderr.await;
        child.wait().await
    };
    tokio::pin!(ended);
    let status = loop {
        tokio::select! {
            Some(output) = outputs.recv() => {
                if sink.send(output).await.is_err() {
                    return;
                }
            }
            status = &mut ended => break status,
            received = incoming.next() => match received {
                // kube-apiserver reads a channel frame from a text message as from a binary one,
                // and the Python client sends its stdin as text.
                Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => match message.into_data().split_first() {
                    Some((&STDIN, data)) => {
                        // A process that stopped reading gets no more input.
                        let written = write_input(&mut input, data).await;
                        if written.is_err() {
                            input = ExecInput::None;
                        }
                    }
                    Some((&RESIZE, data)) => {
                        if let Ok(size) = serde_json::from_slice::<Value>(data) {
                            let dimension = |name: &str| size.get(name).and_then(Value::as_u64).and_then(|v| u16::try_from(v).ok());
                            if let (Some(width), Some(height)) = (dimension("Width"), dimension("Height")) {
                                resize(&input, height, width);
                            }
                        }
                    }
                    // A terminal has no end of input but the process's own: only a pipe closes.
                    Some((&CLOSE, [STDIN, ..])) if matches!(input, ExecInput::Pipe(_)) => input = ExecInput::None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = stopped.cancelled(), if !killed => {
                // The container is gone: so is everything exec'd into it.
                killer.kill();
                killed = true;
                input = ExecInput::None;
            }
            _ = shutdown.cancelled() => return,
        }
    };
    // Everything the process wrote goes out before its status.
    while let Ok(output) = outputs.try_recv() {
        if sink.send(output).await.is_err() {
            return;
        }
    }
    let code = status
        .as_ref()
        .map(crate::runtime::exec::exit_code)
        .unwrap_or(1);
    finish(&mut sink, &exit_status(code)).await;
}

/// Runs an attach session: what the container writes from now on, on stdout (its log merges
/// both streams), until it stops.
pub(super) async fn serve_attach<S>(
    ws: WebSocketStream<S>,
    output: LogStream,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut incoming) = ws.split();
    let mut output = output;
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(chunk) => {
                    for piece in chunk.chunks(CHUNK) {
                        if sink.send(message(STDOUT, piece)).await.is_err() {
                            return;
                        }
                    }
                }
                None => break,
            },
            received = incoming.next() => match received {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = shutdown.cancelled() => return,
        }
    }
    finish(&mut sink, &exit_status(0)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_reports_its_exit_code_as_client_go_reads_it() {
        let status = exit_status(3);
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(0)["status"], "Success");
    }
}
