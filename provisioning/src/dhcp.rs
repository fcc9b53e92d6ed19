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
// Pure: no clock, entropy or spawning here (the ban is in clippy.toml).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{self, Architecture, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;
use crate::profile::{DefaultProfile, MachineProfile};

/// TFTP boot file for BIOS firmware (iPXE that chains via the firmware's UNDI driver).
pub const BIOS_BOOTFILE: &str = "undionly.kpxe";
/// TFTP boot file for x86-64 UEFI firmware.
pub const UEFI_BOOTFILE: &str = "ipxe.efi";
/// How long an offered (not yet requested) address stays reserved for its machine.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long an address a client declined (someone else answers on it) is not offered.
pub const DECLINE_HOLD_SECS: u64 = 600;
/// Smallest BOOTP message; some PXE ROMs drop shorter replies.
const MIN_PACKET: usize = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpMode {
    /// PXE options only; addresses come from another DHCP server.
    Proxy,
    /// Addresses from `range` (inclusive) plus PXE options.
    Full(AddressPool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub lease_secs: u32,
}

impl AddressPool {
    /// Parses `A-B` (e.g. `10.0.0.100-10.0.0.200`); /24 mask, no router, 1 h leases.
    pub fn parse_range(s: &str) -> Result<AddressPool, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not a range; write FIRST-LAST, e.g. 10.0.0.100-10.0.0.200"))?;
        let first: Ipv4Addr = a.trim().parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let last: Ipv4Addr = b.trim().parse().map_err(|_| format!("{b:?} is not an IPv4 address"))?;
        if u32::from(first) > u32::from(last) {
            return Err(format!("range {s:?} ends before it starts"));
        }
        if u32::from(last) - u32::from(first) > 65_535 {
            return Err(format!("range {s:?} is larger than 65536 addresses"));
        }
        Ok(AddressPool { first, last, netmask: Ipv4Addr::new(255, 255, 255, 0), router: None, lease_secs: 3600 })
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
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

/// One machine's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// Seconds since the epoch.
    pub expires: u64,
    /// False while only offered.
    pub bound: bool,
}

/// Leases by MAC and recently declined addresses; persisted by the shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTable {
    pub leases: BTreeMap<MacAddr, Lease>,
    #[serde(default)]
    pub declined: BTreeMap<Ipv4Addr, u64>,
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl LeaseTable {
    fn taken_by_other(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.leases.iter().any(|(m, l)| *m != mac && l.ip == ip && l.expires > now)
            || self.declined.get(&ip).is_some_and(|until| *until > now)
    }

    /// The address for `mac`: its own (even expired) if nobody else holds it, else the
    /// lowest free one. Never the server's own address.
    fn pick(&self, mac: MacAddr, pool: &AddressPool, server_ip: Ipv4Addr, now: u64) -> Option<Ipv4Addr> {
        if let Some(lease) = self.leases.get(&mac) {
            if pool.contains(lease.ip) && lease.ip != server_ip && !self.taken_by_other(lease.ip, mac, now) {
                return Some(lease.ip);
            }
        }
        (u32::from(pool.first)..=u32::from(pool.last))
            .map(Ipv4Addr::from)
            .find(|ip| *ip != server_ip && !self.taken_by_other(*ip, mac, now))
    }

    /// The bound, unexpired lease of `mac`.
    pub fn active(&self, mac: MacAddr, now: u64) -> Option<&Lease> {
        self.leases.get(&mac).filter(|l| l.bound && l.expires > now)
    }
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

    fn ignore(reason: IgnoreReason, mac: Option<MacAddr>) -> Decision {
        Decision::Ignore { reason, mac, leases_changed: false }
    }
}

fn classify(msg: &v4::Message) -> Result<ClientKind, IgnoreReason> {
    let opts = msg.opts();
    let user_class_ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(bytes)) => bytes.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    if user_class_ipxe || opts.get(OptionCode::Unknown(175)).is_some() {
        return Ok(ClientKind::Ipxe);
    }
    let pxe = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(bytes)) => bytes.starts_with(b"PXEClient"),
        _ => false,
    };
    if !pxe {
        return Ok(ClientKind::Plain);
    }
    match opts.get(OptionCode::ClientSystemArchitecture) {
        None => Ok(ClientKind::PxeBios),
        Some(DhcpOption::ClientSystemArchitecture(arch)) => match u16::from(*arch) {
            0 => Ok(ClientKind::PxeBios),
            7 | 9 => Ok(ClientKind::PxeUefi),
            other => Err(IgnoreReason::UnsupportedArch(other)),
        },
        Some(_) => Ok(ClientKind::PxeBios),
    }
}

fn bootfile(client: ClientKind, config: &DhcpConfig) -> Option<String> {
    match client {
        ClientKind::Ipxe => Some(format!("{}/boot/ipxe?mac=${{mac}}", config.http_base.trim_end_matches('/'))),
        ClientKind::PxeBios => Some(BIOS_BOOTFILE.to_string()),
        ClientKind::PxeUefi => Some(UEFI_BOOTFILE.to_string()),
        ClientKind::Plain => None,
    }
}

fn requested_ip(msg: &v4::Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => (!msg.ciaddr().is_unspecified()).then(|| msg.ciaddr()),
    }
}

fn server_id(msg: &v4::Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// Checks the option area's framing before dhcproto sees it: dhcproto asserts (panics,
/// in debug builds) on some wrong fixed lengths, and garbage must never panic.
fn options_well_formed(packet: &[u8]) -> Result<(), String> {
    const COOKIE: [u8; 4] = [99, 130, 83, 99];
    if packet.len() < 240 {
        return Err(format!("{} bytes is shorter than a BOOTP header with options", packet.len()));
    }
    if packet[236..240] != COOKIE {
        return Err("no DHCP magic cookie".into());
    }
    let mut i = 240;
    while i < packet.len() {
        let code = packet[i];
        match code {
            0 => i += 1,
            255 => return Ok(()),
            _ => {
                let len = *packet.get(i + 1).ok_or_else(|| format!("option {code} is cut off"))? as usize;
                if i + 2 + len > packet.len() {
                    return Err(format!("option {code} claims {len} bytes past the end"));
                }
                let fixed_ok = match code {
                    52 => return Err("option overload is not supported".into()),
                    80 => len == 0,
                    81 => len >= 3,
                    94 => len == 3,
                    93 => len >= 2,
                    152..=155 => len == 4,
                    _ => true,
                };
                if !fixed_ok {
                    return Err(format!("option {code} has the wrong length {len}"));
                }
                i += 2 + len;
            }
        }
    }
    Err("options do not end with an end option".into())
}

/// Decides the answer to one request. Mutates `leases` only as the decision says.
pub fn decide(
    packet: &[u8],
    port: Port,
    config: &DhcpConfig,
    machines: &BTreeMap<MacAddr, MachineProfile>,
    leases: &mut LeaseTable,
    now: u64,
) -> Decision {
    if let Err(why) = options_well_formed(packet) {
        return Decision::ignore(IgnoreReason::Malformed(why), None);
    }
    let msg = match v4::Message::decode(&mut Decoder::new(packet)) {
        Ok(msg) => msg,
        Err(e) => return Decision::ignore(IgnoreReason::Malformed(e.to_string()), None),
    };
    if msg.opcode() != v4::Opcode::BootRequest || msg.htype() != v4::HType::Eth || msg.hlen() != 6 {
        return Decision::ignore(IgnoreReason::NotARequest, None);
    }
    let Some(mac) = MacAddr::from_chaddr(msg.chaddr()) else {
        return Decision::ignore(IgnoreReason::NotARequest, None);
    };
    let Some(kind) = msg.opts().msg_type() else {
        return Decision::ignore(IgnoreReason::NoMessageType, Some(mac));
    };
    if !msg.giaddr().is_unspecified() {
        return Decision::ignore(IgnoreReason::Relayed, Some(mac));
    }
    if !machines.contains_key(&mac) && config.default_profile == DefaultProfile::Ignore {
        return Decision::ignore(IgnoreReason::UnknownMachine(mac), Some(mac));
    }
    let client = match classify(&msg) {
        Ok(c) => c,
        Err(reason) => return Decision::ignore(reason, Some(mac)),
    };
    match (&config.mode, port) {
        (_, Port::PxeBoot) => proxy(&msg, mac, kind, client, config, Destination::Source),
        (DhcpMode::Proxy, Port::Dhcp) => proxy(&msg, mac, kind, client, config, Destination::Broadcast),
        (DhcpMode::Full(pool), Port::Dhcp) => full(&msg, mac, kind, client, config, pool, leases, now),
    }
}

/// proxyDHCP: boot options without an address, for PXE/iPXE clients only.
fn proxy(
    msg: &v4::Message,
    mac: MacAddr,
    kind: MessageType,
    client: ClientKind,
    config: &DhcpConfig,
    to: Destination,
) -> Decision {
    if client == ClientKind::Plain {
        return Decision::ignore(IgnoreReason::NotPxe, Some(mac));
    }
    let reply_kind = match (kind, to) {
        (MessageType::Discover, Destination::Broadcast) => MessageType::Offer,
        (MessageType::Request | MessageType::Inform, Destination::Source) => MessageType::Ack,
        (MessageType::Request, _) => return Decision::ignore(IgnoreReason::Unhandled(kind), Some(mac)),
        (other, _) => return Decision::ignore(IgnoreReason::Unhandled(other), Some(mac)),
    };
    let boot = bootfile(client, config);
    let packet = build(msg, reply_kind, Ipv4Addr::UNSPECIFIED, client, boot.as_deref(), config, None);
    Decision::Reply(Reply { packet, to, mac, kind: reply_kind, client, address: None, bootfile: boot })
}

#[allow(clippy::too_many_arguments)]
fn full(
    msg: &v4::Message,
    mac: MacAddr,
    kind: MessageType,
    client: ClientKind,
    config: &DhcpConfig,
    pool: &AddressPool,
    leases: &mut LeaseTable,
    now: u64,
) -> Decision {
    let boot = bootfile(client, config);
    match kind {
        MessageType::Discover => {
            let Some(ip) = leases.pick(mac, pool, config.server_ip, now) else {
                return Decision::ignore(IgnoreReason::PoolExhausted, Some(mac));
            };
            let hold = now + OFFER_HOLD_SECS;
            match leases.leases.get_mut(&mac) {
                // Its own address again: keep a bound lease bound, hold it at least a while.
                Some(lease) if lease.ip == ip => lease.expires = lease.expires.max(hold),
                _ => {
                    leases.leases.insert(mac, Lease { ip, expires: hold, bound: false });
                }
            }
            let packet = build(msg, MessageType::Offer, ip, client, boot.as_deref(), config, Some(pool));
            Decision::Reply(Reply {
                packet,
                to: Destination::Broadcast,
                mac,
                kind: MessageType::Offer,
                client,
                address: Some(ip),
                bootfile: boot,
            })
        }
        MessageType::Request => {
            if let Some(server) = server_id(msg) {
                if server != config.server_ip {
                    // Selecting another server's offer: withdraw ours.
                    let withdrawn = leases.leases.get(&mac).is_some_and(|l| !l.bound);
                    if withdrawn {
                        leases.leases.remove(&mac);
                    }
                    return Decision::Ignore {
                        reason: IgnoreReason::OtherServer,
                        mac: Some(mac),
                        leases_changed: withdrawn,
                    };
                }
            }
            let renewing = !msg.ciaddr().is_unspecified();
            let nak = |msg: &v4::Message| {
                let packet = build(msg, MessageType::Nak, Ipv4Addr::UNSPECIFIED, ClientKind::Plain, None, config, None);
                Decision::Reply(Reply {
                    packet,
                    to: Destination::Broadcast,
                    mac,
                    kind: MessageType::Nak,
                    client,
                    address: None,
                    bootfile: None,
                })
            };
            let Some(ip) = requested_ip(msg) else { return nak(msg) };
            let ours = leases.leases.get(&mac).is_some_and(|l| l.ip == ip);
            let grantable = pool.contains(ip) && ip != config.server_ip && !leases.taken_by_other(ip, mac, now);
            if !grantable || (!ours && server_id(msg).is_some()) {
                return nak(msg);
            }
            leases.leases.insert(mac, Lease { ip, expires: now + u64::from(pool.lease_secs), bound: true });
            let packet = build(msg, MessageType::Ack, ip, client, boot.as_deref(), config, Some(pool));
            let to = if renewing { Destination::Unicast(msg.ciaddr()) } else { Destination::Broadcast };
            Decision::Reply(Reply {
                packet,
                to,
                mac,
                kind: MessageType::Ack,
                client,
                address: Some(ip),
                bootfile: boot,
            })
        }
        MessageType::Release => {
            let released = leases.leases.get(&mac).is_some_and(|l| l.ip == msg.ciaddr());
            if released {
                leases.leases.remove(&mac);
            }
            Decision::Ignore { reason: IgnoreReason::Released, mac: Some(mac), leases_changed: released }
        }
        MessageType::Decline => {
            let Some(ip) = requested_ip(msg) else { return Decision::ignore(IgnoreReason::Unhandled(kind), Some(mac)) };
            let mine = leases.leases.get(&mac).is_some_and(|l| l.ip == ip);
            if mine {
                leases.leases.remove(&mac);
                leases.declined.insert(ip, now + DECLINE_HOLD_SECS);
            }
            Decision::Ignore { reason: IgnoreReason::Declined(ip), mac: Some(mac), leases_changed: mine }
        }
        other => Decision::ignore(IgnoreReason::Unhandled(other), Some(mac)),
    }
}

fn build(
    req: &v4::Message,
    kind: MessageType,
    yiaddr: Ipv4Addr,
    client: ClientKind,
    boot: Option<&str>,
    config: &DhcpConfig,
    pool: Option<&AddressPool>,
) -> Vec<u8> {
    let siaddr = if boot.is_some() { config.server_ip } else { Ipv4Addr::UNSPECIFIED };
    let mut msg =
        v4::Message::new_with_id(req.xid(), Ipv4Addr::UNSPECIFIED, yiaddr, siaddr, Ipv4Addr::UNSPECIFIED, req.chaddr());
    msg.set_opcode(v4::Opcode::BootReply);
    msg.set_flags(req.flags());
    if !req.ciaddr().is_unspecified() && kind != MessageType::Nak {
        msg.set_ciaddr(req.ciaddr());
    }
    if let Some(file) = boot.filter(|f| f.len() < 128) {
        msg.set_fname_str(file);
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(config.server_ip));
    if let (Some(pool), false) = (pool, yiaddr.is_unspecified()) {
        opts.insert(DhcpOption::AddressLeaseTime(pool.lease_secs));
        opts.insert(DhcpOption::Renewal(pool.lease_secs / 2));
        opts.insert(DhcpOption::Rebinding(pool.lease_secs / 8 * 7));
        opts.insert(DhcpOption::SubnetMask(pool.netmask));
        if let Some(router) = pool.router {
            opts.insert(DhcpOption::Router(vec![router]));
        }
    }
    if let Some(file) = boot {
        if matches!(client, ClientKind::PxeBios | ClientKind::PxeUefi) {
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            // PXE_DISCOVERY_CONTROL = 8: boot the file named here, no boot server discovery.
            opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
            opts.insert(DhcpOption::TFTPServerName(config.server_ip.to_string().into_bytes()));
        } else if yiaddr.is_unspecified() {
            // A proxy offer is recognised by "PXEClient" also by iPXE.
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        }
        opts.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    }
    let mut buf = Vec::with_capacity(MIN_PACKET);
    msg.encode(&mut Encoder::new(&mut buf)).expect("encoding a well-formed reply into a Vec cannot fail");
    if buf.len() < MIN_PACKET {
        buf.resize(MIN_PACKET, 0);
    }
    buf
}

/// Architecture numbers for tests and logs.
pub fn arch_number(arch: Architecture) -> u16 {
    u16::from(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const NOW: u64 = 1_000_000;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn full_config(default_profile: DefaultProfile) -> DhcpConfig {
        DhcpConfig {
            server_ip: SERVER,
            mode: DhcpMode::Full(AddressPool::parse_range("10.0.0.2-10.0.0.4").expect("range")),
            http_base: "http://10.0.0.2:8080".into(),
            default_profile,
        }
    }

    fn proxy_config() -> DhcpConfig {
        DhcpConfig { mode: DhcpMode::Proxy, ..full_config(DefaultProfile::Agent) }
    }

    #[derive(Clone, Copy)]
    enum Who {
        Ipxe,
        Pxe(u16),
        Plain,
    }

    fn request(m: MacAddr, kind: MessageType, who: Who, extra: Vec<DhcpOption>, ciaddr: Ipv4Addr) -> Vec<u8> {
        let mut msg = v4::Message::new_with_id(
            0x1234,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &m.0,
        );
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        match who {
            Who::Ipxe => {
                opts.insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()));
                opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
            }
            Who::Pxe(arch) => {
                opts.insert(DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes()));
                opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(arch)));
            }
            Who::Plain => {}
        }
        for o in extra {
            opts.insert(o);
        }
        let mut buf = Vec::new();
        msg.encode(&mut Encoder::new(&mut buf)).expect("encode");
        buf
    }

    fn discover(m: MacAddr, who: Who) -> Vec<u8> {
        request(m, MessageType::Discover, who, vec![], Ipv4Addr::UNSPECIFIED)
    }

    fn select(m: MacAddr, ip: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
        request(
            m,
            MessageType::Request,
            Who::Plain,
            vec![DhcpOption::RequestedIpAddress(ip), DhcpOption::ServerIdentifier(server)],
            Ipv4Addr::UNSPECIFIED,
        )
    }

    fn reply(d: Decision) -> (Reply, v4::Message) {
        match d {
            Decision::Reply(r) => {
                let msg = v4::Message::decode(&mut Decoder::new(&r.packet)).expect("reply decodes");
                (r, msg)
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn ignored(d: Decision) -> IgnoreReason {
        match d {
            Decision::Ignore { reason, .. } => reason,
            other => panic!("expected silence, got {other:?}"),
        }
    }

    fn opt_bytes(msg: &v4::Message, code: OptionCode) -> Option<Vec<u8>> {
        match msg.opts().get(code)? {
            DhcpOption::BootfileName(b) | DhcpOption::ClassIdentifier(b) | DhcpOption::VendorExtensions(b) => {
                Some(b.clone())
            }
            _ => None,
        }
    }

    fn machines() -> BTreeMap<MacAddr, MachineProfile> {
        BTreeMap::from([(mac(1), MachineProfile::default())])
    }

    #[test]
    fn ipxe_client_gets_the_http_script_url_and_an_address() {
        let mut leases = LeaseTable::default();
        let (r, msg) = reply(decide(
            &discover(mac(1), Who::Ipxe),
            Port::Dhcp,
            &full_config(DefaultProfile::Ignore),
            &machines(),
            &mut leases,
            NOW,
        ));
        assert_eq!(r.kind, MessageType::Offer);
        assert_eq!(r.client, ClientKind::Ipxe);
        assert_eq!(msg.opcode(), v4::Opcode::BootReply);
        assert_eq!(msg.xid(), 0x1234);
        assert_eq!(msg.yiaddr(), Ipv4Addr::new(10, 0, 0, 3), "the server's own .2 is skipped");
        assert_eq!(msg.siaddr(), SERVER);
        assert_eq!(
            opt_bytes(&msg, OptionCode::BootfileName).as_deref(),
            Some(&b"http://10.0.0.2:8080/boot/ipxe?mac=${mac}"[..])
        );
        assert!(r.packet.len() >= 300);
        assert_eq!(r.to, Destination::Broadcast);
    }

    #[test]
    fn option_175_alone_marks_ipxe() {
        let extra = vec![DhcpOption::Unknown(v4::UnknownOption::new(OptionCode::Unknown(175), vec![1, 1, 1]))];
        let pkt = request(mac(1), MessageType::Discover, Who::Plain, extra, Ipv4Addr::UNSPECIFIED);
        let (r, _) = reply(decide(
            &pkt,
            Port::Dhcp,
            &full_config(DefaultProfile::Agent),
            &machines(),
            &mut LeaseTable::default(),
            NOW,
        ));
        assert_eq!(r.client, ClientKind::Ipxe);
    }

    #[test]
    fn firmware_pxe_gets_tftp_ipxe_by_architecture() {
        for (arch, file) in [(0u16, "undionly.kpxe"), (7, "ipxe.efi"), (9, "ipxe.efi")] {
            let (r, msg) = reply(decide(
                &discover(mac(1), Who::Pxe(arch)),
                Port::Dhcp,
                &full_config(DefaultProfile::Agent),
                &machines(),
                &mut LeaseTable::default(),
                NOW,
            ));
            assert_eq!(r.bootfile.as_deref(), Some(file), "arch {arch}");
            assert_eq!(opt_bytes(&msg, OptionCode::ClassIdentifier).as_deref(), Some(&b"PXEClient"[..]));
            assert_eq!(opt_bytes(&msg, OptionCode::VendorExtensions).as_deref(), Some(&[6u8, 1, 8, 255][..]));
            assert_eq!(msg.fname_str().and_then(Result::ok).map(|f| f.trim_end_matches('\0')), Some(file));
        }
        let reason = ignored(decide(
            &discover(mac(1), Who::Pxe(11)),
            Port::Dhcp,
            &full_config(DefaultProfile::Agent),
            &machines(),
            &mut LeaseTable::default(),
            NOW,
        ));
        assert_eq!(reason, IgnoreReason::UnsupportedArch(11));
    }

    #[test]
    fn unknown_machine_is_ignored_when_the_default_profile_says_so_and_nothing_changes() {
        let mut leases = LeaseTable::default();
        let d = decide(
            &discover(mac(9), Who::Ipxe),
            Port::Dhcp,
            &full_config(DefaultProfile::Ignore),
            &machines(),
            &mut leases,
            NOW,
        );
        assert!(!d.leases_changed());
        assert_eq!(ignored(d), IgnoreReason::UnknownMachine(mac(9)));
        assert_eq!(leases, LeaseTable::default());
        // With the agent default it boots.
        reply(decide(
            &discover(mac(9), Who::Ipxe),
            Port::Dhcp,
            &full_config(DefaultProfile::Agent),
            &machines(),
            &mut leases,
            NOW,
        ));
    }

    #[test]
    fn garbage_and_truncated_packets_are_ignored_without_panics_or_changes() {
        let good = discover(mac(1), Who::Ipxe);
        let mut leases = LeaseTable::default();
        let config = full_config(DefaultProfile::Agent);
        let mut inputs: Vec<Vec<u8>> = vec![vec![], vec![0xff; 3], vec![0; 600], b"GET / HTTP/1.1\r\n\r\n".to_vec()];
        for cut in [1, 20, 100, 235, 240, 241, 250] {
            inputs.push(good[..cut.min(good.len())].to_vec());
        }
        // A BOOTREPLY, and a request without a message type.
        let mut as_reply = good.clone();
        as_reply[0] = 2;
        inputs.push(as_reply);
        let mut seed = 7u32;
        for _ in 0..5000 {
            let mut fuzzed = good.clone();
            for _ in 0..4 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let i = (seed as usize >> 8) % fuzzed.len();
                fuzzed[i] = seed.to_le_bytes()[2];
            }
            // Fuzzed packets may still be valid requests; only require no panic.
            let _ = decide(&fuzzed, Port::Dhcp, &config, &machines(), &mut leases.clone(), NOW);
        }
        for input in inputs {
            let d = decide(&input, Port::Dhcp, &config, &machines(), &mut leases, NOW);
            assert!(matches!(d, Decision::Ignore { .. }), "{input:?} got {d:?}");
        }
        assert_eq!(leases, LeaseTable::default());
    }

    #[test]
    fn full_dhcp_offer_request_ack_then_renewal_keeps_the_address() {
        let config = full_config(DefaultProfile::Agent);
        let mut leases = LeaseTable::default();
        let (offer, _) =
            reply(decide(&discover(mac(1), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        let ip = offer.address.expect("address");
        assert!(offer.bootfile.is_none(), "a plain client gets no boot file");
        let (ack, msg) = reply(decide(&select(mac(1), ip, SERVER), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        assert_eq!(ack.kind, MessageType::Ack);
        assert_eq!(msg.yiaddr(), ip);
        assert!(matches!(msg.opts().get(OptionCode::AddressLeaseTime), Some(DhcpOption::AddressLeaseTime(3600))));
        assert_eq!(leases.active(mac(1), NOW).map(|l| l.ip), Some(ip));
        // Renewal (ciaddr set, no server id) later: same address, unicast, extended.
        let renew = request(mac(1), MessageType::Request, Who::Plain, vec![], ip);
        let (ack2, _) = reply(decide(&renew, Port::Dhcp, &config, &machines(), &mut leases, NOW + 1800));
        assert_eq!(ack2.to, Destination::Unicast(ip));
        assert_eq!(leases.leases[&mac(1)].expires, NOW + 1800 + 3600);
        // Rediscovery after a reboot gives the same address.
        let (again, _) =
            reply(decide(&discover(mac(1), Who::Ipxe), Port::Dhcp, &config, &machines(), &mut leases, NOW + 1900));
        assert_eq!(again.address, Some(ip));
    }

    #[test]
    fn addresses_are_never_shared_and_exhaustion_is_silent() {
        let config = full_config(DefaultProfile::Agent);
        let mut leases = LeaseTable::default();
        let (a, _) = reply(decide(&discover(mac(1), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        let (b, _) = reply(decide(&discover(mac(2), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        assert_ne!(a.address, b.address);
        // The range .2-.4 minus the server leaves two.
        assert_eq!(
            ignored(decide(&discover(mac(3), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW)),
            IgnoreReason::PoolExhausted
        );
        // Someone asking for another machine's address is refused.
        let (nak, _) = reply(decide(
            &select(mac(3), a.address.expect("ip"), SERVER),
            Port::Dhcp,
            &config,
            &machines(),
            &mut leases,
            NOW,
        ));
        assert_eq!(nak.kind, MessageType::Nak);
        // After the offer hold expires unrequested, the address is free again.
        let (c, _) = reply(decide(
            &discover(mac(3), Who::Plain),
            Port::Dhcp,
            &config,
            &machines(),
            &mut leases,
            NOW + OFFER_HOLD_SECS + 1,
        ));
        assert!(c.address.is_some());
    }

    #[test]
    fn choosing_another_server_withdraws_the_offer_and_decline_skips_the_address() {
        let config = full_config(DefaultProfile::Agent);
        let mut leases = LeaseTable::default();
        let (offer, _) =
            reply(decide(&discover(mac(1), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        let ip = offer.address.expect("ip");
        let d = decide(
            &select(mac(1), ip, Ipv4Addr::new(10, 0, 0, 99)),
            Port::Dhcp,
            &config,
            &machines(),
            &mut leases,
            NOW,
        );
        assert!(d.leases_changed());
        assert_eq!(ignored(d), IgnoreReason::OtherServer);
        assert!(leases.leases.is_empty());
        // Bind, then decline: that address is not offered again for a while.
        reply(decide(&discover(mac(1), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        reply(decide(&select(mac(1), ip, SERVER), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        let decline = request(
            mac(1),
            MessageType::Decline,
            Who::Plain,
            vec![DhcpOption::RequestedIpAddress(ip)],
            Ipv4Addr::UNSPECIFIED,
        );
        assert_eq!(
            ignored(decide(&decline, Port::Dhcp, &config, &machines(), &mut leases, NOW)),
            IgnoreReason::Declined(ip)
        );
        let (next, _) =
            reply(decide(&discover(mac(1), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW + 1));
        assert_ne!(next.address, Some(ip));
        // Release frees it.
        let bound = next.address.expect("ip");
        reply(decide(&select(mac(1), bound, SERVER), Port::Dhcp, &config, &machines(), &mut leases, NOW + 1));
        let release = request(mac(1), MessageType::Release, Who::Plain, vec![], bound);
        assert_eq!(
            ignored(decide(&release, Port::Dhcp, &config, &machines(), &mut leases, NOW + 2)),
            IgnoreReason::Released
        );
        assert!(leases.leases.is_empty());
    }

    #[test]
    fn proxy_dhcp_answers_pxe_clients_without_an_address_and_port_4011_requests() {
        let config = proxy_config();
        let mut leases = LeaseTable::default();
        let (offer, msg) =
            reply(decide(&discover(mac(1), Who::Pxe(0)), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        assert_eq!(offer.kind, MessageType::Offer);
        assert_eq!(msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(offer.bootfile.as_deref(), Some("undionly.kpxe"));
        assert_eq!(opt_bytes(&msg, OptionCode::ClassIdentifier).as_deref(), Some(&b"PXEClient"[..]));
        assert!(msg.opts().get(OptionCode::AddressLeaseTime).is_none());
        // UEFI firmware asks the boot server on 4011.
        let req = request(mac(1), MessageType::Request, Who::Pxe(7), vec![], Ipv4Addr::new(10, 0, 0, 50));
        let (ack, _) = reply(decide(&req, Port::PxeBoot, &config, &machines(), &mut leases, NOW));
        assert_eq!(
            (ack.kind, ack.to, ack.bootfile.as_deref()),
            (MessageType::Ack, Destination::Source, Some("ipxe.efi"))
        );
        // iPXE (after chainloading) gets the script URL.
        let (ipxe, _) = reply(decide(&discover(mac(1), Who::Ipxe), Port::Dhcp, &config, &machines(), &mut leases, NOW));
        assert!(ipxe.bootfile.expect("file").starts_with("http://10.0.0.2:8080/boot/ipxe"));
        // Plain clients and REQUESTs on 67 belong to the real DHCP server.
        assert_eq!(
            ignored(decide(&discover(mac(1), Who::Plain), Port::Dhcp, &config, &machines(), &mut leases, NOW)),
            IgnoreReason::NotPxe
        );
        let req67 = request(mac(1), MessageType::Request, Who::Ipxe, vec![], Ipv4Addr::UNSPECIFIED);
        assert!(matches!(
            ignored(decide(&req67, Port::Dhcp, &config, &machines(), &mut leases, NOW)),
            IgnoreReason::Unhandled(_)
        ));
        assert_eq!(leases, LeaseTable::default(), "proxy mode never leases");
    }

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        let pool = AddressPool::parse_range("10.0.0.100-10.0.0.200").expect("valid");
        assert_eq!((pool.first, pool.last), (Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 200)));
        for bad in ["10.0.0.1", "10.0.0.9-10.0.0.1", "a-b", "10.0.0.0-11.0.0.0"] {
            assert!(AddressPool::parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lease_table_round_trips_through_json() {
        let mut leases = LeaseTable::default();
        leases.leases.insert(mac(1), Lease { ip: Ipv4Addr::new(10, 0, 0, 3), expires: 5, bound: true });
        let text = serde_json::to_string(&leases).expect("encode");
        assert!(text.contains("52:54:00:00:00:01"), "{text}");
        assert_eq!(serde_json::from_str::<LeaseTable>(&text).expect("decode"), leases);
    }
}
