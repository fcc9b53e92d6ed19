//! The OCI runtime spec of a Docker task, built the way `docker run` would: the image's
//! config (Entrypoint, Cmd, Env, WorkingDir, User) overridden by the Marathon app (`cmd`,
//! `args`, `env`, `container.docker.parameters`, `container.volumes`), Docker's default
//! mounts, capabilities, masked paths and seccomp deny-list unless `privileged`.
//!
//! [`build_spec`] is pure (everything it needs is in [`SpecInput`]), so the tests pin the
//! exact result; looking the user up in the image's `/etc/passwd` is [`resolve_user`].
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use plinth_protocol::AppDefinition;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ContainerError;

/// Where the task's sandbox appears inside the container (as Mesos mounts it).
pub const SANDBOX_IN_CONTAINER: &str = "/mnt/mesos/sandbox";
/// Docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CFS_PERIOD_US: u64 = 100_000;
const MIN_CFS_QUOTA_US: i64 = 1_000;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability a current kernel knows: what `privileged` grants.
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Syscalls refused with EPERM by the default profile: what Docker's profile leaves out
/// that the default capabilities would not already stop (kernel modules, kexec, bpf,
/// perf, keyrings, clocks, swap, accounting, reboot, handle-based opens, userfaultfd).
/// Mount-type calls are stopped by the missing CAP_SYS_ADMIN; seccomp applies only after
/// the runtime's own pivot_root, so they could be listed, but need not be.
pub const DENIED_SYSCALLS: [&str; 24] = [
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "open_by_handle_at",
    "perf_event_open",
    "quotactl",
    "reboot",
    "request_key",
    "settimeofday",
    "swapoff",
    "swapon",
    "userfaultfd",
];

/// The container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNamespace {
    /// The agent's (HOST networking): no network namespace of its own.
    Host,
    /// A prepared namespace (BRIDGE, NONE) to join.
    Path(PathBuf),
}

/// A numeric identity inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The generated `/etc` files bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Everything [`build_spec`] reads.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub task_id: &'a str,
    pub app: &'a AppDefinition,
    pub image: &'a ImageConfiguration,
    /// The Marathon environment (PORT0.., HOST, MESOS_*), in order.
    pub env: &'a [(String, String)],
    pub rootfs: &'a Path,
    pub sandbox: &'a Path,
    pub net: NetNamespace,
    /// e.g. `/plinth/<task_id>`, the directory the agent's cgroup already has.
    pub cgroups_path: String,
    pub etc: Option<EtcFiles>,
    /// The resolved [`effective_user`].
    pub user: ResolvedUser,
    /// The hard RLIMIT_NOFILE the container gets: the executor's own, as Docker passes
    /// dockerd's on (raising it needs CAP_SYS_RESOURCE, which a runtime may lack).
    pub nofile_hard: u64,
}

/// `container.docker.parameters` Plinth understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerParameters {
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
}

pub const SUPPORTED_PARAMETERS: &str = "env, label, user, workdir, hostname";

/// Parses the app's Docker parameters; an unknown or malformed one fails the task.
pub fn docker_parameters(app: &AppDefinition) -> Result<DockerParameters, ContainerError> {
    let mut out = DockerParameters::default();
    let Some(docker) = app.container.as_ref().and_then(|c| c.docker.as_ref()) else { return Ok(out) };
    for parameter in &docker.parameters {
        let bad = |reason: &str| ContainerError::Parameter { key: parameter.key.clone(), reason: reason.to_string() };
        let value = parameter.value.as_str();
        match parameter.key.trim_start_matches('-') {
            "env" | "e" => {
                let (name, val) = value.split_once('=').ok_or_else(|| bad("expected NAME=VALUE"))?;
                if name.is_empty() {
                    return Err(bad("expected NAME=VALUE"));
                }
                out.env.push((name.to_string(), val.to_string()));
            }
            "label" | "l" => {
                let (name, val) = value.split_once('=').unwrap_or((value, ""));
                if name.is_empty() {
                    return Err(bad("expected KEY=VALUE"));
                }
                out.labels.insert(name.to_string(), val.to_string());
            }
            "user" | "u" => out.user = Some(value.to_string()).filter(|v| !v.is_empty()),
            "workdir" | "w" => {
                if !value.starts_with('/') {
                    return Err(bad("the working directory must be an absolute path"));
                }
                out.workdir = Some(value.to_string());
            }
            "hostname" | "h" => {
                if value.is_empty()
                    || value.len() > 63
                    || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(bad("not a valid hostname"));
                }
                out.hostname = Some(value.to_string());
            }
            _ => {
                return Err(bad(&format!("not supported by Plinth (supported: {SUPPORTED_PARAMETERS})")));
            }
        }
    }
    Ok(out)
}

/// The user the container runs as: the `user` parameter, else the image's `User`.
/// (The app's own `user` names an agent account; Docker tasks ignore it, as Mesos's
/// Docker containerizer does.)
pub fn effective_user(params: &DockerParameters, image: &ImageConfiguration) -> Option<String> {
    params.user.clone().or_else(|| image.config().as_ref().and_then(|c| c.user().clone())).filter(|u| !u.is_empty())
}

/// The container's hostname: the `hostname` parameter, else the task id made into a
/// valid host name (letters, digits, `-`; at most 63 characters).
pub fn hostname(task_id: &str, params: &DockerParameters) -> String {
    if let Some(name) = &params.hostname {
        return name.clone();
    }
    let cleaned: String = task_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let trimmed: String = cleaned.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() {
        "task".to_string()
    } else {
        trimmed
    }
}

/// The process's argv with Docker's (and Mesos's) rules: `cmd` runs through
/// `/bin/sh -c` and replaces the image's Entrypoint and Cmd; `args` replace Cmd and keep
/// the Entrypoint; otherwise Entrypoint + Cmd.
pub fn process_args(app: &AppDefinition, image: &ImageConfiguration) -> Result<Vec<String>, ContainerError> {
    let config = image.config().as_ref();
    let entrypoint = config.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let image_cmd = config.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let args = if let Some(cmd) = app.cmd.as_deref().filter(|c| !c.trim().is_empty()) {
        vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()]
    } else if let Some(args) = app.args.as_ref().filter(|a| !a.is_empty()) {
        entrypoint.into_iter().chain(args.iter().cloned()).collect()
    } else {
        entrypoint.into_iter().chain(image_cmd).collect()
    };
    if args.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(args)
}

/// The environment: image Env, then the Marathon variables, then `env` parameters (a
/// later value wins; the first position is kept). The Marathon `PATH` and `HOME` describe
/// the agent's sandbox, so they only override the image's when the app set them itself;
/// `MESOS_SANDBOX` points at the sandbox's mount inside the container.
pub fn process_env(
    app: &AppDefinition,
    image: &ImageConfiguration,
    marathon: &[(String, String)],
    params: &DockerParameters,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
        match env.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => env.push((name.to_string(), value.to_string())),
        }
    }
    set(&mut env, "HOSTNAME", hostname);
    for entry in image.config().as_ref().and_then(|c| c.env().clone()).unwrap_or_default() {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        set(&mut env, name, value);
    }
    for (name, value) in marathon {
        if (name == "PATH" || name == "HOME") && !app.env.contains_key(name) {
            continue;
        }
        if name == "MESOS_SANDBOX" {
            set(&mut env, name, SANDBOX_IN_CONTAINER);
            continue;
        }
        set(&mut env, name, value);
    }
    for (name, value) in &params.env {
        set(&mut env, name, value);
    }
    if !env.iter().any(|(n, _)| n == "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH);
    }
    if !env.iter().any(|(n, _)| n == "HOME") {
        set(&mut env, "HOME", "/");
    }
    env.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// `container.volumes` as bind mounts. A relative `hostPath` is inside the sandbox, as
/// in Mesos.
pub fn volume_mounts(app: &AppDefinition, sandbox: &Path) -> Result<Vec<Value>, ContainerError> {
    let mut mounts = Vec::new();
    for volume in app.container.as_ref().map(|c| c.volumes.as_slice()).unwrap_or_default() {
        let bad = |reason: &str| ContainerError::Volume {
            container_path: volume.container_path.clone(),
            reason: reason.into(),
        };
        if !volume.container_path.starts_with('/') {
            return Err(bad("containerPath must be an absolute path"));
        }
        if volume.container_path.split('/').any(|part| part == "..") {
            return Err(bad("containerPath must not contain `..`"));
        }
        let host = volume.host_path.as_deref().filter(|h| !h.is_empty()).ok_or_else(|| {
            bad("only host volumes (hostPath) are supported; persistent and external volumes are not")
        })?;
        let host_path = if host.starts_with('/') { PathBuf::from(host) } else { sandbox.join(host) };
        let mode = match volume.mode.to_ascii_uppercase().as_str() {
            "RO" => "ro",
            "RW" => "rw",
            other => return Err(bad(&format!("mode {other} is neither RO nor RW"))),
        };
        mounts.push(json!({
            "destination": volume.container_path,
            "type": "bind",
            "source": host_path,
            "options": ["rbind", "rprivate", mode],
        }));
    }
    Ok(mounts)
}

fn cap_set(caps: &[&str]) -> Value {
    json!(caps)
}

/// Builds the runtime spec. Pure: no file is read.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec, ContainerError> {
    let app = input.app;
    let params = docker_parameters(app)?;
    let privileged = app.container.as_ref().and_then(|c| c.docker.as_ref()).is_some_and(|d| d.privileged);
    let hostname = hostname(input.task_id, &params);
    let args = process_args(app, input.image)?;
    let env = process_env(app, input.image, input.env, &params, &hostname);
    let cwd = params
        .workdir
        .clone()
        .or_else(|| input.image.config().as_ref().and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(ContainerError::Image(format!("the image's WorkingDir {cwd} is not an absolute path")));
    }

    let caps: &[&str] = if privileged { &ALL_CAPABILITIES } else { &DEFAULT_CAPABILITIES };
    let mut process = json!({
        "terminal": false,
        "user": {"uid": input.user.uid, "gid": input.user.gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": cap_set(caps),
            "effective": cap_set(caps),
            "permitted": cap_set(caps),
        },
        // As Docker 25+: a low soft limit for old select() programs, the inherited hard
        // one for servers that raise it.
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": input.nofile_hard.min(1024), "hard": input.nofile_hard}],
        "noNewPrivileges": !privileged,
    });
    if !input.user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(input.user.additional_gids);
    }

    let sys_options: Vec<&str> =
        if privileged { vec!["nosuid", "noexec", "nodev"] } else { vec!["nosuid", "noexec", "nodev", "ro"] };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
        // Not `rbind`: the task's overlay rootfs is mounted inside the sandbox.
        json!({"destination": SANDBOX_IN_CONTAINER, "type": "bind", "source": input.sandbox,
               "options": ["bind", "rprivate", "rw"]}),
    ];
    if let Some(etc) = &input.etc {
        for (destination, source) in
            [("/etc/hosts", &etc.hosts), ("/etc/hostname", &etc.hostname), ("/etc/resolv.conf", &etc.resolv_conf)]
        {
            mounts.push(json!({"destination": destination, "type": "bind", "source": source,
                               "options": ["rbind", "rprivate", "rw"]}));
        }
    }
    mounts.extend(volume_mounts(app, input.sandbox)?);

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "cgroup"}),
    ];
    if let NetNamespace::Path(path) = &input.net {
        namespaces.push(json!({"type": "network", "path": path}));
    }

    let mut resources = json!({});
    let cpus = app.cpus.max(0.0);
    if cpus > 0.0 {
        // why: float-to-int `as` saturates; cpus is validated finite and positive.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (shares, quota) = (
            ((cpus * 1024.0).round() as u64).max(2),
            ((cpus * CFS_PERIOD_US as f64).round() as i64).max(MIN_CFS_QUOTA_US),
        );
        resources["cpu"] = json!({
            "shares": shares,
            "quota": quota,
            "period": CFS_PERIOD_US,
        });
    }
    if app.mem > 0.0 {
        // why: float-to-int `as` saturates; mem is validated finite.
        #[allow(clippy::cast_possible_truncation)]
        let limit = (app.mem * 1024.0 * 1024.0) as i64;
        resources["memory"] = json!({"limit": limit});
    }
    resources["devices"] = if privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        // Docker's device cgroup: nothing but the standard character devices, and mknod
        // of anything (a node that cannot be opened is harmless).
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "access": "m"},
            {"allow": true, "type": "b", "access": "m"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
        ])
    };

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": input.cgroups_path,
        "resources": resources,
    });
    if !privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": seccomp_architectures(),
            "syscalls": [{"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}],
        });
    }
    if privileged {
        process["capabilities"]["inheritable"] = cap_set(caps);
    }

    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    annotations.insert("org.plinth.task-id".into(), input.task_id.to_string());
    annotations.extend(params.labels.clone());

    let spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": input.rootfs, "readonly": false},
        "process": process,
        "hostname": hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    serde_json::from_value(spec).map_err(|e| ContainerError::Spec(e.to_string()))
}

/// The architectures a process could switch to on this machine: a filter for the native
/// one only would let 32-bit syscalls through.
fn seccomp_architectures() -> Vec<&'static str> {
    if cfg!(target_arch = "x86_64") {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        vec!["SCMP_ARCH_NATIVE"]
    }
}

/// Resolves `user[:group]` (names or numbers) against the image's `/etc/passwd` and
/// `/etc/group`, as Docker does: a named user brings its primary group and the groups
/// that list it. `None` is root.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ResolvedUser, ContainerError> {
    let Some(spec) = user else { return Ok(ResolvedUser::default()) };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // The image's files are untrusted data: read, never followed outside the rootfs
    // (a symlinked /etc/passwd simply fails to resolve names).
    let passwd = read_image_file(rootfs, "etc/passwd");
    let group = read_image_file(rootfs, "etc/group");
    let bad = |reason: String| ContainerError::User { user: spec.to_string(), reason };

    let (uid, primary_gid, name) = match user_part.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd_entries(&passwd).find(|e| e.1 == uid);
            (uid, entry.as_ref().map(|e| e.2), entry.map(|e| e.0))
        }
        Err(_) => {
            let entry = passwd_entries(&passwd)
                .find(|e| e.0 == user_part)
                .ok_or_else(|| bad(format!("no user {user_part} in the image's /etc/passwd")))?;
            (entry.1, Some(entry.2), Some(entry.0))
        }
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(&group)
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| bad(format!("no group {g} in the image's /etc/group")))?,
        },
        None => primary_gid.unwrap_or(0),
    };
    // Supplementary groups only come with a named user and no explicit group.
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (&name, group_part) {
        for (_, gid_entry, members) in group_entries(&group) {
            if gid_entry != gid && members.iter().any(|m| m == name) {
                additional_gids.push(gid_entry);
            }
        }
    }
    Ok(ResolvedUser { uid, gid, additional_gids })
}

fn read_image_file(rootfs: &Path, relative: &str) -> String {
    let path = rootfs.join(relative);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => std::fs::read_to_string(&path).unwrap_or_default(),
        _ => String::new(),
    }
}

/// (name, uid, gid) of each `/etc/passwd` line.
fn passwd_entries(text: &str) -> impl Iterator<Item = (String, u32, u32)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 {
            return None;
        }
        Some((fields[0].to_string(), fields[2].parse().ok()?, fields[3].parse().ok()?))
    })
}

/// (name, gid, members) of each `/etc/group` line.
fn group_entries(text: &str) -> impl Iterator<Item = (String, u32, Vec<String>)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 {
            return None;
        }
        let members = fields.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(String::from).collect());
        Some((fields[0].to_string(), fields[2].parse().ok()?, members.unwrap_or_default()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::task_spec;

    fn image(config: Value) -> ImageConfiguration {
        serde_json::from_value(json!({"architecture": "amd64", "os": "linux", "config": config,
                                      "rootfs": {"type": "layers", "diff_ids": []}}))
        .expect("image config")
    }

    fn busybox_image() -> ImageConfiguration {
        image(json!({"Entrypoint": ["/bin/entry"], "Cmd": ["serve", "--port", "80"],
                     "Env": ["PATH=/image/bin:/bin", "IMAGE_ONLY=1", "GREETING=image"], "WorkingDir": "/app"}))
    }

    fn spec_json(app: Value, image: &ImageConfiguration, net: NetNamespace) -> Result<Value, ContainerError> {
        let task = task_spec("web.abc", app, vec![31000]);
        let env = vec![
            ("PATH".to_string(), "/host/bin".to_string()),
            ("HOME".to_string(), "/sandbox".to_string()),
            ("PORT0".to_string(), "31000".to_string()),
            ("GREETING".to_string(), "marathon".to_string()),
            ("MESOS_SANDBOX".to_string(), "/sandbox".to_string()),
        ];
        let input = SpecInput {
            task_id: "web.abc",
            app: &task.app,
            image,
            env: &env,
            rootfs: Path::new("/rootfs"),
            sandbox: Path::new("/sandbox"),
            net,
            cgroups_path: "/plinth/web.abc".into(),
            etc: Some(EtcFiles {
                hosts: "/sandbox/etc/hosts".into(),
                hostname: "/sandbox/etc/hostname".into(),
                resolv_conf: "/sandbox/etc/resolv.conf".into(),
            }),
            user: ResolvedUser::default(),
            nofile_hard: 4096,
        };
        build_spec(&input).map(|s| serde_json::to_value(s).expect("serialise"))
    }

    fn strings(value: &Value) -> Vec<String> {
        value.as_array().expect("array").iter().map(|v| v.as_str().expect("string").to_string()).collect()
    }

    #[test]
    fn image_defaults_give_entrypoint_cmd_env_and_workdir() {
        let spec = spec_json(json!({"id": "/web"}), &busybox_image(), NetNamespace::Host).expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/entry", "serve", "--port", "80"]);
        assert_eq!(spec["process"]["cwd"], "/app");
        assert_eq!(
            strings(&spec["process"]["env"]),
            [
                "HOSTNAME=web-abc",
                "PATH=/image/bin:/bin",
                "IMAGE_ONLY=1",
                "GREETING=marathon",
                "PORT0=31000",
                "MESOS_SANDBOX=/mnt/mesos/sandbox",
                "HOME=/",
            ]
        );
        assert_eq!(spec["hostname"], "web-abc");
        assert_eq!(spec["root"]["path"], "/rootfs");
        assert_eq!(spec["linux"]["cgroupsPath"], "/plinth/web.abc");
        assert_eq!(spec["process"]["user"]["uid"], 0);
    }

    #[test]
    fn cmd_runs_through_the_shell_and_replaces_entrypoint_and_cmd() {
        let spec = spec_json(json!({"id": "/web", "cmd": "echo hi; sleep 1"}), &busybox_image(), NetNamespace::Host)
            .expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/sh", "-c", "echo hi; sleep 1"]);
    }

    #[test]
    fn args_replace_cmd_and_keep_entrypoint() {
        let spec =
            spec_json(json!({"id": "/web", "args": ["x", "y"]}), &busybox_image(), NetNamespace::Host).expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/entry", "x", "y"]);
        let no_entry = image(json!({"Cmd": ["sh"]}));
        let spec =
            spec_json(json!({"id": "/web", "args": ["/bin/echo", "y"]}), &no_entry, NetNamespace::Host).expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/echo", "y"]);
    }

    #[test]
    fn no_command_at_all_is_an_error() {
        let err = spec_json(json!({"id": "/web"}), &image(json!({})), NetNamespace::Host).expect_err("no command");
        assert!(matches!(err, ContainerError::NoCommand), "{err}");
    }

    #[test]
    fn app_env_path_and_parameters_win() {
        let spec = spec_json(
            json!({"id": "/web", "env": {"PATH": "/app/bin"},
                   "container": {"type": "DOCKER", "docker": {"image": "x", "parameters": [
                       {"key": "env", "value": "GREETING=param"}, {"key": "workdir", "value": "/w"},
                       {"key": "hostname", "value": "my-host"}, {"key": "label", "value": "team=a"}]}}}),
            &busybox_image(),
            NetNamespace::Host,
        )
        .expect("spec");
        let env = strings(&spec["process"]["env"]);
        assert!(env.contains(&"GREETING=param".to_string()), "{env:?}");
        // The app set PATH itself, so the Marathon PATH (from app.env) wins over the image's.
        assert!(env.contains(&"PATH=/host/bin".to_string()), "{env:?}");
        assert!(env.contains(&"HOSTNAME=my-host".to_string()), "{env:?}");
        assert_eq!(spec["process"]["cwd"], "/w");
        assert_eq!(spec["hostname"], "my-host");
        assert_eq!(spec["annotations"]["team"], "a");
    }

    #[test]
    fn unknown_or_bad_parameters_are_refused_by_name() {
        for (key, value, expected) in [
            ("cap-add", "SYS_ADMIN", "cap-add"),
            ("env", "NOEQUALS", "NAME=VALUE"),
            ("workdir", "relative", "absolute"),
        ] {
            let err = spec_json(
                json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x",
                       "parameters": [{"key": key, "value": value}]}}}),
                &busybox_image(),
                NetNamespace::Host,
            )
            .expect_err("refused");
            let message = err.to_string();
            assert!(message.contains(key) && message.contains(expected), "{message}");
        }
    }

    #[test]
    fn defaults_are_docker_safe() {
        let spec = spec_json(json!({"id": "/web", "cpus": 0.5, "mem": 64}), &busybox_image(), NetNamespace::Host)
            .expect("spec");
        let caps = &spec["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(strings(&caps[set]).len(), 14, "{set}");
        }
        assert!(caps.get("ambient").is_none_or(Value::is_null));
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(strings(&spec["linux"]["maskedPaths"]), MASKED_PATHS);
        assert_eq!(strings(&spec["linux"]["readonlyPaths"]), READONLY_PATHS);
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let denied = strings(&spec["linux"]["seccomp"]["syscalls"][0]["names"]);
        assert!(denied.contains(&"kexec_load".to_string()) && denied.contains(&"bpf".to_string()));
        assert_eq!(spec["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        let namespaces: Vec<&str> =
            spec["linux"]["namespaces"].as_array().expect("ns").iter().filter_map(|n| n["type"].as_str()).collect();
        assert_eq!(namespaces, ["pid", "mount", "ipc", "uts", "cgroup"]);
        let mounts: Vec<&str> =
            spec["mounts"].as_array().expect("mounts").iter().filter_map(|m| m["destination"].as_str()).collect();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                SANDBOX_IN_CONTAINER,
                "/etc/hosts",
                "/etc/hostname",
                "/etc/resolv.conf"
            ]
        );
        let sys = &spec["mounts"][3];
        assert!(strings(&sys["options"]).contains(&"ro".to_string()));
    }

    #[test]
    fn privileged_opts_out() {
        let spec = spec_json(
            json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x", "privileged": true}}}),
            &busybox_image(),
            NetNamespace::Path("/run/plinth/netns/web.abc".into()),
        )
        .expect("spec");
        assert_eq!(strings(&spec["process"]["capabilities"]["bounding"]).len(), ALL_CAPABILITIES.len());
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert!(spec["linux"].get("seccomp").is_none_or(Value::is_null));
        assert!(spec["linux"].get("maskedPaths").is_none_or(Value::is_null));
        assert!(spec["linux"].get("readonlyPaths").is_none_or(Value::is_null));
        assert!(!strings(&spec["mounts"][3]["options"]).contains(&"ro".to_string()));
        let network = spec["linux"]["namespaces"].as_array().expect("ns").last().expect("net").clone();
        assert_eq!(network, json!({"type": "network", "path": "/run/plinth/netns/web.abc"}));
    }

    #[test]
    fn volumes_become_bind_mounts() {
        let spec = spec_json(
            json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x"}, "volumes": [
                {"containerPath": "/data", "hostPath": "/srv/data", "mode": "RO"},
                {"containerPath": "/scratch", "hostPath": "scratch", "mode": "RW"}]}}),
            &busybox_image(),
            NetNamespace::Host,
        )
        .expect("spec");
        let mounts = spec["mounts"].as_array().expect("mounts");
        let data = mounts.iter().find(|m| m["destination"] == "/data").expect("/data");
        assert_eq!(data["source"], "/srv/data");
        assert_eq!(strings(&data["options"]), ["rbind", "rprivate", "ro"]);
        let scratch = mounts.iter().find(|m| m["destination"] == "/scratch").expect("/scratch");
        assert_eq!(scratch["source"], "/sandbox/scratch");
        assert_eq!(strings(&scratch["options"]), ["rbind", "rprivate", "rw"]);

        for (volume, expected) in [
            (json!({"containerPath": "data", "hostPath": "/x", "mode": "RW"}), "absolute"),
            (json!({"containerPath": "/data", "mode": "RW"}), "hostPath"),
            (json!({"containerPath": "/data", "hostPath": "/x", "mode": "XX"}), "neither"),
        ] {
            let err = spec_json(
                json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x"}, "volumes": [volume]}}),
                &busybox_image(),
                NetNamespace::Host,
            )
            .expect_err("refused");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn hostnames_are_valid() {
        let params = DockerParameters::default();
        assert_eq!(hostname("my_app.1234-abcd", &params), "my-app-1234-abcd");
        assert_eq!(hostname(&"a".repeat(100), &params).len(), 63);
        assert_eq!(hostname("..", &params), "task");
    }

    #[test]
    fn users_resolve_from_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nweb:x:1000:\nstaff:x:50:web,other\n").expect("group");
        let root = dir.path();
        assert_eq!(resolve_user(root, None).expect("root"), ResolvedUser::default());
        assert_eq!(
            resolve_user(root, Some("web")).expect("web"),
            ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![50] }
        );
        assert_eq!(
            resolve_user(root, Some("web:staff")).expect("web:staff"),
            ResolvedUser { uid: 1000, gid: 50, additional_gids: vec![] }
        );
        assert_eq!(
            resolve_user(root, Some("4242:7")).expect("numeric"),
            ResolvedUser { uid: 4242, gid: 7, additional_gids: vec![] }
        );
        assert!(resolve_user(root, Some("nobody-here")).expect_err("unknown").to_string().contains("nobody-here"));
    }
}
