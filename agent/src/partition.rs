//! What an agent does with its tasks when it cannot reach the master: the operator's
//! choice, because both are right somewhere. By default tasks keep running (Marathon's
//! and Mesos' behaviour: a partition costs no work, but once the master declares the
//! agent lost and replaces its tasks, old and new instances both run until the agent
//! is back). With `--stop-tasks-after-master-lost-secs N` the agent stops its tasks
//! after N seconds without the master (Nomad's `stop_after_client_disconnect`): with N
//! below the master's `--agent-timeout-secs`, old instances are gone before their
//! replacements start. Per app, `unreachableStrategy` decides how long the master waits
//! before replacing.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the master last answered this agent.
#[derive(Debug)]
pub(crate) struct MasterContact {
    last: Mutex<Instant>,
}

impl MasterContact {
    pub fn new() -> Self {
        MasterContact { last: Mutex::new(Instant::now()) }
    }

    /// A registration or sync the master answered.
    pub fn heard(&self) {
        *self.last.lock().expect("contact time is never poisoned") = Instant::now();
    }

    pub fn silent_for(&self) -> Duration {
        self.last.lock().expect("contact time is never poisoned").elapsed()
    }
}

/// Whether the tasks must stop now: the policy is on, the master has been silent past
/// it and there is something left to stop.
pub(crate) fn must_stop(policy: Option<Duration>, silent_for: Duration, desired_tasks: usize) -> bool {
    policy.is_some_and(|after| silent_for >= after) && desired_tasks > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_stop_only_with_the_policy_past_its_time_and_when_there_are_any() {
        let after = Some(Duration::from_secs(8));
        assert!(!must_stop(None, Duration::from_secs(3600), 5), "off by default: tasks keep running");
        assert!(!must_stop(after, Duration::from_secs(7), 5));
        assert!(must_stop(after, Duration::from_secs(8), 5));
        assert!(!must_stop(after, Duration::from_secs(60), 0), "nothing left to stop");
    }
}
