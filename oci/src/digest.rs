//! `sha256:<64 hex>` digests and the hasher that checks content against one while it streams.
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::OciError;

/// A content digest. Only sha256 is accepted: it is what every registry and runtime
/// uses, and refusing the rest keeps unverifiable content out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{:x}", Sha256::digest(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters (a safe file name: validated on construction).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// Short form for logs and tables (`sha256:0123456789ab`).
    pub fn short(&self) -> &str {
        &self.0[..("sha256:".len() + 12)]
    }
}

impl FromStr for Digest {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, OciError> {
        let invalid = |reason| OciError::InvalidDigest { digest: s.to_string(), reason };
        let hex = s.strip_prefix("sha256:").ok_or_else(|| invalid("only sha256 digests are supported"))?;
        if hex.len() != 64 {
            return Err(invalid("a sha256 digest has 64 hex characters"));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("a sha256 digest is lowercase hex"));
        }
        Ok(Digest(s.to_string()))
    }
}

impl TryFrom<String> for Digest {
    type Error = OciError;
    fn try_from(s: String) -> Result<Self, OciError> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes content as it passes and checks it against the expected digest (and size,
/// when known) at the end, and against a size limit as it goes.
pub struct DigestVerifier {
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Sha256,
    seen: u64,
}

impl DigestVerifier {
    pub fn new(expected: Digest, expected_size: Option<u64>) -> Self {
        DigestVerifier { expected, expected_size, hasher: Sha256::new(), seen: 0 }
    }

    /// Feeds a chunk; fails as soon as more bytes arrive than the descriptor announced.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), OciError> {
        self.seen += chunk.len() as u64;
        if let Some(size) = self.expected_size {
            if self.seen > size {
                return Err(OciError::SizeMismatch { expected: size, actual: self.seen });
            }
        }
        self.hasher.update(chunk);
        Ok(())
    }

    pub fn bytes_seen(&self) -> u64 {
        self.seen
    }

    /// Checks the whole content.
    pub fn finish(self) -> Result<Digest, OciError> {
        if let Some(size) = self.expected_size {
            if self.seen != size {
                return Err(OciError::SizeMismatch { expected: size, actual: self.seen });
            }
        }
        let actual = Digest(format!("sha256:{:x}", self.hasher.finalize()));
        if actual != self.expected {
            return Err(OciError::DigestMismatch { expected: self.expected.to_string(), actual: actual.to_string() });
        }
        Ok(actual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_validated() {
        let d = Digest::of(b"hello");
        assert_eq!(d.as_str(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:ABCD".parse::<Digest>().is_err());
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    #[test]
    fn verifier_catches_wrong_content_and_size() {
        let d = Digest::of(b"hello");
        let mut v = DigestVerifier::new(d.clone(), Some(5));
        v.update(b"hel").unwrap();
        v.update(b"lo").unwrap();
        assert_eq!(v.finish().unwrap(), d);

        let mut v = DigestVerifier::new(d.clone(), Some(5));
        v.update(b"jello").unwrap();
        assert!(matches!(v.finish(), Err(OciError::DigestMismatch { .. })));

        let mut v = DigestVerifier::new(d.clone(), Some(5));
        assert!(matches!(v.update(b"hello!"), Err(OciError::SizeMismatch { .. })));

        let mut v = DigestVerifier::new(d, Some(6));
        v.update(b"hello").unwrap();
        assert!(matches!(v.finish(), Err(OciError::SizeMismatch { expected: 6, actual: 5 })));
    }
}
