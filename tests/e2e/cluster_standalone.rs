//! `plinth standalone`: master and agent in one process, one command.

use crate::common::*;
use serde_json::json;

#[test]
fn standalone_runs_an_app_on_one_box() {
    let mut cluster = Cluster::new("standalone");
    cluster.start_standalone("solo");
    let ip = cluster.node("solo").host.ip;
    let api = Http::new(format!("http://{ip}:{MASTER_PORT}"));
    let pong = api.get("/ping").expect_status(200);
    assert!(pong.text.contains("pong"), "{}", pong.text);

    wait_until("the embedded agent to register", secs(60), || {
        let slaves = api.get_json("/master/slaves");
        let active = slaves["slaves"].as_array().is_some_and(|s| s.iter().any(|a| a["active"] == true));
        if active {
            Ok(())
        } else {
            Err(slaves.to_string())
        }
    });
    api.post("/v2/apps", &json!({"id": "/web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.1, "mem": 64}))
        .expect_status(201);
    let task = wait_until("the app to run", secs(60), || {
        let tasks = api.get_json("/v2/apps/web/tasks")["tasks"].as_array().cloned().unwrap_or_default();
        match tasks.iter().find(|t| t["state"] == "TASK_RUNNING") {
            Some(task) => Ok(task.clone()),
            None => Err(task_summary(&tasks)),
        }
    });
    let port = task["ports"][0].as_u64().unwrap_or_else(|| panic!("no host port in {task}"));
    wait_until("the app to answer on the box's address", secs(30), || {
        let reply = Http::new(format!("http://{ip}:{port}")).try_get("/")?;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(format!("status {}", reply.status))
        }
    });
}
