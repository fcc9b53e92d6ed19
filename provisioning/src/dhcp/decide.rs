//! The decision for one request: checks and classification, then proxyDHCP (boot
//! options, no address) or full DHCP (offer, request, release, decline against the
//! lease table).
use std::collections::BTreeMap;

use dhcproto::v4::{self, MessageType};
use dhcproto::{Decodable, Decoder};
use std::net::Ipv4Addr;

use super::client::{bootfile, classify};
use super::leases::{AddressPool, Lease, LeaseTable, DECLINE_HOLD_SECS, OFFER_HOLD_SECS};
use super::packet::{build, options_well_formed, requested_ip, server_id};
use super::{ClientKind, Decision, Destination, DhcpConfig, DhcpMode, IgnoreReason, Port, Reply};
use crate::mac::MacAddr;
use crate::profile::{DefaultProfile, MachineProfile};

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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::fixtures::*;
    use dhcproto::v4::{DhcpOption, OptionCode};

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
    fn repeated_fixed_length_options_are_malformed_not_a_panic() {
        // dhcproto joins adjacent options of one code and then asserted option 94's length
        // (fuzz/corpus/dhcp_packet/adjacent_option_94.bin).
        for (code, value) in [(94u8, vec![1, 2, 1]), (152, vec![0, 0, 0, 1]), (80, vec![])] {
            let mut packet = discover(mac(1), Who::Pxe(0));
            let end = packet.iter().rposition(|b| *b == 255).expect("an end option");
            packet.truncate(end);
            for _ in 0..2 {
                packet.extend([code, u8::try_from(value.len()).unwrap()]);
                packet.extend(&value);
            }
            packet.push(255);
            let d = decide(
                &packet,
                Port::Dhcp,
                &full_config(DefaultProfile::Agent),
                &machines(),
                &mut LeaseTable::default(),
                NOW,
            );
            let repeated_empty = code == 80;
            match d {
                Decision::Ignore { reason: IgnoreReason::Malformed(why), .. } => {
                    assert!(!repeated_empty, "two empty rapid-commit options are one: {why}");
                    assert!(why.contains(&format!("option {code}")), "{why}");
                }
                other => assert!(repeated_empty, "option {code} twice got {other:?}"),
            }
        }
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
}
