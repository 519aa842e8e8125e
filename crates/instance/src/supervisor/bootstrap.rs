//! Turning an empty volume into a data directory: `initdb`, or a restore from a backup.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::Command;
use tusk_api::restore_progress::Reported;
use tusk_backup::restore::{RESTORE_INCOMPLETE_MARKER, RestoreOptions, wal_fetch_command};
use tusk_backup::{BackupStore, restore};

use postgres_protocol::escape::{escape_identifier, escape_literal};

use super::database::{MANAGEMENT_ROLE, SAFE_CREATEROLE_VERSION, SERVER_ACCESS_ROLES};
use super::{InstanceError, RestoreSource, RunAs};

/// What the data directory holds when the supervisor starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirState {
    /// Nothing yet: it must be bootstrapped.
    Empty,
    /// A PostgreSQL data directory.
    Initialized,
    /// A restore into it failed or never finished; PostgreSQL must not run on it.
    RestoreIncomplete,
}

/// Looks at the data directory without changing it.
pub fn inspect(data_dir: &Path) -> Result<DataDirState, InstanceError> {
    if data_dir.join(RESTORE_INCOMPLETE_MARKER).exists() {
        return Ok(DataDirState::RestoreIncomplete);
    }
    if data_dir.join("PG_VERSION").exists() {
        return Ok(DataDirState::Initialized);
    }
    match fs::read_dir(data_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(DataDirState::Empty),
            Some(_) => Err(InstanceError::ForeignDataDir(data_dir.to_owned())),
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(DataDirState::Empty),
        Err(source) => Err(InstanceError::DataDir {
            path: data_dir.to_owned(),
            source,
        }),
    }
}

/// Creates the data directory with PostgreSQL's mode (0700), owned by the PostgreSQL user.
pub fn create_data_dir(data_dir: &Path, run_as: Option<RunAs>) -> Result<(), InstanceError> {
    let io_error = |source| InstanceError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    fs::create_dir_all(data_dir).map_err(io_error)?;
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(io_error)?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(data_dir, Some(user.uid), Some(user.gid)).map_err(io_error)?;
    }
    Ok(())
}

/// Runs `initdb` with the management role as its superuser, without a password: the
/// management role authenticates by peer over the Unix socket only (tusk writes pg_hba.conf
/// itself before the server first starts).
///
/// initdb writes into a staging directory beside the data directory, which is renamed into
/// place only when initdb succeeded: a pod killed halfway leaves no half-made data directory
/// that every later start would stumble on.
pub async fn initdb(
    initdb: &Path,
    data_dir: &Path,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let staging = staging_dir(data_dir);
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| InstanceError::DataDir { path, source }
    };
    // An initdb killed by a shutdown may go on writing for a moment after its kill, so that a
    // quick restart finds files appearing while it removes them: try again for a while.
    let mut attempts = 0;
    loop {
        match fs::remove_dir_all(&staging) {
            Ok(()) => {
                tracing::info!(staging = %staging.display(), "removed an unfinished initdb");
                break;
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            Err(error) if error.kind() == io::ErrorKind::DirectoryNotEmpty && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(source) => return Err(io_error(&staging)(source)),
        }
    }
    create_data_dir(&staging, run_as)?;
    let mut command = Command::new(initdb);
    command
        .arg("--pgdata")
        .arg(&staging)
        .arg("--username")
        .arg(MANAGEMENT_ROLE)
        .args([
            "--auth-local=peer",
            "--auth-host=reject",
            "--encoding=UTF8",
            "--no-locale",
            "--data-checksums",
        ])
        .kill_on_drop(true);
    super::drop_privileges(&mut command, run_as);
    tracing::info!(data_dir = %data_dir.display(), "initialising a new data directory");
    let output = command
        .output()
        .await
        .map_err(|source| InstanceError::Spawn {
            program: initdb.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(InstanceError::Initdb {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    // rename(2) replaces an empty directory, so an empty data directory left by an earlier
    // start (or created by hand) is no obstacle.
    fs::rename(&staging, data_dir).map_err(io_error(data_dir))?;
    Ok(())
}

/// `<data dir>.initdb`: beside the data directory, so on the same file system.
fn staging_dir(data_dir: &Path) -> std::path::PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_owned();
    name.push(".initdb");
    data_dir.with_file_name(name)
}

/// Restores the backup into the (empty) data directory with tusk-backup, then hands the files
/// to the PostgreSQL user. A failed restore leaves the directory marked unusable.
pub async fn restore_backup(
    source: &RestoreSource,
    data_dir: &Path,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let store = BackupStore::new(&source.store).map_err(InstanceError::Store)?;
    let downloaded = Arc::new(AtomicU64::new(0));
    let options = RestoreOptions {
        passphrase: source.passphrase.clone(),
        target_time: source.target_time.clone(),
        target_lsn: source.target_lsn.clone(),
        latest: source.latest,
        expected_size: source.expected_size,
        expected_sha256: source.expected_sha256.clone(),
        restore_command: source
            .wal_prefix
            .as_deref()
            .map(|prefix| restore_command(prefix, source.wal_passphrase_env)),
        downloaded_bytes: Arc::clone(&downloaded),
    };
    tracing::info!(key = %source.key, data_dir = %data_dir.display(), target_time = ?source.target_time, "restoring the data directory from a backup");
    let reporter = tokio::spawn(report_download(Arc::clone(&downloaded)));
    let outcome = restore(&store, &source.key, data_dir, &options).await;
    reporter.abort();
    print_progress(Reported::BaseBackup(downloaded.load(Ordering::Relaxed)));
    let outcome = outcome.map_err(InstanceError::Restore)?;
    tracing::info!(
        tar_bytes = outcome.tar_bytes,
        recovery = outcome.recovery_configured,
        "restore complete"
    );
    if let Some(user) = run_as {
        chown_tree(data_dir, user).map_err(|source| InstanceError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// How often a restore's download progress is written to the container log.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the bytes downloaded so far to the container log every [`PROGRESS_INTERVAL`], where
/// the operator reads them (see [`tusk_api::restore_progress`]), until aborted.
async fn report_download(downloaded: Arc<AtomicU64>) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        ticks.tick().await;
        print_progress(Reported::BaseBackup(downloaded.load(Ordering::Relaxed)));
    }
}

/// Writes one progress line to the container log (stderr, where PostgreSQL's lines go too).
pub(crate) fn print_progress(progress: Reported) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{progress}");
}

/// Puts the roles in the order tusk relies on before the server accepts any connection, at
/// every start: the management role exists, is a superuser and has no password; no other role
/// is a superuser, bypasses row security, replicates (but `replication_role`) or holds a role
/// that runs programs or touches server files ([`SERVER_ACCESS_ROLES`]) or a privilege on a
/// server parameter; below PostgreSQL 16 no other role has CREATEROLE (there it lets a role
/// grant itself those roles). Needs PostgreSQL 15 or later.
///
/// A restored backup, or a cluster from before this rule, may carry any of these (a customer
/// who once was a superuser could have made more); an interrupted restore or upgrade simply
/// runs this again. It runs PostgreSQL once in single-user mode, which needs no
/// authentication and opens no socket. The script holds no secret, so PostgreSQL's messages
/// (a restore's recovery among them) go to the container log as they are, through
/// `postgres_log`, which keeps the decisive one for the termination message.
pub async fn secure_roles(
    postgres: &Path,
    data_dir: &Path,
    settings: &[String],
    replication_role: &str,
    run_as: Option<RunAs>,
    postgres_log: &std::sync::Arc<super::PostgresLog>,
) -> Result<(), InstanceError> {
    use tokio::io::AsyncWriteExt as _;

    let script = secure_roles_script(replication_role);
    let mut command = Command::new(postgres);
    command
        .arg("--single")
        .arg("-D")
        .arg(data_dir)
        .args(settings)
        // A restore's WAL replay happens here: PostgreSQL reports where it got every second,
        // and `postgres_log` turns that into the progress line the operator reads.
        .args(["-c", "log_startup_progress_interval=1s"])
        // template1 cannot be dropped, unlike `postgres`.
        .arg("template1")
        .env_remove(super::env::OWNER_PASSWORD)
        .env_remove(super::env::REPLICATION_PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    super::drop_privileges(&mut command, run_as);
    tracing::info!("securing the roles before PostgreSQL starts");
    let spawn_error = |source| InstanceError::Spawn {
        program: postgres.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let forwarding = super::forward_stderr(&mut child, postgres_log);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(spawn_error)?;
        // Closing stdin ends the session.
        drop(stdin);
    }
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    let _ = tokio::time::timeout(super::OUTPUT_DRAIN, forwarding).await;
    // Single-user mode reports a failed statement and goes on to the next one, so neither its
    // exit status nor its messages tell; the script's last query checks the outcome itself.
    let secured = String::from_utf8_lossy(&output.stdout).contains(ROLES_SECURED);
    if output.status.success() && secured {
        Ok(())
    } else {
        Err(InstanceError::SecureRoles(output.status))
    }
}

/// What the last query of [`secure_roles_script`] prints when the roles are as they must be.
/// The script spells it differently, so that only the query's result can contain it.
const ROLES_SECURED: &str = "TUSK ROLES SECURED";

/// The statements of [`secure_roles`], one a line (single-user mode runs a line at a time).
pub fn secure_roles_script(replication_role: &str) -> String {
    let mgmt = escape_identifier(MANAGEMENT_ROLE);
    let mgmt_name = escape_literal(MANAGEMENT_ROLE);
    let replication = escape_literal(replication_role);
    let server_access = SERVER_ACCESS_ROLES
        .iter()
        .map(|role| escape_literal(role))
        .collect::<Vec<_>>()
        .join(", ");
    let safe_createrole = SAFE_CREATEROLE_VERSION;
    [
        format!(
            "DO $tusk$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_authid WHERE rolname = {mgmt_name}) THEN CREATE ROLE {mgmt}; END IF; END $tusk$"
        ),
        format!("ALTER ROLE {mgmt} WITH SUPERUSER LOGIN REPLICATION PASSWORD NULL"),
        // The bootstrap superuser (oid 10) cannot lose SUPERUSER; when it is not the
        // management role (a renamed one in an old backup), it can no longer log in instead.
        format!(
            "DO $tusk$ DECLARE r record; BEGIN \
             FOR r IN SELECT oid, rolname, rolsuper, rolbypassrls, rolreplication, rolcreaterole FROM pg_catalog.pg_authid \
             WHERE rolname <> {mgmt_name} AND rolname NOT LIKE 'pg\\_%' LOOP \
             IF r.oid = 10 THEN EXECUTE format('ALTER ROLE %I WITH NOLOGIN PASSWORD NULL', r.rolname); CONTINUE; END IF; \
             IF r.rolsuper OR r.rolbypassrls OR (r.rolreplication AND r.rolname <> {replication}) THEN \
             EXECUTE format('ALTER ROLE %I WITH NOSUPERUSER NOBYPASSRLS NOREPLICATION', r.rolname); END IF; \
             IF r.rolcreaterole AND current_setting('server_version_num')::int < {safe_createrole} THEN \
             EXECUTE format('ALTER ROLE %I WITH NOCREATEROLE', r.rolname); END IF; \
             END LOOP; END $tusk$"
        ),
        format!(
            "DO $tusk$ DECLARE m record; BEGIN \
             FOR m IN SELECT g.rolname AS granted, u.rolname AS member, gr.rolname AS grantor FROM pg_catalog.pg_auth_members a \
             JOIN pg_catalog.pg_authid g ON g.oid = a.roleid JOIN pg_catalog.pg_authid u ON u.oid = a.member \
             LEFT JOIN pg_catalog.pg_authid gr ON gr.oid = a.grantor \
             WHERE g.rolname IN ({server_access}) AND u.rolname <> {mgmt_name} LOOP \
             IF current_setting('server_version_num')::int >= {safe_createrole} AND m.grantor IS NOT NULL THEN \
             EXECUTE format('REVOKE %I FROM %I GRANTED BY %I CASCADE', m.granted, m.member, m.grantor); \
             ELSE EXECUTE format('REVOKE %I FROM %I CASCADE', m.granted, m.member); END IF; \
             END LOOP; END $tusk$"
        ),
        // A superuser could grant SET or ALTER SYSTEM on a parameter (PostgreSQL 15 and later),
        // ssl_passphrase_command among them, which runs a program.
        format!(
            "DO $tusk$ DECLARE a record; BEGIN \
             FOR a IN SELECT p.parname, x.grantee FROM pg_catalog.pg_parameter_acl p, \
             LATERAL pg_catalog.aclexplode(p.paracl) x \
             WHERE x.grantee NOT IN (10, (SELECT oid FROM pg_catalog.pg_authid WHERE rolname = {mgmt_name})) LOOP \
             EXECUTE format('REVOKE ALL ON PARAMETER %s FROM %s CASCADE', \
             (SELECT string_agg(quote_ident(part), '.') FROM unnest(string_to_array(a.parname, '.')) AS part), \
             CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
             ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_authid WHERE oid = a.grantee)) END); \
             END LOOP; END $tusk$"
        ),
        // The postcondition, checked rather than assumed.
        format!(
            "SELECT CASE WHEN \
             EXISTS (SELECT 1 FROM pg_catalog.pg_authid WHERE rolname = {mgmt_name} \
             AND rolsuper AND rolcanlogin AND rolpassword IS NULL) \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_authid WHERE rolname <> {mgmt_name} \
             AND rolname NOT LIKE 'pg\\_%' AND (CASE WHEN oid = 10 THEN rolcanlogin OR rolpassword IS NOT NULL \
             ELSE rolsuper OR rolbypassrls OR (rolreplication AND rolname <> {replication}) \
             OR (rolcreaterole AND current_setting('server_version_num')::int < {safe_createrole}) END)) \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members a \
             JOIN pg_catalog.pg_authid g ON g.oid = a.roleid JOIN pg_catalog.pg_authid u ON u.oid = a.member \
             WHERE g.rolname IN ({server_access}) AND u.rolname <> {mgmt_name}) \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_parameter_acl p, LATERAL pg_catalog.aclexplode(p.paracl) x \
             WHERE x.grantee NOT IN (10, (SELECT oid FROM pg_catalog.pg_authid WHERE rolname = {mgmt_name}))) \
             THEN upper('tusk roles secured') ELSE 'not secured' END"
        ),
    ]
    .iter()
    .map(|statement| format!("{statement}\n"))
    .collect()
}

/// Gives every file under `root` (symlinks themselves, not their targets) to `user`.
pub fn chown_tree(root: &Path, user: RunAs) -> io::Result<()> {
    std::os::unix::fs::lchown(root, Some(user.uid), Some(user.gid))?;
    if fs::symlink_metadata(root)?.is_dir() {
        for entry in fs::read_dir(root)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// PostgreSQL's restore_command: `tusk wal-fetch` from the source cluster's archive. wal-fetch
/// decrypts with TUSK_BACKUP_PASSPHRASE, this cluster's; when the archive has a passphrase of
/// its own in `passphrase_env`, the shell hands that over instead, for this command only.
pub fn restore_command(wal_prefix: &str, passphrase_env: Option<&str>) -> String {
    let fetch = wal_fetch_command(wal_prefix);
    match passphrase_env {
        Some(variable) => format!("TUSK_BACKUP_PASSPHRASE=\"${{{variable}}}\" {fetch}"),
        None => fetch,
    }
}

/// The archive prefix that belongs to a base backup key: `<prefix>/base/<name>` archives its
/// WAL under `<prefix>/wal` (see `tusk_api::names`).
pub fn wal_prefix_of_backup_key(key: &str) -> Option<String> {
    let (storage_prefix, _) = key.rsplit_once("/base/")?;
    Some(format!("{storage_prefix}/wal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_archive_sits_beside_the_base_backups() {
        let prefix = tusk_api::names::cluster_storage_prefix("tusk", "ns", "src", "uid");
        let key = tusk_api::names::base_backup_key(&prefix, "nightly-uid");
        assert_eq!(
            wal_prefix_of_backup_key(&key),
            Some(tusk_api::names::wal_prefix(&prefix))
        );
        assert_eq!(wal_prefix_of_backup_key("loose-object.dare"), None);
    }

    #[test]
    fn restore_command_names_the_passphrase_variable_not_its_value() {
        let plain = restore_command("tusk/ns/src/wal", None);
        assert!(
            plain.ends_with(" wal-fetch --wal-prefix tusk/ns/src/wal %f %p"),
            "{plain}"
        );
        assert!(!plain.contains("TUSK_BACKUP_PASSPHRASE"));
        let foreign = restore_command("tusk/ns/src/wal", Some("TUSK_RESTORE_PASSPHRASE"));
        assert_eq!(
            foreign,
            format!("TUSK_BACKUP_PASSPHRASE=\"${{TUSK_RESTORE_PASSPHRASE}}\" {plain}")
        );
    }

    #[test]
    fn only_the_checking_query_can_print_that_the_roles_are_secured() {
        let script = secure_roles_script("tusk_replication");
        assert!(!script.contains(ROLES_SECURED));
        // Single-user mode runs a line at a time: one statement a line.
        assert_eq!(script.lines().count(), 6);
        assert!(script.contains("'tusk_replication'"));
    }

    #[test]
    fn initdb_stages_beside_the_data_directory() {
        assert_eq!(
            staging_dir(Path::new("/var/lib/postgresql/data/pgdata")),
            Path::new("/var/lib/postgresql/data/pgdata.initdb")
        );
    }

    #[test]
    fn a_directory_is_classified_by_its_contents() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("pgdata");
        assert_eq!(inspect(&data).unwrap(), DataDirState::Empty);
        fs::create_dir(&data).unwrap();
        assert_eq!(inspect(&data).unwrap(), DataDirState::Empty);
        fs::write(data.join("stray"), b"x").unwrap();
        assert!(matches!(
            inspect(&data),
            Err(InstanceError::ForeignDataDir(_))
        ));
        fs::write(data.join("PG_VERSION"), b"15\n").unwrap();
        assert_eq!(inspect(&data).unwrap(), DataDirState::Initialized);
        fs::write(data.join(RESTORE_INCOMPLETE_MARKER), b"").unwrap();
        assert_eq!(inspect(&data).unwrap(), DataDirState::RestoreIncomplete);
    }
}
