//! Placement: each tick the pool of active, non-draining agents is offered to apps short
//! of tasks, round-robin from a rotating cursor; an offer is accepted (a task is launched)
//! or declined with Marathon's reason code and a readable message (shown by `/v2/queue`).
//! Constraints are evaluated in `constraints.rs`.
use plinth_protocol::{AgentId, AppId, PortRanges, Resources, TaskId, TaskState, Timestamp};

use crate::constraints::{self, Spread};
use crate::model::{OfferStats, TaskRecord};
use crate::ports::port_requests;
use crate::state::{AgentState, Core};

/// The agents offered to apps in one round.
pub(crate) struct OfferRound {
    pub(crate) agents: Vec<AgentId>,
}

impl OfferRound {
    pub(crate) fn new(core: &Core) -> Self {
        OfferRound {
            agents: core
                .agents
                .values()
                .filter(|a| a.record.active && !a.record.draining && a.seen_since_start)
                .map(|a| a.record.id.clone())
                .collect(),
        }
    }
}

impl Core {
    /// Offers the pool to an app for `count` launches; records declines in `stats`.
    pub(crate) fn place(
        &mut self,
        app_id: &AppId,
        count: usize,
        offers: &mut OfferRound,
        stats: &mut OfferStats,
        now: Timestamp,
    ) -> usize {
        let Some(app) = self.apps.get(app_id) else { return 0 };
        let def = app.definition.clone();
        let config_version = app.config_version.clone();
        let need = Resources::scalars(def.cpus, def.mem, def.disk);
        // The API refuses ports out of range; an app that still has one is never placed.
        let Some(port_requests) = port_requests(&def) else { return 0 };
        let parsed_constraints = def.parsed_constraints();
        let mut spreads: Vec<Spread> = parsed_constraints.iter().map(|c| self.spread(app_id, &c.field)).collect();
        stats.last_round.clear();
        stats.last_round_processed = 0;
        let mut placed = 0;
        let agent_count = offers.agents.len();
        let mut tried_without_success = 0;
        while placed < count && tried_without_success < agent_count {
            let index = self.offer_cursor % agent_count;
            self.offer_cursor = self.offer_cursor.wrapping_add(1);
            let agent_id = offers.agents[index].clone();
            let Some(agent) = self.agents.get(&agent_id) else {
                tried_without_success += 1;
                continue;
            };
            stats.processed += 1;
            stats.last_round_processed += 1;
            let decision = match_offer(agent, &need, &port_requests, &parsed_constraints, &spreads);
            match decision {
                Err((code, message)) => {
                    stats.unused += 1;
                    stats.last_unused_at = Some(now);
                    let entry = stats.last_round.entry(code.to_string()).or_insert((0, message));
                    entry.0 += 1;
                    tried_without_success += 1;
                }
                Ok(ports) => {
                    let host = agent.record.advertise_ip.clone();
                    for (spread, c) in spreads.iter_mut().zip(&parsed_constraints) {
                        if let Some(v) =
                            constraints::field_value(&c.field, &agent.record.hostname, &agent.record.attributes)
                        {
                            *spread.counts.entry(v.to_string()).or_default() += 1;
                        }
                    }
                    let uuid = self.uuid();
                    let task = TaskRecord {
                        id: TaskId::generate(app_id, uuid),
                        app_id: app_id.clone(),
                        version: config_version.clone(),
                        agent_id: agent_id.clone(),
                        host,
                        ports: ports.clone(),
                        resources: Resources { ports: PortRanges::new(ports.iter().map(|p| (*p, *p))), ..need.clone() },
                        state: TaskState::TaskStaging,
                        staged_at: now,
                        started_at: None,
                        updated_at: now,
                        kill_requested: false,
                        kill_reason: None,
                        drain_since: None,
                        healthy: None,
                        message: None,
                        health: None,
                        ip_addresses: Vec::new(),
                        ready: None,
                        unreachable_since: None,
                    };
                    tracing::debug!(app_id = %app_id, task_id = %task.id, node_id = %agent_id, "launching task");
                    self.changes.tasks.insert(task.id.clone());
                    self.emit_status(&task, now);
                    self.index_task(task);
                    self.bump_generation(&agent_id);
                    stats.last_used_at = Some(now);
                    placed += 1;
                    tried_without_success = 0;
                }
            }
        }
        placed
    }

    /// How an app's live tasks spread over a constraint field.
    pub(crate) fn spread(&self, app_id: &AppId, field: &str) -> Spread {
        let mut spread = Spread::default();
        for agent in self.agents.values().filter(|a| a.record.active) {
            if let Some(v) = constraints::field_value(field, &agent.record.hostname, &agent.record.attributes) {
                spread.all_values.insert(v.to_string());
            }
        }
        for task in self.app_tasks(app_id).into_iter().filter(|t| !t.kill_requested) {
            if let Some(agent) = self.agents.get(&task.agent_id) {
                if let Some(v) = constraints::field_value(field, &agent.record.hostname, &agent.record.attributes) {
                    *spread.counts.entry(v.to_string()).or_default() += 1;
                }
            }
        }
        spread
    }
}

/// Whether an agent's free resources fit one task; the ports it would get, or the
/// decline reason (Marathon's code and a readable message).
pub(crate) fn match_offer(
    agent: &AgentState,
    need: &Resources,
    port_requests: &[Option<u16>],
    parsed_constraints: &[plinth_protocol::Constraint],
    spreads: &[Spread],
) -> Result<Vec<u16>, (&'static str, String)> {
    let record = &agent.record;
    for (c, spread) in parsed_constraints.iter().zip(spreads) {
        let value = constraints::field_value(&c.field, &record.hostname, &record.attributes);
        constraints::allows(c, value, spread).map_err(|reason| ("UnfulfilledConstraint", reason))?;
    }
    let free = agent.free();
    let eps = 1e-9;
    if free.cpus + eps < need.cpus {
        return Err((
            "InsufficientCpus",
            format!("insufficient cpus: needs {}, agent has {} free", need.cpus, round2(free.cpus)),
        ));
    }
    if free.mem + eps < need.mem {
        return Err((
            "InsufficientMemory",
            format!("insufficient mem: needs {} MB, agent has {} MB free", need.mem, round2(free.mem)),
        ));
    }
    if free.disk + eps < need.disk {
        return Err((
            "InsufficientDisk",
            format!("insufficient disk: needs {} MB, agent has {} MB free", need.disk, round2(free.disk)),
        ));
    }
    let mut ports_left = free.ports;
    let mut ports = Vec::with_capacity(port_requests.len());
    for request in port_requests.iter().flatten() {
        if !ports_left.remove(*request) {
            return Err(("InsufficientPorts", format!("insufficient ports: port {request} is not free")));
        }
    }
    let dynamic = port_requests.iter().filter(|r| r.is_none()).count();
    let Some(mut picked) = ports_left.take_lowest(dynamic) else {
        return Err((
            "InsufficientPorts",
            format!("insufficient ports: needs {dynamic}, agent has {} free", ports_left.len()),
        ));
    };
    picked.reverse();
    for request in port_requests {
        ports.push(match request {
            Some(p) => *p,
            None => picked.pop().expect("take_lowest returned one per dynamic request"),
        });
    }
    Ok(ports)
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A readable summary of why offers were declined, e.g.
/// `insufficient mem on 2 of 2 agents (needs 100000 MB, agent has 1024 MB free)`.
pub fn summarize_declines(stats: &OfferStats) -> String {
    if stats.last_round.is_empty() {
        return "waiting for offers: no active agent".into();
    }
    let parts: Vec<String> = stats
        .last_round
        .iter()
        .map(|(code, (count, message))| {
            if code == "Backoff" || code == "Dependency" {
                message.clone()
            } else {
                format!("{message} ({count} of {} offers)", stats.last_round_processed)
            }
        })
        .collect();
    parts.join("; ")
}
