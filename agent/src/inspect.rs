//! What `docker inspect/top/stats` showed, for Plinth tasks: the container record the
//! executor writes (`container.json`), the task's processes and its cgroup counters.
//! Plain file reads, so the API answers even while the agent is busy elsewhere.
use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::cgroup::counter;
use crate::executor_contract::{PhaseMark, RunningRecord, CONTAINER_FILE, RUNNING_FILE};

/// The container record as written by the executor; `Null` for command tasks, and for
/// a record the task itself planted (a link to another task's files, say).
pub fn container_record(sandbox: &Path) -> serde_json::Value {
    crate::fsutil::read_json(&sandbox.join(CONTAINER_FILE)).ok().flatten().unwrap_or(serde_json::Value::Null)
}

/// The start phases the executor recorded (`running.json`), in order; none before the
/// task's process started, and none from an unreadable record.
pub fn start_phases(sandbox: &Path) -> Vec<PhaseMark> {
    let record: Option<RunningRecord> = crate::fsutil::read_json(&sandbox.join(RUNNING_FILE)).ok().flatten();
    record.map(|r| r.phases).unwrap_or_default()
}

/// The container's own address (BRIDGE networking), if it has one.
pub fn container_ip(sandbox: &Path) -> Option<String> {
    container_record(sandbox).get("ip").and_then(|ip| ip.as_str()).filter(|ip| !ip.is_empty()).map(str::to_string)
}

/// One process of a task, as `top` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub state: String,
    pub rss_kb: u64,
    pub threads: u64,
    pub command: String,
}

/// The processes of the task (everything in its cgroup), by pid.
pub fn processes(cgroup_dirs: &[PathBuf]) -> Vec<ProcessInfo> {
    crate::cgroup::procs(cgroup_dirs).into_iter().filter_map(process_info).collect()
}

fn process_info(pid: i32) -> Option<ProcessInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut info = parse_status(pid, &status);
    let command = cmdline
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if !command.is_empty() {
        info.command = command;
    }
    Some(info)
}

/// Reads the fields `top` needs out of `/proc/PID/status`.
fn parse_status(pid: i32, status: &str) -> ProcessInfo {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name).map(|rest| rest.trim_start_matches(':').trim().to_string()))
    };
    let first_number = |name: &str| {
        field(name).and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())).unwrap_or(0)
    };
    ProcessInfo {
        pid,
        ppid: i32::try_from(first_number("PPid")).unwrap_or(0),
        uid: u32::try_from(first_number("Uid")).unwrap_or(0),
        state: field("State").unwrap_or_default(),
        rss_kb: first_number("VmRSS"),
        threads: first_number("Threads"),
        command: field("Name").map(|n| format!("[{n}]")).unwrap_or_default(),
    }
}

/// Resource use from the task's cgroup (v1 or v2 files, whichever exist).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// CPU time used, in microseconds.
    pub cpu_usage_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub oom_kills: u64,
    pub pids: usize,
}

pub fn stats(cgroup_dirs: &[PathBuf]) -> Stats {
    let mut stats = Stats { pids: crate::cgroup::procs(cgroup_dirs).len(), ..Default::default() };
    for dir in cgroup_dirs {
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        let number = |file: &str| read(file).and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(text) = read("cpu.stat") {
            if let Some(usec) = counter(&text, "usage_usec") {
                stats.cpu_usage_usec = Some(usec);
            }
        }
        if let Some(nanos) = number("cpuacct.usage") {
            stats.cpu_usage_usec = Some(nanos / 1000);
        }
        if let Some(bytes) = number("memory.current").or_else(|| number("memory.usage_in_bytes")) {
            stats.memory_bytes = Some(bytes);
        }
        // v2 says "max" for no limit; v1 a huge number.
        if let Some(limit) = number("memory.max").or_else(|| number("memory.limit_in_bytes")) {
            stats.memory_limit_bytes = Some(limit).filter(|l| *l < (1 << 62));
        }
        if let Some(peak) = number("memory.peak").or_else(|| number("memory.max_usage_in_bytes")) {
            stats.memory_peak_bytes = Some(peak);
        }
        for file in ["memory.events", "memory.oom_control"] {
            if let Some(kills) = read(file).and_then(|t| counter(&t, "oom_kill")) {
                stats.oom_kills = stats.oom_kills.max(kills);
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_parsed() {
        let status =
            "Name:\tsh\nState:\tS (sleeping)\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\nVmRSS:\t  1234 kB\nThreads:\t3\n";
        let info = parse_status(42, status);
        assert_eq!(
            info,
            ProcessInfo {
                pid: 42,
                ppid: 1,
                uid: 1000,
                state: "S (sleeping)".into(),
                rss_kb: 1234,
                threads: 3,
                command: "[sh]".into()
            }
        );
    }

    #[test]
    fn stats_read_v1_and_v2_files() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cpu.stat"), "usage_usec 5000\nuser_usec 4000\n").unwrap();
        std::fs::write(v2.path().join("memory.current"), "1048576\n").unwrap();
        std::fs::write(v2.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(v2.path().join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        let s = stats(&[v2.path().to_path_buf()]);
        assert_eq!(
            (s.cpu_usage_usec, s.memory_bytes, s.memory_limit_bytes, s.oom_kills),
            (Some(5000), Some(1048576), None, 1)
        );

        let v1 = tempfile::tempdir().unwrap();
        std::fs::write(v1.path().join("cpuacct.usage"), "7000000\n").unwrap();
        std::fs::write(v1.path().join("memory.usage_in_bytes"), "2048\n").unwrap();
        std::fs::write(v1.path().join("memory.limit_in_bytes"), "134217728\n").unwrap();
        let s = stats(&[v1.path().to_path_buf()]);
        assert_eq!((s.cpu_usage_usec, s.memory_bytes, s.memory_limit_bytes), (Some(7000), Some(2048), Some(134217728)));
    }

    #[test]
    fn start_phases_come_from_the_running_record() {
        let dir = tempfile::tempdir().unwrap();
        assert!(start_phases(dir.path()).is_empty(), "not started yet");
        std::fs::write(dir.path().join(RUNNING_FILE), r#"{"pid":7,"started_at":"2026-01-01T00:00:00.000Z"}"#).unwrap();
        assert!(start_phases(dir.path()).is_empty(), "a record of an older executor has no phases");
        std::fs::write(
            dir.path().join(RUNNING_FILE),
            r#"{"pid":7,"started_at":"x","phases":[{"phase":"created","at":"a"},{"phase":"started","at":"b"}]}"#,
        )
        .unwrap();
        let phases: Vec<_> = start_phases(dir.path()).into_iter().map(|m| (m.phase, m.at)).collect();
        use crate::executor_contract::StartPhase;
        assert_eq!(phases, vec![(StartPhase::Created, "a".into()), (StartPhase::Started, "b".into())]);
    }

    #[test]
    fn container_ip_comes_from_the_record() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(container_ip(dir.path()), None);
        std::fs::write(dir.path().join(CONTAINER_FILE), r#"{"ip":"172.31.0.5","pid":7}"#).unwrap();
        assert_eq!(container_ip(dir.path()).as_deref(), Some("172.31.0.5"));
    }
}
