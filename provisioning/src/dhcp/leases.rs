//! Addresses in full DHCP mode: the pool they come from and the lease table (who holds
//! which address until when, which addresses were declined).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// How long an offered (not yet requested) address stays reserved for its machine.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long an address a client declined (someone else answers on it) is not offered.
pub const DECLINE_HOLD_SECS: u64 = 600;

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

    pub(super) fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
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
    pub(super) fn taken_by_other(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.leases.iter().any(|(m, l)| *m != mac && l.ip == ip && l.expires > now)
            || self.declined.get(&ip).is_some_and(|until| *until > now)
    }

    /// The address for `mac`: its own (even expired) if nobody else holds it, else the
    /// lowest free one. Never the server's own address.
    pub(super) fn pick(&self, mac: MacAddr, pool: &AddressPool, server_ip: Ipv4Addr, now: u64) -> Option<Ipv4Addr> {
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::fixtures::mac;

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
