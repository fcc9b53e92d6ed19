//! A task's root filesystem: an overlayfs of the image's unpacked layers (read-only
//! lower dirs, shared by every task) with a per-task upper and work dir, so the store is
//! never written by a container.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tracing::{debug, info};

use super::{ImageError, ImageStore, PulledImage};

/// The mount options must fit one page.
const MAX_MOUNT_DATA: usize = 4000;

pub fn rootfs_dir(task_dir: &Path) -> PathBuf {
    task_dir.join("rootfs")
}

impl ImageStore {
    /// Mounts `image` as an overlayfs at `task_dir/rootfs` (upper and work dirs made in
    /// `task_dir`) and pins the image for `task_id`. Returns the merged directory.
    pub fn mount_rootfs(&self, image: &PulledImage, task_dir: &Path, task_id: &str) -> Result<PathBuf, ImageError> {
        self.pin(task_id, image)?;
        let upper = task_dir.join("upper");
        let work = task_dir.join("work");
        let rootfs = rootfs_dir(task_dir);
        for dir in [&upper, &work, &rootfs] {
            fs::create_dir_all(dir).map_err(|source| ImageError::Io { path: dir.clone(), source })?;
        }
        if let Some(remap) = self.options.id_remap {
            // The merged root directory is the upper dir itself: the container's root
            // (host id START) must own it to write there.
            std::os::unix::fs::chown(&upper, Some(remap.start), Some(remap.start))
                .map_err(|source| ImageError::Io { path: upper.clone(), source })?;
        }
        if image.layers.is_empty() {
            return Err(ImageError::Mount { target: rootfs, reason: "the image has no layers".into(), source: None });
        }
        let mut lower: Vec<PathBuf> = image.layers.iter().rev().cloned().collect();
        let data = |lower: &[PathBuf]| {
            let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
            format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display())
        };
        let mut options = data(&lower);
        if options.len() > MAX_MOUNT_DATA {
            // Short names for the layers (`images/l/<12 hex>` symlinks), as Docker's overlay2 does.
            lower = image.layers.iter().rev().map(|layer| self.short_link(layer)).collect::<Result<_, _>>()?;
            options = data(&lower);
            if options.len() > MAX_MOUNT_DATA {
                return Err(ImageError::Mount {
                    target: rootfs,
                    reason: format!("{} layers do not fit in the overlay mount options", image.layers.len()),
                    source: None,
                });
            }
        }
        for path in lower.iter().chain([&upper, &work]) {
            let s = path.to_string_lossy();
            if s.contains(',') || s.contains(':') {
                return Err(ImageError::Mount {
                    target: rootfs,
                    reason: format!("{s} contains ',' or ':', which overlay options cannot carry"),
                    source: None,
                });
            }
        }
        mount(Some("overlay"), &rootfs, Some("overlay"), MsFlags::empty(), Some(options.as_str())).map_err(
            |errno| ImageError::Mount {
                target: rootfs.clone(),
                reason: "overlay mount failed".into(),
                source: Some(io::Error::from(errno)),
            },
        )?;
        info!(task_id, rootfs = %rootfs.display(), layers = image.layers.len(), "rootfs mounted");
        Ok(rootfs)
    }

    fn short_link(&self, layer: &Path) -> Result<PathBuf, ImageError> {
        let dir = self.short_links_dir();
        fs::create_dir_all(&dir).map_err(|source| ImageError::Io { path: dir.clone(), source })?;
        let hex = layer.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let link = dir.join(&hex[..hex.len().min(12)]);
        let layers = self.layers_dir();
        let layers_name = layers.file_name().unwrap_or_default();
        let target = PathBuf::from("..").join(layers_name).join(&hex);
        match fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(link),
            Ok(_) => {
                return Err(ImageError::Mount {
                    target: link,
                    reason: "short layer name collision".into(),
                    source: None,
                })
            }
            Err(_) => {}
        }
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => Ok(link),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(link),
            Err(source) => Err(ImageError::Io { path: link, source }),
        }
    }
}

/// Lazily unmounts `task_dir/rootfs` and removes the task's upper and work dirs.
/// Idempotent: a task dir never mounted, or already cleaned, is fine (the agent calls this
/// after a crash without knowing how far a task got).
pub fn unmount_rootfs(task_dir: &Path) -> Result<(), ImageError> {
    let rootfs = rootfs_dir(task_dir);
    match umount2(&rootfs, MntFlags::MNT_DETACH) {
        Ok(()) => debug!(rootfs = %rootfs.display(), "rootfs unmounted"),
        // EINVAL: not a mount point; ENOENT: never created.
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(errno) => {
            return Err(ImageError::Mount {
                target: rootfs,
                reason: "unmount failed".into(),
                source: Some(io::Error::from(errno)),
            })
        }
    }
    for dir in [task_dir.join("upper"), task_dir.join("work")] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(ImageError::Io { path: dir, source }),
        }
    }
    // Only ever `remove_dir`: were it somehow still mounted, this cannot touch the layers.
    match fs::remove_dir(&rootfs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImageError::Io { path: rootfs, source }),
    }
}
