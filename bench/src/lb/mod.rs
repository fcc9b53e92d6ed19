//! `plinth bench lb`: Plinth's service balancer beside HAProxy as marathon-lb runs it, in
//! one run, on the same three backends, both driven by `wrk` on the loopback of a network
//! namespace the bench makes (`cluster.rs`). Steady load: requests/s, p50/p99 latency and
//! CPU per request of the balancer's process (for Plinth the agent, which holds the
//! balancer; for HAProxy its master and workers), with keep-alive connections and with one
//! connection per request. Then a scale 3 → 1 under load, for each: Plinth's master drains
//! the balancer before it kills; HAProxy is reloaded by marathon-lb's loop (`haproxy.rs`).
//! Failed requests are wrk's socket errors and non-2xx/3xx answers of that run.
//! `--mode http` sets the app's `HAPROXY_0_MODE=http`: Plinth's port proxies request by
//! request, HAProxy gets marathon-lb's `mode http` config.
mod backend;
mod cluster;
mod haproxy;
mod wrk;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub use backend::serve as serve_backend;
use cluster::{Cluster, Netns};
use haproxy::{HaproxyStack, Layout};
use wrk::{Connections, Summary, Wrk};

#[derive(Debug, clap::Args)]
pub struct BenchLbArgs {
    /// Seconds of each steady measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of each scale 3 → 1 run (the scale is asked for 2 s in).
    #[arg(long, default_value_t = 12)]
    pub scale_seconds: u64,
    /// Steady rounds (the order of the two balancers alternates); medians are reported.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// wrk's threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// wrk's open connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// The service port's `HAPROXY_0_MODE` for both balancers: tcp or http.
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "http"])]
    pub mode: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-lb.json")]
    pub out: PathBuf,
}

/// The two contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Balancer {
    Plinth,
    Haproxy,
}

impl Balancer {
    fn label(self) -> &'static str {
        match self {
            Balancer::Plinth => "plinth (agent)",
            Balancer::Haproxy => "haproxy",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Steady {
    balancer: Balancer,
    connections: Connections,
    round: usize,
    requests_per_second: f64,
    cpu_us_per_request: Option<f64>,
    wrk: Summary,
}

#[derive(Debug, Clone, serde::Serialize)]
struct ScaleDown {
    balancer: Balancer,
    connections: Connections,
    failed: u64,
    /// The app had one task left when wrk ended (the scale finished inside the run).
    scaled_within_run: bool,
    haproxy_reloads: Option<usize>,
    wrk: Summary,
}

/// Where the bench and its children run.
struct Setup<'a> {
    cluster: &'a Cluster,
    haproxy: &'a mut HaproxyStack,
    wrk: &'a Wrk,
    service_port: u16,
    frontend_port: u16,
}

impl Setup<'_> {
    fn url(&self, balancer: Balancer) -> String {
        match balancer {
            Balancer::Plinth => format!("http://127.0.0.1:{}/", self.service_port),
            Balancer::Haproxy => format!("http://127.0.0.1:{}/", self.frontend_port),
        }
    }

    fn pids(&self, balancer: Balancer) -> Vec<i32> {
        match balancer {
            Balancer::Plinth => vec![self.cluster.agent_pid()],
            Balancer::Haproxy => self.haproxy.pids(),
        }
    }
}

pub fn run(args: BenchLbArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("plinth bench lb makes a network namespace and runs real tasks: run it as root");
    }
    for (tool, probe) in [("haproxy", "-v"), ("wrk", "--version")] {
        if let Err(err) = std::process::Command::new(tool).arg(probe).output() {
            if err.kind() == std::io::ErrorKind::NotFound {
                bail!("plinth bench lb needs `{tool}`: apt-get install {tool} (scripts/setup.sh installs it)");
            }
            return Err(err).with_context(|| format!("running {tool}"));
        }
    }
    let exe = std::env::current_exe().context("finding the plinth binary")?;
    let dir = tempfile::Builder::new().prefix("plinth-bench-lb-").tempdir()?;
    let netns = Netns::create(&format!("plinth-bench-lb-{}", std::process::id()))?;
    let dir_path = dir.path().to_path_buf();
    let report = netns.run(move || measure(&args, &dir_path, &exe));
    drop(netns);
    let (report, out) = match report {
        Ok(report) => report,
        // The logs of the master, the agent and HAProxy say why: keep them.
        Err(err) => return Err(err.context(format!("logs and configs kept in {}", dir.keep().display()))),
    };
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", out.display()))?;
    println!("(every run in {})", out.display());
    Ok(())
}

fn measure(args: &BenchLbArgs, dir: &std::path::Path, exe: &std::path::Path) -> anyhow::Result<(Value, PathBuf)> {
    let cluster = Cluster::start(dir, exe)?;
    let service_port = cluster.create_app(exe, 3, &args.mode)?;
    cluster.wait_for_instances(service_port, 3, Duration::from_secs(120))?;
    let frontend_port = crate::standalone::free_port()?;
    let layout = Layout {
        socket: dir.join("haproxy.sock"),
        state_dir: dir.join("haproxy-state"),
        frontend_ports: BTreeMap::from([(service_port, frontend_port)]),
    };
    let mut haproxy = HaproxyStack::start(dir, &cluster.api, layout)?;
    haproxy.wait_for_servers(3, Duration::from_secs(30))?;
    let wrk = Wrk::new(dir, args.threads, args.connections, Duration::from_secs(5))?;
    let mut setup = Setup { cluster: &cluster, haproxy: &mut haproxy, wrk: &wrk, service_port, frontend_port };
    eprintln!(
        "bench lb: 3 backends, mode {}; plinth on service port {service_port}, haproxy on {frontend_port}; {}",
        args.mode,
        crate::standalone::machine()
    );

    let modes = [Connections::KeepAlive, Connections::Close];
    for balancer in [Balancer::Plinth, Balancer::Haproxy] {
        wrk.run(&setup.url(balancer), Duration::from_secs(2), Connections::KeepAlive).context("warm-up")?;
    }
    let mut steady = Vec::new();
    for round in 0..args.rounds.max(1) {
        for connections in modes {
            let order = if round % 2 == 0 {
                [Balancer::Plinth, Balancer::Haproxy]
            } else {
                [Balancer::Haproxy, Balancer::Plinth]
            };
            for balancer in order {
                steady.push(steady_run(&setup, balancer, connections, round, Duration::from_secs(args.seconds))?);
            }
        }
    }
    let mut scale_downs = Vec::new();
    for connections in modes {
        for balancer in [Balancer::Plinth, Balancer::Haproxy] {
            scale_downs.push(scale_down(&mut setup, balancer, connections, Duration::from_secs(args.scale_seconds))?);
        }
    }
    let machine = crate::standalone::machine();
    drop(haproxy);
    drop(cluster);

    let medians = medians(&steady);
    print_report(args, &medians, &scale_downs);
    let report = json!({
        "machine": machine,
        "mode": args.mode,
        "backends": "3 command tasks `plinth bench lb-backend` (axum, keep-alive), HTTP health check every 1 s",
        "wrk": {"threads": args.threads, "connections": args.connections, "seconds": args.seconds, "timeout_s": 5},
        "plinth": "agent's balancer on the service port; CPU is the agent process's",
        "haproxy": "marathon-lb's config (mode from HAPROXY_0_MODE, http-server-close, forwardfor and httpchk in http mode; roundrobin, retries 3, redispatch, check inter 1s fall 4), master-worker, reloaded with SIGUSR2 by a /v2/apps poller; CPU is master + workers",
        "steady_medians": medians.iter().map(|(k, v)| json!({"balancer": k.0, "connections": k.1, "median": v})).collect::<Vec<_>>(),
        "steady_runs": steady,
        "scale_3_to_1": scale_downs,
    });
    Ok((report, args.out.clone()))
}

fn steady_run(
    setup: &Setup<'_>,
    balancer: Balancer,
    connections: Connections,
    round: usize,
    period: Duration,
) -> anyhow::Result<Steady> {
    let pids = setup.pids(balancer);
    let before: u64 = pids.iter().filter_map(|&p| cpu_ticks(p)).sum();
    let summary = setup.wrk.run(&setup.url(balancer), period, connections)?;
    let after: u64 = pids.iter().filter_map(|&p| cpu_ticks(p)).sum();
    let cpu_us_per_request = (summary.requests > 0)
        .then(|| after.saturating_sub(before) as f64 / clock_ticks_per_second() * 1e6 / summary.requests as f64);
    eprintln!(
        "bench lb: {} {}: {:.0} req/s, p99 {:.2} ms, {} failed",
        balancer.label(),
        connections.label(),
        summary.requests_per_second(),
        summary.p99_us as f64 / 1000.0,
        summary.failed()
    );
    Ok(Steady {
        balancer,
        connections,
        round,
        requests_per_second: summary.requests_per_second(),
        cpu_us_per_request,
        wrk: summary,
    })
}

fn scale_down(
    setup: &mut Setup<'_>,
    balancer: Balancer,
    connections: Connections,
    period: Duration,
) -> anyhow::Result<ScaleDown> {
    setup.cluster.scale(3)?;
    setup.cluster.wait_for_instances(setup.service_port, 3, Duration::from_secs(120))?;
    setup.haproxy.wait_for_servers(3, Duration::from_secs(30))?;
    let reloads = setup.haproxy.reloads.load(std::sync::atomic::Ordering::Relaxed);
    let url = setup.url(balancer);
    let wrk = setup.wrk.clone();
    let load = std::thread::spawn(move || wrk.run(&url, period, connections));
    std::thread::sleep(Duration::from_secs(2));
    let scaled = setup.cluster.scale(1);
    let summary = load.join().map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
    scaled?;
    let tasks: Value = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{}/v2/apps{}/tasks", setup.cluster.api, cluster::APP_ID))
        .send()?
        .json()?;
    let scaled_within_run = tasks["tasks"].as_array().is_some_and(|t| t.len() == 1);
    let haproxy_reloads = (balancer == Balancer::Haproxy)
        .then(|| setup.haproxy.reloads.load(std::sync::atomic::Ordering::Relaxed) - reloads);
    eprintln!(
        "bench lb: scale 3 -> 1, {} {}: {} of {} requests failed",
        balancer.label(),
        connections.label(),
        summary.failed(),
        summary.requests
    );
    Ok(ScaleDown { balancer, connections, failed: summary.failed(), scaled_within_run, haproxy_reloads, wrk: summary })
}

/// Median figures of one balancer and connection mode over the rounds.
#[derive(Debug, Clone, serde::Serialize)]
struct Median {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: Option<f64>,
    failed: u64,
}

/// The middle value, or the mean of the two middle ones (so two rounds give their mean,
/// not the better one for one figure and the worse for another).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 0 => Some((values[mid - 1] + values[mid]) / 2.0),
        _ => Some(values[mid]),
    }
}

fn medians(steady: &[Steady]) -> BTreeMap<(Balancer, Connections), Median> {
    let mut groups: BTreeMap<(Balancer, Connections), Vec<&Steady>> = BTreeMap::new();
    for run in steady {
        groups.entry((run.balancer, run.connections)).or_default().push(run);
    }
    groups
        .into_iter()
        .map(|(key, runs)| {
            let of = |f: &dyn Fn(&Steady) -> f64| median(runs.iter().map(|r| f(r)).collect()).unwrap_or(f64::NAN);
            let cpu = median(runs.iter().filter_map(|r| r.cpu_us_per_request).collect());
            let median = Median {
                requests_per_second: of(&|r| r.requests_per_second),
                p50_ms: of(&|r| r.wrk.p50_us as f64 / 1000.0),
                p99_ms: of(&|r| r.wrk.p99_us as f64 / 1000.0),
                cpu_us_per_request: cpu,
                failed: runs.iter().map(|r| r.wrk.failed()).sum(),
            };
            (key, median)
        })
        .collect()
}

fn print_report(args: &BenchLbArgs, medians: &BTreeMap<(Balancer, Connections), Median>, scale_downs: &[ScaleDown]) {
    println!(
        "steady load ({} mode): wrk -t{} -c{}, {} s per run, median of {} rounds, 3 backends",
        args.mode,
        args.threads,
        args.connections,
        args.seconds,
        args.rounds.max(1)
    );
    println!(
        "{:<16} {:<18} {:>9} {:>8} {:>8} {:>11} {:>7}",
        "balancer", "connections", "req/s", "p50 ms", "p99 ms", "CPU us/req", "failed"
    );
    let f = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for ((balancer, connections), m) in medians {
        println!(
            "{:<16} {:<18} {:>9.0} {:>8.2} {:>8.2} {:>11} {:>7}",
            balancer.label(),
            connections.label(),
            m.requests_per_second,
            m.p50_ms,
            m.p99_ms,
            f(m.cpu_us_per_request, 1),
            m.failed
        );
    }
    for connections in [Connections::KeepAlive, Connections::Close] {
        let (Some(p), Some(h)) =
            (medians.get(&(Balancer::Plinth, connections)), medians.get(&(Balancer::Haproxy, connections)))
        else {
            continue;
        };
        let cpu = p.cpu_us_per_request.zip(h.cpu_us_per_request).map(|(p, h)| p / h);
        println!(
            "plinth / haproxy, {}: req/s {:.2}x, p50 {:.2}x, p99 {:.2}x, CPU per request {}",
            connections.label(),
            p.requests_per_second / h.requests_per_second,
            p.p50_ms / h.p50_ms,
            p.p99_ms / h.p99_ms,
            cpu.map_or("-".to_string(), |c| format!("{c:.2}x"))
        );
    }
    println!("scale 3 -> 1 under load: {} s of wrk, the scale asked for 2 s in", args.scale_seconds);
    println!(
        "{:<16} {:<18} {:>9} {:>7} {:>34} {:>8} {:>7}",
        "balancer", "connections", "requests", "failed", "connect/read/write/timeout/non-2xx", "reloads", "scaled"
    );
    for s in scale_downs {
        let w = &s.wrk;
        println!(
            "{:<16} {:<18} {:>9} {:>7} {:>34} {:>8} {:>7}",
            s.balancer.label(),
            s.connections.label(),
            w.requests,
            s.failed,
            format!("{}/{}/{}/{}/{}", w.connect, w.read, w.write, w.timeout, w.status),
            s.haproxy_reloads.map_or("-".to_string(), |r| r.to_string()),
            if s.scaled_within_run { "yes" } else { "no" }
        );
    }
}

/// utime + stime of `pid` in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The processes whose parent is `pid` (HAProxy's workers under its master).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_two_rounds_is_their_mean() {
        assert_eq!(median(vec![40_000.0, 50_000.0]), Some(45_000.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(Vec::new()), None);
    }
}
