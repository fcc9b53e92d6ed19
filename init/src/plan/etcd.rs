//! A master node's own etcd member: `plinth.etcd_initial_cluster=m1=http://10.0.0.11:2380,...`
//! on the kernel command line makes PID 1 run the image's `/usr/bin/etcd` (built with
//! `etcd = true` or `plinth image build --with-etcd`) next to the master, its data on the
//! data disk, and points the master at every member's client URL. Three such nodes form
//! the cluster themselves; no etcd outside the machines is needed.
use std::net::Ipv4Addr;

use super::{NodeFacts, PlanError, RoleCommand, DATA_DIR};

/// Where the image carries etcd (Debian's `etcd-server` puts it there).
pub const ETCD_BINARY: &str = "/usr/bin/etcd";
/// etcd's client port, on every member.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// Members of a cluster, at most: etcd recommends 3, 5 or 7.
const MAX_MEMBERS: usize = 9;

/// One member of the initial cluster: its name and the peer URL the others reach it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub name: String,
    pub host: String,
    pub peer_port: u16,
}

impl EtcdMember {
    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
    }
    fn client_url(&self) -> String {
        format!("http://{}:{ETCD_CLIENT_PORT}", self.host)
    }
}

/// What the command line says about the node's etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdLaunch {
    pub members: Vec<EtcdMember>,
    /// `plinth.etcd_name=`: which member this node is; else found by hostname or address.
    pub name: Option<String>,
}

impl EtcdLaunch {
    /// `--etcd` for the master: every member, so it keeps a quorum when its own is down.
    pub fn client_urls(&self) -> String {
        self.members.iter().map(EtcdMember::client_url).collect::<Vec<_>>().join(",")
    }
}

fn bad(value: &str, reason: impl Into<String>) -> PlanError {
    PlanError::BadEtcdCluster { value: value.to_string(), reason: reason.into() }
}

/// Parses `NAME=http://HOST:PORT,...` (etcd's own `--initial-cluster` form).
pub fn parse_initial_cluster(value: &str, name: Option<&str>) -> Result<EtcdLaunch, PlanError> {
    let mut members: Vec<EtcdMember> = Vec::new();
    for entry in value.split(',') {
        let (member, url) = entry.split_once('=').ok_or_else(|| bad(value, format!("{entry:?} is not NAME=URL")))?;
        if !plinth_protocol::is_valid_hostname(member) {
            return Err(bad(value, format!("{member:?} is not a member name (letters, digits, '-')")));
        }
        let rest =
            url.strip_prefix("http://").ok_or_else(|| bad(value, format!("{url:?} is not an http:// peer URL")))?;
        let (host, port) = rest.split_once(':').ok_or_else(|| bad(value, format!("{url:?} has no port")))?;
        if host.parse::<Ipv4Addr>().is_err() && !plinth_protocol::is_valid_hostname(host) {
            return Err(bad(value, format!("{host:?} is not an address or host name")));
        }
        let peer_port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0 && *p != ETCD_CLIENT_PORT)
            .ok_or_else(|| bad(value, format!("{port:?} is not a peer port (1-65535, not {ETCD_CLIENT_PORT})")))?;
        if members.iter().any(|m| m.name == member) {
            return Err(bad(value, format!("{member:?} is named twice")));
        }
        members.push(EtcdMember { name: member.to_string(), host: host.to_string(), peer_port });
    }
    if members.len() > MAX_MEMBERS {
        return Err(bad(value, format!("{} members; at most {MAX_MEMBERS}", members.len())));
    }
    if let Some(n) = name {
        if !members.iter().any(|m| m.name == n) {
            return Err(bad(value, format!("plinth.etcd_name={n:?} is not one of its members")));
        }
    }
    Ok(EtcdLaunch { members, name: name.map(str::to_string) })
}

/// The member this node is: by `plinth.etcd_name=`, else by hostname, else by address.
fn this_member<'a>(launch: &'a EtcdLaunch, facts: &NodeFacts) -> Result<&'a EtcdMember, PlanError> {
    let by = |f: &dyn Fn(&EtcdMember) -> bool| launch.members.iter().find(|m| f(m));
    let found = match &launch.name {
        Some(name) => by(&|m| &m.name == name),
        None => by(&|m| m.name == facts.hostname)
            .or_else(|| by(&|m| m.host == facts.hostname))
            .or_else(|| facts.advertise_ip.and_then(|ip| by(&|m| m.host == ip.to_string()))),
    };
    found.ok_or_else(|| PlanError::NotAnEtcdMember {
        hostname: facts.hostname.clone(),
        address: facts.advertise_ip.map_or_else(|| "none".to_string(), |ip| ip.to_string()),
    })
}

/// etcd's argv (without argv\[0\]): listening on every address, advertising the URLs the
/// command line gave, its data under the data dir (the data disk when there is one).
pub fn etcd_args(launch: &EtcdLaunch, facts: &NodeFacts) -> Result<RoleCommand, PlanError> {
    let me = this_member(launch, facts)?;
    let cluster: Vec<String> = launch.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
    let args = [
        ("name", me.name.clone()),
        ("data-dir", format!("{DATA_DIR}/etcd")),
        ("listen-peer-urls", format!("http://0.0.0.0:{}", me.peer_port)),
        ("initial-advertise-peer-urls", me.peer_url()),
        ("listen-client-urls", format!("http://0.0.0.0:{ETCD_CLIENT_PORT}")),
        ("advertise-client-urls", me.client_url()),
        ("initial-cluster", cluster.join(",")),
        // Ignored by etcd once its data dir has a member: a reboot rejoins, never re-creates.
        ("initial-cluster-state", "new".to_string()),
        ("initial-cluster-token", "plinth".to_string()),
        // The console is a serial line: etcd's info lines would drown the role's.
        ("logger", "zap".to_string()),
        ("log-level", "error".to_string()),
    ];
    Ok(RoleCommand {
        args: args.into_iter().flat_map(|(k, v)| [format!("--{k}"), v]).collect(),
        // etcd 3.4 refuses to start on arm64 and others without it; harmless on x86-64.
        env: vec![("ETCD_UNSUPPORTED_ARCH".to_string(), std::env::consts::ARCH.to_string())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(hostname: &str, ip: Option<&str>) -> NodeFacts {
        NodeFacts {
            hostname: hostname.into(),
            advertise_ip: ip.map(|i| i.parse().expect("ip")),
            cpus: 2,
            mem_mb: 1024,
            disk_mb: 1024,
        }
    }

    const THREE: &str = "m1=http://10.0.0.11:2380,m2=http://10.0.0.12:2380,m3=http://10.0.0.13:2380";

    #[test]
    fn the_member_is_found_by_name_hostname_or_address_and_gets_etcds_flags() {
        let launch = parse_initial_cluster(THREE, None).expect("valid");
        assert_eq!(launch.client_urls(), "http://10.0.0.11:2379,http://10.0.0.12:2379,http://10.0.0.13:2379");
        let by_address = etcd_args(&launch, &facts("plinth-abc", Some("10.0.0.12"))).expect("m2");
        let flag = |cmd: &RoleCommand, name: &str| {
            let i = cmd.args.iter().position(|a| a == &format!("--{name}")).expect(name);
            cmd.args[i + 1].clone()
        };
        assert_eq!(flag(&by_address, "name"), "m2");
        assert_eq!(flag(&by_address, "initial-advertise-peer-urls"), "http://10.0.0.12:2380");
        assert_eq!(flag(&by_address, "advertise-client-urls"), "http://10.0.0.12:2379");
        assert_eq!(flag(&by_address, "initial-cluster"), THREE);
        assert_eq!(flag(&by_address, "data-dir"), "/var/lib/plinth/etcd");
        let by_hostname = etcd_args(&launch, &facts("m3", Some("192.168.1.5"))).expect("m3");
        assert_eq!(flag(&by_hostname, "name"), "m3");
        let named = parse_initial_cluster(THREE, Some("m1")).expect("valid");
        assert_eq!(flag(&etcd_args(&named, &facts("m3", None)).expect("m1"), "name"), "m1", "the name wins");
    }

    #[test]
    fn a_node_outside_the_cluster_and_bad_values_say_why() {
        let launch = parse_initial_cluster(THREE, None).expect("valid");
        let err = etcd_args(&launch, &facts("other", Some("10.0.0.99"))).expect_err("not a member");
        assert!(err.to_string().contains("other") && err.to_string().contains("10.0.0.99"), "{err}");
        for (value, says) in [
            ("m1", "NAME=URL"),
            ("m1=https://10.0.0.1:2380", "http://"),
            ("m1=http://10.0.0.1", "no port"),
            ("m1=http://10.0.0.1:2379", "peer port"),
            ("m1=http://10.0.0.1:x", "peer port"),
            ("m1=http://10.0.0.1:2380,m1=http://10.0.0.2:2380", "twice"),
            ("bad_name=http://10.0.0.1:2380", "member name"),
            ("m1=http://bad host:2380", "address or host"),
            ("", "NAME=URL"),
        ] {
            let err = parse_initial_cluster(value, None).expect_err(value);
            assert!(err.to_string().contains(says), "{value}: {err}");
        }
        let many: Vec<String> = (0..10).map(|i| format!("m{i}=http://10.0.0.{i}:2380")).collect();
        assert!(parse_initial_cluster(&many.join(","), None).is_err(), "ten members");
        assert!(parse_initial_cluster(THREE, Some("m9")).is_err(), "a name outside the cluster");
    }
}
