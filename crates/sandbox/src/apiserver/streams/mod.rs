//! The streaming subresources of pods: `exec`, `attach` and `portforward`, over the protocols
//! kubectl 1.33 speaks.
//!
//! exec and attach use WebSocket subprotocols of channels (`channels`); port-forward tunnels
//! SPDY/3.1 through a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl's default since 1.31),
//! or, as older clients and kubectl's fallback do, upgrades the connection to SPDY/3.1 itself
//! (`spdy`, `portforward`). The requests are authorized first, as `create` on the subresource
//! whatever the method (see `rbac`), and the pod must be one the local runtime runs: a command
//! runs only as one of that pod's processes, a forwarded connection goes only to that pod's
//! own address, both found by the uid of the pod object the caller was authorized for.

mod channels;
mod portforward;
mod spdy;

use futures::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::resources::ResourceType;
use super::server::{Body, Server, resolve_container};
use super::store::Key;
use super::{LogRequest, ops};
use crate::runtime::NODE_NAME;
use crate::runtime::exec::ExecOptions;

/// The subprotocol of port-forward tunnelled through a WebSocket.
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forward protocol a SPDY upgrade negotiates.
const PORT_FORWARD: &str = "portforward.k8s.io";

/// Whether a request goes to a streaming subresource of pods.
pub(crate) fn is_streaming(rt: &ResourceType, subresource: Option<&str>) -> bool {
    rt.group.is_empty()
        && rt.plural == "pods"
        && matches!(subresource, Some("exec" | "attach" | "portforward"))
}

/// The query of a connect request, with its repeated parameters (`command`).
struct ConnectQuery(Vec<(String, String)>);

impl ConnectQuery {
    fn parse(request: &Request<Incoming>) -> Self {
        let query = request.uri().query().unwrap_or_default();
        Self(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A boolean as Go's strconv.ParseBool reads it.
    fn flag(&self, name: &str) -> bool {
        matches!(
            self.value(name),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }
}

/// kube-apiserver's answer when the kubelet cannot be reached or refuses: a 500 whose message
/// kubectl prints after "unable to upgrade connection".
fn backend_error(message: impl Into<String>) -> ApiError {
    ApiError {
        code: 500,
        reason: "InternalError",
        message: message.into(),
        details: None,
    }
}

/// Answers a request to `pods/<name>/{exec,attach,portforward}`, already authorized: checks
/// the pod and the options, then switches protocols and serves the session in the background.
pub(crate) fn connect(
    server: &Server,
    request: Request<Incoming>,
    rt: &ResourceType,
    key: &Key,
    subresource: &str,
) -> Result<Response<Body>, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::POST) {
        return Err(ApiError::method_not_allowed(request.method().as_str()));
    }
    let pod = server.store.read().get(&rt.storage, key).cloned();
    let pod = pod.ok_or_else(|| ApiError::not_found(rt, &key.1))?;
    let query = ConnectQuery::parse(&request);
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            key.1
        )));
    }
    let uid = ops::meta_str(&pod, "uid").unwrap_or_default().to_string();
    let access = match &server.pod_access {
        Some(access) if node == NODE_NAME => access.clone(),
        _ => {
            return Err(backend_error(format!(
                "error dialing backend: no kubelet serves node {node:?}"
            )));
        }
    };
    let shutdown = server.shutdown.clone();
    match subresource {
        "portforward" => {
            let address = access.address(&uid).ok_or_else(|| {
                backend_error(format!("pod {} is not running on node {node:?}", key.1))
            })?;
            let target = portforward::Target {
                address,
                pod: key.1.clone(),
                uid,
            };
            port_forward(request, target, shutdown)
        }
        _ => {
            let container = resolve_container(&pod, &key.1, query.value("container"))?;
            if !access.is_running(&uid, &container) {
                return Err(backend_error(format!(
                    "container not found ({container:?})"
                )));
            }
            let options = ExecOptions {
                stdin: query.flag("stdin"),
                stdout: query.flag("stdout"),
                stderr: query.flag("stderr") && !query.flag("tty"),
                tty: query.flag("tty"),
            };
            if !(options.stdin || options.stdout || query.flag("stderr")) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            let (response, protocol) = accept_websocket(&request, &channels::PROTOCOLS)?;
            tracing::debug!(pod = %key.1, %container, %protocol, subresource, "streaming");
            if subresource == "exec" {
                let command = query.all("command");
                if command.is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container",
                    ));
                }
                tokio::spawn(async move {
                    if let Some(ws) = upgrade_websocket(request).await {
                        let process = access.exec(&uid, &container, &command, &options);
                        channels::serve_exec(ws, process, shutdown).await;
                    }
                });
            } else {
                let logs = server
                    .pod_logs
                    .clone()
                    .ok_or_else(|| backend_error("the runtime serves no container output"))?;
                let output = logs
                    .logs(LogRequest {
                        namespace: key.0.clone(),
                        pod: key.1.clone(),
                        uid,
                        container,
                        previous: false,
                        follow: true,
                        tail_lines: Some(0),
                        since: None,
                        timestamps: false,
                    })
                    .map_err(backend_error)?;
                tokio::spawn(async move {
                    if let Some(ws) = upgrade_websocket(request).await {
                        channels::serve_attach(ws, output, shutdown).await;
                    }
                });
            }
            Ok(response)
        }
    }
}

/// Port-forward: through a WebSocket tunnel, or over the connection upgraded to SPDY/3.1.
fn port_forward(
    request: Request<Incoming>,
    target: portforward::Target,
    shutdown: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    if is_websocket(&request) {
        let (response, _) = accept_websocket(&request, &[SPDY_TUNNEL])?;
        tokio::spawn(async move {
            let Some(ws) = upgrade_websocket(request).await else {
                return;
            };
            let (mut sink, stream) = ws.split();
            let incoming = stream
                .take_while(|message| {
                    futures::future::ready(matches!(message, Ok(message) if !message.is_close()))
                })
                .filter_map(|message| {
                    futures::future::ready(match message {
                        Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                        _ => None,
                    })
                });
            let (outgoing, mut frames) = mpsc::channel::<Vec<u8>>(32);
            let writer = async move {
                while let Some(frame) = frames.recv().await {
                    if sink.send(Message::Binary(frame.into())).await.is_err() {
                        return;
                    }
                }
                let _ = sink.close().await;
            };
            let session = portforward::serve(Box::pin(incoming), outgoing, target, shutdown);
            tokio::join!(session, writer);
        });
        return Ok(response);
    }
    let upgrade = header_values(&request, header::UPGRADE);
    if !upgrade
        .iter()
        .any(|value| value.eq_ignore_ascii_case("SPDY/3.1"))
    {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let offered = header_values(&request, "x-stream-protocol-version");
    if !offered.iter().any(|value| value == PORT_FORWARD) {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{PORT_FORWARD:?}]"
            ),
            details: None,
        });
    }
    let mut response = switching_protocols("SPDY/3.1");
    response.headers_mut().insert(
        "x-stream-protocol-version",
        header::HeaderValue::from_static(PORT_FORWARD),
    );
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let (read, mut write) = tokio::io::split(TokioIo::new(upgraded));
        let incoming = tokio_util::io::ReaderStream::new(read)
            .take_while(|chunk| futures::future::ready(chunk.is_ok()))
            .filter_map(|chunk| futures::future::ready(chunk.ok().map(|bytes| bytes.to_vec())));
        let (outgoing, mut frames) = mpsc::channel::<Vec<u8>>(32);
        let writer = async move {
            while let Some(frame) = frames.recv().await {
                if write.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        };
        let session = portforward::serve(Box::pin(incoming), outgoing, target, shutdown);
        tokio::join!(session, writer);
    });
    Ok(response)
}

/// Every value of a header, comma-separated lists split.
fn header_values(request: &Request<Incoming>, name: impl header::AsHeaderName) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
        .collect()
}

fn is_websocket(request: &Request<Incoming>) -> bool {
    header_values(request, header::UPGRADE)
        .iter()
        .any(|value| value.eq_ignore_ascii_case("websocket"))
}

fn switching_protocols(upgrade: &'static str) -> Response<Body> {
    let mut response = Response::new(UnsyncBoxBody::new(http_body_util::Empty::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    headers.insert(header::UPGRADE, header::HeaderValue::from_static(upgrade));
    response
}

/// The 101 answer to a WebSocket handshake (RFC 6455), with the first subprotocol the client
/// offers that the server speaks.
fn accept_websocket(
    request: &Request<Incoming>,
    served: &[&'static str],
) -> Result<(Response<Body>, &'static str), ApiError> {
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_websocket(request));
    let Some(key) = key else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let offered = header_values(request, header::SEC_WEBSOCKET_PROTOCOL);
    let Some(protocol) = offered
        .iter()
        .find_map(|offer| served.iter().find(|served| **served == offer.as_str()))
    else {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {served:?}"
        )));
    };
    let mut response = switching_protocols("websocket");
    let headers = response.headers_mut();
    if let Ok(accept) = header::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static(protocol),
    );
    Ok((response, protocol))
}

/// The WebSocket once the 101 answer has gone out.
async fn upgrade_websocket(
    request: Request<Incoming>,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    let upgraded = hyper::upgrade::on(request).await.ok()?;
    Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await)
}
