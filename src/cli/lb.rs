//! `plinth lb status [--agent NODE]`: each agent's service balancer (its `GET /v1/lb`):
//! frontends (service port, app, protocol) and their backends with their counters.
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

use super::agent::{agent_url, get_json};
use super::master::MasterClient;
use super::render::{display, output, table, text};

pub async fn status(master: &MasterClient, json_out: bool, agent: Option<&str>) -> anyhow::Result<()> {
    let slaves = master.call(Method::GET, "/master/slaves", None).await?;
    let slaves = slaves.get("slaves").and_then(Value::as_array).cloned().unwrap_or_default();
    let chosen: Vec<&Value> = slaves
        .iter()
        .filter(|s| match agent {
            Some(name) => [text(s, "id"), text(s, "hostname")].iter().any(|v| v == name),
            None => s.get("active").and_then(Value::as_bool).unwrap_or(true),
        })
        .collect();
    if chosen.is_empty() {
        match agent {
            Some(name) => bail!("no agent {name} (plinth node list shows the agents)"),
            None => bail!("no active agent"),
        }
    }
    let mut agents = Vec::new();
    for slave in chosen {
        let url = agent_url(slave).with_context(|| format!("no address for agent {}", text(slave, "hostname")))?;
        let lb = get_json(master, &url, "/v1/lb").await?;
        agents.push(json!({"agent": text(slave, "hostname"), "id": text(slave, "id"), "lb": lb}));
    }
    output(json_out, &Value::Array(agents), render)
}

/// One table per agent: a row per backend (a frontend without backends gets one row).
fn render(agents: &Value) -> String {
    let mut out = String::new();
    for agent in agents.as_array().into_iter().flatten() {
        let lb = &agent["lb"];
        let group = lb.get("group").filter(|g| !g.is_null()).map_or_else(|| "all apps".to_string(), display);
        out.push_str(&format!(
            "agent {} (table generation {}, serving {group})\n",
            text(agent, "agent"),
            display(&lb["generation"])
        ));
        let mut rows = Vec::new();
        for f in lb["frontends"].as_array().into_iter().flatten() {
            let port = format!("{}/{}", display(&f["port"]), text(f, "protocol"));
            let state = match f.get("error").and_then(Value::as_str) {
                Some(error) => format!("not listening: {error}"),
                None => format!("{} conns, {} unserved", display(&f["connections"]), display(&f["unserved"])),
            };
            let backends = f["backends"].as_array().cloned().unwrap_or_default();
            if backends.is_empty() {
                rows.push(vec![
                    port.clone(),
                    text(f, "app_id"),
                    text(f, "balance"),
                    state.clone(),
                    "-".into(),
                    String::new(),
                ]);
            }
            for b in backends {
                let counters = format!(
                    "{} active, {} total, {} B in, {} B out, {} failed",
                    display(&b["active_connections"]),
                    display(&b["total_connections"]),
                    display(&b["bytes_in"]),
                    display(&b["bytes_out"]),
                    display(&b["failures"])
                );
                rows.push(vec![
                    port.clone(),
                    text(f, "app_id"),
                    text(f, "balance"),
                    state.clone(),
                    text(&b, "address"),
                    counters,
                ]);
            }
        }
        out.push_str(&table(&["PORT", "APP", "BALANCE", "FRONTEND", "BACKEND", "COUNTERS"], &rows));
        out.push('\n');
    }
    out
}
