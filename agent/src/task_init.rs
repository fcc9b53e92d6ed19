//! The small init of a command task (`plinth task-init [--status-fd N] -- PROGRAM ARGS…`).
//!
//! A command task gets a PID namespace of its own (so no other task can see its processes
//! or read their `/proc/PID/environ`); this program is that namespace's PID 1, already
//! confined like the task (`crate::confine`). It is a real init because a task's own
//! program makes a poor one: PID 1 gets no signal it has no handler for (a plain
//! `sleep` would ignore the executor's SIGTERM), and orphans are reparented to it to be
//! reaped. So it starts the task's program as its child (in a process group of its own),
//! forwards the signals it receives to that group, reaps every zombie, and when the
//! program ends it reports how on `--status-fd` (a pipe the executor reads: PID 1 cannot
//! die by a signal of its own, so its exit status alone could not tell) and exits; the
//! kernel then kills whatever else is left in the namespace, so a task ends whole.
//!
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The first argument that makes the binary this init (checked before anything else in
/// `main`: as PID 1 of a namespace it must not become the node's init).
pub const SUBCOMMAND: &str = "task-init";

/// Signals passed on to the task; SIGKILL and SIGSTOP reach PID 1 itself (from the
/// executor, outside the namespace), which ends the whole namespace.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// What the init blocks and takes one at a time: the forwarded signals and SIGCHLD.
pub fn blocked_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for signal in FORWARDED {
        signals.add(signal);
    }
    signals.add(Signal::SIGCHLD);
    signals
}

/// How the task's program ended, as the init reports it to the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Exited(i32),
    Signaled(i32),
    /// It never started (no such program, say): the reason.
    Failed(String),
}

impl Report {
    fn encode(&self) -> String {
        match self {
            Report::Exited(code) => format!("exited {code}\n"),
            Report::Signaled(signal) => format!("signaled {signal}\n"),
            Report::Failed(reason) => format!("failed {}\n", reason.replace('\n', " ")),
        }
    }

    fn decode(text: &str) -> Option<Report> {
        let (kind, rest) = text.trim_end_matches('\n').split_once(' ')?;
        match kind {
            "exited" => rest.parse().ok().map(Report::Exited),
            "signaled" => rest.parse().ok().map(Report::Signaled),
            "failed" => Some(Report::Failed(rest.to_string())),
            _ => None,
        }
    }

    /// What the init wrote on the read end of its status pipe, once it has exited
    /// (`None`: it wrote nothing, e.g. it was SIGKILLed).
    pub fn read(pipe: OwnedFd) -> Option<Report> {
        let mut text = String::new();
        let mut file = std::fs::File::from(pipe);
        // Bounded: the init writes one short line.
        Read::by_ref(&mut file).take(4096).read_to_string(&mut text).ok()?;
        Report::decode(&text)
    }
}

/// Runs the task init when this process was started as one, else returns.
pub fn maybe_run() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == SUBCOMMAND) {
        std::process::exit(run(args.collect()));
    }
}

/// The arguments the executor (or a check) starts the init with.
pub fn args(status_fd: Option<RawFd>, argv: &[String]) -> Vec<String> {
    let mut args = vec![SUBCOMMAND.to_string()];
    if let Some(fd) = status_fd {
        args.extend(["--status-fd".to_string(), fd.to_string()]);
    }
    args.push("--".into());
    args.extend(argv.iter().cloned());
    args
}

fn parse(args: Vec<OsString>) -> Result<(Option<RawFd>, Vec<OsString>), String> {
    let mut args = args.into_iter();
    let mut status_fd = None;
    loop {
        match args.next() {
            Some(flag) if flag == "--status-fd" => {
                let fd = args.next().and_then(|v| v.to_str()?.parse::<RawFd>().ok()).filter(|fd| *fd > 2);
                status_fd = Some(fd.ok_or("--status-fd needs a descriptor number above 2")?);
            }
            Some(separator) if separator == "--" => break,
            _ => return Err("usage: plinth task-init [--status-fd N] -- PROGRAM [ARGS...]".into()),
        }
    }
    let argv: Vec<OsString> = args.collect();
    if argv.is_empty() {
        return Err("no program to run".into());
    }
    Ok((status_fd, argv))
}

fn run(args: Vec<OsString>) -> i32 {
    let (status_fd, argv) = match parse(args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("plinth task-init: {message}");
            return 2;
        }
    };
    // SAFETY: the executor passed this descriptor for the init alone; nothing else in
    // this process owns it.
    let mut status = status_fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    if let Some(file) = &status {
        // The task must not inherit it: only the init reports.
        let _ = nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
    let signals = blocked_signals();
    // Blocked signals are queued even for PID 1 (which drops unhandled ones), and taken
    // one at a time below.
    let _ = signals.thread_block();

    let program = &argv[0];
    let mut command = Command::new(program);
    command.args(&argv[1..]);
    // SAFETY: sigprocmask on a set made in the child is async-signal-safe.
    unsafe {
        // std leaves the init's blocked signals blocked in the child: the task must get them.
        command.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    // A group of its own to forward signals to.
    command.process_group(0);
    let spawned = command.spawn();
    let report = match spawned {
        Err(err) => Report::Failed(format!("cannot run {}: {err}", program.to_string_lossy())),
        Ok(child) => {
            // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
            #[allow(clippy::cast_possible_wrap)]
            let main = Pid::from_raw(child.id() as i32);
            // Waited for with waitpid below, together with every orphan.
            drop(child);
            supervise(main, &signals)
        }
    };
    if let Some(file) = status.as_mut() {
        let _ = file.write_all(report.encode().as_bytes());
    }
    end_like(&report)
}

/// Forwards signals to the task's group and reaps children until the task's program ends.
fn supervise(main: Pid, signals: &SigSet) -> Report {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(report) = reap(main) {
                    return report;
                }
            }
            Ok(signal) => {
                if killpg(main, signal).is_err() {
                    let _ = kill(main, signal);
                }
            }
            Err(_) => {}
        }
    }
}

/// Reaps every child that has ended; the program's end, once it is among them.
fn reap(main: Pid) -> Option<Report> {
    let mut ended = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => ended = Some(Report::Exited(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == main => ended = Some(Report::Signaled(signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return ended,
            Ok(_) => {}
        }
    }
}

/// The init's own end: the program's exit code, or 128 + signal (PID 1 cannot die of
/// it: the report says which).
fn end_like(report: &Report) -> i32 {
    match report {
        Report::Exited(code) => *code,
        Report::Failed(_) => 127,
        Report::Signaled(number) => 128 + number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_garbage_is_no_report() {
        for report in [Report::Exited(3), Report::Signaled(15), Report::Failed("cannot run x: not found".into())] {
            assert_eq!(Report::decode(&report.encode()), Some(report));
        }
        assert_eq!(Report::decode("failed two\nlines"), Some(Report::Failed("two\nlines".into())));
        assert_eq!(Report::decode(""), None);
        assert_eq!(Report::decode("exited soon"), None);
    }

    #[test]
    fn arguments_need_a_program_and_a_real_status_fd() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(parse(os(&["--status-fd", "5", "--", "sh", "-c", "x"])), Ok((Some(5), os(&["sh", "-c", "x"]))));
        assert_eq!(parse(os(&["--", "sleep"])), Ok((None, os(&["sleep"]))));
        assert!(parse(os(&["--"])).is_err());
        assert!(parse(os(&["--status-fd", "1", "--", "sh"])).is_err(), "stdout is not a status pipe");
        assert!(parse(os(&["sh"])).is_err());
        assert_eq!(args(Some(4), &["sh".into()]), vec!["task-init", "--status-fd", "4", "--", "sh"]);
    }
}
