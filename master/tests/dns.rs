//! The master's DNS over HTTP, in process with a fake agent: Mesos-DNS's `/v1/hosts` and
//! `/v1/services` follow a task from running to killed, and the agents' feed
//! (`/agent/v1/dns`) answers at once when behind and wakes a long-poll on a change.
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use common::{registration, running, start};
use plinth_protocol::agent::{StatusBatch, SyncRequest, SyncResponse};

#[tokio::test]
async fn names_follow_a_task_and_the_feed_long_polls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let (_, registered) = h
        .post(
            "/agent/v1/register",
            serde_json::to_value(registration("node-1", "cpus:2;mem:1024;ports:[31000-31010]"))?,
        )
        .await?;
    let agent_id = registered["agent_id"].as_str().context("agent id")?.to_string();
    let app = json!({"id": "/shop/web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1,
        "portDefinitions": [{"port": 0, "protocol": "tcp"}, {"port": 0, "protocol": "udp"}]});
    assert_eq!(h.post("/v2/apps", app).await?.0, 201);

    let (status, feed) = h.get(&format!("/agent/v1/dns?agent_id={agent_id}")).await?;
    assert_eq!(status, 200, "{feed}");
    assert_eq!(feed["records"]["a"]["node-1.slave"], json!(["10.0.0.7"]));
    assert!(feed["records"]["a"]["web-shop.marathon"].is_null(), "no running task, no name: {feed}");

    let spec = loop {
        let request = SyncRequest { wait_ms: 2000, ..SyncRequest::new(agent_id.as_str().into(), 0) };
        let (_, body) = h.post("/agent/v1/sync", serde_json::to_value(&request)?).await?;
        let response: SyncResponse = serde_json::from_value(body)?;
        if let Some(task) = response.desired.and_then(|d| d.tasks.into_iter().next()) {
            break task;
        }
    };
    // A long-poll from the generation it has wakes when the task runs.
    let generation = feed["generation"].as_u64().context("generation")?;
    let poll = {
        let (http, base) = (h.http.clone(), h.base.clone());
        let url = format!("{base}/agent/v1/dns?agent_id={agent_id}&after={generation}&wait_ms=10000");
        tokio::spawn(async move { http.get(url).send().await?.json::<Value>().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    let batch = StatusBatch { agent_id: agent_id.as_str().into(), updates: vec![running(&spec)] };
    assert_eq!(h.post("/agent/v1/status", serde_json::to_value(&batch)?).await?.0, 200);
    let woken = poll.await??;
    assert!(sent.elapsed() < Duration::from_secs(3), "woken by the change, not the timeout");
    assert!(woken["generation"].as_u64() > Some(generation));
    assert_eq!(woken["records"]["a"]["web-shop.marathon"], json!(["10.0.0.7"]));

    let (status, hosts) = h.get("/v1/hosts/web-shop.marathon.mesos").await?;
    assert_eq!(status, 200);
    assert_eq!(hosts, json!([{"host": "web-shop.marathon.mesos.", "ip": "10.0.0.7"}]));
    let (_, tcp) = h.get("/v1/services/_web-shop._tcp.marathon.mesos").await?;
    assert_eq!(tcp.as_array().map(Vec::len), Some(1), "{tcp}");
    assert_eq!(tcp[0]["port"], spec.host_ports[0].to_string());
    assert_eq!(tcp[0]["ip"], "10.0.0.7");
    let (_, udp) = h.get("/v1/services/_web-shop._udp.marathon.mesos").await?;
    assert_eq!(udp[0]["port"], spec.host_ports[1].to_string(), "the udp port only: {udp}");
    let (_, leader) = h.get("/v1/hosts/leader.mesos").await?;
    assert_eq!(leader[0]["ip"], "127.0.0.1");

    // Scaled to 0: once the task is being killed (the next tick), its names are gone.
    assert_eq!(h.put("/v2/apps/shop/web?force=true", json!({"instances": 0})).await?.0, 200);
    let asked = Instant::now();
    let mut hosts = Value::Null;
    while asked.elapsed() < Duration::from_secs(5) {
        hosts = h.get("/v1/hosts/web-shop.marathon.mesos").await?.1;
        if hosts[0]["ip"] == "" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hosts, json!([{"host": "", "ip": ""}]), "Mesos-DNS's empty answer");
    assert!(asked.elapsed() < Duration::from_secs(1), "gone within a tick or two: {:?}", asked.elapsed());
    let (_, services) = h.get("/v1/services/_web-shop._tcp.marathon.mesos").await?;
    assert_eq!(services, json!([{"service": "", "host": "", "ip": "", "port": ""}]));
    Ok(())
}

#[tokio::test]
async fn the_feed_refuses_bad_requests_in_words() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = start(dir.path()).await?;
    let (status, body) = h.get("/agent/v1/dns").await?;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "query parameter 'agent_id' is required");
    let (status, body) = h.get("/agent/v1/dns?agent_id=a&after=soon").await?;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "query parameter 'after' must be a number, got 'soon'");
    Ok(())
}
