//! The client's credentials for the master, from the first place that has them:
//! `--user USER:PASSWORD` (or `PLINTH_USER`, with the password after a colon or in
//! `PLINTH_PASSWORD`), `--token-file PATH` (or `PLINTH_API_TOKEN_FILE`; its first token),
//! `PLINTH_API_TOKEN`, then the credentials file (`~/.config/plinth/credentials`, under
//! `$XDG_CONFIG_HOME` when set): lines `MASTER_URL user:password` or `MASTER_URL bearer
//! TOKEN`, `*` for any master, the first line naming the master winning, `#` comments.
use anyhow::{bail, Context};
use std::path::PathBuf;

use super::ClientArgs;

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { user, .. } => write!(f, "Basic({user})"),
            Auth::Bearer(_) => write!(f, "Bearer"),
        }
    }
}

/// The credentials chosen and where they came from (for messages; never the secret).
#[derive(Debug, Clone, Default)]
pub(super) struct Login {
    pub(super) auth: Option<Auth>,
    pub(super) source: String,
}

/// Every way of giving credentials, for the message of a 401.
pub(super) const HOW_TO_LOG_IN: &str = "give --user USER:PASSWORD (or PLINTH_USER and PLINTH_PASSWORD), \
     --token-file PATH (or PLINTH_API_TOKEN), or a line `MASTER_URL user:password` in ~/.config/plinth/credentials";

impl Login {
    /// What to add to an error answer of this status.
    pub(super) fn hint(&self, status: reqwest::StatusCode) -> Option<String> {
        match (status, &self.auth) {
            (reqwest::StatusCode::UNAUTHORIZED, None) => Some(format!("the master needs credentials: {HOW_TO_LOG_IN}")),
            (reqwest::StatusCode::UNAUTHORIZED, Some(_)) => {
                Some(format!("the master refused the credentials from {}: {HOW_TO_LOG_IN}", self.source))
            }
            (reqwest::StatusCode::FORBIDDEN, Some(_)) => {
                Some(format!("the credentials from {} are read-only; this needs an admin's", self.source))
            }
            _ => None,
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The credentials for `master` (its URL without a trailing `/`).
pub(super) fn resolve(args: &ClientArgs, master: &str) -> anyhow::Result<Login> {
    if let Some(user) = &args.user {
        let from_flag = std::env::var("PLINTH_USER").ok().as_deref() != Some(user.as_str());
        let source = if from_flag { "--user" } else { "PLINTH_USER" };
        let (user, password) = match user.split_once(':') {
            Some((user, password)) => (user.to_string(), password.to_string()),
            None => match env("PLINTH_PASSWORD") {
                Some(password) => (user.clone(), password),
                None => {
                    bail!("{source} names user '{user}' without a password: give USER:PASSWORD or set PLINTH_PASSWORD")
                }
            },
        };
        if user.is_empty() {
            bail!("{source}: the user name is empty");
        }
        return Ok(Login { auth: Some(Auth::Basic { user, password }), source: source.into() });
    }
    if let Some(path) = &args.token_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = first_token(&text).with_context(|| format!("the token file {} holds no token", path.display()))?;
        return Ok(Login { auth: Some(Auth::Bearer(token)), source: path.display().to_string() });
    }
    if let Some(token) = env("PLINTH_API_TOKEN") {
        return Ok(Login { auth: Some(Auth::Bearer(token.trim().to_string())), source: "PLINTH_API_TOKEN".into() });
    }
    let Some(path) = credentials_file() else { return Ok(Login::default()) };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Login::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let source = path.display().to_string();
    let auth = for_master(&text, master).with_context(|| format!("in {source}"))?;
    Ok(Login { auth, source })
}

fn credentials_file() -> Option<PathBuf> {
    let config =
        env("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("plinth").join("credentials"))
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn first_token(text: &str) -> Option<String> {
    lines(text).next().map(|(_, token)| token.to_string())
}

/// The credentials file's entry for `master`, if any (a malformed line is an error, named
/// by its number: the line itself holds a secret).
fn for_master(text: &str, master: &str) -> anyhow::Result<Option<Auth>> {
    for (number, line) in lines(text) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (url, auth) = match fields.as_slice() {
            [url, "bearer", token] => (*url, Auth::Bearer(token.to_string())),
            [url, pair] => match pair.split_once(':') {
                Some((user, password)) if !user.is_empty() => {
                    (*url, Auth::Basic { user: user.into(), password: password.into() })
                }
                _ => bail!("line {number}: expected `MASTER_URL user:password` or `MASTER_URL bearer TOKEN`"),
            },
            _ => bail!("line {number}: expected `MASTER_URL user:password` or `MASTER_URL bearer TOKEN`"),
        };
        if url == "*" || url.trim_end_matches('/') == master {
            return Ok(Some(auth));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credentials_file_gives_the_first_entry_for_the_master() {
        let text =
            "# plinth credentials\nhttp://10.0.0.2:8080/ admin:pa:ss\nhttp://other:8080 bearer t0k\n* viewer:v\n";
        let basic = |u: &str, p: &str| Some(Auth::Basic { user: u.into(), password: p.into() });
        assert_eq!(for_master(text, "http://10.0.0.2:8080").unwrap(), basic("admin", "pa:ss"));
        assert_eq!(for_master(text, "http://other:8080").unwrap(), Some(Auth::Bearer("t0k".into())));
        assert_eq!(for_master(text, "http://third:8080").unwrap(), basic("viewer", "v"));
        assert_eq!(for_master("http://a:1 x:y\n", "http://b:1").unwrap(), None);
        let err = for_master("http://a:1 s3cret\n", "http://a:1").unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn token_files_give_their_first_token_and_debug_hides_secrets() {
        assert_eq!(first_token("# comment\n\n  abc  \ndef\n").as_deref(), Some("abc"));
        assert_eq!(first_token("# only a comment\n"), None);
        let shown = format!("{:?}", Auth::Basic { user: "u".into(), password: "hidden".into() });
        assert!(!shown.contains("hidden"), "{shown}");
        assert!(!format!("{:?}", Auth::Bearer("hidden".into())).contains("hidden"));
    }

    #[test]
    fn a_401_and_a_403_name_the_ways_to_log_in() {
        let none = Login::default().hint(reqwest::StatusCode::UNAUTHORIZED).unwrap();
        assert!(none.contains("--user") && none.contains("PLINTH_API_TOKEN") && none.contains("credentials"), "{none}");
        let given = Login { auth: Some(Auth::Bearer("x".into())), source: "PLINTH_API_TOKEN".into() };
        assert!(given
            .hint(reqwest::StatusCode::UNAUTHORIZED)
            .unwrap()
            .contains("refused the credentials from PLINTH_API_TOKEN"));
        assert!(given.hint(reqwest::StatusCode::FORBIDDEN).unwrap().contains("read-only"));
        assert_eq!(given.hint(reqwest::StatusCode::NOT_FOUND), None);
    }
}
