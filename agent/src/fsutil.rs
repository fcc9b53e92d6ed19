//! Small file and /proc helpers shared by the agent and the executor.
use serde::{de::DeserializeOwned, Serialize};
use std::fs;
use std::io;
use std::path::Path;

use crate::error::AgentError;
use crate::sandbox_fs::SandboxDir;

/// Writes JSON so that readers see the old or the new content, never a torn file: a
/// checkpoint or an exit record cut in half by a crash would lose a task.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), AgentError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| AgentError::Encode { what: "state file", source })?;
    write_atomic(path, &bytes)
}

/// [`write_json_atomic`] for bytes. State files are the agent's and the executor's alone
/// (they hold apps' env secrets): created 0600, whatever the umask. Many live in a task's
/// sandbox, where the task may have planted a symlink under the name or its temporary
/// name: the file is written beneath its directory's fd and never through a link.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let (dir, name) = split(path);
    SandboxDir::open(dir)
        .and_then(|dir| dir.write_atomic(name, bytes, 0o600))
        .map_err(|source| AgentError::WriteFile { path: path.to_path_buf(), source })
}

/// The directory to open and the name in it.
fn split(path: &Path) -> (&Path, &Path) {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    (dir, path.file_name().map_or(path, Path::new))
}

/// Reads a JSON state file; `Ok(None)` when it does not exist. Only a regular file that
/// this process's user wrote counts (beneath its directory, never through a link): a
/// task cannot plant a record (`exit.json`, `running.json`) in its sandbox.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, AgentError> {
    let (dir, name) = split(path);
    match SandboxDir::open(dir).and_then(|dir| dir.read_own(name)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| AgentError::ParseFile { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::ReadFile { path: path.to_path_buf(), source }),
    }
}

pub fn create_dir_all(path: &Path) -> Result<(), AgentError> {
    fs::create_dir_all(path).map_err(|source| AgentError::CreateDir { path: path.to_path_buf(), source })
}

/// What /proc says about a process: its state letter and start time (clock ticks since
/// boot). The start time tells a live process from a later one that reused its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// Parses `/proc/PID/stat`. The command name may contain spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come ppid (4) … starttime (22): 18 more fields, starttime last.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Whether `pid` is still the process that was started at `start_time`. A zombie counts
/// as gone; if it is our own child it is reaped here so it does not linger.
pub fn process_alive(pid: i32, start_time: Option<u64>) -> bool {
    let Some(stat) = proc_stat(pid) else { return false };
    if start_time.is_some_and(|t| t != stat.start_time) {
        return false;
    }
    if stat.state == 'Z' || stat.state == 'X' {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_parsed_past_odd_command_names() {
        let line = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_proc_stat(line), Some(ProcStat { state: 'S', start_time: 98765 }));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = i32::try_from(std::process::id()).unwrap();
        let stat = proc_stat(me).expect("own stat");
        assert!(process_alive(me, Some(stat.start_time)));
        assert!(!process_alive(me, Some(stat.start_time + 1)));
    }

    #[test]
    fn atomic_json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), None);
        write_json_atomic(&path, &vec![1u32, 2]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![1, 2]));
        assert!(!dir.path().join("x.json.tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "state files are private");
        // A record that is a link (to another task's, say) is not read.
        let other = dir.path().join("other.json");
        write_json_atomic(&other, &vec![7u32]).unwrap();
        let planted = dir.path().join("planted.json");
        std::os::unix::fs::symlink(&other, &planted).unwrap();
        assert!(matches!(read_json::<Vec<u32>>(&planted), Err(AgentError::ReadFile { .. })));
    }
}
