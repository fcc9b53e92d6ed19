//! The registry's disk layout under `DATA_DIR/registry`: `blobs/` (a verified
//! [`BlobStore`] holding layers, configs and manifests alike), `repos/<repo>/_tags/<tag>`
//! (what a tag points at) and `uploads/<uuid>` (pushes in progress).
//!
//! Repository names come from URLs, so every component is validated before it touches a
//! path: a component starts with a letter or digit (no `.`, `..`, hidden files) and tag
//! directories are called `_tags`, which no valid component can be.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use plinth_oci::{BlobStore, Digest};

use super::RegistryError;

const TAGS_DIR: &str = "_tags";

/// A validated repository path such as `demo/app` or `docker.io/library/busybox`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(name: &str) -> Result<Self, RegistryError> {
        let invalid = |reason: &str| RegistryError::NameInvalid { name: name.to_string(), reason: reason.to_string() };
        if name.is_empty() || name.len() > 255 {
            return Err(invalid("a repository name has 1 to 255 characters"));
        }
        for (index, component) in name.split('/').enumerate() {
            let first_ok = component.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !first_ok {
                return Err(invalid("each path component starts with a lowercase letter or a digit"));
            }
            // Only the registry component (`127.0.0.1:5000`) may carry a port.
            let allowed = |c: char| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') || (index == 0 && c == ':')
            };
            if !component.chars().all(allowed) {
                return Err(invalid("components may contain only a-z, 0-9, '.', '_' and '-'"));
            }
        }
        Ok(RepoName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component, when there is more than one.
    pub fn split_first(&self) -> Option<(&str, &str)> {
        self.0.split_once('/')
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Docker's tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), RegistryError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::TagInvalid { tag: tag.to_string() })
    }
}

/// What a tag points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub digest: Digest,
    pub media_type: String,
    /// Unix seconds of the pull or push that wrote it.
    pub pulled_at: u64,
}

/// Blobs, tags and uploads on disk.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    root: PathBuf,
    blobs: BlobStore,
}

impl RegistryStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let root = root.into();
        let blobs = BlobStore::open(root.join("blobs"))?;
        for dir in [root.join("repos"), root.join("uploads")] {
            fs::create_dir_all(&dir).map_err(|source| RegistryError::Io { path: dir, source })?;
        }
        Ok(RegistryStore { root, blobs })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    fn tags_dir(&self, repo: &RepoName) -> PathBuf {
        let mut dir = self.root.join("repos");
        for component in repo.as_str().split('/') {
            dir.push(component);
        }
        dir.join(TAGS_DIR)
    }

    pub fn tag(&self, repo: &RepoName, tag: &str) -> Option<TagRecord> {
        validate_tag(tag).ok()?;
        let bytes = fs::read(self.tags_dir(repo).join(tag)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Points `repo:tag` at a manifest, atomically (temp file + rename).
    pub fn set_tag(&self, repo: &RepoName, tag: &str, digest: &Digest, media_type: &str) -> Result<(), RegistryError> {
        validate_tag(tag)?;
        let dir = self.tags_dir(repo);
        fs::create_dir_all(&dir).map_err(|source| RegistryError::Io { path: dir.clone(), source })?;
        let record = TagRecord { digest: digest.clone(), media_type: media_type.to_string(), pulled_at: unix_now() };
        let bytes = serde_json::to_vec(&record).expect("a tag record serialises");
        let tmp = dir.join(format!(".{tag}.{}", uuid::Uuid::new_v4()));
        fs::write(&tmp, bytes).map_err(|source| RegistryError::Io { path: tmp.clone(), source })?;
        let target = dir.join(tag);
        fs::rename(&tmp, &target).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            RegistryError::Io { path: target, source }
        })
    }

    /// Removes `repo:tag` (the blobs stay until nothing reaches them: [`super::gc`]).
    pub fn remove_tag(&self, repo: &RepoName, tag: &str) -> Result<(), RegistryError> {
        validate_tag(tag)?;
        let path = self.tags_dir(repo).join(tag);
        fs::remove_file(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => {
                RegistryError::ManifestUnknown { name: repo.to_string(), reference: tag.to_string() }
            }
            _ => RegistryError::Io { path, source },
        })
    }

    pub fn tags(&self, repo: &RepoName) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.tags_dir(repo)) else { return Vec::new() };
        let mut tags: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|t| validate_tag(t).is_ok())
            .collect();
        tags.sort();
        tags
    }

    /// Every repository with at least one tag, with its tag records.
    pub fn all_tags(&self) -> Vec<(RepoName, String, TagRecord)> {
        let mut out = Vec::new();
        for repo in self.repositories() {
            for tag in self.tags(&repo) {
                if let Some(record) = self.tag(&repo, &tag) {
                    out.push((repo.clone(), tag, record));
                }
            }
        }
        out
    }

    /// Repository names (those that have a `_tags` directory), sorted.
    pub fn repositories(&self) -> Vec<RepoName> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<RepoName>, depth: usize) {
            let Ok(entries) = fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if name == TAGS_DIR {
                    if let Ok(repo) = RepoName::parse(prefix) {
                        out.push(repo);
                    }
                } else if depth < 16 {
                    let child = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                    walk(&entry.path(), &child, out, depth + 1);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join("repos"), "", &mut out, 0);
        out.sort();
        out
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_cannot_escape() {
        for good in ["demo/app", "docker.io/library/busybox", "127.0.0.1:5000/demo/hello", "a", "a-b_c.d/e"] {
            RepoName::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "../etc", "demo/../x", "demo/./x", ".hidden", "demo//x", "/abs", "Demo/app", "a/b:c", "a/_tags"]
        {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(validate_tag("v1.0_x-y").is_ok());
        for bad in ["", "..", ".x", "a/b", "-x", &"x".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn tags_are_written_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::open(dir.path()).unwrap();
        let repo = RepoName::parse("docker.io/library/busybox").unwrap();
        let digest = Digest::of(b"m");
        store.set_tag(&repo, "latest", &digest, "application/vnd.oci.image.manifest.v1+json").unwrap();
        store.set_tag(&repo, "v1", &digest, "application/vnd.oci.image.manifest.v1+json").unwrap();
        assert_eq!(store.tag(&repo, "latest").unwrap().digest, digest);
        assert_eq!(store.tags(&repo), vec!["latest", "v1"]);
        assert_eq!(store.repositories(), vec![repo.clone()]);
        assert_eq!(store.all_tags().len(), 2);
        assert!(store.tag(&repo, "../../x").is_none());
    }
}
