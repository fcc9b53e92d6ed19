//! The side effects the boot executor needs, behind a narrow trait so the executor can be
//! tested with a recording fake. The real implementation is thin nix/libc calls.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::error::{InitError, Result};
use crate::plan::MountFlags;

pub trait System {
    fn mount(&mut self, source: &str, target: &str, fstype: &str, flags: MountFlags, data: Option<&str>) -> Result<()>;
    fn mkdir_all(&mut self, path: &Path) -> Result<()>;
    fn read_file(&mut self, path: &Path) -> Result<Vec<u8>>;
    fn write_file(&mut self, path: &Path, data: &[u8]) -> Result<()>;
    /// Loads one module file; a module that is already loaded counts as success.
    fn load_module(&mut self, path: &Path) -> Result<()>;
    /// Loads modules that do not depend on each other; results in the order of `paths`.
    fn load_modules_together(&mut self, paths: &[PathBuf]) -> Vec<Result<()>> {
        paths.iter().map(|p| self.load_module(p)).collect()
    }
    fn set_hostname(&mut self, name: &str) -> Result<()>;
    /// Names of the entries of a directory, sorted; empty when it does not exist.
    fn list_dir(&mut self, path: &Path) -> Vec<String>;
}

/// The machine itself.
#[derive(Debug, Default)]
pub struct RealSystem;

impl System for RealSystem {
    fn mount(&mut self, source: &str, target: &str, fstype: &str, flags: MountFlags, data: Option<&str>) -> Result<()> {
        self.mkdir_all(Path::new(target))?;
        let mut ms = MsFlags::empty();
        ms.set(MsFlags::MS_NOSUID, flags.nosuid);
        ms.set(MsFlags::MS_NODEV, flags.nodev);
        ms.set(MsFlags::MS_NOEXEC, flags.noexec);
        nix::mount::mount(Some(source), target, Some(fstype), ms, data).map_err(|e| InitError::Mount {
            target: target.to_string(),
            fstype: fstype.to_string(),
            source: e.into(),
        })
    }

    fn mkdir_all(&mut self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(|source| InitError::Mkdir { path: path.to_path_buf(), source })
    }

    fn read_file(&mut self, path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|source| InitError::Read { path: path.to_path_buf(), source })
    }

    fn write_file(&mut self, path: &Path, data: &[u8]) -> Result<()> {
        std::fs::write(path, data).map_err(|source| InitError::Write { path: path.to_path_buf(), source })
    }

    fn load_module(&mut self, path: &Path) -> Result<()> {
        let err = |source| InitError::LoadModule { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(err)?;
        let params = CString::default();
        // SAFETY: finit_module reads the open fd and a NUL-terminated params string that both
        // outlive the call; flags 0 asks for no special behaviour.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        Err(err(e))
    }

    /// One thread per CPU: module signature checks and relocation dominate boot time
    /// under emulation, and they run in parallel in the kernel.
    fn load_modules_together(&mut self, paths: &[PathBuf]) -> Vec<Result<()>> {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(paths.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<Result<()>>>> =
            paths.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let r = RealSystem.load_module(path);
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                });
            }
        });
        results
            .into_iter()
            .map(|m| {
                m.into_inner().unwrap_or_else(|p| p.into_inner()).expect("every index is taken by exactly one worker")
            })
            .collect()
    }

    fn set_hostname(&mut self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).map_err(|e| InitError::Hostname { name: name.to_string(), source: e.into() })
    }

    fn list_dir(&mut self, path: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Reads the 16-byte volume label of an ext2/3/4 filesystem from its superblock.
pub fn ext4_label(device: &Path) -> io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(device)?;
    let mut sb = [0u8; 256];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    if sb[0x38] != 0x53 || sb[0x39] != 0xEF {
        return Ok(None);
    }
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(Some(String::from_utf8_lossy(&name[..end]).into_owned()))
}

/// Block devices (whole disks and partitions) known to sysfs, as /dev paths.
pub fn block_devices() -> Vec<PathBuf> {
    let mut devs: Vec<PathBuf> = std::fs::read_dir("/sys/class/block")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| Path::new("/dev").join(e.file_name())).collect())
        .unwrap_or_default();
    devs.sort();
    devs
}
