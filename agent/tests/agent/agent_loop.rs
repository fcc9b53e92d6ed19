//! The whole agent (register, long-poll sync, status outbox, HTTP API, restart with
//! re-adoption) against a small in-test master that speaks the agent protocol, running
//! real command tasks.
use crate::common::*;
use plinth_agent::runtime::FakeRuntime;
use plinth_protocol::agent::{DesiredState, TaskSpec};
use plinth_protocol::{AgentId, TaskId, TaskState};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_reports_survives_a_restart_and_kills_on_request() {
    let (master, m) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillTasksOnDrop(dir.path().to_path_buf());
    let port = free_port();
    let agent = start_agent(&master, dir.path().to_path_buf(), port);

    let first =
        wait_until_async("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned())
            .await;
    assert_eq!(first.agent_id, None);
    assert_eq!(first.hostname, "test-node");
    assert_eq!(first.http_port, port);
    assert_eq!(first.resources.cpus, 2.0);
    assert_eq!(m.lock().unwrap().token_seen[0].as_deref(), Some("sesame"));

    m.lock().unwrap().desired = Some(DesiredState {
        generation: 1,
        tasks: vec![
            spec("web.1", json!({"id": "/web", "cmd": "echo serving on $PORT0; sleep 100", "mem": 64})),
            spec("job.1", json!({"id": "/job", "cmd": "echo working; exit 3", "mem": 64})),
        ],
    });
    let running =
        wait_until_async("web.1 running", Duration::from_secs(15), || status_of(&m, "web.1", TaskState::TaskRunning))
            .await;
    assert_eq!(running.app_id.as_str(), "/web");
    assert!(status_of(&m, "web.1", TaskState::TaskStarting).is_some(), "STARTING comes first");
    let failed =
        wait_until_async("job.1 failed", Duration::from_secs(15), || status_of(&m, "job.1", TaskState::TaskFailed))
            .await;
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message.as_deref(), Some("Command exited with status 3"));

    // The HTTP API: tasks, one task, logs, state.
    let tasks = get_json(&format!("{}/v1/tasks", agent.api)).await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);
    let web = get_json(&format!("{}/v1/tasks/web.1", agent.api)).await;
    assert_eq!(web["state"], "TASK_RUNNING");
    let pid = web["pid"].as_i64().expect("pid");
    plinth_oci::tls::install_provider();
    let logs = reqwest::get(format!("{}/v1/tasks/web.1/logs", agent.api)).await.unwrap().text().await.unwrap();
    assert_eq!(logs, "serving on 31007\n");
    let finished_logs = reqwest::get(format!("{}/v1/tasks/job.1/logs?follow=true", agent.api)).await.unwrap();
    assert_eq!(finished_logs.text().await.unwrap(), "working\n", "follow ends with a finished task");
    let unknown = reqwest::get(format!("{}/v1/tasks/nope/logs", agent.api)).await.unwrap();
    assert_eq!(unknown.status(), 404);
    let state = get_json(&format!("{}/v1/state", agent.api)).await;
    assert_eq!(state["agent_id"], "agent-1");
    assert_eq!(state["attributes"]["rack"], "r1");
    assert_eq!(state["generation"], 1);

    // Restart the agent: the task keeps running and is re-adopted, not relaunched.
    agent.handle.abort();
    let _ = agent.handle.await;
    let registrations_before = m.lock().unwrap().registrations.len();
    let agent = start_agent(&master, dir.path().to_path_buf(), port);
    let again = wait_until_async("re-registration", Duration::from_secs(10), || {
        m.lock().unwrap().registrations.get(registrations_before).cloned()
    })
    .await;
    assert_eq!(again.agent_id, Some(AgentId::new("agent-1")), "the agent id is remembered");
    assert_eq!(again.last_generation, 1);
    let reported: Vec<_> = again.tasks.iter().map(|t| (t.task_id.as_str(), t.state)).collect();
    assert_eq!(reported, vec![("web.1", TaskState::TaskRunning)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let web = get_json(&format!("{}/v1/tasks/web.1", agent.api)).await;
    assert_eq!(web["state"], "TASK_RUNNING");
    assert_eq!(web["pid"].as_i64(), Some(pid), "same process, not a new launch");
    let running_updates = m
        .lock()
        .unwrap()
        .statuses
        .iter()
        .filter(|u| u.task_id.as_str() == "web.1" && u.state == TaskState::TaskRunning)
        .count();
    assert_eq!(running_updates, 1, "no duplicate launch");

    // A newer generation without the task kills it.
    m.lock().unwrap().desired = Some(DesiredState { generation: 2, tasks: vec![] });
    let killed =
        wait_until_async("web.1 killed", Duration::from_secs(15), || status_of(&m, "web.1", TaskState::TaskKilled))
            .await;
    assert!(killed.message.unwrap().contains("killed"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z")).unwrap_or(true)
        }
    );
    agent.handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_waits_for_a_late_master_resends_statuses_and_refuses_bad_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let master_port = free_port();
    let master_url = format!("http://127.0.0.1:{master_port}");
    let fake = Arc::new(FakeRuntime::new());
    let agent = start_agent_with(&master_url, dir.path().to_path_buf(), free_port(), fake.clone());

    // The master comes up late: the agent keeps trying and registers.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, m) = start_master_on(master_port).await;
    wait_until_async("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned())
        .await;

    fake.fail_next_launches(1);
    m.lock().unwrap().desired = Some(DesiredState {
        generation: 5,
        tasks: vec![
            spec("bad.1", json!({"id": "/bad", "cmd": "x"})),
            spec("ok.1", json!({"id": "/ok", "cmd": "x"})),
            spec("../escape", json!({"id": "/evil", "cmd": "x"})),
            TaskSpec { kill: true, ..spec("never.1", json!({"id": "/never", "cmd": "x"})) },
        ],
    });
    let failed =
        wait_until_async("launch failure", Duration::from_secs(10), || status_of(&m, "bad.1", TaskState::TaskFailed))
            .await;
    assert!(failed.message.unwrap().contains("injected launch failure"));
    let refused = wait_until_async("bad id refused", Duration::from_secs(10), || {
        status_of(&m, "../escape", TaskState::TaskError)
    })
    .await;
    assert!(refused.message.unwrap().contains("not usable"));
    wait_until_async("kill of an unknown task", Duration::from_secs(10), || {
        status_of(&m, "never.1", TaskState::TaskKilled)
    })
    .await;
    wait_until_async("ok.1 running", Duration::from_secs(10), || status_of(&m, "ok.1", TaskState::TaskRunning)).await;
    assert_eq!(fake.live_tasks(), vec![TaskId::new("ok.1")]);
    assert!(!dir.path().join("escape").exists() && !dir.path().join("tasks/..").join("escape").exists());

    // The master forgets the agent: it registers again, reporting its running task.
    let before = m.lock().unwrap().registrations.len();
    m.lock().unwrap().reregister_next = true;
    let again = wait_until_async("re-registration", Duration::from_secs(10), || {
        m.lock().unwrap().registrations.get(before).cloned()
    })
    .await;
    assert_eq!(again.last_generation, 5);
    assert_eq!(again.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), vec!["ok.1"]);

    // An older generation changes nothing; the exit of a task is reported once.
    m.lock().unwrap().desired = Some(DesiredState { generation: 4, tasks: vec![] });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.live_tasks(), vec![TaskId::new("ok.1")], "generation 4 < 5 is ignored");
    fake.exit(&TaskId::new("ok.1"), 0);
    let finished =
        wait_until_async("ok.1 finished", Duration::from_secs(10), || status_of(&m, "ok.1", TaskState::TaskFinished))
            .await;
    assert_eq!(finished.exit_code, Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.launch_count(), 1, "a finished task is not relaunched");
    let statuses = m.lock().unwrap().statuses.clone();
    let mut ids: Vec<_> = statuses.iter().map(|u| u.update_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), statuses.len(), "acknowledged updates are not sent again");
    agent.handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_starting_and_ending_is_reported_without_waiting_for_a_tick() {
    let (master, m) = start_master().await;
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillTasksOnDrop(dir.path().to_path_buf());
    // A tick an hour apart: every report below comes from the desired state's arrival and
    // the executors' news on the notify socket. (Task ids of its own: cgroups are named
    // by task id, and the other tests of this file run beside it.)
    let _agent = start_agent_ticking(&master, dir.path().to_path_buf(), free_port(), Duration::from_secs(3600));
    wait_until_async("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned())
        .await;
    m.lock().unwrap().desired = Some(DesiredState {
        generation: 1,
        tasks: vec![
            spec("evented-web.1", json!({"id": "/evented-web", "cmd": "sleep 100", "mem": 64})),
            spec("evented-job.1", json!({"id": "/evented-job", "cmd": "exit 3", "mem": 64})),
        ],
    });
    wait_until_async("evented-web.1 running", Duration::from_secs(30), || {
        status_of(&m, "evented-web.1", TaskState::TaskRunning)
    })
    .await;
    let failed = wait_until_async("evented-job.1 failed", Duration::from_secs(30), || {
        status_of(&m, "evented-job.1", TaskState::TaskFailed)
    })
    .await;
    assert_eq!(failed.exit_code, Some(3), "the exit came with its code");
}
