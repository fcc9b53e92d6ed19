//! The [`TaskRuntime`] of real tasks: every task, a command or a Docker container, runs
//! under its own executor process (see [`crate::executor`]). The runtime keeps no state
//! of its own: everything it needs is in the handle and in the sandbox files the executor
//! writes ([`crate::executor_contract`]), which is what makes re-adoption trivial.
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{LaunchRequest, Observation, RuntimeHandle, TaskRuntime};
use crate::cgroup::{self, TaskCgroup};
use crate::config::TaskConfinement;
use crate::error::AgentError;
use crate::executor_contract::{self as contract, ExecutorRecord, ExecutorSpec, RunningRecord, Termination};
use crate::fsutil::{self, proc_stat, process_alive};
use crate::sandbox_fs::SandboxDir;
use crate::taskenv::TaskCommand;

/// Who a task runs as: the app's `user`, else the agent's default task user (Mesos'
/// `--switch_user`), which only a root agent can switch to; `None`: the agent's own.
pub fn task_user(spec: &plinth_protocol::agent::TaskSpec, confinement: &TaskConfinement) -> Option<String> {
    let named = |user: &String| !user.is_empty();
    spec.app
        .user
        .clone()
        .filter(named)
        .or_else(|| Some(confinement.default_user.clone()).filter(|u| named(u) && nix::unistd::geteuid().is_root()))
}

/// How to start an executor: `program args… --spec SANDBOX/task.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// What `ps` shows as the program (argv[0]); the program path when `None`.
    pub display_name: Option<OsString>,
}

impl ExecutorCommand {
    pub fn new(program: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        ExecutorCommand { program: program.into(), args, display_name: None }
    }

    /// `plinth executor`: this very binary, so agent and executor always match. It is
    /// run through `/proc/self/exe`, which still works after a package upgrade replaced
    /// (deleted) the file the agent was started from.
    pub fn plinth_binary() -> Self {
        let display_name = std::env::current_exe().ok().map(|p| p.into_os_string());
        ExecutorCommand { program: PathBuf::from("/proc/self/exe"), args: vec!["executor".into()], display_name }
    }
}

/// Runs each task under its own `plinth executor` process.
pub struct ProcessRuntime {
    executor: ExecutorCommand,
}

impl ProcessRuntime {
    pub fn new(executor: ExecutorCommand) -> Self {
        ProcessRuntime { executor }
    }
}

fn read_running(sandbox: &Path) -> Option<RunningRecord> {
    fsutil::read_json(&sandbox.join(contract::RUNNING_FILE)).ok().flatten()
}

fn read_exit(sandbox: &Path) -> Option<Termination> {
    fsutil::read_json(&sandbox.join(contract::EXIT_FILE)).ok().flatten()
}

fn signal_error(
    signal: Signal,
    target: &'static str,
    pid: i32,
    task_id: &str,
    source: nix::errno::Errno,
) -> AgentError {
    AgentError::Signal { signal: signal.as_str(), target, pid, task_id: task_id.to_string(), source }
}

impl ProcessRuntime {
    fn executor_alive(handle: &RuntimeHandle) -> bool {
        handle.pid.is_some_and(|pid| process_alive(pid, handle.pid_start_time))
    }

    fn spawn_executor(&self, request: &LaunchRequest, spec_path: &Path) -> Result<(i32, Option<u64>), AgentError> {
        let task_id = request.spec.task_id.to_string();
        let log_path = request.sandbox.join(contract::EXECUTOR_LOG);
        let log = SandboxDir::open(&request.sandbox)
            .and_then(|dir| dir.open_append(Path::new(contract::EXECUTOR_LOG), 0o600))
            .map_err(|source| AgentError::WriteFile { path: log_path.clone(), source })?;
        let log_err = log.try_clone().map_err(|source| AgentError::WriteFile { path: log_path, source })?;
        let mut command = Command::new(&self.executor.program);
        if let Some(name) = &self.executor.display_name {
            command.arg0(name);
        }
        command
            .args(&self.executor.args)
            .arg("--spec")
            .arg(spec_path)
            .current_dir(&request.sandbox)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent. A new
        // session keeps the executor out of the agent's process group and terminal, so
        // a Ctrl-C or a kill of the agent's group leaves tasks running.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| AgentError::SpawnExecutor {
            program: self.executor.program.clone(),
            task_id,
            source,
        })?;
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = child.id() as i32;
        // Not waited on here: liveness comes from /proc, and zombies are reaped there.
        drop(child);
        Ok((pid, proc_stat(pid).map(|s| s.start_time)))
    }
}

impl TaskRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch(&self, request: &LaunchRequest) -> Result<RuntimeHandle, AgentError> {
        let spec = &request.spec;
        // A container runs its image's command unless the app overrides it.
        let command = match (&request.container, TaskCommand::for_spec(spec)) {
            (_, Ok(command)) => command,
            (Some(_), Err(_)) => TaskCommand::Exec(Vec::new()),
            (None, Err(err)) => return Err(err),
        };
        fsutil::create_dir_all(&request.sandbox)?;
        let cgroup = cgroup::create(spec.task_id.as_str(), spec.app.cpus, spec.app.mem);
        // why: float-to-int `as` saturates; the grace period is validated and clamped non-negative.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let kill_grace_ms = (spec.app.task_kill_grace_period_seconds.max(0.0) * 1000.0) as u64;
        let executor_spec = ExecutorSpec {
            task_id: spec.task_id.to_string(),
            sandbox: request.sandbox.clone(),
            command,
            env: request.env.clone(),
            kill_grace_ms,
            cgroup_dirs: cgroup.as_ref().map(|c| c.dirs.clone()).unwrap_or_default(),
            logs: request.logs,
            user: task_user(spec, &request.confinement),
            allow_root: request.confinement.allow_root,
            hidden_paths: request.confinement.hidden_paths.clone(),
            task: Some(spec.clone()),
            fetch: spec.app.fetch.clone(),
            fetch_cache: request.fetch_cache.clone(),
            container: request.container.clone(),
            notify_socket: request.notify_socket.clone(),
        };
        let spec_path = request.sandbox.join(contract::SPEC_FILE);
        let spawned = fsutil::write_json_atomic(&spec_path, &executor_spec)
            .and_then(|()| self.spawn_executor(request, &spec_path));
        match spawned {
            Ok((pid, pid_start_time)) => Ok(RuntimeHandle {
                task_id: spec.task_id.clone(),
                sandbox: request.sandbox.clone(),
                pid: Some(pid),
                pid_start_time,
                cgroup,
            }),
            Err(err) => {
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup::remove(cgroup);
                }
                Err(err)
            }
        }
    }

    fn kill(&self, handle: &RuntimeHandle, _grace: Duration) -> Result<(), AgentError> {
        // The grace period is in the executor's spec; it enforces it even if we die now.
        if !Self::executor_alive(handle) {
            return Ok(());
        }
        let pid = handle.pid.expect("alive implies a pid");
        match kill(Pid::from_raw(pid), Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(signal_error(Signal::SIGTERM, "executor", pid, handle.task_id.as_str(), source)),
        }
    }

    fn force_kill(&self, handle: &RuntimeHandle) -> Result<(), AgentError> {
        if let Some(running) = read_running(&handle.sandbox) {
            if process_alive(running.pid, None) {
                let _ = killpg(Pid::from_raw(running.pid), Signal::SIGKILL);
            }
        }
        if let Some(cgroup) = &handle.cgroup {
            cgroup::kill_all(&cgroup.dirs);
        }
        if Self::executor_alive(handle) {
            let pid = handle.pid.expect("alive implies a pid");
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(source) => {
                    return Err(signal_error(Signal::SIGKILL, "executor", pid, handle.task_id.as_str(), source))
                }
            }
        }
        Ok(())
    }

    fn poll(&self, handle: &RuntimeHandle) -> Observation {
        if let Some(termination) = read_exit(&handle.sandbox) {
            return Observation::Exited(termination);
        }
        if Self::executor_alive(handle) {
            return match read_running(&handle.sandbox) {
                Some(running) => Observation::Running { pid: Some(running.pid) },
                None => Observation::Starting,
            };
        }
        // The executor may have written exit.json and exited between the two looks.
        if let Some(termination) = read_exit(&handle.sandbox) {
            return Observation::Exited(termination);
        }
        Observation::Gone {
            message: match handle.pid {
                Some(pid) => format!("the task's executor (pid {pid}) ended without recording how the task ended"),
                None => "the task's executor never started".to_string(),
            },
        }
    }

    fn recover(&self, handle: &RuntimeHandle) -> RuntimeHandle {
        let mut recovered = handle.clone();
        if recovered.pid.is_none() {
            if let Ok(Some(record)) = fsutil::read_json::<ExecutorRecord>(&handle.sandbox.join(contract::EXECUTOR_FILE))
            {
                recovered.pid = Some(record.pid);
                recovered.pid_start_time = record.start_time;
            }
        }
        if recovered.cgroup.is_none() {
            let spec: Option<ExecutorSpec> =
                fsutil::read_json(&handle.sandbox.join(contract::SPEC_FILE)).ok().flatten();
            if let Some(spec) = spec.filter(|s| !s.cgroup_dirs.is_empty()) {
                recovered.cgroup =
                    Some(TaskCgroup { name: format!("{}/{}", cgroup::PARENT, handle.task_id), dirs: spec.cgroup_dirs });
            }
        }
        recovered
    }

    fn cleanup(&self, handle: &RuntimeHandle) -> Result<(), AgentError> {
        // A container whose executor died (or was killed) left its mounts, network and
        // runtime state behind; after a clean exit this finds nothing to do.
        crate::container::cleanup_leftovers(&handle.sandbox);
        match &handle.cgroup {
            Some(cgroup) => cgroup::remove(cgroup),
            None => Ok(()),
        }
    }
}
