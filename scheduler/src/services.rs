//! Service discovery in the core: the service table every agent's balancer serves (each
//! app's service ports with the tasks that take traffic), its generation, and the drain
//! that keeps a planned kill from costing a request: the task leaves the table first and
//! is killed once every balancing agent confirmed a table without it, or after the drain
//! timeout (`PLINTH_DRAIN_SECONDS`, else [`crate::CoreConfig::drain_timeout_ms`]).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use plinth_protocol::agent::{Backend, Balance, LbMode, Service, ServiceProtocol, ServiceTable};
use plinth_protocol::marathon::NetworkMode;
use plinth_protocol::views::events::LbBackend;
use plinth_protocol::{AgentId, AppDefinition, AppId, TaskId, Timestamp};

use crate::drain::{drain_timeout_ms, Drain};
use crate::model::{Readiness, TaskRecord};
use crate::state::Core;

pub use plinth_protocol::marathon::lb_labels::DRAIN_SECONDS_LABEL;
/// One service port of a definition: the port, its transport and which of a task's host
/// ports (by index) carries it, which is also the n of its `HAPROXY_{n}_*` labels. A port
/// of protocol `udp,tcp` gives two bindings, one per transport, with the same index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Binding {
    pub service_port: u16,
    pub protocol: ServiceProtocol,
    pub host_port_index: usize,
}

impl Core {
    /// The whole table, as every agent gets it.
    pub fn service_table(&self) -> ServiceTable {
        let mut services: Vec<Service> = self.services.values().flatten().cloned().collect();
        services.sort_by_key(|s| (s.service_port, s.protocol == ServiceProtocol::Udp));
        ServiceTable { generation: self.services_generation, services }
    }

    /// The table for an agent whose balancer applied `applied`, when it is newer.
    pub fn services_update(&self, applied: Option<u64>) -> Option<ServiceTable> {
        applied.filter(|g| *g < self.services_generation).map(|_| self.service_table())
    }

    /// Whether a task takes traffic now: running (not asked to stop), healthy when checked,
    /// ready when it has readiness checks, on an active agent, not unreachable or draining.
    pub(crate) fn serves(&self, task: &TaskRecord) -> bool {
        if task.unreachable_since.is_some() || self.draining.contains_key(&task.id) {
            return false;
        }
        if !self.agents.get(&task.agent_id).is_some_and(|a| a.record.active) {
            return false;
        }
        self.version_definition(&task.app_id, &task.version).is_some_and(|def| task.is_ready(Readiness::of(def)))
    }

    /// One app's entries of the table, from its current definition and its serving tasks.
    fn app_services(&self, app_id: &AppId) -> Vec<Service> {
        let Some(app) = self.apps.get(app_id) else { return Vec::new() };
        let def = &app.definition;
        let group = def.labels.get("HAPROXY_GROUP").cloned();
        let mut services: Vec<Service> = bindings(def)
            .into_iter()
            .map(|b| (b.host_port_index, b))
            .map(|(n, b)| Service {
                app_id: app_id.clone(),
                service_port: b.service_port,
                protocol: b.protocol,
                group: group.clone(),
                balance: match def.labels.get(&format!("HAPROXY_{n}_BALANCE")).map(|s| s.trim().to_ascii_lowercase()) {
                    Some(mode) if mode == "leastconn" => Balance::LeastConn,
                    _ => Balance::RoundRobin,
                },
                vhosts: def
                    .labels
                    .get(&format!("HAPROXY_{n}_VHOST"))
                    .map(|v| v.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect())
                    .unwrap_or_default(),
                // The API refuses other values; marathon-lb's default is tcp.
                mode: def.labels.get(&format!("HAPROXY_{n}_MODE")).and_then(|m| LbMode::parse(m)).unwrap_or_default(),
                backends: Vec::new(),
            })
            .collect();
        if services.is_empty() {
            return services;
        }
        // Bindings per version: a rolling upgrade has two, whatever the number of tasks.
        let mut by_version: HashMap<&str, Vec<Binding>> = HashMap::new();
        let tasks = self.tasks_by_app.get(app_id).into_iter().flatten().filter_map(|t| self.tasks.get(t));
        for task in tasks.filter(|t| self.serves(t)) {
            let Some(task_def) = self.version_definition(&task.app_id, &task.version) else { continue };
            let host = self.agents.get(&task.agent_id).map_or(task.host.as_str(), |a| a.record.advertise_ip.as_str());
            for b in by_version.entry(task.version.as_str()).or_insert_with(|| bindings(task_def)).iter() {
                let Some(port) = task.ports.get(b.host_port_index).copied() else { continue };
                if let Some(service) =
                    services.iter_mut().find(|s| s.service_port == b.service_port && s.protocol == b.protocol)
                {
                    service.backends.push(Backend { task_id: task.id.clone(), host: host.to_string(), port });
                }
            }
        }
        for service in &mut services {
            service.backends.sort_by(|a, b| a.task_id.cmp(&b.task_id).then(a.port.cmp(&b.port)));
        }
        services
    }

    /// Recomputes the entries of apps whose tasks, definition or agents changed; a changed
    /// table gets a new generation and wakes every agent's long-poll.
    pub(crate) fn refresh_services(&mut self) {
        let mut dirty: HashSet<AppId> = std::mem::take(&mut self.services_dirty);
        dirty.extend(self.changes.apps.iter().cloned());
        dirty.extend(self.changes.tasks.iter().filter_map(|t| self.tasks.get(t)).map(|t| t.app_id.clone()));
        let mut changed = false;
        for app_id in dirty {
            let services = self.app_services(&app_id);
            if self.services.get(&app_id).map_or(services.is_empty(), |old| *old == services) {
                continue;
            }
            changed = true;
            let moved = backend_changes(self.services.get(&app_id).map_or(&[][..], Vec::as_slice), &services);
            self.changes.lb_backends.extend(moved);
            if services.is_empty() {
                self.services.remove(&app_id);
            } else {
                self.services.insert(app_id, services);
            }
        }
        if !changed {
            return;
        }
        self.services_generation = self.services_generation.saturating_add(1);
        let generation = self.services_generation;
        for drain in self.draining.values_mut().filter(|d| d.generation.is_none()) {
            drain.generation = Some(generation);
        }
        let active: Vec<AgentId> =
            self.agents.values().filter(|a| a.record.active).map(|a| a.record.id.clone()).collect();
        self.changes.notify_agents.extend(active);
        tracing::debug!(generation, "service table changed");
    }

    /// Called for a planned kill: a task that serves traffic while some agent balances is
    /// drained first (true); its kill goes to its agent once [`Core::release_drained`] says so.
    pub(crate) fn start_drain(&mut self, id: &TaskId, now: Timestamp) -> bool {
        let Some(task) = self.tasks.get(id) else { return false };
        let balancing = self.agents.values().any(|a| a.record.active && a.services_applied.is_some());
        if !balancing || !self.serves(task) {
            return false;
        }
        let stored = self.versions.get(&task.app_id).and_then(|v| v.get(&task.version)).cloned();
        let Some(definition) = stored.or_else(|| self.apps.get(&task.app_id).map(|a| a.definition.clone())) else {
            return false;
        };
        let app_id = task.app_id.clone();
        self.draining.insert(id.clone(), Drain { generation: None, definition });
        if let Some(task) = self.tasks.get_mut(id) {
            task.drain_since = Some(now);
        }
        self.services_dirty.insert(app_id);
        true
    }

    /// Sends the kill of every drained task whose table generation all balancing agents
    /// applied, or whose drain timeout passed.
    pub(crate) fn release_drained(&mut self, now: Timestamp) {
        if self.draining.is_empty() {
            return;
        }
        let confirmed = self
            .agents
            .values()
            .filter(|a| a.record.active && a.seen_since_start)
            .filter_map(|a| a.services_drained)
            .min()
            .unwrap_or(u64::MAX);
        let default_ms = self.config.drain_timeout_ms;
        let done: Vec<TaskId> = self
            .draining
            .iter()
            .filter(|(id, drain)| {
                let since = self.tasks.get(*id).and_then(|t| t.drain_since).unwrap_or(now);
                let timeout = drain_timeout_ms(&drain.definition, default_ms);
                drain.generation.is_some_and(|g| confirmed >= g) || now.millis() - since.millis() >= timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            self.draining.remove(&id);
            let Some(task) = self.tasks.get_mut(&id) else { continue };
            task.drain_since = None;
            let agent = task.agent_id.clone();
            tracing::debug!(task_id = %id, node_id = %agent, "drained: killing");
            self.changes.tasks.insert(id);
            self.bump_generation(&agent);
        }
    }

    /// The definition a drained task keeps for its desired state.
    pub(crate) fn drain_definition(&self, id: &TaskId) -> Option<&AppDefinition> {
        self.draining.get(id).map(|d| &*d.definition)
    }

    /// An agent (re-)registered: its address may have changed, so its tasks' apps are recomputed.
    pub(crate) fn agent_services_dirty(&mut self, agent: &AgentId) {
        let tasks = self.tasks_by_agent.get(agent).into_iter().flatten().filter_map(|t| self.tasks.get(t));
        let apps: Vec<AppId> = tasks.map(|t| t.app_id.clone()).collect();
        self.services_dirty.extend(apps);
    }

    /// After a restart: drains the store recorded continue (only their timeout releases them).
    pub(crate) fn restore_drains(&mut self) {
        let drained: BTreeMap<TaskId, Arc<AppDefinition>> = self
            .tasks
            .values()
            .filter(|t| t.drain_since.is_some() && t.kill_requested)
            .filter_map(|t| Some((t.id.clone(), self.versions.get(&t.app_id)?.get(&t.version)?.clone())))
            .collect();
        for (id, definition) in drained {
            self.draining.insert(id, Drain { generation: None, definition });
        }
        self.services_dirty.extend(self.apps.keys().cloned());
    }
}

/// The backends new entries of an app added (`true`) and removed.
fn backend_changes(old: &[Service], new: &[Service]) -> Vec<(bool, LbBackend)> {
    let flatten = |services: &[Service]| -> Vec<LbBackend> {
        services
            .iter()
            .flat_map(|s| {
                s.backends.iter().map(move |b| LbBackend {
                    app_id: s.app_id.to_string(),
                    task_id: b.task_id.to_string(),
                    service_port: s.service_port,
                    protocol: s.protocol.to_string(),
                    host: b.host.clone(),
                    port: b.port,
                })
            })
            .collect()
    };
    let (old, new) = (flatten(old), flatten(new));
    let (old_set, new_set): (HashSet<&LbBackend>, HashSet<&LbBackend>) = (old.iter().collect(), new.iter().collect());
    let added = new.iter().filter(|b| !old_set.contains(b)).map(|b| (true, b.clone()));
    let removed = old.iter().filter(|b| !new_set.contains(b)).map(|b| (false, b.clone()));
    added.chain(removed).collect()
}

/// The service ports of a definition with the host port that carries each (ports without
/// a host port, e.g. a BRIDGE mapping with no `hostPort`, cannot be balanced to).
pub(crate) fn bindings(def: &AppDefinition) -> Vec<Binding> {
    let port = |p: i64| u16::try_from(p).ok().filter(|p| *p > 0);
    // (protocol, service port) of each port that has a host port, in label order.
    let ports: Vec<(&str, i64)> = match (def.network_mode(), def.container_port_mappings()) {
        (NetworkMode::Bridge, Some(mappings)) => {
            mappings.iter().filter(|m| m.host_port.is_some()).map(|m| (m.protocol.as_str(), m.service_port)).collect()
        }
        (NetworkMode::Host, Some(mappings)) if def.port_definitions.as_ref().is_none_or(Vec::is_empty) => {
            mappings.iter().map(|m| (m.protocol.as_str(), m.service_port)).collect()
        }
        _ if crate::ports::host_ports_only(def) => Vec::new(),
        _ => def.port_definitions.iter().flatten().map(|d| (d.protocol.as_str(), d.port)).collect(),
    };
    let mut out = Vec::new();
    for (index, (protocol, service_port)) in ports.into_iter().enumerate() {
        let Some(service_port) = port(service_port) else { continue };
        for protocol in transports(protocol) {
            out.push(Binding { service_port, protocol, host_port_index: index });
        }
    }
    out
}

/// The transports of a Marathon port protocol (`tcp`, `udp`, `udp,tcp`).
fn transports(protocol: &str) -> Vec<ServiceProtocol> {
    let names: Vec<String> = protocol.split(',').map(|p| p.trim().to_ascii_lowercase()).collect();
    let tcp = names.iter().any(|p| p == "tcp");
    let udp = names.iter().any(|p| p == "udp") || !tcp;
    [(tcp, ServiceProtocol::Tcp), (udp, ServiceProtocol::Udp)]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, p)| p)
        .collect()
}
