//! Reaching agents: a task's views through the master, and an agent's address from the
//! master's `/master/slaves` view.
use reqwest::Method;
use serde_json::Value;

use anyhow::Context;

use super::master::{api_error, MasterClient, REQUEST_TIMEOUT};

const DEFAULT_AGENT_PORT: u16 = 5051;

/// A task's view (`inspect`, `top`, `stats`) from the agent that runs it, read through
/// the master (`/v1/tasks/ID/WHAT`): the operator needs credentials for the master only,
/// never a certificate of the cluster or a route to the agents.
pub(super) async fn agent_call(master: &MasterClient, task: &str, what: &str) -> anyhow::Result<Value> {
    master.call(Method::GET, &format!("/v1/tasks/{}/{what}", path_segment(task)?), None).await
}

/// GETs `PATH` from the agent at `agent` (its base URL) and parses the JSON answer.
pub(super) async fn get_json(master: &MasterClient, agent: &str, path: &str) -> anyhow::Result<Value> {
    let url = format!("{agent}{path}");
    let response = master
        .http
        .get(&url)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {agent}"))?;
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("cannot read the answer of {url}"))?;
    if !status.is_success() {
        return Err(api_error(Method::GET, &url, status, &body).into());
    }
    serde_json::from_slice(&body).with_context(|| format!("{url} did not answer JSON"))
}

/// A task id as one path segment. Ids are `app.instance-uuid`; a typed id that could
/// not be one (it would change the path or the query) is refused before any request.
pub(super) fn path_segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || id.chars().any(|c| matches!(c, '/' | '?' | '#' | '%') || c.is_whitespace() || c.is_control()) {
        anyhow::bail!("{id:?} is not a task id (task ids look like app.1b6e… as `plinth task list` shows them)");
    }
    Ok(id)
}

/// An agent's HTTP base URL from its `/master/slaves` entry: an explicit `agent_url`, the
/// Mesos `pid` (`slave(1)@10.0.0.3:5051`), or its address and port.
pub(super) fn agent_url(slave: &Value) -> Option<String> {
    if let Some(url) = slave.get("agent_url").and_then(Value::as_str) {
        return Some(url.trim_end_matches('/').to_string());
    }
    if let Some(pid) = slave.get("pid").and_then(Value::as_str) {
        if let Some((_, address)) = pid.split_once('@') {
            return Some(format!("http://{address}"));
        }
    }
    let ip =
        ["advertise_ip", "address", "ip", "hostname"].iter().find_map(|key| slave.get(*key).and_then(Value::as_str))?;
    let port = ["http_port", "port"].iter().find_map(|key| slave.get(*key).and_then(Value::as_u64));
    Some(format!("http://{ip}:{}", port.unwrap_or(u64::from(DEFAULT_AGENT_PORT))))
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_urls_come_from_whatever_the_master_reports() {
        assert_eq!(agent_url(&json!({"agent_url": "http://10.0.0.3:5051/"})).unwrap(), "http://10.0.0.3:5051");
        assert_eq!(agent_url(&json!({"pid": "slave(1)@10.0.0.4:5051"})).unwrap(), "http://10.0.0.4:5051");
        assert_eq!(agent_url(&json!({"hostname": "a1", "port": 5052})).unwrap(), "http://a1:5052");
    }
}
