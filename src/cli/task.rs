//! `plinth task list|kill|inspect|top|stats|port`: tasks from the master, container
//! details from the agent that runs them.
use plinth_protocol::Timestamp;
use reqwest::Method;
use serde_json::{json, Value};

use super::agent::agent_call;
use super::app::{app_path, endpoints};
use super::master::MasterClient;
use super::render::{output, print_json, task_table};
use super::TaskCommand;

pub(super) async fn run(master: MasterClient, json_out: bool, cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::List { app } => {
            let path = match app {
                Some(id) => format!("{}/tasks", app_path(&id)?),
                None => "/v2/tasks".to_string(),
            };
            let body = master.call(Method::GET, &path, None).await?;
            output(json_out, &body, |b| task_table(b.get("tasks").unwrap_or(&Value::Null)))
        }
        TaskCommand::Kill { ids, scale } => {
            let path = format!("/v2/tasks/delete{}", if scale { "?scale=true" } else { "" });
            let answer = master.call(Method::POST, &path, Some(&json!({ "ids": ids }))).await?;
            if json_out {
                return print_json(&answer);
            }
            match answer.get("deploymentId").and_then(Value::as_str) {
                Some(deployment) => println!("killing {} task(s), scaling down (deployment {deployment})", ids.len()),
                None => println!("killing {} task(s); they will be replaced", ids.len()),
            }
            Ok(())
        }
        TaskCommand::Inspect { id } => {
            let body = agent_call(&master, &id, "inspect").await?;
            output(json_out, &body, inspect_text)
        }
        TaskCommand::Top { id } => {
            let body = agent_call(&master, &id, "top").await?;
            output(json_out, &body, top_table)
        }
        TaskCommand::Stats { id } => {
            let body = agent_call(&master, &id, "stats").await?;
            output(json_out, &body, stats_text)
        }
        TaskCommand::Port { id } => {
            let body = master.call(Method::GET, "/v2/tasks", None).await?;
            let tasks = body.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default();
            let Some(task) = tasks.into_iter().find(|t| t.get("id").and_then(Value::as_str) == Some(id.as_str()))
            else {
                anyhow::bail!("no such task: {id} (see `plinth task list`)");
            };
            output(json_out, &task, |t| endpoints(&Value::Array(vec![t.clone()])))
        }
    }
}

fn inspect_text(body: &Value) -> String {
    let task = body.get("task").unwrap_or(&Value::Null);
    let container = body.get("container").unwrap_or(&Value::Null);
    let field = |v: &Value, k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    let mut lines = vec![
        format!("task:      {}", field(task, "id")),
        format!("app:       {}", field(task, "app_id")),
        format!("state:     {}", field(task, "state")),
        format!("pid:       {}", container.get("pid").map_or_else(|| field(task, "pid"), |p| p.to_string())),
        format!("sandbox:   {}", field(task, "sandbox")),
    ];
    if !container.is_null() {
        lines.push(format!("image:     {} ({})", field(container, "image"), field(container, "image_digest")));
        lines.push(format!("network:   {}", field(container, "network")));
        lines.push(format!("ip:        {}", field(container, "ip")));
        if let Some(ports) = container.get("ports").and_then(Value::as_array) {
            for p in ports {
                lines.push(format!(
                    "port:      {}/{} -> host {}",
                    field(p, "containerPort"),
                    field(p, "protocol"),
                    field(p, "hostPort")
                ));
            }
        }
        lines.push(format!("rootfs:    {}", field(container, "rootfs")));
    }
    if let Some(cgroup) = body.get("cgroup").filter(|c| !c.is_null()) {
        lines.push(format!("cgroup:    {}", field(cgroup, "name")));
    }
    if let Some(stats) = body.get("stats").filter(|s| !s.is_null()) {
        lines.push(stats_text(stats));
    }
    if let Some(timeline) = timeline_text(body) {
        lines.push(timeline);
    }
    lines.join("\n")
}

/// The start timeline: each phase's time and how long after accepted (else the first
/// phase shown) it ended.
fn timeline_text(body: &Value) -> Option<String> {
    let marks: Vec<(&str, &str)> = body
        .get("timeline")?
        .as_array()?
        .iter()
        .filter_map(|m| Some((m.get("phase")?.as_str()?, m.get("at")?.as_str()?)))
        .collect();
    let origin = marks.first().and_then(|(_, at)| Timestamp::parse_iso(at))?;
    let mut text = "timeline:".to_string();
    for (phase, at) in marks {
        let since =
            Timestamp::parse_iso(at).map_or("-".to_string(), |t| format!("+{} ms", t.millis() - origin.millis()));
        text.push_str(&format!("\n  {phase:<9} {at:<25} {since:>10}"));
    }
    Some(text)
}

fn top_table(body: &Value) -> String {
    let mut out = format!("{:<8} {:<8} {:<6} {:>10}  {}\n", "PID", "PPID", "UID", "RSS(KiB)", "COMMAND");
    for p in body.get("processes").and_then(Value::as_array).into_iter().flatten() {
        let n = |k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(0);
        out.push_str(&format!(
            "{:<8} {:<8} {:<6} {:>10}  {}\n",
            n("pid"),
            n("ppid"),
            n("uid"),
            n("rss_kb"),
            p.get("command").and_then(Value::as_str).unwrap_or("")
        ));
    }
    out.trim_end().to_string()
}

fn stats_text(stats: &Value) -> String {
    let mib = |k: &str| {
        stats.get(k).and_then(Value::as_u64).map_or("-".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
    };
    let cpu = stats
        .get("cpu_usage_usec")
        .and_then(Value::as_u64)
        .map_or("-".to_string(), |u| format!("{:.2} s", u as f64 / 1e6));
    format!(
        "cpu:       {cpu}\nmemory:    {} of {} (peak {})\noom kills: {}\nprocesses: {}",
        mib("memory_bytes"),
        mib("memory_limit_bytes"),
        mib("memory_peak_bytes"),
        stats.get("oom_kills").and_then(Value::as_u64).unwrap_or(0),
        stats.get("pids").and_then(Value::as_u64).unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_shows_each_phase_with_its_time_since_accepted() {
        let body = json!({"task": {"id": "web.1"}, "timeline": [
            {"phase": "accepted", "at": "2026-12-01T20:00:00.000Z"},
            {"phase": "offered", "at": "2026-12-01T20:00:00.012Z"},
            {"phase": "running", "at": "2026-12-01T20:00:01.250Z"},
        ]});
        let text = inspect_text(&body);
        let timeline: Vec<&str> = text.lines().skip_while(|l| *l != "timeline:").collect();
        assert_eq!(
            timeline,
            [
                "timeline:",
                "  accepted  2026-12-01T20:00:00.000Z       +0 ms",
                "  offered   2026-12-01T20:00:00.012Z      +12 ms",
                "  running   2026-12-01T20:00:01.250Z    +1250 ms",
            ],
            "{text}"
        );
        assert!(!inspect_text(&json!({"task": {}, "timeline": []})).contains("timeline"), "no phases, no section");
    }
}
