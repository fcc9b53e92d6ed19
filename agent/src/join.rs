//! The join token this agent presents. A PXE-booted agent starts with a single-use
//! bootstrap token (`plinth.token=` from its iPXE script); at its first start it exchanges
//! that once at `POST /agent/v1/join` for the cluster's join token and keeps it in its work
//! dir ([`JOIN_TOKEN_FILE`], mode 0600), which every later start uses (the kernel command
//! line still carries the spent bootstrap token then). Any other token is used as it is.
use std::path::Path;
use std::time::Duration;

use plinth_protocol::agent::{JoinRequest, JoinToken, JOIN_TOKEN_FILE};
use plinth_protocol::error_chain;
use tracing::{info, warn};

use crate::client::MasterClient;
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::fsutil;

/// The token to present from now on. Waits (retrying) while the master cannot be reached;
/// a refused bootstrap token is an error: it can never work again.
pub(crate) async fn resolve(config: &AgentConfig, max_backoff: Duration) -> Result<Option<JoinToken>, AgentError> {
    let Some(token) = config.token.clone() else { return Ok(None) };
    if !token.is_bootstrap() {
        return Ok(Some(token));
    }
    let path = config.work_dir.join(JOIN_TOKEN_FILE);
    if let Some(stored) = read_stored(&path)? {
        return Ok(Some(stored));
    }
    let client = MasterClient::new(&config.master, None, config.ca_file.as_deref())?;
    let request = JoinRequest { hostname: config.hostname.clone(), macs: local_macs() };
    let mut delay = Duration::from_millis(250);
    loop {
        match client.join(&token, &request).await {
            Ok(joined) => {
                let Some(joined_token) = JoinToken::new(joined.token) else {
                    return Err(AgentError::BootstrapRefused {
                        body: "the master answered an empty join token".into(),
                    });
                };
                fsutil::write_atomic(&path, joined_token.expose().as_bytes())?;
                info!(cluster_id = %joined.cluster_id, path = %path.display(),
                    "bootstrap token exchanged: the join token is kept in the work dir");
                return Ok(Some(joined_token));
            }
            Err(AgentError::MasterStatus { status: 401 | 403 | 404, body, .. }) => {
                return Err(AgentError::BootstrapRefused { body });
            }
            Err(err) => {
                warn!(master = %client.base(), error = %error_chain(&err), retry_ms = delay.as_millis(),
                    "cannot exchange the bootstrap token yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_backoff);
            }
        }
    }
}

fn read_stored(path: &Path) -> Result<Option<JoinToken>, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(JoinToken::new(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::ReadFile { path: path.to_path_buf(), source }),
    }
}

/// MAC addresses of this network namespace's interfaces (through netlink, so they are
/// right in any namespace), loopback and all-zero ones left out.
fn local_macs() -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut macs: Vec<String> = addrs
        .filter_map(|a| a.address.as_ref().and_then(|s| s.as_link_addr()).and_then(|l| l.addr()))
        .filter(|mac| mac.iter().any(|b| *b != 0))
        .map(|m| format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]))
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_token_is_read_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOIN_TOKEN_FILE);
        assert_eq!(read_stored(&path).unwrap(), None);
        fsutil::write_atomic(&path, b"s3cret\n").unwrap();
        assert_eq!(read_stored(&path).unwrap().unwrap().expose(), "s3cret");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
