//! `plinth bench burst`: many apps POSTed at once, timed until every task runs. Two runs:
//! a `plinth master` process against in-process fake agents that speak the real agent
//! protocol over HTTP (register, long-polled sync, acknowledged status updates) and report
//! each task `TASK_RUNNING` as soon as they see it: the scheduler's and the protocol's
//! cost alone; then the same master against real `plinth agent` processes running `sleep`
//! command tasks. Reported: the time from the first POST to the last task running, and
//! p50/p99 of each task's launch latency (its app's POST → its `TASK_RUNNING`, the
//! master's `startedAt`). Everything listens on loopback.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use plinth_protocol::agent::{Registered, StatusAck, StatusBatch, StatusUpdate, SyncRequest, SyncResponse};
use plinth_protocol::{Resources, TaskId, TaskState, Timestamp};

use plinth_master::timeline::{Mark, Phase};

use crate::failover::{kill, spawn_master};
use crate::standalone::{free_port, machine, remove_apps_with_tasks};

#[derive(Debug, clap::Args)]
pub struct BenchBurstArgs {
    /// Apps POSTed at once against the fake agents.
    #[arg(long, default_value_t = 100)]
    pub apps: usize,
    /// Instances of each app.
    #[arg(long, default_value_t = 10)]
    pub instances: usize,
    /// In-process fake agents.
    #[arg(long, default_value_t = 10)]
    pub fake_agents: usize,
    /// Apps POSTed at once against the real agents (each with `--instances` `sleep` tasks).
    #[arg(long, default_value_t = 4)]
    pub real_apps: usize,
    /// Real `plinth agent` processes.
    #[arg(long, default_value_t = 2)]
    pub real_agents: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-burst.json")]
    pub out: PathBuf,
}

/// What one burst measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Outcome {
    agents: String,
    apps: usize,
    tasks: usize,
    /// First POST sent → last task `TASK_RUNNING`.
    all_running_ms: i64,
    /// Slowest `POST /v2/apps` answer (201).
    slowest_post_ms: f64,
    launch_p50_ms: Option<i64>,
    launch_p99_ms: Option<i64>,
    launch_max_ms: Option<i64>,
    /// Real agents only: the median time from the POST to the end of each start phase
    /// (the tasks' timelines, `GET /v1/tasks/{id}/inspect`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    phase_p50_ms: Vec<(Phase, i64)>,
}

pub fn run(args: BenchBurstArgs) -> anyhow::Result<Value> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("plinth bench burst runs real agents and tasks: run it as root");
    }
    let dir = tempfile::Builder::new().prefix("plinth-bench-burst-").tempdir()?;
    let load_before = machine();
    let fake = fake_burst(dir.path(), &args).context("burst against fake agents")?;
    print_outcome(&fake);
    let real = real_burst(dir.path(), &args).context("burst against real agents")?;
    print_outcome(&real);
    let report = json!({
        "machine_before": load_before,
        "machine_after": machine(),
        "launch_latency": "POST /v2/apps sent -> the task's startedAt (TASK_RUNNING applied by the master)",
        "runs": [fake, real],
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("(every figure in {})", args.out.display());
    Ok(report)
}

fn print_outcome(o: &Outcome) {
    let f = |v: Option<i64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    println!(
        "burst, {}: {} apps x {} = {} tasks running {} ms after the first POST; launch p50 {} p99 {} max {}; \
         slowest POST {:.0} ms",
        o.agents,
        o.apps,
        o.tasks / o.apps.max(1),
        o.tasks,
        o.all_running_ms,
        f(o.launch_p50_ms),
        f(o.launch_p99_ms),
        f(o.launch_max_ms),
        o.slowest_post_ms
    );
    if !o.phase_p50_ms.is_empty() {
        let phases: Vec<String> = o
            .phase_p50_ms
            .iter()
            .map(|(phase, ms)| format!("{} +{ms}", json!(phase).as_str().unwrap_or("?")))
            .collect();
        println!("  median phase ends after the POST (ms): {}", phases.join(", "));
    }
}

fn http(timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    plinth_oci::tls::install_provider();
    Ok(reqwest::blocking::Client::builder().no_proxy().timeout(timeout).build()?)
}

/// A master on loopback (no DNS server), answering once `/ping` does.
fn start_master(dir: &Path, name: &str) -> anyhow::Result<(Processes, String)> {
    let port = free_port()?;
    let master = spawn_master(dir, name, port, &["--dns-port", "0"])?;
    let api = format!("http://127.0.0.1:{port}");
    let processes = Processes { api: api.clone(), children: vec![master], real_tasks: false };
    let client = http(Duration::from_secs(2))?;
    let started = Instant::now();
    while !client.get(format!("{api}/ping")).send().is_ok_and(|r| r.status().is_success()) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the master did not come up; see {}", dir.join(format!("{name}.log")).display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((processes, api))
}

/// 100 apps × 10 instances (by default) against fake agents over HTTP.
fn fake_burst(dir: &Path, args: &BenchBurstArgs) -> anyhow::Result<Outcome> {
    let (master, api) = start_master(dir, "fake-master")?;
    let per_agent = (args.apps * args.instances).div_ceil(args.fake_agents.max(1)) + 1;
    let resources = Resources::parse(&format!(
        "cpus:{};mem:{};disk:0;ports:[31000-32000]",
        per_agent as f64 * 0.01 + 1.0,
        per_agent * 4 + 64
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let agents: Vec<_> = (0..args.fake_agents.max(1))
        .map(|i| {
            let (api, resources, stop) = (api.clone(), resources.clone(), stop.clone());
            std::thread::spawn(move || fake_agent(&api, i, &resources, &stop))
        })
        .collect();
    wait_for_agents(&api, args.fake_agents.max(1))?;
    let outcome = burst(&api, "fake", args.apps, args.instances, "sleep 3600").map(|(outcome, _, _)| outcome);
    stop.store(true, Ordering::Relaxed);
    for agent in agents {
        match agent.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) if outcome.is_ok() => return Err(e.context("a fake agent failed")),
            _ => {}
        }
    }
    drop(master);
    Ok(Outcome { agents: format!("{} fake agents (agent protocol over HTTP)", args.fake_agents), ..outcome? })
}

/// One fake agent: registers, long-polls its desired state and reports every new task
/// `TASK_RUNNING` at once, until `stop`.
fn fake_agent(api: &str, index: usize, resources: &Resources, stop: &AtomicBool) -> anyhow::Result<()> {
    let client = http(Duration::from_secs(30))?;
    let registration = crate::scheduler::fake_registration(index, resources);
    let registered: Registered = client
        .post(format!("{api}/agent/v1/register"))
        .json(&registration)
        .send()?
        .error_for_status()?
        .json()
        .context("registering")?;
    let agent_id = registered.agent_id;
    let mut generation = 0;
    let mut reported: HashSet<TaskId> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let request = SyncRequest { wait_ms: 500, ..SyncRequest::new(agent_id.clone(), generation) };
        let answer: SyncResponse = match client.post(format!("{api}/agent/v1/sync")).json(&request).send() {
            Ok(answer) => answer.error_for_status()?.json()?,
            Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if answer.reregister {
            bail!("the master told fake agent {index} to register again");
        }
        let Some(desired) = answer.desired else { continue };
        generation = desired.generation;
        let updates: Vec<StatusUpdate> = desired
            .tasks
            .iter()
            .filter(|task| reported.insert(task.task_id.clone()))
            .map(|task| {
                let update_id = uuid::Uuid::from_u128(fastrand::u128(..));
                let now = Timestamp::now().to_iso();
                StatusUpdate::new(update_id, task.task_id.clone(), task.app_id.clone(), TaskState::TaskRunning, now)
            })
            .collect();
        if updates.is_empty() {
            continue;
        }
        let batch = StatusBatch { agent_id: agent_id.clone(), updates };
        let _: StatusAck =
            client.post(format!("{api}/agent/v1/status")).json(&batch).send()?.error_for_status()?.json()?;
    }
    Ok(())
}

/// A few dozen `sleep` tasks (by default 4 apps × 10) on real agents.
fn real_burst(dir: &Path, args: &BenchBurstArgs) -> anyhow::Result<Outcome> {
    let (mut cluster, api) = start_master(dir, "real-master")?;
    cluster.real_tasks = true;
    let master_url = api.clone();
    for i in 0..args.real_agents.max(1) {
        cluster.children.push(spawn_agent(dir, i, &master_url)?);
    }
    wait_for_agents(&api, args.real_agents.max(1))?;
    let (outcome, tasks, sent_at) = burst(&api, "real", args.real_apps, args.instances, "sleep 3600")?;
    let phase_p50_ms = phase_medians(&api, &tasks, &sent_at)?;
    drop(cluster);
    Ok(Outcome { agents: format!("{} real agents (sleep command tasks)", args.real_agents), phase_p50_ms, ..outcome })
}

/// The median end of each start phase after its app's POST, over `tasks`.
fn phase_medians(
    api: &str,
    tasks: &[Value],
    sent_at: &HashMap<String, Timestamp>,
) -> anyhow::Result<Vec<(Phase, i64)>> {
    let client = http(Duration::from_secs(10))?;
    let mut ends: std::collections::BTreeMap<Phase, Vec<i64>> = Default::default();
    for task in tasks {
        let (Some(id), Some(sent)) = (task["id"].as_str(), task["appId"].as_str().and_then(|a| sent_at.get(a))) else {
            continue;
        };
        let inspect: Value = client.get(format!("{api}/v1/tasks/{id}/inspect")).send()?.error_for_status()?.json()?;
        let marks: Vec<Mark> = serde_json::from_value(inspect["timeline"].clone()).context("a task's timeline")?;
        for mark in marks {
            if let Some(at) = Timestamp::parse_iso(&mark.at) {
                ends.entry(mark.phase).or_default().push(at.millis() - sent.millis());
            }
        }
    }
    Ok(ends.into_iter().map(|(phase, mut ms)| (phase, percentile(&mut ms, 500).unwrap_or_default())).collect())
}

/// The sample `per_mille` of the way through the sorted samples, rounded.
fn percentile(samples: &mut [i64], per_mille: usize) -> Option<i64> {
    samples.sort_unstable();
    samples.get((samples.len().saturating_sub(1) * per_mille + 500) / 1000).copied()
}

/// A `plinth agent` on loopback with its own work dir, API port and host ports.
fn spawn_agent(dir: &Path, index: usize, master: &str) -> anyhow::Result<Child> {
    let name = format!("agent-{index}");
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let ports = 31000 + 1000 * index;
    let child = Command::new(std::env::current_exe()?)
        .args(["agent", "--master", master, "--listen", &format!("127.0.0.1:{}", free_port()?)])
        .arg("--work-dir")
        .arg(dir.join(&name))
        .args(["--hostname", &format!("bench-{name}"), "--advertise-ip", "127.0.0.1", "--dns-port", "0", "--no-lb"])
        .args(["--resources", &format!("cpus:4;mem:4096;disk:1024;ports:[{ports}-{}]", ports + 99)])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting plinth agent")?;
    Ok(child)
}

fn wait_for_agents(api: &str, count: usize) -> anyhow::Result<()> {
    let client = http(Duration::from_secs(5))?;
    let started = Instant::now();
    loop {
        let slaves: Option<Value> = client.get(format!("{api}/master/slaves")).send().ok().and_then(|r| r.json().ok());
        let active = slaves
            .as_ref()
            .and_then(|s| s["slaves"].as_array())
            .map_or(0, |s| s.iter().filter(|a| a["active"] == true).count());
        if active >= count {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{active} of {count} agents registered within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a burst measured, the tasks (as `/v2/tasks` shows them) and when each app's POST was sent.
type Burst = (Outcome, Vec<Value>, HashMap<String, Timestamp>);

/// POSTs `apps` apps of `instances` each at once (one thread each, released together),
/// waits until all their tasks run and measures.
fn burst(api: &str, name: &str, apps: usize, instances: usize, cmd: &str) -> anyhow::Result<Burst> {
    let gate = Arc::new(Barrier::new(apps));
    let posts: Vec<_> = (0..apps)
        .map(|a| {
            let (api, gate) = (api.to_string(), gate.clone());
            let body = json!({"id": format!("/burst/{name}/app-{a:03}"), "cmd": cmd, "instances": instances,
                "cpus": 0.01, "mem": 4, "portDefinitions": []});
            std::thread::spawn(move || -> anyhow::Result<(String, Timestamp, f64)> {
                let client = http(Duration::from_secs(60))?;
                gate.wait();
                let sent = Timestamp::now();
                let clock = Instant::now();
                let answer = client.post(format!("{api}/v2/apps")).json(&body).send()?;
                let took = clock.elapsed().as_secs_f64() * 1000.0;
                if answer.status().as_u16() != 201 {
                    bail!("POST {}: {} {}", body["id"], answer.status(), answer.text().unwrap_or_default());
                }
                Ok((body["id"].as_str().unwrap_or_default().to_string(), sent, took))
            })
        })
        .collect();
    let mut sent_at: HashMap<String, Timestamp> = HashMap::new();
    let mut slowest_post_ms = 0.0f64;
    for post in posts {
        let (app, sent, took) = post.join().map_err(|_| anyhow::anyhow!("a POST thread panicked"))??;
        sent_at.insert(app, sent);
        slowest_post_ms = slowest_post_ms.max(took);
    }
    let wanted = apps * instances;
    let client = http(Duration::from_secs(30))?;
    let started = Instant::now();
    let tasks = loop {
        let body: Value = client.get(format!("{api}/v2/tasks?status=running")).send()?.json()?;
        let ours: Vec<Value> = body["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["appId"].as_str().is_some_and(|a| sent_at.contains_key(a)))
            .cloned()
            .collect();
        if ours.len() >= wanted {
            break ours;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{} of {wanted} tasks running after 10 minutes", ours.len());
        }
        // Polled slowly: the figures come from the master's startedAt, not from this loop.
        std::thread::sleep(Duration::from_millis(250));
    };
    let first_post = sent_at.values().min().copied().unwrap_or_default();
    let mut latencies: Vec<i64> = Vec::new();
    let mut last_running = first_post;
    for task in &tasks {
        let app = task["appId"].as_str().unwrap_or_default();
        let running = task["startedAt"].as_str().and_then(Timestamp::parse_iso).context("a task without startedAt")?;
        last_running = last_running.max(running);
        if let Some(sent) = sent_at.get(app) {
            latencies.push(running.millis() - sent.millis());
        }
    }
    let outcome = Outcome {
        agents: String::new(),
        apps,
        tasks: tasks.len(),
        all_running_ms: last_running.millis() - first_post.millis(),
        slowest_post_ms,
        launch_p50_ms: percentile(&mut latencies, 500),
        launch_p99_ms: percentile(&mut latencies, 990),
        launch_max_ms: latencies.iter().max().copied(),
        phase_p50_ms: Vec::new(),
    };
    Ok((outcome, tasks, sent_at))
}

/// The master and agents of one run: on drop the apps with tasks are removed (real
/// tasks outlive their agents by design), then every process is stopped.
struct Processes {
    api: String,
    children: Vec<Child>,
    real_tasks: bool,
}

impl Drop for Processes {
    fn drop(&mut self) {
        if self.real_tasks {
            if let Ok(client) = http(Duration::from_secs(10)) {
                remove_apps_with_tasks(&client, &self.api);
            }
        }
        // Agents first (SIGTERM: they stop cleanly), the master last.
        for child in self.children.iter_mut().rev() {
            terminate(child);
        }
    }
}

/// SIGTERM, then SIGKILL after 20 s.
fn terminate(child: &mut Child) {
    // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
    #[allow(clippy::cast_possible_wrap)]
    let pid = child.id() as i32;
    // SAFETY: kill(2) on a child this benchmark started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(child);
}
