//! The DHCP decision, pure: request bytes, the configuration, the machine table, the lease
//! table and the time in; a reply (and the lease changes, made in the table) or the reason
//! to stay silent out. No sockets or clocks here; `serve` feeds it.
//!
//! Two modes:
//! - **proxyDHCP** beside an existing DHCP server: answers PXE/iPXE clients only, with
//!   boot options and no address (RFC 4578 / PXE 2.1), on port 67 and on 4011;
//! - **full DHCP** on an isolated network: leases from a range (renewals, release,
//!   decline; an address is never offered while another machine's lease on it lives)
//!   plus the same boot options for PXE/iPXE clients.
//!
//! Files: `decide.rs` (the decision: classify, then proxyDHCP or full DHCP), `client.rs`
//! (which boot client asks and what it boots), `packet.rs` (the option area checked
//! before parsing, request fields, the encoded reply), `leases.rs` (the address pool and
//! the lease table). This file holds the configuration and what a decision can be.
// Pure: no clock, entropy or spawning here or in the files below (the ban is in clippy.toml).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use dhcproto::v4::MessageType;
use serde::Serialize;
use std::net::Ipv4Addr;

use crate::mac::MacAddr;
use crate::profile::DefaultProfile;

mod client;
mod decide;
#[cfg(test)]
mod fixtures;
mod leases;
mod packet;

pub use client::{arch_number, BIOS_BOOTFILE, UEFI_BOOTFILE};
pub use decide::decide;
pub use leases::{AddressPool, Lease, LeaseTable, DECLINE_HOLD_SECS, OFFER_HOLD_SECS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpMode {
    /// PXE options only; addresses come from another DHCP server.
    Proxy,
    /// Addresses from `range` (inclusive) plus PXE options.
    Full(AddressPool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// This server's address on the PXE interface (server identifier, next-server).
    pub server_ip: Ipv4Addr,
    pub mode: DhcpMode,
    /// The master's HTTP base iPXE fetches its script from, `http://10.0.0.2:8080`.
    pub http_base: String,
    pub default_profile: DefaultProfile,
}

/// Where a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 67: DHCP.
    Dhcp,
    /// 4011: PXE boot server (proxyDHCP REQUESTs, UEFI firmware).
    PxeBoot,
}

/// What kind of boot client sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClientKind {
    /// iPXE (user class "iPXE" or option 175): gets the HTTP script URL.
    Ipxe,
    /// PXE firmware (vendor class "PXEClient...") of an x86 BIOS.
    PxeBios,
    /// PXE firmware of x86-64 UEFI (arch 7 or 9).
    PxeUefi,
    /// Anything else (e.g. the booted OS asking for its address).
    Plain,
}

/// Why a request gets no answer. `serve` logs each kind once per machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreReason {
    #[error("malformed DHCP packet: {0}")]
    Malformed(String),
    #[error("not a BOOTREQUEST from an Ethernet client")]
    NotARequest,
    #[error("no DHCP message type")]
    NoMessageType,
    #[error("unknown machine {0} and unknown machines are ignored")]
    UnknownMachine(MacAddr),
    #[error("not a PXE or iPXE client (proxyDHCP answers only those)")]
    NotPxe,
    #[error("PXE client architecture {0} has no boot file (x86 BIOS and x86-64 UEFI are served)")]
    UnsupportedArch(u16),
    #[error("the client chose another DHCP server")]
    OtherServer,
    #[error("no free address in the range")]
    PoolExhausted,
    #[error("relayed requests are not served")]
    Relayed,
    #[error("{0:?} is not handled here")]
    Unhandled(MessageType),
    #[error("released its lease")]
    Released,
    #[error("declined {0}: another host answers on it")]
    Declined(Ipv4Addr),
}

impl IgnoreReason {
    /// A short stable name for "log once" bookkeeping.
    pub fn kind(&self) -> &'static str {
        match self {
            IgnoreReason::Malformed(_) => "malformed",
            IgnoreReason::NotARequest => "not-a-request",
            IgnoreReason::NoMessageType => "no-message-type",
            IgnoreReason::UnknownMachine(_) => "unknown-machine",
            IgnoreReason::NotPxe => "not-pxe",
            IgnoreReason::UnsupportedArch(_) => "unsupported-arch",
            IgnoreReason::OtherServer => "other-server",
            IgnoreReason::PoolExhausted => "pool-exhausted",
            IgnoreReason::Relayed => "relayed",
            IgnoreReason::Unhandled(_) => "unhandled",
            IgnoreReason::Released => "released",
            IgnoreReason::Declined(_) => "declined",
        }
    }
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the PXE interface (the client has no address yet).
    Broadcast,
    /// The client's address, port 68 (renewals).
    Unicast(Ipv4Addr),
    /// Back to the request's source address and port (port 4011 requests).
    Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub packet: Vec<u8>,
    pub to: Destination,
    pub mac: MacAddr,
    pub kind: MessageType,
    pub client: ClientKind,
    /// The address given (full mode).
    pub address: Option<Ipv4Addr>,
    pub bootfile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Reply(Reply),
    /// No answer. `mac` when the packet named one; `leases_changed` when the table
    /// changed anyway (release, decline, a withdrawn offer).
    Ignore {
        reason: IgnoreReason,
        mac: Option<MacAddr>,
        leases_changed: bool,
    },
}

impl Decision {
    /// Whether the lease table changed and must be persisted.
    pub fn leases_changed(&self) -> bool {
        match self {
            Decision::Reply(r) => r.address.is_some(),
            Decision::Ignore { leases_changed, .. } => *leases_changed,
        }
    }

    pub(super) fn ignore(reason: IgnoreReason, mac: Option<MacAddr>) -> Decision {
        Decision::Ignore { reason, mac, leases_changed: false }
    }
}
