//! Requests, configurations and reply readers for the DHCP tests.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{self, Architecture, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::{AddressPool, Decision, DhcpConfig, DhcpMode, IgnoreReason, Reply};
use crate::mac::MacAddr;
use crate::profile::{DefaultProfile, MachineProfile};

pub(super) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub(super) const NOW: u64 = 1_000_000;

pub(super) fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

pub(super) fn full_config(default_profile: DefaultProfile) -> DhcpConfig {
    DhcpConfig {
        server_ip: SERVER,
        mode: DhcpMode::Full(AddressPool::parse_range("10.0.0.2-10.0.0.4").expect("range")),
        http_base: "http://10.0.0.2:8080".into(),
        default_profile,
    }
}

pub(super) fn proxy_config() -> DhcpConfig {
    DhcpConfig { mode: DhcpMode::Proxy, ..full_config(DefaultProfile::Agent) }
}

#[derive(Clone, Copy)]
pub(super) enum Who {
    Ipxe,
    Pxe(u16),
    Plain,
}

pub(super) fn request(m: MacAddr, kind: MessageType, who: Who, extra: Vec<DhcpOption>, ciaddr: Ipv4Addr) -> Vec<u8> {
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

pub(super) fn discover(m: MacAddr, who: Who) -> Vec<u8> {
    request(m, MessageType::Discover, who, vec![], Ipv4Addr::UNSPECIFIED)
}

pub(super) fn select(m: MacAddr, ip: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    request(
        m,
        MessageType::Request,
        Who::Plain,
        vec![DhcpOption::RequestedIpAddress(ip), DhcpOption::ServerIdentifier(server)],
        Ipv4Addr::UNSPECIFIED,
    )
}

pub(super) fn reply(d: Decision) -> (Reply, v4::Message) {
    match d {
        Decision::Reply(r) => {
            let msg = v4::Message::decode(&mut Decoder::new(&r.packet)).expect("reply decodes");
            (r, msg)
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

pub(super) fn ignored(d: Decision) -> IgnoreReason {
    match d {
        Decision::Ignore { reason, .. } => reason,
        other => panic!("expected silence, got {other:?}"),
    }
}

pub(super) fn opt_bytes(msg: &v4::Message, code: OptionCode) -> Option<Vec<u8>> {
    match msg.opts().get(code)? {
        DhcpOption::BootfileName(b) | DhcpOption::ClassIdentifier(b) | DhcpOption::VendorExtensions(b) => {
            Some(b.clone())
        }
        _ => None,
    }
}

pub(super) fn machines() -> BTreeMap<MacAddr, MachineProfile> {
    BTreeMap::from([(mac(1), MachineProfile::default())])
}
