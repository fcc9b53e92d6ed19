//! The in-process harness of the master's API tests: the real router, store and core
//! behind a listener on 127.0.0.1:0, driven over HTTP, and a fake agent speaking the agent
//! protocol (register, long-poll sync, status updates).
// Each test binary uses a part of it.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::Value;

use plinth_master::{Master, MasterConfig};
use plinth_protocol::agent::{Registration, StatusUpdate};
use plinth_protocol::{Resources, TaskState};

pub struct Harness {
    pub master: Arc<Master>,
    pub base: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn start_with(dir: &Path, token: Option<&str>, ticker: bool) -> Result<Harness> {
    start_configured(dir, token, ticker, true).await
}

/// A master whose rounds come only from its ticker (no round at once after a command),
/// for a test that scripts the sequence of desired states it reads.
pub async fn start_ticker_paced(dir: &Path) -> Result<Harness> {
    start_configured(dir, None, true, false).await
}

async fn start_configured(dir: &Path, token: Option<&str>, ticker: bool, rounds_on_commands: bool) -> Result<Harness> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = MasterConfig {
        listen: addr,
        data_dir: dir.to_path_buf(),
        agent_timeout: Duration::from_secs(10),
        token: token.and_then(plinth_protocol::agent::JoinToken::new),
        hostname: "127.0.0.1".into(),
        registry: Default::default(),
        rounds_on_commands,
        ..Default::default()
    };
    // The same composition as `plinth master`/`standalone` (start.rs), without PXE.
    let (master, app) = plinth_master::build(config, addr.port(), None).await?;
    if ticker {
        master.spawn_ticker();
    }
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    plinth_oci::tls::install_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    Ok(Harness { master, base: format!("http://{addr}"), http, server })
}

pub async fn start(dir: &Path) -> Result<Harness> {
    start_with(dir, None, true).await
}

impl Harness {
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok((status, value))
    }
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
    pub async fn raw_post(&self, path: &str, body: Vec<u8>) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
    pub async fn app_ids(&self) -> Result<Vec<String>> {
        let (_, apps) = self.get("/v2/apps").await?;
        Ok(apps["apps"]
            .as_array()
            .context("apps array")?
            .iter()
            .map(|a| a["id"].as_str().unwrap_or("").to_string())
            .collect())
    }
}

/// The update an agent sends when the task started.
pub fn running(spec: &plinth_protocol::agent::TaskSpec) -> StatusUpdate {
    StatusUpdate {
        update_id: uuid::Uuid::new_v4(),
        task_id: spec.task_id.clone(),
        app_id: spec.app_id.clone(),
        state: TaskState::TaskRunning,
        message: None,
        exit_code: None,
        reason: None,
        timestamp: plinth_protocol::Timestamp::now().to_iso(),
        healthy: None,
        extra: Default::default(),
    }
}

pub fn registration(hostname: &str, resources: &str) -> Registration {
    Registration {
        agent_id: None,
        hostname: hostname.into(),
        advertise_ip: "10.0.0.7".into(),
        http_port: 5051,
        resources: Resources::parse(resources).expect("valid resources"),
        attributes: Default::default(),
        last_generation: 0,
        tasks: vec![],
        version: "test".into(),
    }
}

/// Reads SSE frames until one of `event_type` arrives; returns its data.
pub async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin),
    buffer: &mut String,
    event_type: &str,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut kind = "";
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if kind == event_type {
                return Ok(serde_json::from_str(&data)?);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .with_context(|| format!("no {event_type} event in time"))?
            .context("stream ended")??;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}
