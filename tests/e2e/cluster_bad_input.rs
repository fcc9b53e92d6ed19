//! Bad input gets a clear 4xx (or CLI error) and changes nothing.

use crate::common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

/// What a user sees of the apps: ids, versions, instances and commands.
fn apps_state(api: &Http) -> Vec<(String, String, Value, Value)> {
    let apps = api.get_json("/v2/apps");
    let mut state: Vec<_> = apps["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| {
            (
                str_field(a, "id").to_string(),
                str_field(a, "version").to_string(),
                a["instances"].clone(),
                a["cmd"].clone(),
            )
        })
        .collect();
    state.sort_by(|a, b| a.0.cmp(&b.0));
    state
}

fn detail_paths(reply: &Reply) -> Vec<String> {
    reply.json["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|v| v["path"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn assert_rejected(reply: Reply, status: u16, path: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let message = reply.json["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "the error names the problem: {}", reply.text);
    if let Some(path) = path {
        assert!(detail_paths(&reply).iter().any(|p| p == path), "details should name {path}: {}", reply.text);
    }
}

#[test]
fn invalid_requests_get_clear_errors_and_change_nothing() {
    let cluster = Cluster::start("bad-input", 1);
    let api = cluster.api();
    cluster.deploy(&cmd_app("/keep", "sleep 1000", 1));
    cluster.wait_for_no_deployments(secs(60));
    let before = apps_state(&api);

    assert_rejected(api.post_raw("/v2/apps", r#"{"id": "/broken", "cmd": "#), 400, None);
    assert_eq!(apps_state(&api), before);

    let negative = json!({"id": "/negative", "cmd": "sleep 1", "instances": -1});
    assert_rejected(api.post("/v2/apps", &negative), 422, Some("/instances"));
    assert_rejected(api.post("/v2/apps", &json!({"id": "/no-cpu", "cmd": "sleep 1", "cpus": 0})), 422, Some("/cpus"));
    assert_rejected(api.post("/v2/apps", &json!({"id": "/Bad_Id!", "cmd": "sleep 1"})), 422, Some("/id"));
    assert_rejected(
        api.post("/v2/apps", &json!({"id": "/typed", "cmd": "sleep 1", "instances": "three"})),
        422,
        Some("/instances"),
    );
    // An invalid update of an existing app leaves it as it was.
    assert_rejected(
        api.put("/v2/apps/keep", &json!({"id": "/keep", "cmd": "sleep 1000", "instances": -1})),
        422,
        Some("/instances"),
    );
    assert_rejected(api.put_raw("/v2/apps/keep", "not json"), 400, None);
    assert_eq!(apps_state(&api), before);

    for (method, path) in [("GET", "/v2/apps/nope"), ("DELETE", "/v2/apps/nope"), ("GET", "/v2/apps/nope/tasks")] {
        let reply = api.try_request(method, path, None).expect("answer");
        assert_rejected(reply, 404, None);
    }
    assert_eq!(apps_state(&api), before);

    // 10 MB: refused as too large (or as a bad request), never stored.
    let filler = "x".repeat(10 * 1024 * 1024);
    let huge = json!({"id": "/huge", "cmd": "sleep 1", "labels": {"filler": filler}}).to_string();
    let reply = api.post_expect_continue("/v2/apps", huge.as_bytes()).expect("an answer to the 10 MB body");
    assert!(reply.status == 413 || reply.status == 400, "a 10 MB body got {}: {}", reply.status, reply.text);
    assert_eq!(apps_state(&api), before);

    // The CLI shows the API's errors clearly and exits non-zero.
    let shown = cluster.cli(&["app", "show", "/nope"]);
    assert!(!shown.status.success());
    assert!(stderr(&shown).contains("404"), "{}", stderr(&shown));
    let file = cluster.dir().join("bad-app.json");
    std::fs::write(&file, json!({"id": "/from-file", "cmd": "sleep 1", "cpus": 0}).to_string()).expect("write");
    let deployed = cluster.cli(&["app", "deploy", file.to_str().expect("utf-8 path")]);
    assert!(!deployed.status.success());
    let message = stderr(&deployed);
    assert!(message.contains("422") && message.contains("/cpus"), "{message}");
    std::fs::write(&file, "{ not json").expect("write");
    let deployed = cluster.cli(&["app", "deploy", file.to_str().expect("utf-8 path")]);
    assert!(!deployed.status.success());
    assert!(stderr(&deployed).contains("not valid JSON"), "{}", stderr(&deployed));
    assert_eq!(apps_state(&api), before);
    assert_eq!(cluster.running_tasks("/keep").len(), 1);
}

#[test]
fn app_larger_than_any_agent_waits_and_the_queue_says_why() {
    let cluster = Cluster::start("bad-input-queue", 2);
    let api = cluster.api();
    let created = api.post("/v2/apps", &json!({"id": "/too-big", "cmd": "sleep 1000", "cpus": 0.1, "mem": 100000}));
    assert_eq!(created.status, 201, "Marathon accepts it and waits: {}", created.text);

    // Marathon's offer summary names the reason every offer was declined for.
    let item = wait_until("the queue to explain why /too-big waits", secs(30), || {
        let queue = api.get_json("/v2/queue");
        let item = queue["queue"].as_array().and_then(|q| q.iter().find(|i| i["app"]["id"] == "/too-big")).cloned();
        let declined_for_mem = item
            .as_ref()
            .and_then(|i| i["processedOffersSummary"]["rejectSummaryLastOffers"].as_array())
            .is_some_and(|rejects| {
                rejects
                    .iter()
                    .any(|r| r["reason"] == "InsufficientMemory" && r["declined"].as_u64().is_some_and(|n| n > 0))
            });
        match item {
            Some(item) if declined_for_mem => Ok(item),
            _ => Err(queue.to_string()),
        }
    });
    assert_eq!(item["count"], 1, "{item}");
    assert!(cluster.tasks("/too-big").is_empty());

    let output = cluster.cli(&["queue"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.contains("/too-big") && table.contains("InsufficientMemory"), "{table}");
}

#[test]
fn agent_rejects_a_resource_typo_at_the_command_line() {
    let output = plinth(&["agent", "--master", "http://127.0.0.1:1", "--resources", "cpu:2;mem:1024"], &[]);
    assert_eq!(output.status.code(), Some(2), "usage errors exit with 2");
    let message = stderr(&output);
    assert!(message.contains("--resources") && message.contains("'cpu'"), "{message}");

    let output = plinth(&["agent", "--master", "http://127.0.0.1:1", "--attributes", "rack"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--attributes"), "{}", stderr(&output));

    let output =
        plinth(&["agent"], &[("PLINTH_MASTER", "http://127.0.0.1:1"), ("PLINTH_RESOURCES", "cpus:2;memory:1")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("'memory'"), "the env fallback is checked the same way: {}", stderr(&output));
}

#[test]
fn cli_reports_an_unreachable_master() {
    // Port 1 on loopback: nothing listens there.
    let output = plinth(&["app", "list"], &[("PLINTH_MASTER", "http://127.0.0.1:1")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot reach the master at http://127.0.0.1:1"), "{}", stderr(&output));
}

#[test]
fn cli_takes_global_flags_anywhere_rounds_numbers_ends_quietly_on_a_closed_pipe_and_names_missing_apps() {
    let cluster = Cluster::start("cli-finish", 1);
    let master = cluster.master_url();
    for (id, cpus) in [("/tenth", 0.1), ("/fifth", 0.2)] {
        cluster.deploy(&json!({"id": id, "cmd": "sleep 1000", "cpus": cpus, "mem": 16}));
    }

    // --master and --json before the command work as after it.
    let output = plinth(&["--master", &master, "--json", "app", "list"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let apps: Value = serde_json::from_str(&stdout(&output)).expect("JSON with --json before the command");
    assert_eq!(apps["apps"].as_array().map(Vec::len), Some(2), "{apps}");
    let output = plinth(&["--master", &master, "agent", "--master", &master], &[]);
    assert_eq!(output.status.code(), Some(2), "--master before a role command is a usage error");
    assert!(stderr(&output).contains("put them after it"), "{}", stderr(&output));

    // 0.1 + 0.2 cpus used: shown as people write it, and every view ends its last line.
    let output = cluster.cli(&["node", "list"]);
    let table = stdout(&output);
    assert!(table.contains("0.3/4") && !table.contains("0.30000"), "{table}");
    assert!(table.ends_with('\n'), "{table:?}");

    // A reader that goes away (`| head`) ends the client quietly, not with a panic.
    let mut child = Command::new(PLINTH)
        .args(["app", "list"])
        .env("PLINTH_MASTER", &master)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plinth");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("reap plinth");
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    assert_ne!(output.status.code(), Some(101), "no panic exit on a closed pipe");

    // Scaling an app that does not exist names the problem, not a validation error.
    let output = cluster.cli(&["app", "scale", "/nope", "3"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no such app: /nope"), "{}", stderr(&output));
    assert_eq!(cluster.api().get("/v2/apps/nope").status, 404, "nothing was created");
}

#[test]
fn ids_and_definitions_are_bounded_so_no_request_can_make_reads_crash_or_grow_quadratically() {
    let cluster = Cluster::start("id-bounds", 1);
    let api = cluster.api();
    // The id that overflowed the stack of every GET /v2/groups (under 8 KB, once accepted).
    let thousands = format!("/{}", vec!["a"; 4_000].join("/"));
    assert_rejected(api.post("/v2/apps", &cmd_app(&thousands, "sleep 1", 0)), 422, Some("/id"));
    let too_deep = format!("/{}/app", vec!["g"; 16].join("/"));
    assert_rejected(api.post("/v2/apps", &cmd_app(&too_deep, "sleep 1", 0)), 422, Some("/id"));
    let too_long = format!("/{}", "a".repeat(250));
    assert_rejected(api.post("/v2/apps", &cmd_app(&too_long, "sleep 1", 0)), 422, Some("/id"));
    // Every other part of a definition is bounded too, and named in the 422.
    let mut big = cmd_app("/big", "sleep 1", 0);
    big["env"] = (0..1025).map(|i| (format!("V{i}"), json!("x"))).collect::<serde_json::Map<_, _>>().into();
    big["labels"] = json!({"k": "v".repeat(40 * 1024)});
    assert_rejected(api.post("/v2/apps", &big), 422, Some("/env"));
    assert_rejected(api.put("/v2/apps/big", &big), 422, Some("/labels/k"));
    assert_eq!(api.get("/v2/apps").json["apps"].as_array().map(Vec::len), Some(0), "nothing was created");

    // The deepest allowed tree: group reads answer, in a size linear in the tree.
    let deepest = format!("/{}/app", vec!["g"; 15].join("/"));
    api.post("/v2/apps", &cmd_app(&deepest, "sleep 1000", 0)).expect_status(201);
    let groups = api.get("/v2/groups");
    assert_eq!(groups.status, 200, "{}", groups.text);
    assert!(groups.text.contains(&deepest), "{}", groups.text);
    assert!(groups.text.len() < 64 * 1024, "{} bytes for one app 16 levels deep", groups.text.len());
    // Groups take the same bounds as apps.
    let deep_group = format!("/{}", vec!["h"; 17].join("/"));
    let reply = api.post("/v2/groups", &json!({"id": deep_group}));
    assert_eq!(reply.status, 422, "{}", reply.text);
}
