//! One module per subcommand. Each parses its own arguments and calls into a library crate.

pub mod backup;
pub mod crds;
pub mod dev;
pub mod instance;
pub mod operator;
pub mod restore;
pub mod restore_test;
pub mod router;
pub mod sandbox;
pub mod tunnel;
pub mod wal;

use tracing_subscriber::EnvFilter;

/// Logs go to stderr so that commands which stream data on stdout (`tusk backup decrypt`,
/// `tusk crds`) stay pipeable. `RUST_LOG` overrides the default level.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
