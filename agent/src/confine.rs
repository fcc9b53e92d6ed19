//! What a command task may see and do, set up in the task's own process between fork
//! and exec (the executor itself keeps the node's view):
//!
//! - **a PID namespace** of its own (made by the executor, [`new_pid_namespace`]) whose
//!   PID 1 is the task's small init (`crate::task_init`), with its own `/proc` mounted
//!   in the mount namespace: other tasks' processes, and their `/proc/PID/environ`, are
//!   out of sight;
//! - **a mount namespace** of its own (private propagation: nothing leaks either way)
//!   where an empty, read-only tmpfs covers every hidden directory — the agent's work dir
//!   (other tasks' sandboxes and their `task.json` with env secrets, the checkpoint, the
//!   image store, the fetch cache), the master's data dir on a standalone node, whatever
//!   `--hide-from-tasks` names — and `/dev/null` covers every hidden file (a token
//!   file). The task's own sandbox is bound back at its path, so `MESOS_SANDBOX`,
//!   `HOME` and its working directory stay valid;
//! - **its user** (resolved by the executor; root only when the operator allows it);
//! - **capabilities**: a root task keeps Docker's default set (bounding, effective and
//!   permitted; nothing inheritable or ambient), any other task none at all;
//! - **`no_new_privs`**: setuid binaries and file capabilities grant nothing.
//!
//! A COMMAND health check of such a task enters the task's namespaces instead
//! ([`Confinement::entering`]), so it sees what the task sees; its command runs as the
//! child of a relay that stays outside (see `into_entered_pid_namespace`).
//!
//! [`Confinement::prepare`] does everything that allocates (paths as C strings, the
//! capability mask) before the fork; [`Confinement::apply`] then makes only
//! async-signal-safe system calls on that data.
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::container::spec::DEFAULT_CAPABILITIES;

/// A uid/gid to switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Why a root task does not start.
pub const ROOT_REFUSED: &str =
    "root tasks are not allowed on this agent (start it with --allow-root-tasks to allow them)";

/// Who a task runs as: the identity to switch to (`None`: the calling process's own)
/// and whether the task ends up root. Root (uid 0, however named, or no user on a root
/// agent) only with `allow_root`. The error is the reason, for the caller's message.
pub fn resolve_user(user: Option<&str>, allow_root: bool) -> Result<(Option<Identity>, bool), String> {
    let euid = nix::unistd::geteuid();
    let refuse_root = |is_root: bool| if is_root && !allow_root { Err(ROOT_REFUSED.to_string()) } else { Ok(()) };
    let Some(name) = user.filter(|u| !u.is_empty()) else {
        refuse_root(euid.is_root())?;
        return Ok((None, euid.is_root()));
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("cannot look the user up: {e}"))?
        .ok_or_else(|| "no such user on this agent".to_string())?;
    refuse_root(user.uid.is_root())?;
    if user.uid == euid {
        return Ok((None, euid.is_root()));
    }
    if !euid.is_root() {
        return Err("the agent is not root, so it cannot switch users".into());
    }
    Ok((Some(Identity { uid: user.uid.as_raw(), gid: user.gid.as_raw() }), false))
}

/// Options of the tmpfs over a hidden directory: it only has to hold the directories
/// leading to the task's own sandbox.
const HIDING_TMPFS_OPTIONS: &std::ffi::CStr = c"mode=0755,size=64k,nr_inodes=256";

/// Everything a task's confinement needs, prepared before the fork.
#[derive(Debug)]
pub struct Confinement {
    sandbox: CString,
    /// Only a root executor can make namespaces and mounts or drop bounding capabilities.
    privileged: bool,
    hidden_dirs: Vec<CString>,
    hidden_files: Vec<CString>,
    /// The directories made in the tmpfs that covers the sandbox, outermost first and
    /// the sandbox last; empty when no hidden directory holds the sandbox.
    sandbox_path: Vec<CString>,
    switch_to: Option<Identity>,
    /// The capabilities the task keeps (a bit per capability number).
    keep_caps: u64,
    /// Mount a `/proc` of the process's own PID namespace (it is that namespace's PID 1).
    own_proc: bool,
    /// A pidfd of a task's init whose mount and PID namespaces to enter instead of
    /// making a mount namespace (the caller keeps it open until the fork is done).
    enter: Option<RawFd>,
}

/// Puts the calling process's future children, the next one as its PID 1, into a new
/// PID namespace (the calling process itself stays where it is). Root only.
pub fn new_pid_namespace() -> io::Result<()> {
    // SAFETY: unshare with a constant flag; it changes only where children are made.
    check(unsafe { libc::unshare(libc::CLONE_NEWPID) })
}

/// Whether this process can confine tasks in namespaces (a root agent or executor).
pub fn can_make_namespaces() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Docker's default capability set as a mask (`CapEff` of a root task).
pub fn docker_default_caps() -> u64 {
    DEFAULT_CAPABILITIES
        .iter()
        .filter_map(|name| name.parse::<caps::Capability>().ok())
        .fold(0, |mask, cap| mask | cap.bitmask())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} holds a NUL byte", path.display())))
}

/// What to cover: existing absolute paths only (canonical, so that "holds the sandbox" compares
/// like with like), none holding another (the outer one hides both), never `/`, never
/// the sandbox or anything in it.
fn covered_paths(hidden: &[PathBuf], sandbox: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = hidden
        .iter()
        .filter(|p| p.is_absolute())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| p.parent().is_some() && !p.starts_with(sandbox))
        .collect();
    paths.sort_by_key(|p| p.components().count());
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in paths {
        if !kept.iter().any(|k| path.starts_with(k)) {
            kept.push(path);
        }
    }
    kept
}

impl Confinement {
    /// `switch_to`: the task's user when it is not the executor's own; `runs_as_root`:
    /// whether the task ends up as uid 0 (it keeps Docker's capabilities then).
    pub fn prepare(
        sandbox: &Path,
        hidden: &[PathBuf],
        switch_to: Option<Identity>,
        runs_as_root: bool,
    ) -> io::Result<Confinement> {
        let sandbox = std::fs::canonicalize(sandbox)?;
        let covered = covered_paths(hidden, &sandbox);
        let (mut hidden_dirs, mut hidden_files) = (Vec::new(), Vec::new());
        let mut sandbox_path = Vec::new();
        for path in &covered {
            if path.is_dir() {
                hidden_dirs.push(c_path(path)?);
                if sandbox.starts_with(path) {
                    let mut inner: Vec<&Path> = sandbox.ancestors().take_while(|a| a != path).collect();
                    inner.reverse();
                    sandbox_path = inner.into_iter().map(c_path).collect::<io::Result<_>>()?;
                }
            } else {
                hidden_files.push(c_path(path)?);
            }
        }
        Ok(Confinement {
            sandbox: c_path(&sandbox)?,
            privileged: nix::unistd::geteuid().is_root(),
            hidden_dirs,
            hidden_files,
            sandbox_path,
            switch_to,
            keep_caps: if runs_as_root { docker_default_caps() } else { 0 },
            own_proc: false,
            enter: None,
        })
    }

    /// For the PID 1 of a new PID namespace: a `/proc` that shows only that namespace.
    pub fn with_own_proc(mut self) -> Confinement {
        self.own_proc = true;
        self
    }

    /// Enters the mount and PID namespaces of the process `pidfd` refers to (a task's
    /// init) instead of making a mount namespace: the confined process sees the task's
    /// files, and [`Confinement::apply`] returns in a child of it, in the task's PID
    /// namespace.
    pub fn entering(mut self, pidfd: RawFd) -> Confinement {
        self.enter = Some(pidfd);
        self
    }

    /// Confines the calling process: meant for the forked child, right before exec.
    /// Only async-signal-safe calls on data prepared by [`Confinement::prepare`]: it
    /// allocates nothing and takes no locks.
    pub fn apply(&self) -> io::Result<()> {
        if self.privileged {
            match self.enter {
                Some(pidfd) => self.enter_task(pidfd)?,
                None => self.hide_node_state()?,
            }
            self.drop_bounding_caps();
        }
        // SAFETY: plain system calls with constant arguments or pointers into `self`,
        // which outlives them.
        unsafe {
            // Nothing inherited from the executor may survive into the task.
            libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
            // Groups first, then gid, then uid: after setuid the others are not allowed.
            if let Some(Identity { uid, gid }) = self.switch_to {
                check(libc::setgroups(1, &gid))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
        }
        self.set_caps()?;
        // SAFETY: prctl with constant arguments.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        if self.enter.is_some() && self.privileged {
            into_entered_pid_namespace()?;
        }
        Ok(())
    }

    fn enter_task(&self, pidfd: RawFd) -> io::Result<()> {
        // SAFETY: setns on a descriptor the caller keeps open, and chdir to a
        // NUL-terminated string owned by `self`.
        unsafe {
            // Both at once (a pidfd allows it): entering a mount namespace resets the
            // working directory, hence the chdir after.
            check(libc::setns(pidfd, libc::CLONE_NEWNS | libc::CLONE_NEWPID))?;
            check(libc::chdir(self.sandbox.as_ptr()))
        }
    }

    fn hide_node_state(&self) -> io::Result<()> {
        let private = libc::MS_REC | libc::MS_PRIVATE;
        let hidden = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: system calls on NUL-terminated strings owned by `self` or constants;
        // none keeps a pointer past the call.
        unsafe {
            // "." is the sandbox below, in the new namespace too (unshare moves the
            // working directory along).
            check(libc::chdir(self.sandbox.as_ptr()))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), private, std::ptr::null()))?;
            for dir in &self.hidden_dirs {
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    hidden,
                    HIDING_TMPFS_OPTIONS.as_ptr().cast(),
                ))?;
            }
            for file in &self.hidden_files {
                check(libc::mount(
                    c"/dev/null".as_ptr(),
                    file.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            if !self.sandbox_path.is_empty() {
                for dir in &self.sandbox_path {
                    if libc::mkdir(dir.as_ptr(), 0o755) != 0 && *libc::__errno_location() != libc::EEXIST {
                        return Err(io::Error::last_os_error());
                    }
                }
                let bind = libc::MS_BIND | libc::MS_REC;
                check(libc::mount(c".".as_ptr(), self.sandbox.as_ptr(), std::ptr::null(), bind, std::ptr::null()))?;
                check(libc::chdir(self.sandbox.as_ptr()))?;
            }
            if self.own_proc {
                // The namespace's own processes only; the kernel fills it in for the
                // PID namespace of the process that mounts it (this one, its PID 1).
                check(libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), hidden, std::ptr::null()))?;
            }
            // Read-only once the way to the sandbox is made: even a root task cannot
            // stage files where the node's state was.
            for dir in &self.hidden_dirs {
                let flags = libc::MS_REMOUNT | libc::MS_RDONLY | hidden;
                check(libc::mount(std::ptr::null(), dir.as_ptr(), std::ptr::null(), flags, std::ptr::null()))?;
            }
        }
        Ok(())
    }

    /// Drops from the bounding set every capability the task does not keep: what an
    /// exec as root (or of a file with capabilities) can ever give back.
    fn drop_bounding_caps(&self) {
        for cap in 0..64u32 {
            if self.keep_caps & (1 << cap) == 0 {
                // SAFETY: prctl with plain integer arguments; unknown numbers fail with
                // EINVAL, which is fine (the kernel has no such capability).
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
            }
        }
    }

    /// Effective and permitted: the kept set; inheritable: nothing.
    fn set_caps(&self) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        // why: the mask is split into its two 32-bit halves on purpose.
        #[allow(clippy::cast_possible_truncation)]
        let (low, high) = (self.keep_caps as u32, (self.keep_caps >> 32) as u32);
        let data = [
            Data { effective: low, permitted: low, inheritable: 0 },
            Data { effective: high, permitted: high, inheritable: 0 },
        ];
        // SAFETY: capset reads a version-3 header and two data structs, both on this
        // stack frame for the duration of the call.
        let result = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
        nix::errno::Errno::result(result).map(drop).map_err(io::Error::from)
    }
}

/// After `setns` into a PID namespace only children are in it: forks, and returns in
/// the child (which the caller then execs) while this process stays behind as its
/// relay: it waits for the child and ends as the child did (the same exit code, or the
/// same signal), so whoever waits for it sees the command's end. Both are in one process
/// group, so a kill of the group ends both. Async-signal-safe.
fn into_entered_pid_namespace() -> io::Result<()> {
    // SAFETY: fork, prctl, close_range, waitpid, signal, kill and _exit are
    // async-signal-safe; nothing here allocates or takes a lock.
    unsafe {
        let child = libc::fork();
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child == 0 {
            // Gone with the relay: a check killed at its timeout ends whole.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            return Ok(());
        }
        // The relay holds no descriptor: in particular not the one through which the
        // spawning process learns that the child exec'd (its end of file).
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        let mut status = 0;
        while libc::waitpid(child, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// A system call's `-1` as the error errno names (reading errno allocates nothing).
fn check(result: libc::c_int) -> io::Result<()> {
    nix::errno::Errno::result(result).map(drop).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_needs_the_operators_permission() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        assert_eq!(resolve_user(Some("root"), false), Err(ROOT_REFUSED.to_string()));
        assert_eq!(resolve_user(None, false), Err(ROOT_REFUSED.to_string()), "no user on a root agent is root");
        assert_eq!(resolve_user(Some("root"), true), Ok((None, true)));
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let expected = Identity { uid: nobody.uid.as_raw(), gid: nobody.gid.as_raw() };
        assert_eq!(resolve_user(Some("nobody"), false), Ok((Some(expected), false)));
        assert_eq!(resolve_user(Some("no-such-user-here"), true), Err("no such user on this agent".into()));
    }

    #[test]
    fn dockers_default_set_is_the_well_known_mask() {
        // CapEff of a root process in a default Docker container.
        assert_eq!(docker_default_caps(), 0x0000_0000_a804_25fb);
    }

    #[test]
    fn covered_paths_keep_the_outermost_and_never_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let work = root.join("agent");
        let sandbox = work.join("tasks/t1");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::create_dir_all(work.join("images")).unwrap();
        std::fs::create_dir_all(root.join("master")).unwrap();
        std::fs::write(root.join("token"), "secret").unwrap();
        let hidden = [
            work.join("images"),
            work.clone(),
            root.join("master"),
            root.join("missing"),
            root.join("token"),
            sandbox.join("inner"),
            sandbox.clone(),
            PathBuf::from("/"),
        ];
        assert_eq!(covered_paths(&hidden, &sandbox), vec![work.clone(), root.join("master"), root.join("token")]);

        let confinement = Confinement::prepare(&sandbox, &hidden, None, false).unwrap();
        let strings = |v: &[CString]| v.iter().map(|c| c.to_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(strings(&confinement.hidden_files), vec![root.join("token").display().to_string()]);
        assert_eq!(
            strings(&confinement.sandbox_path),
            vec![work.join("tasks").display().to_string(), sandbox.display().to_string()],
            "the way back to the sandbox, made inside the tmpfs over the work dir"
        );
        assert_eq!(confinement.keep_caps, 0, "a task that is not root keeps no capability");
        assert_eq!(Confinement::prepare(&sandbox, &hidden, None, true).unwrap().keep_caps, docker_default_caps());
    }
}
