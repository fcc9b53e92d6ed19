//! The wire side: the option area framed and length-checked before dhcproto parses
//! it, the request fields a decision reads, and the reply encoded (padded to the
//! smallest BOOTP message).
use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Encodable, Encoder};
use std::net::Ipv4Addr;

use super::leases::AddressPool;
use super::{ClientKind, DhcpConfig};

/// Smallest BOOTP message; some PXE ROMs drop shorter replies.
const MIN_PACKET: usize = 300;

/// Checks the option area's framing before dhcproto sees it: dhcproto asserts (panics,
/// in debug builds) on some wrong fixed lengths, and garbage must never panic.
pub(super) fn options_well_formed(packet: &[u8]) -> Result<(), String> {
    const COOKIE: [u8; 4] = [99, 130, 83, 99];
    if packet.len() < 240 {
        return Err(format!("{} bytes is shorter than a BOOTP header with options", packet.len()));
    }
    if packet[236..240] != COOKIE {
        return Err("no DHCP magic cookie".into());
    }
    let mut i = 240;
    // dhcproto joins adjacent options of one code into one (RFC 3396 long options) before
    // it asserts their length, so a fixed length must hold for the whole run too.
    let mut run: Option<(u8, usize)> = None;
    while i < packet.len() {
        let code = packet[i];
        match code {
            0 => {
                run = None;
                i += 1;
            }
            255 => return Ok(()),
            _ => {
                let len = *packet.get(i + 1).ok_or_else(|| format!("option {code} is cut off"))? as usize;
                if i + 2 + len > packet.len() {
                    return Err(format!("option {code} claims {len} bytes past the end"));
                }
                let total = match run {
                    Some((previous, sum)) if previous == code => sum + len,
                    _ => len,
                };
                run = Some((code, total));
                let fixed_ok = match code {
                    52 => return Err("option overload is not supported".into()),
                    80 => total == 0,
                    81 => len >= 3,
                    94 => total == 3,
                    93 => len >= 2,
                    152..=155 => total == 4,
                    _ => true,
                };
                if !fixed_ok {
                    return Err(format!("option {code} has the wrong length {total}"));
                }
                i += 2 + len;
            }
        }
    }
    Err("options do not end with an end option".into())
}

pub(super) fn requested_ip(msg: &v4::Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => (!msg.ciaddr().is_unspecified()).then(|| msg.ciaddr()),
    }
}

pub(super) fn server_id(msg: &v4::Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// The reply to `req`: a BOOTREPLY of `kind` giving `yiaddr`, with the lease options of
/// `pool` and the boot options for `client` when there is a boot file.
pub(super) fn build(
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
