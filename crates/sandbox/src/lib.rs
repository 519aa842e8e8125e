//! The sandbox: a one-process stand-in for a Kubernetes control plane (API server and garbage
//! collector), a kubelet (the local runtime), and an S3 server.
//!
//! It exists so that every test exercises tusk over real HTTP with the unmodified kube-rs client
//! and the real kubectl, and so that `tusk dev` runs the platform with no cluster. Its rule is
//! fidelity: whatever it implements behaves as kube-apiserver and the kubelet do.

pub mod apiserver;
pub mod controllers;
mod event_recorder;
mod gc;
pub mod proxy;
pub mod runtime;
pub mod s3;
mod s3_store;
mod scheduling;

pub use apiserver::{Sandbox, SandboxBuilder};
