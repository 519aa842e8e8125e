//! Short names for the pods' root directories.
//!
//! In a container, a volume's path is its mountPath, `/var/run/postgresql` say. Here that path
//! is rebased under the pod's root directory, deep in the runtime's directory, and a Unix
//! socket path has at most 107 bytes: a server's socket at the rebased path would not fit, and
//! a client (psql looking in `$PGHOST`) could not name it. So the paths handed to a pod's
//! processes name its root through a short link instead: `/tmp/tusk-<random>/<n>`, where the
//! directory is the runtime's own (created afresh with a random name, mode 0711, so that nobody
//! else can put a link there or list the links) and each link points at one pod's root. A link
//! opens nothing: whoever follows it still needs the rights on the pod's real directories.
//!
//! The directory goes with the runtime, but a runtime that is killed leaves it behind. So each
//! runtime holds a lock on a file in its own directory for as long as it lives, and a runtime
//! starting removes the directories of this user whose lock it can take: their runtimes are
//! gone.

use std::fs::File;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the links' directory is made: `/tmp` itself, not `$TMPDIR`, which may be long.
const LINKS_PARENT: &str = "/tmp";
/// The start of the links' directory's name; [`LINKS_RANDOM_LEN`] random characters follow.
const LINKS_PREFIX: &str = "tusk-";
/// How many random characters end the links' directory's name.
const LINKS_RANDOM_LEN: usize = 6;
/// The file in the links' directory that its runtime keeps locked while it lives.
const LIVENESS_LOCK: &str = "runtime.lock";

/// The runtime's directory of links to the pods' roots; it goes with the runtime.
#[derive(Debug)]
pub(crate) struct ShortRoots {
    dir: tempfile::TempDir,
    next: AtomicU64,
    /// Locked for the runtime's life: a runtime that can take it knows this one is gone.
    _alive: File,
}

/// One pod's link; removed when dropped.
#[derive(Debug)]
pub(crate) struct ShortRoot {
    link: PathBuf,
}

impl ShortRoots {
    /// Removes the directories that killed runtimes left, then makes this runtime's.
    pub fn create() -> std::io::Result<Self> {
        remove_abandoned(Path::new(LINKS_PARENT));
        Self::create_in(Path::new(LINKS_PARENT))
    }

    fn create_in(parent: &Path) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(LINKS_PREFIX)
            .rand_bytes(LINKS_RANDOM_LEN)
            .permissions(std::fs::Permissions::from_mode(0o711))
            .tempdir_in(parent)?;
        // Locked before it takes its name, so no runtime starting now finds it unlocked.
        let unnamed = dir.path().join(".runtime.lock.new");
        let alive = File::create(&unnamed)?;
        alive.try_lock().map_err(std::io::Error::from)?;
        std::fs::rename(&unnamed, dir.path().join(LIVENESS_LOCK))?;
        Ok(Self {
            dir,
            next: AtomicU64::new(1),
            _alive: alive,
        })
    }

    /// A new link to `root`, a pod's root directory.
    pub fn link(&self, root: &Path) -> std::io::Result<ShortRoot> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let link = self.dir.path().join(number.to_string());
        std::os::unix::fs::symlink(root, &link)?;
        Ok(ShortRoot { link })
    }
}

/// Removes the links' directories in `parent` that belong to this user and whose runtime is
/// gone: their lock can be taken. Another user's are not ours to judge, and a directory
/// without the lock is left alone. Best effort: a runtime starts whatever is left.
fn remove_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_links_dir = name.to_str().is_some_and(|name| {
            name.strip_prefix(LINKS_PREFIX)
                .is_some_and(|random| random.len() == LINKS_RANDOM_LEN)
        });
        // Not followed if a link: in a sticky /tmp only its owner, this user, can replace the
        // directory between this check and the removal.
        let ours = entry
            .metadata()
            .is_ok_and(|meta| meta.is_dir() && meta.uid() == me);
        if !(is_links_dir && ours) {
            continue;
        }
        let dir = entry.path();
        let Ok(lock) = File::open(dir.join(LIVENESS_LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            // remove_dir_all removes the links themselves, never what they point at.
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

impl ShortRoot {
    /// The link's path, which names the pod's root.
    pub fn path(&self) -> &Path {
        &self.link
    }
}

impl Drop for ShortRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_short_names_the_root_and_goes_when_dropped() {
        let roots = ShortRoots::create().unwrap();
        let meta = std::fs::metadata(roots.dir.path()).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            0o711,
            "nobody else may add or list links"
        );
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        let pod_root = tempfile::tempdir().unwrap();
        std::fs::write(pod_root.path().join("file"), "seen").unwrap();
        let link = roots.link(pod_root.path()).unwrap();
        let other = roots.link(pod_root.path()).unwrap();
        assert_ne!(link.path(), other.path());
        // Room for `/var/run/postgresql/.s.PGSQL.5432` and more within a socket path's 107.
        assert!(
            link.path().as_os_str().len() <= 24,
            "{}",
            link.path().display()
        );
        assert_eq!(
            std::fs::read_to_string(link.path().join("file")).unwrap(),
            "seen"
        );
        let path = link.path().to_path_buf();
        drop(link);
        assert!(std::fs::symlink_metadata(&path).is_err());
        let dir = roots.dir.path().to_path_buf();
        drop(other);
        drop(roots);
        assert!(!dir.exists());
    }

    #[test]
    fn a_killed_runtimes_directory_is_removed_and_a_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let pod_root = tempfile::tempdir().unwrap();
        std::fs::write(pod_root.path().join("file"), "kept").unwrap();

        let live = ShortRoots::create_in(parent.path()).unwrap();
        let live_link = live.link(pod_root.path()).unwrap();
        // A killed runtime: its directory and links stay, its lock goes with its process
        // (here: with the file closed, as the kernel does when a process dies).
        let killed = ShortRoots::create_in(parent.path()).unwrap();
        let killed_link = killed.link(pod_root.path()).unwrap();
        let killed_dir = killed.dir.path().to_path_buf();
        std::mem::forget(killed_link);
        let ShortRoots { dir, _alive, .. } = killed;
        let _ = dir.keep();
        drop(_alive);
        // Not a runtime's: no lock in it.
        let lockless = parent.path().join("tusk-abcdef");
        std::fs::create_dir(&lockless).unwrap();

        remove_abandoned(parent.path());
        assert!(!killed_dir.exists(), "a killed runtime's links are removed");
        assert_eq!(
            std::fs::read_to_string(pod_root.path().join("file")).unwrap(),
            "kept",
            "what a link pointed at is left alone"
        );
        assert!(live_link.path().exists(), "a live runtime keeps its links");
        assert!(
            lockless.exists(),
            "a directory without the lock is not touched"
        );
    }
}
