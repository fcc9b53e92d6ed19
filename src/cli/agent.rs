//! Reaching the agent that runs a task: its address from the master's `/master/slaves`
//! view, and calls to its task API.
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::Value;

use super::master::{api_error, MasterClient, REQUEST_TIMEOUT};

const DEFAULT_AGENT_PORT: u16 = 5051;

/// GETs `/v1/tasks/ID/WHAT` from the agent that runs the task.
pub(super) async fn agent_call(master: &MasterClient, task: &str, what: &str) -> anyhow::Result<Value> {
    let agent = locate_task(master, task).await?;
    get_json(master, &agent, &format!("/v1/tasks/{task}/{what}")).await
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

/// The base URL of the agent that runs (or ran) `task`.
pub(super) async fn locate_task(master: &MasterClient, task: &str) -> anyhow::Result<String> {
    let slaves = master.call(Method::GET, "/master/slaves", None).await?;
    let slaves = slaves.get("slaves").and_then(Value::as_array).cloned().unwrap_or_default();
    let tasks = master.call(Method::GET, "/v2/tasks", None).await?;
    let found = tasks
        .get("tasks")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|t| t.get("id").and_then(Value::as_str) == Some(task)).cloned());
    if let Some(found) = found {
        let slave_id = found.get("slaveId").and_then(Value::as_str);
        let host = found.get("host").and_then(Value::as_str).unwrap_or_default();
        let slave = slaves.iter().find(|s| slave_id.is_some() && s.get("id").and_then(Value::as_str) == slave_id);
        return Ok(slave.and_then(agent_url).unwrap_or_else(|| format!("http://{host}:{DEFAULT_AGENT_PORT}")));
    }
    // Finished tasks leave the master's list but their logs stay on the agent: ask each one.
    for slave in &slaves {
        let Some(url) = agent_url(slave) else { continue };
        let Ok(response) = master.http.get(format!("{url}/v1/tasks")).timeout(REQUEST_TIMEOUT).send().await else {
            continue;
        };
        let Ok(body) = response.json::<Value>().await else { continue };
        let list = body.get("tasks").or(Some(&body)).and_then(Value::as_array);
        let has_task = list.is_some_and(|l| {
            l.iter().any(|t| [t.get("task_id"), t.get("id")].into_iter().flatten().any(|id| id.as_str() == Some(task)))
        });
        if has_task {
            return Ok(url);
        }
    }
    bail!("task {task} is not known to the master or to any of its agents")
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
