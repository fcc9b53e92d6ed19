//! PID 1's life: boot the plan, start and supervise the role, reap, shut down.
//!
//! Signals are blocked in every thread and taken synchronously with `sigtimedwait` in the
//! main loop, so there are no async signal handlers. The node API asks for shutdown by
//! sending PID 1 the same signals the kernel would (SIGUSR2 power off, SIGINT reboot).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use plinth_protocol::error_chain;
use serde_json::{json, Value};
use tracing::{error, info, warn};

use crate::api::{self, NodeView, PowerRequest, SharedStatus};
use crate::api_tls::NodeTls;
use crate::boot::{severity, Boot, Severity};
use crate::cmdline::KernelCmdline;
use crate::plan::{self, role_args, Phase, RoleCommand, RoleLaunch, MASTER_PORT};
use crate::system::{RealSystem, System};

/// True when this process should act as the init: PID 1, or started as a bare `/init`.
/// `/init` with arguments is the same binary re-executed for something else (the agent
/// starts `plinth executor ...` through its own path, which is `/init` on a node).
pub fn is_init() -> bool {
    if std::process::id() == 1 {
        return true;
    }
    let mut args = std::env::args_os();
    let named_init = args.next().map(PathBuf::from).and_then(|p| p.file_name().map(|n| n == "init")).unwrap_or(false);
    named_init && args.next().is_none()
}

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR2, Signal::SIGHUP, Signal::SIGPWR] {
        set.add(s);
    }
    set
}

/// Waits up to `timeout` for one of the handled signals.
fn wait_signal(timeout: Duration) -> Option<Signal> {
    let set = handled_signals();
    // why: subsec_nanos is below 10^9, so it fits in i32 (c_long is i32 on 32-bit targets).
    #[allow(clippy::cast_possible_wrap)]
    let nanos = timeout.subsec_nanos() as i32;
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(nanos),
    };
    // SAFETY: set and ts are valid for the call; a null siginfo pointer is allowed.
    let rc = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if rc < 0 {
        return None;
    }
    Signal::try_from(rc).ok()
}

/// Reaps every exited child; returns the pids and how they ended.
fn reap_all() -> Vec<(Pid, String)> {
    let mut out = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, format!("exited with status {code}"))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, format!("killed by {sig}"))),
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => continue,
        }
    }
}

/// Delay before restarting the role after `failures` quick failures in a row.
pub fn restart_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs((1u64 << (failures - 1).min(5)).min(30))
}

/// A role that ran this long before dying counts as healthy; its failure count resets.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The boot entry point when running as init. Never returns.
pub fn run() -> ! {
    // Block before any thread exists so every thread inherits the mask.
    if let Err(e) = handled_signals().thread_block() {
        eprintln!("plinth-init: cannot block signals: {e}");
    }
    crate::log::install();
    let mut sys = RealSystem;
    let proc_mount = &plan::early_mounts()[0];
    if let Err(e) =
        sys.mount(proc_mount.source, proc_mount.target, proc_mount.fstype, proc_mount.flags, proc_mount.data)
    {
        warn!(error = %error_chain(&e), "mounting /proc");
    }
    let cmdline = KernelCmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    info!(version = env!("CARGO_PKG_VERSION"), "plinth init starting");
    let phases = match plan::plan(&cmdline) {
        Ok(p) => p,
        Err(e) => fatal(&cmdline, &e),
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut boot = Boot::new(sys, Path::new("/lib/modules").join(release.trim()));
    let status: SharedStatus = Arc::new(Mutex::new(json!({ "phase": "booting" })));
    let started = Instant::now();
    let mut launch: Option<RoleLaunch> = None;
    let mut etcd: Option<plan::EtcdLaunch> = None;
    let mut timings = Vec::new();

    for phase in &phases {
        let phase_started = Instant::now();
        let result = match phase {
            Phase::Mount(m) if m.target == "/proc" => Ok(()),
            Phase::LeaveInitramfs => {
                if crate::switchroot::on_initramfs() {
                    info!("moving the initramfs into a tmpfs root");
                    crate::switchroot::switch_to_tmpfs()
                } else {
                    Ok(())
                }
            }
            Phase::TrapCtrlAltDel => nix::sys::reboot::set_cad_enabled(false)
                .map_err(|e| crate::error::InitError::Write { path: "reboot(CAD_OFF)".into(), source: e.into() }),
            Phase::NodeApi { port } => api::serve(
                *port,
                Arc::new(LiveNode { status: status.clone(), token: PowerToken::of(&cmdline, &phases) }),
                NodeTls::of_agent(agent_work_dir_of(&phases).as_deref().map(Path::new)),
            ),
            Phase::LoadModulesInBackground(names) => {
                load_in_background(boot.module_waves(names));
                Ok(())
            }
            Phase::StartEtcd(e) => {
                etcd = Some(e.clone());
                Ok(())
            }
            Phase::StartRole(l) => {
                launch = Some(l.clone());
                Ok(())
            }
            other => boot.run_phase(other),
        };
        if let Err(e) = result {
            match severity(phase) {
                Severity::Fatal => fatal(&cmdline, &e),
                Severity::Degraded => {
                    warn!(error = %error_chain(&e), phase = %phase.name(), "boot step failed; continuing without it")
                }
            }
        }
        timings.push(json!({ "phase": phase.name(), "ms": u64::try_from(phase_started.elapsed().as_millis()).unwrap_or(u64::MAX) }));
    }
    let launch = launch.expect("every plan ends with StartRole");
    let facts = boot.facts(launch.master_url.as_deref());
    let command = role_args(&launch, &facts);
    let ip = facts.advertise_ip.map(|i| i.to_string()).unwrap_or_else(|| "127.0.0.1".into());
    let master_url = match launch.role {
        plan::Role::Agent => launch.master_url.clone().unwrap_or_default(),
        _ => format!("http://{ip}:{MASTER_PORT}"),
    };
    let doc = json!({
        "phase": "running",
        "role": launch.role.as_str(),
        "hostname": facts.hostname,
        "interfaces": boot.state.ifaces.iter().map(|i| json!({
            "name": i.name, "via": i.via,
            "address": i.address.map(|(a, p)| format!("{a}/{p}")),
            "gateway": i.gateway.map(|g| g.to_string()),
        })).collect::<Vec<_>>(),
        "master": master_url,
        "resources": facts.resources(),
        "node_api": format!("http://{ip}:{}/node/v1/", plan::NODE_API_PORT),
        "data_dir": format!("{} on {}", plan::DATA_DIR, boot.state.data_dir_source),
        "modules_loaded": boot.state.modules_loaded,
        "boot_seconds": started.elapsed().as_secs_f64(),
        "phases": timings,
        // Seconds since the kernel started, when the role was about to start.
        "uptime_at_role_start": std::fs::read_to_string("/proc/uptime").ok().and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok()),
    });
    *status.lock().unwrap_or_else(|p| p.into_inner()) = doc.clone();
    let mut services = Vec::new();
    if let Some(etcd) = &etcd {
        match plan::etcd_args(etcd, &facts) {
            Ok(cmd) => services.push(Service::etcd(cmd)),
            Err(e) => fatal(&cmdline, &e),
        }
    }
    services.push(Service::role(&launch, command));
    supervise(services, &doc)
}

/// Prints the status block operators look for on the console.
pub fn status_block(doc: &Value) -> String {
    let s = |k: &str| {
        doc.get(k).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).unwrap_or_default()
    };
    let addrs: Vec<String> = doc
        .get("interfaces")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|i| {
                    format!(
                        "{} {} ({})",
                        i["name"].as_str().unwrap_or("?"),
                        i["address"].as_str().unwrap_or("no address"),
                        i["via"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::from("==================== PLINTH NODE ====================\n");
    out.push_str(&format!("  role:       {}\n", s("role")));
    out.push_str(&format!("  hostname:   {}\n", s("hostname")));
    out.push_str(&format!("  addresses:  {}\n", if addrs.is_empty() { "none".to_string() } else { addrs.join(", ") }));
    out.push_str(&format!("  master:     {}\n", s("master")));
    out.push_str(&format!("  resources:  {}\n", s("resources")));
    out.push_str(&format!("  node API:   {}\n", s("node_api")));
    out.push_str(&format!("  data:       {}\n", s("data_dir")));
    out.push_str("=====================================================");
    out
}

struct LiveNode {
    status: SharedStatus,
    token: PowerToken,
}

/// Loads `waves` of module files on a thread of its own; the marker file
/// (`CONTAINER_MODULES_LOADING`) exists from before this returns until the last wave
/// is in, so an executor started meanwhile waits for it.
fn load_in_background(waves: Vec<Vec<PathBuf>>) {
    let marker = Path::new(plinth_protocol::agent::CONTAINER_MODULES_LOADING);
    if let Some(dir) = marker.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(marker, b"") {
        warn!(error = %e, "cannot mark the background module load; containers will not wait for it");
    }
    let spawned = std::thread::Builder::new().name("modules".into()).spawn(move || {
        let started = Instant::now();
        let mut loaded = 0;
        for wave in waves {
            for result in RealSystem.load_modules_together(&wave) {
                match result {
                    Ok(()) => loaded += 1,
                    Err(e) => warn!(error = %error_chain(&e), "module load failed"),
                }
            }
        }
        let _ = std::fs::remove_file(marker);
        info!(
            loaded,
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "background modules loaded"
        );
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the background module load");
        let _ = std::fs::remove_file(marker);
    }
}

/// The work dir of the agent this plan starts, if it starts one.
fn agent_work_dir_of(phases: &[Phase]) -> Option<String> {
    phases.iter().find_map(|p| match p {
        Phase::StartRole(launch) => plan::agent_work_dir(launch),
        _ => None,
    })
}

/// The token the power endpoints require: `plinth.token=`, or, when that is a PXE
/// bootstrap token (single use, spent by the agent), the cluster's join token the agent got
/// for it and keeps in its work dir, so operators use the one cluster token for every node.
struct PowerToken {
    cmdline: Option<String>,
    joined: Option<PathBuf>,
}

impl PowerToken {
    fn of(cmdline: &KernelCmdline, phases: &[Phase]) -> PowerToken {
        let token = cmdline.get("plinth.token").map(str::to_string);
        let bootstrap = token.as_deref().is_some_and(|t| t.starts_with(plinth_protocol::agent::BOOTSTRAP_TOKEN_PREFIX));
        let work_dir = agent_work_dir_of(phases);
        let joined =
            work_dir.filter(|_| bootstrap).map(|dir| Path::new(&dir).join(plinth_protocol::agent::JOIN_TOKEN_FILE));
        PowerToken { cmdline: token, joined }
    }

    fn current(&self) -> Option<String> {
        let joined = self.joined.as_ref().and_then(|path| std::fs::read_to_string(path).ok());
        joined.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).or_else(|| self.cmdline.clone())
    }
}

impl NodeView for LiveNode {
    fn status(&self) -> Value {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn logs(&self) -> String {
        crate::log::recent_lines().join("\n") + "\n"
    }
    fn dmesg(&self) -> String {
        read_kmsg()
    }
    fn mounts(&self) -> String {
        std::fs::read_to_string("/proc/mounts").unwrap_or_default()
    }
    fn network(&self) -> Value {
        let mut ifaces: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let entry = ifaces.entry(a.interface_name.clone()).or_default();
                if let Some(ip) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                    let prefix = a
                        .netmask
                        .as_ref()
                        .and_then(|m| m.as_sockaddr_in())
                        .map(|m| m.ip().to_bits().leading_ones())
                        .unwrap_or(32);
                    entry.push(format!("{}/{}", ip.ip(), prefix));
                }
            }
        }
        let list: Vec<Value> =
            ifaces.into_iter().map(|(name, addresses)| json!({ "name": name, "addresses": addresses })).collect();
        json!({
            "interfaces": list,
            "routes": std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
            "resolv_conf": std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        })
    }
    fn processes(&self) -> Value {
        let mut list = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // comm may contain spaces; fields after the closing paren are fixed.
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            let rss_pages: u64 = f.get(21).and_then(|v| v.parse().ok()).unwrap_or(0);
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
            list.push(json!({
                "pid": pid,
                "ppid": f.get(1).and_then(|v| v.parse::<u32>().ok()),
                "state": f.first(),
                "rss_kb": rss_pages * 4,
                "cmdline": cmdline,
            }));
        }
        list.sort_by_key(|p| p["pid"].as_u64());
        Value::Array(list)
    }
    fn token(&self) -> Option<String> {
        self.token.current()
    }
    fn power(&self, req: PowerRequest) {
        let sig = match req {
            PowerRequest::Poweroff => Signal::SIGUSR2,
            PowerRequest::Reboot => Signal::SIGINT,
        };
        // Give the HTTP reply a moment to leave before PID 1 starts stopping things.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let _ = kill(Pid::this(), sig);
        });
    }
}

fn read_kmsg() -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg") else {
        return String::new();
    };
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                // "prio,seq,usec,flags;message"
                if let Some((head, msg)) = rec.split_once(';') {
                    let usec: f64 = head.split(',').nth(2).and_then(|u| u.parse().ok()).unwrap_or(0.0);
                    out.push_str(&format!("[{:12.6}] {}\n", usec / 1e6, msg.lines().next().unwrap_or("")));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue, // overwritten records
            Err(_) => break,
        }
    }
    out
}

/// A process PID 1 keeps running, restarted with backoff whenever it stops: the role, and
/// on master nodes that form their own etcd cluster, the etcd member (started first).
struct Service {
    /// `role` or `etcd`: the prefix of its console lines and the name in the log.
    tag: &'static str,
    name: String,
    program: PathBuf,
    arg0: &'static str,
    cmd: RoleCommand,
}

impl Service {
    fn role(launch: &RoleLaunch, cmd: RoleCommand) -> Service {
        let program =
            if Path::new("/init").exists() { PathBuf::from("/init") } else { PathBuf::from("/proc/self/exe") };
        Service { tag: "role", name: launch.role.to_string(), program, arg0: "plinth", cmd }
    }

    fn etcd(cmd: RoleCommand) -> Service {
        Service { tag: "etcd", name: "etcd".into(), program: PathBuf::from(plan::ETCD_BINARY), arg0: "etcd", cmd }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        use std::os::unix::process::CommandExt;
        if self.tag == "etcd" && !self.program.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not in this image (build it with `plinth image build --with-etcd`)",
                    self.program.display()
                ),
            ));
        }
        let mut command = Command::new(&self.program);
        // SAFETY: the closure runs between fork and exec and only calls sigprocmask, which is
        // async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(|| {
                // PID 1 blocks its signals to take them with sigtimedwait; the child must not
                // inherit that, or SIGTERM would never stop it.
                let empty = SigSet::empty();
                nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None)?;
                Ok(())
            });
        }
        let mut child = command
            .arg0(self.arg0)
            .args(&self.cmd.args)
            .envs(self.cmd.env.iter().map(|(k, v)| (k, v)))
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            // The console is a serial line: colour escapes only garble it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        for (stream, pipe) in [
            ("stdout", child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
            ("stderr", child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
        ] {
            if let Some(pipe) = pipe {
                let tag = self.tag;
                let _ = std::thread::Builder::new().name(format!("{tag}-{stream}")).spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        crate::log::service_line(tag, &line);
                    }
                });
            }
        }
        let tag = self.tag;
        info!(service = %self.name, pid = child.id(), args = ?self.cmd.args, "{tag} started");
        Ok(child)
    }
}

/// One supervised service's state: its process and when to start it again.
struct Running {
    service: Service,
    child: Option<(Pid, Instant)>,
    failures: u32,
    next_start: Instant,
}

fn supervise(services: Vec<Service>, status: &Value) -> ! {
    let mut all: Vec<Running> = services
        .into_iter()
        .map(|service| Running { service, child: None, failures: 0, next_start: Instant::now() })
        .collect();
    let mut printed_status = false;
    loop {
        for r in &mut all {
            if r.child.is_some() || Instant::now() < r.next_start {
                continue;
            }
            match r.service.spawn() {
                Ok(c) => {
                    // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
                    #[allow(clippy::cast_possible_wrap)]
                    let pid = Pid::from_raw(c.id() as i32);
                    r.child = Some((pid, Instant::now()));
                    if r.service.tag == "role" && !printed_status {
                        for line in status_block(status).lines() {
                            crate::log::init_line(line);
                        }
                        printed_status = true;
                    }
                }
                Err(e) => {
                    if r.failures == 0 {
                        fatal_from_supervisor(&crate::error::InitError::SpawnRole {
                            role: r.service.name.clone(),
                            source: e,
                        });
                    }
                    r.failures += 1;
                    r.next_start = Instant::now() + restart_delay(r.failures);
                }
            }
        }
        let timeout = all
            .iter()
            .filter(|r| r.child.is_none())
            .filter_map(|r| r.next_start.checked_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(50));
        // Stopped in reverse start order: the master before the etcd it writes to.
        let pids = || all.iter().rev().filter_map(|r| r.child.map(|c| (r.service.tag, c.0))).collect::<Vec<_>>();
        match wait_signal(timeout) {
            Some(Signal::SIGCHLD) | None => {}
            Some(Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR) => shutdown(&pids(), PowerRequest::Poweroff),
            Some(Signal::SIGINT) => shutdown(&pids(), PowerRequest::Reboot),
            Some(other) => info!(signal = %other, "signal ignored"),
        }
        for (pid, how) in reap_all() {
            for r in &mut all {
                let Some((service_pid, since)) = r.child else { continue };
                if pid != service_pid {
                    continue;
                }
                if since.elapsed() >= HEALTHY_RUN {
                    r.failures = 0;
                }
                r.failures += 1;
                let delay = restart_delay(r.failures);
                let tag = r.service.tag;
                error!(service = %r.service.name, %how, restart_in_s = delay.as_secs_f32(), "{tag} stopped; restarting");
                r.child = None;
                r.next_start = Instant::now() + delay;
            }
        }
    }
}

fn fatal_from_supervisor(e: &crate::error::InitError) -> ! {
    let cmdline = KernelCmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    fatal(&cmdline, e)
}

/// Seconds to wait before rebooting after a fatal error; `None` = wait forever (`panic=0`).
pub fn fatal_wait(cmdline: &KernelCmdline) -> Option<u64> {
    if let Some(w) = cmdline.get("plinth.fatal_wait").and_then(|w| w.parse().ok()) {
        return (w > 0).then_some(w);
    }
    match cmdline.get("panic").and_then(|p| p.parse::<i64>().ok()) {
        Some(0) => None,
        Some(n) if n > 0 => Some(n.unsigned_abs()),
        _ => Some(10),
    }
}

/// Shows why the node cannot boot, waits, then reboots. PID 1 never exits: that would panic
/// the kernel and hide the message.
pub fn fatal(cmdline: &KernelCmdline, e: &dyn std::error::Error) -> ! {
    let bar = "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!";
    crate::log::init_line(bar);
    crate::log::init_line(&format!("plinth-init: FATAL: this node cannot boot: {}", error_chain(e)));
    crate::log::init_line(bar);
    match fatal_wait(cmdline) {
        None => {
            crate::log::init_line(
                "plinth-init: waiting (panic=0); power the machine off or fix the kernel command line",
            );
            loop {
                let _ = wait_signal(Duration::from_secs(60));
                reap_all();
            }
        }
        Some(secs) => {
            for left in (1..=secs).rev() {
                crate::log::init_line(&format!("plinth-init: rebooting in {left} s"));
                let until = Instant::now() + Duration::from_secs(1);
                while let Some(d) = until.checked_duration_since(Instant::now()) {
                    let _ = wait_signal(d);
                    reap_all();
                }
            }
            nix::unistd::sync();
            crate::log::init_line("plinth-init: rebooting now");
            let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
}

/// Waits until no children are left or `limit` passes.
fn reap_until_empty(limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        reap_all();
        if matches!(waitpid(None, Some(WaitPidFlag::WNOHANG)), Err(nix::errno::Errno::ECHILD)) {
            return;
        }
        let _ = wait_signal(Duration::from_millis(100));
    }
}

/// Stops the role (it stops its tasks), then everything else, syncs, unmounts, reboots.
/// Stops `services` one after the other (each gets SIGTERM and up to 20 s), then every
/// other process, unmounts and powers off or reboots.
fn shutdown(services: &[(&'static str, Pid)], req: PowerRequest) -> ! {
    info!(action = ?req, "shutdown requested");
    for (tag, pid) in services {
        let _ = kill(*pid, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if reap_all().iter().any(|(p, _)| p == pid) {
                info!(pid = pid.as_raw(), "{tag} stopped");
                break;
            }
            let _ = wait_signal(Duration::from_millis(100));
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    reap_until_empty(Duration::from_secs(3));
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_until_empty(Duration::from_secs(2));
    nix::unistd::sync();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let keep = ["/", "/proc", "/sys", "/dev"];
    for target in mounts.lines().rev().filter_map(|l| l.split_whitespace().nth(1)) {
        if keep.contains(&target) {
            continue;
        }
        if nix::mount::umount(target).is_err() {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    nix::unistd::sync();
    let mode = match req {
        PowerRequest::Poweroff => {
            crate::log::init_line("plinth-init: powering off");
            nix::sys::reboot::RebootMode::RB_POWER_OFF
        }
        PowerRequest::Reboot => {
            crate::log::init_line("plinth-init: rebooting");
            nix::sys::reboot::RebootMode::RB_AUTOBOOT
        }
    };
    let err = nix::sys::reboot::reboot(mode);
    crate::log::init_line(&format!("plinth-init: reboot(2) failed: {err:?}"));
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_and_caps() {
        let secs: Vec<u64> = (0..9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn fatal_wait_follows_panic_and_override() {
        let w = |s: &str| fatal_wait(&KernelCmdline::parse(s));
        assert_eq!(w(""), Some(10));
        assert_eq!(w("panic=0"), None);
        assert_eq!(w("panic=5"), Some(5));
        assert_eq!(w("panic=0 plinth.fatal_wait=3"), Some(3));
    }

    #[test]
    fn status_block_lists_what_an_operator_needs() {
        let doc = json!({
            "role": "standalone", "hostname": "n1", "master": "http://10.0.2.15:8080",
            "interfaces": [{"name": "eth0", "address": "10.0.2.15/24", "via": "dhcp"}],
            "resources": "cpus:1", "node_api": "http://10.0.2.15:5052/node/v1/", "data_dir": "/var/lib/plinth on tmpfs",
        });
        let block = status_block(&doc);
        assert!(block.contains("role:       standalone"));
        assert!(block.contains("addresses:  eth0 10.0.2.15/24 (dhcp)"));
        assert!(block.contains("master:     http://10.0.2.15:8080"));
        assert!(block.contains("node API:   http://10.0.2.15:5052/node/v1/"));
    }
}
