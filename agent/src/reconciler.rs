//! The agent's pure core: desired state and observed tasks in, decisions out. No
//! clocks, files or processes here; time comes in as `now`. The shell (`node.rs`)
//! carries the decisions out through a [`crate::runtime::TaskRuntime`].
//!
//! Rules:
//! - A desired state with a generation at or below the applied one is ignored.
//! - A desired task the agent does not know is launched, unless it is marked `kill`.
//! - A known task that is absent from the desired state, or marked `kill`, is killed
//!   (SIGTERM, then SIGKILL after its grace period). A kill that outlives grace plus a
//!   margin is forced.
//! - A task that ended is never started again: the master replaces it under a new id.
// Pure: no clock, entropy or spawning here (the ban is in clippy.toml).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use plinth_protocol::agent::{DesiredState, TaskSpec};
use plinth_protocol::{TaskId, TaskState, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::executor_contract::Termination;
use crate::runtime::Observation;
use crate::state::TaskRecord;

/// Time past the grace period after which the agent stops trusting the executor to
/// enforce the kill and forces it itself.
pub const FORCE_KILL_MARGIN_MS: i64 = 5_000;

pub const REASON_MEMORY: &str = "REASON_CONTAINER_LIMITATION_MEMORY";
pub const REASON_COMMAND_FAILED: &str = "REASON_COMMAND_EXECUTOR_FAILED";
pub const REASON_EXECUTOR_TERMINATED: &str = "REASON_EXECUTOR_TERMINATED";
pub const REASON_KILLED: &str = "REASON_TASK_KILLED_DURING_LAUNCH";
pub const REASON_INVALID: &str = "REASON_TASK_INVALID";
/// Mesos' reason when the fetcher could not stage a task's artifacts.
pub const REASON_FETCH_FAILED: &str = "REASON_CONTAINER_LAUNCH_FAILED";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Launch(TaskSpec),
    Kill {
        task_id: TaskId,
        grace: Duration,
        why: KillWhy,
    },
    ForceKill {
        task_id: TaskId,
    },
    /// The task is not launched; the master gets a terminal status for it at once.
    Refuse {
        spec: TaskSpec,
        state: TaskState,
        reason: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillWhy {
    /// The master marked it `kill`.
    Requested,
    /// It is no longer in the desired state.
    NotDesired,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not newer than what is applied: nothing changes.
    Ignore { generation: u64, applied: u64 },
    /// Adopt the new desired state and carry out the actions.
    Apply { actions: Vec<Action> },
}

/// Decides what to do with a desired state just received from the master.
pub fn plan(
    applied_generation: u64,
    desired: &DesiredState,
    tasks: &BTreeMap<TaskId, TaskRecord>,
    now: Timestamp,
) -> Plan {
    if desired.generation <= applied_generation {
        return Plan::Ignore { generation: desired.generation, applied: applied_generation };
    }
    Plan::Apply { actions: converge(desired, tasks, now) }
}

/// The actions that move the observed tasks towards the desired state. Also run on every
/// tick against the applied state, so pending kills are escalated.
pub fn converge(desired: &DesiredState, tasks: &BTreeMap<TaskId, TaskRecord>, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut wanted = BTreeSet::new();
    for spec in &desired.tasks {
        // A duplicate id in one desired state is launched once.
        if !wanted.insert(&spec.task_id) {
            continue;
        }
        match tasks.get(&spec.task_id) {
            None if spec.kill => actions.push(Action::Refuse {
                spec: spec.clone(),
                state: TaskState::TaskKilled,
                reason: REASON_KILLED,
                message: "Task was killed before it was launched".into(),
            }),
            None => match check_task_id(spec.task_id.as_str()) {
                Ok(()) => actions.push(Action::Launch(spec.clone())),
                Err(problem) => actions.push(Action::Refuse {
                    spec: spec.clone(),
                    state: TaskState::TaskError,
                    reason: REASON_INVALID,
                    message: format!("Task id '{}' is not usable: {problem}", spec.task_id),
                }),
            },
            Some(record) if spec.kill => actions.extend(kill_actions(record, KillWhy::Requested, now)),
            Some(_) => {}
        }
    }
    for (task_id, record) in tasks {
        if !wanted.contains(task_id) {
            actions.extend(kill_actions(record, KillWhy::NotDesired, now));
        }
    }
    actions
}

fn kill_actions(record: &TaskRecord, why: KillWhy, now: Timestamp) -> Option<Action> {
    if record.is_terminal() {
        return None;
    }
    let task_id = record.spec.task_id.clone();
    match record.kill_requested_at {
        None => Some(Action::Kill {
            task_id,
            grace: Duration::from_millis(u64::try_from(record.kill_grace_ms()).unwrap_or(0)),
            why,
        }),
        Some(at) if !record.force_killed && now >= at.plus_millis(record.kill_grace_ms() + FORCE_KILL_MARGIN_MS) => {
            Some(Action::ForceKill { task_id })
        }
        Some(_) => None,
    }
}

/// Task ids become directory and cgroup names: only plain characters are allowed.
pub fn check_task_id(task_id: &str) -> Result<(), String> {
    if task_id.is_empty() || task_id.len() > 200 {
        return Err("it must have 1 to 200 characters".into());
    }
    if task_id.starts_with('.') {
        return Err("it must not start with '.'".into());
    }
    if let Some(bad) = task_id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("character '{bad}' is not allowed (only letters, digits, '.', '_' and '-')"));
    }
    Ok(())
}

/// A change of a task's state, with what the status update says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: TaskState,
    pub message: Option<String>,
    pub reason: Option<&'static str>,
    pub exit_code: Option<i32>,
    pub pid: Option<i32>,
}

impl Transition {
    fn to(state: TaskState) -> Self {
        Transition { state, message: None, reason: None, exit_code: None, pid: None }
    }
}

/// What an observation means for a task; `None` when nothing changed.
pub fn observe(record: &TaskRecord, observation: &Observation) -> Option<Transition> {
    if record.is_terminal() {
        return None;
    }
    let killing = record.kill_requested_at.is_some();
    match observation {
        Observation::Starting if record.state == TaskState::TaskStaging => {
            Some(Transition::to(TaskState::TaskStarting))
        }
        Observation::Starting => None,
        Observation::Running { pid } if record.state != TaskState::TaskRunning => {
            Some(Transition { pid: *pid, ..Transition::to(TaskState::TaskRunning) })
        }
        Observation::Running { .. } => None,
        Observation::Exited(termination) => Some(ended(record, termination, killing)),
        Observation::Gone { message } if killing => {
            Some(Transition { message: Some(message.clone()), ..Transition::to(TaskState::TaskKilled) })
        }
        Observation::Gone { message } => Some(Transition {
            message: Some(message.clone()),
            reason: Some(REASON_EXECUTOR_TERMINATED),
            ..Transition::to(TaskState::TaskFailed)
        }),
    }
}

fn ended(record: &TaskRecord, t: &Termination, killing: bool) -> Transition {
    if t.fetch_failed {
        return Transition {
            message: t.error.clone(),
            reason: Some(REASON_FETCH_FAILED),
            ..Transition::to(if killing { TaskState::TaskKilled } else { TaskState::TaskFailed })
        };
    }
    if let Some(error) = &t.error {
        if t.code.is_none() && t.signal.is_none() {
            let state = if killing { TaskState::TaskKilled } else { TaskState::TaskFailed };
            return Transition {
                message: Some(format!("Failed to run the command: {error}")),
                reason: Some(REASON_COMMAND_FAILED),
                ..Transition::to(state)
            };
        }
    }
    if killing || t.killed {
        let how = match (t.code, t.signal) {
            (_, Some(signal)) => format!("signal {}", signal_name(signal)),
            (Some(code), None) => format!("exit status {code}"),
            (None, None) => "an unknown status".into(),
        };
        return Transition {
            message: Some(format!("Task killed on request; it ended with {how}")),
            exit_code: t.code,
            ..Transition::to(TaskState::TaskKilled)
        };
    }
    if t.oom {
        return Transition {
            message: Some(format!("Task was OOM-killed: it exceeded its memory limit of {} MB", record.spec.app.mem)),
            reason: Some(REASON_MEMORY),
            exit_code: t.code,
            ..Transition::to(TaskState::TaskFailed)
        };
    }
    match (t.code, t.signal) {
        (Some(0), _) => Transition {
            message: Some("Command exited with status 0".into()),
            exit_code: Some(0),
            ..Transition::to(TaskState::TaskFinished)
        },
        (Some(code), _) => Transition {
            message: Some(format!("Command exited with status {code}")),
            reason: Some(REASON_COMMAND_FAILED),
            exit_code: Some(code),
            ..Transition::to(TaskState::TaskFailed)
        },
        (None, Some(signal)) => Transition {
            message: Some(format!("Command terminated with signal {}", signal_name(signal))),
            reason: Some(REASON_COMMAND_FAILED),
            ..Transition::to(TaskState::TaskFailed)
        },
        (None, None) => Transition {
            message: Some(t.error.clone().unwrap_or_else(|| "Command ended with an unknown status".into())),
            reason: Some(REASON_COMMAND_FAILED),
            ..Transition::to(TaskState::TaskFailed)
        },
    }
}

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.as_str().to_string())
}

/// Terminal tasks whose record and sandbox can go: not in the desired state (or the
/// agent would launch them again), finished longer than `retention` ago; beyond
/// `keep_at_most` terminal tasks the oldest go regardless of age.
pub fn collectable(
    desired: &DesiredState,
    tasks: &BTreeMap<TaskId, TaskRecord>,
    now: Timestamp,
    retention: Duration,
    keep_at_most: usize,
) -> Vec<TaskId> {
    let wanted: BTreeSet<&TaskId> = desired.tasks.iter().map(|s| &s.task_id).collect();
    let mut finished: Vec<(Timestamp, &TaskId)> = tasks
        .iter()
        .filter(|(id, r)| r.is_terminal() && !wanted.contains(id))
        .map(|(id, r)| (r.finished_at.unwrap_or(r.launched_at), id))
        .collect();
    finished.sort();
    let surplus = finished.len().saturating_sub(keep_at_most);
    let cutoff = now.plus_millis(-i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    finished
        .iter()
        .enumerate()
        .filter(|(index, (at, _))| *index < surplus || *at < cutoff)
        .map(|(_, (_, id))| (*id).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskenv::tests::spec_from;
    use serde_json::json;

    fn spec(id: &str) -> TaskSpec {
        spec_from(id, json!({"id": "/web", "cmd": "serve", "mem": 64, "taskKillGracePeriodSeconds": 2}), vec![31000])
    }

    fn killed(id: &str) -> TaskSpec {
        TaskSpec { kill: true, ..spec(id) }
    }

    fn record(id: &str, state: TaskState) -> TaskRecord {
        let mut r = TaskRecord::new(spec(id), format!("/sb/{id}").into(), Timestamp(0));
        r.state = state;
        r
    }

    fn tasks(records: Vec<TaskRecord>) -> BTreeMap<TaskId, TaskRecord> {
        records.into_iter().map(|r| (r.spec.task_id.clone(), r)).collect()
    }

    fn desired(generation: u64, specs: Vec<TaskSpec>) -> DesiredState {
        DesiredState { generation, tasks: specs }
    }

    const NOW: Timestamp = Timestamp(100_000);

    #[test]
    fn older_and_equal_generations_are_ignored() {
        let known = tasks(vec![]);
        for generation in [3, 5] {
            assert_eq!(
                plan(5, &desired(generation, vec![spec("a.1")]), &known, NOW),
                Plan::Ignore { generation, applied: 5 }
            );
        }
        assert_eq!(
            plan(5, &desired(6, vec![spec("a.1")]), &known, NOW),
            Plan::Apply { actions: vec![Action::Launch(spec("a.1"))] }
        );
    }

    #[test]
    fn missing_tasks_are_launched_and_running_ones_left_alone() {
        let known = tasks(vec![record("a.1", TaskState::TaskRunning)]);
        let actions = converge(&desired(2, vec![spec("a.1"), spec("a.2"), spec("a.2")]), &known, NOW);
        assert_eq!(actions, vec![Action::Launch(spec("a.2"))]);
    }

    #[test]
    fn tasks_absent_from_desired_or_marked_kill_are_killed_with_their_grace() {
        let known = tasks(vec![
            record("a.1", TaskState::TaskRunning),
            record("a.2", TaskState::TaskStarting),
            record("a.3", TaskState::TaskRunning),
        ]);
        let actions = converge(&desired(2, vec![killed("a.1"), spec("a.3")]), &known, NOW);
        let grace = Duration::from_secs(2);
        assert_eq!(
            actions,
            vec![
                Action::Kill { task_id: "a.1".into(), grace, why: KillWhy::Requested },
                Action::Kill { task_id: "a.2".into(), grace, why: KillWhy::NotDesired },
            ]
        );
    }

    #[test]
    fn kills_are_sent_once_then_forced_after_grace_and_margin() {
        let mut r = record("a.1", TaskState::TaskRunning);
        r.kill_requested_at = Some(Timestamp(10_000));
        let known = tasks(vec![r.clone()]);
        let empty = desired(3, vec![]);
        assert_eq!(converge(&empty, &known, Timestamp(10_000 + 2_000 + FORCE_KILL_MARGIN_MS - 1)), vec![]);
        assert_eq!(
            converge(&empty, &known, Timestamp(10_000 + 2_000 + FORCE_KILL_MARGIN_MS)),
            vec![Action::ForceKill { task_id: "a.1".into() }]
        );
        r.force_killed = true;
        assert_eq!(converge(&empty, &tasks(vec![r]), Timestamp(1_000_000)), vec![]);
    }

    #[test]
    fn terminal_tasks_are_never_relaunched_or_killed() {
        let known = tasks(vec![record("a.1", TaskState::TaskFailed), record("a.2", TaskState::TaskFinished)]);
        assert_eq!(converge(&desired(2, vec![spec("a.1"), killed("a.2")]), &known, NOW), vec![]);
        assert_eq!(converge(&desired(3, vec![]), &known, NOW), vec![]);
    }

    #[test]
    fn unknown_killed_tasks_and_unusable_ids_are_refused_not_launched() {
        let actions = converge(&desired(2, vec![killed("a.9"), spec("../etc"), spec("a b")]), &tasks(vec![]), NOW);
        assert_eq!(actions.len(), 3);
        assert!(matches!(&actions[0], Action::Refuse { state: TaskState::TaskKilled, .. }));
        assert!(matches!(&actions[1], Action::Refuse { state: TaskState::TaskError, .. }));
        assert!(matches!(&actions[2], Action::Refuse { state: TaskState::TaskError, .. }));
        assert!(check_task_id("prod_web.0b4e-11.x").is_ok());
        assert!(check_task_id("").is_err());
        assert!(check_task_id(".hidden").is_err());
    }

    fn exit(code: Option<i32>, signal: Option<i32>, oom: bool, killed: bool) -> Observation {
        Observation::Exited(Termination {
            code,
            signal,
            oom,
            killed,
            error: None,
            fetch_failed: false,
            finished_at: "t".into(),
        })
    }

    #[test]
    fn observations_become_state_changes() {
        let staging = record("a.1", TaskState::TaskStaging);
        assert_eq!(observe(&staging, &Observation::Starting).map(|t| t.state), Some(TaskState::TaskStarting));
        let starting = record("a.1", TaskState::TaskStarting);
        assert_eq!(observe(&starting, &Observation::Starting), None);
        let running = observe(&starting, &Observation::Running { pid: Some(7) }).unwrap();
        assert_eq!((running.state, running.pid), (TaskState::TaskRunning, Some(7)));
        let live = record("a.1", TaskState::TaskRunning);
        assert_eq!(observe(&live, &Observation::Running { pid: Some(7) }), None);

        let done = observe(&live, &exit(Some(0), None, false, false)).unwrap();
        assert_eq!((done.state, done.exit_code), (TaskState::TaskFinished, Some(0)));
        let failed = observe(&live, &exit(Some(3), None, false, false)).unwrap();
        assert_eq!((failed.state, failed.exit_code), (TaskState::TaskFailed, Some(3)));
        assert_eq!(failed.message.as_deref(), Some("Command exited with status 3"));
        let signalled = observe(&live, &exit(None, Some(9), false, false)).unwrap();
        assert_eq!(signalled.message.as_deref(), Some("Command terminated with signal SIGKILL"));
        let oom = observe(&live, &exit(None, Some(9), true, false)).unwrap();
        assert_eq!((oom.state, oom.reason), (TaskState::TaskFailed, Some(REASON_MEMORY)));
        assert!(oom.message.unwrap().contains("OOM-killed"));
        let gone = observe(&live, &Observation::Gone { message: "poof".into() }).unwrap();
        assert_eq!((gone.state, gone.reason), (TaskState::TaskFailed, Some(REASON_EXECUTOR_TERMINATED)));
    }

    #[test]
    fn anything_ending_after_a_kill_request_is_killed() {
        let mut r = record("a.1", TaskState::TaskRunning);
        r.kill_requested_at = Some(Timestamp(1));
        for observation in
            [exit(Some(0), None, false, false), exit(None, Some(15), false, true), exit(None, Some(9), true, false)]
        {
            assert_eq!(observe(&r, &observation).map(|t| t.state), Some(TaskState::TaskKilled));
        }
        assert_eq!(
            observe(&r, &Observation::Gone { message: "x".into() }).map(|t| t.state),
            Some(TaskState::TaskKilled)
        );
        let done = record("a.1", TaskState::TaskKilled);
        assert_eq!(observe(&done, &exit(Some(0), None, false, false)), None, "terminal stays terminal");
    }

    #[test]
    fn garbage_collection_spares_desired_and_recent_tasks() {
        let mut old = record("a.1", TaskState::TaskFinished);
        old.finished_at = Some(Timestamp(1_000));
        let mut recent = record("a.2", TaskState::TaskFailed);
        recent.finished_at = Some(Timestamp(99_000));
        let mut wanted = record("a.3", TaskState::TaskFailed);
        wanted.finished_at = Some(Timestamp(1_000));
        let live = record("a.4", TaskState::TaskRunning);
        let known = tasks(vec![old, recent, wanted, live]);
        let hour = Duration::from_secs(10);
        assert_eq!(collectable(&desired(1, vec![spec("a.3")]), &known, NOW, hour, 10), vec![TaskId::from("a.1")]);
        assert_eq!(
            collectable(&desired(1, vec![spec("a.3")]), &known, NOW, Duration::from_secs(1000), 0),
            vec![TaskId::from("a.1"), TaskId::from("a.2")]
        );
    }
}
