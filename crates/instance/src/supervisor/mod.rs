//! `tusk instance`: PostgreSQL's supervisor inside a database pod.
//!
//! One run goes (its health port answering from the start: live, not ready; see [`health`]):
//! 1. refuse a data directory that a failed restore marked unusable (naming the recorded
//!    cause), and start an interrupted restore over;
//! 2. bootstrap an empty data directory, with `initdb` or from a backup;
//! 3. put the roles in order in single-user mode, before any connection is possible: the
//!    management role is the only superuser and has no password, and no customer role holds
//!    anything that runs programs or touches server files (see [`bootstrap::secure_roles`]).
//!    This runs at every start, so a restored backup or an interrupted restore converges too;
//! 4. write the data directory's postgresql.conf (an include of the mounted ConfigMap file),
//!    pg_hba.conf and pg_ident.conf, and start `postgres -D` as a child with tusk's own
//!    settings on its command line (see [`settings`]);
//! 5. report on the server at `/livez` and `/readyz` (see [`health`]) and, as the management role over the Unix
//!    socket, make sure the owner role, its database and the replication role exist with this
//!    cluster's passwords (set at every start, so a rotated password takes effect with the
//!    next restart; see [`database::ensure_roles`]);
//! 6. until told to stop: whenever the mounted configuration's content changes, have
//!    PostgreSQL check it and, only if it passes, load it (SIGHUP); report the outcome at
//!    `/parameters` (see [`parameters`]), and the WAL archiver's state at `/archiver` (see
//!    [`archiver`]). A start uses the previous checked configuration when
//!    PostgreSQL refuses the mounted one, so a typo never takes a running database down.
//!    A shutdown request becomes a fast shutdown (SIGINT to postgres) and the
//!    supervisor returns when postgres has exited; if postgres dies on its own, the supervisor
//!    returns an error so that the container is restarted.
//!
//! PostgreSQL refuses to run as root. When the supervisor runs as root and
//! [`InstanceConfig::run_as`] names a user, every PostgreSQL program is started as that user and
//! the data directory is handed to it; the supervisor itself stays root. Otherwise everything
//! runs as the current user, which is how the pod runs it (uid 999).

pub mod archiver;
pub mod bootstrap;
pub mod database;
pub mod health;
pub mod parameters;
pub mod postgres_log;
pub mod settings;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tusk_api::names;
use tusk_backup::{StoreConfig, StoreError};

use bootstrap::DataDirState;
use database::Connection;
use health::{HealthSlot, HealthState};
use postgres_log::PostgresLog;

/// How often the mounted configuration is compared with what PostgreSQL last loaded, by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(3);
/// How long the supervisor waits between attempts to reach a starting server.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);
/// How long PostgreSQL's remaining output is read after it exited (its children may hold the
/// stream open a little longer).
pub(crate) const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

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
    /// Recover up to this WAL location, then promote.
    pub target_lsn: Option<String>,
    /// Replay the whole archive instead of stopping once consistent.
    pub latest: bool,
    /// The backup object's size as recorded on its PostgresBackup.
    pub expected_size: Option<u64>,
    /// The backup object's SHA-256 as recorded on its PostgresBackup.
    pub expected_sha256: Option<String>,
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
            .field("target_lsn", &self.target_lsn)
            .field("latest", &self.latest)
            .field("expected_size", &self.expected_size)
            .field("expected_sha256", &self.expected_sha256)
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
    /// The customer's owner role, created with a database of the same name.
    pub owner: Credentials,
    /// The role the backup Job's pg_basebackup logs in as.
    pub replication: Credentials,
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
    /// The directory of the mounted server certificate (`tls.crt`) and key (`tls.key`). With
    /// it, PostgreSQL serves TLS and admits TCP connections only over TLS; the operator always
    /// gives it. A new certificate in it is picked up by a reload.
    pub tls_dir: Option<PathBuf>,
    /// The directory for PostgreSQL's Unix socket, from `PGHOST` (see [`env::SOCKET_DIR`]):
    /// a program run in the container (`kubectl exec ... -- psql`) finds the server there as
    /// the supervisor does. Without it, the socket is in the data directory.
    pub socket_dir: Option<PathBuf>,
}

/// The environment variables the operator sets on the instance container.
pub mod env {
    /// `true` on a restore test's throwaway: its owner role may run amcheck.
    pub const RESTORE_CHECK: &str = "TUSK_RESTORE_CHECK";
    /// The owner role's name. A plain value set by the operator, never read from the
    /// credentials Secret, which the customer can edit.
    pub const OWNER: &str = "TUSK_OWNER";
    /// The owner role's password.
    pub const OWNER_PASSWORD: &str = "TUSK_OWNER_PASSWORD";
    /// The replication role's name, set like [`OWNER`].
    pub const REPLICATION_USER: &str = "TUSK_REPLICATION_USER";
    /// The replication role's password.
    pub const REPLICATION_PASSWORD: &str = "TUSK_REPLICATION_PASSWORD";
    /// The cluster's name.
    pub const CLUSTER: &str = "TUSK_CLUSTER";
    /// The cluster's uid: its objects live under a prefix that names it.
    pub const CLUSTER_UID: &str = "TUSK_CLUSTER_UID";
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
    /// The object key of the backup to bootstrap from, as the operator checked it.
    pub const RESTORE_KEY: &str = "TUSK_RESTORE_KEY";
    /// The passphrase of the backup to bootstrap from, when it is not this cluster's.
    pub const RESTORE_PASSPHRASE: &str = "TUSK_RESTORE_PASSPHRASE";
    /// The WAL archive of the backup's cluster, when it cannot be derived from the key.
    pub const RESTORE_WAL_PREFIX: &str = "TUSK_RESTORE_WAL_PREFIX";
    /// Recover up to this time.
    pub const RESTORE_TARGET_TIME: &str = "TUSK_RESTORE_TARGET_TIME";
    /// Recover up to this WAL location.
    pub const RESTORE_TARGET_LSN: &str = "TUSK_RESTORE_TARGET_LSN";
    /// "true" to replay the whole archive.
    pub const RESTORE_LATEST: &str = "TUSK_RESTORE_LATEST";
    /// The backup object's recorded size in bytes.
    pub const RESTORE_SIZE: &str = "TUSK_RESTORE_SIZE";
    /// The backup object's recorded SHA-256.
    pub const RESTORE_SHA256: &str = "TUSK_RESTORE_SHA256";
    /// libpq's own variable, set for the whole container: the directory PostgreSQL puts its
    /// Unix socket in and where psql, run in the container, looks for it.
    pub const SOCKET_DIR: &str = "PGHOST";
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
        let owner = Credentials {
            name: required_env(env::OWNER)?,
            password: required_env(env::OWNER_PASSWORD)?,
        };
        let replication = Credentials {
            name: required_env(env::REPLICATION_USER)?,
            password: required_env(env::REPLICATION_PASSWORD)?,
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
            (Some((_, prefix)), true) => Some(names::wal_prefix(&names::cluster_storage_prefix(
                prefix,
                &required_env(env::NAMESPACE)?,
                &required_env(env::CLUSTER)?,
                &required_env(env::CLUSTER_UID)?,
            ))),
            _ => None,
        };
        let restore = match store {
            Some((config, _)) if restore_requested => {
                // The operator names the object after checking the PostgresBackup's location;
                // the instance never guesses one.
                let key = required_env(env::RESTORE_KEY)?;
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
                    target_lsn: non_empty_env(env::RESTORE_TARGET_LSN),
                    latest: non_empty_env(env::RESTORE_LATEST).as_deref() == Some("true"),
                    expected_size: non_empty_env(env::RESTORE_SIZE)
                        .map(|size| {
                            size.parse().map_err(|_| InstanceError::InvalidEnv {
                                name: env::RESTORE_SIZE,
                                reason: "expected a size in bytes".to_owned(),
                            })
                        })
                        .transpose()?,
                    expected_sha256: non_empty_env(env::RESTORE_SHA256),
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
            owner,
            replication,
            wal_archive_prefix,
            restore,
            run_as: None,
            tusk_executable: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tusk")),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            tls_dir: None,
            socket_dir: non_empty_env(env::SOCKET_DIR).map(PathBuf::from),
        })
    }

    /// Refuses role names that would hand the customer, or take from tusk, a role that is not
    /// theirs: the management role, a predefined `pg_` role, or one role for two purposes.
    pub fn validate_roles(&self) -> Result<(), InstanceError> {
        for role in [&self.owner.name, &self.replication.name] {
            if role == database::MANAGEMENT_ROLE || role.starts_with("pg_") {
                return Err(InstanceError::ReservedRole(role.clone()));
            }
        }
        if self.owner.name == self.replication.name {
            return Err(InstanceError::ReservedRole(self.owner.name.clone()));
        }
        Ok(())
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
    /// An environment variable holds an unusable value.
    #[error("environment variable {name}: {reason}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
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
    /// A restore into the data directory failed before; its cause was recorded then.
    #[error(
        "the restore into data directory {path} failed earlier: {cause}; PostgreSQL is not started on it (recreate the cluster to restore again)"
    )]
    RestoreFailedEarlier {
        /// The data directory.
        path: PathBuf,
        /// The recorded error.
        cause: String,
    },
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
    /// A role name in the configuration belongs to tusk or to PostgreSQL.
    #[error("role name {0:?} is reserved; the owner and replication roles need names of their own")]
    ReservedRole(String),
    /// The user the supervisor runs as has no name, which peer authentication needs.
    #[error("the supervisor's user id {0} has no user name; peer authentication needs one")]
    NamelessUser(u32),
    /// The socket directory could not be set up.
    #[error("socket directory: {0}")]
    SocketDir(#[source] io::Error),
    /// The WAL archiver's socket could not be bound.
    #[error("the WAL archiver's socket: {0}")]
    ArchiverSocket(#[source] io::Error),
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
    /// Putting the roles in order in single-user mode failed; PostgreSQL's own messages are in
    /// the log just before.
    #[error(
        "securing the roles in single-user mode failed ({0}); PostgreSQL's messages above say why"
    )]
    SecureRoles(ExitStatus),
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
///
/// An error is also written, after PostgreSQL's own decisive line if it printed one, to the
/// container's termination message (see [`postgres_log`]) and as one line to stderr.
pub async fn run(
    config: InstanceConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), InstanceError> {
    let postgres_log = Arc::new(PostgresLog::default());
    let result = run_logged(config, shutdown, &postgres_log).await;
    if let Err(error) = &result {
        let decisive = postgres_log.decisive_line();
        let message = postgres_log::termination_message(decisive.as_deref(), &error.to_string());
        tracing::error!(postgres = decisive.as_deref().unwrap_or_default(), %error, "the instance stops");
        postgres_log::write_termination_message(&message);
    }
    result
}

async fn run_logged(
    config: InstanceConfig,
    shutdown: impl Future<Output = ()>,
    postgres_log: &Arc<PostgresLog>,
) -> Result<(), InstanceError> {
    config.validate_roles()?;
    // The health port answers from now on, so that the kubelet sees a live container all
    // through a long restore (see [`health`]).
    let health_address = SocketAddr::new(config.listen_host, config.health_port);
    let health_listener =
        TcpListener::bind(health_address)
            .await
            .map_err(|source| InstanceError::HealthListen {
                address: health_address,
                source,
            })?;
    let health_slot = Arc::new(HealthSlot::default());
    let health_server = tokio::spawn(serve_health(health_listener, Arc::clone(&health_slot)));
    let outcome = run_serving_health(config, shutdown, postgres_log, &health_slot).await;
    // Waiting for the aborted server frees its port before this returns, so that a next run
    // in the same process can take it.
    health_server.abort();
    let _ = health_server.await;
    outcome
}

/// [`run_logged`] once the health port is served: reports go to `health_slot`.
async fn run_serving_health(
    config: InstanceConfig,
    shutdown: impl Future<Output = ()>,
    postgres_log: &Arc<PostgresLog>,
    health_slot: &HealthSlot,
) -> Result<(), InstanceError> {
    let run_as = config.run_as.filter(|_| nix::unistd::geteuid().is_root());
    // Peer authentication admits the management role to the user the supervisor runs as.
    let supervisor_uid = nix::unistd::geteuid();
    let supervisor_user = nix::unistd::User::from_uid(supervisor_uid)
        .ok()
        .flatten()
        .ok_or(InstanceError::NamelessUser(supervisor_uid.as_raw()))?
        .name;
    tokio::pin!(shutdown);
    // Bootstrapping can take long (a restore downloads a whole backup); a pod deleted
    // meanwhile must not wait for the kubelet's SIGKILL. Stopping then is safe: initdb works in
    // a staging directory, and an interrupted restore stays marked and starts over next time.
    tokio::select! {
        bootstrapped = prepare_data_dir(&config, run_as) => bootstrapped?,
        () = &mut shutdown => {
            tracing::info!("shutdown requested while bootstrapping; PostgreSQL was not started");
            return Ok(());
        }
    }
    let (start_settings, start_report) = settings_for_start(&config, run_as).await;
    write_owned_files(&config, &start_settings, &supervisor_user, run_as)?;
    let socket_dir = SocketDir::choose(&config, run_as)?;
    let owned_settings = owned_settings(&config, socket_dir.path());
    // The archiver listens before PostgreSQL can ask it for anything, and lives as long as the
    // supervisor: its key is derived once, not per segment.
    let wal_archiver = match &config.wal_archive_prefix {
        Some(prefix) => Some(start_wal_archiver(
            &config,
            prefix,
            socket_dir.path(),
            run_as,
        )?),
        None => None,
    };
    // With tusk's settings, so that WAL written meanwhile (a restore's recovery ends here) is
    // archived as the server would archive it.
    bootstrap::secure_roles(
        &config.postgres_bin_dir.join("postgres"),
        &config.data_dir,
        &owned_settings,
        &config.replication.name,
        run_as,
        postgres_log,
    )
    .await?;

    let mut state = HealthState::new(
        Connection {
            socket_dir: socket_dir.path().to_owned(),
            port: config.postgres_port,
        },
        absolute(&config.data_dir),
    );
    if config.wal_archive_prefix.is_some() {
        state = state.archiving(Arc::clone(postgres_log));
    }
    let state = Arc::new(state);
    state.report_parameters(start_report);

    let (mut postgres, postgres_output) =
        start_postgres(&config, &owned_settings, run_as, postgres_log)?;
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

    health_slot.fill(Arc::clone(&state));
    let bootstrap_task = tokio::spawn(finish_bootstrap(
        Arc::clone(&state),
        database::Roles {
            owner: config.owner.clone(),
            replication: config.replication.clone(),
            restore_check: non_empty_env(env::RESTORE_CHECK).as_deref() == Some("true"),
        },
    ));

    let outcome = supervise(
        &config,
        run_as,
        &state,
        &mut postgres,
        pid,
        shutdown.as_mut(),
    )
    .await;
    // PostgreSQL's last words (why it stopped) are read before the outcome is reported.
    let _ = tokio::time::timeout(OUTPUT_DRAIN, postgres_output).await;
    state.postgres_running.store(false, Ordering::SeqCst);
    bootstrap_task.abort();
    if let Some(archiver) = wal_archiver {
        archiver.abort();
    }
    drop(socket_dir);
    outcome
}

/// Starts the WAL archiver PostgreSQL's archive_command hands segments to (see
/// [`tusk_backup::wal_archiver`]), on [`tusk_backup::wal_archiver::SOCKET_NAME`] in the socket
/// directory, with the store and passphrase from the environment. Only PostgreSQL's user may
/// connect.
fn start_wal_archiver(
    config: &InstanceConfig,
    prefix: &str,
    socket_dir: &Path,
    run_as: Option<RunAs>,
) -> Result<tokio::task::JoinHandle<()>, InstanceError> {
    use tusk_backup::wal_archiver;
    let store =
        tusk_backup::BackupStore::new(&StoreConfig::from_env().map_err(InstanceError::Store)?)
            .map_err(InstanceError::Store)?;
    let passphrase = required_env(env::BACKUP_PASSPHRASE)?;
    let archive = Arc::new(tusk_backup::wal::WalArchive::new(
        store,
        prefix,
        passphrase.as_bytes(),
    ));
    let socket = socket_dir.join(wal_archiver::SOCKET_NAME);
    let owner = run_as.map(|user| (user.uid, user.gid));
    let listener = wal_archiver::bind(&socket, owner).map_err(InstanceError::ArchiverSocket)?;
    let postgres_uid = run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |user| user.uid);
    let wal_dir = absolute(&config.data_dir).join("pg_wal");
    Ok(tokio::spawn(async move {
        if let Err(error) =
            wal_archiver::serve(listener, archive, wal_dir, Some(postgres_uid)).await
        {
            tracing::error!(%error, "the WAL archiver stopped; archiving fails until a restart");
        }
    }))
}

/// The directory of PostgreSQL's Unix socket: the one the configuration names (`PGHOST`, the
/// pod's own `/var/run/postgresql`), where programs run in the container look for it; else
/// the data directory, which only the PostgreSQL user can enter; or, when a socket path there
/// would be too long (a data directory deep in a sandbox pod's root), a private directory of
/// the same mode under the temporary directory, removed when the supervisor returns. Wherever
/// it is, the socket itself is mode 0700 (`unix_socket_permissions`): only the PostgreSQL
/// user can connect, and peer authentication admits that user alone (as the management role).
enum SocketDir {
    Configured(PathBuf),
    DataDir(PathBuf),
    Private(tempfile::TempDir),
}

impl SocketDir {
    fn choose(config: &InstanceConfig, run_as: Option<RunAs>) -> Result<Self, InstanceError> {
        if let Some(dir) = &config.socket_dir {
            if !dir.is_absolute() {
                tracing::warn!(socket_dir = %dir.display(), "the socket directory is not an absolute path; the socket goes elsewhere, where programs in the container will not find it");
            } else if !settings::socket_path_fits(dir, config.postgres_port) {
                tracing::warn!(socket_dir = %dir.display(), "the socket directory's path is too long for a Unix socket; the socket goes elsewhere, where programs in the container will not find it");
            } else {
                if !dir.is_dir() {
                    // Not a volume, as it always is in a pod: made like the data directory.
                    bootstrap::create_data_dir(dir, run_as)?;
                }
                return Ok(Self::Configured(dir.clone()));
            }
        }
        let data_dir = absolute(&config.data_dir);
        if settings::socket_path_fits(&data_dir, config.postgres_port) {
            return Ok(Self::DataDir(data_dir));
        }
        let private = tempfile::Builder::new()
            .prefix("tusk-pg-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(InstanceError::SocketDir)?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(private.path(), Some(user.uid), Some(user.gid))
                .map_err(InstanceError::SocketDir)?;
        }
        if !settings::socket_path_fits(private.path(), config.postgres_port) {
            return Err(InstanceError::SocketDir(io::Error::other(format!(
                "{} is too long for a Unix socket path",
                private.path().display()
            ))));
        }
        tracing::info!(socket_dir = %private.path().display(), "the data directory's path is too long for a socket; using a private directory");
        Ok(Self::Private(private))
    }

    fn path(&self) -> &Path {
        match self {
            Self::Configured(path) | Self::DataDir(path) => path,
            Self::Private(dir) => dir.path(),
        }
    }
}

/// Makes sure the data directory holds a PostgreSQL cluster: refuses one a failed restore
/// marked, starts an interrupted restore over, keeps an existing one, and bootstraps an empty
/// one with a restore or initdb.
async fn prepare_data_dir(
    config: &InstanceConfig,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let data_dir = config.data_dir.as_path();
    match bootstrap::inspect(data_dir)? {
        DataDirState::RestoreIncomplete => {
            if let Some(cause) = tusk_backup::restore::recorded_failure(data_dir) {
                return Err(InstanceError::RestoreFailedEarlier {
                    path: data_dir.to_owned(),
                    cause,
                });
            }
            let Some(source) = &config.restore else {
                return Err(InstanceError::RestoreIncomplete(data_dir.to_owned()));
            };
            // The previous run was stopped in the middle of the restore (the pod was deleted
            // or the node went down): what it unpacked is thrown away and the restore starts
            // over from the backup.
            tracing::warn!(data_dir = %data_dir.display(), "a restore was interrupted; starting it over");
            tusk_backup::restore::clear_interrupted(data_dir).map_err(|source| {
                InstanceError::DataDir {
                    path: data_dir.to_owned(),
                    source,
                }
            })?;
            bootstrap::restore_backup(source, data_dir, run_as).await
        }
        DataDirState::Initialized => {
            tracing::info!(data_dir = %data_dir.display(), "using the existing data directory");
            Ok(())
        }
        DataDirState::Empty => match &config.restore {
            // The restored roles are put in order by `secure_roles` and `ensure_roles`, which
            // run at every start: a restore interrupted after this returns converges too.
            Some(source) => bootstrap::restore_backup(source, data_dir, run_as).await,
            None => {
                bootstrap::initdb(&config.postgres_bin_dir.join("initdb"), data_dir, run_as).await
            }
        },
    }
}

/// Watches postgres: forwards the shutdown request, loads configuration changes PostgreSQL
/// accepts, and turns its exit into the supervisor's result.
async fn supervise(
    config: &InstanceConfig,
    run_as: Option<RunAs>,
    state: &HealthState,
    postgres: &mut Child,
    pid: Option<Pid>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), InstanceError> {
    let signal = |signal: Signal| match pid {
        Some(pid) => kill(pid, signal).map_err(|source| InstanceError::Signal { signal, source }),
        None => Ok(()),
    };
    let mut loaded_config = std::fs::read(&config.config_file).ok();
    let mut loaded_certificate = certificate_files(config).ok();
    // A configuration PostgreSQL was asked to load, and when, until the reload is confirmed.
    let mut awaiting_reload: Option<(Vec<u8>, SystemTime)> = None;
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
                            let candidate = checked_config(config, &current);
                            match parameters::check(&postgres_program(config), &candidate, run_as).await {
                                Ok(()) => {
                                    tracing::info!(file = %config.config_file.display(), "configuration changed and PostgreSQL accepts it: reloading postgres");
                                    write_checked_config(config, &candidate, run_as)?;
                                    let signalled = SystemTime::now();
                                    signal(Signal::SIGHUP)?;
                                    state.report_parameters(parameters::loaded_report(&state.connection, &current, signalled).await);
                                    awaiting_reload = Some((current.clone(), signalled));
                                }
                                Err(refused) => {
                                    let names: Vec<&str> = refused.iter().map(|refused| refused.name.as_str()).collect();
                                    tracing::warn!(settings = ?names, "PostgreSQL refuses the new configuration; the running one stays in force");
                                    state.report_parameters(parameters::refused_report(&current, refused));
                                    awaiting_reload = None;
                                }
                            }
                        }
                        loaded_config = Some(current);
                    }
                    Ok(_) => {
                        if let Some((mounted, signalled)) = &awaiting_reload {
                            let report = parameters::loaded_report(&state.connection, mounted, *signalled).await;
                            if report.outcome == tusk_api::instance::ParameterOutcome::Loaded {
                                awaiting_reload = None;
                            }
                            state.report_parameters(report);
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot read the configuration file; trying again later"),
                }
                // A renewed certificate needs no check: PostgreSQL takes it on reload.
                match certificate_files(config) {
                    Ok(current) if loaded_certificate.as_ref() != Some(&current) => {
                        if loaded_certificate.is_some() {
                            tracing::info!("server certificate changed: reloading postgres");
                            signal(Signal::SIGHUP)?;
                        }
                        loaded_certificate = Some(current);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "cannot read the server certificate; trying again later"),
                }
            }
        }
    }
}

/// The server certificate and key, and the client certificates' CA, when the instance serves
/// TLS; a change is loaded by reload.
fn certificate_files(config: &InstanceConfig) -> io::Result<Vec<u8>> {
    let mut content = Vec::new();
    if let Some(dir) = &config.tls_dir {
        for file in [settings::TLS_CERT_FILE, settings::TLS_KEY_FILE] {
            content.extend(std::fs::read(dir.join(file))?);
            content.push(0);
        }
        if has_client_ca(config) {
            content.extend(std::fs::read(dir.join(settings::TLS_CLIENT_CA_FILE))?);
        }
    }
    Ok(content)
}

/// The mounted configuration, checked (see [`settings::checked_settings`]); each dropped line
/// is logged by setting name, never by value.
fn checked_config(config: &InstanceConfig, mounted: &[u8]) -> String {
    let (checked, dropped) = settings::checked_settings(&String::from_utf8_lossy(mounted));
    for line in dropped {
        tracing::warn!(file = %config.config_file.display(), %line, "ignoring a configuration line tusk does not allow");
    }
    checked
}

/// The `postgres` program.
fn postgres_program(config: &InstanceConfig) -> PathBuf {
    config.postgres_bin_dir.join("postgres")
}

/// The checked settings a start uses, and the report on the mounted configuration: the mounted
/// configuration when PostgreSQL accepts it; else the data directory's previous checked copy
/// if PostgreSQL accepts that, so that a typo never takes a running database down, even when
/// its pod restarts meanwhile (reported as refused); else the mounted one, so that PostgreSQL's
/// own refusal stops the start and is reported by it.
async fn settings_for_start(
    config: &InstanceConfig,
    run_as: Option<RunAs>,
) -> (String, tusk_api::instance::ParameterReport) {
    let mounted = std::fs::read(&config.config_file).unwrap_or_default();
    let candidate = checked_config(config, &mounted);
    let accepted = tusk_api::instance::ParameterReport {
        config_sha256: parameters::config_sha256(&mounted),
        outcome: tusk_api::instance::ParameterOutcome::Loaded,
        refused: Vec::new(),
        pending_restart: Vec::new(),
    };
    let postgres = postgres_program(config);
    let Err(refused) = parameters::check(&postgres, &candidate, run_as).await else {
        return (candidate, accepted);
    };
    let previous = std::fs::read_to_string(config.data_dir.join(settings::CHECKED_SETTINGS)).ok();
    match previous {
        Some(previous)
            if previous != candidate
                && parameters::check(&postgres, &previous, run_as)
                    .await
                    .is_ok() =>
        {
            tracing::warn!(
                "PostgreSQL refuses the mounted configuration; starting with the previous one"
            );
            (previous, parameters::refused_report(&mounted, refused))
        }
        _ => (candidate, accepted),
    }
}

/// Writes the checked copy of the mounted configuration that postgresql.conf includes.
fn write_checked_config(
    config: &InstanceConfig,
    checked: &str,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let path = config.data_dir.join(settings::CHECKED_SETTINGS);
    let io_error = |source| InstanceError::DataDir {
        path: path.clone(),
        source,
    };
    std::fs::write(&path, checked).map_err(io_error)?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).map_err(io_error)?;
    }
    Ok(())
}

/// Writes postgresql.conf, the checked settings, pg_hba.conf and pg_ident.conf into the data
/// directory, every start, so that they always say what this version of tusk means.
fn write_owned_files(
    config: &InstanceConfig,
    checked_settings: &str,
    supervisor_user: &str,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let files = [
        (settings::POSTGRESQL_CONF, settings::postgresql_conf()),
        (settings::CHECKED_SETTINGS, checked_settings.to_owned()),
        (
            settings::PG_HBA_CONF,
            settings::pg_hba_conf(
                &config.replication.name,
                config.tls_dir.is_some(),
                has_client_ca(config),
            ),
        ),
        (
            settings::PG_IDENT_CONF,
            settings::pg_ident_conf(supervisor_user),
        ),
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

/// tusk's settings as `postgres` arguments (see [`settings::OwnedSettings`]).
fn owned_settings(config: &InstanceConfig, socket_dir: &Path) -> Vec<String> {
    settings::OwnedSettings {
        listen_host: &config.listen_host.to_string(),
        port: config.postgres_port,
        data_dir: &absolute(&config.data_dir),
        socket_dir,
        wal_archive_prefix: config.wal_archive_prefix.as_deref(),
        tusk_executable: &config.tusk_executable,
        tls_dir: config.tls_dir.as_deref(),
        client_ca: has_client_ca(config),
    }
    .command_line()
}

/// Whether the TLS directory holds the CA of tusk's client certificates (the operator mounts
/// it; an instance run by hand may have none, and then no client certificate is accepted).
fn has_client_ca(config: &InstanceConfig) -> bool {
    config
        .tls_dir
        .as_ref()
        .is_some_and(|dir| dir.join(settings::TLS_CLIENT_CA_FILE).is_file())
}

/// Starts `postgres -D <data>` with tusk's settings on its command line. Its output goes to the
/// supervisor's, which is the container log; its stderr passes through `postgres_log` (the
/// returned task, which ends with the stream).
fn start_postgres(
    config: &InstanceConfig,
    owned_settings: &[String],
    run_as: Option<RunAs>,
    postgres_log: &Arc<PostgresLog>,
) -> Result<(Child, tokio::task::JoinHandle<()>), InstanceError> {
    let program = config.postgres_bin_dir.join("postgres");
    let mut command = Command::new(&program);
    command
        .arg("-D")
        .arg(&config.data_dir)
        .args(owned_settings)
        // PostgreSQL has no use for the passwords; archive_command keeps the store settings
        // and the backup passphrase it needs.
        .env_remove(env::OWNER_PASSWORD)
        .env_remove(env::REPLICATION_PASSWORD)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    drop_privileges(&mut command, run_as);
    let mut child = command
        .spawn()
        .map_err(|source| InstanceError::Spawn { program, source })?;
    let forwarding = forward_stderr(&mut child, postgres_log);
    Ok((child, forwarding))
}

/// Passes a PostgreSQL process's stderr through `postgres_log` in a task of its own.
pub(crate) fn forward_stderr(
    child: &mut Child,
    postgres_log: &Arc<PostgresLog>,
) -> tokio::task::JoinHandle<()> {
    let stderr = child.stderr.take();
    let postgres_log = Arc::clone(postgres_log);
    tokio::spawn(async move {
        if let Some(stderr) = stderr {
            postgres_log.forward(stderr).await;
        }
    })
}

async fn serve_health(listener: TcpListener, slot: Arc<HealthSlot>) {
    if let Err(error) = axum::serve(listener, health::router(slot)).await {
        tracing::error!(%error, "the health server stopped");
    }
}

/// Waits until the server accepts connections as a primary, then makes sure the owner role,
/// its database and the replication role are in place; only then is the instance ready.
async fn finish_bootstrap(state: Arc<HealthState>, roles: database::Roles) {
    loop {
        match bootstrap_once(&state, &roles).await {
            Ok(true) => {
                // Recovery is over: segments `tusk wal-fetch` fetched ahead are not needed.
                let spool = state
                    .data_dir
                    .join("pg_wal")
                    .join(tusk_backup::wal::PREFETCH_SPOOL);
                let _ = tokio::fs::remove_dir_all(spool).await;
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
    roles: &database::Roles,
) -> Result<bool, tokio_postgres::Error> {
    let client = state.connection.connect().await?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .try_get(0)?;
    if in_recovery {
        return Ok(false);
    }
    database::ensure_roles(&client, roles).await?;
    if roles.restore_check {
        database::grant_amcheck(&state.connection, &roles.owner.name).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(owner: &str, replication: &str) -> InstanceConfig {
        let credentials = |name: &str| Credentials {
            name: name.to_owned(),
            password: "x".to_owned(),
        };
        InstanceConfig {
            config_file: PathBuf::new(),
            data_dir: PathBuf::new(),
            health_port: 0,
            listen_host: IpAddr::from([127, 0, 0, 1]),
            postgres_port: 5432,
            postgres_bin_dir: PathBuf::new(),
            owner: credentials(owner),
            replication: credentials(replication),
            wal_archive_prefix: None,
            restore: None,
            run_as: None,
            tusk_executable: PathBuf::new(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            tls_dir: None,
            socket_dir: None,
        }
    }

    #[test]
    fn the_customer_cannot_be_handed_a_role_that_is_not_its_own() {
        assert!(config("app", "tusk_replication").validate_roles().is_ok());
        for (owner, replication) in [
            ("postgres", "tusk_replication"),
            ("pg_execute_server_program", "tusk_replication"),
            ("app", "postgres"),
            ("app", "pg_read_server_files"),
            ("app", "app"),
        ] {
            assert!(
                matches!(
                    config(owner, replication).validate_roles(),
                    Err(InstanceError::ReservedRole(_))
                ),
                "{owner}/{replication} accepted"
            );
        }
    }
}
