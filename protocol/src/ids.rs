//! Typed identifiers. Each id validates on construction so the rest of the code never
//! sees a malformed one.
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::ProtocolError;

/// A Marathon app id: an absolute path such as `/group/app`. Each segment is lower-case
/// letters, digits, dots and dashes, starting and ending with a letter or digit (Marathon's
/// rule), so ids are safe in URLs, task ids and file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

impl AppId {
    /// Parses an id; a relative id (`app`, `group/app`) is taken relative to the root.
    pub fn parse(raw: &str) -> Result<Self, ProtocolError> {
        let trimmed = raw.trim_matches('/');
        if trimmed.is_empty() {
            return Err(ProtocolError::InvalidId { id: raw.to_string(), reason: "id must not be empty".into() });
        }
        for segment in trimmed.split('/') {
            if let Err(reason) = check_segment(segment) {
                return Err(ProtocolError::InvalidId { id: raw.to_string(), reason });
            }
        }
        Ok(AppId(format!("/{trimmed}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `/group/app` → `group_app`: the prefix Marathon puts in task ids.
    pub fn task_prefix(&self) -> String {
        self.0.trim_start_matches('/').replace('/', "_")
    }

    /// The group path that holds the app (`/group/app` → `/group`, `/app` → `/`).
    pub fn parent(&self) -> &str {
        match self.0.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &self.0[..i],
        }
    }
}

/// The longest app or group id a client may create. Task ids, sandbox directories and
/// cgroup names are built from it (`prefix.uuid`), and file names end at 255 bytes.
pub const MAX_APP_ID_LEN: usize = 200;
/// The deepest group nesting a client may create: group trees are walked and rendered per
/// level, so depth is bounded where ids come in.
pub const MAX_APP_ID_DEPTH: usize = 16;

/// The bounds on ids that clients create (app definitions, group paths). Applied where ids
/// come in, not to ids read back from the store, which were accepted earlier.
pub fn check_id_bounds(id: &str) -> Result<(), String> {
    let trimmed = id.trim_matches('/');
    if trimmed.len() + 1 > MAX_APP_ID_LEN {
        return Err(format!("id is {} characters long; at most {MAX_APP_ID_LEN} are allowed", trimmed.len() + 1));
    }
    let depth = trimmed.split('/').count();
    if depth > MAX_APP_ID_DEPTH {
        return Err(format!("id has {depth} path segments; at most {MAX_APP_ID_DEPTH} are allowed"));
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if segment.is_empty() {
        return Err("empty path segment".into());
    }
    if segment == "." || segment == ".." {
        return Err("path segments '.' and '..' are not allowed".into());
    }
    if !segment.chars().all(ok_char) {
        return Err(format!("segment '{segment}' may contain only lower-case letters, digits, '-' and '.'"));
    }
    let first = segment.chars().next().expect("segment is not empty");
    let last = segment.chars().last().expect("segment is not empty");
    if !edge(first) || !edge(last) {
        return Err(format!("segment '{segment}' must start and end with a letter or digit"));
    }
    Ok(())
}

impl TryFrom<String> for AppId {
    type Error = ProtocolError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AppId::parse(&value)
    }
}
impl From<AppId> for String {
    fn from(value: AppId) -> Self {
        value.0
    }
}
impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An RFC 1123 host name (dot-separated labels of letters, digits and `-`, no label
/// starting with `-`): what nodes may call themselves and profiles may assign.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                $name(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name(value.to_string())
            }
        }
    };
}

string_id!(
    /// A task id in Marathon's form: `{app prefix}.{uuid}` (e.g. `group_app.0b4e…`).
    TaskId
);
string_id!(
    /// An agent id, assigned by the master at first registration and kept by the agent
    /// in its work dir so a restarted agent is recognised.
    AgentId
);
string_id!(
    /// A cluster's id: made once with the master's store (it is the framework id), sent
    /// to agents, which keep it in their checkpoint and follow no master of another cluster.
    ClusterId
);
string_id!(
    /// A deployment id (a UUID, as in Marathon).
    DeploymentId
);
string_id!(
    /// An offer id: one allocation round's view of one agent's free resources.
    OfferId
);

impl TaskId {
    /// A fresh task id for an app.
    pub fn generate(app: &AppId, uuid: uuid::Uuid) -> Self {
        TaskId(format!("{}.{}", app.task_prefix(), uuid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_normalised_and_validated() {
        assert_eq!(AppId::parse("hello").unwrap().as_str(), "/hello");
        assert_eq!(AppId::parse("/prod/web-1/").unwrap().as_str(), "/prod/web-1");
        assert_eq!(AppId::parse("/prod/web").unwrap().parent(), "/prod");
        assert_eq!(AppId::parse("/web").unwrap().parent(), "/");
        for bad in ["", "/", "Hello", "a b", "/a//b", "-a", "a-", "/../x", "a_b", "x!"] {
            assert!(AppId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn created_ids_are_bounded_in_length_and_depth() {
        assert!(check_id_bounds("/prod/web").is_ok());
        let deepest = format!("/{}", vec!["g"; MAX_APP_ID_DEPTH].join("/"));
        assert!(check_id_bounds(&deepest).is_ok());
        let too_deep = format!("/{}", vec!["g"; MAX_APP_ID_DEPTH + 1].join("/"));
        assert!(check_id_bounds(&too_deep).unwrap_err().contains("at most 16"));
        let thousands = format!("/{}", vec!["a"; 3_700].join("/"));
        assert!(check_id_bounds(&thousands).is_err());
        assert!(check_id_bounds(&format!("/{}", "a".repeat(MAX_APP_ID_LEN - 1))).is_ok());
        assert!(check_id_bounds(&format!("/{}", "a".repeat(MAX_APP_ID_LEN))).unwrap_err().contains("at most 200"));
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        assert!(is_valid_hostname("node-1.rack2"));
        for bad in ["", "-node", "a..b", "under_score", "sp ace", &"x".repeat(64)] {
            assert!(!is_valid_hostname(bad), "{bad:?}");
        }
    }

    #[test]
    fn task_ids_carry_the_app_prefix() {
        let app = AppId::parse("/prod/web").unwrap();
        let id = TaskId::generate(&app, uuid::Uuid::nil());
        assert_eq!(id.as_str(), "prod_web.00000000-0000-0000-0000-000000000000");
    }
}
