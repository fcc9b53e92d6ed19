//! Why a pull failed, as every caller of a shared pull sees it: a kind (for the
//! registry's HTTP status) and a message that carries the whole cause.
use oci_client::errors::OciDistributionError;
use plinth_oci::{ImageRef, OciError};
use plinth_protocol::error_chain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullErrorKind {
    /// The upstream has no such repository, tag or digest.
    NotFound,
    Unauthorized,
    /// The upstream could not be reached or failed.
    Unreachable,
    /// The upstream sent content that does not verify (digest, size, manifest).
    Invalid,
    /// Writing to the local store failed.
    Storage,
}

/// Cloneable so that every caller of a shared pull gets the error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("pulling {image}: {message}")]
pub struct PullError {
    pub image: String,
    pub kind: PullErrorKind,
    pub message: String,
}

impl PullError {
    pub(super) fn new(image: &ImageRef, kind: PullErrorKind, message: impl Into<String>) -> Self {
        PullError { image: image.to_string(), kind, message: message.into() }
    }

    pub(super) fn upstream(image: &ImageRef, error: OciDistributionError) -> Self {
        use OciDistributionError as E;
        let kind = match &error {
            E::ImageManifestNotFoundError(_) => PullErrorKind::NotFound,
            E::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    let code = format!("{:?}", e.code).to_ascii_uppercase();
                    code.contains("UNKNOWN")
                }) =>
            {
                PullErrorKind::NotFound
            }
            E::ServerError { code: 404, .. } => PullErrorKind::NotFound,
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => PullErrorKind::Unauthorized,
            E::DigestError(_) | E::ManifestParsingError(_) | E::UnsupportedMediaTypeError(_) => PullErrorKind::Invalid,
            _ => PullErrorKind::Unreachable,
        };
        if answered_in_plain_http(&error) {
            let registry = image.registry();
            return PullError::new(
                image,
                PullErrorKind::Unreachable,
                format!(
                    "{registry} answered in plain HTTP, not HTTPS; if it is a plain-HTTP registry you trust, \
                     start the master with --insecure-registry {registry}"
                ),
            );
        }
        PullError::new(image, kind, upstream_chain(&error))
    }

    pub(super) fn content(image: &ImageRef, error: OciError) -> Self {
        let kind = match error {
            OciError::Write { .. } | OciError::Read { .. } => PullErrorKind::Storage,
            _ => PullErrorKind::Invalid,
        };
        PullError::new(image, kind, error_chain(&error).to_string())
    }
}

/// Whether a TLS handshake failed because the server answered in plain HTTP (rustls sees
/// an HTTP response where a TLS record should be: `InvalidContentType`).
fn answered_in_plain_http(error: &(dyn std::error::Error + 'static)) -> bool {
    let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
    // The HTTP stack wraps the TLS error in its own boxes: when no layer hands out the
    // rustls value itself, its message (rustls' own rendering) identifies it.
    let plain_text = plain.to_string();
    let mut current = Some(error);
    while let Some(e) = current {
        if e.to_string() == plain_text {
            return true;
        }
        let tls = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| e.downcast_ref::<rustls::Error>());
        if tls == Some(&plain) {
            return true;
        }
        current = e.source();
    }
    false
}

/// An upstream error with its causes, for a [`PullError`]'s message: like
/// [`plinth_protocol::error_chain`] (`outer: inner: root`), but a cause whose text the
/// message already holds is left out. `oci-client`'s errors put their source into their
/// own message as well as returning it from `source()` (`Digest error: {0}` over a
/// `#[from]` source, for one), so the plain chain would print such a cause twice. Our
/// own errors (`OciError`, `RegistryError`) leave their causes to `source()` and use the
/// plain adapter; this one stays for as long as `oci-client` embeds its sources.
pub(super) fn upstream_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
