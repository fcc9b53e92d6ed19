//! The agent's image store (`WORK_DIR/images`): pulls images from the master's registry,
//! unpacks each layer once into a content-addressed layer store and mounts a task's root
//! filesystem as an overlayfs of them.
//!
//! Layout:
//! - `blobs/sha256/<hex>`: config and compressed layer blobs, verified while streaming
//!   ([`BlobStore`]);
//! - `layers/<diff_id hex>/`: unpacked layers, keyed by the uncompressed digest, created
//!   through a temp dir and an atomic rename under `locks/<hex>.lock` (`flock`), so
//!   concurrent executors unpack a layer once and never see half of one;
//! - `refs/<sha256 of the reference>.json`: what a reference resolved to, so a pull that
//!   is not forced needs no registry at all when everything is present;
//! - `pins/<task id>.json`: what a task uses; [`ImageStore::gc`] never removes it;
//! - `l/<12 hex>`: short symlinks to layers, for overlay mounts with many layers.
//!
//! Which repository path the registry is asked for is the caller's choice
//! ([`RegistrySource`]): the master's registry mirrors images under their full name
//! (`127.0.0.1:5000/demo/hello`, [`RegistrySource::master`]), a plain registry knows
//! them by repository alone ([`RegistrySource::direct`]).
mod rootfs;
mod unpack;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use oci_spec::image::{Descriptor, ImageConfiguration};
use plinth_oci::manifest::{self, Compression, Parsed};
use plinth_oci::{BlobStore, Digest, ImageRef, OciError};
use plinth_protocol::error_chain;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

pub use rootfs::{rootfs_dir, unmount_rootfs};
pub use unpack::{entry_path, hardlink_target, symlink_stays_inside, UnpackLimits};

/// The largest manifest or config document accepted (real ones are a few KiB).
const MAX_DOCUMENT_BYTES: u64 = 4 << 20;
/// Default cap on the entries of one layer.
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// `image` names what was asked for: `image 127.0.0.1:5000/nope:latest`, or a blob.
    #[error("{image} not found: {message}")]
    NotFound { image: String, message: String },
    #[error("cannot reach the registry at {url}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry answered {status} for {url}: {message}")]
    Registry { url: String, status: u16, message: String },
    #[error("reading {url} from the registry")]
    Download {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("bad manifest for {image}")]
    BadManifest {
        image: String,
        #[source]
        source: OciError,
    },
    #[error("bad manifest for {image}: {reason}")]
    ManifestContent { image: String, reason: String },
    #[error("unsupported media type {media_type:?} in {image}")]
    UnsupportedMediaType { image: String, media_type: String },
    #[error("bad image config {digest} of {image}: {reason}")]
    BadConfig { image: String, digest: Digest, reason: String },
    #[error("blob {digest} does not match its descriptor: {reason}; nothing was kept")]
    BlobMismatch { digest: Digest, reason: String },
    #[error("blob store")]
    BlobStore(#[source] OciError),
    #[error("layer {layer} refused: entry {entry:?}: {reason}")]
    HostileLayer { layer: String, entry: String, reason: String },
    #[error("layer {layer} refused: it decompresses to more than {limit} bytes (decompression bomb?)")]
    LayerTooLarge { layer: String, limit: u64, seen: u64 },
    #[error("layer {layer}: the uncompressed content is {actual}, the image config says {expected}")]
    DiffIdMismatch { layer: String, expected: String, actual: String },
    #[error("reading layer {layer}")]
    LayerRead {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("unpacking layer {layer}: writing {path}")]
    LayerWrite {
        layer: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting the rootfs at {target}: {reason}")]
    Mount {
        target: PathBuf,
        reason: String,
        #[source]
        source: Option<io::Error>,
    },
    #[error("invalid task id {task_id:?} for a pin")]
    InvalidTaskId { task_id: String },
}

#[derive(Debug, Clone)]
pub struct ImageStoreOptions {
    /// Decompressed bytes one layer may have.
    pub max_layer_bytes: u64,
    /// Tar entries one layer may have.
    pub max_layer_entries: u64,
    /// Connecting to the registry; a body that keeps arriving has no timeout.
    pub connect_timeout: Duration,
}

impl Default for ImageStoreOptions {
    fn default() -> Self {
        ImageStoreOptions {
            max_layer_bytes: crate::config::DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: DEFAULT_MAX_LAYER_ENTRIES,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Where to pull from: the registry's base URL and the repository path to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySource {
    /// `http://10.0.0.1:5000`.
    pub base: String,
    /// The `{name}` in `/v2/{name}/manifests/...`.
    pub repository: String,
}

impl RegistrySource {
    /// The master's registry, which mirrors every image under its full name
    /// (`127.0.0.1:5000/demo/hello`, `docker.io/library/busybox`).
    pub fn master(base: &str, image: &ImageRef) -> Self {
        RegistrySource { base: base.trim_end_matches('/').to_string(), repository: image.name() }
    }

    /// A registry that knows the image by its repository alone (`demo/hello`).
    pub fn direct(base: &str, repository: &str) -> Self {
        RegistrySource { base: base.trim_end_matches('/').to_string(), repository: repository.to_string() }
    }
}

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

pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    options: ImageStoreOptions,
    client: reqwest::blocking::Client,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ImageStore {
    /// Opens (creating) the store under `root` (`WORK_DIR/images`).
    pub fn open(root: impl Into<PathBuf>, options: ImageStoreOptions) -> Result<Self, ImageError> {
        let root = root.into();
        for dir in ["layers", "locks", "refs", "pins"] {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).map_err(|source| ImageError::Io { path: dir, source })?;
        }
        let blobs = BlobStore::open(root.join("blobs")).map_err(ImageError::BlobStore)?;
        // reqwest is built without a default TLS provider; whoever comes first installs ring.
        plinth_oci::tls::install_provider();
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(options.connect_timeout)
            // Layers can be large and links slow: a body that keeps arriving may take as long as it takes.
            .timeout(None)
            .build()
            .map_err(|source| ImageError::Connect { url: "(client setup)".into(), source })?;
        Ok(ImageStore { root, blobs, options, client })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The unpacked dir of the layer with this uncompressed digest.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

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
        let tmp = self.root.join("layers").join(format!(
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

    fn unpack_blob(
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
        let unpacked = unpack::unpack(stream, dest, &layer, limits)?;
        if unpacked.diff_id != diff_id.as_str() {
            return Err(ImageError::DiffIdMismatch { layer, expected: diff_id.to_string(), actual: unpacked.diff_id });
        }
        debug!(layer = %diff_id.short(), entries = unpacked.entries, bytes = unpacked.bytes, "layer verified");
        Ok(())
    }

    /// An exclusive `flock` on the layer's lock file, held until the file is dropped.
    /// `wait: false` returns `None` when someone else holds it.
    fn lock_layer(&self, diff_id: &Digest, wait: bool) -> Result<Option<File>, ImageError> {
        let path = self.root.join("locks").join(format!("{}.lock", diff_id.hex()));
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

    /// Unpacked layers: diff_id, bytes on disk, last use.
    fn list_layers(&self) -> Vec<(Digest, u64, SystemTime)> {
        let Ok(entries) = fs::read_dir(self.root.join("layers")) else { return Vec::new() };
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
    fn remove_leftovers(&self, grace: Duration) {
        let Ok(entries) = fs::read_dir(self.root.join("layers")) else { return };
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
    fn remove_layer(&self, diff_id: &Digest) -> Result<bool, ImageError> {
        let Some(_lock) = self.lock_layer(diff_id, false)? else { return Ok(false) };
        let dir = self.layer_dir(diff_id);
        // Out of sight first, atomically: a pull never finds half a layer.
        let doomed = self.root.join("layers").join(format!(
            ".gc-{}-{}-{}",
            diff_id.hex(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(&dir, &doomed).map_err(|source| ImageError::Io { path: dir.clone(), source })?;
        fs::remove_dir_all(&doomed).map_err(|source| ImageError::Io { path: doomed, source })?;
        let _ = fs::remove_file(self.root.join("l").join(&diff_id.hex()[..12]));
        debug!(layer = %diff_id.short(), "layer collected");
        Ok(true)
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

/// Marks a layer used now (its dir's mtime: the dir never changes after the rename).
fn touch_dir(dir: &Path) {
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

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ImageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ImageError::Io { path: path.to_path_buf(), source: e.into() })?;
    let tmp =
        path.with_extension(format!("tmp-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    fs::write(&tmp, bytes).map_err(|source| ImageError::Io { path: tmp.clone(), source })?;
    fs::rename(&tmp, path).map_err(|source| ImageError::Io { path: path.to_path_buf(), source })
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
