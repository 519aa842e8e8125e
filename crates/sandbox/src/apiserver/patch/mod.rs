//! The four patch types kube-apiserver accepts: JSON merge, JSON, strategic merge and server-side apply.
