//! Bytes as a UDP payload on the master's PXE interface, decided by the pure DHCP core
//! (provisioning/src/dhcp/decide.rs) in proxyDHCP on 67 and 4011 and in full DHCP with a
//! lease table holding another machine's lease and a declined address; then once more
//! against the table the first answer left (a retransmission). Nothing may panic, and a
//! reply must be a BOOTREPLY to the asking machine of at least 300 bytes that never
//! gives the server's, a declined or another machine's address.
#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::{v4, Decodable, Decoder};
use libfuzzer_sys::fuzz_target;
use plinth_provisioning::dhcp::{decide, AddressPool, Decision, DhcpConfig, DhcpMode, Lease, LeaseTable, Port};
use plinth_provisioning::{DefaultProfile, MacAddr, MachineProfile};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const OTHERS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const DECLINED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
const OTHER_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xee]);
const NOW: u64 = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let pool = AddressPool::parse_range("10.0.0.2-10.0.0.6").expect("range");
    let full = DhcpConfig {
        server_ip: SERVER,
        mode: DhcpMode::Full(pool.clone()),
        http_base: "http://10.0.0.2:8080".into(),
        default_profile: DefaultProfile::Agent,
    };
    let proxy = DhcpConfig { mode: DhcpMode::Proxy, ..full.clone() };
    let mut machines = BTreeMap::new();
    machines.insert(MacAddr([0x52, 0x54, 0, 0, 0, 1]), MachineProfile::default());

    for port in [Port::Dhcp, Port::PxeBoot] {
        let decision = decide(data, port, &proxy, &machines, &mut LeaseTable::default(), NOW);
        check(data, &decision, None);
    }
    let ignoring = DhcpConfig { default_profile: DefaultProfile::Ignore, ..full.clone() };
    let mut leases = table();
    check(data, &decide(data, Port::Dhcp, &ignoring, &machines, &mut leases, NOW), Some(&pool));

    let mut leases = table();
    for now in [NOW, NOW + 30] {
        let decision = decide(data, Port::Dhcp, &full, &machines, &mut leases, now);
        check(data, &decision, Some(&pool));
        if asker(&decision) != Some(OTHER_MAC) {
            let other = leases.leases.get(&OTHER_MAC);
            assert!(other.is_some_and(|l| l.ip == OTHERS), "another machine's lease changed: {other:?}");
        }
        // The shell persists the table as JSON (provisioning/src/store.rs).
        let json = serde_json::to_vec(&leases).expect("a lease table serializes");
        let back: LeaseTable = serde_json::from_slice(&json).expect("a lease table reads back");
        assert_eq!(back, leases, "the lease table does not survive a store round trip");
    }
});

fn table() -> LeaseTable {
    let mut leases = LeaseTable::default();
    leases.leases.insert(OTHER_MAC, Lease { ip: OTHERS, expires: NOW + 3_600, bound: true });
    leases.declined.insert(DECLINED, NOW + 600);
    leases
}

fn asker(decision: &Decision) -> Option<MacAddr> {
    match decision {
        Decision::Reply(reply) => Some(reply.mac),
        Decision::Ignore { mac, .. } => *mac,
    }
}

fn check(request: &[u8], decision: &Decision, pool: Option<&AddressPool>) {
    let Decision::Reply(reply) = decision else { return };
    assert!(reply.packet.len() >= 300, "a {}-byte reply", reply.packet.len());
    let req = v4::Message::decode(&mut Decoder::new(request)).expect("a request that got a reply decodes");
    let msg = match v4::Message::decode(&mut Decoder::new(&reply.packet)) {
        Ok(msg) => msg,
        Err(e) => panic!("the reply does not decode: {e}"),
    };
    assert_eq!(msg.opcode(), v4::Opcode::BootReply);
    assert_eq!(msg.xid(), req.xid(), "the reply answers another transaction");
    assert_eq!(msg.chaddr(), req.chaddr(), "the reply goes to another machine");
    assert_eq!(MacAddr::from_chaddr(msg.chaddr()), Some(reply.mac));
    assert_eq!(msg.opts().msg_type(), Some(reply.kind));
    if let Some(address) = reply.address {
        let pool = pool.expect("proxyDHCP gives no address");
        assert!(
            u32::from(pool.first) <= u32::from(address) && u32::from(address) <= u32::from(pool.last),
            "{address} is outside the pool"
        );
        assert!(address != SERVER && address != DECLINED, "{address} was given away");
        assert!(address != OTHERS || reply.mac == OTHER_MAC, "another machine's {address} was given away");
        assert_eq!(msg.yiaddr(), address, "the packet gives another address than the decision says");
    }
}
