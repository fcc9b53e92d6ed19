//! Health and readiness checks run by a real agent next to real tasks, reported to the
//! in-test master as `TASK_RUNNING` updates with `healthy` and `healthCheckResults`.
use crate::common::*;
use plinth_agent::testing::task_spec;
use plinth_protocol::agent::{DesiredState, StatusUpdate};
use plinth_protocol::TaskState;
use serde_json::json;
use std::time::Duration;

fn health_updates(m: &Shared, task: &str) -> Vec<StatusUpdate> {
    m.lock()
        .unwrap()
        .statuses
        .iter()
        .filter(|u| u.task_id.as_str() == task && u.extra.contains_key("healthCheckResults"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_turn_healthy_command_checks_count_failures_readiness_reports_ready() {
    let (master, m) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillTasksOnDrop(dir.path().to_path_buf());
    let agent = start_agent(&master, dir.path().to_path_buf(), free_port());
    wait_until_async("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned())
        .await;

    let web_port = free_port();
    let web = task_spec(
        "web.1",
        json!({
            "id": "/web", "mem": 64,
            "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
            "portDefinitions": [{"port": 0, "name": "http"}],
            "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 30,
                              "intervalSeconds": 1, "timeoutSeconds": 2, "delaySeconds": 0, "maxConsecutiveFailures": 3}],
            "readinessChecks": [{"name": "up", "portName": "http", "path": "/", "intervalSeconds": 1, "timeoutSeconds": 2}]
        }),
        vec![web_port],
    );
    let sick = task_spec(
        "sick.1",
        json!({
            "id": "/sick", "mem": 64, "cmd": "sleep 100",
            "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -n \"$MESOS_TASK_ID\" && exit 1"},
                              "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 2, "delaySeconds": 0}]
        }),
        vec![free_port()],
    );
    m.lock().unwrap().desired = Some(DesiredState { generation: 1, tasks: vec![web, sick] });

    // The web server answers: an update with healthy=true and Marathon's result shape.
    let healthy = wait_until_async("web.1 healthy", Duration::from_secs(30), || {
        health_updates(&m, "web.1").into_iter().find(|u| u.healthy == Some(true))
    })
    .await;
    assert_eq!(healthy.state, TaskState::TaskRunning);
    let results = healthy.extra["healthCheckResults"].as_array().expect("an array").clone();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["alive"], true);
    assert_eq!(results[0]["consecutiveFailures"], 0);
    assert_eq!(results[0]["taskId"], "web.1");
    assert_eq!(results[0]["instanceId"], "web.1");
    assert!(results[0]["firstSuccess"].is_string() && results[0]["lastSuccess"].is_string());
    // Failures while the server was still starting fall in the grace period: not counted.
    assert!(health_updates(&m, "web.1").iter().all(|u| u.extra["healthCheckResults"][0]["consecutiveFailures"] == 0));

    let ready = wait_until_async("web.1 ready", Duration::from_secs(30), || {
        m.lock()
            .unwrap()
            .statuses
            .iter()
            .find(|u| u.task_id.as_str() == "web.1" && u.extra.get("ready") == Some(&json!(true)))
            .cloned()
    })
    .await;
    assert_eq!(ready.state, TaskState::TaskRunning);
    assert_eq!(ready.extra["readinessCheckResults"][0]["name"], "up");

    // The failing command check: one update per new failure count, the agent keeps
    // checking past maxConsecutiveFailures (killing is the master's call).
    let counts = wait_until_async("sick.1 failing 4 times", Duration::from_secs(30), || {
        let counts: Vec<u64> = health_updates(&m, "sick.1")
            .iter()
            .map(|u| u.extra["healthCheckResults"][0]["consecutiveFailures"].as_u64().unwrap())
            .collect();
        (counts.len() >= 4).then_some(counts)
    })
    .await;
    assert_eq!(&counts[..4], &[1, 2, 3, 4]);
    let last = health_updates(&m, "sick.1").pop().unwrap();
    assert_eq!(last.healthy, Some(false));
    assert_eq!(last.extra["healthCheckResults"][0]["alive"], false);
    assert_eq!(last.extra["healthCheckResults"][0]["lastFailureCause"], "command exited with status 1");
    assert!(
        status_of(&m, "sick.1", TaskState::TaskRunning).is_some(),
        "still running: the agent never kills for health"
    );

    // Stopping the web server's task stops its checks: no health update after the kill.
    m.lock().unwrap().desired = Some(DesiredState { generation: 2, tasks: vec![] });
    wait_until_async("web.1 killed", Duration::from_secs(15), || status_of(&m, "web.1", TaskState::TaskKilled)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let statuses = m.lock().unwrap().statuses.clone();
    let killed_at =
        statuses.iter().position(|u| u.task_id.as_str() == "web.1" && u.state == TaskState::TaskKilled).unwrap();
    assert!(
        statuses[killed_at..].iter().all(|u| u.task_id.as_str() != "web.1" || u.state == TaskState::TaskKilled),
        "no TASK_RUNNING update after the task was killed"
    );
    agent.handle.abort();
}
