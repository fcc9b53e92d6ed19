//! An in-test master speaking the agent protocol, and helpers to run a real agent
//! against it, for the modules that run a whole agent (`agent_loop`, `fetch`,
//! `health_checks`). `free_port` is the test kit's.
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use plinth_agent::logs::LogPolicy;
use plinth_agent::runtime::{ExecutorCommand, ProcessRuntime, TaskRuntime};
use plinth_agent::testing::task_spec;
use plinth_agent::{run_with, AgentConfig, AgentOptions, TaskConfinement};
use plinth_protocol::agent::{
    DesiredState, Registered, Registration, StatusAck, StatusBatch, StatusUpdate, SyncRequest, SyncResponse, TaskSpec,
};
use plinth_protocol::{AgentId, Resources, TaskState};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MasterState {
    pub registrations: Vec<Registration>,
    pub desired: Option<DesiredState>,
    pub statuses: Vec<StatusUpdate>,
    pub token_seen: Vec<Option<String>>,
    /// Answer the next sync with `reregister: true`, as a master that forgot the agent.
    pub reregister_next: bool,
}

pub type Shared = Arc<Mutex<MasterState>>;

pub async fn register(
    State(m): State<Shared>,
    headers: axum::http::HeaderMap,
    Json(r): Json<Registration>,
) -> Json<Registered> {
    let mut m = m.lock().unwrap();
    m.token_seen.push(headers.get("x-plinth-token").map(|v| v.to_str().unwrap().to_string()));
    m.registrations.push(r);
    Json(Registered { agent_id: AgentId::new("agent-1"), heartbeat_interval_ms: 500, cluster_id: None })
}

pub async fn sync(State(m): State<Shared>, Json(r): Json<SyncRequest>) -> Json<SyncResponse> {
    if std::mem::take(&mut m.lock().unwrap().reregister_next) {
        return Json(SyncResponse { desired: None, reregister: true, cluster_id: None, services: None });
    }
    let deadline = Instant::now() + Duration::from_millis(r.wait_ms.min(300));
    loop {
        let desired = m.lock().unwrap().desired.clone().filter(|d| d.generation > r.generation);
        if desired.is_some() || Instant::now() >= deadline {
            return Json(SyncResponse { desired, reregister: false, cluster_id: None, services: None });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn status(State(m): State<Shared>, Json(batch): Json<StatusBatch>) -> Json<StatusAck> {
    let ids = batch.updates.iter().map(|u| u.update_id).collect();
    m.lock().unwrap().statuses.extend(batch.updates);
    Json(StatusAck { acknowledged: ids })
}

pub async fn start_master() -> (String, Shared) {
    start_master_on(0).await
}

pub async fn start_master_on(port: u16) -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/agent/v1/register", post(register))
        .route("/agent/v1/sync", post(sync))
        .route("/agent/v1/status", post(status))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

pub use plinth_testkit::free_port;

pub fn spec(id: &str, app: Value) -> TaskSpec {
    task_spec(id, app, vec![31007])
}

pub struct Agent {
    pub handle: tokio::task::JoinHandle<()>,
    pub api: String,
}

/// The agent's tick in these tests.
const TICK: Duration = Duration::from_millis(100);

fn real_runtime() -> Arc<dyn TaskRuntime> {
    Arc::new(ProcessRuntime::new(ExecutorCommand::new(env!("CARGO_BIN_EXE_plinth-agent-executor"), vec![])))
}

pub fn start_agent(master: &str, work_dir: PathBuf, port: u16) -> Agent {
    start_agent_with(master, work_dir, port, real_runtime())
}

pub fn start_agent_with(master: &str, work_dir: PathBuf, port: u16, runtime: Arc<dyn TaskRuntime>) -> Agent {
    start_agent_configured(master, work_dir, port, runtime, TaskConfinement::default(), LogPolicy::default(), TICK)
}

/// A real agent whose tick comes only every `tick`: what it reports sooner came from
/// events (a desired state, an executor's news), not from polling.
pub fn start_agent_ticking(master: &str, work_dir: PathBuf, port: u16, tick: Duration) -> Agent {
    start_agent_configured(
        master,
        work_dir,
        port,
        real_runtime(),
        TaskConfinement::default(),
        LogPolicy::default(),
        tick,
    )
}

/// A real agent with real executors, its tasks confined by `confinement` and their logs
/// rotated by `logs`.
pub fn start_confined_agent(
    master: &str,
    work_dir: PathBuf,
    port: u16,
    confinement: TaskConfinement,
    logs: LogPolicy,
) -> Agent {
    start_agent_configured(master, work_dir, port, real_runtime(), confinement, logs, TICK)
}

fn start_agent_configured(
    master: &str,
    work_dir: PathBuf,
    port: u16,
    runtime: Arc<dyn TaskRuntime>,
    confinement: TaskConfinement,
    logs: LogPolicy,
    tick: Duration,
) -> Agent {
    let config = AgentConfig {
        master: master.to_string(),
        work_dir,
        hostname: "test-node".into(),
        advertise_ip: Some("127.0.0.1".parse().unwrap()),
        resources: Some(Resources::parse("cpus:2;mem:1024;disk:1000;ports:[31000-31010]").unwrap()),
        attributes: [("rack".to_string(), "r1".to_string())].into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        token: plinth_protocol::agent::JoinToken::new("sesame"),
        rejoin_cluster: false,
        ca_file: None,
        containers: Default::default(),
        dns: plinth_dns::DnsSettings::disabled(),
        confinement,
        stop_tasks_after_master_lost: None,
        // The in-test master sends no service table; no port of the host is taken.
        lb: plinth_agent::LbSettings { enabled: false, ..Default::default() },
    };
    let options = AgentOptions { tick, sync_wait: Duration::from_millis(300), logs, ..Default::default() };
    let handle = tokio::spawn(async move {
        if let Err(err) = run_with(config, runtime, options).await {
            panic!("agent failed: {err}");
        }
    });
    Agent { handle, api: format!("http://127.0.0.1:{port}") }
}

/// [`plinth_testkit::wait_until`] for async tests: it sleeps on the tokio runtime instead
/// of blocking its thread, so the in-test master and the agent, which run on the same
/// runtime, keep answering while the test waits; the probe gives `Some` when done (there
/// is no last observation to show).
pub async fn wait_until_async<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn status_of(m: &Shared, task: &str, state: TaskState) -> Option<StatusUpdate> {
    m.lock().unwrap().statuses.iter().find(|u| u.task_id.as_str() == task && u.state == state).cloned()
}

pub async fn get_json(url: &str) -> Value {
    plinth_oci::tls::install_provider();
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Kills whatever executors the test's tasks left, by the pids the agent recorded.
pub struct KillTasksOnDrop(pub PathBuf);

impl Drop for KillTasksOnDrop {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("tasks")) else { return };
        for entry in entries.flatten() {
            for file in ["running.json", "executor.json"] {
                if let Ok(text) = std::fs::read_to_string(entry.path().join(file)) {
                    let pid = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["pid"].as_i64());
                    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
            // The task's cgroup (named by its sandbox) goes too, once its processes are gone.
            if let Some(task_id) = entry.file_name().to_str() {
                remove_task_cgroups(task_id);
            }
        }
    }
}

/// Removes `plinth/<task_id>` from every cgroup hierarchy (v1 controllers or the v2 root).
fn remove_task_cgroups(task_id: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    let mut dirs: Vec<PathBuf> = hierarchies.flatten().map(|h| h.path().join("plinth").join(task_id)).collect();
    dirs.push(PathBuf::from("/sys/fs/cgroup/plinth").join(task_id));
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        // Children the task left (a `sleep` after `;`) are in the cgroup, not in running.json.
        for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
