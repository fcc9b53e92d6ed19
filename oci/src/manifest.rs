//! Manifests and indexes in both spellings (Docker schema2 and OCI), and resolving an
//! index (manifest list) to the node's platform.
use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, Os};

use crate::{Digest, OciError};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest type Plinth understands, for `Accept` headers.
pub const ACCEPTED: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The platform Plinth nodes run.
pub const PLATFORM_OS: &str = "linux";
pub const PLATFORM_ARCH: &str = "amd64";

/// A parsed manifest document.
// why: a parse result, matched right after parsing and never kept in bulk; boxing the
// manifest would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Parsed {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Parses manifest bytes. The media type comes from the document itself when it says
/// (`mediaType`), else from the `Content-Type` the registry sent.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, OciError> {
    let invalid = |reason: String| OciError::InvalidManifest { reason };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()));
    let is_index = match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        // An OCI manifest may leave mediaType out; the shape tells.
        _ => value.get("manifests").is_some(),
    };
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(invalid("only schemaVersion 2 manifests are supported (schema1 is deprecated)".into()));
    }
    if is_index {
        serde_json::from_value(value).map(Parsed::Index).map_err(|e| invalid(format!("bad index: {e}")))
    } else {
        serde_json::from_value(value).map(Parsed::Image).map_err(|e| invalid(format!("bad manifest: {e}")))
    }
}

/// The media type to serve a stored manifest with.
pub fn media_type_of(bytes: &[u8]) -> &'static str {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(DOCKER_MANIFEST) => DOCKER_MANIFEST,
        Some(DOCKER_LIST) => DOCKER_LIST,
        Some(OCI_INDEX) => OCI_INDEX,
        Some(_) => OCI_MANIFEST,
        None if value.get("manifests").is_some() => OCI_INDEX,
        None => OCI_MANIFEST,
    }
}

/// Picks the linux/amd64 manifest out of an index.
pub fn select_platform(index: &ImageIndex) -> Result<Descriptor, OciError> {
    let matches = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    };
    if let Some(found) = index.manifests().iter().find(matches) {
        return Ok(found.clone());
    }
    let available: Vec<String> = index
        .manifests()
        .iter()
        .map(|d| match d.platform() {
            Some(p) => format!("{}/{}", p.os(), p.architecture()),
            None => "unspecified".to_string(),
        })
        .collect();
    Err(OciError::NoPlatform {
        platform: format!("{PLATFORM_OS}/{PLATFORM_ARCH}"),
        available: if available.is_empty() { "nothing".into() } else { available.join(", ") },
    })
}

/// The digest a descriptor names, validated.
pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest, OciError> {
    descriptor.digest().to_string().parse()
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn layer_compression(media_type: &str) -> Result<Compression, OciError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Ok(Compression::None)
        }
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(OciError::InvalidManifest { reason: format!("unsupported layer media type {other:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_json(platforms: &[(&str, &str)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch))| {
                serde_json::json!({"mediaType": DOCKER_MANIFEST, "size": 10, "digest": Digest::of(&[u8::try_from(i).unwrap()]).to_string(),
                    "platform": {"os": os, "architecture": arch}})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn manifest_lists_resolve_to_linux_amd64() {
        let Parsed::Index(index) = parse(&index_json(&[("linux", "arm64"), ("linux", "amd64")]), None).unwrap() else {
            panic!("an index")
        };
        assert_eq!(descriptor_digest(&select_platform(&index).unwrap()).unwrap(), Digest::of(&[1]));
        let Parsed::Index(index) = parse(&index_json(&[("linux", "arm64"), ("windows", "amd64")]), None).unwrap()
        else {
            panic!("an index")
        };
        let err = select_platform(&index).unwrap_err().to_string();
        assert!(err.contains("linux/amd64") && err.contains("linux/arm64, windows/amd64"), "{err}");
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        assert!(parse(b"{\"schemaVersion\":1,\"name\":\"x\"}", None).is_err());
        assert!(parse(b"not json", None).is_err());
        assert_eq!(layer_compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(), Compression::Zstd);
        assert!(layer_compression("text/html").is_err());
    }
}
