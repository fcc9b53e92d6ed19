//! Who may use the master's API, and what they may do: the credential store behind HTTP
//! Basic and bearer tokens (pure: it reads no file and no header by itself), the two roles,
//! and which event callback URLs may be subscribed.
//!
//! Secrets are kept only as SHA-256 digests and compared in constant time (`subtle`), so a
//! wrong guess takes as long as a right one whatever it shares with a real secret. Nothing
//! here prints a secret: `Debug` shows counts and names only.
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads only (`GET`, `HEAD`, `OPTIONS`, event streams).
    ReadOnly,
    /// Reads and writes.
    Admin,
}

impl Role {
    /// The role a request with this method needs.
    pub fn needed_for(method: &axum::http::Method) -> Role {
        if matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS) {
            Role::ReadOnly
        } else {
            Role::Admin
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Admin => "admin",
        }
    }
}

/// Who a request was made by (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user of HTTP Basic, or `token <n> of <file>` for a bearer token.
    pub name: String,
    pub role: Role,
}

/// Why a request carries no valid credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// A header that is neither `Basic base64(user:password)` nor `Bearer token`.
    Malformed,
    /// Well-formed, but no such user, password or token.
    Wrong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Basic,
    Bearer,
}

struct Entry {
    scheme: Scheme,
    name: String,
    role: Role,
    digest: [u8; 32],
}

fn digest(scheme: Scheme, secret: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(match scheme {
        Scheme::Basic => b"basic\0".as_slice(),
        Scheme::Bearer => b"bearer\0".as_slice(),
    });
    hasher.update(secret);
    hasher.finalize().into()
}

/// A credentials or token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read {path}")]
    Read { path: String, source: std::io::Error },
    #[error("{source_name} line {line}: {reason}")]
    Line { source_name: String, line: usize, reason: String },
    #[error("{source_name} holds no credentials (lines `user:password` or tokens; `#` starts a comment)")]
    Empty { source_name: String },
    #[error("user '{user}' is given twice ({first} and {second})")]
    DuplicateUser { user: String, first: String, second: String },
    #[error("--event-callback-allow: '{prefix}' is not an http:// or https:// URL with a host")]
    CallbackPrefix { prefix: String },
}

/// The master's users and tokens. Empty means the API is open (Marathon's default).
#[derive(Default)]
pub struct Credentials {
    entries: Vec<Entry>,
    /// Where each user came from, to name both places of a duplicate.
    users: Vec<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |scheme, role| self.entries.iter().filter(|e| e.scheme == scheme && e.role == role).count();
        f.debug_struct("Credentials")
            .field("users", &self.users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
            .field("admin_tokens", &count(Scheme::Bearer, Role::Admin))
            .field("read_only_tokens", &count(Scheme::Bearer, Role::ReadOnly))
            .finish()
    }
}

/// Lines that are neither blank nor comments, numbered from 1, trimmed.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `user:password` lines (the password may contain `:`; the user may not).
    /// `source_name` names the file (or variable) in errors; it never holds a secret.
    pub fn add_users(&mut self, text: &str, role: Role, source_name: &str) -> Result<(), AccessError> {
        let before = self.entries.len();
        for (line, entry) in lines(text) {
            let bad = |reason: &str| AccessError::Line {
                source_name: source_name.to_string(),
                line,
                reason: reason.to_string(),
            };
            let (user, password) = entry.split_once(':').ok_or_else(|| bad("expected user:password"))?;
            if user.is_empty() || user.chars().any(char::is_whitespace) {
                return Err(bad("the user name is empty or has spaces"));
            }
            if password.is_empty() {
                return Err(bad("the password is empty"));
            }
            let place = format!("{source_name} line {line}");
            if let Some((_, first)) = self.users.iter().find(|(u, _)| u == user) {
                return Err(AccessError::DuplicateUser { user: user.to_string(), first: first.clone(), second: place });
            }
            self.users.push((user.to_string(), place));
            let digest = digest(Scheme::Basic, entry.as_bytes());
            self.entries.push(Entry { scheme: Scheme::Basic, name: user.to_string(), role, digest });
        }
        self.require_some(before, source_name)
    }

    /// Adds bearer tokens, one a line.
    pub fn add_tokens(&mut self, text: &str, role: Role, source_name: &str) -> Result<(), AccessError> {
        let before = self.entries.len();
        for (line, token) in lines(text) {
            if token.chars().any(char::is_whitespace) {
                return Err(AccessError::Line {
                    source_name: source_name.to_string(),
                    line,
                    reason: "a token has no spaces".into(),
                });
            }
            let name = format!("token on line {line} of {source_name}");
            let digest = digest(Scheme::Bearer, token.as_bytes());
            self.entries.push(Entry { scheme: Scheme::Bearer, name, role, digest });
        }
        self.require_some(before, source_name)
    }

    fn require_some(&self, before: usize, source_name: &str) -> Result<(), AccessError> {
        if self.entries.len() == before {
            return Err(AccessError::Empty { source_name: source_name.to_string() });
        }
        Ok(())
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Identity, Refusal> {
        let header = header.ok_or(Refusal::Missing)?;
        let text = std::str::from_utf8(header).map_err(|_| Refusal::Malformed)?.trim();
        let (scheme, value) = text.split_once(' ').ok_or(Refusal::Malformed)?;
        let (scheme, secret) = if scheme.eq_ignore_ascii_case("basic") {
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(value.trim()).map_err(|_| Refusal::Malformed)?;
            if !decoded.contains(&b':') {
                return Err(Refusal::Malformed);
            }
            (Scheme::Basic, decoded)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            (Scheme::Bearer, value.trim().as_bytes().to_vec())
        } else {
            return Err(Refusal::Malformed);
        };
        let presented = digest(scheme, &secret);
        // Every entry is compared, so the time does not say which one matched.
        let mut matched = None;
        for entry in &self.entries {
            let same = entry.digest.ct_eq(&presented) & u8::from(entry.scheme == scheme).ct_eq(&1);
            if bool::from(same) {
                matched = Some(entry);
            }
        }
        matched.map(|e| Identity { name: e.name.clone(), role: e.role }).ok_or(Refusal::Wrong)
    }
}

/// One `--event-callback-allow` entry: callbacks to this scheme, host and port, under this path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackPrefix(reqwest::Url);

impl CallbackPrefix {
    pub fn parse(prefix: &str) -> Result<CallbackPrefix, AccessError> {
        let bad = || AccessError::CallbackPrefix { prefix: prefix.to_string() };
        let url = reqwest::Url::parse(prefix.trim()).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad());
        }
        Ok(CallbackPrefix(url))
    }

    /// Compared part by part, never as text: `http://a:80@b/` has host `b`, not `a`.
    fn allows(&self, url: &reqwest::Url) -> bool {
        let path_ok = {
            let prefix = self.0.path();
            let path = url.path();
            path.starts_with(prefix)
                && (prefix.ends_with('/') || path.len() == prefix.len() || path[prefix.len()..].starts_with('/'))
        };
        self.0.scheme() == url.scheme()
            && self.0.host_str() == url.host_str()
            && self.0.port_or_known_default() == url.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && path_ok
    }
}

/// Access settings of a master (`plinth master` flags).
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Users and tokens; empty: the API is open.
    pub credentials: Arc<Credentials>,
    /// `--event-callback-allow`; `None`: any URL while the API is open, none once it has
    /// credentials (a callback receives every event, so it is as much as read access).
    pub callback_allow: Option<Vec<CallbackPrefix>>,
    /// `--events-include-env`: events carry apps' `env` values (else only their names).
    pub events_include_env: bool,
}

impl AccessConfig {
    /// Whether a callback subscription to `url` is allowed; the refusal in words.
    pub fn check_callback(&self, url: &reqwest::Url) -> Result<(), String> {
        match &self.callback_allow {
            Some(prefixes) if prefixes.iter().any(|p| p.allows(url)) => Ok(()),
            Some(_) => Err(format!(
                "callbackUrl '{url}' is not allowed: the master accepts callbacks only under its --event-callback-allow prefixes"
            )),
            None if self.credentials.is_empty() => Ok(()),
            None => Err("event callbacks are disabled on this master: start it with --event-callback-allow PREFIX to allow callback URLs under PREFIX".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_password)).into_bytes()
    }

    fn store() -> Credentials {
        let mut c = Credentials::default();
        c.add_users("# admins\nalice:s3:cr:et\n\n  bob:pw  \n", Role::Admin, "admins.txt").unwrap();
        c.add_users("carol:ro", Role::ReadOnly, "readers.txt").unwrap();
        c.add_tokens("tok-admin\n", Role::Admin, "tokens.txt").unwrap();
        c.add_tokens("tok-read", Role::ReadOnly, "ro-tokens.txt").unwrap();
        c
    }

    #[test]
    fn users_and_tokens_authenticate_with_their_roles() {
        let c = store();
        let who = |h: &[u8]| c.authenticate(Some(h));
        assert_eq!(who(&basic("alice:s3:cr:et")), Ok(Identity { name: "alice".into(), role: Role::Admin }));
        assert_eq!(who(&basic("bob:pw")).map(|i| i.role), Ok(Role::Admin));
        assert_eq!(who(&basic("carol:ro")).map(|i| i.role), Ok(Role::ReadOnly));
        assert_eq!(who(b"Bearer tok-admin").map(|i| i.role), Ok(Role::Admin));
        assert_eq!(who(b"bearer  tok-read ").map(|i| i.role), Ok(Role::ReadOnly));
        assert!(!who(b"Bearer tok-admin").unwrap().name.contains("tok-admin"), "the name never holds the token");
    }

    #[test]
    fn wrong_missing_and_malformed_credentials_are_told_apart() {
        let c = store();
        assert_eq!(c.authenticate(None), Err(Refusal::Missing));
        assert_eq!(c.authenticate(Some(&basic("alice:wrong"))), Err(Refusal::Wrong));
        assert_eq!(c.authenticate(Some(&basic("mallory:pw"))), Err(Refusal::Wrong));
        assert_eq!(c.authenticate(Some(b"Bearer nope")), Err(Refusal::Wrong));
        // A token is not a password and a password is not a token.
        assert_eq!(c.authenticate(Some(&basic("tok:admin"))), Err(Refusal::Wrong));
        assert_eq!(c.authenticate(Some(b"Bearer bob:pw")), Err(Refusal::Wrong));
        for junk in [&b"Basic"[..], b"Basic !!!", b"Digest abc", b"", b"Basic Ym9i", b"\xff\xfe"] {
            assert_eq!(c.authenticate(Some(junk)), Err(Refusal::Malformed), "{junk:?}");
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_place_and_without_the_secret() {
        let mut c = Credentials::default();
        let err = c.add_users("alice:secret\nnocolon-secret\n", Role::Admin, "f").unwrap_err().to_string();
        assert_eq!(err, "f line 2: expected user:password");
        assert!(!err.contains("secret"), "{err}");
        let err = Credentials::default().add_users("alice:", Role::Admin, "f").unwrap_err().to_string();
        assert_eq!(err, "f line 1: the password is empty");
        let err = Credentials::default().add_users("# nothing\n", Role::Admin, "f").unwrap_err();
        assert!(matches!(err, AccessError::Empty { .. }), "{err}");
        let mut c = Credentials::default();
        c.add_users("alice:a", Role::Admin, "admins").unwrap();
        let err = c.add_users("alice:b", Role::ReadOnly, "readers").unwrap_err().to_string();
        assert_eq!(err, "user 'alice' is given twice (admins line 1 and readers line 1)");
        let err = Credentials::default().add_tokens("a b", Role::Admin, "t").unwrap_err().to_string();
        assert_eq!(err, "t line 1: a token has no spaces");
        assert!(!format!("{:?}", store()).contains("s3"), "Debug shows no secret");
    }

    #[test]
    fn methods_need_roles() {
        assert_eq!(Role::needed_for(&axum::http::Method::GET), Role::ReadOnly);
        assert_eq!(Role::needed_for(&axum::http::Method::HEAD), Role::ReadOnly);
        for method in
            [axum::http::Method::POST, axum::http::Method::PUT, axum::http::Method::PATCH, axum::http::Method::DELETE]
        {
            assert_eq!(Role::needed_for(&method), Role::Admin);
        }
        assert_eq!(Role::needed_for(&axum::http::Method::from_bytes(b"BREW").unwrap()), Role::Admin);
        assert!(Role::Admin > Role::ReadOnly);
    }

    #[test]
    fn callbacks_follow_the_allow_list_and_the_safe_default() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let open = AccessConfig::default();
        assert!(open.check_callback(&url("http://anywhere:1/x")).is_ok(), "an open API allows any callback");
        let closed = AccessConfig { credentials: Arc::new(store()), ..Default::default() };
        let refused = closed.check_callback(&url("http://10.0.0.9/cb")).unwrap_err();
        assert!(refused.contains("--event-callback-allow"), "{refused}");
        let allow = AccessConfig {
            credentials: Arc::new(store()),
            callback_allow: Some(vec![
                CallbackPrefix::parse("http://10.0.0.5:9000/hooks").unwrap(),
                CallbackPrefix::parse("https://events.example").unwrap(),
            ]),
            ..Default::default()
        };
        for ok in ["http://10.0.0.5:9000/hooks", "http://10.0.0.5:9000/hooks/marathon", "https://events.example:443/a"]
        {
            assert!(allow.check_callback(&url(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.5:9000/hooksmith",
            "http://10.0.0.5:9001/hooks",
            "https://10.0.0.5:9000/hooks",
            "http://10.0.0.5:9000@evil.example/hooks",
            "http://user:pw@10.0.0.5:9000/hooks",
            "http://events.example/a",
        ] {
            assert!(allow.check_callback(&url(refused)).is_err(), "{refused}");
        }
        assert!(CallbackPrefix::parse("ftp://x/").is_err());
        assert!(CallbackPrefix::parse("not a url").is_err());
    }
}
