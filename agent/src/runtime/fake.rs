//! An in-memory [`TaskRuntime`]: tasks are entries in a map that move Starting → Running
//! on the next poll and end when a test says so. Failures are injected on
//! purpose: launches that fail, tasks that ignore SIGTERM, exits, OOM kills, and
//! supervisors that vanish.
use plinth_protocol::{TaskId, Timestamp};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{LaunchRequest, Observation, RuntimeHandle, TaskRuntime};
use crate::error::AgentError;
use crate::executor_contract::Termination;

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Starting,
    Running,
    Exited(Termination),
    Gone(String),
}

#[derive(Debug)]
struct FakeTask {
    pid: i32,
    phase: Phase,
    ignores_sigterm: bool,
}

#[derive(Debug, Default)]
struct FakeState {
    tasks: HashMap<TaskId, FakeTask>,
    failing_launches: usize,
    next_pid: i32,
    launches: usize,
    kills: usize,
}

/// A [`TaskRuntime`] in memory, for tests.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<FakeState>,
}

fn ended(code: Option<i32>, signal: Option<i32>, oom: bool, killed: bool) -> Phase {
    Phase::Exited(Termination {
        code,
        signal,
        oom,
        killed,
        error: None,
        fetch_failed: false,
        finished_at: Timestamp::now().to_iso(),
    })
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panic in another test thread must not hide this runtime's state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_phase(&self, task_id: &TaskId, phase: Phase) -> bool {
        match self.lock().tasks.get_mut(task_id) {
            Some(task) => {
                task.phase = phase;
                true
            }
            None => false,
        }
    }

    /// The next `count` launches fail.
    pub fn fail_next_launches(&self, count: usize) {
        self.lock().failing_launches = count;
    }

    /// The task ignores SIGTERM: only `force_kill` ends it.
    pub fn ignore_sigterm(&self, task_id: &TaskId) {
        if let Some(task) = self.lock().tasks.get_mut(task_id) {
            task.ignores_sigterm = true;
        }
    }

    /// The task exits by itself with `code`. Returns false for an unknown task.
    pub fn exit(&self, task_id: &TaskId, code: i32) -> bool {
        self.set_phase(task_id, ended(Some(code), None, false, false))
    }

    /// The memory limit's OOM killer ends the task.
    pub fn oom_kill(&self, task_id: &TaskId) -> bool {
        self.set_phase(task_id, ended(None, Some(SIGKILL), true, false))
    }

    /// The task's supervisor disappears without a word.
    pub fn lose(&self, task_id: &TaskId) -> bool {
        self.set_phase(task_id, Phase::Gone("the fake supervisor vanished".into()))
    }

    /// Forgets every task, as a machine reboot would.
    pub fn reboot(&self) {
        self.lock().tasks.clear();
    }

    /// Tasks that are starting or running.
    pub fn live_tasks(&self) -> Vec<TaskId> {
        let state = self.lock();
        let mut ids: Vec<TaskId> = state
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Starting | Phase::Running))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn launch_count(&self) -> usize {
        self.lock().launches
    }

    pub fn kill_count(&self) -> usize {
        self.lock().kills
    }
}

impl TaskRuntime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn launch(&self, request: &LaunchRequest) -> Result<RuntimeHandle, AgentError> {
        let mut state = self.lock();
        let task_id = request.spec.task_id.clone();
        if state.failing_launches > 0 {
            state.failing_launches -= 1;
            return Err(AgentError::LaunchRejected {
                runtime: "fake",
                task_id: task_id.to_string(),
                reason: "injected launch failure".into(),
            });
        }
        state.next_pid += 1;
        state.launches += 1;
        let pid = 10_000 + state.next_pid;
        state.tasks.insert(task_id.clone(), FakeTask { pid, phase: Phase::Starting, ignores_sigterm: false });
        Ok(RuntimeHandle {
            task_id,
            sandbox: request.sandbox.clone(),
            pid: Some(pid),
            pid_start_time: Some(1),
            cgroup: None,
        })
    }

    fn kill(&self, handle: &RuntimeHandle, _grace: Duration) -> Result<(), AgentError> {
        let mut state = self.lock();
        state.kills += 1;
        if let Some(task) = state.tasks.get_mut(&handle.task_id) {
            if matches!(task.phase, Phase::Starting | Phase::Running) && !task.ignores_sigterm {
                task.phase = ended(None, Some(SIGTERM), false, true);
            }
        }
        Ok(())
    }

    fn force_kill(&self, handle: &RuntimeHandle) -> Result<(), AgentError> {
        if let Some(task) = self.lock().tasks.get_mut(&handle.task_id) {
            if matches!(task.phase, Phase::Starting | Phase::Running) {
                task.phase = ended(None, Some(SIGKILL), false, true);
            }
        }
        Ok(())
    }

    fn poll(&self, handle: &RuntimeHandle) -> Observation {
        let mut state = self.lock();
        let Some(task) = state.tasks.get_mut(&handle.task_id) else {
            return Observation::Gone { message: "the fake runtime does not know this task".into() };
        };
        match &task.phase {
            Phase::Starting => {
                task.phase = Phase::Running;
                Observation::Starting
            }
            Phase::Running => Observation::Running { pid: Some(task.pid) },
            Phase::Exited(termination) => Observation::Exited(termination.clone()),
            Phase::Gone(message) => Observation::Gone { message: message.clone() },
        }
    }

    fn recover(&self, handle: &RuntimeHandle) -> RuntimeHandle {
        handle.clone()
    }

    fn cleanup(&self, _handle: &RuntimeHandle) -> Result<(), AgentError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskenv::tests::spec_from;
    use serde_json::json;

    fn request(id: &str) -> LaunchRequest {
        LaunchRequest {
            spec: spec_from(id, json!({"id": "a", "cmd": "x"}), vec![]),
            sandbox: "/nowhere".into(),
            env: vec![],
            logs: Default::default(),
            fetch_cache: None,
            container: None,
            confinement: Default::default(),
            notify_socket: None,
        }
    }

    #[test]
    fn fake_tasks_start_run_and_die_on_request() {
        let rt = FakeRuntime::new();
        rt.fail_next_launches(1);
        assert!(rt.launch(&request("t.1")).is_err());
        let handle = rt.launch(&request("t.1")).unwrap();
        assert_eq!(rt.poll(&handle), Observation::Starting);
        assert!(matches!(rt.poll(&handle), Observation::Running { .. }));
        rt.ignore_sigterm(&handle.task_id);
        rt.kill(&handle, Duration::from_secs(3)).unwrap();
        assert!(matches!(rt.poll(&handle), Observation::Running { .. }), "SIGTERM ignored");
        rt.force_kill(&handle).unwrap();
        match rt.poll(&handle) {
            Observation::Exited(t) => assert!(t.killed && t.signal == Some(9)),
            other => panic!("expected an exit, got {other:?}"),
        }
        assert!(rt.live_tasks().is_empty());
        rt.reboot();
        assert!(matches!(rt.poll(&handle), Observation::Gone { .. }));
    }
}
