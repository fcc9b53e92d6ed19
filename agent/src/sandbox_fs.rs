//! Files in a task's sandbox, reached only beneath the sandbox's directory fd. A task
//! can replace anything it may write in its sandbox with a symlink (to a root-only file,
//! or another task's `task.json`), a FIFO or a device; the agent and the executor, who
//! are root, must never be tricked into reading, truncating or writing through it. So
//! every name is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` below a
//! [`SandboxDir`] opened once (the directory itself is the agent's, under its work dir),
//! files are checked to be regular before they are read, and renames stay inside the
//! directory fd. Callers: the executor (logs, rotation, its records), the agent (its
//! records, the log API) and `fsutil`'s state files.
use nix::errno::Errno;
use nix::fcntl::{openat2, renameat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A directory opened once; every file in it is opened relative to that fd.
#[derive(Debug)]
pub struct SandboxDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The directory itself (to hand it to the task's user, say).
impl AsFd for SandboxDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn io_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

fn not_regular(name: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", name.display()))
}

/// Symlinks (and magic links) anywhere in the name, absolute names and `..` out of the
/// directory all fail (ELOOP, EXDEV).
fn beneath(flags: OFlag, mode: Mode) -> OpenHow {
    // openat2 refuses flags that mean nothing for the open (O_NOCTTY with O_PATH).
    let no_tty = if flags.contains(OFlag::O_PATH) { OFlag::empty() } else { OFlag::O_NOCTTY };
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | no_tty)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Whether an error says "this name is a symlink, or leads out of the directory".
pub fn is_refused_link(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == libc::ELOOP || code == libc::EXDEV)
}

impl SandboxDir {
    /// Opens the directory `path`. The path itself is the agent's (its work dir, or a
    /// sandbox in it, which no task can replace): it resolves as usual, symlinks an
    /// operator put there included.
    pub fn open(path: &Path) -> io::Result<SandboxDir> {
        let dir =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)?;
        Ok(SandboxDir { fd: dir.into(), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_how(&self, name: &Path, how: OpenHow) -> io::Result<File> {
        openat2(self.fd.as_fd(), name, how).map(File::from).map_err(io_error)
    }

    /// A regular file, opened for reading. The name is first opened as a bare
    /// reference (`O_PATH`: no open side effects, a FIFO cannot block us), checked, and
    /// only then reopened through that very reference, so nothing can be swapped in
    /// between.
    pub fn open_regular(&self, name: &Path) -> io::Result<File> {
        let reference = self.open_how(name, beneath(OFlag::O_PATH, Mode::empty()))?;
        let kind = SFlag::from_bits_truncate(fstat(&reference).map_err(io_error)?.st_mode) & SFlag::S_IFMT;
        // With O_PATH a symlink in the last place is opened itself rather than refused.
        if kind == SFlag::S_IFLNK {
            return Err(io_error(Errno::ELOOP));
        }
        if kind != SFlag::S_IFREG {
            return Err(not_regular(name));
        }
        reopen(&reference, false)
    }

    /// Reads a whole regular file that this very process's user wrote (the agent's and
    /// the executor's records): a file the task planted under that name is refused.
    pub fn read_own(&self, name: &Path) -> io::Result<Vec<u8>> {
        let mut file = self.open_regular(name)?;
        let owner = std::os::unix::fs::MetadataExt::uid(&file.metadata()?);
        if owner != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} was not written by this agent (it belongs to uid {owner})", name.display()),
            ));
        }
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok(bytes)
    }

    /// Opens a log for appending, creating it (`mode`) when missing; anything but a
    /// regular file is refused. `O_NONBLOCK` while opening: a FIFO without reader fails
    /// instead of hanging the executor.
    pub fn open_append(&self, name: &Path, mode: u32) -> io::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NONBLOCK;
        let file = self.open_how(name, beneath(flags, Mode::from_bits_truncate(mode)))?;
        if !file.metadata()?.is_file() {
            return Err(not_regular(name));
        }
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(io_error)?;
        let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(blocking)).map_err(io_error)?;
        Ok(file)
    }

    /// Creates `name` afresh (whatever was there before, a planted symlink included, is
    /// removed first, never followed) and opens it for writing.
    pub fn create_new(&self, name: &Path, mode: u32) -> io::Result<File> {
        self.remove(name)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        self.open_how(name, beneath(flags, Mode::from_bits_truncate(mode)))
    }

    /// Removes a file (a symlink itself, not its target); a missing one is fine.
    pub fn remove(&self, name: &Path) -> io::Result<()> {
        single_component(name)?;
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(io_error(errno)),
        }
    }

    /// Renames within the directory (a symlink is moved, never followed).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        single_component(from)?;
        single_component(to)?;
        renameat(self.fd.as_fd(), from, self.fd.as_fd(), to).map_err(io_error)
    }

    /// Writes `name` so that readers see the old or the new content, never a torn file:
    /// a fresh temporary file (mode `mode`, whatever the umask), synced, renamed over
    /// `name`, and the directory synced so the rename survives a power cut.
    pub fn write_atomic(&self, name: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        let tmp = temporary_name(name);
        let write = || -> io::Result<()> {
            let mut file = self.create_new(&tmp, mode)?;
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            file.write_all(bytes)?;
            file.sync_all()?;
            self.rename(&tmp, name)
        };
        let result = write();
        if result.is_err() {
            let _ = self.remove(&tmp);
        }
        result?;
        let _ = nix::unistd::fsync(&self.fd);
        Ok(())
    }
}

/// Opens the very file `file` refers to once more, for reading (and writing), through
/// its descriptor rather than any name.
pub fn reopen(file: &impl AsRawFd, write: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// `unlinkat` and `renameat` follow symlinks in all but the last component and know no
/// `RESOLVE_BENEATH`: they only ever get a plain name in the directory itself.
fn single_component(name: &Path) -> io::Result<()> {
    let mut components = name.components();
    match (components.next(), components.next()) {
        (Some(std::path::Component::Normal(_)), None) => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a plain file name in the directory", name.display()),
        )),
    }
}

/// `name.tmp`: the temporary sibling [`SandboxDir::write_atomic`] renames from.
pub fn temporary_name(name: &Path) -> PathBuf {
    let mut tmp = name.as_os_str().to_os_string();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn dir_with(secret: &[u8]) -> (tempfile::TempDir, PathBuf, SandboxDir) {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("secret");
        fs::write(&outside, secret).unwrap();
        fs::create_dir(dir.path().join("sandbox")).unwrap();
        let sandbox = SandboxDir::open(&dir.path().join("sandbox")).unwrap();
        (dir, outside, sandbox)
    }

    #[test]
    fn regular_files_are_read_and_links_fifos_and_escapes_are_refused() {
        let (dir, outside, sandbox) = dir_with(b"root only");
        let root = dir.path().join("sandbox");
        fs::write(root.join("stdout"), b"hello").unwrap();
        let mut text = String::new();
        sandbox.open_regular(Path::new("stdout")).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");

        symlink(&outside, root.join("stderr")).unwrap();
        let err = sandbox.open_regular(Path::new("stderr")).unwrap_err();
        assert!(is_refused_link(&err), "a symlink is refused: {err}");
        fs::create_dir(root.join("sub")).unwrap();
        symlink("..", root.join("sub/up")).unwrap();
        assert!(is_refused_link(&sandbox.open_regular(Path::new("sub/up/stdout")).unwrap_err()));
        assert!(is_refused_link(&sandbox.open_regular(Path::new("../secret")).unwrap_err()));
        assert!(is_refused_link(&sandbox.open_regular(&outside).unwrap_err()), "absolute names are refused");

        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let err = sandbox.open_regular(Path::new("fifo")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "a FIFO is refused without blocking: {err}");
        let err = sandbox.open_append(Path::new("fifo"), 0o644).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "no reader: fails instead of hanging: {err}");
        assert!(sandbox.open_regular(Path::new("sub")).is_err(), "a directory is not a file");
        assert_eq!(fs::read(&outside).unwrap(), b"root only");
    }

    #[test]
    fn appending_creates_and_never_follows_a_link() {
        let (dir, outside, sandbox) = dir_with(b"keep");
        let root = dir.path().join("sandbox");
        let mut log = sandbox.open_append(Path::new("stdout"), 0o640).unwrap();
        log.write_all(b"line\n").unwrap();
        assert_eq!(fs::read(root.join("stdout")).unwrap(), b"line\n");
        symlink(&outside, root.join("stderr")).unwrap();
        assert!(is_refused_link(&sandbox.open_append(Path::new("stderr"), 0o640).unwrap_err()));
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn atomic_writes_replace_a_planted_link_instead_of_writing_through_it() {
        let (dir, outside, sandbox) = dir_with(b"precious");
        let root = dir.path().join("sandbox");
        // The task plants the temporary name and the final name as links to the secret.
        symlink(&outside, root.join("exit.json.tmp")).unwrap();
        symlink(&outside, root.join("exit.json")).unwrap();
        sandbox.write_atomic(Path::new("exit.json"), b"{}", 0o600).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"precious", "the target is untouched");
        let written = fs::symlink_metadata(root.join("exit.json")).unwrap();
        assert!(written.is_file(), "the link itself was replaced");
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&written.permissions()) & 0o777, 0o600);
        assert_eq!(sandbox.read_own(Path::new("exit.json")).unwrap(), b"{}");
        assert!(!root.join("exit.json.tmp").exists());
    }

    #[test]
    fn records_written_by_someone_else_are_not_trusted() {
        let (dir, _, sandbox) = dir_with(b"");
        let root = dir.path().join("sandbox");
        fs::write(root.join("exit.json"), b"{}").unwrap();
        assert!(sandbox.read_own(Path::new("exit.json")).is_ok());
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(root.join("exit.json"), Some(65534), Some(65534)).unwrap();
            let err = sandbox.read_own(Path::new("exit.json")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        }
    }

    #[test]
    fn renames_move_links_and_stay_inside() {
        let (dir, outside, sandbox) = dir_with(b"same");
        let root = dir.path().join("sandbox");
        symlink(&outside, root.join("stdout.1")).unwrap();
        sandbox.rename(Path::new("stdout.1"), Path::new("stdout.2")).unwrap();
        assert!(fs::symlink_metadata(root.join("stdout.2")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&outside).unwrap(), b"same");
        assert!(sandbox.rename(Path::new("stdout.2"), Path::new("../moved")).is_err());
        assert!(sandbox.remove(Path::new("../secret")).is_err());
        assert!(!dir.path().join("moved").exists());
        sandbox.remove(Path::new("stdout.2")).unwrap();
        sandbox.remove(Path::new("never-there")).unwrap();
        assert!(outside.exists(), "removing a link leaves its target");
    }
}
