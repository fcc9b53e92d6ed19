//! Artifact staging by a real agent: a `.tar.gz` served over HTTP by the test (on
//! loopback) is extracted into the sandbox before the command runs; a missing artifact
//! fails the task with a clear message instead of hanging.

use crate::common::*;
use axum::routing::get;
use axum::Router;
use plinth_agent::testing::task_spec;
use plinth_protocol::agent::DesiredState;
use plinth_protocol::TaskState;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

/// `app/run.sh` (executable) in a gzip'd tar.
fn artifact() -> Vec<u8> {
    let script = b"#!/bin/sh\necho \"artifact ran with $1 in $MESOS_SANDBOX\"\n";
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    builder.append_data(&mut header, "app/", std::io::empty()).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(script.len() as u64);
    builder.append_data(&mut header, "app/run.sh", &script[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

async fn serve_artifacts() -> String {
    let bytes = artifact();
    let app = Router::new().route("/artifacts/app.tar.gz", get(move || async move { bytes.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_tarball_runs_and_a_missing_one_fails_the_task() {
    let (master, m) = start_master().await;
    let artifacts = serve_artifacts().await;
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillTasksOnDrop(dir.path().to_path_buf());
    let agent = start_agent(&master, dir.path().to_path_buf(), free_port());
    wait_until_async("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned())
        .await;

    let good = task_spec(
        "fetcher.1",
        json!({"id": "/fetcher", "mem": 64, "cmd": "./app/run.sh hello && sleep 100",
               "fetch": [{"uri": format!("{artifacts}/artifacts/app.tar.gz"), "extract": true, "cache": true}]}),
        vec![free_port()],
    );
    // The old `uris` form, folded into `fetch` as the master does.
    let old_form = task_spec(
        "legacy.1",
        json!({"id": "/legacy", "mem": 64, "cmd": "./app/run.sh old; sleep 100",
               "uris": [format!("{artifacts}/artifacts/app.tar.gz")]}),
        vec![free_port()],
    );
    let missing_url = format!("{artifacts}/artifacts/missing.tgz");
    let missing = task_spec(
        "missing.1",
        json!({"id": "/missing", "mem": 64, "cmd": "echo should not run", "fetch": [{"uri": missing_url}]}),
        vec![free_port()],
    );
    m.lock().unwrap().desired = Some(DesiredState { generation: 1, tasks: vec![good, old_form, missing] });

    wait_until_async("fetcher.1 running", Duration::from_secs(20), || {
        status_of(&m, "fetcher.1", TaskState::TaskRunning)
    })
    .await;
    let logs_url = format!("{}/v1/tasks/fetcher.1/logs", agent.api);
    let logs = wait_until_async_text(&logs_url, "artifact ran").await;
    let sandbox = dir.path().join("tasks/fetcher.1");
    assert_eq!(logs, format!("artifact ran with hello in {}\n", sandbox.display()));
    assert!(sandbox.join("app.tar.gz").is_file(), "the archive itself stays, as with Mesos");
    assert!(dir.path().join("fetch-cache").read_dir().unwrap().next().is_some(), "cache: true keeps a copy");
    let legacy_logs = wait_until_async_text(&format!("{}/v1/tasks/legacy.1/logs", agent.api), "artifact ran").await;
    assert!(legacy_logs.starts_with("artifact ran with old"));

    let failed = wait_until_async("missing.1 failed", Duration::from_secs(20), || {
        status_of(&m, "missing.1", TaskState::TaskFailed)
    })
    .await;
    assert_eq!(
        failed.message.as_deref(),
        Some(format!("Fetch of {missing_url} failed: GET {missing_url} answered HTTP 404").as_str())
    );
    assert_eq!(failed.reason.as_deref(), Some("REASON_CONTAINER_LAUNCH_FAILED"));
    assert!(status_of(&m, "missing.1", TaskState::TaskRunning).is_none(), "the command never ran");
    plinth_oci::tls::install_provider();
    let out = reqwest::get(format!("{}/v1/tasks/missing.1/logs", agent.api)).await.unwrap().text().await.unwrap();
    assert!(!out.contains("should not run"));
    agent.handle.abort();
}

/// Polls a log URL until its text contains `needle`.
async fn wait_until_async_text(url: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        plinth_oci::tls::install_provider();
        if let Ok(response) = reqwest::get(url).await {
            let text = response.text().await.unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for '{needle}' in {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
