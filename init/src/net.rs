//! Network setup: links, addresses and routes through rtnetlink; a DHCPv4 client built on
//! dhcproto messages sent over a packet socket (no address exists yet, so no UDP socket).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType};

use crate::error::{InitError, Result};
use crate::plan::netmask_to_prefix;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub loopback: bool,
    pub up: bool,
}

fn net_err(op: &str, iface: &str, e: impl std::fmt::Display) -> InitError {
    InitError::Net { op: op.to_string(), iface: iface.to_string(), source: io::Error::other(e.to_string()) }
}

/// Runs one rtnetlink conversation on a private current-thread runtime; the init itself
/// stays synchronous.
fn with_netlink<T>(
    op: &str,
    iface: &str,
    f: impl AsyncFnOnce(rtnetlink::Handle) -> std::result::Result<T, rtnetlink::Error>,
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| net_err("starting netlink runtime", iface, e))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| net_err(op, iface, e))?;
        let conn_task = tokio::spawn(conn);
        let out = f(handle).await.map_err(|e| net_err(op, iface, e));
        conn_task.abort();
        out
    })
}

pub fn list_links() -> Result<Vec<Link>> {
    with_netlink("listing links", "*", async |handle| {
        let mut links = Vec::new();
        let mut stream = handle.link().get().execute();
        while let Some(msg) = stream.try_next().await? {
            let mut link = Link {
                index: msg.header.index,
                name: String::new(),
                mac: None,
                loopback: msg.header.link_layer_type == LinkLayerType::Loopback,
                up: msg.header.flags.contains(LinkFlags::Up),
            };
            for attr in &msg.attributes {
                match attr {
                    LinkAttribute::IfName(n) => link.name = n.clone(),
                    LinkAttribute::Address(a) if a.len() == 6 => {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(a);
                        link.mac = Some(mac);
                    }
                    _ => {}
                }
            }
            links.push(link);
        }
        links.sort_by_key(|l| l.index);
        Ok(links)
    })
}

pub fn link_up(link: &Link) -> Result<()> {
    with_netlink("setting link up", &link.name, async |handle| {
        handle.link().set(rtnetlink::LinkUnspec::new_with_index(link.index).up().build()).execute().await
    })
}

pub fn add_address(link: &Link, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
    with_netlink("adding address", &link.name, async |handle| {
        handle.address().add(link.index, addr.into(), prefix_len).replace().execute().await
    })
}

pub fn add_default_route(link: &Link, gateway: Ipv4Addr) -> Result<()> {
    with_netlink("adding default route", &link.name, async |handle| {
        let route =
            rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(link.index).build();
        handle.route().add(route).replace().execute().await
    })
}

/// What a DHCP server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
    /// T1: when to renew.
    pub renew_secs: u32,
}

impl Lease {
    /// `/etc/resolv.conf` contents for this lease.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        if let Some(d) = &self.domain {
            out.push_str(&format!("search {d}\n"));
        }
        for ns in &self.dns {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        out
    }
}

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

fn base_message(mac: &[u8; 6], xid: u32, ciaddr: Ipv4Addr, kind: MessageType) -> v4::Message {
    let mut msg =
        v4::Message::new_with_id(xid, ciaddr, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, mac);
    // Ask for broadcast replies: we cannot receive unicast before the address is configured.
    msg.set_flags(v4::Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
    ]));
    msg
}

fn encode(msg: &v4::Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(300);
    msg.encode(&mut Encoder::new(&mut buf)).expect("encoding into a Vec cannot fail");
    buf
}

pub fn discover(mac: &[u8; 6], xid: u32) -> Vec<u8> {
    encode(&base_message(mac, xid, Ipv4Addr::UNSPECIFIED, MessageType::Discover))
}

/// REQUEST for an offer (`ciaddr` unset) or a renewal of a bound lease (`ciaddr` = our address).
pub fn request(mac: &[u8; 6], xid: u32, address: Ipv4Addr, server: Ipv4Addr, renewing: bool) -> Vec<u8> {
    let ciaddr = if renewing { address } else { Ipv4Addr::UNSPECIFIED };
    let mut msg = base_message(mac, xid, ciaddr, MessageType::Request);
    if !renewing {
        msg.opts_mut().insert(DhcpOption::RequestedIpAddress(address));
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    }
    encode(&msg)
}

/// A reply meant for us (`xid` and `mac` match): its type and the lease it describes.
pub fn parse_reply(payload: &[u8], xid: u32, mac: &[u8; 6]) -> Option<(MessageType, Lease)> {
    let msg = v4::Message::decode(&mut Decoder::new(payload)).ok()?;
    if msg.opcode() != v4::Opcode::BootReply || msg.xid() != xid || msg.chaddr().get(..6) != Some(&mac[..]) {
        return None;
    }
    let opts = msg.opts();
    let kind = opts.msg_type()?;
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => msg.siaddr(),
    };
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => netmask_to_prefix(*m).unwrap_or(24),
        _ => 24,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() => Some(h.clone()),
        _ => None,
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) if !d.is_empty() => Some(d.clone()),
        _ => None,
    };
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    let renew_secs = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => *t,
        _ => lease_secs / 2,
    };
    Some((
        kind,
        Lease { address: msg.yiaddr(), prefix_len, router, dns, hostname, domain, server, lease_secs, renew_secs },
    ))
}

/// IPv4 + UDP headers around a DHCP payload, from 0.0.0.0:68 to 255.255.255.255:67.
/// Fails for a payload too large for one IPv4 packet.
pub fn udp_broadcast_packet(payload: &[u8]) -> io::Result<Vec<u8>> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "DHCP payload too large for an IPv4 packet");
    let udp_len = u16::try_from(8 + payload.len()).map_err(|_| too_large())?;
    let total = udp_len.checked_add(20).ok_or_else(too_large)?;
    let mut p = Vec::with_capacity(usize::from(total));
    let [total_hi, total_lo] = total.to_be_bytes();
    p.extend_from_slice(&[0x45, 0, total_hi, total_lo, 0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
    let csum = ipv4_checksum(&p[..20]);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    p.extend_from_slice(&SERVER_PORT.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // UDP checksum is optional over IPv4
    p.extend_from_slice(payload);
    Ok(p)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // why: the loop above folded the sum into 16 bits.
    #[allow(clippy::cast_possible_truncation)]
    let sum = sum as u16;
    !sum
}

/// The UDP payload of an IPv4 packet addressed to `port`, if it is one.
pub fn udp_payload_to(packet: &[u8], port: u16) -> Option<&[u8]> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 17 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let udp = packet.get(ihl..total)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).clamp(8, udp.len());
    Some(&udp[8..len])
}

/// `ETH_P_IP` in network byte order, as `socket(2)` and `sockaddr_ll` take it.
// why: ETH_P_IP is 0x0800.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
const ETH_P_IP_BE: u16 = (libc::ETH_P_IP as u16).to_be();
// why: AF_PACKET is 17.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
const AF_PACKET_FAMILY: libc::sa_family_t = libc::AF_PACKET as libc::sa_family_t;
// why: a sockaddr_ll is 20 bytes.
#[allow(clippy::cast_possible_truncation)]
const SOCKADDR_LL_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;

/// A packet socket bound to one interface, carrying IPv4 packets (link header added by the kernel).
struct PacketSocket {
    fd: OwnedFd,
    ifindex: libc::c_int,
}

impl PacketSocket {
    fn open(ifindex: u32) -> io::Result<Self> {
        let ifindex = libc::c_int::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("interface index {ifindex} out of range"))
        })?;
        let proto = ETH_P_IP_BE;
        // SAFETY: plain socket(2) call; the returned fd is checked and owned right after.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, i32::from(proto)) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = Self::sockaddr(ifindex, proto, [0; 8], 0);
        // SAFETY: addr is a fully initialised sockaddr_ll and its size is passed alongside.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_ll).cast(), SOCKADDR_LL_LEN) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    fn sockaddr(ifindex: libc::c_int, proto: u16, addr: [u8; 8], halen: u8) -> libc::sockaddr_ll {
        libc::sockaddr_ll {
            sll_family: AF_PACKET_FAMILY,
            sll_protocol: proto,
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: halen,
            sll_addr: addr,
        }
    }

    fn send_broadcast(&self, packet: &[u8]) -> io::Result<()> {
        let addr = Self::sockaddr(self.ifindex, ETH_P_IP_BE, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], 6);
        // SAFETY: packet and addr are valid for the duration of the call; lengths match them.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                SOCKADDR_LL_LEN,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One packet, or `None` when `timeout` passes first.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: pfd is one valid pollfd; nfds is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
        }
        if rc == 0 {
            return Ok(None);
        }
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        // Negative is -1: the error is in errno.
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        Ok(Some(n))
    }
}

/// Sends `packet` and waits for a reply of one of `accept` types, retrying with backoff.
fn exchange(
    sock: &PacketSocket,
    packet: &[u8],
    xid: u32,
    mac: &[u8; 6],
    accept: &[MessageType],
    deadline: Instant,
) -> io::Result<Option<(MessageType, Lease)>> {
    let framed = udp_broadcast_packet(packet)?;
    // Short first wait: a local DHCP server answers in milliseconds; back off for slow ones.
    let mut wait = Duration::from_millis(500);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline {
        sock.send_broadcast(&framed)?;
        let round_end = (Instant::now() + wait).min(deadline);
        while let Some(left) = round_end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            let Some(n) = sock.recv(&mut buf, left)? else { break };
            let reply = udp_payload_to(&buf[..n], CLIENT_PORT).and_then(|p| parse_reply(p, xid, mac));
            if let Some((kind, lease)) = reply {
                if accept.contains(&kind) {
                    return Ok(Some((kind, lease)));
                }
            }
        }
        wait = (wait * 2).min(Duration::from_secs(8));
    }
    Ok(None)
}

fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    // getrandom is fine this early: it only decides the transaction id.
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.subsec_nanos() ^ std::process::id()).to_be_bytes();
    }
    u32::from_be_bytes(b)
}

/// DISCOVER → OFFER → REQUEST → ACK on `link`, within `timeout`.
pub fn acquire_lease(link: &Link, timeout: Duration) -> Result<Lease> {
    let dhcp_err = |reason: String| InitError::Dhcp { iface: link.name.clone(), reason };
    let mac = link.mac.ok_or_else(|| dhcp_err("interface has no MAC address".into()))?;
    let sock = PacketSocket::open(link.index).map_err(|e| dhcp_err(format!("opening packet socket: {e}")))?;
    let deadline = Instant::now() + timeout;
    let xid = random_xid();
    let (_, offer) = exchange(&sock, &discover(&mac, xid), xid, &mac, &[MessageType::Offer], deadline)
        .map_err(|e| dhcp_err(format!("sending DISCOVER: {e}")))?
        .ok_or_else(|| dhcp_err(format!("no OFFER within {}s", timeout.as_secs())))?;
    let req = request(&mac, xid, offer.address, offer.server, false);
    match exchange(&sock, &req, xid, &mac, &[MessageType::Ack, MessageType::Nak], deadline)
        .map_err(|e| dhcp_err(format!("sending REQUEST: {e}")))?
    {
        Some((MessageType::Ack, lease)) => Ok(lease),
        Some(_) => Err(dhcp_err(format!("server {} refused {} (NAK)", offer.server, offer.address))),
        None => Err(dhcp_err(format!("no ACK for {} from {}", offer.address, offer.server))),
    }
}

/// Renews a bound lease; returns the new lease or why it failed.
pub fn renew_lease(link: &Link, lease: &Lease, timeout: Duration) -> Result<Lease> {
    let dhcp_err = |reason: String| InitError::Dhcp { iface: link.name.clone(), reason };
    let mac = link.mac.ok_or_else(|| dhcp_err("interface has no MAC address".into()))?;
    let sock = PacketSocket::open(link.index).map_err(|e| dhcp_err(format!("opening packet socket: {e}")))?;
    let xid = random_xid();
    let req = request(&mac, xid, lease.address, lease.server, true);
    match exchange(&sock, &req, xid, &mac, &[MessageType::Ack, MessageType::Nak], Instant::now() + timeout)
        .map_err(|e| dhcp_err(format!("sending renewal: {e}")))?
    {
        Some((MessageType::Ack, new)) => Ok(new),
        Some(_) => Err(dhcp_err(format!("server {} refused renewal (NAK)", lease.server))),
        None => Err(dhcp_err("no answer to renewal".into())),
    }
}

/// Waits up to `timeout` for the link to report carrier; a DISCOVER sent before that is lost.
pub fn wait_for_carrier(link: &Link, timeout: Duration) -> bool {
    let path = format!("/sys/class/net/{}/carrier", link.name);
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if std::fs::read_to_string(&path).is_ok_and(|c| c.trim() == "1") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Hostname derived from the MAC when nothing names the node: `plinth-a1b2c3`.
pub fn hostname_from_mac(mac: &[u8; 6]) -> String {
    format!("plinth-{:02x}{:02x}{:02x}", mac[3], mac[4], mac[5])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn server_reply(xid: u32, kind: MessageType, mac: &[u8]) -> Vec<u8> {
        let mut msg = v4::Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            mac,
        );
        msg.set_opcode(v4::Opcode::BootReply);
        let o = msg.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        o.insert(DhcpOption::Hostname("node-7".into()));
        encode(&msg)
    }

    #[test]
    fn discover_is_a_broadcast_request_with_our_mac() {
        let bytes = discover(&MAC, 42);
        let msg = v4::Message::decode(&mut Decoder::new(&bytes)).expect("valid DHCP");
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(&msg.chaddr()[..6], &MAC);
        assert!(msg.flags().broadcast());
    }

    #[test]
    fn ack_for_us_gives_a_lease() {
        let (kind, lease) = parse_reply(&server_reply(42, MessageType::Ack, &MAC), 42, &MAC).expect("reply for us");
        assert_eq!(kind, MessageType::Ack);
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                hostname: Some("node-7".into()),
                domain: None,
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease_secs: 86400,
                renew_secs: 43200,
            }
        );
        assert_eq!(lease.resolv_conf(), "nameserver 10.0.2.3\n");
    }

    #[test]
    fn replies_for_others_and_garbage_are_ignored() {
        assert_eq!(parse_reply(&server_reply(43, MessageType::Ack, &MAC), 42, &MAC), None, "other xid");
        assert_eq!(parse_reply(&server_reply(42, MessageType::Ack, &[1, 2, 3, 4, 5, 6]), 42, &MAC), None, "other mac");
        assert_eq!(parse_reply(b"\x02garbage", 42, &MAC), None);
        assert_eq!(parse_reply(&discover(&MAC, 42), 42, &MAC), None, "a request is not a reply");
    }

    #[test]
    fn udp_framing_round_trips_and_checksum_is_valid() {
        let pkt = udp_broadcast_packet(b"hello").unwrap();
        assert_eq!(ipv4_checksum(&pkt[..20]), 0, "a header with its checksum sums to zero");
        assert_eq!(udp_payload_to(&pkt, SERVER_PORT), Some(&b"hello"[..]));
        assert_eq!(udp_payload_to(&pkt, CLIENT_PORT), None);
        assert_eq!(udp_payload_to(&pkt[..10], SERVER_PORT), None, "truncated packet");
    }

    #[test]
    fn mac_hostname() {
        assert_eq!(hostname_from_mac(&MAC), "plinth-123456");
    }
}
