//! Marathon's JSON, exactly: every response type of the Marathon API, rendered by the real
//! master (router, store, core, a fake agent running the tasks), checked against the golden
//! fixtures written from Marathon's RAML (`protocol/tests/fixtures/marathon`): no field
//! Marathon does not have, every field it always writes, the value types it writes,
//! recursively. The events of `/v2/events` and of a callback subscriber are checked the
//! same way, and Plinth's own events must stay on `/v1/events`. The test ends by proving
//! that it reached every response type the fixtures name.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use common::{registration, start_ticker_paced, Harness};
use plinth_protocol::agent::{StatusBatch, StatusUpdate, SyncRequest, SyncResponse, TaskSpec};
use plinth_protocol::TaskState;
use plinth_testkit::contract::Fixtures;

/// The fake agent: registers, long-polls its desired tasks, reports their states.
struct Agent {
    id: String,
    generation: u64,
}

impl Agent {
    async fn register(h: &Harness) -> Result<Agent> {
        let body = serde_json::to_value(registration("node-1", "cpus:8;mem:8192;disk:1000;ports:[31000-31100]"))?;
        let (status, registered) = h.post("/agent/v1/register", body).await?;
        assert_eq!(status, 200, "{registered}");
        Ok(Agent { id: registered["agent_id"].as_str().context("agent id")?.to_string(), generation: 0 })
    }

    /// The desired tasks now.
    async fn desired(&mut self, h: &Harness) -> Result<Vec<TaskSpec>> {
        let request = SyncRequest::new(self.id.as_str().into(), 0);
        let (status, body) = h.post("/agent/v1/sync", serde_json::to_value(&request)?).await?;
        assert_eq!(status, 200, "{body}");
        let response: SyncResponse = serde_json::from_value(body)?;
        let desired = response.desired.context("a desired state")?;
        self.generation = desired.generation;
        Ok(desired.tasks)
    }

    async fn report(&self, h: &Harness, updates: Vec<StatusUpdate>) -> Result<()> {
        let batch = StatusBatch { agent_id: self.id.as_str().into(), updates };
        let (status, body) = h.post("/agent/v1/status", serde_json::to_value(&batch)?).await?;
        assert_eq!(status, 200, "{body}");
        Ok(())
    }

    /// Reports every desired task of `app` not yet known as running: running, healthy
    /// (one result per health check, in the agent's shape) and ready. Returns the tasks.
    /// Waits until at least `want` are placed.
    async fn run_all(&mut self, h: &Harness, app: &str, checks: usize, want: usize) -> Result<Vec<TaskSpec>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let tasks = loop {
            let tasks: Vec<TaskSpec> =
                self.desired(h).await?.into_iter().filter(|t| t.app_id.as_str() == app && !t.kill).collect();
            if tasks.len() >= want {
                break tasks;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "{want} tasks of {app} never placed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let updates = tasks.iter().map(|t| health_update(t, true, 0, checks)).collect();
        self.report(h, updates).await?;
        Ok(tasks)
    }
}

/// A `TASK_RUNNING` update with health results and readiness, as the agent sends them.
fn health_update(spec: &TaskSpec, healthy: bool, failures: u64, checks: usize) -> StatusUpdate {
    let now = plinth_protocol::Timestamp::now().to_iso();
    let result = json!({"alive": healthy, "consecutiveFailures": failures, "firstSuccess": now,
        "lastSuccess": if healthy { json!(now) } else { Value::Null },
        "lastFailure": if healthy { Value::Null } else { json!(now) },
        "lastFailureCause": if healthy { Value::Null } else { json!("HTTP status 503") },
        "taskId": spec.task_id, "instanceId": spec.task_id});
    let mut update = common::running(spec);
    update.healthy = (checks > 0).then_some(healthy);
    if checks > 0 {
        update.extra.insert("healthCheckResults".into(), Value::Array(vec![result; checks]));
    }
    update.extra.insert("ready".into(), json!(true));
    update
}

fn failed(spec: &TaskSpec) -> StatusUpdate {
    let mut update = common::running(spec);
    update.state = TaskState::TaskFailed;
    update.message = Some("Command exited with status 3".into());
    update.reason = Some("REASON_COMMAND_EXECUTOR_FAILED".into());
    update.exit_code = Some(3);
    update
}

/// Every event of an SSE stream, as it arrives: (type, data).
type Events = Arc<Mutex<Vec<(String, Value)>>>;

async fn listen(h: &Harness, path: &str) -> Result<(Events, tokio::task::JoinHandle<()>)> {
    let response = h.http.get(format!("{}{path}", h.base)).header("accept", "text/event-stream").send().await?;
    assert_eq!(response.status().as_u16(), 200);
    let events: Events = Arc::default();
    let sink = events.clone();
    let reader = tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let (mut kind, mut data) = (String::new(), String::new());
                for line in frame.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if let Ok(value) = serde_json::from_str(&data) {
                    sink.lock().expect("events lock").push((kind, value));
                }
            }
        }
    });
    Ok((events, reader))
}

/// Waits until `check` holds (the ticker moves deployments on).
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fixture type of an event: the type whose `eventType` is this one.
fn event_root(event_type: &str) -> String {
    let name: String = event_type
        .trim_end_matches("_event")
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect();
    match name.as_str() {
        "DeploymentInfo" => "DeploymentStatus".into(),
        "UnhealthyInstanceKill" => "UnhealthyInstanceKillEvent".into(),
        "AppTerminated" => "AppTerminatedEvent".into(),
        "StatusUpdate" => "StatusUpdateEvent".into(),
        "ApiPost" => "ApiPostEvent".into(),
        _ => name,
    }
}

fn web() -> Value {
    json!({"id": "/shop/web", "cmd": "python3 -m http.server $PORT0", "instances": 2, "cpus": 0.1, "mem": 32,
        "env": {"MODE": "prod"}, "labels": {"team": "web"}, "constraints": [["hostname", "GROUP_BY", "2"]],
        "uris": ["http://example.com/site.tgz"], "fetch": [{"uri": "http://example.com/run.sh", "executable": true}],
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "maxConsecutiveFailures": 2,
                          "gracePeriodSeconds": 1, "intervalSeconds": 1}],
        "readinessChecks": [{"name": "ready", "portName": "http"}],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5},
        "backoffSeconds": 1, "taskKillGracePeriodSeconds": 2,
        "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120}})
}

#[tokio::test]
async fn every_marathon_response_has_marathons_field_set() -> Result<()> {
    let f = Fixtures::marathon()?;
    let dir = tempfile::tempdir()?;
    // Its script (restart, then fail a replacement's checks) reads desired states in the
    // order the ticker makes them; with a round at once after each command the restart's
    // old tasks are still in the first desired state and already draining.
    let h = start_ticker_paced(dir.path()).await?;
    let (v2_events, v2_reader) = listen(&h, "/v2/events").await?;
    let (v1_events, v1_reader) = listen(&h, "/v1/events").await?;
    let mut agent = Agent::register(&h).await?;

    // A callback subscriber: Marathon's event bodies only.
    let callbacks: Events = Arc::default();
    let sink = callbacks.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback = format!("http://{}/callback", listener.local_addr()?);
    let receiver = axum::Router::new().route(
        "/callback",
        axum::routing::post(move |axum::Json(event): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                let kind = event["eventType"].as_str().unwrap_or_default().to_string();
                sink.lock().expect("callbacks lock").push((kind, event));
                "ok"
            }
        }),
    );
    let receiver_server = tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });
    let (status, answer) = h.post(&format!("/v2/eventSubscriptions?callbackUrl={callback}"), json!({})).await?;
    assert_eq!(status, 200, "{answer}");
    f.assert("POST /v2/eventSubscriptions", "SubscriptionAnswer", &answer);
    f.assert("GET /v2/eventSubscriptions", "EventSubscriptions", &h.get("/v2/eventSubscriptions").await?.1);

    // Apps: created, listed, shown with every embed, their versions.
    let (status, created) = h.post("/v2/apps", web()).await?;
    assert_eq!(status, 201, "{created}");
    f.assert("POST /v2/apps", "AppInfo", &created);
    let first = agent.run_all(&h, "/shop/web", 1, 2).await?;
    assert_eq!(first.len(), 2);
    eventually("the start deployment to finish", async || {
        Ok(h.get("/v2/deployments").await?.1.as_array().is_some_and(Vec::is_empty).then_some(()))
    })
    .await?;
    f.assert("GET /v2/apps", "AppList", &h.get("/v2/apps").await?.1);
    let embeds =
        "embed=apps.tasks&embed=apps.counts&embed=apps.readiness&embed=apps.lastTaskFailure&embed=apps.deployments";
    let (_, all) = h.get(&format!("/v2/apps?{embeds}")).await?;
    f.assert("GET /v2/apps with every embed", "AppList", &all);
    let app = &all["apps"][0];
    assert_eq!(app["tasks"].as_array().map(Vec::len), Some(2), "{app}");
    assert_eq!(app["tasksHealthy"], 2, "{app}");
    assert!(app["readinessCheckResults"].as_array().is_some_and(|r| r.len() == 2), "{app}");
    let task = &app["tasks"][0];
    assert!(task["healthCheckResults"][0]["alive"] == true && task["localVolumes"] == json!([]), "{task}");
    let (_, stats) = h.get("/v2/apps?embed=apps.taskStats").await?;
    f.assert("GET /v2/apps?embed=apps.taskStats", "AppList", &stats);
    let total = &stats["apps"][0]["taskStats"]["totalSummary"]["stats"];
    assert_eq!(total["counts"]["running"], 2, "{stats}");
    assert!(total["lifeTime"]["medianSeconds"].as_f64().is_some_and(|s| s >= 0.0), "{stats}");
    assert!(stats["apps"][0]["taskStats"].get("withOutdatedConfig").is_none(), "no such tasks: {stats}");
    let (_, single) = h.get("/v2/apps/shop/web?embed=app.taskStats").await?;
    f.assert("GET /v2/apps/{id}?embed=app.taskStats", "AppSingle", &single);
    assert!(single["app"]["taskStats"]["withLatestConfig"]["stats"]["counts"].is_object(), "{single}");
    let (_, single) = h.get("/v2/apps/shop/web?embed=app.readiness").await?;
    f.assert("GET /v2/apps/{id}", "AppSingle", &single);
    f.assert("GET /v2/apps/{id}/tasks", "TaskList", &h.get("/v2/apps/shop/web/tasks").await?.1);
    f.assert("GET /v2/tasks", "TaskList", &h.get("/v2/tasks").await?.1);
    f.assert("GET /v2/tasks?status=running", "TaskList", &h.get("/v2/tasks?status=running").await?.1);
    let (_, versions) = h.get("/v2/apps/shop/web/versions").await?;
    f.assert("GET /v2/apps/{id}/versions", "VersionList", &versions);
    let version = versions["versions"][0].as_str().context("a version")?.to_string();
    let (_, at_version) = h.get(&format!("/v2/apps/shop/web/versions/{version}")).await?;
    f.assert("GET /v2/apps/{id}/versions/{v}", "App", &at_version);

    // The HAProxy bridges' text: app, service port, host:port of each running task.
    let text = h.http.get(format!("{}/v2/tasks", h.base)).header("accept", "text/plain").send().await?.text().await?;
    let line = text.lines().find(|l| l.starts_with("shop_web\t")).context(text.clone())?;
    let fields: Vec<&str> = line.trim_end_matches('\t').split('\t').collect();
    assert_eq!(fields.len(), 4, "{line:?}");
    assert!(fields[1].parse::<u16>().is_ok() && fields[2..].iter().all(|f| f.starts_with("10.0.0.7:")), "{line:?}");

    // A rolling update: the deployment while it runs, a forced update over it (the first
    // fails), a rollback and a forced cancel.
    let (status, result) = h.put("/v2/apps/shop/web", json!({"cmd": "sleep 1001"})).await?;
    assert_eq!(status, 200, "{result}");
    f.assert("PUT /v2/apps/{id}", "DeploymentResult", &result);
    let (_, deployments) = h.get("/v2/deployments").await?;
    f.assert("GET /v2/deployments", "DeploymentList", &deployments);
    assert_eq!(deployments.as_array().map(Vec::len), Some(1), "{deployments}");
    let (status, locked) = h.put("/v2/apps/shop/web", json!({"cmd": "sleep 1002"})).await?;
    assert_eq!(status, 409, "{locked}");
    f.assert("a 409 of a locked app", "LockedError", &locked);
    let (status, forced) = h.put("/v2/apps/shop/web?force=true", json!({"cmd": "sleep 1002"})).await?;
    assert_eq!(status, 200, "{forced}");
    let id = forced["deploymentId"].as_str().context("deployment id")?.to_string();
    let (status, rollback) = h.delete(&format!("/v2/deployments/{id}")).await?;
    assert_eq!(status, 200, "{rollback}");
    f.assert("DELETE /v2/deployments/{id}", "DeploymentResult", &rollback);
    let rollback_id = rollback["deploymentId"].as_str().context("rollback id")?.to_string();
    let (status, _) = h.delete(&format!("/v2/deployments/{rollback_id}?force=true")).await?;
    assert_eq!(status, 202);
    let (status, restart) = h.post("/v2/apps/shop/web/restart?force=true", json!({})).await?;
    assert_eq!(status, 200, "{restart}");
    f.assert("POST /v2/apps/{id}/restart", "DeploymentResult", &restart);
    let replacements = agent.run_all(&h, "/shop/web", 1, 2).await?;

    // Health: a task failing its check twice is killed (failed_health_check_event,
    // unhealthy_instance_kill_event); another task fails (lastTaskFailure).
    let sick = replacements.first().or(first.first()).context("a task")?.clone();
    agent.report(&h, vec![health_update(&sick, false, 1, 1)]).await?;
    agent.report(&h, vec![health_update(&sick, false, 2, 1)]).await?;
    let victim = replacements.get(1).or(first.get(1)).context("a second task")?.clone();
    agent.report(&h, vec![failed(&victim)]).await?;
    let (_, with_failure) = h.get("/v2/apps/shop/web?embed=app.lastTaskFailure").await?;
    f.assert("GET /v2/apps/{id} with its last failure", "AppSingle", &with_failure);
    let failure = &with_failure["app"]["lastTaskFailure"];
    f.assert("lastTaskFailure", "TaskFailure", failure);
    assert_eq!(failure["message"], "Command exited with status 3", "{failure}");
    let (_, plinth_app) = h.get("/v1/apps/shop/web").await?;
    assert_eq!(plinth_app["lastTaskFailure"]["exitCode"], 3, "Plinth's details are on /v1: {plinth_app}");

    // Kills: one task (TaskSingle), by id (TaskList), the rest with scale (DeploymentResult).
    let running = agent.run_all(&h, "/shop/web", 1, 2).await?;
    let one = running.first().context("a running task")?;
    let (status, killed) = h.delete(&format!("/v2/apps/shop/web/tasks/{}", one.task_id)).await?;
    assert_eq!(status, 200, "{killed}");
    f.assert("DELETE /v2/apps/{id}/tasks/{task}", "TaskSingle", &killed);
    let (status, killed) = h.post("/v2/tasks/delete", json!({"ids": [one.task_id]})).await?;
    assert_eq!(status, 200, "{killed}");
    f.assert("POST /v2/tasks/delete", "TaskList", &killed);
    let (status, scaled) = h.delete("/v2/apps/shop/web/tasks?scale=true&force=true").await?;
    assert_eq!(status, 200, "{scaled}");
    f.assert("DELETE /v2/apps/{id}/tasks?scale=true", "DeploymentResult", &scaled);
    let (_, app) = h.get("/v2/apps/shop/web").await?;
    assert!(app["app"]["instances"].as_i64() < Some(2), "scaled down: {app}");

    // The queue: an app no agent has room for (and embed=lastUnusedOffers).
    h.post("/v2/apps", json!({"id": "/huge", "cmd": "sleep 1", "mem": 100000})).await?;
    let queue = eventually("/huge in the queue with its declines", async || {
        let (_, queue) = h.get("/v2/queue").await?;
        let declined = queue["queue"][0]["processedOffersSummary"]["rejectSummaryLastOffers"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["reason"] == "InsufficientMemory" && r["declined"].as_u64() > Some(0)));
        Ok(declined.then_some(queue))
    })
    .await?;
    f.assert("GET /v2/queue", "Queue", &queue);
    f.assert("GET /v2/queue?embed=lastUnusedOffers", "Queue", &h.get("/v2/queue?embed=lastUnusedOffers").await?.1);
    let (_, why) = h.get("/v1/queue").await?;
    assert!(why["queue"][0]["reasons"][0].as_str().is_some_and(|r| r.contains("mem")), "{why}");

    // Groups: created (the ids of every deployment in a header), shown, versions, dry run.
    let group = json!({"id": "/db", "apps": [{"id": "pg", "cmd": "sleep 100", "cpus": 0.1, "mem": 16}]});
    let response = h.http.post(format!("{}/v2/groups", h.base)).json(&group).send().await?;
    assert_eq!(response.status().as_u16(), 201);
    assert!(response.headers().contains_key("plinth-deployment-ids"));
    f.assert("POST /v2/groups", "DeploymentResult", &response.json().await?);
    f.assert("GET /v2/groups", "GroupInfo", &h.get("/v2/groups").await?.1);
    f.assert("GET /v2/groups/{id}", "GroupInfo", &h.get("/v2/groups/shop?embed=group.apps.tasks").await?.1);
    f.assert("GET /v2/groups/{id}/versions", "GroupVersions", &h.get("/v2/groups/db/versions").await?.1);
    let (_, group_versions) = h.get("/v2/groups/db/versions").await?;
    let first_version =
        group_versions.as_array().and_then(|v| v.last()).and_then(Value::as_str).context("a version")?;
    let (status, rolled) = h.put("/v2/groups/db?force=true", json!({"version": first_version})).await?;
    assert_eq!(status, 200, "{rolled}");
    f.assert("PUT /v2/groups/{id} with a version (rollback)", "DeploymentResult", &rolled);
    let (_, dry) =
        h.put("/v2/groups/db?dryRun=true&force=true", json!({"apps": [{"id": "pg", "cmd": "x", "mem": 16}]})).await?;
    f.assert("PUT /v2/groups/{id}?dryRun=true", "DeploymentSteps", &dry);
    let (status, deleted) = h.delete("/v2/groups/db").await?;
    assert_eq!(status, 200, "{deleted}");
    f.assert("DELETE /v2/groups/{id}", "DeploymentResult", &deleted);

    // Info, leader, metrics (JSON unless a scraper asks for text).
    let (_, info) = h.get("/v2/info").await?;
    f.assert("GET /v2/info", "MarathonInfo", &info);
    // Clients compare it as a Marathon version: 1.x.y, the API Plinth follows.
    let version: Vec<u64> =
        info["version"].as_str().unwrap_or_default().split('.').filter_map(|n| n.parse().ok()).collect();
    assert!(version.len() == 3 && version[0] == 1 && version[1] >= 10, "{info}");
    let (_, own) = h.get("/v1/info").await?;
    assert_eq!(own["version"], env!("CARGO_PKG_VERSION"), "Plinth's own version is on /v1/info: {own}");
    let (_, leader) = h.get("/v2/leader").await?;
    f.assert("GET /v2/leader", "LeaderInfo", &leader);
    // One master: no one to hand leadership to, so abdication is refused and changes nothing.
    let (status, abdicated) = h.delete("/v2/leader").await?;
    assert_eq!(status, 409, "{abdicated}");
    f.assert("DELETE /v2/leader on a single master", "Error", &abdicated);
    assert!(abdicated["message"].as_str().is_some_and(|m| m.contains("only master")), "{abdicated}");
    assert_eq!(h.get("/v2/leader").await?.1, leader, "still the leader");
    f.assert("GET /metrics", "Metrics", &h.get("/metrics").await?.1);
    let text = h.http.get(format!("{}/metrics", h.base)).header("accept", "text/plain").send().await?.text().await?;
    assert!(text.contains("# TYPE plinth_apps gauge"), "{text}");
    let text = h.http.get(format!("{}/metrics/prometheus", h.base)).send().await?.text().await?;
    assert!(text.contains("plinth_http_requests_total{"), "{text}");

    // Errors.
    f.assert("a 404", "Error", &h.get("/v2/apps/nothing").await?.1);
    f.assert("a 409", "Error", &h.post("/v2/apps", json!({"id": "/huge", "cmd": "x"})).await?.1);
    f.assert("a 422", "Error", &h.post("/v2/apps", json!({"id": "x", "cmd": "x", "cpus": -1})).await?.1);
    f.assert("a 400", "Error", &h.raw_post("/v2/apps", b"{no".to_vec()).await?.1);
    let (status, old) =
        h.post("/v2/apps", json!({"id": "old", "cmd": "x", "container": {"image": "docker:///busybox"}})).await?;
    assert_eq!(status, 422, "{old}");
    f.assert("the 422 of a pre-1.0 container", "Error", &old);

    // An image that cannot be pulled: Plinth's image_pull_* events, on /v1/events only.
    let image =
        json!({"id": "/unpullable", "container": {"type": "DOCKER", "docker": {"image": "127.0.0.1:1/no/image:1"}}});
    h.post("/v2/apps", image).await?;
    let (status, deleted) = h.delete("/v2/apps/huge").await?;
    assert_eq!(status, 200);
    f.assert("DELETE /v2/apps/{id}", "DeploymentResult", &deleted);
    let (status, unsubscribed) = h.delete(&format!("/v2/eventSubscriptions?callbackUrl={callback}")).await?;
    assert_eq!(status, 200, "{unsubscribed}");
    f.assert("DELETE /v2/eventSubscriptions", "SubscriptionAnswer", &unsubscribed);
    eventually("an image pull event on /v1/events", async || {
        Ok(v1_events.lock().expect("events lock").iter().any(|(k, _)| k.starts_with("image_pull_")).then_some(()))
    })
    .await?;
    eventually("app_terminated_event on /v2/events", async || {
        Ok(v2_events.lock().expect("events lock").iter().any(|(k, _)| k == "app_terminated_event").then_some(()))
    })
    .await?;

    // Every event on /v2/events and at the callback is Marathon's, of Marathon's shape.
    v2_reader.abort();
    v1_reader.abort();
    receiver_server.abort();
    let streamed = v2_events.lock().expect("events lock").clone();
    let called = callbacks.lock().expect("callbacks lock").clone();
    let mut seen = std::collections::BTreeSet::new();
    for (source, events) in [("/v2/events", &streamed), ("the callback", &called)] {
        for (kind, event) in events {
            assert!(plinth_protocol::views::events::is_marathon_event(kind), "{source} sent Plinth's {kind}");
            assert_eq!(event["eventType"], kind.as_str());
            f.assert(&format!("{kind} on {source}"), &event_root(kind), event);
            f.assert(&format!("{kind} on {source}"), "MarathonEvent", event);
            seen.insert(kind.clone());
        }
    }
    for expected in [
        "event_stream_attached",
        "subscribe_event",
        "api_post_event",
        "status_update_event",
        "deployment_info",
        "deployment_step_success",
        "deployment_success",
        "deployment_step_failure",
        "deployment_failed",
        "health_status_changed_event",
        "failed_health_check_event",
        "unhealthy_instance_kill_event",
        "group_change_success",
        "app_terminated_event",
        "unsubscribe_event",
    ] {
        assert!(seen.contains(expected), "no {expected} among {seen:?}");
    }
    let unchecked = f.unchecked_roots();
    assert!(unchecked.is_empty(), "response types this test never rendered: {unchecked:?}");
    Ok(())
}
