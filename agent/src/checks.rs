//! The shell around [`crate::health`]: one async loop that tracks every running task with
//! health or readiness checks, starts probes when they are due (HTTP, TCP, commands in
//! the sandbox), feeds their results to the pure trackers and queues a `TASK_RUNNING`
//! status update whenever a summary changed.
//!
//! Check state lives only in this loop, not in the checkpoint: after an agent restart the
//! re-adopted tasks are checked afresh from `delaySeconds` on.
use plinth_protocol::{error_chain, AppId, TaskId, TaskState, Timestamp};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::confine::Confinement;
use crate::health::{self, Outcome, Probe, TaskHealth, TaskReadiness};
use crate::node::Node;
use crate::taskenv;

/// How often due checks are looked for.
const CHECK_TICK: Duration = Duration::from_millis(100);
/// Shortest probe timeout, whatever the app says.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);

/// What a command check runs with: the task's sandbox, environment, user and
/// confinement (the check is the task's code: it sees and may do what the task may).
#[derive(Debug, Clone)]
struct CommandContext {
    sandbox: PathBuf,
    env: Vec<(String, String)>,
    user: Option<String>,
    confinement: crate::config::TaskConfinement,
    /// A command task's process (its init) and cgroup: the check enters its namespaces.
    /// `None` for a container (its checks run beside it, as before).
    task_pid: Option<i32>,
    cgroup_dirs: Vec<PathBuf>,
}

struct HealthChecks {
    tracker: TaskHealth,
    probes: Vec<Probe>,
    timeouts: Vec<Duration>,
}

struct ReadinessChecks {
    tracker: TaskReadiness,
    /// Per check: the URL, or why it can never pass.
    urls: Vec<Result<String, String>>,
    timeouts: Vec<Duration>,
}

struct Tracked {
    app_id: AppId,
    health: Option<HealthChecks>,
    readiness: Option<ReadinessChecks>,
    command: Arc<CommandContext>,
}

enum Kind {
    Health(Outcome),
    Readiness(Result<u16, String>),
}

struct ProbeResult {
    task_id: TaskId,
    index: usize,
    kind: Kind,
}

fn timeout_of(seconds: u64) -> Duration {
    Duration::from_secs(seconds).max(MIN_TIMEOUT)
}

/// A running task, not being killed, that has checks, as the loop needs to start
/// tracking it.
struct Candidate {
    task_id: TaskId,
    tracked: Option<Tracked>,
}

/// Runs until the agent stops.
pub(crate) async fn check_loop(node: Arc<Node>) {
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<ProbeResult>();
    plinth_oci::tls::install_provider();
    let client = match reqwest::Client::builder()
        // A 3xx is a healthy answer (Marathon does not follow redirects), and checks
        // never go through a proxy: they are for the task next door.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(node_id = %node.node_id(), error = %error_chain(&err), "cannot build the health check HTTP client; no checks run");
            return;
        }
    };
    let mut tracked: HashMap<TaskId, Tracked> = HashMap::new();
    let mut interval = tokio::time::interval(CHECK_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let now = Timestamp::now();
                refresh(&node, &mut tracked, now);
                for (task_id, task) in tracked.iter_mut() {
                    start_due(task_id, task, now, &client, &results_tx);
                }
            }
            Some(result) = results_rx.recv() => {
                let Some(task) = tracked.get_mut(&result.task_id) else { continue };
                let now = Timestamp::now();
                let mut extra = BTreeMap::new();
                let mut healthy = None;
                match result.kind {
                    Kind::Health(outcome) => {
                        let Some(checks) = task.health.as_mut() else { continue };
                        let Some(report) = checks.tracker.record(result.index, outcome, now) else { continue };
                        info!(
                            node_id = %node.node_id(), task_id = %result.task_id, app_id = %task.app_id,
                            healthy = report.healthy,
                            failures = report.results.iter().map(|r| r.consecutive_failures).max().unwrap_or(0),
                            "task health changed"
                        );
                        healthy = Some(report.healthy);
                        extra.insert("healthCheckResults".to_string(), serde_json::to_value(&report.results).unwrap_or(Value::Null));
                    }
                    Kind::Readiness(answer) => {
                        let Some(checks) = task.readiness.as_mut() else { continue };
                        let Some(report) = checks.tracker.record(result.index, answer, now) else { continue };
                        info!(node_id = %node.node_id(), task_id = %result.task_id, app_id = %task.app_id, ready = report.ready, "task readiness changed");
                        extra.insert("ready".to_string(), Value::Bool(report.ready));
                        extra.insert("readinessCheckResults".to_string(), serde_json::to_value(&report.results).unwrap_or(Value::Null));
                        // The current health goes along, so this update never reads as "health unknown".
                        if let Some(health) = &task.health {
                            let current = health.tracker.report();
                            if current.results.iter().any(|r| r.last_success.is_some() || r.last_failure.is_some()) {
                                healthy = Some(current.healthy);
                            }
                        }
                    }
                }
                let node = node.clone();
                let task_id = result.task_id;
                // Queuing writes the checkpoint (fsync): off the async threads.
                let _ = tokio::task::spawn_blocking(move || node.queue_check_update(&task_id, healthy, extra)).await;
            }
        }
    }
}

/// Starts tracking newly running tasks and forgets those no longer running (or being
/// killed: their checks stop, as Marathon's do).
fn refresh(node: &Node, tracked: &mut HashMap<TaskId, Tracked>, now: Timestamp) {
    let candidates: Vec<Candidate> = {
        let state = node.lock();
        state
            .tasks
            .values()
            .filter(|r| r.state == TaskState::TaskRunning && r.kill_requested_at.is_none())
            .filter(|r| !r.spec.app.health_checks.is_empty() || !r.spec.app.readiness_checks.is_empty())
            .map(|r| Candidate {
                task_id: r.spec.task_id.clone(),
                tracked: (!tracked.contains_key(&r.spec.task_id)).then(|| new_tracked(node, r, now)),
            })
            .collect()
    };
    let live: std::collections::HashSet<&TaskId> = candidates.iter().map(|c| &c.task_id).collect();
    tracked.retain(|task_id, _| live.contains(task_id));
    for candidate in candidates {
        if let Some(task) = candidate.tracked {
            debug!(node_id = %node.node_id(), task_id = %candidate.task_id, app_id = %task.app_id, "starting health and readiness checks");
            tracked.insert(candidate.task_id, task);
        }
    }
}

fn new_tracked(node: &Node, record: &crate::state::TaskRecord, now: Timestamp) -> Tracked {
    let spec = &record.spec;
    let app = &spec.app;
    let host = check_host(node.advertise_ip);
    let health = (!app.health_checks.is_empty()).then(|| HealthChecks {
        tracker: TaskHealth::new(spec.task_id.clone(), &app.health_checks, record.running_since.unwrap_or(now), now),
        probes: app.health_checks.iter().map(|c| health::probe_for(c, host, &spec.host_ports)).collect(),
        timeouts: app.health_checks.iter().map(|c| timeout_of(c.timeout_seconds)).collect(),
    });
    let port_names = app.port_names();
    let readiness = (!app.readiness_checks.is_empty()).then(|| ReadinessChecks {
        tracker: TaskReadiness::new(spec.task_id.clone(), &app.readiness_checks, now),
        urls: app
            .readiness_checks
            .iter()
            .map(|c| health::readiness_url(c, host, &spec.host_ports, &port_names))
            .collect(),
        timeouts: app.readiness_checks.iter().map(|c| timeout_of(c.timeout_seconds)).collect(),
    });
    Tracked {
        app_id: spec.app_id.clone(),
        health,
        readiness,
        command: Arc::new(CommandContext {
            sandbox: record.sandbox.clone(),
            env: taskenv::task_env(spec, &node.config.hostname, &record.sandbox),
            user: crate::runtime::task_user(spec, &node.config.task_confinement()),
            confinement: node.config.task_confinement(),
            task_pid: record.pid.filter(|_| spec.app.container.as_ref().and_then(|c| c.docker.as_ref()).is_none()),
            cgroup_dirs: record
                .handle
                .as_ref()
                .and_then(|h| h.cgroup.as_ref())
                .map(|c| c.dirs.clone())
                .unwrap_or_default(),
        }),
    }
}

/// Checks go to the address the agent advertises (tasks share its network); an
/// unspecified one means loopback.
fn check_host(advertise_ip: IpAddr) -> IpAddr {
    if advertise_ip.is_unspecified() {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        advertise_ip
    }
}

fn start_due(
    task_id: &TaskId,
    task: &mut Tracked,
    now: Timestamp,
    client: &reqwest::Client,
    results: &mpsc::UnboundedSender<ProbeResult>,
) {
    if let Some(checks) = task.health.as_mut() {
        for index in checks.tracker.due(now) {
            let probe = checks.probes[index].clone();
            let timeout = checks.timeouts[index];
            let (client, results, task_id, command) =
                (client.clone(), results.clone(), task_id.clone(), task.command.clone());
            tokio::spawn(async move {
                let outcome = run_probe(&probe, timeout, &client, &command).await;
                let _ = results.send(ProbeResult { task_id, index, kind: Kind::Health(outcome) });
            });
        }
    }
    if let Some(checks) = task.readiness.as_mut() {
        for index in checks.tracker.due(now) {
            let url = checks.urls[index].clone();
            let timeout = checks.timeouts[index];
            let (client, results, task_id) = (client.clone(), results.clone(), task_id.clone());
            tokio::spawn(async move {
                let answer = match url {
                    Ok(url) => http_status(&client, &url, timeout).await,
                    Err(cause) => Err(cause),
                };
                let _ = results.send(ProbeResult { task_id, index, kind: Kind::Readiness(answer) });
            });
        }
    }
}

async fn http_status(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<u16, String> {
    match client.get(url).timeout(timeout).send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(err) if err.is_timeout() => Err(format!("no answer from {url} within {} ms", timeout.as_millis())),
        Err(err) => Err(format!("GET {url} failed: {}", error_chain(&err))),
    }
}

async fn run_probe(probe: &Probe, timeout: Duration, client: &reqwest::Client, command: &CommandContext) -> Outcome {
    match probe {
        Probe::Http { url, ignore_1xx } => match http_status(client, url, timeout).await {
            Ok(status) => health::http_outcome(status, *ignore_1xx),
            Err(cause) => Outcome::Unhealthy(cause),
        },
        Probe::Tcp { addr } => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_stream)) => Outcome::Healthy,
            Ok(Err(err)) => Outcome::Unhealthy(format!("cannot connect to {addr}: {err}")),
            Err(_) => Outcome::Unhealthy(format!("no connection to {addr} within {} ms", timeout.as_millis())),
        },
        Probe::Command { command: script } => run_command(script, timeout, command).await,
        Probe::Unusable { cause } => Outcome::Unhealthy(cause.clone()),
    }
}

/// `/bin/sh -c script` as the task would run it; killed (with everything it started)
/// when it outlives the timeout.
async fn run_command(script: &str, timeout: Duration, context: &CommandContext) -> Outcome {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .env_clear()
        .envs(context.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&context.sandbox)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let user = context.user.as_deref();
    let confinement =
        match crate::confine::resolve_user(user, context.confinement.allow_root).and_then(|(identity, runs_as_root)| {
            let hidden = &context.confinement.hidden_paths;
            Confinement::prepare(&context.sandbox, hidden, identity, runs_as_root).map_err(|e| e.to_string())
        }) {
            Ok(confinement) => confinement,
            Err(reason) => {
                return Outcome::Unhealthy(format!(
                    "cannot run the check as user '{}': {reason}",
                    user.unwrap_or("root")
                ))
            }
        };
    // Held open until the spawn is done: the child enters the namespaces through it.
    let task = context.task_pid.and_then(|pid| task_init_pidfd(pid, &context.cgroup_dirs));
    // In the task's namespaces (its PID namespace through a relay, see crate::confine).
    let confinement = match &task {
        Some(pidfd) => confinement.entering(pidfd.as_raw_fd()),
        None => confinement,
    };
    // SAFETY: `Confinement::apply` makes only async-signal-safe system calls on data
    // prepared before the fork (see crate::confine).
    unsafe {
        command.pre_exec(move || confinement.apply());
    }
    let spawned = command.spawn();
    drop(task);
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => return Outcome::Unhealthy(format!("cannot run the check command: {err}")),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::Healthy,
        Ok(Ok(status)) => {
            Outcome::Unhealthy(match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(code), _) => format!("command exited with status {code}"),
                (None, Some(signal)) => format!("command ended by signal {signal}"),
                (None, None) => "command ended with an unknown status".to_string(),
            })
        }
        Ok(Err(err)) => Outcome::Unhealthy(format!("cannot wait for the check command: {err}")),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Outcome::Unhealthy(format!("command timed out after {} ms", timeout.as_millis()))
        }
    }
}

/// A pidfd of a command task's init when the task has a PID namespace of its own (a
/// root agent's tasks do) and the pid still is that init: in the task's cgroup (a reused
/// pid is not). The checks are made after the pidfd pins the process.
fn task_init_pidfd(pid: i32, cgroup_dirs: &[PathBuf]) -> Option<OwnedFd> {
    if !crate::confine::can_make_namespaces() {
        return None;
    }
    // SAFETY: pidfd_open with plain integer arguments; a non-negative result is a new
    // descriptor that nobody else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: just returned by pidfd_open, owned here alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let namespace = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let own_namespace = namespace(&pid.to_string()).is_some_and(|ns| Some(ns) != namespace("self"));
    let in_cgroup = cgroup_dirs.is_empty() || crate::cgroup::procs(cgroup_dirs).contains(&pid);
    (own_namespace && in_cgroup).then_some(pidfd)
}
