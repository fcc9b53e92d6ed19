//! The join token this agent presents. A PXE-booted agent starts with a single-use
//! bootstrap token (`plinth.token=` from its iPXE script); at its first start it exchanges
//! that once at `POST /agent/v1/join` for the cluster's join token and keeps it in its work
//! dir ([`JOIN_TOKEN_FILE`], mode 0600), which every later start uses (the kernel command
//! line still carries the spent bootstrap token then). Any other token is used as it is.
//!
//! An agent that reaches its master over `https://` then settles its certificate
//! ([`identity`]): the stored one while it is young, else a new one for a fresh key's CSR
//! (`identity.rs`), asked for with the join token, or to renew, with the certificate it
//! still has. A master without a cluster CA answers 404: the agent goes on with the token.
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use plinth_protocol::agent::{CertificateRequest, JoinRequest, JoinToken, JOIN_TOKEN_FILE};
use plinth_protocol::error_chain;
use tracing::{info, warn};

use crate::client::MasterClient;
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::fsutil;
use crate::identity::{self, NodeIdentity, ServedCertificate};

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
    let client = MasterClient::new(&config.master, None, config.ca_file.as_deref(), None)?;
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

/// The certificate to present from now on, if the master is reached over `https://` and
/// has a cluster CA. Waits (retrying) while the master cannot be reached and the agent has
/// no usable certificate; a refusal is an error then. A renewal that fails keeps the
/// certificate the agent has, while it lasts.
pub(crate) async fn identity(
    config: &AgentConfig,
    token: Option<&JoinToken>,
    advertise_ip: IpAddr,
    max_backoff: Duration,
) -> Result<Option<NodeIdentity>, AgentError> {
    if !config.master.starts_with("https://") {
        return Ok(None);
    }
    let now = identity::unix_now();
    let stored = NodeIdentity::load(&config.work_dir)?;
    if let Some(current) = &stored {
        if !current.renewal_due(now) {
            return Ok(stored);
        }
    }
    let current = stored.filter(|c| !c.expired(now));
    if current.is_none() && token.is_none() {
        return Ok(None);
    }
    let mut delay = Duration::from_millis(250);
    loop {
        match request_certificate(config, current.as_ref(), token, advertise_ip).await {
            Ok(Some(fresh)) => return Ok(Some(fresh)),
            Ok(None) => {
                info!(master = %config.master, "the master has no cluster CA: this agent presents the join token alone");
                return Ok(current);
            }
            Err(err) if current.is_some() => {
                warn!(error = %error_chain(&err), "cannot renew this node's certificate yet; the current one is kept");
                return Ok(current);
            }
            Err(err @ AgentError::CertificateRefused { .. }) => return Err(err),
            Err(err) => {
                warn!(master = %config.master, error = %error_chain(&err), retry_ms = delay.as_millis(),
                    "cannot get this node's certificate yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_backoff);
            }
        }
    }
}

/// One CSR for a fresh key, authorized by `current` (renewal) or else by `token`;
/// `None` when the master has no cluster CA. The new identity is stored before it is used.
pub(crate) async fn request_certificate(
    config: &AgentConfig,
    current: Option<&NodeIdentity>,
    token: Option<&JoinToken>,
    advertise_ip: IpAddr,
) -> Result<Option<NodeIdentity>, AgentError> {
    let (key, csr) = identity::new_request(&config.hostname, &identity::names_for(&config.hostname, advertise_ip))?;
    let client = MasterClient::new(&config.master, None, config.ca_file.as_deref(), current)?;
    let by_token = if current.is_some() { None } else { token };
    match client.certificate(by_token, &CertificateRequest { csr }).await {
        Ok(issued) => {
            let fresh = NodeIdentity::from_issued(key, issued)?;
            fresh.store(&config.work_dir)?;
            info!(renewal = current.is_some(), not_after = fresh.not_after(),
                path = %config.work_dir.join(plinth_protocol::agent::NODE_TLS_DIR).display(),
                "this node's certificate was issued by the cluster CA");
            Ok(Some(fresh))
        }
        Err(AgentError::MasterStatus { status: 404, .. }) => Ok(None),
        Err(AgentError::MasterStatus { status: 400 | 401 | 403, body, .. }) => {
            Err(AgentError::CertificateRefused { body })
        }
        Err(err) => Err(err),
    }
}

/// Renews this node's certificate past 2/3 of its life for as long as the agent runs:
/// the master client and the agent API (`served`) use each new one at once.
pub(crate) async fn renewal_loop(
    config: AgentConfig,
    mut current: NodeIdentity,
    advertise_ip: IpAddr,
    client: MasterClient,
    served: Arc<ServedCertificate>,
) {
    loop {
        let wait = u64::try_from(current.renewal_at() - identity::unix_now()).unwrap_or(0);
        // At most an hour at a time: a suspended machine's clock jumps.
        tokio::time::sleep(Duration::from_secs(wait.clamp(1, 3600))).await;
        if !current.renewal_due(identity::unix_now()) {
            continue;
        }
        let renewed = match request_certificate(&config, Some(&current), None, advertise_ip).await {
            Ok(Some(fresh)) => client.use_identity(&fresh).and_then(|()| served.replace(&fresh)).map(|()| fresh),
            Ok(None) => Err(AgentError::Certificate { reason: "the master no longer has a cluster CA".into() }),
            Err(err) => Err(err),
        };
        match renewed {
            Ok(fresh) => current = fresh,
            Err(err) => {
                warn!(error = %error_chain(&err), not_after = current.not_after(),
                    "cannot renew this node's certificate; retrying in 5 minutes");
                tokio::time::sleep(Duration::from_secs(300)).await;
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
