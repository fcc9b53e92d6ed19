//! Client commands: talk to a master's Marathon API (and to agents for logs) and show the
//! answers as aligned tables, or as the raw JSON with `--json` for scripts.
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use plinth_protocol::AppId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

mod node;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEPLOYMENT_POLL: Duration = Duration::from_millis(500);
const DEFAULT_AGENT_PORT: u16 = 5051;
/// Where the agent's log answers say the next read starts.
const LOG_OFFSET_HEADER: &str = "x-plinth-log-offset";

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The master's URL.
    #[arg(long, global = true, env = "PLINTH_MASTER", default_value = "http://127.0.0.1:8080")]
    master: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true, env = "PLINTH_JSON")]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Deploy, list, inspect, scale, restart and destroy apps.
    App {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: AppCommand,
    },
    /// List and kill tasks.
    Task {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: TaskCommand,
    },
    /// Print a task's stdout (or stderr), optionally following it.
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        /// The task id (as shown by `plinth task list`).
        task: String,
        /// Keep printing as the task writes.
        #[arg(short, long)]
        follow: bool,
        /// Show stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Show the agents the master knows.
    Node {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: NodeCommand,
    },
    /// Show apps waiting for resources and why offers were declined.
    Queue {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app from a Marathon JSON file (`-` reads stdin).
    Deploy {
        file: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List apps with their task counts.
    List,
    /// Show one app and its tasks.
    Show { id: String },
    /// Print `host:port` of every port of the app's running tasks, one per line.
    Endpoints { id: String },
    /// Wait until all of the app's instances run and no deployment holds it.
    Wait {
        id: String,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Set the number of instances.
    Scale {
        id: String,
        instances: u32,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Replace all tasks of an app with fresh ones.
    Restart {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Stop all tasks of an app and delete it.
    Destroy {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until the deployment has finished.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Override a deployment that holds the app.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List running tasks, of all apps or of one.
    List { app: Option<String> },
    /// Kill tasks; they are replaced unless `--scale` lowers the app's instances.
    Kill {
        /// Task ids (as `plinth task list` shows them).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Lower the app's instances by the killed tasks instead of replacing them.
        #[arg(long)]
        scale: bool,
    },
    /// Everything about one task: container, image digest, pid, address, ports, cgroup.
    Inspect { id: String },
    /// The task's processes (everything in its cgroup).
    Top { id: String },
    /// CPU and memory use from the task's cgroup.
    Stats { id: String },
    /// Print `host:port` of each of the task's ports, one per line (as `docker port`).
    Port { id: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List agents with their resources.
    List,
    /// Place no new tasks on a node and move its tasks elsewhere (within each app's upgrade strategy).
    Drain {
        /// Agent id or hostname.
        node: String,
        /// Return at once instead of waiting until the node is drained.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Wait until at least COUNT agents are registered and active (nodes that are booting).
    Wait {
        count: usize,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Shut a (drained) node down through its node API.
    Poweroff {
        node: String,
        /// Also when tasks still run there.
        #[arg(long)]
        force: bool,
        /// The cluster's join token (nodes booted with plinth.token= require it).
        #[arg(long, env = "PLINTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Machine profiles for PXE boot: role, hostname, attributes per MAC.
    Profile {
        #[command(subcommand)]
        cmd: node::ProfileCommand,
    },
}

impl ClientCommand {
    /// Applies `--master` and `--json` given before the command (`plinth --master URL app
    /// list`); they win over the environment as the flags after the command do.
    pub fn with_globals(mut self, master: Option<String>, json: bool) -> Self {
        let client = match &mut self {
            ClientCommand::App { client, .. }
            | ClientCommand::Task { client, .. }
            | ClientCommand::Logs { client, .. }
            | ClientCommand::Node { client, .. }
            | ClientCommand::Queue { client } => client,
        };
        if let Some(master) = master {
            client.master = master;
        }
        client.json |= json;
        self
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ClientCommand::App { client, cmd } => run_app(Master::new(&client)?, client.json, cmd).await,
            ClientCommand::Task { client, cmd } => run_task(Master::new(&client)?, client.json, cmd).await,
            ClientCommand::Logs { client, task, follow, stderr } => {
                run_logs(Master::new(&client)?, &task, follow, stderr).await
            }
            ClientCommand::Node { client, cmd: NodeCommand::List } => {
                let master = Master::new(&client)?;
                let body = master.call(Method::GET, "/master/slaves", None).await?;
                output(client.json, &body, node_table)
            }
            ClientCommand::Node { client, cmd: NodeCommand::Wait { count, timeout_secs } } => {
                let master = Master::new(&client)?;
                let end = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
                loop {
                    // The master itself may still be booting: an unreachable master is waited for too.
                    let active = match master.call(Method::GET, "/master/slaves", None).await {
                        Ok(body) => active_agents(&body),
                        Err(_) if tokio::time::Instant::now() < end => 0,
                        Err(e) => return Err(e),
                    };
                    if active >= count {
                        println!("{active} agent(s) active");
                        return Ok(());
                    }
                    if tokio::time::Instant::now() >= end {
                        bail!("{active} of {count} agent(s) active after {timeout_secs} s");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            ClientCommand::Node { client, cmd: NodeCommand::Drain { node, no_wait, timeout_secs } } => {
                node::drain(&Master::new(&client)?, client.json, &node, !no_wait, Duration::from_secs(timeout_secs))
                    .await
            }
            ClientCommand::Node { client, cmd: NodeCommand::Poweroff { node, force, token } } => {
                node::poweroff(&Master::new(&client)?, &node, force, token.as_deref()).await
            }
            ClientCommand::Node { client, cmd: NodeCommand::Profile { cmd } } => {
                node::profile(&Master::new(&client)?, client.json, cmd).await
            }
            ClientCommand::Queue { client } => {
                let master = Master::new(&client)?;
                // Plinth's queue (`/v1/queue`): Marathon's offer summary and readable reasons.
                let body = master.call(Method::GET, "/v1/queue", None).await?;
                output(client.json, &body, queue_table)
            }
        }
    }
}

/// An error answer from the master, shown as Marathon gives it.
#[derive(Debug)]
struct ApiError {
    method: Method,
    path: String,
    status: StatusCode,
    message: String,
    details: Vec<(String, Vec<String>)>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query string is noise here; the path says what was asked for.
        let path = self.path.split('?').next().unwrap_or_default();
        write!(f, "{} {path} failed with {}: {}", self.method, self.status, self.message)?;
        for (path, errors) in &self.details {
            write!(f, "\n  {path}: {}", errors.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

fn api_error(method: Method, path: &str, status: StatusCode, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().chars().take(500).collect());
    let details = parsed
        .as_ref()
        .and_then(|v| v.get("details"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|d| {
                    let path = text(d, "path");
                    let errors = d
                        .get("errors")
                        .and_then(Value::as_array)
                        .map(|e| {
                            e.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect()
                        })
                        .unwrap_or_default();
                    (path, errors)
                })
                .collect()
        })
        .unwrap_or_default();
    ApiError { method, path: path.to_string(), status, message, details }
}

/// The master's API.
struct Master {
    base: String,
    http: reqwest::Client,
}

impl Master {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let base = args.master.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--master must be an http:// URL, got '{base}'");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Master { base, http })
    }

    /// One API call; the answer's JSON (`null` for an empty body) or a readable error.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(api_error(method, path, status, &bytes).into());
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {path}: the master answered with invalid JSON"))
    }

    fn unreachable(&self, err: reqwest::Error) -> anyhow::Error {
        anyhow::Error::new(err).context(format!("cannot reach the master at {}", self.base))
    }

    /// Polls `/v2/deployments` until the deployment is gone (finished or replaced).
    async fn wait_for_deployment(&self, deployment_id: &str, timeout: Duration) -> anyhow::Result<()> {
        let _progress = AbortOnDrop(tokio::spawn(show_pull_progress(self.base.clone(), self.http.clone())));
        let started = Instant::now();
        loop {
            let deployments = self.call(Method::GET, "/v2/deployments", None).await?;
            let running = deployments
                .as_array()
                .is_some_and(|list| list.iter().any(|d| d.get("id").and_then(Value::as_str) == Some(deployment_id)));
            if !running {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                bail!(
                    "deployment {deployment_id} is still running after {}s (see `plinth queue` for apps waiting for resources)",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(DEPLOYMENT_POLL).await;
        }
    }
}

/// Stops a background task when the waiting ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Shows the master's image pulls (`image_pull_*` events) as progress bars on stderr
/// while a deployment runs; silent when stderr is not a terminal.
async fn show_pull_progress(base: String, http: reqwest::Client) {
    let Ok(response) = http.get(format!("{base}/v1/events")).header("accept", "text/event-stream").send().await else {
        return;
    };
    let bars = indicatif::MultiProgress::new();
    let mut pulls: std::collections::HashMap<String, indicatif::ProgressBar> = Default::default();
    let (mut buffer, mut event) = (String::new(), String::new());
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if let Ok(data) = serde_json::from_str::<Value>(data.trim()) {
                    show_pull_event(&bars, &mut pulls, &event, &data);
                }
            }
        }
    }
}

fn show_pull_event(
    bars: &indicatif::MultiProgress,
    pulls: &mut std::collections::HashMap<String, indicatif::ProgressBar>,
    event: &str,
    data: &Value,
) {
    if !event.starts_with("image_pull_") {
        return;
    }
    let image = data.get("image").and_then(Value::as_str).unwrap_or("image").to_string();
    let bar = pulls.entry(image.clone()).or_insert_with(|| {
        let bar = bars.add(indicatif::ProgressBar::new(0));
        let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_message(format!("pulling {image}"));
        bar
    });
    let number = |key: &str| data.get(key).and_then(Value::as_u64).unwrap_or(0);
    match event {
        "image_pull_progress" => {
            bar.set_length(number("bytesTotal"));
            bar.set_position(number("bytesDone"));
            bar.set_message(format!("pulling {image} (layer {}/{})", number("layersDone"), number("layersTotal")));
        }
        "image_pull_completed" => bar.finish_with_message(format!("pulled {image}")),
        "image_pull_failed" => {
            let message = data.get("message").and_then(Value::as_str).unwrap_or("failed");
            bar.abandon_with_message(format!("pull of {image} failed: {message}"));
        }
        _ => {}
    }
}

/// `/hello` or `hello` → `/v2/apps/hello`, rejecting ids the master would refuse anyway.
fn app_path(id: &str) -> anyhow::Result<String> {
    let id = AppId::parse(id).map_err(anyhow::Error::new)?;
    Ok(format!("/v2/apps{id}"))
}

fn force_query(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

fn read_app_file(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the app definition from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{file} is not valid JSON"))?;
    if !value.is_object() {
        bail!("{file} must hold one app definition (a JSON object)");
    }
    Ok(value)
}

async fn run_app(master: Master, json_out: bool, cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Deploy { file, wait } => {
            let app = read_app_file(&file)?;
            let created = master.call(Method::POST, "/v2/apps", Some(&app)).await?;
            let deployment = created.pointer("/deployments/0/id").and_then(Value::as_str).map(str::to_string);
            report_change(
                &master,
                json_out,
                &created,
                &format!("created app {}", text(&created, "id")),
                deployment,
                &wait,
            )
            .await
        }
        AppCommand::List => {
            let body = master.call(Method::GET, "/v2/apps?embed=apps.counts", None).await?;
            output(json_out, &body, app_table)
        }
        AppCommand::Show { id } => {
            let path = format!("{}?embed=app.tasks&embed=app.counts&embed=app.lastTaskFailure", app_path(&id)?);
            let body = master.call(Method::GET, &path, None).await?;
            output(json_out, &body, show_app)
        }
        AppCommand::Endpoints { id } => {
            let body = master.call(Method::GET, &format!("{}/tasks", app_path(&id)?), None).await?;
            output(json_out, &body, |b| endpoints(b.get("tasks").unwrap_or(&Value::Null)))
        }
        AppCommand::Wait { id, timeout } => {
            let path = app_path(&id)?;
            let end = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let body = master.call(Method::GET, &path, None).await?;
                let app = body.get("app").unwrap_or(&Value::Null);
                let (running, wanted) = (number(app, "tasksRunning"), number(app, "instances"));
                let deploying = app.get("deployments").and_then(Value::as_array).is_some_and(|d| !d.is_empty());
                if running >= wanted && !deploying {
                    println!(
                        "{}: {} of {} instance(s) running",
                        text(app, "id"),
                        number_text(running),
                        number_text(wanted)
                    );
                    return Ok(());
                }
                if tokio::time::Instant::now() >= end {
                    anyhow::bail!(
                        "{}: {} of {} instance(s) running after {timeout} s (see `plinth queue` for why)",
                        text(app, "id"),
                        number_text(running),
                        number_text(wanted)
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        AppCommand::Scale { id, instances, change } => {
            // A PUT of a missing app would try to create it (Marathon's semantics) and fail
            // validation with a 422 about fields the user never wrote: say what is wrong.
            if let Err(e) = master.call(Method::GET, &app_path(&id)?, None).await {
                if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == StatusCode::NOT_FOUND) {
                    bail!("no such app: {} (see `plinth app list`)", AppId::parse(&id)?);
                }
                return Err(e);
            }
            let path = format!("{}{}", app_path(&id)?, force_query(change.force));
            let answer = master.call(Method::PUT, &path, Some(&json!({ "instances": instances }))).await?;
            let summary = format!("scaling {} to {instances} instance(s)", AppId::parse(&id)?);
            report_deployment(&master, json_out, &answer, &summary, &change.wait).await
        }
        AppCommand::Restart { id, change } => {
            let path = format!("{}/restart{}", app_path(&id)?, force_query(change.force));
            let answer = master.call(Method::POST, &path, None).await?;
            let summary = format!("restarting {}", AppId::parse(&id)?);
            report_deployment(&master, json_out, &answer, &summary, &change.wait).await
        }
        AppCommand::Destroy { id, change } => {
            let path = format!("{}{}", app_path(&id)?, force_query(change.force));
            let answer = master.call(Method::DELETE, &path, None).await?;
            let summary = format!("destroying {}", AppId::parse(&id)?);
            report_deployment(&master, json_out, &answer, &summary, &change.wait).await
        }
    }
}

/// For answers of the `{"version","deploymentId"}` shape.
async fn report_deployment(
    master: &Master,
    json_out: bool,
    answer: &Value,
    summary: &str,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    let deployment = answer.get("deploymentId").and_then(Value::as_str).map(str::to_string);
    report_change(master, json_out, answer, summary, deployment, wait).await
}

async fn report_change(
    master: &Master,
    json_out: bool,
    answer: &Value,
    summary: &str,
    deployment: Option<String>,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    if json_out {
        print_json(answer)?;
    } else {
        match &deployment {
            Some(id) => println!("{summary} (deployment {id})"),
            None => println!("{summary}"),
        }
    }
    if wait.wait {
        if let Some(id) = deployment {
            master.wait_for_deployment(&id, Duration::from_secs(wait.timeout)).await?;
            if !json_out {
                println!("deployment {id} finished");
            }
        }
    }
    Ok(())
}

async fn run_task(master: Master, json_out: bool, cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::List { app } => {
            let path = match app {
                Some(id) => format!("{}/tasks", app_path(&id)?),
                None => "/v2/tasks".to_string(),
            };
            let body = master.call(Method::GET, &path, None).await?;
            output(json_out, &body, |b| task_table(b.get("tasks").unwrap_or(&Value::Null)))
        }
        TaskCommand::Kill { ids, scale } => {
            let path = format!("/v2/tasks/delete{}", if scale { "?scale=true" } else { "" });
            let answer = master.call(Method::POST, &path, Some(&json!({ "ids": ids }))).await?;
            if json_out {
                return print_json(&answer);
            }
            match answer.get("deploymentId").and_then(Value::as_str) {
                Some(deployment) => println!("killing {} task(s), scaling down (deployment {deployment})", ids.len()),
                None => println!("killing {} task(s); they will be replaced", ids.len()),
            }
            Ok(())
        }
        TaskCommand::Inspect { id } => {
            let body = agent_call(&master, &id, "inspect").await?;
            output(json_out, &body, inspect_text)
        }
        TaskCommand::Top { id } => {
            let body = agent_call(&master, &id, "top").await?;
            output(json_out, &body, top_table)
        }
        TaskCommand::Stats { id } => {
            let body = agent_call(&master, &id, "stats").await?;
            output(json_out, &body, stats_text)
        }
        TaskCommand::Port { id } => {
            let body = master.call(Method::GET, "/v2/tasks", None).await?;
            let tasks = body.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default();
            let Some(task) = tasks.into_iter().find(|t| t.get("id").and_then(Value::as_str) == Some(id.as_str()))
            else {
                anyhow::bail!("no such task: {id} (see `plinth task list`)");
            };
            output(json_out, &task, |t| endpoints(&Value::Array(vec![t.clone()])))
        }
    }
}

/// GETs `/v1/tasks/ID/WHAT` from the agent that runs the task.
async fn agent_call(master: &Master, task: &str, what: &str) -> anyhow::Result<Value> {
    let agent = locate_task(master, task).await?;
    let url = format!("{agent}/v1/tasks/{task}/{what}");
    let response = master
        .http
        .get(&url)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {agent}"))?;
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("cannot read the answer of {url}"))?;
    if !status.is_success() {
        return Err(api_error(Method::GET, &url, status, &body).into());
    }
    serde_json::from_slice(&body).with_context(|| format!("{url} did not answer JSON"))
}

fn inspect_text(body: &Value) -> String {
    let task = body.get("task").unwrap_or(&Value::Null);
    let container = body.get("container").unwrap_or(&Value::Null);
    let field = |v: &Value, k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    let mut lines = vec![
        format!("task:      {}", field(task, "id")),
        format!("app:       {}", field(task, "app_id")),
        format!("state:     {}", field(task, "state")),
        format!("pid:       {}", container.get("pid").map_or_else(|| field(task, "pid"), |p| p.to_string())),
        format!("sandbox:   {}", field(task, "sandbox")),
    ];
    if !container.is_null() {
        lines.push(format!("image:     {} ({})", field(container, "image"), field(container, "image_digest")));
        lines.push(format!("network:   {}", field(container, "network")));
        lines.push(format!("ip:        {}", field(container, "ip")));
        if let Some(ports) = container.get("ports").and_then(Value::as_array) {
            for p in ports {
                lines.push(format!(
                    "port:      {}/{} -> host {}",
                    field(p, "containerPort"),
                    field(p, "protocol"),
                    field(p, "hostPort")
                ));
            }
        }
        lines.push(format!("rootfs:    {}", field(container, "rootfs")));
    }
    if let Some(cgroup) = body.get("cgroup").filter(|c| !c.is_null()) {
        lines.push(format!("cgroup:    {}", field(cgroup, "name")));
    }
    if let Some(stats) = body.get("stats").filter(|s| !s.is_null()) {
        lines.push(stats_text(stats));
    }
    lines.join("\n")
}

fn top_table(body: &Value) -> String {
    let mut out = format!("{:<8} {:<8} {:<6} {:>10}  {}\n", "PID", "PPID", "UID", "RSS(KiB)", "COMMAND");
    for p in body.get("processes").and_then(Value::as_array).into_iter().flatten() {
        let n = |k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(0);
        out.push_str(&format!(
            "{:<8} {:<8} {:<6} {:>10}  {}\n",
            n("pid"),
            n("ppid"),
            n("uid"),
            n("rss_kb"),
            p.get("command").and_then(Value::as_str).unwrap_or("")
        ));
    }
    out.trim_end().to_string()
}

fn stats_text(stats: &Value) -> String {
    let mib = |k: &str| {
        stats.get(k).and_then(Value::as_u64).map_or("-".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
    };
    let cpu = stats
        .get("cpu_usage_usec")
        .and_then(Value::as_u64)
        .map_or("-".to_string(), |u| format!("{:.2} s", u as f64 / 1e6));
    format!(
        "cpu:       {cpu}\nmemory:    {} of {} (peak {})\noom kills: {}\nprocesses: {}",
        mib("memory_bytes"),
        mib("memory_limit_bytes"),
        mib("memory_peak_bytes"),
        stats.get("oom_kills").and_then(Value::as_u64).unwrap_or(0),
        stats.get("pids").and_then(Value::as_u64).unwrap_or(0)
    )
}

/// Finds the agent that runs `task` and prints its log from that agent's HTTP API.
async fn run_logs(master: Master, task: &str, follow: bool, stderr: bool) -> anyhow::Result<()> {
    let agent = locate_task(&master, task).await?;
    let stream = if stderr { "stderr" } else { "stdout" };
    let unreachable = |e: reqwest::Error| anyhow::Error::new(e).context(format!("cannot reach the agent at {agent}"));
    let mut out = std::io::stdout().lock();
    let mut offset: u64 = 0;
    loop {
        let url = format!(
            "{agent}/v1/tasks/{task}/logs?stream={stream}&offset={offset}{}",
            if follow { "&follow=true" } else { "" }
        );
        let mut request = master.http.get(&url);
        if !follow {
            request = request.timeout(REQUEST_TIMEOUT);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.map_err(unreachable)?;
            return Err(api_error(Method::GET, &format!("{agent}/v1/tasks/{task}/logs"), status, &body).into());
        }
        // Answers are capped in size; the header says where the next read starts.
        let next =
            response.headers().get(LOG_OFFSET_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let mut chunks = response.bytes_stream();
        let mut received = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(unreachable)?;
            received += chunk.len();
            out.write_all(&chunk).context("cannot write to stdout")?;
            if follow {
                out.flush().context("cannot write to stdout")?;
            }
        }
        match next {
            Some(next) if !follow && received > 0 && next > offset => offset = next,
            _ => break,
        }
    }
    out.flush().context("cannot write to stdout")
}

/// The base URL of the agent that runs (or ran) `task`.
async fn locate_task(master: &Master, task: &str) -> anyhow::Result<String> {
    let slaves = master.call(Method::GET, "/master/slaves", None).await?;
    let slaves = slaves.get("slaves").and_then(Value::as_array).cloned().unwrap_or_default();
    let tasks = master.call(Method::GET, "/v2/tasks", None).await?;
    let found = tasks
        .get("tasks")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|t| t.get("id").and_then(Value::as_str) == Some(task)).cloned());
    if let Some(found) = found {
        let slave_id = found.get("slaveId").and_then(Value::as_str);
        let host = found.get("host").and_then(Value::as_str).unwrap_or_default();
        let slave = slaves.iter().find(|s| slave_id.is_some() && s.get("id").and_then(Value::as_str) == slave_id);
        return Ok(slave.and_then(agent_url).unwrap_or_else(|| format!("http://{host}:{DEFAULT_AGENT_PORT}")));
    }
    // Finished tasks leave the master's list but their logs stay on the agent: ask each one.
    for slave in &slaves {
        let Some(url) = agent_url(slave) else { continue };
        let Ok(response) = master.http.get(format!("{url}/v1/tasks")).timeout(REQUEST_TIMEOUT).send().await else {
            continue;
        };
        let Ok(body) = response.json::<Value>().await else { continue };
        let list = body.get("tasks").or(Some(&body)).and_then(Value::as_array);
        let has_task = list.is_some_and(|l| {
            l.iter().any(|t| [t.get("task_id"), t.get("id")].into_iter().flatten().any(|id| id.as_str() == Some(task)))
        });
        if has_task {
            return Ok(url);
        }
    }
    bail!("task {task} is not known to the master or to any of its agents")
}

/// An agent's HTTP base URL from its `/master/slaves` entry: an explicit `agent_url`, the
/// Mesos `pid` (`slave(1)@10.0.0.3:5051`), or its address and port.
fn agent_url(slave: &Value) -> Option<String> {
    if let Some(url) = slave.get("agent_url").and_then(Value::as_str) {
        return Some(url.trim_end_matches('/').to_string());
    }
    if let Some(pid) = slave.get("pid").and_then(Value::as_str) {
        if let Some((_, address)) = pid.split_once('@') {
            return Some(format!("http://{address}"));
        }
    }
    let ip =
        ["advertise_ip", "address", "ip", "hostname"].iter().find_map(|key| slave.get(*key).and_then(Value::as_str))?;
    let port = ["http_port", "port"].iter().find_map(|key| slave.get(*key).and_then(Value::as_u64));
    Some(format!("http://{ip}:{}", port.unwrap_or(u64::from(DEFAULT_AGENT_PORT))))
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    println!("{text}");
    Ok(())
}

fn output(json_out: bool, body: &Value, render: impl Fn(&Value) -> String) -> anyhow::Result<()> {
    if json_out {
        print_json(body)
    } else {
        // Every view ends its last line, whatever its renderer did.
        let text = render(body);
        if text.is_empty() || text.ends_with('\n') {
            print!("{text}");
        } else {
            println!("{text}");
        }
        Ok(())
    }
}

/// A field as display text: strings bare, numbers and other JSON compact, missing as `-`.
fn text(value: &Value, key: &str) -> String {
    display(value.get(key).unwrap_or(&Value::Null))
}

fn display(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        Value::Number(n) => n.as_f64().map(number_text).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// `32.0` → `32`, `0.1` → `0.1`: Marathon sends whole numbers as floats.
/// For people: at most two decimals, no trailing zeros (`7.049999999999999` → `7.05`).
fn number_text(n: f64) -> String {
    let text = format!("{n:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn app_command(app: &Value) -> String {
    if let Some(image) = app.pointer("/container/docker/image").and_then(Value::as_str) {
        return format!("image {image}");
    }
    match (app.get("cmd").and_then(Value::as_str), app.get("args")) {
        (Some(cmd), _) => cmd.to_string(),
        (None, Some(args)) => display(args),
        (None, None) => "-".to_string(),
    }
}

fn app_table(body: &Value) -> String {
    let apps = body.get("apps").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|app| {
            let deploying = app.get("deployments").and_then(Value::as_array).is_some_and(|d| !d.is_empty());
            vec![
                text(app, "id"),
                format!("{}/{}", number(app, "tasksRunning"), number(app, "instances")),
                text(app, "tasksStaged"),
                text(app, "cpus"),
                text(app, "mem"),
                if deploying { "yes" } else { "-" }.to_string(),
                truncate(&app_command(app), 50),
            ]
        })
        .collect();
    table(&["ID", "RUNNING", "STAGED", "CPUS", "MEM", "DEPLOYING", "COMMAND"], &rows)
}

fn show_app(body: &Value) -> String {
    let app = body.get("app").unwrap_or(body);
    let ports: Vec<String> = app
        .get("portDefinitions")
        .and_then(Value::as_array)
        .map(|defs| defs.iter().map(|d| text(d, "port")).collect())
        .unwrap_or_default();
    let deployments: Vec<String> = app
        .get("deployments")
        .and_then(Value::as_array)
        .map(|d| d.iter().map(|x| text(x, "id")).collect())
        .unwrap_or_default();
    let mut fields = vec![
        ("id", text(app, "id")),
        ("command", app_command(app)),
        ("instances", format!("{} running of {}", number(app, "tasksRunning"), number(app, "instances"))),
        (
            "resources",
            format!("cpus {} · mem {} MB · disk {} MB", text(app, "cpus"), text(app, "mem"), text(app, "disk")),
        ),
        ("service ports", if ports.is_empty() { "-".to_string() } else { ports.join(",") }),
        ("constraints", text(app, "constraints")),
        ("version", text(app, "version")),
        ("deployments", if deployments.is_empty() { "-".to_string() } else { deployments.join(",") }),
    ];
    if let Some(failure) = app.get("lastTaskFailure").filter(|f| !f.is_null()) {
        fields.push((
            "last failure",
            format!("{} {} {}", text(failure, "timestamp"), text(failure, "state"), text(failure, "message")),
        ));
    }
    let mut out: String = fields.iter().map(|(k, v)| format!("{:<15}{v}\n", format!("{k}:"))).collect();
    if let Some(tasks) = app.get("tasks").filter(|t| t.as_array().is_some_and(|a| !a.is_empty())) {
        out.push('\n');
        out.push_str(&task_table(tasks));
    }
    out
}

fn task_table(tasks: &Value) -> String {
    let rows: Vec<Vec<String>> = tasks
        .as_array()
        .map(|list| {
            list.iter()
                .map(|t| {
                    vec![
                        text(t, "id"),
                        text(t, "appId"),
                        text(t, "state"),
                        text(t, "host"),
                        text(t, "ports"),
                        text(t, "startedAt"),
                        text(t, "version"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "APP", "STATE", "HOST", "PORTS", "STARTED", "VERSION"], &rows)
}

/// `host:port` lines for every port of the running tasks in `tasks`.
fn endpoints(tasks: &Value) -> String {
    let mut lines = String::new();
    for task in tasks.as_array().into_iter().flatten() {
        if task.get("state").and_then(Value::as_str).is_some_and(|s| s != "TASK_RUNNING") {
            continue;
        }
        let host = text(task, "host");
        for port in task.get("ports").and_then(Value::as_array).into_iter().flatten() {
            lines.push_str(&format!("{host}:{}\n", display(port)));
        }
    }
    lines
}

/// Agents in a `/master/slaves` answer that are active.
fn active_agents(body: &Value) -> usize {
    let slaves = body.get("slaves").and_then(Value::as_array);
    slaves.into_iter().flatten().filter(|s| s.get("active").and_then(Value::as_bool) == Some(true)).count()
}

fn used_of(slave: &Value, key: &str) -> String {
    let total = slave.pointer(&format!("/resources/{key}")).and_then(Value::as_f64).unwrap_or(0.0);
    let used = slave.pointer(&format!("/used_resources/{key}")).and_then(Value::as_f64).unwrap_or(0.0);
    format!("{}/{}", number_text(used), number_text(total))
}

fn node_table(body: &Value) -> String {
    let slaves = body.get("slaves").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = slaves
        .iter()
        .map(|s| {
            let attributes = s
                .get("attributes")
                .and_then(Value::as_object)
                .map(|a| a.iter().map(|(k, v)| format!("{k}:{}", display(v))).collect::<Vec<_>>().join(";"))
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "-".to_string());
            let active = s.get("active").and_then(Value::as_bool).map_or("-", |a| if a { "yes" } else { "no (lost)" });
            vec![
                text(s, "id"),
                text(s, "hostname"),
                agent_url(s).unwrap_or_else(|| "-".to_string()),
                active.to_string(),
                used_of(s, "cpus"),
                used_of(s, "mem"),
                used_of(s, "disk"),
                attributes,
            ]
        })
        .collect();
    table(&["ID", "HOSTNAME", "ADDRESS", "ACTIVE", "CPUS", "MEM", "DISK", "ATTRIBUTES"], &rows)
}

/// Why offers were declined, from Marathon's `processedOffersSummary` (or a plain list of
/// reasons when the master gives one).
fn decline_reasons(item: &Value) -> String {
    let summary = item.get("processedOffersSummary");
    let reasons: Vec<String> = summary
        .and_then(|s| s.get("rejectSummaryLastOffers"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|r| number(r, "declined") > 0.0)
                .map(|r| format!("{} ({}/{})", text(r, "reason"), number(r, "declined"), number(r, "processed")))
                .collect()
        })
        .unwrap_or_default();
    if !reasons.is_empty() {
        return reasons.join(", ");
    }
    ["reasons", "declineReasons", "lastDeclineReasons"]
        .iter()
        .find_map(|key| item.get(*key).or_else(|| summary.and_then(|s| s.get(*key))))
        .map(display)
        .unwrap_or_else(|| "-".to_string())
}

fn queue_table(body: &Value) -> String {
    let queue = body.get("queue").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = queue
        .iter()
        .map(|item| {
            let app = text(item, "appId");
            let offers = item
                .pointer("/processedOffersSummary/processedOffersCount")
                .map(display)
                .unwrap_or_else(|| "-".to_string());
            let delay =
                item.pointer("/delay/timeLeftSeconds").map(|d| format!("{}s", display(d))).unwrap_or("-".into());
            vec![app, text(item, "count"), offers, delay, decline_reasons(item)]
        })
        .collect();
    table(&["APP", "WAITING", "OFFERS", "DELAY", "DECLINED BECAUSE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out =
            table(&["ID", "STATE"], &[vec!["/a".into(), "TASK_RUNNING".into()], vec!["/long-id".into(), "-".into()]]);
        assert_eq!(out, "ID        STATE\n/a        TASK_RUNNING\n/long-id  -\n");
    }

    #[test]
    fn api_errors_show_status_message_and_paths() {
        let body = br#"{"message":"Object is not valid","details":[{"path":"/cpus","errors":["must be > 0"]}]}"#;
        let err = api_error(Method::POST, "/v2/apps", StatusCode::UNPROCESSABLE_ENTITY, body).to_string();
        assert_eq!(
            err,
            "POST /v2/apps failed with 422 Unprocessable Entity: Object is not valid\n  /cpus: must be > 0"
        );
        let err = api_error(Method::GET, "/x", StatusCode::BAD_GATEWAY, b"upstream down").to_string();
        assert!(err.ends_with("502 Bad Gateway: upstream down"), "{err}");
    }

    #[test]
    fn agent_urls_come_from_whatever_the_master_reports() {
        assert_eq!(agent_url(&json!({"agent_url": "http://10.0.0.3:5051/"})).unwrap(), "http://10.0.0.3:5051");
        assert_eq!(agent_url(&json!({"pid": "slave(1)@10.0.0.4:5051"})).unwrap(), "http://10.0.0.4:5051");
        assert_eq!(agent_url(&json!({"hostname": "a1", "port": 5052})).unwrap(), "http://a1:5052");
    }

    #[test]
    fn queue_shows_decline_reasons() {
        let item = json!({"appId": "/big", "count": 1, "processedOffersSummary": {"processedOffersCount": 4,
            "rejectSummaryLastOffers": [{"reason": "InsufficientMemory", "declined": 2, "processed": 2},
                                        {"reason": "InsufficientCpus", "declined": 0, "processed": 2}]}});
        assert_eq!(decline_reasons(&item), "InsufficientMemory (2/2)");
        let out = queue_table(&json!({"queue": [item]}));
        assert!(out.contains("/big") && out.contains("InsufficientMemory"), "{out}");
        // Nothing declined: Plinth's reasons in words (`/v1/queue`).
        let waiting = json!({"appId": "/lonely", "count": 1, "reasons": ["no active agents: nothing to offer"]});
        assert_eq!(decline_reasons(&waiting), "no active agents: nothing to offer");
    }

    #[test]
    fn endpoints_list_every_port_of_running_tasks_only() {
        let tasks = json!([
            {"id": "a", "state": "TASK_RUNNING", "host": "10.0.0.3", "ports": [31001, 31002]},
            {"id": "b", "state": "TASK_STAGING", "host": "10.0.0.4", "ports": [31005]},
            {"id": "c", "state": "TASK_RUNNING", "host": "10.0.0.5", "ports": []}
        ]);
        assert_eq!(endpoints(&tasks), "10.0.0.3:31001\n10.0.0.3:31002\n");
    }

    #[test]
    fn whole_numbers_show_without_a_fraction() {
        assert_eq!(number_text(7.049999999999999), "7.05");
        assert_eq!(number_text(8.0), "8");
        assert_eq!(number_text(0.001), "0");
        assert_eq!(
            used_of(&json!({"resources": {"cpus": 8.0}, "used_resources": {"cpus": 7.049999999999999}}), "cpus"),
            "7.05/8"
        );
        assert_eq!(text(&json!({"mem": 32.0, "cpus": 0.1}), "mem"), "32");
        assert_eq!(text(&json!({"mem": 32.0, "cpus": 0.1}), "cpus"), "0.1");
        assert_eq!(text(&json!({}), "mem"), "-");
    }

    #[test]
    fn app_paths_are_validated_locally() {
        assert_eq!(app_path("group/web").unwrap(), "/v2/apps/group/web");
        assert!(app_path("Bad_Id").is_err());
    }
}
