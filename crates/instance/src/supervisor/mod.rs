//! `tusk instance`: PostgreSQL's supervisor inside a database pod.
//!
//! One run goes:
//! 1. refuse a data directory that a failed restore marked unusable;
//! 2. bootstrap an empty data directory, with `initdb` or from a backup (the restored cluster
//!    then takes this cluster's superuser name and password, see
//!    [`bootstrap::adopt_superuser`]);
//! 3. write the data directory's postgresql.conf (an include of the mounted ConfigMap file) and
//!    pg_hba.conf, and start `postgres -D` as a child with tusk's own settings on its command
//!    line (see [`settings`]);
//! 4. serve `/livez` and `/readyz` (see [`health`]) and make sure the application user and its
//!    database exist, with the password of this cluster's credentials (set at every start, so a
//!    rotated password takes effect with the next restart);
//! 5. until told to stop: reload PostgreSQL (SIGHUP) whenever the mounted configuration's
//!    content changes. A shutdown request becomes a fast shutdown (SIGINT to postgres) and the
//!    supervisor returns when postgres has exited; if postgres dies on its own, the supervisor
//!    returns an error so that the container is restarted.
//!
//! PostgreSQL refuses to run as root. When the supervisor runs as root and
//! [`InstanceConfig::run_as`] names a user, every PostgreSQL program is started as that user and
//! the data directory is handed to it; the supervisor itself stays root. Otherwise everything
//! runs as the current user, which is how the pod runs it (uid 999).

pub mod bootstrap;
pub mod database;
pub mod health;
pub mod settings;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tusk_api::names;
use tusk_backup::{StoreConfig, StoreError};

use bootstrap::DataDirState;
use database::Connection;
use health::HealthState;

/// How often the mounted configuration is compared with what PostgreSQL last loaded, by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(3);
/// How long the supervisor waits between attempts to reach a starting server.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);

/// A role's name and password. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// The role name.
    pub name: String,
    /// The password. Never logged.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The unprivileged user PostgreSQL runs as when the supervisor is root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
}

impl RunAs {
    /// Looks a local user up by name.
    pub fn lookup(name: &str) -> Result<Self, InstanceError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Ok(Self {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            Ok(None) => Err(InstanceError::UnknownUser(name.to_owned())),
            Err(errno) => Err(InstanceError::UserLookup {
                name: name.to_owned(),
                source: errno.into(),
            }),
        }
    }
}

/// Where a bootstrap from a backup reads from.
#[derive(Clone)]
pub struct RestoreSource {
    /// The object store holding the backup.
    pub store: StoreConfig,
    /// The backup object's key.
    pub key: String,
    /// The passphrase the backup was encrypted with. Never logged.
    pub passphrase: Vec<u8>,
    /// Recover up to this time, then promote.
    pub target_time: Option<String>,
    /// The source cluster's WAL archive, for PostgreSQL's restore_command.
    pub wal_prefix: Option<String>,
    /// The environment variable holding the archive's passphrase when it is not this
    /// cluster's: restore_command then reads it from there (by name, so the value never
    /// reaches a configuration file).
    pub wal_passphrase_env: Option<&'static str>,
}

impl std::fmt::Debug for RestoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreSource")
            .field("store", &self.store)
            .field("key", &self.key)
            .field("passphrase", &"<redacted>")
            .field("target_time", &self.target_time)
            .field("wal_prefix", &self.wal_prefix)
            .field("wal_passphrase_env", &self.wal_passphrase_env)
            .finish()
    }
}

/// Everything the supervisor needs.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    /// The mounted postgresql.conf (the ConfigMap's key), included by the data directory's.
    pub config_file: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The port of `/livez` and `/readyz`, served on [`InstanceConfig::listen_host`].
    pub health_port: u16,
    /// The address PostgreSQL and the health endpoints listen on.
    pub listen_host: IpAddr,
    /// PostgreSQL's port.
    pub postgres_port: u16,
    /// The directory holding `initdb` and `postgres`.
    pub postgres_bin_dir: PathBuf,
    /// The superuser (initdb's `--username`).
    pub superuser: Credentials,
    /// The application user, created with a database of the same name.
    pub app_user: Option<Credentials>,
    /// The WAL archive's prefix in the object store when WAL archiving is on.
    pub wal_archive_prefix: Option<String>,
    /// Bootstrap from this backup instead of `initdb`.
    pub restore: Option<RestoreSource>,
    /// Run PostgreSQL as this user when the supervisor is root.
    pub run_as: Option<RunAs>,
    /// The `tusk` executable, for archive_command.
    pub tusk_executable: PathBuf,
    /// How often the configuration file is checked for changes.
    pub reload_interval: Duration,
}

/// The environment variables the operator sets on the instance container.
pub mod env {
    /// The superuser's name.
    pub const SUPERUSER: &str = "PGUSER";
    /// The superuser's password.
    pub const SUPERUSER_PASSWORD: &str = "PGPASSWORD";
    /// The application user's name.
    pub const APP_USER: &str = "TUSK_APP_USER";
    /// The application user's password.
    pub const APP_PASSWORD: &str = "TUSK_APP_PASSWORD";
    /// The cluster's name.
    pub const CLUSTER: &str = "TUSK_CLUSTER";
    /// The pod's namespace.
    pub const NAMESPACE: &str = "POD_NAMESPACE";
    /// The PostgreSQL major version.
    pub const POSTGRES_VERSION: &str = "TUSK_POSTGRES_VERSION";
    /// "true" when WAL is archived.
    pub const WAL_ARCHIVING: &str = "TUSK_WAL_ARCHIVING";
    /// The cluster's backup passphrase.
    pub const BACKUP_PASSPHRASE: &str = "TUSK_BACKUP_PASSPHRASE";
    /// The PostgresBackup to bootstrap from.
    pub const RESTORE_BACKUP: &str = "TUSK_RESTORE_BACKUP";
    /// The object key of the backup to bootstrap from (wins over [`RESTORE_BACKUP`]).
    pub const RESTORE_KEY: &str = "TUSK_RESTORE_KEY";
    /// The passphrase of the backup to bootstrap from, when it is not this cluster's.
    pub const RESTORE_PASSPHRASE: &str = "TUSK_RESTORE_PASSPHRASE";
    /// The WAL archive of the backup's cluster, when it cannot be derived from the key.
    pub const RESTORE_WAL_PREFIX: &str = "TUSK_RESTORE_WAL_PREFIX";
    /// Recover up to this time.
    pub const RESTORE_TARGET_TIME: &str = "TUSK_RESTORE_TARGET_TIME";
}

fn non_empty_env(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn required_env(name: &'static str) -> Result<String, InstanceError> {
    non_empty_env(name).ok_or(InstanceError::MissingEnv(name))
}

impl InstanceConfig {
    /// Builds the configuration from the command-line paths and the environment the operator
    /// sets (see [`env`](mod@env)). The PostgreSQL programs are looked up for `TUSK_POSTGRES_VERSION`.
    pub fn from_env(
        config_file: PathBuf,
        data_dir: PathBuf,
        health_port: u16,
        listen_host: IpAddr,
    ) -> Result<Self, InstanceError> {
        let superuser = Credentials {
            name: required_env(env::SUPERUSER)?,
            password: required_env(env::SUPERUSER_PASSWORD)?,
        };
        let app_user = match non_empty_env(env::APP_USER) {
            Some(name) => Some(Credentials {
                name,
                password: required_env(env::APP_PASSWORD)?,
            }),
            None => None,
        };
        let archiving = matches!(
            non_empty_env(env::WAL_ARCHIVING).as_deref(),
            Some("true" | "1")
        );
        // The store is needed to archive WAL and to restore; read it only then, so that a
        // cluster without either runs without object-store settings.
        let restore_requested = non_empty_env(env::RESTORE_KEY).is_some()
            || non_empty_env(env::RESTORE_BACKUP).is_some();
        let store = if archiving || restore_requested {
            let config = StoreConfig::from_env().map_err(InstanceError::Store)?;
            let prefix = tusk_backup::BackupStore::new(&config)
                .map_err(InstanceError::Store)?
                .prefix()
                .to_owned();
            Some((config, prefix))
        } else {
            None
        };
        let wal_archive_prefix = match (&store, archiving) {
            (Some((_, prefix)), true) => Some(names::wal_prefix(
                prefix,
                &required_env(env::NAMESPACE)?,
                &required_env(env::CLUSTER)?,
            )),
            _ => None,
        };
        let restore = match store {
            Some((config, prefix)) if restore_requested => {
                let key = match non_empty_env(env::RESTORE_KEY) {
                    Some(key) => key,
                    // Only right when the backup is this cluster's own: the instance cannot
                    // read the PostgresBackup to find its source cluster.
                    None => names::base_backup_key(
                        &prefix,
                        &required_env(env::NAMESPACE)?,
                        &required_env(env::CLUSTER)?,
                        &required_env(env::RESTORE_BACKUP)?,
                    ),
                };
                let restore_passphrase = non_empty_env(env::RESTORE_PASSPHRASE);
                let wal_passphrase_env =
                    restore_passphrase.as_ref().map(|_| env::RESTORE_PASSPHRASE);
                let passphrase = restore_passphrase
                    .map(Ok)
                    .unwrap_or_else(|| required_env(env::BACKUP_PASSPHRASE))?;
                let wal_prefix = non_empty_env(env::RESTORE_WAL_PREFIX)
                    .or_else(|| bootstrap::wal_prefix_of_backup_key(&key));
                Some(RestoreSource {
                    store: config,
                    key,
                    passphrase: passphrase.into_bytes(),
                    target_time: non_empty_env(env::RESTORE_TARGET_TIME),
                    wal_prefix,
                    wal_passphrase_env,
                })
            }
            _ => None,
        };
        Ok(Self {
            config_file,
            data_dir,
            health_port,
            listen_host,
            postgres_port: names::POSTGRES_PORT,
            postgres_bin_dir: find_postgres_bin_dir(
                non_empty_env(env::POSTGRES_VERSION).as_deref(),
            ),
            superuser,
            app_user,
            wal_archive_prefix,
            restore,
            run_as: None,
            tusk_executable: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tusk")),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        })
    }

    /// The address the supervisor itself connects to: the listen address, or loopback when
    /// PostgreSQL listens on every address.
    fn connect_host(&self) -> IpAddr {
        if self.listen_host.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.listen_host
        }
    }
}

/// Where the PostgreSQL programs are: Debian's directory for `version`, else the directory
/// `pg_config --bindir` names, else an empty path (the programs are then found on PATH).
pub fn find_postgres_bin_dir(version: Option<&str>) -> PathBuf {
    if let Some(version) = version {
        let debian = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        if debian.join("postgres").is_file() {
            return debian;
        }
    }
    std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .filter(|dir| dir.join("postgres").is_file())
        .unwrap_or_default()
}

/// Failures of the supervisor. None carries a password.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// A required environment variable is missing.
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    /// The object store settings are unusable.
    #[error("object store: {0}")]
    Store(#[source] StoreError),
    /// `--run-as` names no local user.
    #[error("no local user named {0}")]
    UnknownUser(String),
    /// Looking a user up failed.
    #[error("looking up user {name}: {source}")]
    UserLookup {
        /// The user name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The data directory was marked unusable by a failed restore.
    #[error(
        "data directory {0} holds a failed or unfinished restore; refusing to start PostgreSQL on it (empty the volume to restore again)"
    )]
    RestoreIncomplete(PathBuf),
    /// The data directory holds files but no PostgreSQL data.
    #[error("data directory {0} is not empty but holds no PostgreSQL data directory")]
    ForeignDataDir(PathBuf),
    /// Reading or writing in the data directory failed.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The private file handing initdb the password could not be written.
    #[error("writing initdb's password file: {source}")]
    PasswordFile {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// initdb failed.
    #[error("initdb failed ({status}): {stderr}")]
    Initdb {
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Setting the superuser's password in a restored cluster failed.
    #[error("setting the superuser's password in the restored cluster failed ({0})")]
    AdoptSuperuser(ExitStatus),
    /// Restoring the backup failed.
    #[error("restoring the backup: {0}")]
    Restore(#[source] tusk_backup::RestoreError),
    /// The health listener could not be bound.
    #[error("cannot serve health checks on {address}: {source}")]
    HealthListen {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Waiting for the postgres process failed.
    #[error("waiting for postgres: {0}")]
    Wait(#[source] io::Error),
    /// Signalling the postgres process failed.
    #[error("sending {signal} to postgres: {source}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// postgres exited although nobody asked it to.
    #[error("postgres exited unexpectedly ({0})")]
    PostgresExited(ExitStatus),
    /// postgres failed during a requested shutdown.
    #[error("postgres failed while shutting down ({0})")]
    ShutdownFailed(ExitStatus),
}

/// Applies [`RunAs`] to a command, but only when this process is root (an unprivileged
/// process cannot change user, and does not need to).
pub(crate) fn drop_privileges(command: &mut Command, run_as: Option<RunAs>) {
    if let Some(user) = run_as
        && nix::unistd::geteuid().is_root()
    {
        command.uid(user.uid).gid(user.gid);
    }
}

/// Runs PostgreSQL until `shutdown` completes (then stops it fast and returns `Ok`) or until
/// postgres exits on its own (an error).
pub async fn run(
    config: InstanceConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), InstanceError> {
    let run_as = config.run_as.filter(|_| nix::unistd::geteuid().is_root());
    tokio::pin!(shutdown);
    // Bootstrapping can take long (a restore downloads a whole backup); a pod deleted
    // meanwhile must not wait for the kubelet's SIGKILL. Stopping then is safe: initdb works in
    // a staging directory, and an interrupted restore stays marked and refused.
    tokio::select! {
        bootstrapped = prepare_data_dir(&config, run_as) => bootstrapped?,
        () = &mut shutdown => {
            tracing::info!("shutdown requested while bootstrapping; PostgreSQL was not started");
            return Ok(());
        }
    }
    write_owned_files(&config, run_as)?;

    let health_address = SocketAddr::new(config.listen_host, config.health_port);
    let health_listener =
        TcpListener::bind(health_address)
            .await
            .map_err(|source| InstanceError::HealthListen {
                address: health_address,
                source,
            })?;
    let state = Arc::new(HealthState::new(Connection {
        host: config.connect_host().to_string(),
        port: config.postgres_port,
        superuser: config.superuser.clone(),
    }));

    let mut postgres = start_postgres(&config, run_as)?;
    let child_id = postgres.id();
    let pid = child_id
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    state.postgres_running.store(true, Ordering::SeqCst);
    tracing::info!(
        pid = child_id.unwrap_or_default(),
        listen = %config.listen_host,
        "postgres started"
    );

    let health_server = tokio::spawn(serve_health(health_listener, Arc::clone(&state)));
    let bootstrap_task = tokio::spawn(finish_bootstrap(
        Arc::clone(&state),
        config.app_user.clone(),
    ));

    let outcome = supervise(&config, &mut postgres, pid, shutdown.as_mut()).await;
    state.postgres_running.store(false, Ordering::SeqCst);
    bootstrap_task.abort();
    health_server.abort();
    outcome
}

/// Makes sure the data directory holds a PostgreSQL cluster: refuses one a failed restore
/// marked, keeps an existing one, and bootstraps an empty one with a restore or initdb.
async fn prepare_data_dir(
    config: &InstanceConfig,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let data_dir = config.data_dir.as_path();
    match bootstrap::inspect(data_dir)? {
        DataDirState::RestoreIncomplete => {
            Err(InstanceError::RestoreIncomplete(data_dir.to_owned()))
        }
        DataDirState::Initialized => {
            tracing::info!(data_dir = %data_dir.display(), "using the existing data directory");
            Ok(())
        }
        DataDirState::Empty => match &config.restore {
            Some(source) => {
                bootstrap::restore_backup(source, data_dir, run_as).await?;
                // The restored postgresql.conf is the source cluster's: its include names the
                // source's configuration file, which single-user mode would read. Under tusk
                // dev that is another pod's file, which this pod cannot (and must not) read.
                write_owned_files(config, run_as)?;
                bootstrap::adopt_superuser(
                    &config.postgres_bin_dir.join("postgres"),
                    data_dir,
                    &config.superuser,
                    run_as,
                )
                .await
            }
            None => {
                bootstrap::initdb(
                    &config.postgres_bin_dir.join("initdb"),
                    data_dir,
                    &config.superuser,
                    run_as,
                )
                .await
            }
        },
    }
}

/// Watches postgres: forwards the shutdown request, reloads on configuration changes, and
/// turns its exit into the supervisor's result.
async fn supervise(
    config: &InstanceConfig,
    postgres: &mut Child,
    pid: Option<Pid>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), InstanceError> {
    let signal = |signal: Signal| match pid {
        Some(pid) => kill(pid, signal).map_err(|source| InstanceError::Signal { signal, source }),
        None => Ok(()),
    };
    let mut loaded_config = std::fs::read(&config.config_file).ok();
    let mut reload_timer = tokio::time::interval(config.reload_interval);
    reload_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        tokio::select! {
            exited = postgres.wait() => {
                let status = exited.map_err(InstanceError::Wait)?;
                return match (stopping, status.success()) {
                    (true, true) => {
                        tracing::info!("postgres stopped");
                        Ok(())
                    }
                    (true, false) => Err(InstanceError::ShutdownFailed(status)),
                    (false, _) => Err(InstanceError::PostgresExited(status)),
                };
            }
            () = &mut shutdown, if !stopping => {
                tracing::info!("shutdown requested: fast shutdown of postgres");
                stopping = true;
                signal(Signal::SIGINT)?;
            }
            _ = reload_timer.tick(), if !stopping => {
                // The kubelet swaps a ConfigMap volume's files through a symlink, so the
                // modification time says little: compare the content.
                match std::fs::read(&config.config_file) {
                    Ok(current) if loaded_config.as_ref() != Some(&current) => {
                        if loaded_config.is_some() {
                            tracing::info!(file = %config.config_file.display(), "configuration changed: reloading postgres");
                            signal(Signal::SIGHUP)?;
                        }
                        loaded_config = Some(current);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "cannot read the configuration file; trying again later"),
                }
            }
        }
    }
}

/// Writes postgresql.conf and pg_hba.conf into the data directory, every start, so that they
/// always say what this version of tusk means.
fn write_owned_files(config: &InstanceConfig, run_as: Option<RunAs>) -> Result<(), InstanceError> {
    let files = [
        (
            "postgresql.conf",
            settings::postgresql_conf(&absolute(&config.config_file)),
        ),
        ("pg_hba.conf", settings::pg_hba_conf().to_owned()),
    ];
    for (name, content) in files {
        let path = config.data_dir.join(name);
        let io_error = |source| InstanceError::DataDir {
            path: path.clone(),
            source,
        };
        std::fs::write(&path, content).map_err(io_error)?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).map_err(io_error)?;
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Starts `postgres -D <data>` with tusk's settings on its command line. Its output goes to the
/// supervisor's, which is the container log.
fn start_postgres(config: &InstanceConfig, run_as: Option<RunAs>) -> Result<Child, InstanceError> {
    let owned = settings::OwnedSettings {
        listen_host: &config.listen_host.to_string(),
        port: config.postgres_port,
        socket_dir: &absolute(&config.data_dir),
        wal_archive_prefix: config.wal_archive_prefix.as_deref(),
        tusk_executable: &config.tusk_executable,
    };
    let program = config.postgres_bin_dir.join("postgres");
    let mut command = Command::new(&program);
    command
        .arg("-D")
        .arg(&config.data_dir)
        .args(owned.command_line())
        // PostgreSQL has no use for the passwords; archive_command keeps the store settings
        // and the backup passphrase it needs.
        .env_remove(env::SUPERUSER_PASSWORD)
        .env_remove(env::APP_PASSWORD)
        .kill_on_drop(true);
    drop_privileges(&mut command, run_as);
    command
        .spawn()
        .map_err(|source| InstanceError::Spawn { program, source })
}

async fn serve_health(listener: TcpListener, state: Arc<HealthState>) {
    if let Err(error) = axum::serve(listener, health::router(state)).await {
        tracing::error!(%error, "the health server stopped");
    }
}

/// Waits until the server accepts connections as a primary, then makes sure the application
/// user and database exist; only then is the instance ready.
async fn finish_bootstrap(state: Arc<HealthState>, app_user: Option<Credentials>) {
    loop {
        match bootstrap_once(&state, app_user.as_ref()).await {
            Ok(true) => {
                state.bootstrapped.store(true, Ordering::SeqCst);
                tracing::info!("instance bootstrapped");
                return;
            }
            Ok(false) => tracing::debug!("postgres is in recovery; bootstrapping later"),
            Err(error) => tracing::debug!(%error, "postgres is not ready for bootstrapping yet"),
        }
        tokio::time::sleep(BOOTSTRAP_RETRY).await;
    }
}

async fn bootstrap_once(
    state: &HealthState,
    app_user: Option<&Credentials>,
) -> Result<bool, tokio_postgres::Error> {
    let client = state.connection.connect().await?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .try_get(0)?;
    if in_recovery {
        return Ok(false);
    }
    if let Some(app) = app_user {
        database::ensure_app_user(&client, app).await?;
    }
    Ok(true)
}
