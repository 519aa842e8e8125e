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

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the links' directory is made: `/tmp` itself, not `$TMPDIR`, which may be long.
const LINKS_PARENT: &str = "/tmp";

/// The runtime's directory of links to the pods' roots; it goes with the runtime.
#[derive(Debug)]
pub(crate) struct ShortRoots {
    dir: tempfile::TempDir,
    next: AtomicU64,
}

/// One pod's link; removed when dropped.
#[derive(Debug)]
pub(crate) struct ShortRoot {
    link: PathBuf,
}

impl ShortRoots {
    /// Makes the runtime's directory of links.
    pub fn create() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tusk-")
            .rand_bytes(6)
            .permissions(std::fs::Permissions::from_mode(0o711))
            .tempdir_in(LINKS_PARENT)?;
        Ok(Self {
            dir,
            next: AtomicU64::new(1),
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
    use std::os::unix::fs::MetadataExt as _;

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
}
