//! `plinth app deploy|list|show|endpoints|wait|scale|restart|destroy`.
use anyhow::{bail, Context};
use plinth_protocol::AppId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

use super::master::{ApiError, MasterClient};
use super::render::task_table;
use super::render::{display, number, number_text, output, print_json, table, text, truncate};
use super::{AppCommand, WaitArgs};

/// `/hello` or `hello` → `/v2/apps/hello`, rejecting ids the master would refuse anyway.
pub(super) fn app_path(id: &str) -> anyhow::Result<String> {
    let id = AppId::parse(id).map_err(anyhow::Error::new)?;
    Ok(format!("/v2/apps{id}"))
}

fn force_query(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

fn read_app_file(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the app definition from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{file} is not valid JSON"))?;
    if !value.is_object() {
        bail!("{file} must hold one app definition (a JSON object)");
    }
    Ok(value)
}

pub(super) async fn run(master: MasterClient, json_out: bool, cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Deploy { file, wait } => {
            let app = read_app_file(&file)?;
            let created = master.call(Method::POST, "/v2/apps", Some(&app)).await?;
            let deployment = created.pointer("/deployments/0/id").and_then(Value::as_str).map(str::to_string);
            report_change(
                &master,
                json_out,
                &created,
                &format!("created app {}", text(&created, "id")),
                deployment,
                &wait,
            )
            .await
        }
        AppCommand::List => {
            let body = master.call(Method::GET, "/v2/apps?embed=apps.counts", None).await?;
            output(json_out, &body, app_table)
        }
        AppCommand::Show { id } => {
            let path = format!("{}?embed=app.tasks&embed=app.counts&embed=app.lastTaskFailure", app_path(&id)?);
            let body = master.call(Method::GET, &path, None).await?;
            // Every active agent balances the service ports: those are the app's endpoints.
            let slaves = master.call(Method::GET, "/master/slaves", None).await.unwrap_or_default();
            let hosts: Vec<String> = slaves
                .get("slaves")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|s| s.get("active").and_then(Value::as_bool).unwrap_or(true))
                .filter_map(super::agent::agent_url)
                .filter_map(|url| reqwest::Url::parse(&url).ok()?.host_str().map(str::to_string))
                .collect();
            output(json_out, &body, |body| show_app(body, &hosts))
        }
        AppCommand::Endpoints { id } => {
            let body = master.call(Method::GET, &format!("{}/tasks", app_path(&id)?), None).await?;
            output(json_out, &body, |b| endpoints(b.get("tasks").unwrap_or(&Value::Null)))
        }
        AppCommand::Wait { id, timeout } => {
            let path = app_path(&id)?;
            let end = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let body = master.call(Method::GET, &path, None).await?;
                let app = body.get("app").unwrap_or(&Value::Null);
                let (running, wanted) = (number(app, "tasksRunning"), number(app, "instances"));
                let deploying = app.get("deployments").and_then(Value::as_array).is_some_and(|d| !d.is_empty());
                if running >= wanted && !deploying {
                    println!(
                        "{}: {} of {} instance(s) running",
                        text(app, "id"),
                        number_text(running),
                        number_text(wanted)
                    );
                    return Ok(());
                }
                if tokio::time::Instant::now() >= end {
                    anyhow::bail!(
                        "{}: {} of {} instance(s) running after {timeout} s (see `plinth queue` for why)",
                        text(app, "id"),
                        number_text(running),
                        number_text(wanted)
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        AppCommand::Scale { id, instances, change } => {
            // A PUT of a missing app would try to create it (Marathon's semantics) and fail
            // validation with a 422 about fields the user never wrote: say what is wrong.
            if let Err(e) = master.call(Method::GET, &app_path(&id)?, None).await {
                if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == StatusCode::NOT_FOUND) {
                    bail!("no such app: {} (see `plinth app list`)", AppId::parse(&id)?);
                }
                return Err(e);
            }
            let path = format!("{}{}", app_path(&id)?, force_query(change.force));
            let answer = master.call(Method::PUT, &path, Some(&json!({ "instances": instances }))).await?;
            let summary = format!("scaling {} to {instances} instance(s)", AppId::parse(&id)?);
            report_deployment(&master, json_out, &answer, &summary, &change.wait).await
        }
        AppCommand::Restart { id, change } => {
            let path = format!("{}/restart{}", app_path(&id)?, force_query(change.force));
            let answer = master.call(Method::POST, &path, None).await?;
            let summary = format!("restarting {}", AppId::parse(&id)?);
            report_deployment(&master, json_out, &answer, &summary, &change.wait).await
        }
        AppCommand::Destroy { id, change } => {
            let path = format!("{}{}", app_path(&id)?, force_query(change.force));
            let answer = master.call(Method::DELETE, &path, None).await?;
            let summary = format!("destroying {}", AppId::parse(&id)?);
            report_deployment(&master, json_out, &answer, &summary, &change.wait).await
        }
    }
}

/// For answers of the `{"version","deploymentId"}` shape.
async fn report_deployment(
    master: &MasterClient,
    json_out: bool,
    answer: &Value,
    summary: &str,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    let deployment = answer.get("deploymentId").and_then(Value::as_str).map(str::to_string);
    report_change(master, json_out, answer, summary, deployment, wait).await
}

async fn report_change(
    master: &MasterClient,
    json_out: bool,
    answer: &Value,
    summary: &str,
    deployment: Option<String>,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    if json_out {
        print_json(answer)?;
    } else {
        match &deployment {
            Some(id) => println!("{summary} (deployment {id})"),
            None => println!("{summary}"),
        }
    }
    if wait.wait {
        if let Some(id) = deployment {
            master.wait_for_deployment(&id, Duration::from_secs(wait.timeout)).await?;
            if !json_out {
                println!("deployment {id} finished");
            }
        }
    }
    Ok(())
}

fn app_command(app: &Value) -> String {
    if let Some(image) = app.pointer("/container/docker/image").and_then(Value::as_str) {
        return format!("image {image}");
    }
    match (app.get("cmd").and_then(Value::as_str), app.get("args")) {
        (Some(cmd), _) => cmd.to_string(),
        (None, Some(args)) => display(args),
        (None, None) => "-".to_string(),
    }
}

fn app_table(body: &Value) -> String {
    let apps = body.get("apps").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|app| {
            let deploying = app.get("deployments").and_then(Value::as_array).is_some_and(|d| !d.is_empty());
            vec![
                text(app, "id"),
                format!("{}/{}", number(app, "tasksRunning"), number(app, "instances")),
                text(app, "tasksStaged"),
                text(app, "cpus"),
                text(app, "mem"),
                if deploying { "yes" } else { "-" }.to_string(),
                truncate(&app_command(app), 50),
            ]
        })
        .collect();
    table(&["ID", "RUNNING", "STAGED", "CPUS", "MEM", "DEPLOYING", "COMMAND"], &rows)
}

/// `port/protocol` of each of the app's service ports (port mappings, else port definitions).
fn service_ports(app: &Value) -> Vec<(String, String)> {
    let mappings = app
        .pointer("/container/portMappings")
        .or_else(|| app.pointer("/container/docker/portMappings"))
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty());
    let entries: Vec<(String, String)> = match mappings {
        Some(mappings) => mappings.iter().map(|m| (text(m, "servicePort"), text(m, "protocol"))).collect(),
        None => app
            .get("portDefinitions")
            .and_then(Value::as_array)
            .map(|defs| defs.iter().map(|d| (text(d, "port"), text(d, "protocol"))).collect())
            .unwrap_or_default(),
    };
    entries.into_iter().filter(|(port, _)| port != "0" && port != "-" && !port.is_empty()).collect()
}

fn show_app(body: &Value, agents: &[String]) -> String {
    let app = body.get("app").unwrap_or(body);
    let service = service_ports(app);
    let ports: Vec<String> = service.iter().map(|(port, protocol)| format!("{port}/{protocol}")).collect();
    let balanced: Vec<String> =
        service.iter().flat_map(|(port, _)| agents.iter().map(move |host| format!("{host}:{port}"))).collect();
    let deployments: Vec<String> = app
        .get("deployments")
        .and_then(Value::as_array)
        .map(|d| d.iter().map(|x| text(x, "id")).collect())
        .unwrap_or_default();
    let mut fields = vec![
        ("id", text(app, "id")),
        ("command", app_command(app)),
        ("instances", format!("{} running of {}", number(app, "tasksRunning"), number(app, "instances"))),
        (
            "resources",
            format!("cpus {} · mem {} MB · disk {} MB", text(app, "cpus"), text(app, "mem"), text(app, "disk")),
        ),
        ("service ports", if ports.is_empty() { "-".to_string() } else { ports.join(",") }),
        ("balanced at", if balanced.is_empty() { "-".to_string() } else { balanced.join(" ") }),
        ("constraints", text(app, "constraints")),
        ("version", text(app, "version")),
        ("deployments", if deployments.is_empty() { "-".to_string() } else { deployments.join(",") }),
    ];
    if let Some(failure) = app.get("lastTaskFailure").filter(|f| !f.is_null()) {
        fields.push((
            "last failure",
            format!("{} {} {}", text(failure, "timestamp"), text(failure, "state"), text(failure, "message")),
        ));
    }
    let mut out: String = fields.iter().map(|(k, v)| format!("{:<15}{v}\n", format!("{k}:"))).collect();
    if let Some(tasks) = app.get("tasks").filter(|t| t.as_array().is_some_and(|a| !a.is_empty())) {
        out.push('\n');
        out.push_str(&task_table(tasks));
    }
    out
}

/// `host:port` lines for every port of the running tasks in `tasks`.
pub(super) fn endpoints(tasks: &Value) -> String {
    let mut lines = String::new();
    for task in tasks.as_array().into_iter().flatten() {
        if task.get("state").and_then(Value::as_str).is_some_and(|s| s != "TASK_RUNNING") {
            continue;
        }
        let host = text(task, "host");
        for port in task.get("ports").and_then(Value::as_array).into_iter().flatten() {
            lines.push_str(&format!("{host}:{}\n", display(port)));
        }
    }
    lines
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_list_every_port_of_running_tasks_only() {
        let tasks = json!([
            {"id": "a", "state": "TASK_RUNNING", "host": "10.0.0.3", "ports": [31001, 31002]},
            {"id": "b", "state": "TASK_STAGING", "host": "10.0.0.4", "ports": [31005]},
            {"id": "c", "state": "TASK_RUNNING", "host": "10.0.0.5", "ports": []}
        ]);
        assert_eq!(endpoints(&tasks), "10.0.0.3:31001\n10.0.0.3:31002\n");
    }

    #[test]
    fn show_lists_a_bridge_app_s_service_ports_and_where_they_are_balanced() {
        let body = json!({"app": {"id": "/hello-sinatra", "instances": 1, "portDefinitions": [],
            "container": {"type": "DOCKER", "portMappings": [{"containerPort": 3000, "hostPort": 0,
            "servicePort": 9000, "protocol": "tcp"}]}}});
        let shown = show_app(&body, &["10.0.0.3".into(), "10.0.0.4".into()]);
        assert!(shown.contains("service ports: 9000/tcp"), "{shown}");
        assert!(shown.contains("balanced at:   10.0.0.3:9000 10.0.0.4:9000"), "{shown}");
        let none = show_app(&json!({"app": {"id": "/x", "portDefinitions": []}}), &["10.0.0.3".into()]);
        assert!(none.contains("balanced at:   -"), "{none}");
    }

    #[test]
    fn app_paths_are_validated_locally() {
        assert_eq!(app_path("group/web").unwrap(), "/v2/apps/group/web");
        assert!(app_path("Bad_Id").is_err());
    }
}
