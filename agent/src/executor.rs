//! The per-task supervisor (`plinth executor --spec SANDBOX/task.json`), as a Mesos
//! executor: a small synchronous process in its own session that starts the task, waits
//! for it and records how it ended in `exit.json` (a [`Termination`]). Because it
//! outlives the agent, a restarted agent finds its tasks running and never loses an exit
//! code. A Docker task runs as a container ([`crate::container`]) started by the executor.
//!
//! Before the task starts, the executor stages the app's `fetch` artifacts into the sandbox
//! ([`crate::fetch`]); a failure is recorded in `exit.json` like any start failure.
//!
//! Files in the sandbox ([`crate::executor_contract`]): `task.json` (the
//! [`ExecutorSpec`], written by the agent), `executor.json`
//! (executor pid), `running.json` (task pid, once started), `exit.json` (the end),
//! `stdout`/`stderr` (the task's output) and `executor.log` (the executor's own).
//!
//! Killing: the agent sends SIGTERM to the executor, which forwards it to the task's
//! process group and sends SIGKILL after the grace period.
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use plinth_protocol::{error_chain, Timestamp};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup;
use crate::container;
use crate::error::AgentError;
use crate::executor_contract::{
    ExecutorRecord, ExecutorSpec, RunningRecord, Termination, EXECUTOR_FILE, EXECUTOR_LOG, EXIT_FILE, RUNNING_FILE,
    SPEC_FILE,
};
use crate::fetch;
use crate::fsutil::{self, proc_stat};
use crate::logs::{self, LogPolicy, Stream};

/// How often logs are checked for rotation while nothing else happens.
const TICK: Duration = Duration::from_secs(1);

/// Runs the executor; the return value is the process exit code (0 once `exit.json` is
/// written, whatever the task did).
pub fn run(spec_path: &Path) -> i32 {
    match supervise(spec_path) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("plinth executor: {}", error_chain(&err));
            1
        }
    }
}

fn supervise(spec_path: &Path) -> Result<(), AgentError> {
    // Block the signals first, so a SIGTERM arriving during start-up waits for the loop
    // instead of killing the executor (which would leave the task unsupervised).
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGCHLD] {
        signals.add(signal);
    }
    let _ = signals.thread_block();

    let spec: ExecutorSpec = fsutil::read_json(spec_path)?.ok_or_else(|| AgentError::ReadFile {
        path: spec_path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "spec file missing"),
    })?;
    let sandbox = spec.sandbox.clone();
    // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
    #[allow(clippy::cast_possible_wrap)]
    let me = std::process::id() as i32;
    fsutil::write_json_atomic(
        &sandbox.join(EXECUTOR_FILE),
        &ExecutorRecord { pid: me, start_time: proc_stat(me).map(|s| s.start_time) },
    )?;

    if let Err((uri, err)) = fetch::fetch_all(&spec.fetch, &sandbox, &fetch_options(&spec), &termination_pending) {
        eprintln!("plinth executor: fetch of {uri} failed: {}", error_chain(&err));
        let record = Termination {
            code: None,
            signal: None,
            oom: false,
            killed: matches!(err, fetch::FetchError::Killed),
            error: Some(format!("{}{uri} failed: {}", fetch::FETCH_FAILED_PREFIX, error_chain(&err))),
            fetch_failed: true,
            finished_at: Timestamp::now().to_iso(),
        };
        return fsutil::write_json_atomic(&sandbox.join(EXIT_FILE), &record);
    }

    // A Docker task runs as a container; its init is the "task process" below.
    let mut container: Option<container::Running> = None;
    let pid = if let Some(task) = &spec.container {
        let started = open_log(&sandbox, Stream::Stdout)
            .and_then(|out| Ok((out, open_log(&sandbox, Stream::Stderr)?)))
            .map_err(|err| error_chain(&err).to_string())
            .and_then(|(out, err)| {
                container::start(&spec, task, out, err)
                    .map_err(|e| format!("starting the container failed: {}", error_chain(&e)))
            });
        match started {
            Ok(running) => {
                let pid = Pid::from_raw(running.pid);
                container = Some(running);
                pid
            }
            Err(error) => {
                eprintln!("plinth executor: {error}");
                return write_start_failure(&sandbox, error);
            }
        }
    } else {
        let child = match spawn_task(&spec) {
            Ok(child) => child,
            Err(err) => return write_start_failure(&sandbox, error_chain(&err).to_string()),
        };
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = Pid::from_raw(child.id() as i32);
        // The child handle is not waited on through std: waitpid below does it, with WNOHANG.
        drop(child);
        pid
    };
    // A container's init leads no process group of ours; its pid namespace ends with it.
    let is_container = container.is_some();
    let signal_task = |signal: Signal| {
        let _ = if is_container { nix::sys::signal::kill(pid, signal) } else { killpg(pid, signal) };
    };
    fsutil::write_json_atomic(
        &sandbox.join(RUNNING_FILE),
        &RunningRecord { pid: pid.as_raw(), started_at: Timestamp::now().to_iso() },
    )?;

    let mut kill_deadline: Option<Instant> = None;
    let mut killed = false;
    let mut last_rotation = Instant::now();
    let status = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break Some(status),
            Ok(_) => {}
            // ECHILD: someone else reaped it; the exit status is gone.
            Err(_) => break None,
        }
        if let Some(deadline) = kill_deadline {
            if Instant::now() >= deadline {
                signal_task(Signal::SIGKILL);
                cgroup::kill_all(&spec.cgroup_dirs);
                kill_deadline = Some(Instant::now() + TICK);
            }
        }
        if last_rotation.elapsed() >= TICK {
            rotate_logs(&sandbox, spec.logs);
            last_rotation = Instant::now();
        }
        let timeout = kill_deadline.map_or(TICK, |d| d.saturating_duration_since(Instant::now()).min(TICK));
        match wait_for_signal(&signals, timeout) {
            Some(Signal::SIGTERM | Signal::SIGINT) if !killed => {
                killed = true;
                signal_task(Signal::SIGTERM);
                kill_deadline = Some(Instant::now() + Duration::from_millis(spec.kill_grace_ms));
            }
            _ => {}
        }
    };

    // Whatever the task left behind in its group or cgroup ends with it.
    signal_task(Signal::SIGKILL);
    cgroup::kill_all(&spec.cgroup_dirs);
    rotate_logs(&sandbox, spec.logs);
    // Read before the container's teardown deletes the cgroup.
    let oom = cgroup::oom_killed(&spec.cgroup_dirs);
    if let Some(mut running) = container.take() {
        running.teardown();
    }
    let (code, signal) = match status {
        Some(WaitStatus::Exited(_, code)) => (Some(code), None),
        Some(WaitStatus::Signaled(_, signal, _)) => (None, Some(signal as i32)),
        _ => (None, None),
    };
    let record = Termination {
        code,
        signal,
        oom,
        killed,
        error: status.is_none().then(|| "the task's exit status was lost".to_string()),
        fetch_failed: false,
        finished_at: Timestamp::now().to_iso(),
    };
    fsutil::write_json_atomic(&sandbox.join(EXIT_FILE), &record)
}

/// `exit.json` for a task that never started.
fn write_start_failure(sandbox: &Path, error: String) -> Result<(), AgentError> {
    let record = Termination {
        code: None,
        signal: None,
        oom: false,
        killed: false,
        error: Some(error),
        fetch_failed: false,
        finished_at: Timestamp::now().to_iso(),
    };
    fsutil::write_json_atomic(&sandbox.join(EXIT_FILE), &record)
}

fn fetch_options(spec: &ExecutorSpec) -> fetch::FetchOptions {
    let mut options = fetch::FetchOptions { cache_dir: spec.fetch_cache.clone(), ..Default::default() };
    // An app that asks for disk gets at most that much in artifacts.
    if let Some(disk_mb) = spec.task.as_ref().map(|t| t.app.disk).filter(|d| *d > 0.0) {
        // why: float-to-int `as` saturates; disk is validated finite and this is positive.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let max_bytes = (disk_mb * 1024.0 * 1024.0) as u64;
        options.max_bytes = max_bytes;
    }
    options
}

/// Whether a kill (SIGTERM/SIGINT, blocked until the supervision loop) is waiting.
fn termination_pending() -> bool {
    // SAFETY: an all-zero sigset_t is a valid (empty) set; sigpending only writes into
    // it and sigismember only reads it.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending) == 0
            && (libc::sigismember(&pending, libc::SIGTERM) == 1 || libc::sigismember(&pending, libc::SIGINT) == 1)
    }
}

/// Hands what is in the sandbox (logs, fetched artifacts) to the task's user, except
/// the executor's own files. Symlinks are changed themselves, never followed.
fn chown_tree(dir: &Path, identity: Identity) -> std::io::Result<()> {
    const EXECUTOR_FILES: [&str; 5] = [SPEC_FILE, EXECUTOR_FILE, RUNNING_FILE, EXIT_FILE, EXECUTOR_LOG];
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if EXECUTOR_FILES.iter().any(|f| entry.file_name() == *f) {
            continue;
        }
        let path = entry.path();
        std::os::unix::fs::lchown(&path, Some(identity.uid), Some(identity.gid))?;
        if entry.file_type()?.is_dir() {
            chown_tree(&path, identity)?;
        }
    }
    Ok(())
}

fn rotate_logs(sandbox: &Path, policy: LogPolicy) {
    for stream in [Stream::Stdout, Stream::Stderr] {
        if let Err(err) = logs::rotate_if_needed(&sandbox.join(stream.file_name()), policy) {
            eprintln!("plinth executor: cannot rotate {}: {err}", stream.file_name());
        }
    }
}

/// Waits up to `timeout` for one of the blocked signals.
fn wait_for_signal(signals: &SigSet, timeout: Duration) -> Option<Signal> {
    let timespec = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and timespec are valid for the call; a null siginfo pointer is
    // allowed. The result is a signal number or -1 (timeout/EINTR), both handled.
    let signal = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &timespec) };
    Signal::try_from(signal).ok()
}

fn open_log(sandbox: &Path, stream: Stream) -> Result<std::fs::File, AgentError> {
    let path = sandbox.join(stream.file_name());
    // O_APPEND: the executor's rotation truncates the file under the task's feet; with
    // append the task's next write lands at the new end instead of leaving a hole.
    OpenOptions::new().create(true).append(true).open(&path).map_err(|source| AgentError::WriteFile { path, source })
}

/// A uid/gid to switch to.
#[derive(Debug, Clone, Copy)]
struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

/// Resolves the app's `user`; `None` when the task runs as the executor's own user.
fn identity_for(spec: &ExecutorSpec) -> Result<Option<Identity>, AgentError> {
    let Some(name) = spec.user.as_deref().filter(|u| !u.is_empty()) else { return Ok(None) };
    let error = |reason: String| AgentError::User { task_id: spec.task_id.clone(), user: name.to_string(), reason };
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| error(format!("cannot look the user up: {e}")))?
        .ok_or_else(|| error("no such user on this agent".into()))?;
    let euid = nix::unistd::geteuid();
    if user.uid == euid {
        return Ok(None);
    }
    if !euid.is_root() {
        return Err(error("the agent is not root, so it cannot switch users".into()));
    }
    // The task must be able to write its sandbox, logs and artifacts as that user.
    nix::unistd::chown(&spec.sandbox, Some(user.uid), Some(user.gid))
        .map_err(|e| error(format!("cannot hand {} to the user: {e}", spec.sandbox.display())))?;
    let identity = Identity { uid: user.uid.as_raw(), gid: user.gid.as_raw() };
    chown_tree(&spec.sandbox, identity)
        .map_err(|e| error(format!("cannot hand the files in {} to the user: {e}", spec.sandbox.display())))?;
    Ok(Some(identity))
}

fn spawn_task(spec: &ExecutorSpec) -> Result<std::process::Child, AgentError> {
    let argv = spec.command.argv();
    let program = argv.first().ok_or_else(|| AgentError::NoCommand { task_id: spec.task_id.clone() })?;
    let stdout = open_log(&spec.sandbox, Stream::Stdout)?;
    let stderr = open_log(&spec.sandbox, Stream::Stderr)?;
    let identity = identity_for(spec)?;
    // Prepared before fork: between fork and exec nothing may allocate.
    let procs_files: Vec<CString> = spec
        .cgroup_dirs
        .iter()
        .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
        .collect();
    let mut command = Command::new(program);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group, so a kill reaches everything the task started.
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (open, write, close, prctl, sigprocmask, setgroups,
    // setgid, setuid) on data prepared before the fork; it allocates nothing and takes
    // no locks.
    unsafe {
        command.pre_exec(move || {
            // Join the task's cgroup ("0" means the writing process) so the limits
            // apply from the first instruction, and only to the task, not the executor.
            for file in &procs_files {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            // A task whose executor died would be unsupervised; let it die too.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            // The executor blocks signals for sigtimedwait; the task must not inherit that.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // Groups first, then gid, then uid: after setuid the others are not allowed.
            if let Some(Identity { uid, gid }) = identity {
                if libc::setgroups(1, &gid) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| AgentError::SpawnTask {
        program: PathBuf::from(program),
        task_id: spec.task_id.clone(),
        source,
    })
}
