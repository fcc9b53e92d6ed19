//! Leaving the initramfs: the kernel's rootfs cannot be `pivot_root`ed away, and container
//! runtimes need `pivot_root`. So the init copies itself and the image into a tmpfs, moves
//! that over `/`, and re-executes `/init` there (like busybox `switch_root`).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::MsFlags;

use crate::error::{InitError, Result};

const NEW_ROOT: &str = "/newroot";

fn step(step: &str) -> impl FnOnce(io::Error) -> InitError + '_ {
    move |source| InitError::SwitchRoot { step: step.to_string(), source }
}

/// The filesystem type of the mount at `/`, from a mountinfo text.
pub fn root_fstype(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (pre.split_whitespace().nth(4)? == "/").then(|| post.split_whitespace().next())?
    })
}

/// True when `/` is the kernel's initramfs rootfs (and the switch is still to be done).
pub fn on_initramfs() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").ok().as_deref().and_then(root_fstype) == Some("rootfs")
}

/// Copies the rootfs into a tmpfs, switches to it and re-executes `/init`. Returns only on
/// failure. Expects /proc mounted and nothing else.
pub fn switch_to_tmpfs() -> Result<()> {
    std::fs::create_dir_all(NEW_ROOT).map_err(step("creating /newroot"))?;
    nix::mount::mount(Some("plinth-root"), NEW_ROOT, Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))
        .map_err(|e| step("mounting tmpfs on /newroot")(e.into()))?;
    for entry in std::fs::read_dir("/").map_err(step("listing /"))? {
        let entry = entry.map_err(step("listing /"))?;
        let name = entry.file_name();
        if name == "newroot" || name == "proc" {
            continue;
        }
        copy_tree(&entry.path(), &Path::new(NEW_ROOT).join(&name)).map_err(step("copying the initramfs"))?;
    }
    std::fs::create_dir_all(Path::new(NEW_ROOT).join("proc")).map_err(step("creating /proc"))?;
    nix::mount::umount2("/proc", nix::mount::MntFlags::MNT_DETACH).map_err(|e| step("unmounting /proc")(e.into()))?;
    // Free the initramfs copy's memory; the tmpfs copy is what runs from now on.
    for entry in std::fs::read_dir("/").map_err(step("listing /"))?.flatten() {
        if entry.file_name() != "newroot" {
            let p = entry.path();
            let _ = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    std::env::set_current_dir(NEW_ROOT).map_err(step("entering /newroot"))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| step("moving /newroot to /")(e.into()))?;
    nix::unistd::chroot(".").map_err(|e| step("chroot")(e.into()))?;
    std::env::set_current_dir("/").map_err(step("entering /"))?;
    let args: Vec<std::ffi::CString> = std::env::args_os()
        .map(|a| std::ffi::CString::new(a.into_encoded_bytes()).expect("argv has no NUL bytes"))
        .collect();
    let init = std::ffi::CString::new("/init").expect("literal has no NUL");
    let err = nix::unistd::execv(&init, &args).expect_err("execv returns only on error");
    Err(step("re-executing /init")(err.into()))
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        std::fs::create_dir(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        std::fs::copy(src, dst)?;
    } else if ft.is_char_device() || ft.is_block_device() {
        let kind = if ft.is_char_device() { nix::sys::stat::SFlag::S_IFCHR } else { nix::sys::stat::SFlag::S_IFBLK };
        nix::sys::stat::mknod(dst, kind, nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777), meta.rdev())?;
    }
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_root_filesystem_type() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k\n22 1 0:20 / /proc rw,nosuid - proc proc rw\n";
        assert_eq!(root_fstype(initramfs), Some("rootfs"));
        let switched = "30 29 0:25 / / rw,relatime - tmpfs plinth-root rw\n";
        assert_eq!(root_fstype(switched), Some("tmpfs"));
        assert_eq!(root_fstype(""), None);
    }

    #[test]
    fn copy_tree_keeps_files_links_and_modes() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(src.path().join("etc")).expect("mkdir");
        std::fs::write(src.path().join("etc/hostname"), "x\n").expect("write");
        std::fs::set_permissions(src.path().join("etc/hostname"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        std::os::unix::fs::symlink("etc/hostname", src.path().join("link")).expect("symlink");
        let out = dst.path().join("root");
        copy_tree(src.path(), &out).expect("copy");
        assert_eq!(std::fs::read_to_string(out.join("link")).expect("follow link"), "x\n");
        let mode = std::fs::metadata(out.join("etc/hostname")).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
