//! `/ping`, `/metrics`, `/v2/info`, `/v2/leader`, the landing page and the 404 fallback.
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::shell::Master;

pub async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "pong").into_response()
}

pub async fn metrics(State(master): State<Arc<Master>>) -> Response {
    let guard = master.read().await;
    let mut text = master.metrics.render(&guard.core, master.events.published(), master.callbacks.stats());
    text.push_str(&master.registry.metrics.render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

pub async fn leader(State(master): State<Arc<Master>>) -> Json<Value> {
    Json(json!({"leader": master.leader}))
}

/// `GET /v2/info`: Marathon's shape with Plinth's values.
pub async fn info(State(master): State<Arc<Master>>) -> Json<Value> {
    let port = master.leader.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8080);
    let (service_min, service_max) = master.read().await.core.config().service_ports;
    Json(json!({
        "name": "plinth",
        "version": env!("CARGO_PKG_VERSION"),
        "buildref": "",
        "elected": true,
        "leader": master.leader,
        "frameworkId": master.framework_id,
        "marathon_config": {
            "master": format!("plinth://{}", master.leader),
            "framework_name": "marathon",
            "hostname": master.config.hostname,
            "ha": false,
            "checkpoint": true,
            "failover_timeout": 604800,
            "local_port_min": service_min,
            "local_port_max": service_max,
            "executor": "//cmd",
            "mesos_role": "*",
            "mesos_user": "root",
            "task_launch_timeout": 300000,
            "task_reservation_timeout": 20000,
            "reconciliation_initial_delay": 15000,
            "reconciliation_interval": 600000,
            "agent_timeout_ms": u64::try_from(master.config.agent_timeout.as_millis()).unwrap_or(u64::MAX),
            "features": [],
            "webui_url": null,
            "mesos_leader_ui_url": format!("http://{}/", master.leader),
        },
        "http_config": {"http_port": port, "https_port": null},
        "event_subscriber": {"type": "http_callback", "http_endpoints": master.callbacks.urls()},
        "storage": {"type": "redb", "path": master.store().path()},
        "zookeeper_config": null,
    }))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A tiny overview page for humans.
pub async fn landing(State(master): State<Arc<Master>>) -> Html<String> {
    let guard = master.read().await;
    let core = &guard.core;
    let mut page =
        String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Plinth</title></head><body>");
    let _ = write!(page, "<h1>Plinth master {}</h1>", escape(&master.leader));
    let agents = core.agents().count();
    let active = core.agents().filter(|a| a.record.active).count();
    let _ =
        write!(page, "<p>{active} of {agents} agents active, {} deployments running.</p>", core.deployments().count());
    page.push_str("<table border=\"1\" cellpadding=\"4\"><tr><th>app</th><th>instances</th><th>running</th><th>cmd / image</th></tr>");
    for app in core.apps() {
        let running = core.app_tasks(&app.id).iter().filter(|t| t.is_running()).count();
        let what = app
            .definition
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.clone())
            .or_else(|| app.definition.cmd.clone())
            .or_else(|| app.definition.args.as_ref().map(|a| a.join(" ")))
            .unwrap_or_default();
        let _ = write!(
            page,
            "<tr><td><a href=\"/v2/apps{id}\">{id}</a></td><td>{}</td><td>{running}</td><td><code>{}</code></td></tr>",
            app.definition.instances,
            escape(&what),
            id = escape(app.id.as_str()),
        );
    }
    page.push_str("</table><p><a href=\"/v2/apps\">/v2/apps</a> · <a href=\"/v2/queue\">/v2/queue</a> · <a href=\"/master/slaves\">/master/slaves</a> · <a href=\"/metrics\">/metrics</a></p></body></html>");
    Html(page)
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such resource: {}", uri.path()))
}
