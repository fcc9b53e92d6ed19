//! Mesos-DNS's HTTP API answers, from a record set (pure): `GET /v1/hosts/{host}` lists
//! a name's addresses, `GET /v1/services/{service}` an SRV name's targets with their
//! addresses and ports. As Mesos-DNS does, a name without records answers one entry of
//! empty strings, and ports are strings.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use serde::Serialize;

use crate::records::RecordSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostEntry {
    /// The name asked for, fully qualified (trailing dot).
    pub host: String,
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    /// The SRV name asked for, as asked (no trailing dot).
    pub service: String,
    /// The target's name, fully qualified.
    pub host: String,
    pub ip: String,
    pub port: String,
}

/// `name` relative to `domain`, lowercase; `None` outside the domain.
pub fn relative_name(name: &str, domain: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    if name == domain {
        return Some(String::new());
    }
    name.strip_suffix(&format!(".{domain}")).map(str::to_string)
}

fn absolute(relative: &str, domain: &str) -> String {
    let domain = domain.trim_matches('.');
    if relative.is_empty() {
        format!("{domain}.")
    } else {
        format!("{relative}.{domain}.")
    }
}

/// `GET /v1/hosts/{host}`.
pub fn hosts(set: &RecordSet, domain: &str, host: &str) -> Vec<HostEntry> {
    let found: Vec<HostEntry> = relative_name(host, domain)
        .map(|name| {
            set.a_of(&name).iter().map(|ip| HostEntry { host: absolute(&name, domain), ip: ip.to_string() }).collect()
        })
        .unwrap_or_default();
    if found.is_empty() {
        return vec![HostEntry { host: String::new(), ip: String::new() }];
    }
    found
}

/// `GET /v1/services/{service}`.
pub fn services(set: &RecordSet, domain: &str, service: &str) -> Vec<ServiceEntry> {
    let asked = service.trim_end_matches('.');
    let mut found = Vec::new();
    if let Some(name) = relative_name(service, domain) {
        for target in set.srv_of(&name) {
            for ip in set.a_of(&target.target) {
                found.push(ServiceEntry {
                    service: asked.to_string(),
                    host: absolute(&target.target, domain),
                    ip: ip.to_string(),
                    port: target.port.to_string(),
                });
            }
        }
    }
    if found.is_empty() {
        return vec![ServiceEntry {
            service: String::new(),
            host: String::new(),
            ip: String::new(),
            port: String::new(),
        }];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn set() -> RecordSet {
        let mut set = RecordSet::default();
        set.add_a("hello.marathon", Ipv4Addr::new(10, 0, 0, 11));
        set.add_a("hello-1.marathon.slave", Ipv4Addr::new(10, 0, 0, 11));
        set.add_srv("_hello._tcp.marathon", "hello-1.marathon.slave", 31001);
        set
    }

    #[test]
    fn hosts_answer_fully_qualified_names_in_any_case() {
        let expected = vec![HostEntry { host: "hello.marathon.mesos.".into(), ip: "10.0.0.11".into() }];
        assert_eq!(hosts(&set(), "mesos", "hello.marathon.mesos"), expected);
        assert_eq!(hosts(&set(), "mesos", "Hello.Marathon.Mesos."), expected);
    }

    #[test]
    fn services_answer_targets_with_string_ports() {
        assert_eq!(
            services(&set(), "mesos", "_hello._tcp.marathon.mesos"),
            vec![ServiceEntry {
                service: "_hello._tcp.marathon.mesos".into(),
                host: "hello-1.marathon.slave.mesos.".into(),
                ip: "10.0.0.11".into(),
                port: "31001".into(),
            }]
        );
        let json = serde_json::to_value(services(&set(), "mesos", "_hello._tcp.marathon.mesos")).unwrap();
        assert_eq!(json[0]["port"], "31001");
    }

    #[test]
    fn unknown_names_answer_one_empty_entry() {
        let empty_host = vec![HostEntry { host: String::new(), ip: String::new() }];
        assert_eq!(hosts(&set(), "mesos", "nope.marathon.mesos"), empty_host);
        assert_eq!(hosts(&set(), "mesos", "hello.marathon.example"), empty_host, "outside the domain");
        assert_eq!(services(&set(), "mesos", "_nope._tcp.marathon.mesos")[0].service, "");
    }
}
