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
//! - `l/<12 hex>`: short symlinks to layers, for overlay mounts with many layers;
//! - `layers-START-COUNT/`: with `--userns-remap`, that remap's own unpacked layers, every
//!   owner shifted by START (see `crate::userns`); blobs, refs and pins are shared.
//!
//! Which repository path the registry is asked for is the caller's choice
//! ([`RegistrySource`]): the master's registry mirrors images under their full name
//! (`127.0.0.1:5000/demo/hello`, [`RegistrySource::master`]), a plain registry knows
//! them by repository alone ([`RegistrySource::direct`]).
//!
//! Files: `pull.rs` (resolving a reference, downloading and verifying blobs, unpacking
//! each missing layer), `layers.rs` (the unpacked layers on disk: locks, listing,
//! removal), `gc.rs` (pins and the garbage collector), `unpack.rs` (a layer tar into a
//! directory, safely), `rootfs.rs` (a task's overlay), `error.rs`.
mod error;
mod gc;
mod layers;
mod pull;
mod rootfs;
mod unpack;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plinth_oci::{BlobStore, Digest, ImageRef};
use serde::Serialize;

use crate::userns::IdRemap;

pub use error::ImageError;
pub use gc::{GcPolicy, GcReport};
pub use pull::{PullProgress, PullStats, PulledImage};
pub use rootfs::{rootfs_dir, unmount_rootfs};
pub use unpack::{entry_path, hardlink_target, symlink_stays_inside, unpack, unpack_remapped, UnpackLimits, Unpacked};

/// Default cap on the entries of one layer.
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct ImageStoreOptions {
    /// Decompressed bytes one layer may have.
    pub max_layer_bytes: u64,
    /// Tar entries one layer may have.
    pub max_layer_entries: u64,
    /// Connecting to the registry; a body that keeps arriving has no timeout.
    pub connect_timeout: Duration,
    /// `--userns-remap`: layers of their own (`layers-START-COUNT/`), owners shifted.
    pub id_remap: Option<IdRemap>,
}

impl Default for ImageStoreOptions {
    fn default() -> Self {
        ImageStoreOptions {
            max_layer_bytes: crate::config::DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: DEFAULT_MAX_LAYER_ENTRIES,
            connect_timeout: Duration::from_secs(10),
            id_remap: None,
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
        let layers = options.id_remap.map_or_else(|| "layers".to_string(), |r| r.layers_dir_name());
        for dir in [layers.as_str(), "locks", "refs", "pins"] {
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
        self.layers_dir().join(diff_id.hex())
    }

    /// The unpacked layers: `layers/`, or the remap's own `layers-START-COUNT/`.
    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join(self.options.id_remap.map_or_else(|| "layers".to_string(), |r| r.layers_dir_name()))
    }

    /// Short names of layers for long overlay options: `l/`, or `l-START-COUNT/` (they
    /// point into the remap's own layers).
    pub(crate) fn short_links_dir(&self) -> PathBuf {
        match self.options.id_remap {
            Some(remap) => self.root.join(format!("l-{}-{}", remap.start, remap.count)),
            None => self.root.join("l"),
        }
    }

    /// A layer's lock name: one per layer dir, so a remapped unpack never waits for a plain one.
    fn lock_name(&self, diff_id: &Digest) -> String {
        match self.options.id_remap {
            Some(remap) => format!("{}-{}-{}.lock", diff_id.hex(), remap.start, remap.count),
            None => format!("{}.lock", diff_id.hex()),
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ImageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ImageError::Io { path: path.to_path_buf(), source: e.into() })?;
    let tmp =
        path.with_extension(format!("tmp-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    fs::write(&tmp, bytes).map_err(|source| ImageError::Io { path: tmp.clone(), source })?;
    fs::rename(&tmp, path).map_err(|source| ImageError::Io { path: path.to_path_buf(), source })
}
