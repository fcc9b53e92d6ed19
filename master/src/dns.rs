//! The master's side of DNS: the current Mesos-DNS record set (`plinth_dns::build` over
//! the core), rebuilt after every command or tick that changed apps, tasks or agents,
//! published on a watch channel that the master's own DNS server, the agents' long-polls
//! (`GET /agent/v1/dns`, `api/dns.rs`) and Mesos-DNS's HTTP API read.
//!
//! The rebuild (about 20 ms for 10,000 tasks) runs off the command lock, on the read
//! model's copy of the core (`read_model.rs`, current with every acknowledged write) in
//! one background task: changes made while it builds are folded into the next build.
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use plinth_dns::{build, AgentNode, ClusterView, DnsRecords, PortProtocol, RecordSet, TaskNode, TaskPort};
use plinth_protocol::{AppDefinition, NetworkMode};
use plinth_scheduler::{Changes, Core};
use tokio::sync::{watch, Notify};

/// The record set and its generation, bumped only when the set really changes.
pub struct DnsFeed {
    sender: watch::Sender<Arc<DnsRecords>>,
    /// This master's address and API port (`leader.mesos`, `master.mesos`), when known.
    leader: Option<(Ipv4Addr, u16)>,
    /// Set by a change; taken by the builder task.
    stale: Arc<Notify>,
}

impl DnsFeed {
    pub fn new(core: &Core, leader: Option<(Ipv4Addr, u16)>) -> DnsFeed {
        let records = DnsRecords { generation: 1, records: build(&view_of(core, leader)) };
        DnsFeed { sender: watch::channel(Arc::new(records)).0, leader, stale: Arc::default() }
    }

    /// Wakes when the set is stale (`Master::spawn_dns_builder` waits on it).
    pub fn stale(&self) -> Arc<Notify> {
        self.stale.clone()
    }

    /// The set of `core`'s current state.
    pub fn build(&self, core: &Core) -> RecordSet {
        build(&view_of(core, self.leader))
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<DnsRecords>> {
        self.sender.subscribe()
    }

    pub fn current(&self) -> Arc<DnsRecords> {
        self.sender.borrow().clone()
    }

    /// Marks the set stale when `changes` touched what it is made of. Called with the
    /// command lock held, after the write: the builder's copy of the core then has it.
    pub fn note(&self, changes: &Changes) {
        if !(changes.tasks.is_empty() && changes.agents.is_empty() && changes.apps.is_empty()) {
            self.stale.notify_one();
        }
    }

    /// Wakes readers only when the set differs.
    pub fn publish(&self, records: RecordSet) {
        self.sender.send_if_modified(|current| {
            if current.records == records {
                return false;
            }
            *current = Arc::new(DnsRecords { generation: current.generation + 1, records });
            true
        });
    }
}

/// The builder's input from the core: active agents, running tasks (not being killed).
pub fn view_of(core: &Core, leader: Option<(Ipv4Addr, u16)>) -> ClusterView {
    let agents = core
        .agents()
        .filter(|a| a.record.active)
        .filter_map(|a| {
            Some(AgentNode { hostname: a.record.hostname.clone(), ip: a.record.advertise_ip.parse().ok()? })
        })
        .collect();
    let tasks = core
        .tasks()
        .filter(|t| t.is_running())
        .filter_map(|task| {
            let agent_ip = core
                .agent(&task.agent_id)
                .and_then(|a| a.record.advertise_ip.parse().ok())
                .or_else(|| task.host.parse().ok())?;
            let protocols = core.app(&task.app_id).map(|app| port_protocols(&app.definition)).unwrap_or_default();
            let ports = task
                .ports
                .iter()
                .enumerate()
                .map(|(i, port)| TaskPort {
                    host_port: *port,
                    protocols: protocols.get(i).cloned().unwrap_or_else(|| vec![PortProtocol::Tcp]),
                })
                .collect();
            // Plinth has no routed per-task addresses (BRIDGE containers sit on their
            // node's private bridge), so names carry the agent's address, as Mesos-DNS
            // does for Docker's bridge.
            Some(TaskNode {
                app_id: task.app_id.to_string(),
                task_id: task.id.to_string(),
                agent_ip,
                container_ip: None,
                ports,
            })
        })
        .collect();
    ClusterView { leader, agents, tasks }
}

/// The protocols of each host port of an app's tasks, in the order they are assigned
/// (see `AppDefinition::host_port_count`).
fn port_protocols(definition: &AppDefinition) -> Vec<Vec<PortProtocol>> {
    let definitions = || {
        definition.port_definitions.iter().flatten().map(|d| PortProtocol::parse_list(&d.protocol)).collect::<Vec<_>>()
    };
    match definition.network_mode() {
        NetworkMode::Bridge => {
            definition.host_port_mappings().iter().map(|m| PortProtocol::parse_list(&m.protocol)).collect()
        }
        NetworkMode::Host => match definition.container_port_mappings() {
            Some(mappings) if definition.port_definitions.as_ref().is_none_or(Vec::is_empty) => {
                mappings.iter().map(|m| PortProtocol::parse_list(&m.protocol)).collect()
            }
            _ => definitions(),
        },
        NetworkMode::None => Vec::new(),
    }
}

/// The address `leader.mesos` names: the API's listen address when it is one, the
/// hostname when it is an address, else the node's first non-loopback IPv4 address.
pub fn leader_address(listen: IpAddr, hostname: &str) -> Option<Ipv4Addr> {
    if let IpAddr::V4(ip) = listen {
        if !ip.is_unspecified() {
            return Some(ip);
        }
    }
    if let Ok(ip) = hostname.parse::<Ipv4Addr>() {
        return Some(ip);
    }
    let addresses = nix::ifaddrs::getifaddrs().ok()?;
    addresses
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback() && !ip.is_link_local())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: serde_json::Value) -> AppDefinition {
        let mut definition = AppDefinition::from_json(json.to_string().as_bytes()).expect("an app");
        definition.normalize();
        definition
    }

    #[test]
    fn each_host_port_keeps_its_mappings_protocol() {
        let bridge = app(serde_json::json!({"id": "/web", "container": {"type": "DOCKER", "docker": {
            "image": "busybox", "network": "BRIDGE", "portMappings": [
                {"containerPort": 53, "hostPort": 0, "protocol": "udp"},
                {"containerPort": 8080},
                {"containerPort": 9090, "hostPort": 0, "protocol": "udp,tcp"}]}}}));
        // The mapping without a hostPort takes no host port.
        assert_eq!(port_protocols(&bridge), [vec![PortProtocol::Udp], vec![PortProtocol::Udp, PortProtocol::Tcp]]);
        let host = app(serde_json::json!({"id": "/cmd", "cmd": "sleep 1", "portDefinitions": [
            {"port": 0, "protocol": "tcp"}, {"port": 0, "protocol": "udp"}]}));
        assert_eq!(port_protocols(&host), [vec![PortProtocol::Tcp], vec![PortProtocol::Udp]]);
        let default = app(serde_json::json!({"id": "/cmd", "cmd": "sleep 1"}));
        assert_eq!(port_protocols(&default), [vec![PortProtocol::Tcp]], "Marathon's one default port");
    }
}
