//! Apps on a real cluster (a master and two agents, each in its own network namespace):
//! deploy, reach, read logs, scale, update, kill.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn app_version(api: &Http, id: &str) -> String {
    str_field(&api.get_json(&format!("/v2/apps{id}"))["app"], "version").to_string()
}

#[test]
fn hello_and_http_apps_run_are_reachable_and_show_logs() {
    let cluster = Cluster::start("apps-hello", 2);
    let api = cluster.api();

    let created = api.post("/v2/apps", &cmd_app("/hello", "echo hello; sleep 10", 1)).expect_status(201);
    assert_eq!(created.json["id"], "/hello", "{}", created.text);
    api.post("/v2/apps", &json!({"id": "/web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.1, "mem": 64}))
        .expect_status(201);

    // The HTTP app answers on agent-ip:host-port, from outside the agent's namespace.
    let web = cluster.wait_for_running("/web", 1, secs(60)).remove(0);
    let ip = cluster.ip_of_host(str_field(&web, "host"));
    let port = web["ports"][0].as_u64().unwrap_or_else(|| panic!("no host port in {web}"));
    assert!((31000..=31099).contains(&port), "host port {port} is outside the agent's range");
    let page = wait_until("the HTTP app to answer", secs(30), || {
        let reply = Http::new(format!("http://{ip}:{port}")).try_get("/")?;
        if reply.status == 200 {
            Ok(reply)
        } else {
            Err(format!("status {}", reply.status))
        }
    });
    assert!(page.text.contains("Directory listing"), "unexpected page: {}", page.text);

    // `plinth logs` finds the agent that runs the task and prints its stdout.
    let hello = cluster.wait_for_running("/hello", 1, secs(60)).remove(0);
    let task_id = str_field(&hello, "id").to_string();
    let output = wait_until("`plinth logs` to show hello", secs(30), || {
        let output = cluster.cli(&["logs", &task_id]);
        if output.status.success() && stdout(&output).contains("hello") {
            Ok(output)
        } else {
            Err(format!("exit {:?}, stdout {:?}, stderr {:?}", output.status.code(), stdout(&output), stderr(&output)))
        }
    });
    assert!(stdout(&output).lines().any(|l| l.trim() == "hello"), "{}", stdout(&output));

    // `plinth logs -f` follows until the task ends (`sleep 10`), then exits by itself.
    let followed = cluster.cli_bounded(&["logs", "-f", &task_id], secs(60));
    assert!(followed.status.success(), "plinth logs -f: {}", stderr(&followed));
    assert!(stdout(&followed).lines().any(|l| l.trim() == "hello"), "{}", stdout(&followed));
    // The finished task's log stays readable on its agent.
    let finished = cluster.cli(&["logs", &task_id]);
    assert!(finished.status.success(), "plinth logs of a finished task: {}", stderr(&finished));
    assert!(stdout(&finished).contains("hello"), "{}", stdout(&finished));

    // The CLI's views agree with the API.
    let list = cluster.cli(&["app", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let table = stdout(&list);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("/hello") && table.contains("/web"), "{table}");
    let tasks = cluster.cli(&["task", "list", "/web", "--json"]);
    assert!(tasks.status.success(), "{}", stderr(&tasks));
    let tasks: Value = serde_json::from_slice(&tasks.stdout).expect("--json prints JSON");
    assert_eq!(ids(tasks["tasks"].as_array().expect("tasks")), ids(&[web]));
    let nodes = cluster.cli(&["node", "list"]);
    assert!(stdout(&nodes).contains("agent-1") && stdout(&nodes).contains("agent-2"), "{}", stdout(&nodes));
}

#[test]
fn scale_one_to_three_to_one() {
    let cluster = Cluster::start("apps-scale", 2);
    let api = cluster.api();
    cluster.deploy(&cmd_app("/scale", "sleep 1000", 1));

    let output = cluster.cli(&["app", "scale", "/scale", "3", "--wait", "--timeout", "90"]);
    assert!(output.status.success(), "plinth app scale: {}", stderr(&output));
    let three = cluster.wait_for_running("/scale", 3, secs(60));
    assert_eq!(ids(&three).len(), 3);
    assert_eq!(api.get_json("/v2/apps/scale")["app"]["instances"], 3);

    let answer = api.put("/v2/apps/scale", &json!({"instances": 1})).expect_status(200);
    assert!(answer.json.get("deploymentId").is_some(), "PUT answers with the deployment: {}", answer.text);
    let one = cluster.wait_for_running("/scale", 1, secs(60));
    assert!(ids(&three).is_superset(&ids(&one)), "scaling down keeps one of the existing tasks");
    cluster.wait_for_no_deployments(secs(60));
    holds_for("exactly one /scale task", secs(3), || {
        let tasks = cluster.tasks("/scale");
        if tasks.len() == 1 {
            Ok(())
        } else {
            Err(task_summary(&tasks))
        }
    });
    assert_eq!(api.get_json("/v2/apps/scale")["app"]["instances"], 1);
}

#[test]
fn new_command_replaces_tasks_with_the_new_version() {
    let cluster = Cluster::start("apps-update", 2);
    let api = cluster.api();
    let old = cluster.deploy(&cmd_app("/roll", "echo v1; sleep 1000", 2));
    let old_version = app_version(&api, "/roll");

    let answer = api.put("/v2/apps/roll", &cmd_app("/roll", "echo v2; sleep 1000", 2)).expect_status(200);
    assert!(answer.json.get("deploymentId").is_some(), "{}", answer.text);
    let new = wait_until("both tasks replaced by the new version", secs(90), || {
        let running = cluster.running_tasks("/roll");
        let all_new = running.len() == 2
            && running.iter().all(|t| t["version"] != old_version.as_str())
            && ids(&running).is_disjoint(&ids(&old));
        if all_new {
            Ok(running)
        } else {
            Err(task_summary(&running))
        }
    });
    cluster.wait_for_no_deployments(secs(60));

    let app = api.get_json("/v2/apps/roll")["app"].clone();
    assert_eq!(app["cmd"], "echo v2; sleep 1000");
    let new_version = str_field(&app, "version");
    assert_ne!(new_version, old_version);
    assert!(new.iter().all(|t| t["version"] == new_version), "{}", task_summary(&new));
    let versions = api.get_json("/v2/apps/roll/versions");
    let listed: Vec<&str> =
        versions["versions"].as_array().expect("versions").iter().filter_map(Value::as_str).collect();
    assert!(listed.contains(&old_version.as_str()) && listed.contains(&new_version), "{versions}");
    // The old processes are gone from the agents.
    for agent in ["agent-1", "agent-2"] {
        let running: BTreeSet<String> = cluster.task_pids(agent).into_keys().collect();
        assert!(running.is_disjoint(&ids(&old)), "old tasks still running on {agent}: {running:?}");
    }
}

#[test]
fn killed_tasks_are_replaced() {
    let cluster = Cluster::start("apps-kill", 2);
    let api = cluster.api();
    let before = cluster.deploy(&cmd_app("/victim", "sleep 1000", 2));
    let (first, second) = (str_field(&before[0], "id").to_string(), str_field(&before[1], "id").to_string());

    // Through the API...
    api.delete(&format!("/v2/apps/victim/tasks/{first}")).expect_status(200);
    wait_until("the killed task to be replaced", secs(60), || {
        let running = cluster.running_tasks("/victim");
        let ids = ids(&running);
        if running.len() == 2 && !ids.contains(&first) && ids.contains(&second) {
            Ok(())
        } else {
            Err(task_summary(&running))
        }
    });
    // ...and through the CLI.
    let output = cluster.cli(&["task", "kill", &second]);
    assert!(output.status.success(), "plinth task kill: {}", stderr(&output));
    wait_until("the second killed task to be replaced", secs(60), || {
        let running = cluster.running_tasks("/victim");
        let now = ids(&running);
        if running.len() == 2 && !now.contains(&second) && now.len() == 2 {
            Ok(())
        } else {
            Err(task_summary(&running))
        }
    });
    assert_eq!(api.get_json("/v2/apps/victim")["app"]["instances"], 2, "a kill without scale keeps the target");
    for agent in ["agent-1", "agent-2"] {
        let pids = cluster.task_pids(agent);
        assert!(
            !pids.contains_key(&first) && !pids.contains_key(&second),
            "killed task still runs on {agent}: {pids:?}"
        );
    }
}

#[test]
fn restart_and_destroy_from_the_cli() {
    let cluster = Cluster::start("apps-restart", 2);
    let file = cluster.dir().join("svc.json");
    std::fs::write(&file, cmd_app("/svc", "sleep 1000", 2).to_string()).expect("write the app file");
    let deployed = cluster.cli(&["app", "deploy", file.to_str().expect("utf-8 path"), "--wait"]);
    assert!(deployed.status.success(), "plinth app deploy: {}", stderr(&deployed));
    assert!(stdout(&deployed).contains("created app /svc"), "{}", stdout(&deployed));
    let before = ids(&cluster.wait_for_running("/svc", 2, secs(60)));

    let restarted = cluster.cli(&["app", "restart", "/svc", "--wait"]);
    assert!(restarted.status.success(), "plinth app restart: {}", stderr(&restarted));
    let after = ids(&cluster.wait_for_running("/svc", 2, secs(60)));
    assert!(after.is_disjoint(&before), "restart replaces every task: {before:?} → {after:?}");

    let destroyed = cluster.cli(&["app", "destroy", "/svc", "--wait"]);
    assert!(destroyed.status.success(), "plinth app destroy: {}", stderr(&destroyed));
    cluster.api().get("/v2/apps/svc").expect_status(404);
    wait_until("the destroyed app's processes to end", secs(30), || {
        let left: Vec<String> = ["agent-1", "agent-2"]
            .iter()
            .flat_map(|a| cluster.task_pids(a).into_keys())
            .filter(|id| id.starts_with("svc."))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let shown = cluster.cli(&["app", "show", "/svc"]);
    assert!(!shown.status.success() && stderr(&shown).contains("404"), "{}", stderr(&shown));
}

/// The hot path has no timer on it: with the master's timed round an hour apart, every
/// launch below happens because a command (a POST, a scale, a kill, a task's status)
/// asked for a round at once.
#[test]
fn launches_scales_and_replacements_need_no_timed_round() {
    let mut cluster = Cluster::new("apps-evented");
    cluster.start_master(&["--tick-ms", "3600000"]);
    cluster.start_agent("agent-1", &[]);
    cluster.wait_for_agents(1);
    let api = cluster.api();

    api.post("/v2/apps", &cmd_app("/evented", "sleep 1000", 2)).expect_status(201);
    let first = cluster.wait_for_running("/evented", 2, secs(60));
    api.put("/v2/apps/evented", &json!({"instances": 3})).expect_status(200);
    let scaled = cluster.wait_for_running("/evented", 3, secs(60));
    let gone = str_field(&first[0], "id").to_string();
    api.delete(&format!("/v2/apps/evented/tasks/{gone}")).expect_status(200);
    let replaced = wait_until("the killed task replaced", secs(60), || {
        let running = cluster.running_tasks("/evented");
        if running.len() == 3 && !ids(&running).contains(&gone) {
            Ok(running)
        } else {
            Err(task_summary(&running))
        }
    });
    assert!(ids(&scaled).contains(&gone), "{}", task_summary(&scaled));
    assert_eq!(replaced.len(), 3, "{}", task_summary(&replaced));
    let deployments = api.get("/v2/deployments").expect_status(200);
    assert_eq!(deployments.json, json!([]), "every deployment finished: {}", deployments.text);
}
