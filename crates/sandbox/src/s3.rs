//! An S3-compatible server on loopback, backed by a directory.
