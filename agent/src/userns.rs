//! `--userns-remap START:COUNT` (Docker's option): containers run in a user namespace
//! where container id N is host id START + N, for N below COUNT. Container root is then
//! an unprivileged host user: what it owns, and what it can reach on the host, is
//! START's.
//!
//! The image's files must be owned by the shifted ids. That is done as Docker does it,
//! not with idmapped mounts: each remap has its own layer cache (`layers-START-COUNT/`
//! beside `layers/`) unpacked with every owner shifted, and owners at or past COUNT
//! refused. Idmapped mounts would need the layer store's filesystem to support them,
//! and a node's work dir is often a tmpfs, which gained them only in Linux 6.3 (after
//! some kernels nodes boot), and the overlay over them on top; a shifted copy works on
//! any filesystem and kernel.
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// A range of host ids: container id 0 is `start`, there are `count` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRemap {
    pub start: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemapError {
    #[error("'{0}' is not START:COUNT (e.g. 100000:65536)")]
    Syntax(String),
    #[error("START must not be 0: container root would be the host's root")]
    StartsAtRoot,
    #[error("COUNT must be at least 1")]
    Empty,
    #[error("START + COUNT passes the last host id")]
    TooLarge,
    #[error("{kind} {id} is outside the remapped range (container ids 0 to {last})")]
    Outside { kind: &'static str, id: u32, last: u32 },
}

impl FromStr for IdRemap {
    type Err = RemapError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || RemapError::Syntax(text.to_string());
        let (start, count) = text.split_once(':').ok_or_else(syntax)?;
        let start: u32 = start.trim().parse().map_err(|_| syntax())?;
        let count: u32 = count.trim().parse().map_err(|_| syntax())?;
        if start == 0 {
            return Err(RemapError::StartsAtRoot);
        }
        if count == 0 {
            return Err(RemapError::Empty);
        }
        // u32::MAX is no id ((uid_t)-1 means "unchanged" to chown).
        if start.checked_add(count).is_none_or(|end| end == u32::MAX) {
            return Err(RemapError::TooLarge);
        }
        Ok(IdRemap { start, count })
    }
}

impl std::fmt::Display for IdRemap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.start, self.count)
    }
}

impl IdRemap {
    /// The host id of container id `id` (`kind`, "uid" or "gid", names it in the error).
    pub fn host_id(&self, kind: &'static str, id: u32) -> Result<u32, RemapError> {
        if id >= self.count {
            return Err(RemapError::Outside { kind, id, last: self.count - 1 });
        }
        Ok(self.start + id)
    }

    /// The directory of this remap's layer cache in the image store.
    pub fn layers_dir_name(&self) -> String {
        format!("layers-{}-{}", self.start, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_shift_within_count() {
        let remap: IdRemap = "100000:65536".parse().unwrap();
        assert_eq!(remap, IdRemap { start: 100000, count: 65536 });
        assert_eq!(remap.host_id("uid", 0), Ok(100000));
        assert_eq!(remap.host_id("gid", 65535), Ok(165535));
        let outside = remap.host_id("uid", 65536).unwrap_err();
        assert_eq!(outside.to_string(), "uid 65536 is outside the remapped range (container ids 0 to 65535)");
        assert_eq!(remap.layers_dir_name(), "layers-100000-65536");
        assert_eq!(remap.to_string(), "100000:65536");
    }

    #[test]
    fn bad_ranges_are_refused_with_the_reason() {
        assert_eq!("100000".parse::<IdRemap>(), Err(RemapError::Syntax("100000".into())));
        assert_eq!("a:1".parse::<IdRemap>(), Err(RemapError::Syntax("a:1".into())));
        assert_eq!("0:65536".parse::<IdRemap>(), Err(RemapError::StartsAtRoot));
        assert_eq!("100000:0".parse::<IdRemap>(), Err(RemapError::Empty));
        assert_eq!("4294967000:65536".parse::<IdRemap>(), Err(RemapError::TooLarge));
    }
}
