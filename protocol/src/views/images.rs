//! Plinth's `/v1/images`: the images the master's registry holds (pulled through its
//! cache or pushed to it), as `plinth image list|pull|rm` shows them. Not Marathon's: no
//! Marathon client looks here.
use serde::{Deserialize, Serialize};

/// One tag the registry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The registry's repository: `docker.io/library/busybox` (mirrored) or `demo/app` (pushed).
    pub repository: String,
    pub tag: String,
    /// The manifest (or index) the tag points at.
    pub digest: String,
    /// Manifest, config and layers (an index: its linux/amd64 image), compressed as stored.
    pub size_bytes: u64,
    /// When the tag was last written (pull or push), ISO 8601.
    pub pulled_at: String,
    /// When the manifest was last served or pulled, ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    /// The upstream registry it was pulled from (`docker.io`), or `pushed`.
    pub source: String,
    /// Apps whose image this is.
    pub used_by: Vec<String>,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// `POST /v1/images` with `{"image": "busybox:1.36", "forcePull": false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub image: String,
    /// Ask the upstream again even when the tag is cached.
    #[serde(default)]
    pub force_pull: bool,
}

/// The answer of a pull: the image and what crossed the uplink for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pulled {
    pub image: Image,
    /// 0 when everything was cached already.
    pub downloaded_bytes: u64,
}

/// The answer of `DELETE /v1/images/{image}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    /// Blobs only this tag reached, removed with it.
    pub blobs_removed: usize,
    pub freed_bytes: u64,
}
