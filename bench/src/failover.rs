//! `plinth bench failover`: what a new leader costs, on etcd and on redb. A real core places
//! `--tasks` tasks of `--apps` apps on fake agents, every round committed to both stores
//! (a real single-member etcd, Debian's `etcd-server`, in a namespace of its own; redb in a
//! temp dir). Then: the state load a new leader does (`load_checked` + `Core::restore`),
//! timed on both; and a real failover: two `plinth master` processes on that etcd, the
//! leader killed with SIGKILL, timed to the first acknowledged write on the other, beside
//! a single redb master killed and restarted on the same state.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use plinth_master::store::{Batch, EtcdSettings, EtcdStore, StateStore, Store};
use plinth_protocol::{AppDefinition, Resources, Timestamp};
use plinth_scheduler::{Core, CoreConfig};

#[derive(Debug, clap::Args)]
pub struct BenchFailoverArgs {
    #[arg(long, default_value_t = 10_000)]
    apps: usize,
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Runs of each timing (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(args: BenchFailoverArgs) -> anyhow::Result<()> {
    let etcd = plinth_testkit::Etcd::single().context("start etcd (apt-get install etcd-server)")?;
    let redb_dir = tempfile::Builder::new().prefix("plinth-bench-failover-").tempdir()?;
    let (apps, tasks, runs) = (args.apps.max(1), args.tasks, args.runs.max(1));
    let endpoints = etcd.endpoints();
    let dir = redb_dir.path().to_path_buf();
    // Every etcd client lives on a thread inside etcd's namespace.
    let report = etcd.run(move || -> anyhow::Result<String> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let settings = EtcdSettings::new(endpoints.clone());
        let on_etcd = runtime.block_on(EtcdStore::connect(&settings))?;
        let on_redb = Store::open(&dir.join("redb"))?;
        let seeded = Instant::now();
        let placed = seed(&[&on_etcd, &on_redb], apps, tasks)?;
        let seed_time = seeded.elapsed();
        let mut etcd_loads = Vec::new();
        let mut redb_loads = Vec::new();
        for _ in 0..runs {
            etcd_loads.push(timed_load(&on_etcd)?);
            redb_loads.push(timed_load(&on_redb)?);
        }
        drop(on_redb);
        // Printed now: the process-level failover below takes longer and may fail.
        println!(
            "failover bench: {apps} apps, {placed} tasks (seeded into both stores in {:.1} s)\n\
             \x20 state load (load + restore), median of {runs}:  etcd {}   redb {}",
            seed_time.as_secs_f64(),
            ms(median(etcd_loads.clone())),
            ms(median(redb_loads.clone())),
        );
        let etcd_url = endpoints[0].clone();
        let mut etcd_failovers = Vec::new();
        let mut redb_restarts = Vec::new();
        for run in 0..runs {
            etcd_failovers.push(etcd_failover(&dir, &etcd_url, run)?);
            redb_restarts.push(redb_restart(&dir, run)?);
        }
        Ok(format!(
            "  kill -9 of the leader -> first acknowledged write, median of {runs}:  etcd (another master) {}   \
             redb (restart) {}\n\
             \x20 (lease TTL 3 s: the etcd figure includes waiting for the dead leader's lease to end)",
            ms(median(etcd_failovers)),
            ms(median(redb_restarts)),
        ))
    })?;
    println!("{report}");
    Ok(())
}

/// A core with `tasks` running tasks over `apps` apps on fake agents, every round
/// committed to each store. Returns the tasks placed.
fn seed(stores: &[&dyn StateStore], apps: usize, tasks: usize) -> anyhow::Result<usize> {
    let config = CoreConfig { agent_timeout_ms: i64::MAX / 4, max_launches_per_tick: 20_000, ..CoreConfig::default() };
    let mut core = Core::new(config, plinth_master::ids::random_ids());
    let agents = tasks.div_ceil(100).max(1);
    let per_agent = tasks.div_ceil(agents) + 1;
    let resources = Resources::parse(&format!(
        "cpus:{};mem:{};disk:0;ports:[20000-{}]",
        per_agent as f64 * 0.1 + 1.0,
        per_agent * 32 + 64,
        20000 + per_agent + 10
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut clock = Timestamp::now();
    crate::scheduler::register_fake_agents(&mut core, agents, &resources, clock);
    commit(stores, &mut core)?;
    for a in 0..apps {
        let instances = tasks / apps + usize::from(a < tasks % apps);
        let mut def = AppDefinition::from_value(json!({
            "id": format!("/bench/app-{a}"), "cmd": "sleep 1000", "instances": instances, "cpus": 0.1, "mem": 32,
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        def.normalize();
        core.create_app(def, clock).map_err(|e| anyhow::anyhow!("{e}"))?;
        if a % 1000 == 999 {
            commit(stores, &mut core)?;
        }
    }
    commit(stores, &mut core)?;
    let mut running = 0;
    for _ in 0..10_000 {
        clock = clock.plus_millis(100);
        core.tick(clock);
        let changes = core.take_changes();
        let per_agent = crate::scheduler::staged_tasks_running(&core, &changes, clock);
        commit_changes(stores, &core, &changes)?;
        let launched: usize = per_agent.values().map(Vec::len).sum();
        for (agent, updates) in per_agent {
            core.apply_status_updates(&agent, updates, clock);
        }
        commit(stores, &mut core)?;
        running += launched;
        if running >= tasks || (launched == 0 && core.queue(clock).iter().all(|q| q.count == 0)) {
            return Ok(running);
        }
    }
    bail!("the scheduler stopped making progress at {running} tasks")
}

fn commit(stores: &[&dyn StateStore], core: &mut Core) -> anyhow::Result<()> {
    let changes = core.take_changes();
    commit_changes(stores, core, &changes)
}

fn commit_changes(stores: &[&dyn StateStore], core: &Core, changes: &plinth_scheduler::Changes) -> anyhow::Result<()> {
    let batch = Batch::of(core, changes)?;
    for store in stores {
        store.commit(&batch)?;
    }
    Ok(())
}

fn timed_load(store: &dyn StateStore) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let snapshot = store.load_checked()?;
    let core = Core::restore(CoreConfig::default(), plinth_master::ids::random_ids(), snapshot, Timestamp::now());
    let elapsed = started.elapsed();
    drop(core);
    Ok(elapsed)
}

/// A `plinth master` in the current thread's network namespace (etcd's; loopback ports).
pub(crate) fn spawn_master(dir: &Path, name: &str, port: u16, extra: &[&str]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let data_dir = dir.join(name);
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(exe)
        .args(["master", "--listen", &format!("127.0.0.1:{port}"), "--registry-listen"])
        .arg(format!("127.0.0.1:{}", port + 1000))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--hostname", "127.0.0.1", "--agent-timeout-secs", "3600"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("RUST_LOG", "info")
        .spawn()?;
    Ok(child)
}

pub(crate) fn kill(child: &mut Child) {
    // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
    #[allow(clippy::cast_possible_wrap)]
    let pid = child.id() as i32;
    // SAFETY: kill(2) on a child this benchmark started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = child.wait();
}

/// Kills every child on drop, also when the benchmark fails half-way.
struct Masters(Vec<Child>);

impl Drop for Masters {
    fn drop(&mut self) {
        for child in &mut self.0 {
            kill(child);
        }
    }
}

fn http() -> anyhow::Result<reqwest::blocking::Client> {
    plinth_oci::tls::install_provider();
    Ok(reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?)
}

/// Waits until a POST of a new app on `port` is acknowledged; how long it took from `since`.
fn first_write(client: &reqwest::blocking::Client, port: u16, app: &str, since: Instant) -> anyhow::Result<Duration> {
    // No service port: the seeded apps may have taken every one of 10000-20000.
    let body = json!({"id": app, "cmd": "sleep 1", "instances": 0, "portDefinitions": []});
    let mut last = String::new();
    let mut unanswered = false;
    while since.elapsed() < Duration::from_secs(120) {
        match client.post(format!("http://127.0.0.1:{port}/v2/apps")).json(&body).send() {
            Ok(answer) if answer.status().as_u16() == 201 => return Ok(since.elapsed()),
            // An earlier try was written but its answer came too late for the client: done by now.
            Ok(answer) if answer.status().as_u16() == 409 && unanswered => return Ok(since.elapsed()),
            Ok(answer) => last = format!("{} {}", answer.status(), answer.text().unwrap_or_default()),
            Err(e) => {
                unanswered |= e.is_timeout();
                last = e.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no write acknowledged on :{port} within 120 s (last answer: {last})")
}

fn leader_port(client: &reqwest::blocking::Client, ports: &[u16]) -> Option<u16> {
    let answer = client.get(format!("http://127.0.0.1:{}/v2/leader", ports[0])).send().ok()?;
    let leader: serde_json::Value = answer.json().ok()?;
    let address = leader.get("leader")?.as_str()?;
    ports.iter().copied().find(|p| address.ends_with(&format!(":{p}")))
}

fn etcd_failover(dir: &Path, etcd: &str, run: usize) -> anyhow::Result<Duration> {
    let client = http()?;
    let step = 10 * u16::try_from(run).unwrap_or(0);
    let ports = [18081 + step, 18082 + step];
    let mut masters = Masters(Vec::new());
    for (n, port) in ports.iter().enumerate() {
        masters.0.push(spawn_master(dir, &format!("etcd-{run}-{n}"), *port, &["--etcd", etcd])?);
    }
    let started = Instant::now();
    let leader = loop {
        if let Some(port) = leader_port(&client, &ports) {
            match first_write(&client, port, &format!("/bench/warm-{run}"), Instant::now()) {
                Ok(_) => break port,
                Err(e) => bail!("{e}: {}", log_tails(dir, run)),
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("no leader among the bench masters: {}", log_tails(dir, run));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let index = ports.iter().position(|p| *p == leader).context("the leader is a bench master")?;
    let killed = Instant::now();
    kill(&mut masters.0[index]);
    first_write(&client, ports[1 - index], &format!("/bench/after-{run}"), killed)
        .map_err(|e| anyhow::anyhow!("{e}: {}", log_tails(dir, run)))
}

/// The end of each etcd master's log of this run, for an error.
fn log_tails(dir: &Path, run: usize) -> String {
    (0..2)
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("etcd-{run}-{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            format!("\n--- master {n}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect()
}

fn redb_restart(dir: &Path, run: usize) -> anyhow::Result<Duration> {
    let client = http()?;
    let port = 18181 + 10 * u16::try_from(run).unwrap_or(0);
    // The seeded redb store is this master's data dir.
    let mut masters = Masters(vec![spawn_master(dir, "redb", port, &[])?]);
    first_write(&client, port, &format!("/bench/redb-warm-{run}"), Instant::now())?;
    let killed = Instant::now();
    kill(&mut masters.0[0]);
    masters.0[0] = spawn_master(dir, "redb", port, &[])?;
    first_write(&client, port, &format!("/bench/redb-after-{run}"), killed)
}
