//! The unpacked layers on disk (`layers/<diff_id hex>/`): unpacking a verified blob,
//! the per-layer `flock`, listing with sizes and last use, and removal that a pull
//! never sees half of.
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use plinth_oci::manifest::Compression;
use plinth_oci::Digest;
use plinth_protocol::error_chain;
use tracing::{debug, warn};

use super::unpack::{self, UnpackLimits};
use super::{ImageError, ImageStore, TMP_COUNTER};

impl ImageStore {
    /// Unpacks the stored `blob` into `dest` and checks that its content is `diff_id`.
    pub(super) fn unpack_blob(
        &self,
        blob: &Digest,
        compression: Compression,
        diff_id: &Digest,
        dest: &Path,
    ) -> Result<(), ImageError> {
        let file = self.blobs.open_blob(blob).map_err(ImageError::BlobStore)?;
        let file = io::BufReader::new(file);
        let layer = blob.to_string();
        let stream: Box<dyn Read> = match compression {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(file)
                    .map_err(|source| ImageError::LayerRead { layer: layer.clone(), source })?,
            ),
        };
        let limits =
            UnpackLimits { max_bytes: self.options.max_layer_bytes, max_entries: self.options.max_layer_entries };
        let unpacked = unpack::unpack_remapped(stream, dest, &layer, limits, self.options.id_remap)?;
        if unpacked.diff_id != diff_id.as_str() {
            return Err(ImageError::DiffIdMismatch { layer, expected: diff_id.to_string(), actual: unpacked.diff_id });
        }
        debug!(layer = %diff_id.short(), entries = unpacked.entries, bytes = unpacked.bytes, "layer verified");
        Ok(())
    }

    /// An exclusive `flock` on the layer's lock file, held until the file is dropped.
    /// `wait: false` returns `None` when someone else holds it.
    pub(super) fn lock_layer(&self, diff_id: &Digest, wait: bool) -> Result<Option<File>, ImageError> {
        let path = self.root.join("locks").join(self.lock_name(diff_id));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ImageError::Io { path: path.clone(), source })?;
        let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
        loop {
            // SAFETY: flock on a descriptor this function owns; the lock goes with the file.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Some(file));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
                _ => return Err(ImageError::Io { path, source: err }),
            }
        }
    }
    /// Unpacked layers: diff_id, bytes on disk, last use.
    pub(super) fn list_layers(&self) -> Vec<(Digest, u64, SystemTime)> {
        let Ok(entries) = fs::read_dir(self.layers_dir()) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let diff_id: Digest = format!("sha256:{}", entry.file_name().to_string_lossy()).parse().ok()?;
                let used = entry.metadata().ok()?.modified().ok()?;
                Some((diff_id, tree_size(&entry.path()), used))
            })
            .collect()
    }

    /// Temp dirs of unpacks or removals a crash interrupted: gone unless their layer's
    /// lock is held (an unpack in progress) or they are younger than `grace`.
    pub(super) fn remove_leftovers(&self, grace: Duration) {
        let Ok(entries) = fs::read_dir(self.layers_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(".tmp-").or_else(|| name.strip_prefix(".gc-")) else { continue };
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() < grace)
                .unwrap_or(true);
            let Some(diff_id) = rest.get(..64).and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok()) else {
                continue;
            };
            if young {
                continue;
            }
            if let Ok(Some(_lock)) = self.lock_layer(&diff_id, false) {
                match fs::remove_dir_all(entry.path()) {
                    Ok(()) => debug!(path = %entry.path().display(), "leftover layer dir removed"),
                    Err(e) => {
                        warn!(path = %entry.path().display(), error = %error_chain(&e), "cannot remove a leftover layer dir")
                    }
                }
            }
        }
    }

    /// Removes a layer unless someone holds its lock; `false` when skipped.
    pub(super) fn remove_layer(&self, diff_id: &Digest) -> Result<bool, ImageError> {
        let Some(_lock) = self.lock_layer(diff_id, false)? else { return Ok(false) };
        let dir = self.layer_dir(diff_id);
        // Out of sight first, atomically: a pull never finds half a layer.
        let doomed = self.layers_dir().join(format!(
            ".gc-{}-{}-{}",
            diff_id.hex(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(&dir, &doomed).map_err(|source| ImageError::Io { path: dir.clone(), source })?;
        fs::remove_dir_all(&doomed).map_err(|source| ImageError::Io { path: doomed, source })?;
        let _ = fs::remove_file(self.short_links_dir().join(&diff_id.hex()[..12]));
        debug!(layer = %diff_id.short(), "layer collected");
        Ok(true)
    }
}

/// Marks a layer used now (its dir's mtime: the dir never changes after the rename).
pub(super) fn touch_dir(dir: &Path) {
    if let Ok(file) = File::open(dir) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Bytes of the regular files under `dir`, symlinks not followed.
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}
