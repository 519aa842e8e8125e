//! Reads a report the instance serves as JSON on its health port (see [`tusk_api::instance`]).
//!
//! The instance runs a database the tenant controls, so what it serves is untrusted: it is
//! asked for only at an IP address the kubelet reported for a pod the cluster's StatefulSet
//! controls (never at a name), read within [`REPORT_TIMEOUT`] and a size limit, and parsed
//! strictly into the report's type; the caller checks the values.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use tusk_api::names;

/// How long the instance may take to answer.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads the report at `path` of the instance at `pod_ip`, at most `max_bytes` of it, as a
/// `T`. The error says why in words fit for a status (it quotes nothing the instance sent).
pub async fn fetch<T: DeserializeOwned>(
    pod_ip: &str,
    path: &str,
    max_bytes: usize,
) -> Result<T, String> {
    let ip: IpAddr = pod_ip
        .parse()
        .map_err(|_| "the pod's IP is not an address".to_owned())?;
    let uri: hyper::Uri = format!(
        "http://{}{path}",
        SocketAddr::new(ip, names::INSTANCE_HEALTH_PORT)
    )
    .parse()
    .map_err(|error| format!("{error}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let read = async {
        let response = client.get(uri).await.map_err(|error| error.to_string())?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("the instance answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        serde_json::from_slice::<T>(&body)
            .map_err(|_| format!("the instance's report at {path} is malformed"))
    };
    tokio::time::timeout(REPORT_TIMEOUT, read)
        .await
        .map_err(|_| "the instance did not answer in time".to_owned())?
}
