//! Pulling an image from a registry: the manifest (an index resolves to its linux/amd64
//! entry) and config, each blob verified while it streams, each missing layer unpacked
//! under its lock; what the reference resolved to is kept in `refs/` so that a pull
//! that is not forced needs no registry when everything is present.
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use oci_spec::image::{Descriptor, ImageConfiguration};
use plinth_oci::manifest::{self, Parsed};
use plinth_oci::{Digest, ImageRef, OciError};
use plinth_protocol::error_chain;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

use super::layers::touch_dir;
use super::{write_json, ImageError, ImageStore, RegistrySource, TMP_COUNTER};

/// The largest manifest or config document accepted (real ones are a few KiB).
const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer blob being downloaded.
    pub layer: Digest,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub layers_done: usize,
    pub layers_total: usize,
}

/// What a pull had to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Whether the registry was asked at all (a non-forced pull of a present image is not).
    pub contacted_registry: bool,
    pub blobs_downloaded: usize,
    pub bytes_downloaded: u64,
    pub layers_unpacked: usize,
}

#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference as asked for.
    pub reference: ImageRef,
    /// What the reference resolved to (the index's digest for a multi-platform image).
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    /// Compressed layer blobs, bottom first.
    pub layer_blobs: Vec<Digest>,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Unpacked layer dirs, bottom first.
    pub layers: Vec<PathBuf>,
    pub stats: PullStats,
}

/// What a reference resolved to, kept in `refs/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    manifest_digest: Digest,
    config_digest: Digest,
    layer_blobs: Vec<Digest>,
    diff_ids: Vec<Digest>,
}

impl ImageStore {
    /// Pulls `image` from `source`, unpacking layers not unpacked yet. Without
    /// `force_pull`, an image whose reference was resolved before and whose content is
    /// all present is used without asking the registry; with it, the reference is
    /// resolved again (blobs and layers present are still not downloaded again).
    pub fn pull(
        &self,
        source: &RegistrySource,
        image: &ImageRef,
        force_pull: bool,
        progress: &mut dyn FnMut(PullProgress),
    ) -> Result<PulledImage, ImageError> {
        let key = image.to_string();
        if !force_pull {
            if let Some(pulled) = self.cached(image)? {
                debug!(image = %key, "image present, not pulled");
                return Ok(pulled);
            }
        }
        let mut stats = PullStats { contacted_registry: true, ..PullStats::default() };
        let (bytes, content_type) = self.fetch_manifest(source, image, &image.reference(), force_pull)?;
        let manifest_digest = Digest::of(&bytes);
        if let Some(pinned) = image.digest() {
            if *pinned != manifest_digest {
                return Err(ImageError::BlobMismatch {
                    digest: pinned.clone(),
                    reason: format!("the registry sent a manifest whose digest is {manifest_digest}"),
                });
            }
        }
        let bad = |source| ImageError::BadManifest { image: key.clone(), source };
        let parsed = manifest::parse(&bytes, content_type.as_deref()).map_err(bad)?;
        let manifest = match parsed {
            Parsed::Image(m) => m,
            Parsed::Index(index) => {
                let child = manifest::select_platform(&index).map_err(bad)?;
                let child_digest = manifest::descriptor_digest(&child).map_err(bad)?;
                let (bytes, content_type) = self.fetch_manifest(source, image, child_digest.as_str(), force_pull)?;
                if Digest::of(&bytes) != child_digest {
                    return Err(ImageError::BlobMismatch {
                        digest: child_digest,
                        reason: format!("the registry sent a manifest whose digest is {}", Digest::of(&bytes)),
                    });
                }
                match manifest::parse(&bytes, content_type.as_deref()).map_err(bad)? {
                    Parsed::Image(m) => m,
                    Parsed::Index(_) => {
                        return Err(ImageError::ManifestContent {
                            image: key.clone(),
                            reason: "the index's linux/amd64 entry is another index".into(),
                        })
                    }
                }
            }
        };

        let config_digest = manifest::descriptor_digest(manifest.config()).map_err(bad)?;
        self.ensure_blob(source, &config_digest, Some(manifest.config().size()), &mut stats, &mut |_, _| {})?;
        let config = self.read_config(image, &config_digest)?;
        let diff_ids = diff_ids_of(image, &config_digest, &config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::BadConfig {
                image: key,
                digest: config_digest,
                reason: format!("{} diff_ids for {} layers in the manifest", diff_ids.len(), manifest.layers().len()),
            });
        }

        let layers_total = manifest.layers().len();
        let mut layer_blobs = Vec::with_capacity(layers_total);
        let mut layers = Vec::with_capacity(layers_total);
        for (i, (descriptor, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
            let blob = manifest::descriptor_digest(descriptor).map_err(bad)?;
            let mut report = |done: u64, total: u64| {
                progress(PullProgress {
                    layer: blob.clone(),
                    bytes_done: done,
                    bytes_total: total,
                    layers_done: i,
                    layers_total,
                })
            };
            layers.push(self.ensure_layer(source, image, descriptor, &blob, diff_id, &mut stats, &mut report)?);
            progress(PullProgress {
                layer: blob.clone(),
                bytes_done: descriptor.size(),
                bytes_total: descriptor.size(),
                layers_done: i + 1,
                layers_total,
            });
            layer_blobs.push(blob);
        }

        let record = RefRecord {
            reference: key.clone(),
            manifest_digest: manifest_digest.clone(),
            config_digest: config_digest.clone(),
            layer_blobs: layer_blobs.clone(),
            diff_ids: diff_ids.clone(),
        };
        write_json(&self.ref_path(image), &record)?;
        info!(image = %key, digest = %manifest_digest, layers = layers_total, downloaded = stats.bytes_downloaded,
            unpacked = stats.layers_unpacked, "image pulled");
        Ok(PulledImage {
            reference: image.clone(),
            manifest_digest,
            config_digest,
            config,
            layer_blobs,
            diff_ids,
            layers,
            stats,
        })
    }

    fn ref_path(&self, image: &ImageRef) -> PathBuf {
        let key = format!("{:x}", Sha256::digest(image.to_string().as_bytes()));
        self.root.join("refs").join(format!("{key}.json"))
    }

    /// The image as resolved before, when all its content is still here.
    fn cached(&self, image: &ImageRef) -> Result<Option<PulledImage>, ImageError> {
        let path = self.ref_path(image);
        let Ok(bytes) = fs::read(&path) else { return Ok(None) };
        let Ok(record) = serde_json::from_slice::<RefRecord>(&bytes) else {
            warn!(path = %path.display(), "unreadable image ref record, pulling again");
            return Ok(None);
        };
        if !self.blobs.contains(&record.config_digest) {
            return Ok(None);
        }
        let layers: Vec<PathBuf> = record.diff_ids.iter().map(|d| self.layer_dir(d)).collect();
        if !layers.iter().all(|l| l.is_dir()) {
            return Ok(None);
        }
        let config = self.read_config(image, &record.config_digest)?;
        self.blobs.touch(&record.config_digest);
        for (layer, blob) in layers.iter().zip(&record.layer_blobs) {
            touch_dir(layer);
            self.blobs.touch(blob);
        }
        Ok(Some(PulledImage {
            reference: image.clone(),
            manifest_digest: record.manifest_digest,
            config_digest: record.config_digest,
            config,
            layer_blobs: record.layer_blobs,
            diff_ids: record.diff_ids,
            layers,
            stats: PullStats::default(),
        }))
    }

    fn read_config(&self, image: &ImageRef, digest: &Digest) -> Result<ImageConfiguration, ImageError> {
        let bytes = self.blobs.read(digest).map_err(ImageError::BlobStore)?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::BadConfig {
            image: image.to_string(),
            digest: digest.clone(),
            reason: e.to_string(),
        })
    }

    fn fetch_manifest(
        &self,
        source: &RegistrySource,
        image: &ImageRef,
        reference: &str,
        force_pull: bool,
    ) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let url = format!("{}/v2/{}/manifests/{}", source.base, source.repository, reference);
        let mut request = self.client.get(&url).header(reqwest::header::ACCEPT, manifest::ACCEPTED.join(", "));
        if force_pull {
            request = request.header("X-Plinth-Force-Pull", "true");
        }
        let response = self.send(request, &url, &format!("image {image}"))?;
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(ct) = &content_type {
            let bare = ct.split(';').next().unwrap_or(ct).trim();
            // Registries answer unknown-but-JSON types as application/json; anything else is not a manifest we know.
            if !manifest::ACCEPTED.contains(&bare) && bare != "application/json" {
                return Err(ImageError::UnsupportedMediaType { image: image.to_string(), media_type: bare.into() });
            }
        }
        let mut bytes = Vec::new();
        response
            .take(MAX_DOCUMENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::Download { url: url.clone(), source })?;
        if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
            return Err(ImageError::ManifestContent {
                image: image.to_string(),
                reason: format!("the manifest is larger than {MAX_DOCUMENT_BYTES} bytes"),
            });
        }
        Ok((bytes, content_type))
    }

    /// Sends a GET, turning failures into errors that say what was asked for.
    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
        url: &str,
        what: &str,
    ) -> Result<reqwest::blocking::Response, ImageError> {
        let response = request.send().map_err(|source| ImageError::Connect { url: url.to_string(), source })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().unwrap_or_default();
        let message = registry_message(&body).unwrap_or_else(|| status.to_string());
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound { image: what.to_string(), message });
        }
        Err(ImageError::Registry { url: url.to_string(), status: status.as_u16(), message })
    }

    /// Downloads a blob into the store unless it is there, verifying digest and size.
    fn ensure_blob(
        &self,
        source: &RegistrySource,
        digest: &Digest,
        size: Option<u64>,
        stats: &mut PullStats,
        report: &mut dyn FnMut(u64, u64),
    ) -> Result<(), ImageError> {
        if self.blobs.contains(digest) {
            self.blobs.touch(digest);
            return Ok(());
        }
        let url = format!("{}/v2/{}/blobs/{}", source.base, source.repository, digest);
        let what = format!("blob {digest} of {}", source.repository);
        let mut response = self.send(self.client.get(&url), &url, &what)?;
        let total = size.unwrap_or(0);
        let mut writer = self.blobs.writer(digest, size).map_err(ImageError::BlobStore)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mismatch = |e: OciError| match e {
            OciError::DigestMismatch { .. } | OciError::SizeMismatch { .. } | OciError::TooLarge { .. } => {
                ImageError::BlobMismatch { digest: digest.clone(), reason: e.to_string() }
            }
            other => ImageError::BlobStore(other),
        };
        loop {
            let n = response.read(&mut buf).map_err(|source| ImageError::Download { url: url.clone(), source })?;
            if n == 0 {
                break;
            }
            writer.write_chunk(&buf[..n]).map_err(mismatch)?;
            report(writer.bytes_written(), total);
        }
        let written = writer.bytes_written();
        writer.commit().map_err(mismatch)?;
        stats.blobs_downloaded += 1;
        stats.bytes_downloaded += written;
        Ok(())
    }

    /// The unpacked dir of one layer, downloading and unpacking it under its lock when
    /// it is not there yet.
    #[allow(clippy::too_many_arguments)]
    fn ensure_layer(
        &self,
        source: &RegistrySource,
        image: &ImageRef,
        descriptor: &Descriptor,
        blob: &Digest,
        diff_id: &Digest,
        stats: &mut PullStats,
        report: &mut dyn FnMut(u64, u64),
    ) -> Result<PathBuf, ImageError> {
        let dir = self.layer_dir(diff_id);
        if dir.is_dir() {
            touch_dir(&dir);
            self.blobs.touch(blob);
            return Ok(dir);
        }
        let media_type = descriptor.media_type().to_string();
        let compression = manifest::layer_compression(&media_type).map_err(|_| ImageError::UnsupportedMediaType {
            image: image.to_string(),
            media_type: media_type.clone(),
        })?;
        let _lock = self.lock_layer(diff_id, true)?;
        // Another executor may have unpacked it while this one waited for the lock.
        if dir.is_dir() {
            touch_dir(&dir);
            return Ok(dir);
        }
        self.ensure_blob(source, blob, Some(descriptor.size()), stats, report)?;
        let tmp = self.layers_dir().join(format!(
            ".tmp-{}-{}-{}",
            diff_id.hex(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).map_err(|source| ImageError::Io { path: tmp.clone(), source })?;
        let result = self.unpack_blob(blob, compression, diff_id, &tmp);
        if let Err(err) = result {
            // Nothing of a refused or broken layer stays.
            if let Err(e) = fs::remove_dir_all(&tmp) {
                warn!(path = %tmp.display(), error = %error_chain(&e), "cannot remove a partial layer");
            }
            return Err(err);
        }
        fs::rename(&tmp, &dir).map_err(|source| ImageError::Io { path: dir.clone(), source })?;
        stats.layers_unpacked += 1;
        info!(layer = %diff_id.short(), blob = %blob.short(), "layer unpacked");
        Ok(dir)
    }
}

fn diff_ids_of(image: &ImageRef, digest: &Digest, config: &ImageConfiguration) -> Result<Vec<Digest>, ImageError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            d.parse::<Digest>().map_err(|e| ImageError::BadConfig {
                image: image.to_string(),
                digest: digest.clone(),
                reason: format!("diff_id {d:?}: {e}"),
            })
        })
        .collect()
}

/// The `message`s of a registry's `{"errors":[...]}` body.
fn registry_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let messages: Vec<String> = value
        .get("errors")?
        .as_array()?
        .iter()
        .filter_map(|e| {
            let message = e.get("message").and_then(|m| m.as_str())?;
            Some(match e.get("code").and_then(|c| c.as_str()) {
                Some(code) => format!("{message} ({code})"),
                None => message.to_string(),
            })
        })
        .collect();
    if messages.is_empty() {
        None
    } else {
        Some(messages.join("; "))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_are_readable() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"latest"}}]}"#;
        assert_eq!(registry_message(body).unwrap(), "manifest unknown (MANIFEST_UNKNOWN)");
        assert_eq!(registry_message("<html>"), None);
    }
}
