//! `plinth node list|wait|drain|poweroff|profile ...`: the agents the master knows, decommissioning
//! and machine profiles.
use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use super::agent::agent_url;
use super::master::MasterClient;
use super::render::{display, output, table, text, used_of};

/// The node API init serves on every node (`POST /node/v1/poweroff`).
const DRAIN_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Set what the machine with this MAC boots as.
    Set {
        mac: String,
        /// agent, master or standalone.
        #[arg(long, default_value = "agent")]
        role: String,
        #[arg(long)]
        hostname: Option<String>,
        /// Attributes for constraints, e.g. 'rack:r2;zone:a'.
        #[arg(long, default_value = "")]
        attributes: String,
        /// More kernel command line words.
        #[arg(long, default_value = "")]
        extra_cmdline: String,
    },
    /// Show one machine's profile and state.
    Get { mac: String },
    /// Remove a machine's profile (it then boots with the default profile).
    Delete { mac: String },
    /// List machines with their MAC, address and state (booting, registered, lost).
    List,
}

/// `plinth node list`.
pub async fn list(master: &MasterClient, json_out: bool) -> anyhow::Result<()> {
    let body = master.call(Method::GET, "/master/slaves", None).await?;
    output(json_out, &body, node_table)
}

/// `plinth node wait COUNT`: until COUNT agents are active.
pub async fn wait(master: &MasterClient, count: usize, timeout_secs: u64) -> anyhow::Result<()> {
    let end = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        // The master itself may still be booting: an unreachable master is waited for too.
        let active = match master.call(Method::GET, "/master/slaves", None).await {
            Ok(body) => active_agents(&body),
            Err(_) if tokio::time::Instant::now() < end => 0,
            Err(e) => return Err(e),
        };
        if active >= count {
            println!("{active} agent(s) active");
            return Ok(());
        }
        if tokio::time::Instant::now() >= end {
            bail!("{active} of {count} agent(s) active after {timeout_secs} s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Agents in a `/master/slaves` answer that are active.
fn active_agents(body: &Value) -> usize {
    let slaves = body.get("slaves").and_then(Value::as_array);
    slaves.into_iter().flatten().filter(|s| s.get("active").and_then(Value::as_bool) == Some(true)).count()
}

fn node_table(body: &Value) -> String {
    let slaves = body.get("slaves").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = slaves
        .iter()
        .map(|s| {
            let attributes = s
                .get("attributes")
                .and_then(Value::as_object)
                .map(|a| a.iter().map(|(k, v)| format!("{k}:{}", display(v))).collect::<Vec<_>>().join(";"))
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "-".to_string());
            let active = s.get("active").and_then(Value::as_bool).map_or("-", |a| if a { "yes" } else { "no (lost)" });
            vec![
                text(s, "id"),
                text(s, "hostname"),
                agent_url(s).unwrap_or_else(|| "-".to_string()),
                active.to_string(),
                used_of(s, "cpus"),
                used_of(s, "mem"),
                used_of(s, "disk"),
                attributes,
            ]
        })
        .collect();
    table(&["ID", "HOSTNAME", "ADDRESS", "ACTIVE", "CPUS", "MEM", "DISK", "ATTRIBUTES"], &rows)
}

/// The agent named `node` (id or hostname) in `/master/slaves`.
async fn find_agent(master: &MasterClient, node: &str) -> anyhow::Result<Value> {
    let body = master.call(Method::GET, "/master/slaves", None).await?;
    let slaves = body.get("slaves").and_then(Value::as_array).cloned().unwrap_or_default();
    let matches: Vec<Value> =
        slaves.into_iter().filter(|s| text(s, "id") == node || text(s, "hostname") == node).collect();
    match matches.len() {
        0 => bail!("no node {node:?}: not an agent id or hostname the master knows (see plinth node list)"),
        1 => Ok(matches.into_iter().next().expect("one match")),
        n => bail!("{n} nodes are called {node:?}; use the agent id"),
    }
}

pub async fn drain(
    master: &MasterClient,
    json_out: bool,
    node: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let agent = find_agent(master, node).await?;
    let id = text(&agent, "id");
    let mut state = master.call(Method::POST, &format!("/master/slaves/{id}/drain"), None).await?;
    if wait {
        let started = Instant::now();
        while !state.get("drained").and_then(Value::as_bool).unwrap_or(false) {
            if started.elapsed() > timeout {
                bail!("node {id} still has tasks after {timeout:?}; it stays draining (see plinth task list)");
            }
            tokio::time::sleep(DRAIN_POLL).await;
            state = find_agent(master, &id).await?;
        }
    }
    output(json_out, &state, |s| {
        let drained = s.get("drained").and_then(Value::as_bool).unwrap_or(false);
        format!("node {} ({}) {}\n", text(s, "id"), text(s, "hostname"), if drained { "drained" } else { "draining" })
    })
}

/// Powers a node off through the master (`POST /v1/nodes/ID/poweroff`), which asks the
/// node's PID 1 with the cluster's credentials; refused unless drained or `force`.
pub async fn poweroff(master: &MasterClient, node: &str, force: bool) -> anyhow::Result<()> {
    let agent = find_agent(master, node).await?;
    let id = text(&agent, "id");
    let path = format!("/v1/nodes/{id}/poweroff{}", if force { "?force=true" } else { "" });
    master.call(Method::POST, &path, None).await?;
    println!("node {id} is powering off");
    Ok(())
}

fn machines_table(body: &Value) -> String {
    let machines = body.get("machines").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
            let profile = m.get("profile").filter(|p| !p.is_null());
            let role = profile.and_then(|p| p.get("role")).and_then(Value::as_str).unwrap_or("(default)").to_string();
            let attributes =
                profile.and_then(|p| p.get("attributes")).and_then(Value::as_str).unwrap_or("-").to_string();
            vec![field("mac"), field("hostname"), field("ip"), field("state"), role, attributes]
        })
        .collect();
    table(&["MAC", "HOSTNAME", "IP", "STATE", "ROLE", "ATTRIBUTES"], &rows)
}

pub async fn profile(master: &MasterClient, json_out: bool, cmd: ProfileCommand) -> anyhow::Result<()> {
    match cmd {
        ProfileCommand::Set { mac, role, hostname, attributes, extra_cmdline } => {
            let mut body = json!({"role": role, "attributes": attributes, "extraCmdline": extra_cmdline});
            if let Some(h) = hostname {
                body["hostname"] = json!(h);
            }
            let answer = master.call(Method::PUT, &format!("/v1/machines/{mac}"), Some(&body)).await?;
            output(json_out, &answer, |a| format!("profile of {} set\n", text(a, "mac")))
        }
        ProfileCommand::Get { mac } => {
            let answer = master.call(Method::GET, &format!("/v1/machines/{mac}"), None).await?;
            output(json_out, &answer, |m| machines_table(&json!({"machines": [m]})))
        }
        ProfileCommand::Delete { mac } => {
            let answer = master.call(Method::DELETE, &format!("/v1/machines/{mac}"), None).await?;
            output(json_out, &answer, |a| format!("profile of {} deleted\n", text(a, "mac")))
        }
        ProfileCommand::List => {
            let answer = master.call(Method::GET, "/v1/machines", None).await?;
            output(json_out, &answer, machines_table)
        }
    }
}
