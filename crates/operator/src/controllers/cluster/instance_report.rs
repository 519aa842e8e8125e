//! Reading a report the instance serves on its health port ([`tusk_api::instance`]).
//!
//! The tenant controls the database the instance runs, so whatever answers is untrusted: it is
//! asked for only at the IP the kubelet reported for a pod the cluster's StatefulSet controls
//! (an address, never a name), read within [`REPORT_TIMEOUT`] and [`MAX_REPORT_BYTES`], and
//! decoded strictly; the caller checks and cleans every value before using it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use tusk_api::instance::MAX_REPORT_BYTES;
use tusk_api::names;

/// How long the instance may take to answer.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads the report at `path` of the instance at `pod_ip`; `what` names it in errors.
pub async fn fetch<T: DeserializeOwned>(pod_ip: &str, path: &str, what: &str) -> Result<T, String> {
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
        let body = Limited::new(response.into_body(), MAX_REPORT_BYTES)
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        serde_json::from_slice::<T>(&body)
            .map_err(|_| format!("the instance's report is not {what}"))
    };
    tokio::time::timeout(REPORT_TIMEOUT, read)
        .await
        .map_err(|_| "the instance did not answer in time".to_owned())?
}
