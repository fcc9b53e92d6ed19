//! The record set: A and SRV records under names relative to the DNS domain (`leader`,
//! `hello.marathon`, `_hello._tcp.marathon`), so one set serves whatever `--dns-domain`
//! each node answers for. [`DnsRecords`] is its wire form with a generation.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Where an SRV record points: a relative name that has an A record, and a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SrvTarget {
    pub target: String,
    pub port: u16,
}

/// Every name of the domain with its records; names are lowercase, relative to the
/// domain, without a trailing dot. Values are sorted and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    #[serde(default)]
    pub a: BTreeMap<String, Vec<Ipv4Addr>>,
    #[serde(default)]
    pub srv: BTreeMap<String, Vec<SrvTarget>>,
}

/// `GET /agent/v1/dns` answers with this: the record set and its generation, which
/// grows whenever the set changes (an agent long-polls with `after=` the one it has).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecords {
    pub generation: u64,
    pub records: RecordSet,
}

impl RecordSet {
    pub fn add_a(&mut self, name: &str, ip: Ipv4Addr) {
        insert_sorted(self.a.entry(name.to_string()).or_default(), ip);
    }

    pub fn add_srv(&mut self, name: &str, target: &str, port: u16) {
        insert_sorted(self.srv.entry(name.to_string()).or_default(), SrvTarget { target: target.to_string(), port });
    }

    /// The A records of a relative name (empty when it has none).
    pub fn a_of(&self, name: &str) -> &[Ipv4Addr] {
        self.a.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn srv_of(&self, name: &str) -> &[SrvTarget] {
        self.srv.get(name).map_or(&[], Vec::as_slice)
    }

    /// The name exists: it has records, or a name below it has (an empty non-terminal such
    /// as `marathon`), or it is the domain itself (`""`). Else the answer is NXDOMAIN.
    pub fn name_exists(&self, name: &str) -> bool {
        if name.is_empty() || self.a.contains_key(name) || self.srv.contains_key(name) {
            return true;
        }
        let suffix = format!(".{name}");
        self.a.keys().chain(self.srv.keys()).any(|n| n.ends_with(&suffix))
    }
}

fn insert_sorted<T: Ord>(values: &mut Vec<T>, value: T) {
    if let Err(at) = values.binary_search(&value) {
        values.insert(at, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_sorted_and_unique_and_parents_exist() {
        let mut set = RecordSet::default();
        set.add_a("web.marathon", Ipv4Addr::new(10, 0, 0, 2));
        set.add_a("web.marathon", Ipv4Addr::new(10, 0, 0, 1));
        set.add_a("web.marathon", Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(set.a_of("web.marathon"), [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
        assert!(set.name_exists("marathon"), "an empty non-terminal exists");
        assert!(set.name_exists(""), "the domain itself exists");
        assert!(!set.name_exists("arathon"), "a suffix of a label is no parent");
        assert!(!set.name_exists("nope.marathon"));
    }
}
