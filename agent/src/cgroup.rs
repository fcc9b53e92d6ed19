//! One cgroup per task under a `plinth` parent, with cpu and memory limits from the app.
//! cgroups-rs picks v1 or v2 (`hierarchies::auto()`); the executor only needs the plain
//! directories it returns (to join, to read OOM counters, to kill leftovers).
use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::{hierarchies, Cgroup};
use plinth_protocol::error_chain;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::AgentError;

/// Parent of every task cgroup, so an operator sees Plinth's tasks in one place.
pub const PARENT: &str = "plinth";
/// CFS period; the quota is `cpus` times this.
const CFS_PERIOD_US: u64 = 100_000;
const MIN_CFS_QUOTA_US: i64 = 1_000;

/// The controllers a task cgroup uses (named as cgroups-rs names them); v2 has no
/// separate `cpuacct`.
fn controllers(v2: bool) -> Vec<String> {
    let names: &[&str] = if v2 { &["cpu", "memory", "pids"] } else { &["cpu", "cpuacct", "memory", "pids"] };
    names.iter().map(|s| s.to_string()).collect()
}

/// A task's cgroup as the checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCgroup {
    /// Path relative to each hierarchy's root, e.g. `plinth/web.1234`.
    pub name: String,
    /// Absolute directories: one per v1 controller, or the one v2 directory.
    pub dirs: Vec<PathBuf>,
}

static WARNED_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Creates the task's cgroup with its limits. `None` when cgroups cannot be used here
/// (not root, no hierarchy): the task then runs without limits, warned about once.
pub fn create(task_id: &str, cpus: f64, mem_mb: f64) -> Option<TaskCgroup> {
    if !nix::unistd::geteuid().is_root() {
        warn_unavailable("the agent does not run as root");
        return None;
    }
    match try_create(task_id, cpus, mem_mb) {
        Ok(cgroup) => Some(cgroup),
        Err(err) => {
            warn_unavailable(&error_chain(&err).to_string());
            None
        }
    }
}

fn warn_unavailable(reason: &str) {
    if !WARNED_UNAVAILABLE.swap(true, Ordering::Relaxed) {
        tracing::warn!(reason, "cgroups are unavailable: tasks run without cpu and memory limits");
    }
}

// why: float-to-int `as` saturates (NaN is 0); cpus and mem are validated finite and
// non-negative, and their limits are far inside u64/i64.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn try_create(task_id: &str, cpus: f64, mem_mb: f64) -> Result<TaskCgroup, AgentError> {
    let name = format!("{PARENT}/{task_id}");
    let hierarchy = hierarchies::auto();
    let v2 = hierarchy.v2();
    let shares = (cpus * 1024.0).round().max(2.0) as u64;
    // cgroup v2 takes a weight in 1..=10000 where v1 took shares (1024 = one cpu).
    let shares = if v2 { (1 + (shares.saturating_sub(2) * 9999) / 262142).clamp(1, 10000) } else { shares };
    let quota = ((cpus * CFS_PERIOD_US as f64).round() as i64).max(MIN_CFS_QUOTA_US);
    let mut builder = CgroupBuilder::new(&name)
        .set_specified_controllers(controllers(v2))
        .cpu()
        .shares(shares)
        .period(CFS_PERIOD_US)
        .quota(quota)
        .done();
    if mem_mb > 0.0 {
        let bytes = (mem_mb * 1024.0 * 1024.0) as i64;
        builder = builder.memory().memory_hard_limit(bytes).done();
    }
    let cgroup = builder.build(hierarchy).map_err(|source| AgentError::CgroupCreate { name: name.clone(), source })?;
    let dirs = cgroup.subsystems().iter().map(|s| s.to_controller().path().to_path_buf()).collect();
    Ok(TaskCgroup { name, dirs })
}

/// Kills whatever is left in the cgroup and removes it. Missing cgroups are fine.
pub fn remove(cgroup: &TaskCgroup) -> Result<(), AgentError> {
    kill_all(&cgroup.dirs);
    let hierarchy = hierarchies::auto();
    let v2 = hierarchy.v2();
    let handle = Cgroup::load_with_specified_controllers(hierarchy, &cgroup.name, controllers(v2));
    let mut last = Ok(());
    // Killed processes take a moment to leave the cgroup; rmdir fails (EBUSY) until then.
    for _ in 0..50 {
        if cgroup.dirs.iter().all(|d| !d.exists()) {
            return Ok(());
        }
        last = handle.delete();
        if last.is_ok() {
            return Ok(());
        }
        kill_all(&cgroup.dirs);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    last.map_err(|source| AgentError::CgroupRemove { name: cgroup.name.clone(), source })
}

/// Pids in the cgroup (any of its directories: they hold the same processes).
pub fn procs(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the cgroup: daemons a task left behind die with it.
pub fn kill_all(dirs: &[PathBuf]) {
    for pid in procs(dirs) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Whether the kernel's OOM killer struck inside this cgroup (which only ever held one
/// task, so any OOM kill is the task's): `memory.events` on v2, `memory.oom_control` on
/// v1, with `memory.failcnt` for old kernels that do not count OOM kills.
pub fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| oom_kills_in(dir) > 0)
}

fn oom_kills_in(dir: &Path) -> u64 {
    for file in ["memory.events", "memory.oom_control"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            if let Some(count) = counter(&text, "oom_kill") {
                return count;
            }
        }
    }
    std::fs::read_to_string(dir.join("memory.failcnt")).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

/// `name value` lines, as in memory.events, memory.oom_control and cpu.stat.
pub(crate) fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counters_are_read_from_v1_and_v2_files() {
        assert_eq!(counter("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n", "oom_kill"), Some(1));
        assert_eq!(counter("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", "oom_kill"), Some(0));
        assert_eq!(counter("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
        let dir = tempfile::tempdir().unwrap();
        assert!(!oom_killed(&[dir.path().to_path_buf()]));
        std::fs::write(dir.path().join("memory.events"), "oom 1\noom_kill 2\n").unwrap();
        assert!(oom_killed(&[dir.path().to_path_buf()]));
    }
}
