//! The registry's images as people manage them (`/v1/images`, `plinth image`): every tag
//! with its size, when it was written and last used, where it came from; the store name
//! of an image as apps write it; and a tag's removal together with the blobs only it
//! reached (blobs another tag shares stay).
use std::time::SystemTime;

use plinth_oci::manifest::{self, Parsed};
use plinth_oci::reference::names_registry;
use plinth_oci::{Digest, ImageRef};

use super::gc::reachable;
use super::store::{RegistryStore, RepoName, TagRecord};
use super::{Registry, RegistryError};

/// One tag of the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub repository: RepoName,
    pub tag: String,
    pub record: TagRecord,
    /// Manifest, config and layers (an index: its linux/amd64 image).
    pub size: u64,
    /// The manifest blob's last use (pulls and cache hits touch it).
    pub last_used: Option<SystemTime>,
    /// The upstream registry of a mirrored repository; `None` for a pushed one.
    pub upstream: Option<String>,
}

/// What removing a tag freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedTag {
    pub digest: Digest,
    pub blobs_removed: usize,
    pub freed_bytes: u64,
}

impl Registry {
    /// The store's repository of an image as apps name it: pushed images (`<this
    /// registry>/demo/app`) are kept without the registry part, mirrored ones with it.
    pub fn stored_name(&self, image: &ImageRef) -> Result<RepoName, RegistryError> {
        if self.is_self(image.registry()) {
            RepoName::parse(image.repository())
        } else {
            RepoName::parse(&image.name())
        }
    }

    /// Every tag, by repository and tag (reads the store: call it off the async workers).
    pub fn images(&self) -> Vec<StoredImage> {
        self.store
            .all_tags()
            .into_iter()
            .map(|(repository, tag, record)| describe(&self.store, repository, tag, record))
            .collect()
    }

    /// One tag, if the store has it.
    pub fn image(&self, repository: &RepoName, tag: &str) -> Option<StoredImage> {
        let record = self.store.tag(repository, tag)?;
        Some(describe(&self.store, repository.clone(), tag.to_string(), record))
    }

    /// Removes `repository:tag` and the blobs no other tag reaches. While a pull runs its
    /// blobs may not be tagged yet, so then only the tag goes (the collector takes the rest).
    pub fn remove_tag(&self, repository: &RepoName, tag: &str) -> Result<RemovedTag, RegistryError> {
        let record = self.store.tag(repository, tag).ok_or_else(|| RegistryError::ManifestUnknown {
            name: repository.to_string(),
            reference: tag.to_string(),
        })?;
        let before = reachable(&self.store);
        self.store.remove_tag(repository, tag)?;
        let mut removed = RemovedTag { digest: record.digest, blobs_removed: 0, freed_bytes: 0 };
        if self.puller.busy() {
            return Ok(removed);
        }
        let after = reachable(&self.store);
        for digest in before.difference(&after) {
            let size = self.store.blobs().size(digest).unwrap_or(0);
            if self.store.blobs().remove(digest).is_ok() {
                removed.blobs_removed += 1;
                removed.freed_bytes += size;
            }
        }
        tracing::info!(repository = %repository, tag, blobs = removed.blobs_removed, freed = removed.freed_bytes,
            "registry image removed");
        Ok(removed)
    }
}

fn describe(store: &RegistryStore, repository: RepoName, tag: String, record: TagRecord) -> StoredImage {
    let upstream =
        repository.split_first().map(|(first, _)| first).filter(|first| names_registry(first)).map(str::to_string);
    let last_used = std::fs::metadata(store.blobs().path(&record.digest)).and_then(|m| m.modified()).ok();
    StoredImage { size: image_size(store, &record.digest, 0), last_used, upstream, repository, tag, record }
}

/// The bytes an image takes in the store: its manifest and what it lists.
fn image_size(store: &RegistryStore, digest: &Digest, depth: usize) -> u64 {
    let Ok(bytes) = store.blobs().read(digest) else { return 0 };
    let own = bytes.len() as u64;
    match manifest::parse(&bytes, None) {
        Ok(Parsed::Image(m)) => own + m.config().size() + m.layers().iter().map(|l| l.size()).sum::<u64>(),
        Ok(Parsed::Index(index)) if depth == 0 => {
            let child = manifest::select_platform(&index).ok().and_then(|d| manifest::descriptor_digest(&d).ok());
            own + child.map_or(0, |child| image_size(store, &child, depth + 1))
        }
        _ => own,
    }
}
