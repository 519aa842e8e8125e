//! Turning an empty volume into a data directory: `initdb`, or a restore from a backup.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use tokio::process::Command;
use tusk_backup::restore::{RESTORE_INCOMPLETE_MARKER, RestoreOptions, wal_fetch_command};
use tusk_backup::{BackupStore, restore};

use super::{Credentials, InstanceError, RestoreSource, RunAs};

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

/// Runs `initdb` with SCRAM authentication and the superuser's name and password. The password
/// reaches initdb through a private file removed as soon as initdb ends.
///
/// initdb writes into a staging directory beside the data directory, which is renamed into
/// place only when initdb succeeded: a pod killed halfway leaves no half-made data directory
/// that every later start would stumble on.
pub async fn initdb(
    initdb: &Path,
    data_dir: &Path,
    superuser: &Credentials,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let staging = staging_dir(data_dir);
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| InstanceError::DataDir { path, source }
    };
    match fs::remove_dir_all(&staging) {
        Ok(()) => tracing::info!(staging = %staging.display(), "removed an unfinished initdb"),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(&staging)(source)),
    }
    create_data_dir(&staging, run_as)?;
    let password_file = private_password_file(&superuser.password, run_as)?;
    let mut command = Command::new(initdb);
    command
        .arg("--pgdata")
        .arg(&staging)
        .arg("--username")
        .arg(&superuser.name)
        .arg("--pwfile")
        .arg(password_file.path())
        .args([
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--data-checksums",
        ])
        .kill_on_drop(true);
    super::drop_privileges(&mut command, run_as);
    tracing::info!(data_dir = %data_dir.display(), superuser = %superuser.name, "initialising a new data directory");
    let output = command
        .output()
        .await
        .map_err(|source| InstanceError::Spawn {
            program: initdb.to_owned(),
            source,
        })?;
    drop(password_file);
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

/// A 0600 temporary file holding `password`, readable by the PostgreSQL user only.
fn private_password_file(
    password: &str,
    run_as: Option<RunAs>,
) -> Result<tempfile::NamedTempFile, InstanceError> {
    let io_error = |source| InstanceError::PasswordFile { source };
    let mut file = tempfile::Builder::new()
        .prefix("tusk-initdb-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile()
        .map_err(io_error)?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(file.path(), Some(user.uid), Some(user.gid)).map_err(io_error)?;
    }
    file.write_all(password.as_bytes()).map_err(io_error)?;
    file.write_all(b"\n").map_err(io_error)?;
    file.flush().map_err(io_error)?;
    Ok(file)
}

/// Restores the backup into the (empty) data directory with tusk-backup, then hands the files
/// to the PostgreSQL user. A failed restore leaves the directory marked unusable.
pub async fn restore_backup(
    source: &RestoreSource,
    data_dir: &Path,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    let store = BackupStore::new(&source.store).map_err(InstanceError::Store)?;
    let options = RestoreOptions {
        passphrase: source.passphrase.clone(),
        target_time: source.target_time.clone(),
        latest: false,
        expected_size: source.expected_size,
        expected_sha256: source.expected_sha256.clone(),
        restore_command: source
            .wal_prefix
            .as_deref()
            .map(|prefix| restore_command(prefix, source.wal_passphrase_env)),
    };
    tracing::info!(key = %source.key, data_dir = %data_dir.display(), target_time = ?source.target_time, "restoring the data directory from a backup");
    let outcome = restore(&store, &source.key, data_dir, &options)
        .await
        .map_err(InstanceError::Restore)?;
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

/// Makes the restored cluster's superuser the one this cluster's credentials name: a backup
/// carries the roles and passwords of the cluster it was taken from. Runs PostgreSQL once in
/// single-user mode, which needs no authentication and opens no socket, to create or update
/// the role; the password travels as a SCRAM verifier on its standard input.
pub async fn adopt_superuser(
    postgres: &Path,
    data_dir: &Path,
    superuser: &Credentials,
    run_as: Option<RunAs>,
) -> Result<(), InstanceError> {
    use tokio::io::AsyncWriteExt as _;

    let role = postgres_protocol::escape::escape_identifier(&superuser.name);
    let name = postgres_protocol::escape::escape_literal(&superuser.name);
    let verifier = postgres_protocol::escape::escape_literal(
        &postgres_protocol::password::scram_sha_256(superuser.password.as_bytes()),
    );
    // Single-user mode runs one statement per line.
    let script = format!(
        "DO $tusk$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN \
         CREATE ROLE {role} WITH SUPERUSER; END IF; END $tusk$\n\
         ALTER ROLE {role} WITH SUPERUSER LOGIN REPLICATION PASSWORD {verifier}\n"
    );
    let mut command = Command::new(postgres);
    command
        .arg("--single")
        .arg("-D")
        .arg(data_dir)
        .arg("postgres")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    super::drop_privileges(&mut command, run_as);
    tracing::info!(superuser = %superuser.name, "setting the restored cluster's superuser password");
    let spawn_error = |source| InstanceError::Spawn {
        program: postgres.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(spawn_error)?;
        // Closing stdin ends the session.
        drop(stdin);
    }
    let status = child.wait().await.map_err(spawn_error)?;
    if status.success() {
        Ok(())
    } else {
        // Its output is not passed on: an error message could quote the statement.
        Err(InstanceError::AdoptSuperuser(status))
    }
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
