//! A claim's volume as a filesystem of its own, of the size the claim asks, as a cloud disk
//! is: `statfs` in the pod reports the claim's size, and a full volume is full without
//! filling the host's disk.
//!
//! The volume is an ext4 image, a sparse file `<uid>.img` in the claims directory, mounted
//! on the claim's directory `<uid>`. A runtime running as root mounts it through a loop
//! device (`mount -o loop`) and grows it online (`losetup -c`, `resize2fs`), as a CSI driver
//! with online expansion does, where the kernel lets it (a container without
//! CAP_SYS_RESOURCE does not). A runtime running as another user mounts it with `fuse2fs`
//! (FUSE, through the setuid `fusermount`), which cannot grow a mounted filesystem. A volume
//! that cannot grow online grows once no pod has it mounted, as with a driver that only
//! expands offline (the claim shows `FileSystemResizePending` meanwhile). Without those programs, or where FUSE is not open to
//! users, a claim's volume is a plain directory, the way a local-path provisioner keeps it,
//! and the provisioner says so in a Warning Event.
//!
//! The image's blocks are allocated on the host when it is made or grown (`fallocate`), as a
//! cloud disk's are when it is provisioned: a volume whose host disk fills up would otherwise
//! fail its writes with the host's error, which fuse2fs passes up unchanged as a positive
//! number and libfuse then turns into ERANGE (PostgreSQL's `could not write block ...:
//! Numerical result out of range`), and a loop device as I/O errors. A host without room for
//! the claim's size refuses the claim instead (a ProvisioningFailed Event), before any data is
//! written to it. A growth the host has no room for is refused the same way before the volume
//! changes at all: the volume stays mounted at the size it has, and the provisioner reports the
//! refusal on the claim as the external-resizer does (see [`super::pvc`]).
//!
//! The image outlives the runtime, so a claim keeps its data across restarts; it goes with
//! the claim.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The filesystem block size, to which an image's size is rounded up.
const BLOCK: u64 = 4096;

/// The percentage of a volume's blocks that mkfs reserves (see `ClaimVolume::format`).
const RESERVED_PERCENT: &str = "1";

/// One volume change at a time in this process: the provisioner and starting pods both
/// provide volumes, and the runtime unmounts them as it stops; a change that a cancelled task
/// left running ends before the next one starts.
static CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn changing() -> std::sync::MutexGuard<'static, ()> {
    CHANGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How this runtime gives claims their size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    /// A loop-mounted image (the runtime runs as root).
    Loop,
    /// An image mounted with fuse2fs.
    Fuse,
    /// Plain directories; the reason sizes cannot be enforced.
    Directory(String),
}

impl Backing {
    /// What this machine allows the runtime.
    pub fn detect(as_root: bool) -> Self {
        let mounting: &[&str] = if as_root {
            &["mount", "umount", "losetup"]
        } else {
            &["fuse2fs", "fusermount"]
        };
        let missing: Vec<&str> = ["mkfs.ext4", "e2fsck", "resize2fs"]
            .iter()
            .chain(mounting)
            .copied()
            .filter(|program| program_path(program).is_none())
            .collect();
        if !missing.is_empty() {
            return Self::Directory(format!(
                "{} not found (Debian packages e2fsprogs{})",
                missing.join(", "),
                if as_root { "" } else { ", fuse2fs and fuse" }
            ));
        }
        if as_root {
            return Self::Loop;
        }
        // libfuse opens /dev/fuse itself before it asks fusermount to mount.
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            Ok(_) => Self::Fuse,
            Err(error) => Self::Directory(format!("cannot open /dev/fuse: {error}")),
        }
    }
}

/// What became of a claim's volume.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Provided {
    /// Mounted, with this many bytes.
    Sized(u64),
    /// Mounted at this many bytes; it grows to the claim's size once no pod has it mounted.
    ResizePending(u64),
    /// A plain directory, for this reason.
    Unsized(String),
    /// Mounted at the size it had, short of the claim's, which the host could not allocate.
    GrowthRefused(GrowthRefusal),
}

/// Why the host could not carry out a volume's growth.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GrowthRefusal {
    /// The host lacks the room (or the file size) for it: retrying helps only once it has more.
    pub no_room: bool,
    /// What the host said.
    pub message: String,
}

/// A volume could not be provided (the message of a ProvisioningFailed Event).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct VolumeError(String);

/// The claims directory's volume for the claim `uid`.
pub(crate) struct ClaimVolume<'a> {
    pub backing: &'a Backing,
    pub claims_dir: &'a Path,
    pub uid: &'a str,
}

impl ClaimVolume<'_> {
    fn mount_point(&self) -> PathBuf {
        self.claims_dir.join(self.uid)
    }

    fn image(&self) -> PathBuf {
        self.claims_dir.join(format!("{}.img", self.uid))
    }

    /// Makes the volume exist, mounted, with at least `bytes` (rounded up to whole blocks):
    /// formats it the first time, mounts it after a restart, grows it when the claim grew.
    pub fn provide(&self, bytes: u64) -> Result<Provided, VolumeError> {
        let _changing = changing();
        let bytes = bytes.div_ceil(BLOCK).max(1) * BLOCK;
        if let Backing::Directory(reason) = self.backing {
            create_dir(&self.mount_point())?;
            return Ok(Provided::Unsized(reason.clone()));
        }
        let image = self.image();
        create_dir(&self.mount_point())?;
        if !image.exists() {
            self.format(bytes)?;
        }
        let size = filesystem_bytes(&image)?;
        let mounted = self.is_mounted();
        if size < bytes {
            // The host's blocks first: a growth the host cannot hold leaves the volume as it
            // is, mounted, and the pod using it keeps running.
            if let Err(refusal) = reserve_growth(&image, bytes) {
                if !self.is_mounted() {
                    self.mount()?;
                }
                return Ok(Provided::GrowthRefused(refusal));
            }
            let grown_online = match (self.backing, mounted) {
                (Backing::Loop, true) => match self.grow_online() {
                    Ok(()) => true,
                    Err(error) => {
                        // resize2fs needs CAP_SYS_RESOURCE, which a container may lack.
                        tracing::info!(%error, claim_uid = self.uid, "cannot grow a mounted volume; growing it unmounted");
                        false
                    }
                },
                _ => false,
            };
            if !grown_online {
                // Only an unmounted image grows offline; a pod may still be writing.
                if !self.unmount() {
                    return Ok(Provided::ResizePending(size));
                }
                self.grow_offline(bytes)?;
            }
        }
        if !self.is_mounted() {
            self.mount()?;
        }
        Ok(Provided::Sized(filesystem_bytes(&self.image())?))
    }

    /// Unmounts the volume and removes it, data and all.
    pub fn remove(&self) {
        let _changing = changing();
        if !self.unmount() {
            self.unmount_lazily();
        }
        let _ = std::fs::remove_file(self.image());
        let _ = std::fs::remove_dir_all(self.mount_point());
    }

    /// Whether the image is mounted on the claim's directory (a different device than the
    /// claims directory's). A FUSE mount whose daemon died counts as mounted, to be unmounted.
    fn is_mounted(&self) -> bool {
        match (
            std::fs::metadata(self.mount_point()),
            std::fs::metadata(self.claims_dir),
        ) {
            (Ok(point), Ok(parent)) => point.dev() != parent.dev(),
            (Err(error), _) => error.raw_os_error() == Some(nix::libc::ENOTCONN),
            _ => false,
        }
    }

    fn format(&self, bytes: u64) -> Result<(), VolumeError> {
        let image = self.image();
        let staging = self.claims_dir.join(format!("{}.img.new", self.uid));
        let file = std::fs::File::create(&staging).map_err(io_error(&staging))?;
        let allocated = allocate(&file, &staging, bytes);
        drop(file);
        if let Err(errno) = allocated {
            let _ = std::fs::remove_file(&staging);
            return Err(VolumeError(format!(
                "{}: cannot allocate the claim's {bytes} bytes on the host: {errno}",
                staging.display()
            )));
        }
        // 1% of the blocks reserved, as few as mkfs allows in whole percent: fuse2fs keeps
        // 10% back from everyone when none are (libext2fs must never run out of blocks), and
        // with 1% both mounts leave the pods the same room. No journal, which fuse2fs cannot
        // write: the same image mounts either way. The root directory belongs to the
        // runtime's user, who hands it on.
        let formatted = run(Command::new(program("mkfs.ext4"))
            .args([
                "-q",
                "-F",
                "-m",
                RESERVED_PERCENT,
                "-O",
                "^has_journal",
                "-E",
                "root_owner",
            ])
            .arg(&staging));
        if let Err(error) = formatted {
            let _ = std::fs::remove_file(&staging);
            return Err(error);
        }
        // Renamed only once formatted, so that a half-made image is never taken for one.
        std::fs::rename(&staging, &image).map_err(io_error(&image))
    }

    fn mount(&self) -> Result<(), VolumeError> {
        // What a killed FUSE daemon left behind goes first.
        if self.is_mounted() {
            self.unmount();
        }
        let (image, point) = (self.image(), self.mount_point());
        match self.backing {
            Backing::Loop => run(Command::new(program("mount"))
                .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
                .arg(&image)
                .arg(&point)),
            Backing::Fuse => run(Command::new(program("fuse2fs"))
                .arg(&image)
                .arg(&point)
                .args(["-o", "nosuid,nodev"])),
            Backing::Directory(_) => Ok(()),
        }
    }

    /// Unmounts the volume; whether it is unmounted now (not while a pod still uses it).
    fn unmount(&self) -> bool {
        let point = self.mount_point();
        if !self.is_mounted() {
            return true;
        }
        let done = match self.backing {
            Backing::Loop => run(Command::new(program("umount")).arg(&point)),
            Backing::Fuse => run(Command::new(program("fusermount")).arg("-u").arg(&point)),
            Backing::Directory(_) => Ok(()),
        };
        done.is_ok() && !self.is_mounted()
    }

    /// Detaches the volume now and unmounts it once nothing uses it any more.
    fn unmount_lazily(&self) {
        let point = self.mount_point();
        let _ = match self.backing {
            Backing::Loop => run(Command::new(program("umount")).arg("-l").arg(&point)),
            Backing::Fuse => run(Command::new(program("fusermount"))
                .args(["-u", "-z"])
                .arg(&point)),
            Backing::Directory(_) => Ok(()),
        };
    }

    /// Grows a loop-mounted image whose file already has `bytes` ([`reserve_growth`]): the
    /// loop device, then the filesystem.
    fn grow_online(&self) -> Result<(), VolumeError> {
        let image = self.image();
        let device = loop_device(&image)?;
        run(Command::new(program("losetup")).arg("-c").arg(&device))?;
        run(Command::new(program("resize2fs")).arg(&device))
    }

    /// Grows an unmounted image whose file already has `bytes` ([`reserve_growth`]) (resize2fs
    /// wants it checked first; e2fsck's exit status 1 says it corrected something, which is
    /// fine).
    fn grow_offline(&self, bytes: u64) -> Result<(), VolumeError> {
        let image = self.image();
        let checked = Command::new(program("e2fsck"))
            .arg("-fp")
            .arg(&image)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|error| VolumeError(format!("cannot run e2fsck: {error}")))?;
        if !matches!(checked.status.code(), Some(0 | 1)) {
            return Err(VolumeError(format!(
                "e2fsck failed ({}): {}",
                checked.status,
                String::from_utf8_lossy(&checked.stdout).trim()
            )));
        }
        run(Command::new(program("resize2fs"))
            .arg(&image)
            .arg(format!("{}K", bytes / 1024)))
    }
}

/// Unmounts every claim's volume in `claims_dir`, once the runtime's pods are stopped, so
/// that no mount outlives the runtime (the images stay, and are mounted again at the next
/// start).
pub(crate) fn unmount_all(backing: &Backing, claims_dir: &Path) {
    let _changing = changing();
    let Ok(entries) = std::fs::read_dir(claims_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(uid) = Path::new(&name)
            .file_stem()
            .filter(|_| Path::new(&name).extension() == Some(OsStr::new("img")))
            .and_then(OsStr::to_str)
        else {
            continue;
        };
        let volume = ClaimVolume {
            backing,
            claims_dir,
            uid,
        };
        if !volume.unmount() {
            tracing::warn!(
                claim_uid = uid,
                "a claim's volume is still in use; it is unmounted once no process uses it"
            );
            volume.unmount_lazily();
        }
    }
}

/// Makes the image at least `bytes` long, its blocks allocated on the host, before a volume
/// grows into them. A host that cannot allocate them refuses the growth and the image keeps
/// its length (ext4 keeps the blocks it allocated before it ran out, so they are given back).
fn reserve_growth(image: &Path, bytes: u64) -> Result<(), GrowthRefusal> {
    let unreadable = |error: std::io::Error| GrowthRefusal {
        no_room: false,
        message: format!("cannot open the volume's image: {error}"),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(unreadable)?;
    let before = file.metadata().map_err(unreadable)?.len();
    if before >= bytes {
        return Ok(());
    }
    allocate(&file, image, bytes).map_err(|errno| {
        let _ = file.set_len(before);
        GrowthRefusal {
            no_room: matches!(
                errno,
                nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT | nix::errno::Errno::EFBIG
            ),
            message: format!(
                "the host cannot allocate the {bytes} bytes the volume would take: {errno}"
            ),
        }
    })
}

/// Makes `file` (at `path`) `bytes` long with every block allocated on the host, so that
/// writes to the volume never find the host's disk full; the host's error when it cannot. A
/// host filesystem that cannot allocate ahead (`EOPNOTSUPP`) gets a sparse file, as before.
fn allocate(file: &std::fs::File, path: &Path, bytes: u64) -> Result<(), nix::errno::Errno> {
    let length = i64::try_from(bytes).map_err(|_| nix::errno::Errno::EFBIG)?;
    match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, length) {
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            tracing::warn!(
                image = %path.display(),
                "the host's filesystem cannot allocate a volume's blocks ahead; the volume is sparse"
            );
            file.set_len(bytes).map_err(|error| {
                nix::errno::Errno::from_raw(error.raw_os_error().unwrap_or(nix::libc::EIO))
            })
        }
        allocated => allocated,
    }
}

/// The size of the ext4 filesystem in an image, from its superblock (1024 bytes in): the
/// block count (the high half only with the 64bit feature) times the block size.
fn filesystem_bytes(image: &Path) -> Result<u64, VolumeError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut superblock = [0u8; 1024];
    std::fs::File::open(image)
        .and_then(|mut file| {
            file.seek(SeekFrom::Start(1024))?;
            file.read_exact(&mut superblock)
        })
        .map_err(io_error(image))?;
    let word = |offset: usize| {
        u32::from_le_bytes([
            superblock[offset],
            superblock[offset + 1],
            superblock[offset + 2],
            superblock[offset + 3],
        ])
    };
    const INCOMPAT_64BIT: u32 = 0x80;
    let high = if word(0x60) & INCOMPAT_64BIT != 0 {
        u64::from(word(0x150))
    } else {
        0
    };
    let blocks = (high << 32) | u64::from(word(0x4));
    let block_size = 1024u64.checked_shl(word(0x18)).unwrap_or(0);
    Ok(blocks.saturating_mul(block_size))
}

/// The loop device an image is attached to, from `losetup -j`.
fn loop_device(image: &Path) -> Result<String, VolumeError> {
    let output = Command::new(program("losetup"))
        .arg("-j")
        .arg(image)
        .output()
        .map_err(|error| VolumeError(format!("cannot run losetup: {error}")))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.split_once(':').map(|(device, _)| device.to_string()))
        .ok_or_else(|| VolumeError(format!("no loop device is attached to {}", image.display())))
}

fn create_dir(dir: &Path) -> Result<(), VolumeError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // A dead FUSE mount: there, to be mounted again.
        Err(error) if error.raw_os_error() == Some(nix::libc::ENOTCONN) => Ok(()),
        Err(error) => Err(io_error(dir)(error)),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |error| VolumeError(format!("{}: {error}", path.display()))
}

/// Runs a program to its end; its error output is the message when it fails.
fn run(command: &mut Command) -> Result<(), VolumeError> {
    let name = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| VolumeError(format!("cannot run {name}: {error}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(VolumeError(format!(
        "{name} failed ({}): {}",
        output.status,
        stderr.trim()
    )))
}

/// Where a program is: on PATH or in the system directories a user's PATH may lack
/// (mkfs.ext4 and resize2fs are in /usr/sbin).
fn program_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn program(name: &str) -> PathBuf {
    program_path(name).unwrap_or_else(|| PathBuf::from(name))
}
