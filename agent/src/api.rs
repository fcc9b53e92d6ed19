//! The agent's HTTP API (`:5051`): health, node state, tasks and their logs (also of
//! finished tasks, while their sandboxes are kept; read beneath the sandbox's fd and
//! never through a symlink, see [`crate::sandbox_fs`]). Errors map to HTTP in one place,
//! [`ApiError`]. Task inspection (`inspect`, `top`, `stats`) and `/metrics` read the
//! container record and the task's cgroup. With a certificate of the cluster CA the agent
//! serves this router over HTTPS to callers with a certificate of the same CA only
//! (`start.rs`, `identity.rs`).
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use plinth_protocol::{TaskId, TaskState};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::inspect;
use crate::logs::{self, Stream};
use crate::node::Node;
use crate::sandbox_fs::{self, SandboxDir};
use crate::state::TaskRecord;

/// Bytes per read of a log (and per chunk of a followed log).
const LOG_CHUNK: usize = 64 * 1024;
/// Longest plain (non-follow) log answer.
const LOG_MAX_ANSWER: usize = 4 * 1024 * 1024;
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Header with the offset to ask for next.
pub const OFFSET_HEADER: &str = "x-plinth-log-offset";

pub(crate) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/state", get(node_state))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(show_task))
        .route("/v1/tasks/{id}/logs", get(task_logs))
        .route("/v1/tasks/{id}/inspect", get(inspect_task))
        .route("/v1/tasks/{id}/top", get(task_top))
        .route("/v1/tasks/{id}/stats", get(task_stats))
        .route("/v1/lb", get(lb_status))
        .route("/metrics", get(metrics))
        .with_state(node)
}

enum ApiError {
    UnknownTask(String),
    NoLog {
        task_id: String,
        stream: Stream,
    },
    /// The log's name in the sandbox is a symlink or not a regular file (the task put
    /// something else there): it is not served.
    NotALog {
        task_id: String,
        stream: Stream,
    },
    ReadLog {
        task_id: String,
        error: std::io::Error,
    },
}

fn log_error(task_id: &str, stream: Stream, error: std::io::Error) -> ApiError {
    let task_id = task_id.to_string();
    if error.kind() == std::io::ErrorKind::NotFound {
        ApiError::NoLog { task_id, stream }
    } else if sandbox_fs::is_refused_link(&error) || error.kind() == std::io::ErrorKind::InvalidInput {
        ApiError::NotALog { task_id, stream }
    } else {
        ApiError::ReadLog { task_id, error }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::UnknownTask(id) => (StatusCode::NOT_FOUND, format!("unknown task '{id}'")),
            ApiError::NoLog { task_id, stream } => {
                (StatusCode::NOT_FOUND, format!("task '{task_id}' has no {} log (yet)", stream.file_name()))
            }
            ApiError::NotALog { task_id, stream } => (
                StatusCode::FORBIDDEN,
                format!(
                    "the {} of task '{task_id}' is not a regular file in its sandbox (a symlink or a special file); it is not served",
                    stream.file_name()
                ),
            ),
            ApiError::ReadLog { task_id, error } => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the log of task '{task_id}': {error}"))
            }
        };
        (status, Json(json!({ "message": message }))).into_response()
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn node_state(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let state = node.lock();
    let live = state.tasks.values().filter(|t| !t.is_terminal()).count();
    Json(json!({
        "agent_id": node.agent_id(),
        "hostname": node.config.hostname,
        "advertise_ip": node.advertise_ip.to_string(),
        "master": node.config.master,
        "resources": node.resources,
        "attributes": node.config.attributes,
        "generation": state.applied_generation,
        "tasks": { "live": live, "total": state.tasks.len() },
        "pending_status_updates": state.outbox.len(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// A task as the API shows it.
#[derive(Debug, Serialize)]
struct TaskInfo {
    id: TaskId,
    app_id: String,
    version: String,
    state: TaskState,
    pid: Option<i32>,
    sandbox: PathBuf,
    ports: Vec<u16>,
    cpus: f64,
    mem: f64,
    launched_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    exit_code: Option<i32>,
    message: Option<String>,
    reason: Option<String>,
    killing: bool,
}

impl From<&TaskRecord> for TaskInfo {
    fn from(r: &TaskRecord) -> Self {
        TaskInfo {
            id: r.spec.task_id.clone(),
            app_id: r.spec.app_id.to_string(),
            version: r.spec.version.clone(),
            state: r.state,
            pid: r.pid,
            sandbox: r.sandbox.clone(),
            ports: r.spec.host_ports.clone(),
            cpus: r.spec.app.cpus,
            mem: r.spec.app.mem,
            launched_at: r.launched_at.to_iso(),
            started_at: r.running_since.map(|t| t.to_iso()),
            finished_at: r.finished_at.map(|t| t.to_iso()),
            exit_code: r.exit_code,
            message: r.message.clone(),
            reason: r.reason.clone(),
            killing: r.kill_requested_at.is_some() && !r.is_terminal(),
        }
    }
}

async fn list_tasks(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let state = node.lock();
    let tasks: Vec<TaskInfo> = state.tasks.values().map(TaskInfo::from).collect();
    Json(json!({ "tasks": tasks }))
}

async fn show_task(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Json<TaskInfo>, ApiError> {
    let state = node.lock();
    state.tasks.get(&TaskId::new(id.clone())).map(|r| Json(TaskInfo::from(r))).ok_or(ApiError::UnknownTask(id))
}

/// The task's record, sandbox and cgroup directories, looked up under the lock.
fn task_parts(node: &Node, id: &str) -> Result<(TaskInfo, PathBuf, Vec<PathBuf>, Option<String>), ApiError> {
    let state = node.lock();
    let record = state.tasks.get(&TaskId::new(id)).ok_or_else(|| ApiError::UnknownTask(id.to_string()))?;
    let cgroup = record.handle.as_ref().and_then(|h| h.cgroup.clone());
    Ok((
        TaskInfo::from(record),
        record.sandbox.clone(),
        cgroup.as_ref().map(|c| c.dirs.clone()).unwrap_or_default(),
        cgroup.map(|c| c.name),
    ))
}

/// `docker inspect` for a task: its record, the container (image digest, pid, address,
/// ports, rootfs) and its cgroup with current use.
async fn inspect_task(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (info, sandbox, dirs, cgroup) = task_parts(&node, &id)?;
    let container = inspect::container_record(&sandbox);
    let app_container = {
        let state = node.lock();
        state.tasks.get(&TaskId::new(id.as_str())).and_then(|r| r.spec.app.container.clone())
    };
    let stats = if info.state.is_terminal() { None } else { Some(inspect::stats(&dirs)) };
    Ok(Json(json!({
        "task": info,
        // The agent's part of the start; the master's inspect adds its own phases.
        "timeline": inspect::start_phases(&sandbox),
        "container": container,
        "spec": app_container,
        "cgroup": cgroup.map(|name| json!({"name": name, "dirs": dirs})),
        "stats": stats,
    })))
}

/// `docker top`: the processes in the task's cgroup.
async fn task_top(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, _, dirs, _) = task_parts(&node, &id)?;
    Ok(Json(json!({ "processes": inspect::processes(&dirs) })))
}

/// `docker stats`: cpu and memory from the task's cgroup.
async fn task_stats(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Result<Json<inspect::Stats>, ApiError> {
    let (_, _, dirs, _) = task_parts(&node, &id)?;
    Ok(Json(inspect::stats(&dirs)))
}

/// The balancer: its table generation, frontends and backends with their counters.
async fn lb_status(State(node): State<Arc<Node>>) -> Json<crate::lb::stats::LbView> {
    Json(node.balancer.view())
}

/// Prometheus text: per-task cpu and memory of the live tasks, and the balancer's counters.
async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let tasks: Vec<(String, String, Vec<PathBuf>)> = {
        let state = node.lock();
        state
            .tasks
            .values()
            .filter(|r| !r.is_terminal())
            .map(|r| {
                let dirs =
                    r.handle.as_ref().and_then(|h| h.cgroup.as_ref()).map(|c| c.dirs.clone()).unwrap_or_default();
                (r.spec.task_id.to_string(), r.spec.app_id.to_string(), dirs)
            })
            .collect()
    };
    let mut out = String::new();
    out.push_str("# HELP plinth_agent_tasks Live tasks on this agent.\n# TYPE plinth_agent_tasks gauge\n");
    out.push_str(&format!("plinth_agent_tasks {}\n", tasks.len()));
    out.push_str("# HELP plinth_task_cpu_seconds_total CPU time used by the task.\n# TYPE plinth_task_cpu_seconds_total counter\n");
    let stats: Vec<_> = tasks.iter().map(|(t, a, dirs)| (t, a, inspect::stats(dirs))).collect();
    for (task, app, s) in &stats {
        if let Some(usec) = s.cpu_usage_usec {
            out.push_str(&format!(
                "plinth_task_cpu_seconds_total{{task_id=\"{task}\",app_id=\"{app}\"}} {}\n",
                usec as f64 / 1e6
            ));
        }
    }
    out.push_str("# HELP plinth_task_memory_bytes Memory used by the task.\n# TYPE plinth_task_memory_bytes gauge\n");
    for (task, app, s) in &stats {
        if let Some(bytes) = s.memory_bytes {
            out.push_str(&format!("plinth_task_memory_bytes{{task_id=\"{task}\",app_id=\"{app}\"}} {bytes}\n"));
        }
    }
    out.push_str(
        "# HELP plinth_task_memory_limit_bytes The task's memory limit.\n# TYPE plinth_task_memory_limit_bytes gauge\n",
    );
    for (task, app, s) in &stats {
        if let Some(bytes) = s.memory_limit_bytes {
            out.push_str(&format!("plinth_task_memory_limit_bytes{{task_id=\"{task}\",app_id=\"{app}\"}} {bytes}\n"));
        }
    }
    out.push_str(&crate::lb::stats::prometheus(&node.balancer.view()));
    let mut response = out.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default = "default_stream")]
    stream: Stream,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    follow: bool,
}

fn default_stream() -> Stream {
    Stream::Stdout
}

async fn task_logs(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let task_id = TaskId::new(id.clone());
    let sandbox = {
        let state = node.lock();
        state.tasks.get(&task_id).map(|r| r.sandbox.clone()).ok_or_else(|| ApiError::UnknownTask(id.clone()))?
    };
    if !node.owns_sandbox(&sandbox) {
        return Err(ApiError::NoLog { task_id: id, stream: query.stream });
    }
    let stream_name = query.stream;
    // The first read also says whether there is a log to serve at all: a missing one is
    // a 404, a symlink or anything but a regular file a 403 (never followed, never read).
    let read = move |sandbox: PathBuf, offset: u64, max: usize| async move {
        tokio::task::spawn_blocking(move || {
            SandboxDir::open(&sandbox).and_then(|dir| logs::read_from(&dir, stream_name, offset, max))
        })
        .await
        .expect("log read panicked")
    };
    let first = read(sandbox.clone(), query.offset, if query.follow { LOG_CHUNK } else { LOG_MAX_ANSWER })
        .await
        .map_err(|error| log_error(&id, stream_name, error))?;
    let text = HeaderValue::from_static("text/plain; charset=utf-8");
    if !query.follow {
        let (bytes, next) = first;
        let mut response = bytes.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, text);
        response.headers_mut().insert(OFFSET_HEADER, HeaderValue::from(next));
        return Ok(response);
    }
    // Follow: stream what is there, then new bytes as they come, until the task has
    // ended and everything it wrote has been sent. A log that stops being a regular
    // file ends the stream.
    let stream = futures::stream::unfold((Some(first), query.offset, false), move |(first, offset, done)| {
        let node = node.clone();
        let sandbox = sandbox.clone();
        let task_id = task_id.clone();
        async move {
            if done {
                return None;
            }
            if let Some((bytes, next)) = first.filter(|(bytes, _)| !bytes.is_empty()) {
                return Some((Ok::<_, std::io::Error>(bytes), (None, next, false)));
            }
            loop {
                let ended = node.lock().tasks.get(&task_id).is_none_or(|r| r.is_terminal());
                match read(sandbox.clone(), offset, LOG_CHUNK).await {
                    Ok((bytes, next)) if !bytes.is_empty() => return Some((Ok(bytes), (None, next, false))),
                    Ok((_, next)) if ended => return Some((Ok(Vec::new()), (None, next, true))),
                    Ok(_) => tokio::time::sleep(FOLLOW_POLL).await,
                    Err(error) => return Some((Err(error), (None, offset, true))),
                }
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, text);
    Ok(response)
}
