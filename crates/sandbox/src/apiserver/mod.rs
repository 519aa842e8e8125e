//! The API server: the Kubernetes REST API over HTTP/1.1 on loopback.

pub mod openapi;
pub mod patch;
pub mod schema;
pub mod selector;
pub mod table;
