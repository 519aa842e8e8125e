//! The six controllers, one module each.

pub mod backup;
pub mod backup_request;
pub mod backup_schedule;
pub mod cluster;
pub mod remote_cluster;
pub mod restore_test;
