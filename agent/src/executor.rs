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
//! Killing: the agent sends SIGTERM to the executor, which forwards it to the task (under
//! a root executor to the task's init, `crate::task_init`, which passes it on; else to
//! the task's process group) and sends SIGKILL after the grace period.
//!
//! Confinement: a command task runs as its user (root only with `--allow-root-tasks`) in
//! a mount namespace that hides the node's state, with Docker's capabilities as root and
//! none otherwise (`crate::confine`). The sandbox is the task's to write in but not to
//! trust: the executor holds its own handles on the logs (rotation goes through them) and
//! opens every name in the sandbox beneath its fd, never through a link
//! ([`crate::sandbox_fs`]).
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use plinth_protocol::{error_chain, Timestamp};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup;
use crate::confine::{self, Confinement, Identity};
use crate::container;
use crate::error::AgentError;
use crate::executor_contract::{
    notify_agent, ExecutorRecord, ExecutorSpec, PhaseMark, RunningRecord, StartPhase, Termination, EXECUTOR_FILE,
    EXECUTOR_LOG, EXIT_FILE, RUNNING_FILE, SPEC_FILE,
};
use crate::fetch;
use crate::fsutil::{self, proc_stat};
use crate::logs::{self, LogPolicy, Stream};
use crate::sandbox_fs::{self, SandboxDir};
use crate::task_init;

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
    // However the executor returns, `exit.json` (or its reason for failing) is new news.
    let _news = NotifyOnReturn { socket: spec.notify_socket.clone(), task_id: spec.task_id.clone() };
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

    // The executor keeps its own handles on the logs it gives the task: rotation works
    // on them, never on the names in the sandbox, which the task controls.
    let logs = match SandboxDir::open(&sandbox).and_then(TaskLogs::open) {
        Ok(logs) => logs,
        Err(err) => return write_start_failure(&sandbox, format!("cannot open the task's logs: {err}")),
    };
    // A Docker task runs as a container; its init is the "task process" below.
    let mut container: Option<container::Running> = None;
    // A command task's init reports here how the task ended (see crate::task_init).
    let mut init_report = None;
    // When each start phase ended, for the task's timeline (`running.json`).
    let mut phases = Vec::new();
    let pid = if let Some(task) = &spec.container {
        let started =
            logs.for_task().map_err(|err| format!("cannot open the task's logs: {err}")).and_then(|(out, err)| {
                container::start(&spec, task, out, err)
                    .map_err(|e| format!("starting the container failed: {}", error_chain(&e)))
            });
        match started {
            Ok(running) => {
                let pid = Pid::from_raw(running.pid);
                phases.clone_from(&running.phases);
                container = Some(running);
                pid
            }
            Err(error) => {
                eprintln!("plinth executor: {error}");
                return write_start_failure(&sandbox, error);
            }
        }
    } else {
        let child = match spawn_task(&spec, &logs, &mut phases) {
            Ok((child, report)) => {
                init_report = report;
                child
            }
            Err(err) => return write_start_failure(&sandbox, error_chain(&err).to_string()),
        };
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = Pid::from_raw(child.id() as i32);
        // The child handle is not waited on through std: waitpid below does it, with WNOHANG.
        drop(child);
        pid
    };
    // A container's init and a command task's init lead a PID namespace, which ends with
    // them; they get the signal themselves (a task's init passes it on to the task).
    let own_namespace = container.is_some() || init_report.is_some();
    let signal_task = |signal: Signal| {
        let _ = if own_namespace { nix::sys::signal::kill(pid, signal) } else { killpg(pid, signal) };
    };
    fsutil::write_json_atomic(
        &sandbox.join(RUNNING_FILE),
        &RunningRecord { pid: pid.as_raw(), started_at: Timestamp::now().to_iso(), phases },
    )?;
    notify_agent(spec.notify_socket.as_deref(), &spec.task_id);

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
            logs.rotate(spec.logs);
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
    logs.rotate(spec.logs);
    // Read before the container's teardown deletes the cgroup.
    let oom = cgroup::oom_killed(&spec.cgroup_dirs);
    if let Some(mut running) = container.take() {
        running.teardown();
    }
    let (mut code, mut signal) = match status {
        Some(WaitStatus::Exited(_, code)) => (Some(code), None),
        Some(WaitStatus::Signaled(_, signal, _)) => (None, Some(signal as i32)),
        _ => (None, None),
    };
    let mut error = status.is_none().then(|| "the task's exit status was lost".to_string());
    // The init's word on the task beats the init's own status; an init killed (after
    // the grace period) said nothing, and its SIGKILL is the task's.
    match init_report.and_then(task_init::Report::read) {
        Some(task_init::Report::Exited(c)) => (code, signal) = (Some(c), None),
        Some(task_init::Report::Signaled(s)) => (code, signal) = (None, Some(s)),
        Some(task_init::Report::Failed(reason)) => (code, signal, error) = (None, None, Some(reason)),
        None => {}
    }
    let record =
        Termination { code, signal, oom, killed, error, fetch_failed: false, finished_at: Timestamp::now().to_iso() };
    fsutil::write_json_atomic(&sandbox.join(EXIT_FILE), &record)
}

/// Notifies the agent when dropped: at every return of [`supervise`].
struct NotifyOnReturn {
    socket: Option<PathBuf>,
    task_id: String,
}

impl Drop for NotifyOnReturn {
    fn drop(&mut self) {
        notify_agent(self.socket.as_deref(), &self.task_id);
    }
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
    // Local artifacts are read as the task's user, never from what tasks must not see.
    let reader = identity_for(spec).ok().and_then(|(identity, _)| identity).map(|i| (i.uid, i.gid));
    let mut options = fetch::FetchOptions {
        cache_dir: spec.fetch_cache.clone(),
        local_reader: reader,
        hidden: spec.hidden_paths.clone(),
        ..Default::default()
    };
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

/// Hands what is in the sandbox (fetched artifacts) to the task's user, except the
/// executor's files and the logs. Symlinks are changed themselves, never followed. It
/// runs before the task does, so nothing in the tree moves meanwhile.
fn chown_tree(dir: &Path, identity: Identity) -> std::io::Result<()> {
    const EXECUTOR_FILES: [&str; 7] =
        [SPEC_FILE, EXECUTOR_FILE, RUNNING_FILE, EXIT_FILE, EXECUTOR_LOG, STDOUT_FILE, STDERR_FILE];
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

const STDOUT_FILE: &str = Stream::Stdout.file_name();
const STDERR_FILE: &str = Stream::Stderr.file_name();

/// The task's two logs, as the executor holds them: the descriptors the task gets
/// (write-only, append) and the executor's own read-write ones on the same files, for
/// rotation.
struct TaskLogs {
    dir: SandboxDir,
    stdout: File,
    stderr: File,
    rotate_stdout: File,
    rotate_stderr: File,
}

impl TaskLogs {
    fn open(dir: SandboxDir) -> std::io::Result<TaskLogs> {
        // O_APPEND: the executor's rotation truncates the file under the task's feet; with
        // append the task's next write lands at the new end instead of leaving a hole.
        let stdout = dir.open_append(Path::new(STDOUT_FILE), LOG_MODE)?;
        let stderr = dir.open_append(Path::new(STDERR_FILE), LOG_MODE)?;
        let rotate_stdout = sandbox_fs::reopen(&stdout, true)?;
        let rotate_stderr = sandbox_fs::reopen(&stderr, true)?;
        Ok(TaskLogs { dir, stdout, stderr, rotate_stdout, rotate_stderr })
    }

    /// Descriptors of the same open files, for the task's stdout and stderr.
    fn for_task(&self) -> std::io::Result<(File, File)> {
        Ok((self.stdout.try_clone()?, self.stderr.try_clone()?))
    }

    fn rotate(&self, policy: LogPolicy) {
        for (stream, file) in [(Stream::Stdout, &self.rotate_stdout), (Stream::Stderr, &self.rotate_stderr)] {
            if let Err(err) = logs::rotate_if_needed(&self.dir, stream, file, policy) {
                eprintln!("plinth executor: cannot rotate {}: {err}", stream.file_name());
            }
        }
    }

    /// Lets the task's user write its logs, also by reopening them (`/dev/stdout`),
    /// and create files in the sandbox, while the logs and the executor's records stay
    /// root's: the sandbox becomes `root:GID` with the sticky bit (`01770`), so the task
    /// cannot rename, remove or replace what it does not own.
    fn hand_to(&self, identity: Identity) -> std::io::Result<()> {
        use std::os::unix::fs::{fchown, PermissionsExt};
        for file in [&self.stdout, &self.stderr] {
            fchown(file, Some(0), Some(identity.gid))?;
            file.set_permissions(std::fs::Permissions::from_mode(0o660))?;
        }
        fchown(&self.dir, Some(0), Some(identity.gid))?;
        nix::sys::stat::fchmod(&self.dir, nix::sys::stat::Mode::from_bits_truncate(0o1770))
            .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))
    }
}

/// Logs are the executor's files; the task writes them through the descriptors it gets.
const LOG_MODE: u32 = 0o640;

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

/// The task's user (see [`confine::resolve_user`]), as an error naming task and user.
fn identity_for(spec: &ExecutorSpec) -> Result<(Option<Identity>, bool), AgentError> {
    confine::resolve_user(spec.user.as_deref(), spec.allow_root).map_err(|reason| AgentError::User {
        task_id: spec.task_id.clone(),
        user: spec.user.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| "root".into()),
        reason,
    })
}

/// Starts the command task: under a root executor, as the child of its init, PID 1 of a
/// new PID namespace (the second value: the read end of the init's status pipe).
/// `phases` gets when the process was forked and when it was exec'd.
fn spawn_task(
    spec: &ExecutorSpec,
    logs: &TaskLogs,
    phases: &mut Vec<PhaseMark>,
) -> Result<(std::process::Child, Option<OwnedFd>), AgentError> {
    let argv = spec.command.argv();
    let program = argv.first().ok_or_else(|| AgentError::NoCommand { task_id: spec.task_id.clone() })?;
    let spawn_error = |source: std::io::Error| AgentError::SpawnTask {
        program: PathBuf::from(program),
        task_id: spec.task_id.clone(),
        source,
    };
    let (identity, runs_as_root) = identity_for(spec)?;
    if let Some(identity) = identity {
        let user = spec.user.clone().unwrap_or_default();
        let error = |what: &str, e: std::io::Error| AgentError::User {
            task_id: spec.task_id.clone(),
            user: user.clone(),
            reason: format!("cannot hand {what} in {} to the user: {e}", spec.sandbox.display()),
        };
        logs.hand_to(identity).map_err(|e| error("the sandbox and its logs", e))?;
        chown_tree(&spec.sandbox, identity).map_err(|e| error("the files", e))?;
    }
    let (stdout, stderr) = logs.for_task().map_err(spawn_error)?;
    let mut confinement =
        Confinement::prepare(&spec.sandbox, &spec.hidden_paths, identity, runs_as_root).map_err(spawn_error)?;
    let own_namespace = confine::can_make_namespaces();
    // The init's status pipe: the write end, not inherited until the child makes it so.
    let (report_read, report_write) = if own_namespace {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|errno| spawn_error(std::io::Error::from(errno)))?;
        // Blocking for the init's one write; the executor reads only after it exited.
        nix::fcntl::fcntl(&write, FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|errno| spawn_error(std::io::Error::from(errno)))?;
        confinement = confinement.with_own_proc();
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    let report_fd = report_write.as_ref().map(AsRawFd::as_raw_fd);
    // Prepared before fork: between fork and exec nothing may allocate.
    let procs_files: Vec<CString> = spec
        .cgroup_dirs
        .iter()
        .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
        .collect();
    let executor = nix::unistd::getpid().as_raw();
    let child_mask = if own_namespace { task_init::blocked_signals() } else { SigSet::empty() };
    let mut command = if own_namespace {
        // This very binary as the init (/proc/self/exe: the executor's, which the
        // child still is when it execs).
        let mut init = Command::new("/proc/self/exe");
        init.args(task_init::args(report_fd, &argv));
        init
    } else {
        let mut direct = Command::new(program);
        direct.args(&argv[1..]);
        direct
    };
    command
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group, so a kill reaches everything the task started.
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (open, write, close, sigprocmask, and those of
    // `Confinement::apply`: unshare, mount, mkdir, chdir, prctl, setgroups, setgid,
    // setuid, capset) on data prepared before the fork; it allocates nothing and takes
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
            // The executor blocks signals for sigtimedwait; the task must not inherit that.
            // Its init starts with its own set blocked, so no signal is lost before it
            // takes them (PID 1 drops those it neither handles nor blocks).
            libc::sigprocmask(libc::SIG_SETMASK, child_mask.as_ref(), std::ptr::null_mut());
            confinement.apply()?;
            // A task whose executor died would be unsupervised; let it die too. Set after
            // the user switch, which clears it; an executor gone already is caught here.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            match report_fd {
                // PID 1 of its namespace sees no parent (getppid is 0); the executor's
                // end of the status pipe tells instead: no reader left is POLLERR.
                Some(fd) => {
                    let mut poll = libc::pollfd { fd, events: 0, revents: 0 };
                    if libc::poll(&mut poll, 1, 0) < 0 || poll.revents & libc::POLLERR != 0 {
                        libc::_exit(1);
                    }
                    // Inherited by the init alone (it closes it on its own exec).
                    libc::fcntl(fd, libc::F_SETFD, 0);
                }
                None if libc::getppid() != executor => libc::_exit(1),
                None => {}
            }
            Ok(())
        });
    }
    if own_namespace {
        // The very next child, the init, becomes PID 1 of the new namespace.
        confine::new_pid_namespace().map_err(spawn_error)?;
    }
    // std's spawn forks, then returns once the child's exec succeeded: the two ends of it.
    phases.push(PhaseMark::now(StartPhase::Created));
    let child = command.spawn().map_err(spawn_error)?;
    phases.push(PhaseMark::now(StartPhase::Started));
    // Only the init writes; with this end closed, its exit ends the pipe.
    drop(report_write);
    Ok((child, report_read))
}
