//! In-process tests of the master shell: the real router, store and core behind a
//! listener on 127.0.0.1:0, driven over HTTP (and a fake agent speaking the agent protocol;
//! the harness is `common/`).
mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use common::{next_event, registration, running, start, start_with, Harness};
use plinth_protocol::agent::{StatusBatch, SyncRequest, SyncResponse, TOKEN_HEADER};
use plinth_protocol::TaskState;

fn hello(id: &str) -> Value {
    json!({"id": id, "cmd": "echo hello; sleep 10", "cpus": 0.1, "mem": 16, "instances": 1})
}

#[tokio::test]
async fn app_lifecycle_create_list_get_put_scale_delete() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;

    let (status, app) = h
        .post(
            "/v2/apps",
            json!({"id": "/prod/hello", "cmd": "echo hi", "labels": {"env": "prod"}, "someFutureField": 1}),
        )
        .await?;
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["id"], "/prod/hello");
    assert_eq!(app["instances"], 1);
    assert_eq!(app["cpus"], 1.0);
    assert_eq!(app["mem"], 128.0);
    assert_eq!(app["tasksRunning"], 0);
    assert!(app.get("someFutureField").is_none(), "unknown fields are ignored");
    assert_eq!(app["deployments"].as_array().map(Vec::len), Some(1), "{app}");
    assert!(app["version"].is_string());

    // Location header.
    let response = h.http.post(format!("{}/v2/apps", h.base)).json(&hello("other")).send().await?;
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.headers()["location"], "/v2/apps/other");

    // Duplicate.
    let (status, body) = h.post("/v2/apps", json!({"id": "prod/hello", "cmd": "x"})).await?;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("/prod/hello"));

    // List with filters.
    assert_eq!(h.app_ids().await?.len(), 2);
    let (_, list) = h.get("/v2/apps?id=prod").await?;
    assert_eq!(list["apps"].as_array().unwrap().len(), 1);
    let (_, list) = h.get("/v2/apps?label=env==prod").await?;
    assert_eq!(list["apps"][0]["id"], "/prod/hello");
    let (_, list) = h.get("/v2/apps?cmd=sleep").await?;
    assert_eq!(list["apps"][0]["id"], "/other");
    let (_, list) = h.get("/v2/apps?embed=apps.tasks&embed=apps.counts").await?;
    assert!(list["apps"][0]["tasks"].is_array());
    let (_, list) = h.get("/v2/apps/prod/*").await?;
    assert_eq!(list["apps"].as_array().unwrap().len(), 1);

    // Get (tasks embedded).
    let (status, got) = h.get("/v2/apps/prod/hello").await?;
    assert_eq!(status, 200);
    assert_eq!(got["app"]["id"], "/prod/hello");
    assert!(got["app"]["tasks"].is_array());

    // Scale with PUT (force: the start deployment cannot finish without agents).
    let (status, body) = h.put("/v2/apps/prod/hello?force=true", json!({"instances": 3})).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["deploymentId"].is_string() && body["version"].is_string());
    let (_, got) = h.get("/v2/apps/prod/hello").await?;
    assert_eq!(got["app"]["instances"], 3);
    assert_eq!(got["app"]["cmd"], "echo hi", "partial update keeps other fields");
    assert_eq!(got["app"]["labels"]["env"], "prod");

    // Locked by the running deployment without force.
    let (status, body) = h.put("/v2/apps/prod/hello", json!({"cmd": "echo changed"})).await?;
    assert_eq!(status, 409, "{body}");
    assert!(body["deployments"][0]["id"].is_string(), "{body}");

    // PATCH merges too.
    let (status, body) =
        h.call(reqwest::Method::PATCH, "/v2/apps/prod/hello?force=true", Some(json!({"cmd": "echo patched"}))).await?;
    assert_eq!(status, 200, "{body}");
    let (_, got) = h.get("/v2/apps/prod/hello").await?;
    assert_eq!(got["app"]["cmd"], "echo patched");
    assert_eq!(got["app"]["instances"], 3);

    // PUT creates when absent.
    let (status, body) = h.put("/v2/apps/fresh", hello("ignored-id")).await?;
    assert_eq!(status, 201, "{body}");
    let (status, got) = h.get("/v2/apps/fresh").await?;
    assert_eq!(status, 200);
    assert_eq!(got["app"]["id"], "/fresh", "the path id wins");

    // Versions.
    let (status, versions) = h.get("/v2/apps/prod/hello/versions").await?;
    assert_eq!(status, 200);
    let versions = versions["versions"].as_array().unwrap().clone();
    assert!(versions.len() >= 2, "{versions:?}");
    let oldest = versions.last().unwrap().as_str().unwrap().to_string();
    let (status, old) = h.get(&format!("/v2/apps/prod/hello/versions/{oldest}")).await?;
    assert_eq!(status, 200);
    assert_eq!(old["cmd"], "echo hi");
    let (status, _) = h.get("/v2/apps/prod/hello/versions/1999-01-01T00:00:00.000Z").await?;
    assert_eq!(status, 404);

    // Deployments are listed.
    let (_, deployments) = h.get("/v2/deployments").await?;
    assert!(!deployments.as_array().unwrap().is_empty());

    // Restart.
    let (status, body) = h.post("/v2/apps/prod/hello/restart?force=true", json!({})).await?;
    assert_eq!(status, 200, "{body}");

    // Delete always wins.
    let (status, body) = h.delete("/v2/apps/prod/hello").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["deploymentId"].is_string());
    let (status, body) = h.get("/v2/apps/prod/hello").await?;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "App '/prod/hello' does not exist");
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    h.post("/v2/apps", hello("keep")).await?;
    let before = h.get("/v2/apps").await?.1;

    let (status, body) = h.raw_post("/v2/apps", b"{not json".to_vec()).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Invalid JSON");
    assert!(body["details"][0]["errors"][0].is_string());

    let (status, body) = h.post("/v2/apps", json!({"id": "x", "cmd": "x", "instances": -1, "cpus": 0})).await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["message"], "Object is not valid");
    let paths: Vec<&str> = body["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/instances") && paths.contains(&"/cpus"), "{paths:?}");

    let (status, body) = h.post("/v2/apps", json!({"id": "Bad_Id!", "cmd": "x"})).await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["path"], "/id");

    let (status, body) = h.post("/v2/apps", json!({"id": "typed", "cmd": "x", "instances": "three"})).await?;
    assert_eq!(status, 422, "{body}");

    let (status, body) = h.post("/v2/apps", json!([1, 2])).await?;
    assert_eq!(status, 422, "{body}");

    // 10 MB body.
    let huge = format!("{{\"id\":\"big\",\"cmd\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let (status, body) = h.raw_post("/v2/apps", huge.into_bytes()).await?;
    assert_eq!(status, 413, "{body}");
    assert!(body["message"].as_str().unwrap().contains("too large"), "{body}");

    // Invalid update of an existing app.
    let (status, body) = h.put("/v2/apps/keep?force=true", json!({"mem": -5})).await?;
    assert_eq!(status, 422, "{body}");
    let (status, _) = h.put("/v2/apps/keep?force=maybe", json!({"instances": 2})).await?;
    assert_eq!(status, 400);

    // Unknown things.
    assert_eq!(h.get("/v2/apps/nope").await?.0, 404);
    assert_eq!(h.delete("/v2/apps/nope").await?.0, 404);
    assert_eq!(h.delete("/v2/apps/keep/tasks/keep.unknown").await?.0, 404);
    assert_eq!(h.delete("/v2/deployments/unknown").await?.0, 404);
    assert_eq!(h.post("/v2/tasks/delete", json!({"ids": ["nope.1"]})).await?.0, 404);
    assert_eq!(h.get("/v2/nothing-here").await?.0, 404);
    assert_eq!(h.call(reqwest::Method::PATCH, "/v2/apps/nope", Some(json!({"instances": 1}))).await?.0, 404);

    let after = h.get("/v2/apps").await?.1;
    assert_eq!(before, after, "rejected requests change nothing");
    Ok(())
}

#[tokio::test]
async fn state_survives_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let version;
    {
        let h = start_with(dir.path(), None, false).await?;
        let (status, _) = h.post("/v2/apps", hello("durable")).await?;
        assert_eq!(status, 201);
        let (status, _) = h.put("/v2/apps/durable?force=true", json!({"instances": 2})).await?;
        assert_eq!(status, 200);
        version = h.get("/v2/apps/durable").await?.1["app"]["version"].clone();
        let (status, _) = h.post("/v2/eventSubscriptions?callbackUrl=http://127.0.0.1:9/cb", json!({})).await?;
        assert_eq!(status, 200);
        drop(h);
    }
    // The old server's connections may hold the database for a moment.
    let mut reopened = None;
    for _ in 0..100 {
        match start_with(dir.path(), None, false).await {
            Ok(h) => {
                reopened = Some(h);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let h = reopened.context("store reopens")?;
    let (status, got) = h.get("/v2/apps/durable").await?;
    assert_eq!(status, 200);
    assert_eq!(got["app"]["instances"], 2);
    assert_eq!(got["app"]["version"], version);
    let (_, versions) = h.get("/v2/apps/durable/versions").await?;
    assert!(versions["versions"].as_array().unwrap().len() >= 2);
    let (_, deployments) = h.get("/v2/deployments").await?;
    assert!(!deployments.as_array().unwrap().is_empty(), "deployments are restored");
    let (_, subs) = h.get("/v2/eventSubscriptions").await?;
    assert_eq!(subs["callbackUrls"][0], "http://127.0.0.1:9/cb");
    Ok(())
}

#[tokio::test]
async fn sse_stream_starts_attached_and_carries_api_post_events() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let response = h.http.get(format!("{}/v2/events", h.base)).header("accept", "text/event-stream").send().await?;
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let attached = next_event(&mut stream, &mut buffer, "event_stream_attached").await?;
    assert!(attached["remoteAddress"].as_str().unwrap().starts_with("127.0.0.1"), "{attached}");
    assert_eq!(attached["eventType"], "event_stream_attached");

    h.post("/v2/apps", hello("evented")).await?;
    let posted = next_event(&mut stream, &mut buffer, "api_post_event").await?;
    assert_eq!(posted["appDefinition"]["id"], "/evented");
    assert_eq!(posted["uri"], "/v2/apps");
    assert!(posted["timestamp"].is_string());

    // Filtered stream only gets what it asked for.
    let response = h.http.get(format!("{}/v2/events?event_type=app_terminated_event", h.base)).send().await?;
    let mut filtered = response.bytes_stream();
    let mut fbuf = String::new();
    next_event(&mut filtered, &mut fbuf, "event_stream_attached").await?;
    h.delete("/v2/apps/evented").await?;
    let terminated = next_event(&mut filtered, &mut fbuf, "app_terminated_event").await?;
    assert_eq!(terminated["appId"], "/evented");
    assert!(!fbuf.contains("api_post_event"));
    Ok(())
}

#[tokio::test]
async fn callback_subscribers_receive_events() -> Result<()> {
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback = format!("http://{}/callback", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::post(move |axum::Json(event): axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(event);
                "ok"
            }
        }),
    );
    let receiver_server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let (status, body) = h.post(&format!("/v2/eventSubscriptions?callbackUrl={callback}"), json!({})).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["eventType"], "subscribe_event");
    assert_eq!(body["callbackUrl"], callback);
    let (_, list) = h.get("/v2/eventSubscriptions").await?;
    assert_eq!(list["callbackUrls"], json!([callback]));

    let (status, _) = h.post("/v2/eventSubscriptions?callbackUrl=ftp://x/y", json!({})).await?;
    assert_eq!(status, 400);

    h.post("/v2/apps", hello("called-back")).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, received.recv())
            .await
            .context("no api_post_event callback")?
            .context("closed")?;
        if event["eventType"] == "api_post_event" {
            assert_eq!(event["appDefinition"]["id"], "/called-back");
            break;
        }
    }
    let (status, _) = h.delete(&format!("/v2/eventSubscriptions?callbackUrl={callback}")).await?;
    assert_eq!(status, 200);
    let (_, list) = h.get("/v2/eventSubscriptions").await?;
    assert_eq!(list["callbackUrls"], json!([]));
    let (status, _) = h.delete(&format!("/v2/eventSubscriptions?callbackUrl={callback}")).await?;
    assert_eq!(status, 404);
    receiver_server.abort();
    Ok(())
}

#[tokio::test]
async fn fake_agent_gets_a_task_and_reports_it_running() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let (status, registered) = h
        .post(
            "/agent/v1/register",
            serde_json::to_value(registration("node-1", "cpus:2;mem:1024;disk:1000;ports:[31000-31010]"))?,
        )
        .await?;
    assert_eq!(status, 200, "{registered}");
    let agent_id = registered["agent_id"].as_str().context("agent id")?.to_string();

    let (_, slaves) = h.get("/master/slaves").await?;
    assert_eq!(slaves["slaves"][0]["id"], agent_id.as_str());
    assert_eq!(slaves["slaves"][0]["resources"]["ports"], "[31000-31010]");
    assert_eq!(slaves["slaves"][0]["agent_url"], "http://10.0.0.7:5051");
    assert_eq!(slaves["slaves"][0]["active"], true);

    let (status, _) = h.post("/v2/apps", hello("web")).await?;
    assert_eq!(status, 201);

    // Long-poll until the desired state carries the task.
    let mut generation = 0;
    let spec = loop {
        let request = SyncRequest { wait_ms: 2000, ..SyncRequest::new(agent_id.as_str().into(), generation) };
        let (status, body) = h.post("/agent/v1/sync", serde_json::to_value(&request)?).await?;
        assert_eq!(status, 200, "{body}");
        let response: SyncResponse = serde_json::from_value(body)?;
        assert!(!response.reregister);
        if let Some(desired) = response.desired {
            generation = desired.generation;
            if let Some(task) = desired.tasks.into_iter().next() {
                break task;
            }
        }
    };
    assert_eq!(spec.app_id.as_str(), "/web");
    assert_eq!(spec.host_ports.len(), 1);

    let update = running(&spec);
    let batch = StatusBatch { agent_id: agent_id.as_str().into(), updates: vec![update.clone()] };
    let (status, ack) = h.post("/agent/v1/status", serde_json::to_value(&batch)?).await?;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["acknowledged"][0], update.update_id.to_string());
    // A resent update is acknowledged again.
    let (_, ack) = h.post("/agent/v1/status", serde_json::to_value(&batch)?).await?;
    assert_eq!(ack["acknowledged"][0], update.update_id.to_string());

    let (_, got) = h.get("/v2/apps/web").await?;
    assert_eq!(got["app"]["tasksRunning"], 1, "{got}");
    assert_eq!(got["app"]["tasks"][0]["state"], "TASK_RUNNING");
    assert_eq!(got["app"]["tasks"][0]["host"], "10.0.0.7");

    let (_, tasks) = h.get("/v2/tasks?status=running").await?;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);
    let text = h.http.get(format!("{}/v2/tasks", h.base)).header("accept", "text/plain").send().await?.text().await?;
    let port = spec.host_ports[0];
    assert!(text.starts_with("web\t"), "{text:?}");
    assert!(text.contains(&format!("10.0.0.7:{port}\t")), "{text:?}");

    let (_, state) = h.get("/master/state").await?;
    assert_eq!(state["activated_slaves"], 1);
    assert_eq!(state["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING");

    // Kill the task via the API: the agent's desired state marks it.
    let (status, body) = h.delete(&format!("/v2/apps/web/tasks/{}", spec.task_id)).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["id"], spec.task_id.as_str());

    let metrics = h.http.get(format!("{}/metrics/prometheus", h.base)).send().await?.text().await?;
    assert!(metrics.contains("plinth_apps 1"), "{metrics}");
    assert!(metrics.contains("plinth_agents{status=\"active\"} 1"), "{metrics}");
    assert!(metrics.contains("plinth_http_requests_total{method=\"POST\",code=\"201\"}"), "{metrics}");
    // Marathon 1.7+'s JSON by default, the same numbers.
    let (_, json) = h.get("/metrics").await?;
    assert_eq!(json["gauges"]["plinth.apps"]["value"], 1.0, "{json}");
    assert_eq!(json["gauges"]["plinth.agents.status.active"]["value"], 1.0, "{json}");
    assert!(json["counters"]["plinth.http.requests.total.method.POST.code.201"]["count"].as_u64() > Some(0), "{json}");
    Ok(())
}

#[tokio::test]
async fn queue_explains_why_an_app_waits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    h.post(
        "/agent/v1/register",
        serde_json::to_value(registration("small", "cpus:2;mem:1024;disk:1000;ports:[31000-31010]"))?,
    )
    .await?;
    h.post("/v2/apps", json!({"id": "huge", "cmd": "sleep 1000", "mem": 100000})).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, queue) = h.get("/v2/queue").await?;
        let entry = &queue["queue"][0];
        let declined = entry["processedOffersSummary"]["rejectSummaryLastOffers"]
            .as_array()
            .map(|r| r.iter().any(|r| r["reason"] == "InsufficientMemory" && r["declined"].as_u64() > Some(0)))
            .unwrap_or(false);
        if declined {
            assert_eq!(entry["app"]["id"], "/huge");
            assert_eq!(entry["count"], 1);
            assert!(entry.get("reasons").is_none(), "Marathon's queue items have no reasons: {entry}");
            // Plinth says why in words on /v1/queue.
            let (_, why) = h.get("/v1/queue").await?;
            assert_eq!(why["queue"][0]["appId"], "/huge");
            let reasons = why["queue"][0]["reasons"].to_string();
            assert!(reasons.contains("mem"), "{reasons}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "queue never explained the decline: {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = h.delete("/v2/queue/huge/delay").await?;
    assert_eq!(status, 204);
    Ok(())
}

#[tokio::test]
async fn agents_without_the_token_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start_with(dir.path(), Some("s3cret"), false).await?;
    let body = serde_json::to_value(registration("intruder", "cpus:1;mem:512"))?;
    let (status, answer) = h.post("/agent/v1/register", body.clone()).await?;
    assert_eq!(status, 401);
    assert!(answer["message"].as_str().unwrap().contains("token"), "{answer}");
    let (_, slaves) = h.get("/master/slaves").await?;
    assert_eq!(slaves["slaves"], json!([]));
    let response =
        h.http.post(format!("{}/agent/v1/register", h.base)).header(TOKEN_HEADER, "s3cret").json(&body).send().await?;
    assert_eq!(response.status().as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn info_leader_ping() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let response = h.http.get(format!("{}/ping", h.base)).send().await?;
    assert!(response.headers()["content-type"].to_str()?.starts_with("text/plain"));
    assert_eq!(response.text().await?, "pong");
    let (_, leader) = h.get("/v2/leader").await?;
    assert_eq!(leader["leader"], format!("127.0.0.1:{}", h.base.rsplit(':').next().unwrap()));
    let (_, info) = h.get("/v2/info").await?;
    assert_eq!(info["name"], "plinth");
    assert!(info["frameworkId"].is_string());
    assert!(info["marathon_config"].is_object() && info["zookeeper_config"].is_object(), "{info}");
    assert!(info.get("storage").is_none(), "Plinth's details are on /v1/info: {info}");
    let (_, own) = h.get("/v1/info").await?;
    assert_eq!(own["storage"]["type"], "redb", "{own}");
    assert!(own["storage"]["path"].as_str().is_some_and(|p| !p.is_empty()), "{own}");
    let page = h.http.get(format!("{}/", h.base)).send().await?.text().await?;
    assert!(page.contains("Plinth master"));
    let _ = &h.master;
    Ok(())
}

/// Registers a fake agent, deploys `app`, and reports its first task running.
async fn run_one_task(h: &Harness, app: Value) -> Result<(String, plinth_protocol::agent::TaskSpec, u64)> {
    let (_, registered) = h
        .post(
            "/agent/v1/register",
            serde_json::to_value(registration("node-1", "cpus:4;mem:4096;disk:1000;ports:[31000-31100]"))?,
        )
        .await?;
    let agent_id = registered["agent_id"].as_str().context("agent id")?.to_string();
    // Learn the current generation, then long-poll: creating the app must wake us early.
    let (_, first) =
        h.post("/agent/v1/sync", serde_json::to_value(SyncRequest::new(agent_id.as_str().into(), 0))?).await?;
    let mut generation = first["desired"]["generation"].as_u64().unwrap_or(0);
    let poll = {
        let request = SyncRequest { wait_ms: 4000, ..SyncRequest::new(agent_id.as_str().into(), generation) };
        let http = h.http.clone();
        let url = format!("{}/agent/v1/sync", h.base);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response: SyncResponse = http.post(url).json(&request).send().await?.json().await?;
            anyhow::Ok((response, started.elapsed()))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = h.post("/v2/apps", app).await?;
    assert_eq!(status, 201);
    let (response, waited) = poll.await??;
    assert!(waited < Duration::from_millis(3500), "the long-poll was not woken by the change ({waited:?})");
    let mut desired = response.desired;
    let spec = loop {
        if let Some(d) = desired.take() {
            generation = d.generation;
            if let Some(task) = d.tasks.into_iter().next() {
                break task;
            }
        }
        let request = SyncRequest { wait_ms: 2000, ..SyncRequest::new(agent_id.as_str().into(), generation) };
        let (_, body) = h.post("/agent/v1/sync", serde_json::to_value(&request)?).await?;
        desired = serde_json::from_value::<SyncResponse>(body)?.desired;
    };
    let update = running(&spec);
    let batch = StatusBatch { agent_id: agent_id.as_str().into(), updates: vec![update] };
    let (status, _) = h.post("/agent/v1/status", serde_json::to_value(&batch)?).await?;
    assert_eq!(status, 200);
    Ok((agent_id, spec, generation))
}

/// Waits until no deployment runs (they end on a round the master runs by itself).
async fn deployments_settle(h: &Harness) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.get("/v2/deployments").await?.1 != json!([]) {
        assert!(tokio::time::Instant::now() < deadline, "deployment never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn reopen(dir: &Path) -> Result<Harness> {
    for _ in 0..100 {
        if let Ok(h) = start(dir).await {
            return Ok(h);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start(dir).await
}

#[tokio::test]
async fn a_restarted_master_keeps_tasks_and_adopts_them_when_the_agent_returns() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (agent_id, spec, generation) = {
        let h = start(dir.path()).await?;
        run_one_task(&h, hello("kept")).await?
    };
    let h = reopen(dir.path()).await?;
    let (_, got) = h.get("/v2/apps/kept").await?;
    assert_eq!(got["app"]["tasks"][0]["id"], spec.task_id.as_str(), "{got}");
    assert_eq!(got["app"]["tasks"][0]["state"], "TASK_RUNNING");

    // The agent's next heartbeat is told to re-register; it does, reporting its task.
    let (_, body) =
        h.post("/agent/v1/sync", serde_json::to_value(SyncRequest::new(agent_id.as_str().into(), generation))?).await?;
    assert_eq!(body["reregister"], true, "{body}");
    let mut again = registration("node-1", "cpus:4;mem:4096;disk:1000;ports:[31000-31100]");
    again.agent_id = Some(agent_id.as_str().into());
    again.last_generation = generation;
    again.tasks = vec![plinth_protocol::agent::TaskReport {
        task_id: spec.task_id.clone(),
        app_id: spec.app_id.clone(),
        version: spec.version.clone(),
        state: TaskState::TaskRunning,
        host_ports: spec.host_ports.clone(),
        resources: None,
        started_at: None,
    }];
    let (status, registered) = h.post("/agent/v1/register", serde_json::to_value(&again)?).await?;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(registered["agent_id"], agent_id.as_str());
    // A few ticks later there is still exactly the one adopted task.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, tasks) = h.get("/v2/apps/kept/tasks").await?;
    let tasks = tasks["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["id"], spec.task_id.as_str());
    Ok(())
}

#[tokio::test]
async fn killing_tasks_with_scale_lowers_instances() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let (_, spec, _) = run_one_task(&h, hello("shrink")).await?;
    // The start deployment finishes once the task runs (on the next tick).
    deployments_settle(&h).await?;
    let (status, body) = h.delete("/v2/apps/shrink/tasks?scale=true&host=10.0.0.7").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["deploymentId"].is_string(), "{body}");
    let (_, got) = h.get("/v2/apps/shrink").await?;
    assert_eq!(got["app"]["instances"], 0);
    let (_, tasks) = h.get("/v2/tasks").await?;
    let states: Vec<&str> = tasks["tasks"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert!(states.iter().all(|s| *s == "TASK_KILLING"), "{states:?}");
    let (status, body) = h.post("/v2/tasks/delete", json!({"ids": [spec.task_id.as_str()]})).await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

#[tokio::test]
async fn queue_lists_apps_waiting_without_any_agent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    h.post("/v2/apps", hello("lonely")).await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, queue) = h.get("/v2/queue").await?;
    assert_eq!(queue["queue"][0]["app"]["id"], "/lonely", "{queue}");
    assert_eq!(queue["queue"][0]["count"], 1);
    let (_, why) = h.get("/v1/queue").await?;
    assert!(why["queue"][0]["reasons"].to_string().contains("no active agents"), "{why}");
    Ok(())
}

#[tokio::test]
async fn bulk_put_applies_all_or_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let (status, body) = h.put("/v2/apps", json!([hello("one"), hello("two")])).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.app_ids().await?.len(), 2);
    let before = h.get("/v2/apps").await?.1;
    // The second item is invalid: the first must not change either.
    let (status, body) =
        h.put("/v2/apps?force=true", json!([{"id": "one", "instances": 5}, {"id": "two", "cpus": -1}])).await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(h.get("/v2/apps").await?.1, before);
    let (status, body) =
        h.put("/v2/apps?force=true", json!([{"id": "one", "instances": 2}, {"id": "two", "instances": 3}])).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.get("/v2/apps/two").await?.1["app"]["instances"], 3);
    Ok(())
}

#[tokio::test]
async fn post_apps_refuses_dependency_cycles_as_groups_do() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start_with(dir.path(), None, false).await?;
    let app =
        |id: &str, deps: &[&str]| json!({"id": id, "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "dependencies": deps});
    assert_eq!(h.post("/v2/apps", app("/shop/web", &["/shop/db"])).await?.0, 201, "an unknown dependency is fine");
    let (status, body) = h.post("/v2/apps", app("/shop/db", &["/shop/web"])).await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["path"], "/dependencies", "{body}");
    let error = body["details"][0]["errors"][0].as_str().unwrap_or_default();
    assert!(
        error.starts_with("dependency cycle: ") && error.contains("/shop/db") && error.contains("/shop/web"),
        "{body}"
    );
    let (status, body) = h.post("/v2/apps", app("/self", &["/self"])).await?;
    assert_eq!(status, 422, "an app depending on itself is a cycle too: {body}");
    assert_eq!(h.app_ids().await?, vec!["/shop/web".to_string()], "refused apps are not created");
    Ok(())
}

#[tokio::test]
async fn a_clashing_or_out_of_range_service_port_is_a_422_naming_both_apps() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let sinatra = |id: &str, port: u64| {
        json!({"id": id, "instances": 0, "container": {"type": "DOCKER", "docker": {"image": "greeter", "network": "BRIDGE"},
            "portMappings": [{"containerPort": 3000, "hostPort": 0, "servicePort": port, "protocol": "tcp"}]}})
    };
    assert_eq!(h.post("/v2/apps", sinatra("/hello-sinatra", 9000)).await?.0, 201);
    deployments_settle(&h).await?;
    let before = h.get("/v2/apps").await?.1;
    let (status, body) = h.post("/v2/apps", sinatra("/copycat", 9000)).await?;
    assert_eq!(status, 422, "{body}");
    let error = body["details"][0]["errors"][0].as_str().unwrap_or_default();
    assert!(error.contains("/copycat") && error.contains("/hello-sinatra") && error.contains("9000"), "{body}");
    let (status, body) = h.put("/v2/apps/copycat", json!({"cmd": "x", "portDefinitions": [{"port": 9000}]})).await?;
    assert_eq!(status, 422, "a PUT that creates is checked too: {body}");
    let (status, body) = h.post("/v2/apps", sinatra("/too-high", 31005)).await?;
    assert_eq!(status, 422, "{body}");
    assert!(body["details"][0]["errors"][0].as_str().unwrap_or_default().contains("31005"), "{body}");
    let mut labelled = sinatra("/labelled", 0);
    labelled["labels"] = json!({"HAPROXY_0_VHOST": "ok.example,not a host", "PLINTH_DRAIN_SECONDS": "-1"});
    let (status, body) = h.post("/v2/apps", labelled).await?;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> = body["details"].as_array().unwrap().iter().filter_map(|d| d["path"].as_str()).collect();
    assert_eq!(paths, ["/labels/HAPROXY_0_VHOST", "/labels/PLINTH_DRAIN_SECONDS"], "{body}");
    assert_eq!(h.get("/v2/apps").await?.1, before, "refused apps change nothing");
    Ok(())
}
