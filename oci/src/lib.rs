//! OCI images as master and agent both see them: [`Digest`]s, Docker-style image
//! references ([`ImageRef`]), manifests and indexes with platform resolution
//! ([`manifest`]), and the content-addressed [`BlobStore`] that only ever holds verified
//! content. The master's registry (pull-through cache and push target) and the agent's
//! layer store are both built on it.
pub mod digest;
pub mod error;
pub mod manifest;
pub mod reference;
pub mod store;
pub mod tls;

pub use digest::{Digest, DigestVerifier};
pub use error::OciError;
pub use reference::ImageRef;
pub use store::BlobStore;
