//! A task's start timeline, as `GET /v1/tasks/{id}/inspect` and `plinth task inspect` show
//! it: when the API call that asked for it was accepted, the round that placed it
//! (offered), the sync answer that sent it to its agent (launched), the agent's own phases
//! (pulled, rootfs, created, started: from the agent's inspect view), `TASK_RUNNING`
//! reported (running) and the first passing health check (healthy).
//!
//! Offered and running are the task record's own times (`staged_at`, `started_at`); what
//! the record does not hold is kept here, in memory only: one small entry per live task,
//! made when the task is placed and dropped when it ends or leaves the core, at most
//! [`MAX_TIMELINES`] of them. A restarted master shows no accepted, launched or healthy
//! for tasks it did not place itself.
use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use plinth_protocol::agent::DesiredState;
use plinth_protocol::{TaskId, TaskState, Timestamp};
use plinth_scheduler::{Changes, Core, TaskRecord};

/// The most tasks whose timeline the master keeps (about 100 bytes each); tasks placed
/// beyond it show only what their record and agent know.
pub const MAX_TIMELINES: usize = 100_000;

/// The phases of a task's start, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Accepted,
    Offered,
    Launched,
    Pulled,
    Rootfs,
    Created,
    Started,
    Running,
    Healthy,
}

/// When one phase ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub phase: Phase,
    /// RFC 3339 with milliseconds.
    pub at: String,
}

/// What the master saw of a task that its record does not keep.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    accepted: Option<Timestamp>,
    launched: Option<Timestamp>,
    healthy: Option<Timestamp>,
}

/// The master's timelines of live tasks.
#[derive(Debug, Default)]
pub struct Timelines {
    seen: Mutex<HashMap<TaskId, Seen>>,
}

impl Timelines {
    /// Takes what a command or round changed: a task just placed gets an entry (accepted:
    /// its app's current version, the time of the call that asked for it), a task's first
    /// healthy report is noted, an ended or vanished task is forgotten.
    pub fn note(&self, core: &Core, changes: &Changes, now: Timestamp) {
        if changes.tasks.is_empty() {
            return;
        }
        let mut seen = self.lock();
        for id in &changes.tasks {
            let Some(task) = core.task(id).filter(|t| !t.state.is_terminal()) else {
                seen.remove(id);
                continue;
            };
            if !seen.contains_key(id) {
                if task.state != TaskState::TaskStaging || seen.len() >= MAX_TIMELINES {
                    continue;
                }
                let accepted = core.app(&task.app_id).and_then(|app| Timestamp::parse_iso(&app.version));
                seen.insert(id.clone(), Seen { accepted, ..Seen::default() });
            }
            if let Some(entry) = seen.get_mut(id) {
                if task.healthy == Some(true) && entry.healthy.is_none() {
                    entry.healthy = Some(now);
                }
            }
        }
    }

    /// A sync answer carries `desired` to its agent: its tasks not sent before are launched now.
    pub fn sent(&self, desired: Option<&DesiredState>, now: Timestamp) {
        let Some(desired) = desired.filter(|d| !d.tasks.is_empty()) else { return };
        let mut seen = self.lock();
        for task in &desired.tasks {
            if let Some(entry) = seen.get_mut(&task.task_id) {
                entry.launched.get_or_insert(now);
            }
        }
    }

    /// The master's phases of `task`, in order.
    pub fn of(&self, task: &TaskRecord) -> Vec<Mark> {
        let seen = self.lock().get(&task.id).copied().unwrap_or_default();
        [
            (Phase::Accepted, seen.accepted),
            (Phase::Offered, Some(task.staged_at)),
            (Phase::Launched, seen.launched),
            (Phase::Running, task.started_at),
            (Phase::Healthy, seen.healthy),
        ]
        .into_iter()
        .filter_map(|(phase, at)| at.map(|at| Mark { phase, at: at.to_iso() }))
        .collect()
    }

    /// How many tasks have an entry.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Seen>> {
        // A panic while holding it left at worst one entry half-updated.
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The master's marks and the agent's (its inspect view's `timeline`; entries it cannot
/// read are left out), in phase order.
pub fn merge(master: Vec<Mark>, agent: Option<&serde_json::Value>) -> Vec<Mark> {
    let from_agent = agent
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|mark| serde_json::from_value::<Mark>(mark.clone()).ok())
        // Each side speaks only for its own phases.
        .filter(|mark| matches!(mark.phase, Phase::Pulled | Phase::Rootfs | Phase::Created | Phase::Started));
    let mut marks: Vec<Mark> = master.into_iter().chain(from_agent).collect();
    marks.sort_by_key(|mark| mark.phase);
    marks.dedup_by_key(|mark| mark.phase);
    marks
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_protocol::agent::StatusUpdate;
    use plinth_protocol::{AppDefinition, Resources};
    use plinth_scheduler::CoreConfig;
    use serde_json::json;

    fn core_with_agent(now: Timestamp) -> Core {
        let mut core = Core::new(CoreConfig::default(), crate::ids::random_ids());
        core.register_agent(
            plinth_protocol::agent::Registration {
                agent_id: None,
                hostname: "a1".into(),
                advertise_ip: "10.0.0.1".into(),
                http_port: 5051,
                resources: Resources::parse("cpus:4;mem:4096;disk:0;ports:[31000-31010]").expect("resources"),
                attributes: Default::default(),
                last_generation: 0,
                tasks: vec![],
                version: "test".into(),
            },
            now,
        );
        core.take_changes();
        core
    }

    /// The agent's report that `task` is in `state` at `at` (the time makes the update id).
    fn update(task: &TaskRecord, state: TaskState, at: Timestamp) -> StatusUpdate {
        let id = uuid::Uuid::from_u128(u128::try_from(at.millis()).unwrap_or_default());
        StatusUpdate::new(id, task.id.clone(), task.app_id.clone(), state, at.to_iso())
    }

    fn phases(marks: &[Mark]) -> Vec<Phase> {
        marks.iter().map(|m| m.phase).collect()
    }

    #[test]
    fn a_placed_task_gets_accepted_offered_launched_running_and_healthy_in_order() {
        let t0 = Timestamp::from_millis(1_700_000_000_000);
        let mut core = core_with_agent(t0);
        let timelines = Timelines::default();
        let mut def =
            AppDefinition::from_value(json!({"id": "/web", "cmd": "sleep 100", "cpus": 0.1, "mem": 16})).expect("app");
        def.normalize();
        core.create_app(def, t0).expect("created");
        let changes = core.take_changes();
        timelines.note(&core, &changes, t0);
        core.tick(t0.plus_millis(5));
        let placed = core.take_changes();
        timelines.note(&core, &placed, t0.plus_millis(5));
        let task = core.tasks().next().expect("placed").clone();
        assert_eq!(phases(&timelines.of(&task)), [Phase::Accepted, Phase::Offered]);

        let agent = core.agents().next().expect("agent").record.id.clone();
        let desired = core.desired_state(&agent);
        timelines.sent(desired.as_ref(), t0.plus_millis(7));
        timelines.sent(desired.as_ref(), t0.plus_millis(90));
        let running = StatusUpdate { healthy: Some(true), ..update(&task, TaskState::TaskRunning, t0.plus_millis(20)) };
        core.apply_status_updates(&agent, vec![running], t0.plus_millis(20));
        let changes = core.take_changes();
        timelines.note(&core, &changes, t0.plus_millis(20));
        let task = core.task(&task.id).expect("still there").clone();
        let marks = timelines.of(&task);
        assert_eq!(phases(&marks), [Phase::Accepted, Phase::Offered, Phase::Launched, Phase::Running, Phase::Healthy]);
        let at: Vec<i64> = marks.iter().map(|m| Timestamp::parse_iso(&m.at).expect("rfc 3339").millis()).collect();
        assert_eq!(at, [0, 5, 7, 20, 20].map(|d| t0.plus_millis(d).millis()), "the first send is the launch");

        // The task ends: its entry goes.
        core.delete_app(&task.app_id, t0.plus_millis(30)).expect("deleted");
        let changes = core.take_changes();
        timelines.note(&core, &changes, t0.plus_millis(30));
        let kill = update(&task, TaskState::TaskKilled, t0.plus_millis(40));
        core.apply_status_updates(&agent, vec![kill], t0.plus_millis(40));
        let changes = core.take_changes();
        timelines.note(&core, &changes, t0.plus_millis(40));
        assert!(timelines.is_empty(), "an ended task's timeline is dropped");
    }

    #[test]
    fn the_agents_phases_merge_in_order_and_only_its_own() {
        let master =
            vec![Mark { phase: Phase::Accepted, at: "t0".into() }, Mark { phase: Phase::Running, at: "t9".into() }];
        let agent = json!([
            {"phase": "started", "at": "t4"},
            {"phase": "created", "at": "t3"},
            {"phase": "running", "at": "forged"},
            {"phase": "unknown", "at": "t5"},
            "garbage"
        ]);
        let merged = merge(master, Some(&agent));
        let got: Vec<(Phase, &str)> = merged.iter().map(|m| (m.phase, m.at.as_str())).collect();
        assert_eq!(
            got,
            [(Phase::Accepted, "t0"), (Phase::Created, "t3"), (Phase::Started, "t4"), (Phase::Running, "t9")]
        );
        assert_eq!(phases(&merge(Vec::new(), None)), []);
    }
}
