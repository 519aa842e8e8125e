//! The backup data path: `pg_basebackup` → parallel gzip (or zstd) → DARE encryption →
//! multipart upload, the restore that runs it backwards, the WAL archive, and the object-store
//! access the operator shares.
//!
//! Every stage is a small module with its own tests; [`backup`] and [`restore`] wire them with
//! bounded channels so memory stays bounded and nothing is written to a temporary file.

pub mod backup;
pub mod compress;
pub mod gateway;
pub mod job;
pub mod parallel;
pub mod pg_tls;
pub mod pipe;
pub mod restore;
pub mod restore_check;
pub mod sink;
pub mod source;
pub mod store;
pub mod unpack;
pub mod wal;
pub mod wal_archiver;

pub use backup::{BackupError, BackupOptions, BackupOutcome, Progress, run_backup};
pub use compress::Compression;
pub use restore::{RESTORE_INCOMPLETE_MARKER, RestoreError, RestoreOptions, restore};
pub use source::{PgConnection, WalMode};
pub use store::{BackupStore, ObjectInfo, StoreConfig, StoreError};
