//! `plinth bench reads`: a `plinth standalone` holding many apps and real tasks, read by
//! 1, 16 and 64 concurrent `GET /v2/apps?embed=apps.tasks` clients while one writer
//! POSTs apps. Reports the reads' and the writes' p50/p99, the writes' p99 against the
//! same writer with no readers (the ratio the read model must keep under 2×), whether
//! an agent was lost and whether any task was replaced.
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::standalone::{machine, Standalone};

#[derive(Debug, clap::Args)]
pub struct BenchReadsArgs {
    /// Apps in the cluster (no instances; they make the answer big).
    #[arg(long, default_value_t = 2000)]
    pub apps: usize,
    /// Running tasks (`sleep`, spread over the apps' first ones).
    #[arg(long, default_value_t = 300)]
    pub tasks: usize,
    /// Concurrent readers per round.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Seconds per round.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-reads.json")]
    pub out: PathBuf,
}

/// Latency samples of one kind in one round.
#[derive(Debug, Clone, serde::Serialize)]
struct Latencies {
    count: usize,
    errors: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Latencies {
    fn of(mut samples: Vec<f64>, errors: usize) -> Latencies {
        samples.sort_by(f64::total_cmp);
        // The sample at `per_mille` of the way through the sorted ones, rounded.
        let at = |per_mille: usize| samples.get((samples.len().saturating_sub(1) * per_mille + 500) / 1000).copied();
        Latencies { count: samples.len(), errors, p50_ms: at(500), p99_ms: at(990) }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Round {
    readers: usize,
    reads: Latencies,
    /// Answers bigger than this many bytes (the size of one full answer).
    read_bytes: usize,
    writes: Latencies,
    /// The writes' p99 over the writes' p99 with no readers.
    write_p99_ratio: Option<f64>,
    agents_active: usize,
    tasks_replaced: usize,
}

pub fn run(args: BenchReadsArgs) -> anyhow::Result<Value> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("plinth bench reads runs real tasks: run it as root");
    }
    let dir = tempfile::Builder::new().prefix("plinth-bench-reads-").tempdir()?;
    let standalone = Standalone::start(dir.path(), "cpus:64;mem:65536;disk:8192;ports:[31000-31999]", &[])?;
    populate(&standalone, args.apps, args.tasks)?;
    let tasks_before = running_tasks(&standalone)?;
    eprintln!("bench reads: {} apps, {} tasks running", args.apps, tasks_before.len());

    let period = Duration::from_secs(args.seconds.max(1));
    let idle = round(&standalone, 0, period, &tasks_before, None)?;
    let baseline = idle.writes.p99_ms;
    let mut rounds = vec![idle];
    for &readers in &args.clients {
        rounds.push(round(&standalone, readers, period, &tasks_before, baseline)?);
    }
    drop(standalone);

    let report = json!({
        "machine": machine(),
        "apps": args.apps,
        "tasks": tasks_before.len(),
        "seconds_per_round": period.as_secs(),
        "read": "GET /v2/apps?embed=apps.tasks",
        "write": "POST /v2/apps (one app, no instances), one writer, back to back with 50 ms pauses",
        "rounds": rounds,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{:>7} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7} {:>6} {:>8}",
        "readers", "reads", "read p50", "read p99", "writes", "write p50", "write p99", "ratio", "agents", "replaced"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for r in &rounds {
        println!(
            "{:>7} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7} {:>6} {:>8}",
            r.readers,
            r.reads.count,
            f(r.reads.p50_ms),
            f(r.reads.p99_ms),
            r.writes.count,
            f(r.writes.p50_ms),
            f(r.writes.p99_ms),
            r.write_p99_ratio.map_or("-".into(), |v| format!("{v:.2}x")),
            r.agents_active,
            r.tasks_replaced
        );
    }
    println!("(milliseconds; every round in {})", args.out.display());
    Ok(report)
}

/// `apps` apps in groups of 100 (one `POST /v2/groups` each); the first `tasks` of them
/// get one running `sleep` each.
fn populate(standalone: &Standalone, apps: usize, tasks: usize) -> anyhow::Result<()> {
    for chunk in 0..apps.div_ceil(100) {
        let group = format!("/bench/g{chunk:03}");
        let members: Vec<Value> = (chunk * 100..((chunk + 1) * 100).min(apps))
            .map(|i| {
                json!({"id": format!("{group}/app-{i:05}"), "cmd": "sleep 3600", "cpus": 0.01, "mem": 4,
                    "instances": u64::from(i < tasks), "labels": {"bench": "reads"},
                    "env": {"INDEX": i.to_string(), "GREETING": "hello"}})
            })
            .collect();
        let reply = standalone
            .http
            .post(format!("{}/v2/groups", standalone.api))
            .json(&json!({"id": group, "apps": members}))
            .send()?;
        if !reply.status().is_success() {
            bail!("POST /v2/groups {group}: {} {}", reply.status(), reply.text().unwrap_or_default());
        }
    }
    let wanted = apps.min(tasks);
    let started = Instant::now();
    while running_tasks(standalone)?.len() < wanted {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{wanted} tasks did not reach TASK_RUNNING in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn running_tasks(standalone: &Standalone) -> anyhow::Result<BTreeSet<String>> {
    let tasks: Value = standalone.http.get(format!("{}/v2/tasks?status=running", standalone.api)).send()?.json()?;
    Ok(tasks["tasks"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_str().map(str::to_string)).collect())
}

fn round(
    standalone: &Standalone,
    readers: usize,
    period: Duration,
    tasks_before: &BTreeSet<String>,
    baseline_p99: Option<f64>,
) -> anyhow::Result<Round> {
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new((Vec::new(), 0usize, 0usize)));
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let (stop, reads, url) =
                (stop.clone(), reads.clone(), format!("{}/v2/apps?embed=apps.tasks", standalone.api));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).no_proxy().build();
                let Ok(client) = client else { return };
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = client.get(&url).send().and_then(|r| r.error_for_status()).and_then(|r| r.bytes());
                    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                    let mut reads = reads.lock().expect("read samples");
                    match answer {
                        Ok(body) => {
                            reads.0.push(elapsed);
                            reads.2 = reads.2.max(body.len());
                        }
                        Err(_) => reads.1 += 1,
                    }
                }
            })
        })
        .collect();
    let mut writes = Vec::new();
    let mut write_errors = 0;
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < period {
        let id = format!("/bench/writes/r{readers}-{n:05}");
        n += 1;
        let t = Instant::now();
        let reply = standalone
            .http
            .post(format!("{}/v2/apps", standalone.api))
            .json(&json!({"id": id, "cmd": "sleep 3600", "cpus": 0.01, "mem": 4, "instances": 0}))
            .send();
        match reply {
            Ok(r) if r.status().as_u16() == 201 => writes.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => write_errors += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let (read_samples, read_errors, read_bytes) = std::mem::take(&mut *reads.lock().expect("read samples"));
    let writes = Latencies::of(writes, write_errors);
    let slaves: Value = standalone.http.get(format!("{}/master/slaves", standalone.api)).send()?.json()?;
    let agents_active =
        slaves["slaves"].as_array().into_iter().flatten().filter(|s| s["active"].as_bool() == Some(true)).count();
    let now = running_tasks(standalone)?;
    Ok(Round {
        readers,
        reads: Latencies::of(read_samples, read_errors),
        read_bytes,
        write_p99_ratio: baseline_p99.zip(writes.p99_ms).map(|(base, p99)| p99 / base),
        writes,
        agents_active,
        tasks_replaced: tasks_before.difference(&now).count(),
    })
}
