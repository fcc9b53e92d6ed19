//! Image names resolved as Docker resolves them: `busybox` is
//! `docker.io/library/busybox:latest`, `127.0.0.1:5000/demo/hello` names a registry.
use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::Reference;

use crate::{Digest, OciError};

/// A normalised image reference. The tag defaults to `latest` unless a digest pins it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<Self, OciError> {
        let invalid = |reason: String| OciError::InvalidReference { reference: image.to_string(), reason };
        if image.trim().is_empty() {
            return Err(invalid("the image name is empty".into()));
        }
        if image != image.trim() {
            return Err(invalid("the image name has leading or trailing spaces".into()));
        }
        let parsed = Reference::from_str(image).map_err(|e| invalid(e.to_string()))?;
        if parsed.repository().chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase".into()));
        }
        let digest = parsed.digest().map(str::parse::<Digest>).transpose().map_err(|e| invalid(e.to_string()))?;
        let tag = match (parsed.tag(), &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag,
            digest,
        })
    }

    /// `docker.io`, `127.0.0.1:5000`, `quay.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `library/busybox`, `demo/hello`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Registry and repository: `docker.io/library/busybox`. This is also the
    /// repository name under which the master's registry mirrors the image.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask a registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same image pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef { digest: Some(digest), ..self.clone() }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, OciError> {
        ImageRef::parse(s)
    }
}

/// Whether the first component of a repository path names a registry (Docker's rule:
/// it has a `.` or a `:`, or is `localhost`), as in `127.0.0.1:5000/demo/hello`.
pub fn names_registry(first_component: &str) -> bool {
    first_component.contains('.') || first_component.contains(':') || first_component == "localhost"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.reference(), "latest");

        let r = ImageRef::parse("127.0.0.1:5000/demo/hello").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "demo/hello", Some("latest")));

        let r = ImageRef::parse("user/app:v2").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:v2");

        let pinned = format!("quay.io/a/b@{}", Digest::of(b"x"));
        let r = ImageRef::parse(&pinned).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.reference(), Digest::of(b"x").to_string());
        assert!(names_registry("localhost") && names_registry("a.b") && names_registry("h:5000"));
        assert!(!names_registry("demo"));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", " busybox", "UPPER/case", "a/b:bad tag", "a@sha256:zz", "a//b"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
