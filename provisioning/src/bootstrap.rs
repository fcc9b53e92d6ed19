//! Bootstrap tokens for PXE boot (pure: randomness and time come in as arguments). A
//! machine's iPXE script carries a short-lived token bound to its MAC instead of the
//! cluster's join token; the agent exchanges it once (`/agent/v1/join`) for the join token.
//! A token is gone once used or expired, and a machine has at most one outstanding token
//! (a new script replaces the old one). Only SHA-256 digests of the tokens are kept, so
//! the table holds no secret and a lookup's timing tells nothing about other tokens.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use plinth_protocol::agent::{JoinToken, BOOTSTRAP_TOKEN_PREFIX};
use plinth_protocol::Timestamp;

use crate::MacAddr;

/// How long a bootstrap token is good for by default: a boot from the script to the agent's
/// first start takes a minute or two, even under emulation.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// Outstanding tokens kept at most (one per machine); past it the soonest to expire goes.
pub const MAX_OUTSTANDING: usize = 4096;

/// Why a bootstrap token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedeemError {
    #[error(
        "unknown bootstrap token: already used, replaced by a newer boot of the machine, or issued \
         before the master restarted (PXE-boot the machine again for a new one)"
    )]
    Unknown,
    #[error("the bootstrap token of {mac} expired (PXE-boot the machine again for a new one)")]
    Expired { mac: MacAddr },
    #[error("the bootstrap token was issued to {mac}, which is none of this machine's interfaces")]
    OtherMachine { mac: MacAddr },
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    mac: MacAddr,
    expires: Timestamp,
}

/// The outstanding bootstrap tokens of one master (in memory: a master restart forgets
/// them, and a machine that had not joined yet gets a new one when it PXE-boots again).
#[derive(Debug)]
pub struct BootstrapTokens {
    ttl: Duration,
    by_digest: HashMap<[u8; 32], Outstanding>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl BootstrapTokens {
    pub fn new(ttl: Duration) -> Self {
        BootstrapTokens { ttl, by_digest: HashMap::new() }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// A new token for `mac` from 32 random bytes; the machine's previous one is revoked.
    pub fn issue(&mut self, mac: MacAddr, random: [u8; 32], now: Timestamp) -> JoinToken {
        self.by_digest.retain(|_, t| t.mac != mac && t.expires > now);
        while self.by_digest.len() >= MAX_OUTSTANDING {
            let Some(soonest) = self.by_digest.iter().min_by_key(|(_, t)| t.expires).map(|(d, _)| *d) else { break };
            self.by_digest.remove(&soonest);
        }
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("{BOOTSTRAP_TOKEN_PREFIX}{hex}");
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        self.by_digest.insert(digest(&text), Outstanding { mac, expires: now.plus_millis(ttl_ms) });
        JoinToken::new(text).expect("a prefixed token is never blank")
    }

    /// Takes the token if it is outstanding, unexpired and issued to one of `macs`: it can
    /// never be used again. A token shown by the wrong machine stays for the right one.
    pub fn redeem(&mut self, token: &str, macs: &[MacAddr], now: Timestamp) -> Result<MacAddr, RedeemError> {
        let key = digest(token);
        let outstanding = *self.by_digest.get(&key).ok_or(RedeemError::Unknown)?;
        if outstanding.expires <= now {
            self.by_digest.remove(&key);
            return Err(RedeemError::Expired { mac: outstanding.mac });
        }
        if !macs.contains(&outstanding.mac) {
            return Err(RedeemError::OtherMachine { mac: outstanding.mac });
        }
        self.by_digest.remove(&key);
        Ok(outstanding.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

    fn table() -> (BootstrapTokens, Timestamp) {
        (BootstrapTokens::new(Duration::from_secs(60)), Timestamp(1_000_000))
    }

    fn after(t: Timestamp, ms: i64) -> Timestamp {
        t.plus_millis(ms)
    }

    #[test]
    fn a_token_works_once_for_its_machine() {
        let (mut tokens, t0) = table();
        let token = tokens.issue(A, [7; 32], t0);
        assert!(token.is_bootstrap(), "{token:?}");
        assert_eq!(token.expose().len(), BOOTSTRAP_TOKEN_PREFIX.len() + 64);
        assert_eq!(tokens.redeem(token.expose(), &[B, A], after(t0, 59_000)), Ok(A));
        assert_eq!(tokens.redeem(token.expose(), &[A], after(t0, 59_000)), Err(RedeemError::Unknown));
        assert!(tokens.is_empty());
    }

    #[test]
    fn an_expired_token_is_refused_and_forgotten() {
        let (mut tokens, t0) = table();
        let token = tokens.issue(A, [1; 32], t0);
        assert_eq!(tokens.redeem(token.expose(), &[A], after(t0, 60_000)), Err(RedeemError::Expired { mac: A }));
        assert_eq!(tokens.redeem(token.expose(), &[A], t0), Err(RedeemError::Unknown));
    }

    #[test]
    fn another_machine_cannot_use_it_and_the_right_one_still_can() {
        let (mut tokens, t0) = table();
        let token = tokens.issue(A, [2; 32], t0);
        assert_eq!(tokens.redeem(token.expose(), &[B], t0), Err(RedeemError::OtherMachine { mac: A }));
        assert_eq!(tokens.redeem(token.expose(), &[], t0), Err(RedeemError::OtherMachine { mac: A }));
        assert_eq!(tokens.redeem(token.expose(), &[A], t0), Ok(A));
    }

    #[test]
    fn a_new_boot_revokes_the_machines_previous_token_only() {
        let (mut tokens, t0) = table();
        let first = tokens.issue(A, [3; 32], t0);
        let other = tokens.issue(B, [4; 32], t0);
        let second = tokens.issue(A, [5; 32], t0);
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.redeem(first.expose(), &[A], t0), Err(RedeemError::Unknown));
        assert_eq!(tokens.redeem(second.expose(), &[A], t0), Ok(A));
        assert_eq!(tokens.redeem(other.expose(), &[B], t0), Ok(B));
    }

    #[test]
    fn unknown_and_garbage_tokens_are_refused() {
        let (mut tokens, t0) = table();
        tokens.issue(A, [6; 32], t0);
        for garbage in ["", "plinth-bootstrap.", "plinth-bootstrap.0606", "s3cret"] {
            assert_eq!(tokens.redeem(garbage, &[A], t0), Err(RedeemError::Unknown), "{garbage:?}");
        }
        assert_eq!(tokens.len(), 1);
    }

    #[test]
    fn the_table_stays_bounded_dropping_the_soonest_to_expire() {
        let (mut tokens, t0) = table();
        let oldest = tokens.issue(MacAddr([0, 0, 0, 0, 0xff, 0xff]), [8; 32], t0);
        for i in 0..MAX_OUTSTANDING {
            let (hi, lo) = (u8::try_from(i >> 8).unwrap(), u8::try_from(i & 0xff).unwrap());
            let mut random = [9; 32];
            random[..2].copy_from_slice(&[hi, lo]);
            tokens.issue(MacAddr([2, 0, 0, 0, hi, lo]), random, after(t0, 1));
        }
        assert_eq!(tokens.len(), MAX_OUTSTANDING);
        assert_eq!(tokens.redeem(oldest.expose(), &[MacAddr([0, 0, 0, 0, 0xff, 0xff])], t0), Err(RedeemError::Unknown));
    }
}
