//! A content-addressed blob store: `ROOT/sha256/<hex>`. Content enters only through a
//! [`BlobWriter`] that checks it against its digest (and size) before an atomic rename,
//! so a reader never sees a partial or unverified blob.
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{Digest, DigestVerifier, OciError};

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// One stored blob, for listings and garbage collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// Last time the blob was written or used (its mtime, touched on use).
    pub last_used: SystemTime,
}

impl BlobStore {
    /// Opens (creating) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, OciError> {
        let root = root.into();
        for dir in [root.join("sha256"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(|source| OciError::Write { path: dir, source })?;
        }
        Ok(BlobStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, OciError> {
        let path = self.path(digest);
        File::open(&path).map_err(|source| OciError::Read { path, source })
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, OciError> {
        let path = self.path(digest);
        fs::read(&path).map_err(|source| OciError::Read { path, source })
    }

    /// Marks a blob as used now, so age-based collection keeps it.
    pub fn touch(&self, digest: &Digest) {
        if let Ok(file) = File::options().append(true).open(self.path(digest)) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Starts writing a blob that must turn out to be `digest` (of `size` bytes, when known).
    pub fn writer(&self, digest: &Digest, size: Option<u64>) -> Result<BlobWriter, OciError> {
        let tmp_dir = self.root.join("tmp");
        let file = tempfile_in(&tmp_dir)?;
        Ok(BlobWriter {
            store: self.clone(),
            verifier: DigestVerifier::new(digest.clone(), size),
            digest: digest.clone(),
            file: Some(file),
        })
    }

    /// Stores bytes whose digest is computed here (manifests the master received whole).
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, OciError> {
        let digest = Digest::of(bytes);
        if !self.contains(&digest) {
            let mut writer = self.writer(&digest, Some(bytes.len() as u64))?;
            writer.write_chunk(bytes)?;
            writer.commit()?;
        }
        Ok(digest)
    }

    /// Stores what `reader` yields, checked against `digest` and `size`.
    pub fn put_verified(&self, digest: &Digest, size: Option<u64>, reader: &mut dyn Read) -> Result<(), OciError> {
        if self.contains(digest) {
            return Ok(());
        }
        let mut writer = self.writer(digest, size)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n =
                reader.read(&mut buf).map_err(|source| OciError::Read { path: PathBuf::from("<stream>"), source })?;
            if n == 0 {
                break;
            }
            writer.write_chunk(&buf[..n])?;
        }
        writer.commit()
    }

    pub fn remove(&self, digest: &Digest) -> Result<(), OciError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(OciError::Write { path, source }),
        }
    }

    /// Every stored blob.
    pub fn list(&self) -> Vec<BlobInfo> {
        let Ok(entries) = fs::read_dir(self.root.join("sha256")) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let digest: Digest = format!("sha256:{}", entry.file_name().to_string_lossy()).parse().ok()?;
                let meta = entry.metadata().ok()?;
                Some(BlobInfo { digest, size: meta.len(), last_used: meta.modified().ok()? })
            })
            .collect()
    }

    pub fn total_size(&self) -> u64 {
        self.list().iter().map(|b| b.size).sum()
    }
}

/// A blob being written; dropped without `commit` it leaves nothing behind.
pub struct BlobWriter {
    store: BlobStore,
    verifier: DigestVerifier,
    digest: Digest,
    file: Option<(File, PathBuf)>,
}

impl BlobWriter {
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), OciError> {
        self.verifier.update(chunk)?;
        let (file, path) = self.file.as_mut().expect("present until commit");
        file.write_all(chunk).map_err(|source| OciError::Write { path: path.clone(), source })
    }

    pub fn bytes_written(&self) -> u64 {
        self.verifier.bytes_seen()
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Verifies and moves the blob into place.
    pub fn commit(mut self) -> Result<(), OciError> {
        let (file, tmp) = self.file.take().expect("present until commit");
        let verifier = std::mem::replace(&mut self.verifier, DigestVerifier::new(self.digest.clone(), None));
        if let Err(err) = verifier.finish() {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        file.sync_all().map_err(|source| OciError::Write { path: tmp.clone(), source })?;
        let target = self.store.path(&self.digest);
        fs::rename(&tmp, &target).map_err(|source| OciError::Write { path: target, source })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some((_, tmp)) = self.file.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<(File, PathBuf), OciError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = format!("{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map(|f| (f, path.clone()))
        .map_err(|source| OciError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verified_content_lands() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let good = Digest::of(b"layer");
        store.put_verified(&good, Some(5), &mut &b"layer"[..]).unwrap();
        assert_eq!(store.read(&good).unwrap(), b"layer");

        let other = Digest::of(b"other");
        let err = store.put_verified(&other, Some(5), &mut &b"evil!"[..]).unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&other));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temp file left");
        assert_eq!(store.list().len(), 1);
        assert_eq!(store.total_size(), 5);
    }
}
