//! Creating, starting and deleting a container through youki's `libcontainer`.
//!
//! The executor calls [`create_and_start`] with the bundle written by [`write_bundle`];
//! the container's init ends up the executor's child (the executor is a child
//! subreaper, and libcontainer's intermediate process exits after forking it), so the
//! executor `waitpid`s it like a plain task.
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;
use plinth_protocol::error_chain;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::ContainerError;
use crate::executor_contract::{PhaseMark, StartPhase};

/// Where libcontainer keeps container state (one directory per container).
pub const STATE_ROOT: &str = "/run/plinth/containers";

/// A container id libcontainer accepts (its state directory's name): the task id with
/// anything but letters, digits, `.`, `_`, `-` replaced.
pub fn container_id(task_id: &str) -> String {
    let id: String = task_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    match id.trim_start_matches('.') {
        "" => "task".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// Writes `bundle/config.json`.
pub fn write_bundle(bundle: &Path, spec: &Spec) -> Result<(), ContainerError> {
    std::fs::create_dir_all(bundle).map_err(|source| ContainerError::Io {
        what: "creating the bundle directory",
        path: bundle.to_path_buf(),
        source,
    })?;
    let path = bundle.join("config.json");
    spec.save(&path).map_err(|e| ContainerError::Spec(format!("cannot write {}: {e}", path.display())))
}

/// The default workload executor, with the signal mask cleared first: the Plinth
/// executor blocks SIGTERM and friends for `sigtimedwait`, libcontainer passes the mask
/// on, and a container whose init has SIGTERM blocked could never be stopped politely.
#[derive(Clone)]
struct UnblockingExecutor;

impl Executor for UnblockingExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // SAFETY: an all-zero sigset_t emptied by sigemptyset is valid; sigprocmask only
        // reads it. This runs in the container's init just before execve.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Creates and starts the container; returns its init's pid (in the agent's pid
/// namespace). `stdout`/`stderr` become the container init's output. `phases` gets when
/// the container was created and when its process was exec'd.
pub fn create_and_start(
    id: &str,
    state_root: &Path,
    bundle: &Path,
    stdout: File,
    stderr: File,
    phases: &mut Vec<PhaseMark>,
) -> Result<i32, ContainerError> {
    std::fs::create_dir_all(state_root).map_err(|source| ContainerError::Io {
        what: "creating the container state directory",
        path: state_root.to_path_buf(),
        source,
    })?;
    let stdin = File::open("/dev/null").map_err(|source| ContainerError::Io {
        what: "opening",
        path: PathBuf::from("/dev/null"),
        source,
    })?;
    let runtime = |e: libcontainer::error::LibcontainerError| ContainerError::Runtime {
        step: "creating the container",
        message: error_chain(&e).to_string(),
    };
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(UnblockingExecutor)
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_root_path(state_root)
        .map_err(runtime)?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(runtime)?;
    let pid = container.pid().map(|p| p.as_raw()).ok_or_else(|| ContainerError::Runtime {
        step: "creating the container",
        message: "libcontainer reported no init pid".into(),
    })?;
    phases.push(PhaseMark::now(StartPhase::Created));
    // start() returns once the init was told to exec the task's process.
    container.start().map_err(|e| ContainerError::Runtime {
        step: "starting the container",
        message: error_chain(&e).to_string(),
    })?;
    phases.push(PhaseMark::now(StartPhase::Started));
    Ok(pid)
}

/// Deletes the container's state and cgroup, killing what is left. A missing container
/// is fine (teardown runs after crashes too).
pub fn delete(id: &str, state_root: &Path) -> Result<(), ContainerError> {
    let dir = state_root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    match Container::load(dir.clone()) {
        Ok(mut container) => container.delete(true).map_err(|e| ContainerError::Runtime {
            step: "deleting the container",
            message: error_chain(&e).to_string(),
        }),
        // Half-written state (a crash during create): nothing to ask libcontainer, just
        // forget it.
        Err(_) => std::fs::remove_dir_all(&dir).map_err(|source| ContainerError::Io {
            what: "removing the container state",
            path: dir,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_directory_names() {
        assert_eq!(container_id("web.1234-ab_c"), "web.1234-ab_c");
        assert_eq!(container_id("a/b c"), "a_b_c");
        assert_eq!(container_id("..x"), "x");
        assert_eq!(container_id(".."), "task");
    }
}
