//! Where the runtime keeps what pods must reach.
//!
//! Run as root, the runtime runs each pod as an unprivileged local user, who must be able to
//! pass through every directory above the pod's files and above the executable its `tusk`
//! command runs. A runtime directory inside a private one (a checkout under `/root`, mode
//! 0700) is out of their reach, and so is an executable built there. Opening the user's
//! directories to everyone would undo a choice the user made; instead the runtime keeps its
//! pods and volumes under a directory of its own in [`SYSTEM_DIR`] (as the kubelet keeps
//! `/var/lib/kubelet`), which the runtime directory links to as `node`, and runs a copy of
//! the executable it installs there.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{RuntimeError, RuntimeOptions};

/// Where a root runtime whose directory is private keeps its pods and volumes, one
/// directory per runtime directory.
pub const SYSTEM_DIR: &str = "/var/lib/tusk-sandbox";

/// The link, in the runtime directory, to the directory that holds its pods and volumes
/// when they live in [`SYSTEM_DIR`].
const NODE_LINK: &str = "node";

/// Places `options` where the users pods run as can reach them: the runtime directory (moved
/// under [`SYSTEM_DIR`] when pods could not reach it) and the executable a container's `tusk`
/// command runs (a copy installed in the runtime directory when pods could not reach it).
/// A runtime not running as root runs pods as itself and keeps `options` as they are.
pub(crate) fn place(mut options: RuntimeOptions) -> Result<RuntimeOptions, RuntimeError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(options);
    }
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::RootDir { path, source }
    };
    std::fs::create_dir_all(&options.root_dir).map_err(failed(&options.root_dir))?;
    let root_dir = std::fs::canonicalize(&options.root_dir).map_err(failed(&options.root_dir))?;
    if !passable_by_anyone(&root_dir) {
        let node_dir = node_dir(&root_dir).map_err(failed(&root_dir))?;
        tracing::info!(
            runtime_dir = %root_dir.display(),
            node_dir = %node_dir.display(),
            "the runtime directory is private to its owner, so pods and volumes live in a directory of the runtime's own"
        );
        options.root_dir = node_dir;
    }
    let executable = match &options.tusk_executable {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(failed(Path::new("tusk")))?,
    };
    if !runnable_by_anyone(&executable) {
        let installed = install_executable(&executable, &options.root_dir.join("bin"))
            .map_err(failed(&options.root_dir.join("bin")))?;
        options.tusk_executable = Some(installed);
    }
    Ok(options)
}

/// Whether anyone may pass through every directory above `dir` (`dir` itself the runtime
/// makes passable).
fn passable_by_anyone(dir: &Path) -> bool {
    dir.ancestors()
        .skip(1)
        .all(|ancestor| std::fs::metadata(ancestor).is_ok_and(|meta| meta.mode() & 0o001 != 0))
}

/// Whether anyone may reach and run the executable file at `path`.
fn runnable_by_anyone(path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    std::fs::metadata(&real).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o001 != 0)
        && passable_by_anyone(&real)
}

/// The directory of [`SYSTEM_DIR`] that holds the pods and volumes of the runtime directory
/// `root_dir`: the one its `node` link names, or a new one the link then names. Its name is
/// derived from `root_dir`'s path, so a lost link finds the same directory again.
fn node_dir(root_dir: &Path) -> std::io::Result<PathBuf> {
    let system = Path::new(SYSTEM_DIR);
    std::fs::create_dir_all(system)?;
    owned_by_root(system)?;
    std::fs::set_permissions(system, std::fs::Permissions::from_mode(0o711))?;
    if !passable_by_anyone(system) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{SYSTEM_DIR} is inside a directory other users cannot pass through"),
        ));
    }
    let link = root_dir.join(NODE_LINK);
    if let Ok(target) = std::fs::read_link(&link)
        && target.parent() == Some(system)
        && std::fs::symlink_metadata(&target).is_ok_and(|meta| meta.is_dir())
    {
        return Ok(target);
    }
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        root_dir.as_os_str().as_encoded_bytes(),
    );
    let name: String = digest.as_ref()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let target = system.join(name);
    match std::fs::create_dir(&target) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            if !std::fs::symlink_metadata(&target).is_ok_and(|meta| meta.is_dir()) {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a directory",
                    target.display()
                )));
            }
        }
        Err(error) => return Err(error),
    }
    owned_by_root(&target)?;
    if std::fs::symlink_metadata(&link).is_ok() {
        std::fs::remove_file(&link)?;
    }
    std::os::unix::fs::symlink(&target, &link)?;
    Ok(target)
}

/// Refuses a directory someone other than root could have prepared.
fn owned_by_root(dir: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() && meta.uid() == 0 {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is not a directory owned by root", dir.display()),
        ))
    }
}

/// Copies `executable` into `bin_dir` as a file anyone may run but only root may change, and
/// returns the copy's path. The copy replaces the previous one whole, so a pod starting
/// meanwhile runs one or the other.
fn install_executable(executable: &Path, bin_dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(bin_dir)?;
    std::fs::set_permissions(bin_dir, std::fs::Permissions::from_mode(0o711))?;
    let name = executable
        .file_name()
        .unwrap_or_else(|| std::ffi::OsStr::new("tusk"));
    let installed = bin_dir.join(name);
    let staging = tempfile::NamedTempFile::new_in(bin_dir)?;
    std::fs::copy(executable, staging.path())?;
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))?;
    staging.persist(&installed).map_err(|error| error.error)?;
    Ok(installed)
}
