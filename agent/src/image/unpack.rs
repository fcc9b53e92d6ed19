//! Unpacking one layer tar into a fresh directory, safely. Layers come from anyone who can
//! push an image, so every entry is checked before anything is written:
//!
//! - names are relative: a leading `/` is stripped (as Docker does), `..` is refused;
//! - every parent of an entry must be a real directory inside the layer (checked with
//!   `lstat` per component, so nothing is ever written through a symlink);
//! - symlink targets may be absolute (they resolve inside the container) but a relative
//!   target must not climb above the layer root, resolved lexically from the link's dir;
//! - hard links point at an already extracted non-directory of the same layer;
//! - device nodes are refused, except the `0/0` character device overlayfs uses as a
//!   whiteout;
//! - the decompressed stream is capped (decompression bombs) and so is the entry count.
//!
//! OCI whiteouts become overlayfs ones: `.wh.NAME` a `0/0` character device `NAME`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.
//!
//! The target directory is private to the caller (a temp dir under the layer lock), so
//! the checks cannot race with another writer.
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use plinth_protocol::error_chain;
use sha2::{Digest as _, Sha256};
use tracing::debug;

use super::ImageError;
use crate::userns::IdRemap;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Limits a layer must stay within.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Decompressed tar bytes.
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the decompressed tar stream (to compare with the config's diff_id).
    pub diff_id: String,
    pub entries: u64,
    pub bytes: u64,
}

/// `raw` (a tar entry name) as a path relative to the layer root: a leading `/` and `.`
/// parts are dropped, `..` is refused. `None` means the root itself.
pub fn entry_path(raw: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err("the path contains `..`".into()),
            Component::Prefix(_) => return Err("the path has a prefix".into()),
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// Whether a symlink at `link` (relative to the layer root) pointing at `target` stays
/// inside the root when resolved lexically from the link's directory. Absolute targets
/// resolve against the container's root, so they always stay inside.
pub fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    // Depth of the link's directory below the root.
    let mut depth = i64::try_from(link.parent().map(|p| p.components().count()).unwrap_or(0)).unwrap_or(i64::MAX);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A hard link's target as a path inside the layer: Docker writes them relative to the
/// root (a leading `/` is stripped like entry names); `..` is refused.
pub fn hardlink_target(raw: &Path) -> Result<PathBuf, String> {
    match entry_path(raw) {
        Ok(Some(path)) => Ok(path),
        Ok(None) => Err("a hard link to the layer root".into()),
        Err(e) => Err(format!("the hard link target {}: {e}", raw.display())),
    }
}

/// Counts and hashes the decompressed stream, failing once it passes the cap so a bomb
/// stops early instead of filling the disk.
struct Metered<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(io::Error::other(LimitExceeded));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitExceeded;
impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed size limit exceeded")
    }
}
impl std::error::Error for LimitExceeded {}

/// Unpacks the decompressed tar stream `tar` into `dest` (an existing, empty, private
/// directory). `layer` names the layer in errors.
pub fn unpack(tar: impl Read, dest: &Path, layer: &str, limits: UnpackLimits) -> Result<Unpacked, ImageError> {
    unpack_remapped(tar, dest, layer, limits, None)
}

/// [`unpack`], with every owner shifted into `remap`'s host ids (`--userns-remap`): an
/// owner past its COUNT is refused, and the directories the layer implies belong to
/// the shifted root.
pub fn unpack_remapped(
    tar: impl Read,
    dest: &Path,
    layer: &str,
    limits: UnpackLimits,
    remap: Option<IdRemap>,
) -> Result<Unpacked, ImageError> {
    let mut metered = Metered { inner: tar, hasher: Sha256::new(), bytes: 0, limit: limits.max_bytes };
    let result = unpack_entries(&mut metered, dest, layer, limits, remap);
    let bomb = |metered: &Metered<_>| ImageError::LayerTooLarge {
        layer: layer.to_string(),
        limit: limits.max_bytes,
        seen: metered.bytes,
    };
    let entries = match result {
        Ok(n) => n,
        Err(Failure::Io(e)) if is_limit(&e) => return Err(bomb(&metered)),
        Err(Failure::Io(source)) => return Err(ImageError::LayerRead { layer: layer.to_string(), source }),
        Err(Failure::Image(e)) => return Err(e),
    };
    // The tar reader stops at the end-of-archive blocks; the digest covers the whole stream.
    if let Err(e) = io::copy(&mut metered, &mut io::sink()) {
        if is_limit(&e) {
            return Err(bomb(&metered));
        }
        return Err(ImageError::LayerRead { layer: layer.to_string(), source: e });
    }
    Ok(Unpacked { diff_id: format!("sha256:{:x}", metered.hasher.finalize()), entries, bytes: metered.bytes })
}

fn is_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>())
}

enum Failure {
    Io(io::Error),
    Image(ImageError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}
impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Self {
        Failure::Image(e)
    }
}

fn unpack_entries(
    tar: &mut impl Read,
    dest: &Path,
    layer: &str,
    limits: UnpackLimits,
    remap: Option<IdRemap>,
) -> Result<u64, Failure> {
    let mut archive = tar::Archive::new(tar);
    let mut writer = Writer { root: dest, layer, dirs: Vec::new(), remap };
    let mut count = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        count += 1;
        if count > limits.max_entries {
            return Err(writer.hostile("(entry count)", format!("more than {} entries", limits.max_entries)).into());
        }
        writer.entry(&mut entry)?;
    }
    // Directory mtimes last: creating their children changed them.
    for (path, mtime) in writer.dirs.iter().rev() {
        set_mtime(path, *mtime).map_err(|source| writer.write_error(path, source))?;
    }
    Ok(count)
}

struct Writer<'a> {
    root: &'a Path,
    layer: &'a str,
    /// Directories and their mtimes, applied at the end.
    dirs: Vec<(PathBuf, u64)>,
    remap: Option<IdRemap>,
}

/// Ownership, mode, mtime and xattrs of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Writer<'_> {
    fn hostile(&self, entry: &str, reason: String) -> ImageError {
        ImageError::HostileLayer { layer: self.layer.to_string(), entry: entry.to_string(), reason }
    }

    fn write_error(&self, path: &Path, source: io::Error) -> ImageError {
        ImageError::LayerWrite { layer: self.layer.to_string(), path: path.to_path_buf(), source }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Failure> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let rel = match entry_path(Path::new(std::ffi::OsStr::from_bytes(&raw))) {
            Ok(Some(rel)) => rel,
            // The root itself: nothing to create (its metadata is the store's).
            Ok(None) => return Ok(()),
            Err(reason) => return Err(self.hostile(&name, reason).into()),
        };
        let meta = self.meta(entry)?;
        let file_name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();

        // Whiteouts first: their names are markers, not files.
        if file_name == OPAQUE_WHITEOUT {
            let dir = self.make_parents(&name, &parent_rel, true)?;
            xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(|e| self.write_error(&dir, e))?;
            return Ok(());
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
                // AUFS metadata (`.wh..wh.plnk` ...) means nothing to overlayfs.
                debug!(layer = self.layer, entry = %name, "skipping aufs metadata");
                return Ok(());
            }
            let target = self.prepare(&name, &parent_rel.join(hidden))?;
            mknod(&target, libc::S_IFCHR, 0, 0).map_err(|e| self.write_error(&target, e))?;
            return Ok(());
        }

        match kind {
            tar::EntryType::Directory => {
                let path = self.make_parents(&name, &rel, true)?;
                self.apply_meta(&path, &meta, false)?;
                self.dirs.push((path, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let path = self.prepare(&name, &rel)?;
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| self.write_error(&path, e))?;
                io::copy(entry, &mut file)?;
                drop(file);
                self.apply_meta(&path, &meta, false)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(&target));
                if target.as_os_str().is_empty() {
                    return Err(self.hostile(&name, "a symlink without a target".into()).into());
                }
                if !symlink_stays_inside(&rel, &target) {
                    return Err(self
                        .hostile(&name, format!("the symlink target {} escapes the layer root", target.display()))
                        .into());
                }
                let path = self.prepare(&name, &rel)?;
                std::os::unix::fs::symlink(&target, &path).map_err(|e| self.write_error(&path, e))?;
                self.apply_meta(&path, &meta, true)?;
            }
            tar::EntryType::Link => {
                let raw_target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let target_rel = hardlink_target(Path::new(std::ffi::OsStr::from_bytes(&raw_target)))
                    .map_err(|reason| self.hostile(&name, reason))?;
                let target = self.existing(&name, &target_rel)?;
                let path = self.prepare(&name, &rel)?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                fs::hard_link(&target, &path).map_err(|e| self.write_error(&path, e))?;
            }
            tar::EntryType::Fifo => {
                let path = self.prepare(&name, &rel)?;
                mknod(&path, libc::S_IFIFO, 0, 0).map_err(|e| self.write_error(&path, e))?;
                self.apply_meta(&path, &meta, false)?;
            }
            tar::EntryType::Char => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(u32::MAX);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(u32::MAX);
                if (major, minor) != (0, 0) {
                    return Err(self
                        .hostile(&name, format!("character device {major}:{minor} (device nodes are not allowed)"))
                        .into());
                }
                // A 0/0 char device already is an overlayfs whiteout.
                let path = self.prepare(&name, &rel)?;
                mknod(&path, libc::S_IFCHR, 0, 0).map_err(|e| self.write_error(&path, e))?;
            }
            tar::EntryType::Block => {
                return Err(self.hostile(&name, "block device (device nodes are not allowed)".into()).into());
            }
            other => {
                return Err(self.hostile(&name, format!("unsupported tar entry type {other:?}")).into());
            }
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, Failure> {
        let header = entry.header();
        let mut uid = header.uid().unwrap_or(0);
        let mut gid = header.gid().unwrap_or(0);
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions()? {
            for extension in extensions {
                let extension = extension?;
                let Ok(key) = extension.key() else { continue };
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((attr.to_string(), extension.value_bytes().to_vec()));
                } else if key == "uid" {
                    uid = extension.value().ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if key == "gid" {
                    gid = extension.value().ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                }
            }
        }
        let to_id = |id: u64| u32::try_from(id).ok().filter(|id| *id != u32::MAX);
        let (Some(uid), Some(gid)) = (to_id(uid), to_id(gid)) else {
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            return Err(self.hostile(&name, format!("owner {uid}:{gid} is out of range")).into());
        };
        let (uid, gid) = match self.remap {
            None => (uid, gid),
            Some(remap) => match remap.host_id("uid", uid).and_then(|u| Ok((u, remap.host_id("gid", gid)?))) {
                Ok(ids) => ids,
                Err(e) => {
                    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    return Err(self.hostile(&name, format!("cannot shift its owner: {e}")).into());
                }
            },
        };
        Ok(Meta { uid, gid, mode, mtime, xattrs })
    }

    /// Owner first (chown clears setuid bits), then mode, xattrs, mtime.
    fn apply_meta(&self, path: &Path, meta: &Meta, is_symlink: bool) -> Result<(), ImageError> {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(|e| self.write_error(path, e))?;
        if !is_symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).map_err(|e| self.write_error(path, e))?;
        }
        for (name, value) in &meta.xattrs {
            // `xattr::set` does not follow symlinks.
            if let Err(e) = xattr::set(path, name, value) {
                if name.starts_with("security.") || name.starts_with("trusted.") {
                    // Labels this host cannot set (no LSM, unprivileged) are not the image's content.
                    debug!(layer = self.layer, path = %path.display(), xattr = %name, error = %error_chain(&e), "xattr skipped");
                } else {
                    return Err(self.write_error(path, e));
                }
            }
        }
        set_mtime(path, meta.mtime).map_err(|e| self.write_error(path, e))?;
        Ok(())
    }

    /// Makes sure every parent of `rel` is a real directory inside the root (creating
    /// missing ones, refusing symlinks and files), and with `include_last` `rel` itself.
    /// Returns the full path of `rel`.
    /// A directory the layer implies but does not list is root's: the shifted root's
    /// with a remap.
    fn own_implied(&self, path: &Path) -> Result<(), ImageError> {
        match self.remap {
            Some(remap) => std::os::unix::fs::lchown(path, Some(remap.start), Some(remap.start))
                .map_err(|e| self.write_error(path, e)),
            None => Ok(()),
        }
    }

    fn make_parents(&self, name: &str, rel: &Path, include_last: bool) -> Result<PathBuf, ImageError> {
        let mut path = self.root.to_path_buf();
        let parts: Vec<_> = rel.components().collect();
        let walk = if include_last { parts.len() } else { parts.len().saturating_sub(1) };
        for (i, part) in parts.iter().take(walk).enumerate() {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.hostile(name, format!("{} is a symlink: writing through it", path_of(&parts, i))));
                }
                Ok(_) if include_last && i + 1 == walk => {
                    // A directory entry replaces a file of the same name.
                    fs::remove_file(&path).map_err(|e| self.write_error(&path, e))?;
                    mkdir(&path).map_err(|e| self.write_error(&path, e))?;
                    self.own_implied(&path)?;
                }
                Ok(_) => {
                    return Err(self.hostile(name, format!("{} is not a directory", path_of(&parts, i))));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    mkdir(&path).map_err(|e| self.write_error(&path, e))?;
                    self.own_implied(&path)?;
                }
                Err(e) => return Err(self.write_error(&path, e)),
            }
        }
        Ok(self.root.join(rel))
    }

    /// Parents made, and whatever non-directory-compatible thing sits at `rel` removed:
    /// a later entry of the same name replaces an earlier one.
    fn prepare(&self, name: &str, rel: &Path) -> Result<PathBuf, ImageError> {
        let path = self.make_parents(name, rel, false)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(&path).map_err(|e| self.write_error(&path, e))?,
            Ok(_) => fs::remove_file(&path).map_err(|e| self.write_error(&path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.write_error(&path, e)),
        }
        Ok(path)
    }

    /// An already extracted non-directory at `rel`, reached through real directories only.
    fn existing(&self, name: &str, rel: &Path) -> Result<PathBuf, ImageError> {
        let parts: Vec<_> = rel.components().collect();
        let mut path = self.root.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            path.push(part);
            let last = i + 1 == parts.len();
            match fs::symlink_metadata(&path) {
                Ok(m) if !last && m.file_type().is_dir() => {}
                Ok(m) if last && !m.file_type().is_dir() => {}
                Ok(_) if last => {
                    return Err(self.hostile(name, format!("the hard link target {} is a directory", rel.display())))
                }
                Ok(_) => {
                    return Err(self.hostile(
                        name,
                        format!("the hard link target {} goes through {}", rel.display(), path_of(&parts, i)),
                    ))
                }
                Err(_) => {
                    return Err(self
                        .hostile(name, format!("the hard link target {} is not (yet) in this layer", rel.display())))
                }
            }
        }
        Ok(path)
    }
}

fn path_of(parts: &[Component<'_>], upto: usize) -> String {
    parts[..=upto].iter().collect::<PathBuf>().display().to_string()
}

fn mkdir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o755).create(path)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets atime and mtime without following a symlink.
fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let c = cstring(path)?;
    let time = libc::timespec { tv_sec: libc::time_t::try_from(mtime).unwrap_or(libc::time_t::MAX), tv_nsec: 0 };
    let times = [time, time];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_relative_without_dotdot() {
        assert_eq!(entry_path(Path::new("bin/sh")).unwrap(), Some(PathBuf::from("bin/sh")));
        assert_eq!(entry_path(Path::new("/abs/x")).unwrap(), Some(PathBuf::from("abs/x")));
        assert_eq!(entry_path(Path::new("./a/./b/")).unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(entry_path(Path::new("./")).unwrap(), None);
        assert!(entry_path(Path::new("../escape")).is_err());
        assert!(entry_path(Path::new("a/../../b")).is_err());
        assert!(entry_path(Path::new("a/..")).is_err());
    }

    #[test]
    fn symlinks_must_stay_inside_lexically() {
        let inside = |link: &str, target: &str| symlink_stays_inside(Path::new(link), Path::new(target));
        assert!(inside("bin/sh", "busybox"));
        assert!(inside("bin/sh", "/bin/busybox"));
        assert!(inside("usr/lib/x", "../../etc/passwd"));
        assert!(inside("a/b", "../c"));
        assert!(!inside("a/b", "../../c"));
        assert!(!inside("evil", "../../../../../tmp"));
        assert!(!inside("a/b/c", "x/../../../../y"));
        assert!(inside("a/b/c", "./x/../y"));
    }

    #[test]
    fn hardlink_targets_stay_inside() {
        assert_eq!(hardlink_target(Path::new("/bin/busybox")).unwrap(), PathBuf::from("bin/busybox"));
        assert_eq!(hardlink_target(Path::new("bin/busybox")).unwrap(), PathBuf::from("bin/busybox"));
        assert!(hardlink_target(Path::new("../../etc/passwd")).is_err());
        assert!(hardlink_target(Path::new("/")).is_err());
    }

    fn tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, path: &str, link: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(size);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        let linkname = &mut h.as_old_mut().linkname;
        linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        h
    }

    const LIMITS: UnpackLimits = UnpackLimits { max_bytes: 1 << 20, max_entries: 100 };

    fn owned_file(path: &str, uid: u64) -> Vec<u8> {
        tar(|b| {
            let mut h = header(tar::EntryType::Regular, path, "", 2);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_cksum();
            b.append(&h, &b"hi"[..]).unwrap();
        })
    }

    #[test]
    fn a_remap_shifts_every_owner_and_refuses_owners_past_its_count() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let remap = IdRemap { start: 100_000, count: 65_536 };
        let dir = tempfile::tempdir().unwrap();
        unpack_remapped(&owned_file("srv/app/data", 1000)[..], dir.path(), "l", LIMITS, Some(remap)).unwrap();
        let data = fs::metadata(dir.path().join("srv/app/data")).unwrap();
        assert_eq!((data.uid(), data.gid()), (101_000, 101_000), "uid 1000 in the image is START + 1000");
        let implied = fs::metadata(dir.path().join("srv")).unwrap();
        assert_eq!((implied.uid(), implied.gid()), (100_000, 100_000), "a directory the layer implies is root's");

        let past = tempfile::tempdir().unwrap();
        let err =
            unpack_remapped(&owned_file("big-id", 70_000)[..], past.path(), "l", LIMITS, Some(remap)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ImageError::HostileLayer { .. }), "{message}");
        assert!(message.contains("uid 70000 is outside the remapped range (container ids 0 to 65535)"), "{message}");

        // Without a remap the owner is the image's.
        let plain = tempfile::tempdir().unwrap();
        unpack(&owned_file("big-id", 70_000)[..], plain.path(), "l", LIMITS).unwrap();
        assert_eq!(fs::metadata(plain.path().join("big-id")).unwrap().uid(), 70_000);
    }

    #[test]
    fn later_entries_replace_and_whiteouts_convert() {
        let bytes = tar(|b| {
            b.append(&header(tar::EntryType::Regular, "a/f", "", 2), &b"hi"[..]).unwrap();
            b.append(&header(tar::EntryType::Regular, "a/f", "", 3), &b"new"[..]).unwrap();
            b.append(&header(tar::EntryType::Regular, "a/.wh.gone", "", 0), &b""[..]).unwrap();
            b.append(&header(tar::EntryType::Regular, "a/.wh..wh..opq", "", 0), &b""[..]).unwrap();
            b.append(&header(tar::EntryType::Link, "a/g", "a/f", 0), &b""[..]).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let unpacked = unpack(&bytes[..], dir.path(), "test", LIMITS).unwrap();
        assert_eq!(unpacked.diff_id, format!("sha256:{:x}", Sha256::digest(&bytes)));
        assert_eq!(fs::read(dir.path().join("a/f")).unwrap(), b"new");
        assert_eq!(fs::read(dir.path().join("a/g")).unwrap(), b"new");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let whiteout = fs::symlink_metadata(dir.path().join("a/gone")).unwrap();
        assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
        assert_eq!(xattr::get(dir.path().join("a"), OPAQUE_XATTR).unwrap(), Some(b"y".to_vec()));
    }

    #[test]
    fn entry_count_and_size_are_capped() {
        let bytes = tar(|b| {
            for i in 0..5 {
                b.append(&header(tar::EntryType::Regular, &format!("f{i}"), "", 0), &b""[..]).unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&bytes[..], dir.path(), "t", UnpackLimits { max_bytes: 1 << 20, max_entries: 3 }).unwrap_err();
        assert!(err.to_string().contains("more than 3 entries"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&bytes[..], dir.path(), "t", UnpackLimits { max_bytes: 1024, max_entries: 100 }).unwrap_err();
        assert!(matches!(err, ImageError::LayerTooLarge { .. }), "{err}");
    }

    #[test]
    fn writing_through_symlinks_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let bytes = tar(|b| {
            b.append(&header(tar::EntryType::Symlink, "evil", &target, 0), &b""[..]).unwrap();
            b.append(&header(tar::EntryType::Regular, "evil/x", "", 1), &b"x"[..]).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&bytes[..], dir.path(), "t", LIMITS).unwrap_err();
        assert!(err.to_string().contains("writing through"), "{err}");
        assert!(!outside.path().join("x").exists());
    }
}
