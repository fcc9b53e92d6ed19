//! What tasks pin (`pins/<task id>.json`) and the garbage collector that removes
//! unpinned layers and blobs by age and a high-water mark.
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use plinth_oci::Digest;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{write_json, ImageError, ImageStore, PulledImage};

/// What a task holds on to, kept in `pins/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PinRecord {
    blobs: Vec<Digest>,
    diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Unpinned content not used for this long goes.
    pub max_age: Duration,
    /// While the store is bigger, unpinned content goes, least recently used first.
    pub high_water_bytes: u64,
    /// Content used more recently is never removed: a pull that just finished has not
    /// pinned its image yet.
    pub grace: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            max_age: Duration::from_secs(7 * 24 * 3600),
            high_water_bytes: 20 << 30,
            grace: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub freed_bytes: u64,
    pub removed_layers: usize,
    pub removed_blobs: usize,
    /// What is left.
    pub remaining_bytes: u64,
}

impl ImageStore {
    /// Records that `task_id` uses `image`: [`ImageStore::gc`] keeps it until [`ImageStore::unpin`].
    pub fn pin(&self, task_id: &str, image: &PulledImage) -> Result<(), ImageError> {
        let mut blobs = image.layer_blobs.clone();
        blobs.push(image.config_digest.clone());
        write_json(&self.pin_path(task_id)?, &PinRecord { blobs, diff_ids: image.diff_ids.clone() })
    }

    /// Idempotent.
    pub fn unpin(&self, task_id: &str) -> Result<(), ImageError> {
        let path = self.pin_path(task_id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ImageError::Io { path, source }),
        }
    }

    fn pin_path(&self, task_id: &str) -> Result<PathBuf, ImageError> {
        let valid = !task_id.is_empty()
            && task_id.len() <= 200
            && !task_id.starts_with('.')
            && task_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !valid {
            return Err(ImageError::InvalidTaskId { task_id: task_id.to_string() });
        }
        Ok(self.root.join("pins").join(format!("{task_id}.json")))
    }

    /// Removes unpinned layers and blobs unused for `max_age`, then, while the store is
    /// over `high_water_bytes`, the least recently used unpinned ones. Nothing used within
    /// `grace`, and no layer someone holds the lock of, is touched.
    pub fn gc(&self, policy: GcPolicy) -> Result<GcReport, ImageError> {
        let mut pinned_blobs = std::collections::HashSet::new();
        let mut pinned_layers = std::collections::HashSet::new();
        let pins = self.root.join("pins");
        for entry in fs::read_dir(&pins).map_err(|source| ImageError::Io { path: pins.clone(), source })?.flatten() {
            match fs::read(entry.path()).ok().and_then(|b| serde_json::from_slice::<PinRecord>(&b).ok()) {
                Some(pin) => {
                    pinned_blobs.extend(pin.blobs);
                    pinned_layers.extend(pin.diff_ids);
                }
                // An unreadable pin might protect anything: collect nothing rather than guess.
                None => {
                    warn!(pin = %entry.path().display(), "unreadable pin, skipping image gc");
                    return Ok(GcReport { remaining_bytes: self.size(), ..GcReport::default() });
                }
            }
        }

        enum Item {
            Layer(Digest),
            Blob(Digest),
        }
        let now = SystemTime::now();
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let mut total = 0u64;
        let mut candidates: Vec<(SystemTime, u64, Item)> = Vec::new();
        for (diff_id, size, used) in self.list_layers() {
            total += size;
            if !pinned_layers.contains(&diff_id) && age(used) >= policy.grace {
                candidates.push((used, size, Item::Layer(diff_id)));
            }
        }
        for blob in self.blobs.list() {
            total += blob.size;
            if !pinned_blobs.contains(&blob.digest) && age(blob.last_used) >= policy.grace {
                candidates.push((blob.last_used, blob.size, Item::Blob(blob.digest)));
            }
        }
        candidates.sort_by_key(|(used, _, _)| *used);

        let mut report = GcReport::default();
        self.remove_leftovers(policy.grace);
        for (used, size, item) in candidates {
            if age(used) < policy.max_age && total <= policy.high_water_bytes {
                continue;
            }
            let removed = match &item {
                Item::Layer(diff_id) => self.remove_layer(diff_id)?,
                Item::Blob(digest) => {
                    self.blobs.remove(digest).map_err(ImageError::BlobStore)?;
                    true
                }
            };
            if removed {
                total = total.saturating_sub(size);
                report.freed_bytes += size;
                match item {
                    Item::Layer(_) => report.removed_layers += 1,
                    Item::Blob(_) => report.removed_blobs += 1,
                }
            }
        }
        report.remaining_bytes = total;
        info!(
            freed = report.freed_bytes,
            layers = report.removed_layers,
            blobs = report.removed_blobs,
            remaining = total,
            "image gc"
        );
        Ok(report)
    }

    /// Bytes in layers and blobs.
    pub fn size(&self) -> u64 {
        self.list_layers().iter().map(|(_, size, _)| size).sum::<u64>() + self.blobs.total_size()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageStoreOptions;

    #[test]
    fn pins_need_safe_task_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path(), ImageStoreOptions::default()).unwrap();
        assert!(store.pin_path("app.abc-123_x").is_ok());
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(store.pin_path(bad).is_err(), "{bad:?}");
        }
    }
}
