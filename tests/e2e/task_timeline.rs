//! A task's start timeline (`GET /v1/tasks/{id}/inspect` through the master, `plinth task
//! inspect`): the master's phases (accepted, offered, launched, running, healthy) merged
//! with the agent's (pulled, rootfs, created, started) for a real container from the test
//! image and for a command task, in order and with times that never go back.

use crate::common::*;
use crate::containers::{ImageCluster, HELLO};
use plinth_protocol::Timestamp;
use serde_json::{json, Value};

/// The timeline's phases and their times (ms), as the master's inspect view lists them.
fn timeline(inspect: &Value) -> Vec<(String, i64)> {
    inspect["timeline"]
        .as_array()
        .unwrap_or_else(|| panic!("no timeline in {inspect}"))
        .iter()
        .map(|mark| {
            let at = str_field(mark, "at");
            let time = Timestamp::parse_iso(at).unwrap_or_else(|| panic!("'{at}' is not RFC 3339 in {inspect}"));
            (str_field(mark, "phase").to_string(), time.millis())
        })
        .collect()
}

fn assert_in_order(marks: &[(String, i64)], phases: &[&str], what: &str) {
    let names: Vec<&str> = marks.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, phases, "{what}: the phases, in order");
    for pair in marks.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "{what}: {} after {}: {marks:?}", pair[1].0, pair[0].0);
    }
}

#[test]
fn inspect_lists_a_containers_and_a_command_tasks_start_phases_in_order() {
    let ic = ImageCluster::start("timeline", 1, &[]);
    let cluster = &ic.cluster;
    let api = cluster.api();
    api.post(
        "/v2/apps",
        &json!({"id": "/hello", "cpus": 0.2, "mem": 64, "container": {"type": "DOCKER", "docker": {"image": HELLO,
          "network": "BRIDGE", "portMappings": [{"containerPort": 3000, "hostPort": 0, "protocol": "tcp"}]}},
          "healthChecks": [{"protocol": "HTTP", "path": "/greet/check", "portIndex": 0, "gracePeriodSeconds": 30,
            "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]}),
    )
    .expect_status(201);
    api.post("/v2/apps", &json!({"id": "/sleeper", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16})).expect_status(201);
    // Deployments end only once the container's check passed.
    let container_task = cluster.wait_for_running("/hello", 1, secs(120)).remove(0);
    let command_task = cluster.wait_for_running("/sleeper", 1, secs(60)).remove(0);

    let id = str_field(&container_task, "id").to_string();
    let inspect = api.get_json(&format!("/v1/tasks/{id}/inspect"));
    let marks = timeline(&inspect);
    assert_in_order(
        &marks,
        &["accepted", "offered", "launched", "pulled", "rootfs", "created", "started", "running", "healthy"],
        "container task",
    );
    // The Marathon view of the same task stays Marathon's.
    let v2 = api.get_json("/v2/apps/hello/tasks");
    assert!(v2["tasks"][0].get("timeline").is_none(), "no timeline in /v2: {v2}");

    let id = str_field(&command_task, "id").to_string();
    let inspect = api.get_json(&format!("/v1/tasks/{id}/inspect"));
    assert_in_order(
        &timeline(&inspect),
        &["accepted", "offered", "launched", "created", "started", "running"],
        "command task (no image, no health check)",
    );

    // The CLI prints each phase with its time since accepted.
    for (task, phases) in [(&command_task, 6), (&container_task, 9)] {
        let id = str_field(task, "id");
        let out = plinth(&["task", "inspect", id], &[("PLINTH_MASTER", &cluster.master_url())]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        // Shown with --no-capture: one real launch's phases.
        eprintln!("{text}");
        let rows: Vec<&str> = text.lines().skip_while(|l| *l != "timeline:").skip(1).collect();
        assert_eq!(rows.len(), phases, "one row a phase: {text}");
        assert!(rows[0].trim_start().starts_with("accepted") && rows[0].ends_with("+0 ms"), "{text}");
        let last = if phases == 9 { "healthy" } else { "running" };
        assert!(rows[phases - 1].trim_start().starts_with(last) && rows[phases - 1].ends_with(" ms"), "{text}");
    }
}
