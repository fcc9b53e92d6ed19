//! Load on a real cluster: a storm of big reads must slow answers, never the agent
//! protocol (it once held the command lock so long that agents missed heartbeats and
//! every task was replaced), and every acknowledged write stays visible to the next read.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const READERS: usize = 64;
const IDLE_APPS: usize = 1000;
const BUSY_TASKS: u64 = 40;

#[test]
fn a_read_storm_loses_no_agent_replaces_no_task_and_hides_no_write() {
    let cluster = Cluster::start("load-reads", 2);
    let api = cluster.api();
    // Many apps make `GET /v2/apps?embed=apps.tasks` big (about 1 MB here); one app
    // has real tasks, spread over both agents.
    let idle: Vec<Value> = (0..IDLE_APPS)
        .map(|i| {
            json!({"id": format!("/storm/idle/app-{i:04}"), "cmd": "sleep 3600", "cpus": 0.01, "mem": 1,
                "instances": 0, "labels": {"team": "storm", "index": i.to_string()},
                "env": {"GREETING": "hello", "INDEX": i.to_string()}})
        })
        .collect();
    api.post("/v2/groups", &json!({"id": "/storm/idle", "apps": idle})).expect_status(201);
    let tasks = cluster.deploy(&json!({"id": "/storm/busy", "cmd": "sleep 3600", "cpus": 0.05, "mem": 8,
        "instances": BUSY_TASKS}));
    let before = ids(&tasks);
    cluster.wait_for_no_deployments(secs(60));

    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (stop, statuses, base) = (stop.clone(), statuses.clone(), cluster.master_url());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .no_proxy()
                    .build()
                    .expect("HTTP client");
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match client.get(format!("{base}/v2/apps?embed=apps.tasks")).send() {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            match response.bytes() {
                                Ok(body) if status == 200 && body.len() > 100_000 => "200".to_string(),
                                Ok(body) => format!("{status} with {} bytes", body.len()),
                                Err(e) => format!("{status}, body failed: {e}"),
                            }
                        }
                        Err(e) => format!("failed: {e}"),
                    };
                    *statuses.lock().expect("statuses").entry(outcome).or_default() += 1;
                }
            })
        })
        .collect();

    // While the storm runs: writes keep being acknowledged and are visible to the very
    // next read, and both agents stay active with the same tasks.
    let mut written = 0;
    holds_for("agents active, tasks untouched, writes acknowledged and visible", secs(25), || {
        let id = format!("/storm/writes/w-{written:03}");
        let reply =
            api.try_request("POST", "/v2/apps", Some(cmd_app(&id, "sleep 3600", 0).to_string().into_bytes()))?;
        if reply.status != 201 {
            return Err(format!("POST {id}: {} {}", reply.status, reply.text));
        }
        let shown = api.try_get(&format!("/v2/apps{id}"))?;
        if shown.status != 200 {
            return Err(format!("{id} acknowledged but GET says {} {}", shown.status, shown.text));
        }
        written += 1;
        let agents = cluster.active_agents()?;
        if agents.len() != 2 {
            return Err(format!("active agents: {agents:?}"));
        }
        let running = ids(&cluster.running_tasks("/storm/busy"));
        if running != before {
            return Err(format!(
                "tasks changed: {} running, {} of the first ones",
                running.len(),
                running.intersection(&before).count()
            ));
        }
        Ok(())
    });
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("reader thread");
    }

    let statuses = statuses.lock().expect("statuses").clone();
    let answered = statuses.get("200").copied().unwrap_or(0);
    assert!(written > 0, "no write went through during the storm");
    assert!(answered >= READERS, "the storm was not a storm: {statuses:?}");
    assert_eq!(statuses.len(), 1, "every read is a full answer: {statuses:?}");
    let log = read(&cluster.node("master").log);
    let lost: Vec<&str> = log.lines().filter(|l| l.contains("marking it lost")).collect();
    assert!(lost.is_empty(), "agents were marked lost: {lost:?}");
}
