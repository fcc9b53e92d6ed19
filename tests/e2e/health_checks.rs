//! Health on a real cluster: agent-side HTTP and COMMAND checks replace unhealthy tasks,
//! and rolling updates keep enough healthy tasks serving (Marathon's `healthcheck-demo`
//! and `upgradeStrategy`), including a version that never becomes healthy.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP server on `$PORT0` answering 200 on every path until it is sent `GET /break`,
/// then 500 on every path: a task whose endpoint can be made to fail from outside.
const BREAKABLE_SERVER: &str = r#"exec python3 -c '
import http.server, os
broken = False
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global broken
        if self.path == "/break":
            broken = True
        self.send_response(500 if broken else 200)
        self.end_headers()
        self.wfile.write(b"broken" if broken else b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT0"])), Handler).serve_forever()
'"#;

/// The tutorial's health check with short intervals for the test.
fn http_check() -> Value {
    json!({"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 5,
           "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 2})
}

/// All of the task's health checks report alive.
fn task_healthy(task: &Value) -> bool {
    task["state"] == "TASK_RUNNING"
        && task["healthCheckResults"].as_array().is_some_and(|r| !r.is_empty() && r.iter().all(|c| c["alive"] == true))
}

fn app_json(api: &Http, id: &str) -> Result<Value, String> {
    let reply = api.try_get(&format!("/v2/apps{id}?embed=app.tasks&embed=app.counts"))?;
    if reply.status == 200 {
        Ok(reply.json["app"].clone())
    } else {
        Err(format!("status {}: {}", reply.status, reply.text))
    }
}

/// Waits until the app has exactly `count` tasks, all running and healthy, with no
/// deployment in progress; returns them.
fn wait_for_healthy(cluster: &Cluster, id: &str, count: usize, timeout: Duration) -> Vec<Value> {
    let api = cluster.api();
    wait_until(&format!("{count} healthy tasks of {id}"), timeout, || {
        cluster.check_nodes_alive()?;
        let app = app_json(&api, id)?;
        let tasks = app["tasks"].as_array().cloned().unwrap_or_default();
        let healthy: Vec<Value> = tasks.iter().filter(|t| task_healthy(t)).cloned().collect();
        let deploying = app["deployments"].as_array().is_some_and(|d| !d.is_empty());
        if healthy.len() == count && tasks.len() == count && app["tasksHealthy"] == count && !deploying {
            Ok(healthy)
        } else {
            Err(format!(
                "tasksHealthy {}, deployments {}, tasks: {}",
                app["tasksHealthy"],
                app["deployments"],
                health_summary(&tasks)
            ))
        }
    })
}

fn health_summary(tasks: &[Value]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} {} health {}",
                t["id"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                t["healthCheckResults"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn events_of(events: &EventStream, kind: &str) -> Vec<Value> {
    events.snapshot().into_iter().filter(|(name, _)| name == kind).map(|(_, data)| data).collect()
}

#[test]
fn healthcheck_demo_kills_and_replaces_unhealthy_tasks() {
    let cluster = Cluster::start("health-demo", 2);
    let api = cluster.api();
    let events = EventStream::open(&format!("{}/v2/events", cluster.master_url()));

    // Marathon's healthcheck-demo, but for the command.
    api.post(
        "/v2/apps",
        &json!({
            "id": "healthcheck-demo", "cmd": BREAKABLE_SERVER, "cpus": 0.1, "mem": 32, "instances": 2,
            "healthChecks": [http_check()]
        }),
    )
    .expect_status(201);
    // The same with a COMMAND check that passes until the test drops a marker for a task.
    let markers = cluster.dir().join("markers");
    std::fs::create_dir_all(&markers).expect("marker dir");
    let check = format!("test ! -e {}/broken-$MESOS_TASK_ID", markers.display());
    api.post(
        "/v2/apps",
        &json!({
            "id": "command-check-demo", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2,
            "healthChecks": [{"protocol": "COMMAND", "command": {"value": check}, "gracePeriodSeconds": 5,
                              "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2}]
        }),
    )
    .expect_status(201);

    let healthy = wait_for_healthy(&cluster, "/healthcheck-demo", 2, secs(90));
    for task in &healthy {
        let result = &task["healthCheckResults"][0];
        assert_eq!(result["alive"], true, "{task}");
        assert_eq!(result["consecutiveFailures"], 0, "{task}");
        assert!(result["firstSuccess"].is_string() && result["lastSuccess"].is_string(), "{task}");
    }
    let app = app_json(&api, "/healthcheck-demo").expect("app");
    assert_eq!((app["tasksHealthy"].as_u64(), app["tasksUnhealthy"].as_u64()), (Some(2), Some(0)), "{app}");

    // Break one task's endpoint: it fails its checks, is killed and replaced; the other
    // task is left alone.
    let (victim, survivor) = (&healthy[0], &healthy[1]);
    let victim_id = str_field(victim, "id").to_string();
    let ip = cluster.ip_of_host(str_field(victim, "host"));
    let port = victim["ports"][0].as_u64().expect("host port");
    let reply = Http::new(format!("http://{ip}:{port}")).try_get("/break").expect("the task answers");
    assert_eq!(reply.status, 500, "{}", reply.text);
    let replaced = wait_until("the broken task to be replaced by a healthy one", secs(90), || {
        let tasks = cluster.tasks("/healthcheck-demo");
        let healthy: Vec<Value> = tasks.iter().filter(|t| task_healthy(t)).cloned().collect();
        let still_there = tasks.iter().any(|t| t["id"] == victim_id.as_str());
        if !still_there && healthy.len() == 2 {
            Ok(healthy)
        } else {
            Err(health_summary(&tasks))
        }
    });
    assert!(
        ids(&replaced).contains(str_field(survivor, "id")),
        "the healthy task was killed too: {}",
        health_summary(&replaced)
    );
    wait_until("unhealthy_instance_kill_event for the broken task", secs(20), || {
        let kills = events_of(&events, "unhealthy_instance_kill_event");
        if kills.iter().any(|e| e["taskId"] == victim_id.as_str() && e["appId"] == "/healthcheck-demo") {
            Ok(())
        } else {
            Err(format!("{kills:?}"))
        }
    });
    let failed = events_of(&events, "failed_health_check_event");
    // Marathon names the task by its instance in these two (Plinth's instance id is the task id).
    assert!(failed.iter().any(|e| e["instanceId"] == victim_id.as_str()), "no failed_health_check_event: {failed:?}");
    let changed = events_of(&events, "health_status_changed_event");
    assert!(
        changed.iter().any(|e| e["instanceId"] == victim_id.as_str() && e["alive"] == false),
        "no health_status_changed_event to unhealthy: {changed:?}"
    );

    // The COMMAND check: a failing command kills that task only.
    let healthy = wait_for_healthy(&cluster, "/command-check-demo", 2, secs(90));
    let victim_id = str_field(&healthy[0], "id").to_string();
    let survivor_id = str_field(&healthy[1], "id").to_string();
    std::fs::write(markers.join(format!("broken-{victim_id}")), b"").expect("marker");
    let replaced = wait_until("the task failing its command check to be replaced", secs(90), || {
        let tasks = cluster.tasks("/command-check-demo");
        let healthy: Vec<Value> = tasks.iter().filter(|t| task_healthy(t)).cloned().collect();
        if !tasks.iter().any(|t| t["id"] == victim_id.as_str()) && healthy.len() == 2 {
            Ok(healthy)
        } else {
            Err(health_summary(&tasks))
        }
    });
    assert!(ids(&replaced).contains(&survivor_id), "{}", health_summary(&replaced));
    wait_until("unhealthy_instance_kill_event for the command-checked task", secs(20), || {
        let kills = events_of(&events, "unhealthy_instance_kill_event");
        if kills.iter().any(|e| e["taskId"] == victim_id.as_str()) {
            Ok(())
        } else {
            Err(format!("{kills:?}"))
        }
    });
}

/// `(healthy, total tasks)` of one sample, with the tasks for the failure message.
type Sample = (u64, usize, String);

/// Samples the app every 100 ms on a thread until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(api: Http, id: &'static str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let (flag, sink) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if let Ok(app) = app_json(&api, id) {
                    let tasks = app["tasks"].as_array().cloned().unwrap_or_default();
                    let healthy = app["tasksHealthy"].as_u64().unwrap_or(0);
                    sink.lock().expect("samples").push((healthy, tasks.len(), health_summary(&tasks)));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Poller { stop, samples, thread: Some(thread) }
    }

    /// Stops sampling and checks every sample kept within `[min_healthy, max_tasks]`.
    fn finish(mut self, min_healthy: u64, max_tasks: usize) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("poller thread");
        }
        let samples = self.samples.lock().expect("samples");
        for (i, (healthy, total, tasks)) in samples.iter().enumerate() {
            assert!(
                *healthy >= min_healthy,
                "sample {i}: only {healthy} healthy tasks (minimum {min_healthy}): {tasks}"
            );
            assert!(*total <= max_tasks, "sample {i}: {total} tasks (maximum {max_tasks}): {tasks}");
        }
        samples.len()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Why a deployment waits, as Plinth says on `/v1/deployments` (Marathon's have no field for it).
fn deployment_reason(deployment: &Value) -> String {
    deployment["blockedReason"].as_str().unwrap_or_default().to_string()
}

#[test]
fn rolling_update_keeps_half_healthy_and_a_never_healthy_version_rolls_back() {
    let cluster = Cluster::start("health-rolling", 2);
    let api = cluster.api();
    let app = |version: &str, cmd: &str| {
        json!({"id": "/rolling", "cmd": cmd, "cpus": 0.1, "mem": 32, "instances": 4,
               "env": {"APP_VERSION": version}, "healthChecks": [http_check()],
               "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 1.0}})
    };
    let serve = "exec python3 -m http.server $PORT0";
    api.post("/v2/apps", &app("v1", serve)).expect_status(201);
    wait_for_healthy(&cluster, "/rolling", 4, secs(120));

    // Never fewer than ⌈4 × 0.5⌉ = 2 healthy, never more than 4 × (1 + 1) = 8 tasks.
    let poller = Poller::start(cluster.api(), "/rolling");
    let v1_ids = ids(&cluster.tasks("/rolling"));
    api.put("/v2/apps/rolling", &app("v2", serve)).expect_status(200);
    let v2 = wait_for_healthy(&cluster, "/rolling", 4, secs(180));
    let v2_ids = ids(&v2);
    assert!(v1_ids.is_disjoint(&v2_ids), "every task was replaced: {v1_ids:?} → {v2_ids:?}");

    // A version that never becomes healthy (nothing listens): the old tasks keep serving,
    // the deployment stays listed and says why.
    let put = api.put("/v2/apps/rolling", &app("v3", "sleep 1000")).expect_status(200);
    let deployment_id = str_field(&put.json, "deploymentId").to_string();
    let find =
        |list: &Value| list.as_array().and_then(|l| l.iter().find(|d| d["id"] == deployment_id.as_str()).cloned());
    holds_for("old tasks serving while the new version never becomes healthy", secs(20), || {
        let tasks = cluster.tasks("/rolling");
        let old_healthy = tasks.iter().filter(|t| v2_ids.contains(str_field(t, "id")) && task_healthy(t)).count();
        let listed = find(&api.try_get("/v2/deployments")?.json).is_some();
        if old_healthy >= 2 && listed {
            Ok(())
        } else {
            Err(format!("deployment listed: {listed}; tasks: {}", health_summary(&tasks)))
        }
    });
    let deployment = find(&api.get_json("/v1/deployments")).expect("the deployment is still listed");
    let reason = deployment_reason(&deployment);
    assert!(reason.to_lowercase().contains("health"), "the deployment does not say it waits for health: {deployment}");

    // Cancelling rolls back to v2: the surviving old tasks are kept, the rest replaced.
    let survivors: BTreeSet<String> = cluster
        .tasks("/rolling")
        .iter()
        .filter(|t| v2_ids.contains(str_field(t, "id")) && task_healthy(t))
        .map(|t| str_field(t, "id").to_string())
        .collect();
    let rollback = api.delete(&format!("/v2/deployments/{deployment_id}")).expect_status(200);
    assert!(rollback.json["deploymentId"].is_string(), "{}", rollback.text);
    let rolled_back = wait_for_healthy(&cluster, "/rolling", 4, secs(180));
    let samples = poller.finish(2, 8);
    assert!(samples > 50, "the poller sampled only {samples} times");
    let current = app_json(&api, "/rolling").expect("app");
    assert_eq!(current["env"]["APP_VERSION"], "v2", "{current}");
    assert_eq!(current["cmd"], serve);
    let final_ids = ids(&rolled_back);
    assert!(survivors.is_subset(&final_ids), "old tasks were restarted on rollback: {survivors:?} vs {final_ids:?}");
    assert!(api.get_json("/v2/deployments").as_array().is_some_and(Vec::is_empty));
}
