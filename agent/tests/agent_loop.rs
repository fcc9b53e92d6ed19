//! The whole agent (register, long-poll sync, status outbox, HTTP API, restart with
//! re-adoption) against a small in-test master that speaks the agent protocol, running
//! real command tasks.
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use plinth_agent::runtime::{ContainerRuntime, ExecutorCommand, FakeRuntime, ProcessRuntime};
use plinth_agent::{run_with, AgentConfig, AgentOptions};
use plinth_protocol::agent::{
    DesiredState, Registered, Registration, StatusAck, StatusBatch, StatusUpdate, SyncRequest, SyncResponse, TaskSpec,
};
use plinth_agent::testing::task_spec;
use plinth_protocol::{AgentId, Resources, TaskId, TaskState};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct MasterState {
    registrations: Vec<Registration>,
    desired: Option<DesiredState>,
    statuses: Vec<StatusUpdate>,
    token_seen: Vec<Option<String>>,
    /// Answer the next sync with `reregister: true`, as a master that forgot the agent.
    reregister_next: bool,
}

type Shared = Arc<Mutex<MasterState>>;

async fn register(
    State(m): State<Shared>,
    headers: axum::http::HeaderMap,
    Json(r): Json<Registration>,
) -> Json<Registered> {
    let mut m = m.lock().unwrap();
    m.token_seen.push(headers.get("x-plinth-token").map(|v| v.to_str().unwrap().to_string()));
    m.registrations.push(r);
    Json(Registered { agent_id: AgentId::new("agent-1"), heartbeat_interval_ms: 500 })
}

async fn sync(State(m): State<Shared>, Json(r): Json<SyncRequest>) -> Json<SyncResponse> {
    if std::mem::take(&mut m.lock().unwrap().reregister_next) {
        return Json(SyncResponse { desired: None, reregister: true });
    }
    let deadline = Instant::now() + Duration::from_millis(r.wait_ms.min(300));
    loop {
        let desired = m.lock().unwrap().desired.clone().filter(|d| d.generation > r.generation);
        if desired.is_some() || Instant::now() >= deadline {
            return Json(SyncResponse { desired, reregister: false });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(State(m): State<Shared>, Json(batch): Json<StatusBatch>) -> Json<StatusAck> {
    let ids = batch.updates.iter().map(|u| u.update_id).collect();
    m.lock().unwrap().statuses.extend(batch.updates);
    Json(StatusAck { acknowledged: ids })
}

async fn start_master() -> (String, Shared) {
    start_master_on(0).await
}

async fn start_master_on(port: u16) -> (String, Shared) {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spec(id: &str, app: Value) -> TaskSpec {
    task_spec(id, app, vec![31007])
}

struct Agent {
    handle: tokio::task::JoinHandle<()>,
    api: String,
}

fn start_agent(master: &str, work_dir: PathBuf, port: u16) -> Agent {
    let runtime = Arc::new(ProcessRuntime::new(ExecutorCommand::new(env!("CARGO_BIN_EXE_plinth-agent-executor"), vec![])));
    start_agent_with(master, work_dir, port, runtime)
}

fn start_agent_with(master: &str, work_dir: PathBuf, port: u16, runtime: Arc<dyn ContainerRuntime>) -> Agent {
    let config = AgentConfig {
        master: master.to_string(),
        work_dir,
        hostname: "test-node".into(),
        advertise_ip: Some("127.0.0.1".parse().unwrap()),
        resources: Some(Resources::parse("cpus:2;mem:1024;disk:1000;ports:[31000-31010]").unwrap()),
        attributes: [("rack".to_string(), "r1".to_string())].into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        token: Some("sesame".into()),
    };
    let options = AgentOptions { tick: Duration::from_millis(100), sync_wait: Duration::from_millis(300), ..Default::default() };
    let handle = tokio::spawn(async move {
        if let Err(err) = run_with(config, runtime, options).await {
            panic!("agent failed: {err}");
        }
    });
    Agent { handle, api: format!("http://127.0.0.1:{port}") }
}

async fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(m: &Shared, task: &str, state: TaskState) -> Option<StatusUpdate> {
    m.lock().unwrap().statuses.iter().find(|u| u.task_id.as_str() == task && u.state == state).cloned()
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Kills whatever executors the test's tasks left, by the pids the agent recorded.
struct KillTasksOnDrop(PathBuf);

impl Drop for KillTasksOnDrop {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("tasks")) else { return };
        for entry in entries.flatten() {
            for file in ["running.json", "executor.json"] {
                if let Ok(text) = std::fs::read_to_string(entry.path().join(file)) {
                    if let Some(pid) = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["pid"].as_i64()) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_reports_survives_a_restart_and_kills_on_request() {
    let (master, m) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillTasksOnDrop(dir.path().to_path_buf());
    let port = free_port();
    let agent = start_agent(&master, dir.path().to_path_buf(), port);

    let first = wait_until("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned()).await;
    assert_eq!(first.agent_id, None);
    assert_eq!(first.hostname, "test-node");
    assert_eq!(first.http_port, port);
    assert_eq!(first.resources.cpus, 2.0);
    assert_eq!(m.lock().unwrap().token_seen[0].as_deref(), Some("sesame"));

    m.lock().unwrap().desired = Some(DesiredState {
        generation: 1,
        tasks: vec![
            spec("web.1", json!({"id": "/web", "cmd": "echo serving on $PORT0; sleep 100", "mem": 64})),
            spec("job.1", json!({"id": "/job", "cmd": "echo working; exit 3", "mem": 64})),
        ],
    });
    let running = wait_until("web.1 running", Duration::from_secs(15), || status_of(&m, "web.1", TaskState::TaskRunning)).await;
    assert_eq!(running.app_id.as_str(), "/web");
    assert!(status_of(&m, "web.1", TaskState::TaskStarting).is_some(), "STARTING comes first");
    let failed = wait_until("job.1 failed", Duration::from_secs(15), || status_of(&m, "job.1", TaskState::TaskFailed)).await;
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message.as_deref(), Some("Command exited with status 3"));

    // The HTTP API: tasks, one task, logs, state.
    let tasks = get_json(&format!("{}/v1/tasks", agent.api)).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);
    let web = get_json(&format!("{}/v1/tasks/web.1", agent.api)).await;
    assert_eq!(web["state"], "TASK_RUNNING");
    let pid = web["pid"].as_i64().expect("pid");
    let logs = reqwest::get(format!("{}/v1/tasks/web.1/logs", agent.api)).await.unwrap().text().await.unwrap();
    assert_eq!(logs, "serving on 31007\n");
    let finished_logs = reqwest::get(format!("{}/v1/tasks/job.1/logs?follow=true", agent.api)).await.unwrap();
    assert_eq!(finished_logs.text().await.unwrap(), "working\n", "follow ends with a finished task");
    let unknown = reqwest::get(format!("{}/v1/tasks/nope/logs", agent.api)).await.unwrap();
    assert_eq!(unknown.status(), 404);
    let state = get_json(&format!("{}/v1/state", agent.api)).await;
    assert_eq!(state["agent_id"], "agent-1");
    assert_eq!(state["attributes"]["rack"], "r1");
    assert_eq!(state["generation"], 1);

    // Restart the agent: the task keeps running and is re-adopted, not relaunched.
    agent.handle.abort();
    let _ = agent.handle.await;
    let registrations_before = m.lock().unwrap().registrations.len();
    let agent = start_agent(&master, dir.path().to_path_buf(), port);
    let again = wait_until("re-registration", Duration::from_secs(10), || {
        m.lock().unwrap().registrations.get(registrations_before).cloned()
    })
    .await;
    assert_eq!(again.agent_id, Some(AgentId::new("agent-1")), "the agent id is remembered");
    assert_eq!(again.last_generation, 1);
    let reported: Vec<_> = again.tasks.iter().map(|t| (t.task_id.as_str(), t.state)).collect();
    assert_eq!(reported, vec![("web.1", TaskState::TaskRunning)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let web = get_json(&format!("{}/v1/tasks/web.1", agent.api)).await;
    assert_eq!(web["state"], "TASK_RUNNING");
    assert_eq!(web["pid"].as_i64(), Some(pid), "same process, not a new launch");
    let running_updates = m.lock().unwrap().statuses.iter().filter(|u| u.task_id.as_str() == "web.1" && u.state == TaskState::TaskRunning).count();
    assert_eq!(running_updates, 1, "no duplicate launch");

    // A newer generation without the task kills it.
    m.lock().unwrap().desired = Some(DesiredState { generation: 2, tasks: vec![] });
    let killed = wait_until("web.1 killed", Duration::from_secs(15), || status_of(&m, "web.1", TaskState::TaskKilled)).await;
    assert!(killed.message.unwrap().contains("killed"));
    assert!(!std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z")).unwrap_or(true)
    });
    agent.handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_waits_for_a_late_master_resends_statuses_and_refuses_bad_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let master_port = free_port();
    let master_url = format!("http://127.0.0.1:{master_port}");
    let fake = Arc::new(FakeRuntime::new());
    let agent = start_agent_with(&master_url, dir.path().to_path_buf(), free_port(), fake.clone());

    // The master comes up late: the agent keeps trying and registers.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, m) = start_master_on(master_port).await;
    wait_until("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned()).await;

    fake.fail_next_launches(1);
    m.lock().unwrap().desired = Some(DesiredState {
        generation: 5,
        tasks: vec![
            spec("bad.1", json!({"id": "/bad", "cmd": "x"})),
            spec("ok.1", json!({"id": "/ok", "cmd": "x"})),
            spec("../escape", json!({"id": "/evil", "cmd": "x"})),
            TaskSpec { kill: true, ..spec("never.1", json!({"id": "/never", "cmd": "x"})) },
        ],
    });
    let failed = wait_until("launch failure", Duration::from_secs(10), || status_of(&m, "bad.1", TaskState::TaskFailed)).await;
    assert!(failed.message.unwrap().contains("injected launch failure"));
    let refused = wait_until("bad id refused", Duration::from_secs(10), || status_of(&m, "../escape", TaskState::TaskError)).await;
    assert!(refused.message.unwrap().contains("not usable"));
    wait_until("kill of an unknown task", Duration::from_secs(10), || status_of(&m, "never.1", TaskState::TaskKilled)).await;
    wait_until("ok.1 running", Duration::from_secs(10), || status_of(&m, "ok.1", TaskState::TaskRunning)).await;
    assert_eq!(fake.live_tasks(), vec![TaskId::new("ok.1")]);
    assert!(!dir.path().join("escape").exists() && !dir.path().join("tasks/..").join("escape").exists());

    // The master forgets the agent: it registers again, reporting its running task.
    let before = m.lock().unwrap().registrations.len();
    m.lock().unwrap().reregister_next = true;
    let again = wait_until("re-registration", Duration::from_secs(10), || m.lock().unwrap().registrations.get(before).cloned()).await;
    assert_eq!(again.last_generation, 5);
    assert_eq!(again.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), vec!["ok.1"]);

    // An older generation changes nothing; the exit of a task is reported once.
    m.lock().unwrap().desired = Some(DesiredState { generation: 4, tasks: vec![] });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.live_tasks(), vec![TaskId::new("ok.1")], "generation 4 < 5 is ignored");
    fake.exit(&TaskId::new("ok.1"), 0);
    let finished = wait_until("ok.1 finished", Duration::from_secs(10), || status_of(&m, "ok.1", TaskState::TaskFinished)).await;
    assert_eq!(finished.exit_code, Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.launch_count(), 1, "a finished task is not relaunched");
    let statuses = m.lock().unwrap().statuses.clone();
    let mut ids: Vec<_> = statuses.iter().map(|u| u.update_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), statuses.len(), "acknowledged updates are not sent again");
    agent.handle.abort();
}
