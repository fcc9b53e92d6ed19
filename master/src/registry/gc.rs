//! Garbage collection of the registry's blob store: what no tag reaches goes, oldest
//! first, while the store is above its high-water mark or once it is older than the
//! maximum age. Recent blobs are spared so a push or pull that has stored blobs but not
//! yet its tag does not lose them.
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use plinth_oci::manifest::{self, Parsed};
use plinth_oci::Digest;
use plinth_protocol::error_chain;

use super::store::RegistryStore;

/// Unreferenced blobs younger than this are never collected (pushes in progress).
pub const GRACE: Duration = Duration::from_secs(3600);
/// Abandoned uploads older than this are removed.
pub const UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub removed: usize,
    pub freed_bytes: u64,
    pub uploads_removed: usize,
}

/// Every digest some tag reaches (manifests, children of indexes, configs, layers).
pub fn reachable(store: &RegistryStore) -> HashSet<Digest> {
    let mut seen = HashSet::new();
    let mut pending: Vec<Digest> = store.all_tags().into_iter().map(|(_, _, record)| record.digest).collect();
    while let Some(digest) = pending.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let Ok(bytes) = store.blobs().read(&digest) else { continue };
        match manifest::parse(&bytes, None) {
            Ok(Parsed::Image(m)) => {
                pending.extend(
                    std::iter::once(m.config())
                        .chain(m.layers().iter())
                        .filter_map(|d| manifest::descriptor_digest(d).ok()),
                );
            }
            Ok(Parsed::Index(index)) => {
                pending.extend(index.manifests().iter().filter_map(|d| manifest::descriptor_digest(d).ok()));
            }
            // Configs and layers are leaves.
            Err(_) => {}
        }
    }
    seen
}

/// Collects unreferenced blobs: oldest first while the store holds more than
/// `high_water_bytes`, and any older than `max_age`.
pub fn gc(store: &RegistryStore, high_water_bytes: u64, max_age: Duration) -> GcReport {
    gc_at(store, high_water_bytes, max_age, SystemTime::now(), GRACE)
}

pub fn gc_at(
    store: &RegistryStore,
    high_water_bytes: u64,
    max_age: Duration,
    now: SystemTime,
    grace: Duration,
) -> GcReport {
    let mut report = GcReport::default();
    let keep = reachable(store);
    let mut blobs = store.blobs().list();
    let mut total: u64 = blobs.iter().map(|b| b.size).sum();
    blobs.sort_by_key(|b| b.last_used);
    let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    for blob in blobs {
        if keep.contains(&blob.digest) || age(blob.last_used) < grace {
            continue;
        }
        if total <= high_water_bytes && age(blob.last_used) < max_age {
            continue;
        }
        match store.blobs().remove(&blob.digest) {
            Ok(()) => {
                total = total.saturating_sub(blob.size);
                report.removed += 1;
                report.freed_bytes += blob.size;
                tracing::debug!(digest = %blob.digest, bytes = blob.size, "registry blob collected");
            }
            Err(e) => tracing::warn!(digest = %blob.digest, error = %error_chain(&e), "cannot remove registry blob"),
        }
    }
    if let Ok(entries) = std::fs::read_dir(store.uploads_dir()) {
        for entry in entries.flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| age(t) > UPLOAD_MAX_AGE);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                report.uploads_removed += 1;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RepoName;

    #[test]
    fn unreferenced_blobs_go_oldest_first_above_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::open(dir.path()).unwrap();
        let layer = store.blobs().put(b"layer-bytes").unwrap();
        let config = store.blobs().put(b"{}").unwrap();
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 11}]});
        let manifest = store.blobs().put(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        store.set_tag(&RepoName::parse("demo/app").unwrap(), "v1", &manifest, manifest::OCI_MANIFEST).unwrap();
        let old = store.blobs().put(b"old orphan").unwrap();
        let _ = std::fs::File::options()
            .append(true)
            .open(store.blobs().path(&old))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(100));
        let young = store.blobs().put(b"young orphan").unwrap();

        // Below the mark and young: nothing goes.
        let later = SystemTime::now() + Duration::from_secs(10);
        assert_eq!(gc_at(&store, u64::MAX, Duration::from_secs(1000), later, Duration::ZERO).removed, 0);
        // Above the mark: orphans go oldest first, and only until under it.
        let total = store.blobs().total_size();
        let report = gc_at(&store, total - 1, Duration::from_secs(1000), later, Duration::ZERO);
        assert_eq!(report.removed, 1);
        assert!(!store.blobs().contains(&old) && store.blobs().contains(&young));
        // Past the age: the rest of the orphans go, tagged content stays.
        gc_at(&store, u64::MAX, Duration::from_secs(1), later, Duration::ZERO);
        assert!(!store.blobs().contains(&young));
        for kept in [&layer, &config, &manifest] {
            assert!(store.blobs().contains(kept));
        }
        // The grace period protects fresh blobs.
        let fresh = store.blobs().put(b"fresh").unwrap();
        assert_eq!(gc(&store, 0, Duration::ZERO).removed, 0);
        assert!(store.blobs().contains(&fresh));
    }
}
