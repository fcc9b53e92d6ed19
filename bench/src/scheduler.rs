//! `plinth bench scheduler`: the real master core (allocator, offers, supervisor,
//! deployments) and the real store behind the master's writer thread (group commit,
//! fsync'd redb transactions, `store/writer.rs`), driven by in-process fake agents that
//! report every launched task `TASK_RUNNING` as soon as its placement is durable (the
//! master wakes agents only then). As in the master, a round computes while the
//! previous one's batch is written. Measures placements per second end to end and the
//! process's peak memory.
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use plinth_protocol::agent::{Registration, StatusUpdate};
use plinth_protocol::{AgentId, AppDefinition, Resources, TaskId, TaskState, Timestamp};

use anyhow::bail;
use plinth_master::store::writer::{Ticket, Writer};
use plinth_master::store::{Batch, Store};
use plinth_scheduler::{Core, CoreConfig};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub agents: usize,
    pub tasks: usize,
    pub apps: usize,
    pub placed: usize,
    pub rounds: usize,
    pub elapsed: Duration,
    /// Time spent in the core (allocation, status updates).
    pub core_time: Duration,
    /// Reading dirty records back and encoding them (under the master's lock).
    pub encode_time: Duration,
    /// The writer thread's transactions (overlapping the core), and how many there were.
    pub write_time: Duration,
    pub transactions: u64,
    /// Time the rounds waited for a write (fake agents waiting for durable placements).
    pub wait_time: Duration,
    pub peak_rss_kib: u64,
    pub rss_before_kib: u64,
    pub store_bytes: u64,
}

impl BenchReport {
    pub fn placements_per_second(&self) -> f64 {
        self.placed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_task =
            (self.peak_rss_kib.saturating_sub(self.rss_before_kib) as f64 * 1024.0) / self.placed.max(1) as f64;
        writeln!(f, "scheduler bench: {} agents, {} apps, {} tasks", self.agents, self.apps, self.tasks)?;
        writeln!(
            f,
            "  placed and running:   {} in {:.2} s over {} rounds",
            self.placed,
            self.elapsed.as_secs_f64(),
            self.rounds
        )?;
        writeln!(f, "  placements/s:         {:.0}", self.placements_per_second())?;
        writeln!(f, "  core time:            {:.2} s", self.core_time.as_secs_f64())?;
        writeln!(
            f,
            "  encode time:          {:.2} s (batches read back from the core)",
            self.encode_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "  store write time:     {:.2} s in {} transactions on the writer thread ({} MiB on disk)",
            self.write_time.as_secs_f64(),
            self.transactions,
            self.store_bytes / (1024 * 1024)
        )?;
        writeln!(f, "  waited for writes:    {:.2} s", self.wait_time.as_secs_f64())?;
        writeln!(
            f,
            "  peak RSS:             {} MiB (+{:.0} bytes per task over the start)",
            self.peak_rss_kib / 1024,
            per_task
        )?;
        write!(f, "  reference points:     Nomad 1M containers / 5,000 nodes < 5 min (~3,750/s); kube-scheduler ~100-300 pods/s")
    }
}

/// Reads a `/proc/self/status` field in KiB (0 where unavailable).
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the benchmark with `agents` fake agents and `tasks` tasks spread over apps of
/// up to 1,000 instances each. The store lives in a temporary directory.
pub fn run_scheduler_bench(agents: usize, tasks: usize) -> anyhow::Result<BenchReport> {
    let dir = std::env::temp_dir().join(format!("plinth-bench-{}", std::process::id()));
    let result = run_in(&dir, agents.max(1), tasks);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &std::path::Path, agents: usize, tasks: usize) -> anyhow::Result<BenchReport> {
    let store = Store::open(dir)?;
    let rss_before_kib = proc_status_kib("VmRSS:");
    let config = CoreConfig { agent_timeout_ms: i64::MAX / 4, max_launches_per_tick: 20_000, ..CoreConfig::default() };
    let mut core = Core::new(config, plinth_master::ids::random_ids());
    // Room for every task with headroom: tasks take 0.1 cpu, 32 MB and one port.
    let per_agent = tasks.div_ceil(agents) + 1;
    let resources = Resources::parse(&format!(
        "cpus:{};mem:{};disk:0;ports:[20000-{}]",
        per_agent as f64 * 0.1 + 1.0,
        per_agent * 32 + 64,
        20000 + per_agent.min(40000) + 10
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut clock = Timestamp::now();
    crate::scheduler::register_fake_agents(&mut core, agents, &resources, clock);
    let registered = core.take_changes();
    store.apply(&core, &registered)?;
    let written_ns = Arc::new(AtomicU64::new(0));
    let transactions = Arc::new(AtomicU64::new(0));
    let writer = {
        let (written_ns, transactions) = (written_ns.clone(), transactions.clone());
        Writer::start(Arc::new(store.clone()), move |group| {
            written_ns.fetch_add(u64::try_from(group.elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
            transactions.fetch_add(1, Ordering::Relaxed);
        })
    };

    let apps = tasks.div_ceil(1000).max(1);
    let start = Instant::now();
    let mut core_time = Duration::ZERO;
    let mut encode_time = Duration::ZERO;
    let mut wait_time = Duration::ZERO;
    for a in 0..apps {
        let instances = (tasks - a * 1000).min(1000);
        let mut def = AppDefinition::from_value(json!({
            "id": format!("/bench/app-{a}"), "cmd": "sleep 1000", "instances": instances, "cpus": 0.1, "mem": 32,
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        def.normalize();
        core.create_app(def, clock).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut rounds = 0;
    let mut running = 0usize;
    // The previous round's placements: its agents answer once they are durable.
    let mut answering: Option<(Ticket, HashMap<AgentId, Vec<StatusUpdate>>)> = None;
    let mut last_write: Option<Ticket> = None;
    loop {
        rounds += 1;
        clock = clock.plus_millis(100);
        let t0 = Instant::now();
        core.tick(clock);
        let changes = core.take_changes();
        // Fake agents: every staged task starts at once.
        let per_agent = staged_tasks_running(&core, &changes, clock);
        let launched: usize = per_agent.values().map(Vec::len).sum();
        core_time += t0.elapsed();
        let placements = submit(&writer, &core, &changes, &mut encode_time)?;
        let previous = answering.replace((placements, per_agent));
        if let Some((placed, per_agent)) = previous {
            let t1 = Instant::now();
            placed.wait()?;
            wait_time += t1.elapsed();
            let t2 = Instant::now();
            for (agent, updates) in per_agent {
                running += updates.len();
                core.apply_status_updates(&agent, updates, clock);
            }
            let changes = core.take_changes();
            core_time += t2.elapsed();
            last_write = Some(submit(&writer, &core, &changes, &mut encode_time)?);
        }
        if running >= tasks {
            break;
        }
        if launched == 0 && rounds > 10 && core.queue(clock).iter().all(|q| q.count == 0) {
            break;
        }
        if rounds > 100_000 {
            bail!("the scheduler stopped making progress");
        }
    }
    let t = Instant::now();
    if let Some(ticket) = last_write {
        ticket.wait()?;
    }
    wait_time += t.elapsed();
    let elapsed = start.elapsed();
    let store_bytes = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    Ok(BenchReport {
        agents,
        tasks,
        apps,
        placed: running,
        rounds,
        elapsed,
        core_time,
        encode_time,
        write_time: Duration::from_nanos(written_ns.load(Ordering::Relaxed)),
        transactions: transactions.load(Ordering::Relaxed),
        wait_time,
        peak_rss_kib: proc_status_kib("VmHWM:"),
        rss_before_kib,
        store_bytes,
    })
}

/// Reads a round's dirty records back (as the master does under its lock) and hands them
/// to the writer.
fn submit(
    writer: &Writer,
    core: &Core,
    changes: &plinth_scheduler::Changes,
    encode_time: &mut Duration,
) -> anyhow::Result<Ticket> {
    let t = Instant::now();
    let batch = Batch::of(core, changes)?;
    *encode_time += t.elapsed();
    Ok(writer.submit(batch, None))
}

/// Registers `count` in-process agents (`agent-N`, 10.x.y.z) with `resources` each.
pub(crate) fn register_fake_agents(core: &mut Core, count: usize, resources: &Resources, clock: Timestamp) {
    for i in 0..count {
        core.register_agent(fake_registration(i, resources), clock);
    }
}

/// The registration of fake agent `i` (`agent-N`, 10.x.y.z; nothing listens there).
pub(crate) fn fake_registration(i: usize, resources: &Resources) -> Registration {
    Registration {
        agent_id: None,
        hostname: format!("agent-{i}"),
        advertise_ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        http_port: 5051,
        resources: resources.clone(),
        attributes: Default::default(),
        last_generation: 0,
        tasks: vec![],
        version: "bench".into(),
    }
}

/// What fake agents report for the round's `changes`: every task it staged, running now.
pub(crate) fn staged_tasks_running(
    core: &plinth_scheduler::Core,
    changes: &plinth_scheduler::Changes,
    now: Timestamp,
) -> HashMap<AgentId, Vec<StatusUpdate>> {
    let mut per_agent: HashMap<AgentId, Vec<StatusUpdate>> = HashMap::new();
    // One clock reading per round, formatted once: the agents' side is not what is measured.
    let at = now.to_iso();
    for id in &changes.tasks {
        let Some(task) = core.task(id) else { continue };
        if task.state == TaskState::TaskStaging {
            per_agent.entry(task.agent_id.clone()).or_default().push(running_update(id, task, &at));
        }
    }
    per_agent
}

fn running_update(id: &TaskId, task: &plinth_scheduler::TaskRecord, at: &str) -> StatusUpdate {
    // Unique per update, like an agent's; cheap so the agents' side is not measured.
    let update_id = uuid::Uuid::from_u128(fastrand::u128(..));
    StatusUpdate::new(update_id, id.clone(), task.app_id.clone(), TaskState::TaskRunning, at.to_string())
}
