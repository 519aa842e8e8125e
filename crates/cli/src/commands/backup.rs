//! `tusk backup`: the backup Job's entry point and the disaster-recovery tools.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use tusk_backup::job::{JobSettings, run_job};
use tusk_backup::restore::{decrypt_to_tar, download_tar};
use tusk_backup::{
    BackupOptions, BackupStore, Compression, PgConnection, Progress, StoreConfig, WalMode,
    run_backup,
};

/// Subcommands of `tusk backup`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take the backup that a PostgresBackupRequest asks for (what the backup Job runs).
    Run(RunArgs),
    /// Take a backup now, with no Kubernetes: the server from PGHOST/PGPORT/PGUSER/PGPASSWORD,
    /// the store from TUSK_STORE_URL and friends.
    Take(TakeArgs),
    /// Decrypt a backup object into a tar stream, with no Kubernetes and no server.
    Decrypt(DecryptArgs),
    /// Fetch a backup object from the object store and decrypt it.
    Download(DownloadArgs),
}

/// Arguments of `tusk backup run`. Everything else comes from the Job's environment.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The PostgresBackupRequest to carry out (in the namespace POD_NAMESPACE).
    #[arg(long)]
    pub request: String,
}

/// Arguments of `tusk backup take`.
#[derive(Debug, Args)]
pub struct TakeArgs {
    /// The object key to write, relative to the bucket.
    #[arg(long)]
    pub key: String,
    /// "gzip" or "zstd".
    #[arg(long, env = "TUSK_BACKUP_COMPRESSION", default_value = "gzip")]
    pub compression: String,
    /// The compression level (gzip 0-9, default 6; zstd 1-22, default 3).
    #[arg(long, env = "TUSK_BACKUP_COMPRESSION_LEVEL")]
    pub compression_level: Option<String>,
    /// Leave the WAL out of the backup (the cluster archives it with `tusk wal-push`).
    #[arg(long)]
    pub wal_from_archive: bool,
    /// A file holding the backup passphrase; TUSK_BACKUP_PASSPHRASE otherwise.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// Arguments of `tusk backup decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// A file holding the backup passphrase (one trailing newline is ignored).
    #[arg(long)]
    pub passphrase_file: PathBuf,
    /// The encrypted object; standard input when absent or "-".
    pub input: Option<PathBuf>,
    /// Where to write the tar stream; standard output when absent or "-".
    pub output: Option<PathBuf>,
}

/// Arguments of `tusk backup download`. Credentials come from AWS_ACCESS_KEY_ID and
/// AWS_SECRET_ACCESS_KEY.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The object, e.g. s3://bucket/prefix/ns/cluster/base/backup.tar.gz.dare.
    #[arg(long)]
    pub url: String,
    /// A custom S3 endpoint (MinIO, Ceph), addressed path-style.
    #[arg(long, env = "TUSK_STORE_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The S3 region.
    #[arg(long, env = "TUSK_STORE_REGION")]
    pub region: Option<String>,
    /// A file holding the backup passphrase (one trailing newline is ignored).
    #[arg(long)]
    pub passphrase_file: PathBuf,
    /// Where to write the tar stream; standard output when absent or "-".
    pub output: Option<PathBuf>,
}

/// Reads a passphrase file, dropping one trailing newline (as `echo` leaves it).
pub fn read_passphrase_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut passphrase =
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if passphrase.ends_with(b"\n") {
        passphrase.pop();
        if passphrase.ends_with(b"\r") {
            passphrase.pop();
        }
    }
    anyhow::ensure!(!passphrase.is_empty(), "{} is empty", path.display());
    Ok(passphrase)
}

/// The passphrase from `--passphrase-file`, else from TUSK_BACKUP_PASSPHRASE.
pub fn passphrase(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(file) => read_passphrase_file(file),
        None => std::env::var("TUSK_BACKUP_PASSPHRASE")
            .ok()
            .filter(|value| !value.is_empty())
            .map(String::into_bytes)
            .context("no passphrase: set TUSK_BACKUP_PASSPHRASE or pass --passphrase-file"),
    }
}

fn is_std(path: &Option<PathBuf>) -> bool {
    path.as_deref().is_none_or(|path| path == Path::new("-"))
}

/// Opens the output; a file is removed again if the command fails.
fn open_output(path: &Option<PathBuf>) -> anyhow::Result<Box<dyn Write + Send>> {
    if is_std(path) {
        return Ok(Box::new(io::stdout()));
    }
    let path = path.as_deref().unwrap_or(Path::new("-"));
    Ok(Box::new(
        File::create(path).with_context(|| format!("creating {}", path.display()))?,
    ))
}

fn remove_failed_output(path: &Option<PathBuf>) {
    if !is_std(path)
        && let Some(path) = path
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Runs one `tusk backup` subcommand.
pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    // TLS to the API server and to an https object store needs rustls' provider chosen.
    tusk_operator::install_crypto_provider();
    match command {
        BackupCommand::Run(args) => {
            let (settings, passphrase) = JobSettings::from_env(args.request)?;
            let client = crate::kube_client::client()
                .await
                .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
            run_job(client, &settings, &passphrase).await?;
            Ok(())
        }
        BackupCommand::Take(args) => {
            let passphrase = passphrase(args.passphrase_file.as_deref())?;
            let compression = Compression::from_settings(
                Some(&args.compression),
                args.compression_level.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            let store = BackupStore::new(&StoreConfig::from_env()?)?;
            let options = BackupOptions {
                compression,
                passphrase,
                wal: if args.wal_from_archive {
                    WalMode::FromArchive
                } else {
                    WalMode::Include
                },
                label: "tusk backup take".into(),
                pg_basebackup: None,
            };
            let outcome = run_backup(
                &PgConnection::from_env()?,
                &store,
                &args.key,
                &options,
                Arc::new(Progress::default()),
            )
            .await?;
            println!(
                "key={} stored_bytes={} tar_bytes={} timeline={} start_lsn={} stop_lsn={} postgres_version={} seconds={:.1}",
                outcome.key,
                outcome.stored_bytes,
                outcome.tar_bytes,
                outcome.wal_range.timeline,
                outcome.wal_range.start_lsn,
                outcome.wal_range.stop_lsn,
                outcome.postgres_version,
                outcome.duration.as_secs_f64()
            );
            Ok(())
        }
        BackupCommand::Decrypt(args) => {
            let passphrase = read_passphrase_file(&args.passphrase_file)?;
            let input: Box<dyn Read + Send> = if is_std(&args.input) {
                Box::new(io::stdin())
            } else {
                let path = args.input.as_deref().unwrap_or(Path::new("-"));
                Box::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
            };
            let mut output = open_output(&args.output)?;
            let result = tokio::task::spawn_blocking(move || {
                decrypt_to_tar(input, &passphrase, &mut output)
            })
            .await?;
            if result.is_err() {
                remove_failed_output(&args.output);
            }
            result?;
            Ok(())
        }
        BackupCommand::Download(args) => {
            let passphrase = read_passphrase_file(&args.passphrase_file)?;
            let url =
                url::Url::parse(&args.url).context("--url must be a URL like s3://bucket/key")?;
            let key = url.path().trim_start_matches('/').to_owned();
            anyhow::ensure!(!key.is_empty(), "--url names no object: {}", args.url);
            let config = StoreConfig {
                url: format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
                allow_http: args
                    .endpoint
                    .as_deref()
                    .is_some_and(|endpoint| endpoint.starts_with("http://")),
                endpoint: args.endpoint,
                region: args.region,
                access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
                secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
            };
            let store = BackupStore::new(&config)?;
            let output = open_output(&args.output)?;
            let result = download_tar(&store, &key, &passphrase, output).await;
            if result.is_err() {
                remove_failed_output(&args.output);
            }
            result?;
            Ok(())
        }
    }
}
