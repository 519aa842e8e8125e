//! WAL segment names and where a cluster's archive is, for the tests on `tusk dev` that plant
//! segments in a cluster's archive.

use std::path::PathBuf;

use crate::support::{Dev, Kubectl};

/// The directory in which the S3 server of `dev` keeps the WAL archive of `cluster` in
/// `namespace`, whose uid `kubectl` reads.
pub fn archive_dir(dev: &Dev, kubectl: &Kubectl, namespace: &str, cluster: &str) -> PathBuf {
    let uid = kubectl
        .ok(&[
            "get",
            "postgrescluster",
            cluster,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .trim()
        .to_owned();
    dev.s3_dir()
        .join("tusk-backups/dev")
        .join(namespace)
        .join(cluster)
        .join(uid)
        .join("wal")
}

/// The WAL segment after `segment` (24 hex digits: timeline, log, segment in the log), for
/// 16 MiB segments.
pub fn next_segment(segment: &str) -> String {
    let timeline = &segment[..8];
    let log = u32::from_str_radix(&segment[8..16], 16).expect("hex");
    let seg = u32::from_str_radix(&segment[16..], 16).expect("hex");
    let (log, seg) = if seg == 0xFF {
        (log + 1, 0)
    } else {
        (log, seg + 1)
    };
    format!("{timeline}{log:08X}{seg:08X}")
}
