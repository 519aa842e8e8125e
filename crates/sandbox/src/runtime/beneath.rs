//! File operations confined beneath a directory the runtime trusts.
//!
//! A pod owns its root directory and its volumes, so it can replace any directory in them with
//! a symlink to a host path at any time. A path-based `create_dir_all`, `write`, `chown` or
//! `remove_file` under them would then act on the host, as root. Every operation here goes
//! through directory file descriptors instead: each component is opened with `O_NOFOLLOW`,
//! and every change is made relative to the descriptor of its parent, so a symlink a pod
//! planted is never followed by the runtime (it is at most removed, or refused).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, symlinkat, unlinkat};

/// The local user and group that own what the runtime creates for a pod; `None` when the
/// runtime cannot switch users and everything stays its own.
pub(crate) type Owner = Option<(u32, u32)>;

/// The components of a path a pod names inside one of its directories (a mountPath under its
/// root, a subPath inside a volume, a key's path in a projected volume). Leading slashes are
/// allowed (a mountPath is absolute inside the pod); `..` is refused, since nothing a pod
/// names may lead out of the directory it is resolved in.
pub(crate) fn components(path: &str) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name.to_os_string()),
            Component::ParentDir => return Err(format!("{path:?} must not contain '..'")),
            Component::Prefix(_) => return Err(format!("{path:?} is not a valid path")),
        }
    }
    Ok(out)
}

/// One name inside a directory: not empty, not `.` or `..`, no slash.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fn errno(error: Errno) -> io::Error {
    io::Error::from(error)
}

/// A directory held open; every path below is resolved from it without following symlinks.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    /// Where it was opened, for messages and for the symlinks that point into it.
    path: PathBuf,
}

impl Dir {
    /// Opens a directory the runtime trusts (its own, or one whose parent only it can write).
    /// The last component must not be a symlink.
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|error| refused(error, path))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory `name` in this one, or an error if it is anything else (a symlink too).
    pub fn child(&self, name: &OsStr) -> io::Result<Self> {
        let path = self.path.join(name);
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|error| refused(error, &path))?;
        Ok(Self { fd, path })
    }

    /// The directory at `relative` below this one, each missing directory created with `mode`
    /// and given to `owner`. A symlink on the way is refused, never followed.
    pub fn descend(&self, relative: &[OsString], mode: u32, owner: Owner) -> io::Result<Self> {
        let mut dir = self.duplicate()?;
        for name in relative {
            dir = dir.child_or_create(name, mode, owner)?;
        }
        Ok(dir)
    }

    /// The directory `name` in this one, created with `mode` for `owner` if missing.
    pub fn child_or_create(&self, name: &OsStr, mode: u32, owner: Owner) -> io::Result<Self> {
        match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(mode)) {
            Ok(()) => {
                let created = self.child(name)?;
                // The umask may have taken bits away.
                created.chmod(mode)?;
                created.chown(owner)?;
                Ok(created)
            }
            Err(Errno::EEXIST) => self.child(name),
            Err(error) => Err(refused(error, &self.path.join(name))),
        }
    }

    fn duplicate(&self) -> io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// What `name` is, without following it; `None` if there is nothing there.
    pub fn entry(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(error) => Err(refused(error, &self.path.join(name))),
        }
    }

    /// Whether `name` exists here (as anything, a dangling symlink too).
    pub fn exists(&self, name: &OsStr) -> io::Result<bool> {
        Ok(self.entry(name)?.is_some())
    }

    /// Removes `name`, whatever it is: a file or symlink is unlinked (never its target), a
    /// directory is removed with its contents, none of whose symlinks are followed.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let Some(stat) = self.entry(name)? else {
            return Ok(());
        };
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            // std's remove_dir_all opens each level with O_NOFOLLOW and unlinks relative to
            // it; the only link it follows here is /proc's handle on this very directory.
            std::fs::remove_dir_all(self.fd_path().join(name))
        } else {
            unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|error| refused(error, &self.path.join(name)))
        }
    }

    /// Creates the symlink `name` pointing at `target`, replacing whatever was there.
    pub fn replace_with_symlink(&self, target: &Path, name: &OsStr) -> io::Result<()> {
        self.remove(name)?;
        symlinkat(target, self.fd.as_fd(), name)
            .map_err(|error| refused(error, &self.path.join(name)))
    }

    /// Renames `from` to `to`, both in this directory; `to` is replaced atomically.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        renameat(self.fd.as_fd(), from, self.fd.as_fd(), to)
            .map_err(|error| refused(error, &self.path.join(to)))
    }

    /// Where the symlink `name` points, if it is one.
    pub fn read_link(&self, name: &OsStr) -> Option<OsString> {
        readlinkat(self.fd.as_fd(), name).ok()
    }

    /// The names in this directory (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        Ok(std::fs::read_dir(self.fd_path())?
            .flatten()
            .map(|entry| entry.file_name())
            .collect())
    }

    /// Writes a new file `name` (nothing may be there yet) with `mode`, given to `owner`.
    pub fn write_new(&self, name: &OsStr, bytes: &[u8], mode: u32, owner: Owner) -> io::Result<()> {
        use std::io::Write;
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|error| refused(error, &self.path.join(name)))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
        if let Some((uid, gid)) = owner {
            fchown(
                file.as_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )
            .map_err(errno)?;
        }
        Ok(())
    }

    /// At most `limit` bytes from the start of the regular file `name`; a symlink there is
    /// refused, never followed.
    pub fn read_prefix(&self, name: &OsStr, limit: usize) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|error| refused(error, &self.path.join(name)))?;
        let file = std::fs::File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                self.path.join(name).display()
            )));
        }
        let mut bytes = Vec::new();
        file.take(limit as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Sets this directory's mode.
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        fchmod(self.fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)
    }

    /// Gives this directory to `owner`.
    pub fn chown(&self, owner: Owner) -> io::Result<()> {
        if let Some((uid, gid)) = owner {
            fchown(
                self.fd.as_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )
            .map_err(errno)?;
        }
        Ok(())
    }

    /// This directory's owner and group.
    pub fn owner(&self) -> io::Result<(u32, u32)> {
        let stat = nix::sys::stat::fstat(self.fd.as_fd()).map_err(errno)?;
        Ok((stat.st_uid, stat.st_gid))
    }

    /// Gives this directory and everything in it to `owner`: symlinks themselves change
    /// owner, their targets never do, and no directory is entered through a symlink.
    pub fn chown_tree(&self, owner: Owner) -> io::Result<()> {
        let Some((uid, gid)) = owner else {
            return Ok(());
        };
        self.chown(owner)?;
        for name in self.names()? {
            let Some(stat) = self.entry(&name)? else {
                continue;
            };
            if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                self.child(&name)?.chown_tree(owner)?;
            } else {
                fchownat(
                    self.fd.as_fd(),
                    name.as_os_str(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|error| refused(error, &self.path.join(&name)))?;
            }
        }
        Ok(())
    }

    /// /proc's handle on this directory: whatever happens to its path, it names this directory.
    fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// An error naming the path; a symlink met where a directory was expected says so.
fn refused(error: Errno, path: &Path) -> io::Error {
    match error {
        Errno::ELOOP | Errno::ENOTDIR => io::Error::other(format!(
            "{} is not a directory of the pod's own (a symlink is not followed)",
            path.display()
        )),
        other => io::Error::new(
            io::Error::from(other).kind(),
            format!("{}: {}", path.display(), other.desc()),
        ),
    }
}

/// `name` as bytes, for comparisons with `..`-prefixed names.
pub(crate) fn starts_with_dots(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_a_pod_names_stays_below_where_it_is_resolved() {
        let names = |path: &str| {
            components(path).map(|c| {
                c.iter()
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(names("/var/lib/data").unwrap(), ["var", "lib", "data"]);
        assert_eq!(names("a/./b/").unwrap(), ["a", "b"]);
        assert_eq!(names("..data/key").unwrap(), ["..data", "key"]);
        assert!(names("../etc").is_err());
        assert!(names("/data/../../dev/null").is_err());
        assert!(names("a/b/..").is_err());
    }

    #[test]
    fn a_symlink_on_the_way_is_refused_and_removing_it_spares_its_target() {
        let base = tempfile::tempdir().expect("temp dir");
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("kept"), "x").expect("file");
        std::os::unix::fs::symlink(outside.path(), base.path().join("link")).expect("symlink");
        let dir = Dir::open(base.path()).expect("open");
        let error = dir
            .descend(
                &[OsString::from("link"), OsString::from("new")],
                0o755,
                None,
            )
            .expect_err("a symlink is not followed");
        assert!(error.to_string().contains("symlink"), "{error}");
        assert!(!outside.path().join("new").exists());
        std::fs::create_dir(base.path().join("inner")).expect("dir");
        std::os::unix::fs::symlink(outside.path(), base.path().join("inner/link"))
            .expect("symlink");
        dir.remove(OsStr::new("inner")).expect("removed");
        dir.remove(OsStr::new("link")).expect("removed");
        assert_eq!(
            std::fs::read_to_string(outside.path().join("kept")).expect("kept"),
            "x"
        );
        assert!(Dir::open(&base.path().join("link")).is_err());
    }
}
