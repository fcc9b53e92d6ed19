//! What can go wrong in the image store, each error naming the image, blob, layer or
//! path it concerns and leaving its cause to `source()`.
use std::io;
use std::path::PathBuf;

use plinth_oci::{Digest, OciError};

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
