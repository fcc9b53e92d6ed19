//! Task confinement on a real `plinth standalone` node: a command task runs as `nobody`
//! by default and, even as root (`--allow-root-tasks`), sees neither the master's data
//! dir (the store with every app's env) nor the agent's work dir (other tasks' sandboxes
//! and `task.json`), which are there on the node all the same.

use crate::common::*;
use serde_json::{json, Value};

const SECRET: &str = "sesame-e2e-91";
/// The secret as the snooping task's command spells it, so that its own `task.json`
/// (which holds the command) does not contain the secret itself.
const SECRET_IN_SHELL: &str = "sesame-e2e-$((90 + 1))";

fn running_task(api: &Http, app: &str) -> Value {
    wait_until(&format!("{app} to run"), secs(60), || {
        let tasks = api.get_json(&format!("/v2/apps/{app}/tasks"))["tasks"].as_array().cloned().unwrap_or_default();
        tasks.iter().find(|t| t["state"] == "TASK_RUNNING").cloned().ok_or_else(|| task_summary(&tasks))
    })
}

/// The task's stdout once it printed `done`, from the node's agent API.
fn stdout_when_done(agent: &Http, task_id: &str) -> String {
    wait_until(&format!("{task_id} to finish its report"), secs(30), || {
        let reply = agent.try_get(&format!("/v1/tasks/{task_id}/logs"))?;
        if reply.text.contains("done\n") {
            Ok(reply.text)
        } else {
            Err(format!("{}: {}", reply.status, reply.text))
        }
    })
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map_or("<missing>", str::trim)
}

#[test]
fn standalone_tasks_see_neither_the_master_store_nor_other_sandboxes() {
    let mut cluster = Cluster::new("confinement");
    cluster.start_standalone_with("solo", &["--allow-root-tasks"]);
    let ip = cluster.node("solo").host.ip;
    let api = Http::new(format!("http://{ip}:{MASTER_PORT}"));
    let agent = Http::new(format!("http://{ip}:{AGENT_PORT}"));
    let data_dir = cluster.dir().join("solo-master");
    let work_dir = cluster.dir().join("solo-agent");

    let keeper = json!({"id": "/keeper", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "env": {"API_KEY": SECRET}});
    api.post("/v2/apps", &keeper).expect_status(201);
    let keeper = running_task(&api, "keeper");
    let keeper_id = str_field(&keeper, "id");
    // On the node the secret is in the keeper's task.json (and the master's store).
    let keeper_spec = std::fs::read_to_string(work_dir.join("tasks").join(keeper_id).join("task.json")).unwrap();
    assert!(keeper_spec.contains(SECRET));
    assert!(std::fs::read_dir(&data_dir).unwrap().next().is_some(), "the master's data dir holds its store");

    let report = format!(
        r#"echo "uid: $(id -u)"; echo "found: $(grep -rl "{SECRET_IN_SHELL}" {data} {work} 2>/dev/null | tr '\n' ' ')";
           echo "data: $(ls -A {data} | tr '\n' ' ')"; echo "tasks: $(ls -A {work}/tasks | tr '\n' ' ')"; echo done;
           sleep 1000"#,
        data = data_dir.display(),
        work = work_dir.display(),
    );
    for (app, user) in [("snoop-root", Some("root")), ("snoop", None)] {
        let mut definition = json!({"id": app, "cmd": report, "cpus": 0.1, "mem": 32});
        if let Some(user) = user {
            definition["user"] = json!(user);
        }
        api.post("/v2/apps", &definition).expect_status(201);
        let task = running_task(&api, app);
        let task_id = str_field(&task, "id");
        let stdout = stdout_when_done(&agent, task_id);
        let expected_uid = if user.is_some() { "0".to_string() } else { sh("id", &["-u", "nobody"]) };
        assert_eq!(field(&stdout, "uid"), expected_uid.trim(), "{app}: {stdout}");
        assert_eq!(field(&stdout, "found"), "", "{app} found the secret: {stdout}");
        assert!(!stdout.contains(SECRET), "{stdout}");
        if user.is_some() {
            // Root could read anything it could see: it sees empty directories.
            assert_eq!(field(&stdout, "data"), "", "{app}: {stdout}");
            assert_eq!(field(&stdout, "tasks"), task_id, "only its own sandbox: {stdout}");
        }
    }
}
