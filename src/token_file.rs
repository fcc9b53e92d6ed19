//! Where the cluster's join token comes from: a file (`--token-file`; a token on the command
//! line would be readable by every process in `/proc/PID/cmdline`) or the environment
//! (`PLINTH_TOKEN`: another user cannot read `/proc/PID/environ`).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use plinth_protocol::agent::JoinToken;

/// A token file bigger than this is not a token.
const MAX_TOKEN_BYTES: u64 = 4096;

/// The message for a `--token` given on the command line.
pub const NO_TOKEN_FLAG: &str = "--token is not accepted: a token on the command line is readable by every \
     process (/proc/PID/cmdline); put it in a file only root can read (chmod 600) and pass --token-file PATH, \
     or set PLINTH_TOKEN";

/// The token in `path`: a regular file holding one token (surrounding blanks are ignored).
/// A file that others can read still works, with a warning.
pub fn read(path: &Path) -> anyhow::Result<JoinToken> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the token file {}", path.display()))?;
    if !meta.is_file() {
        bail!("the token file {} is not a regular file", path.display());
    }
    if meta.len() > MAX_TOKEN_BYTES {
        bail!("the token file {} has {} bytes: a token has at most {MAX_TOKEN_BYTES}", path.display(), meta.len());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = %format!("{mode:o}"),
            "the token file is readable by other users: make it private (chmod 600)");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the token file {}", path.display()))?;
    JoinToken::new(text).with_context(|| format!("the token file {} is empty", path.display()))
}

/// The join token from `file`, else from `PLINTH_TOKEN`; `given_on_command_line` is a
/// refused `--token`.
pub fn resolve(file: Option<&Path>, given_on_command_line: bool) -> anyhow::Result<Option<JoinToken>> {
    if given_on_command_line {
        bail!(NO_TOKEN_FLAG);
    }
    match file {
        Some(path) => read(path).map(Some),
        None => Ok(std::env::var("PLINTH_TOKEN").ok().and_then(JoinToken::new)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_trimmed_and_bad_ones_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&file).unwrap().expose(), "s3cret");

        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = format!("{:#}", read(&dir.path().join("missing")).unwrap_err());
        assert!(err.contains("cannot read the token file") && err.contains("missing"), "{err}");
        std::fs::write(&file, "\n").unwrap();
        assert!(read(&file).unwrap_err().to_string().contains("is empty"));
        std::fs::write(&file, vec![b'x'; 5000]).unwrap();
        assert!(read(&file).unwrap_err().to_string().contains("at most"));

        let err = resolve(Some(&file), true).unwrap_err().to_string();
        assert!(err.contains("--token-file") && err.contains("PLINTH_TOKEN"), "{err}");
    }
}
