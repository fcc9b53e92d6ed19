//! `/ping`, `/metrics`, `/v2/info`, `/v2/leader`, the landing page and the 404 fallback.
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use plinth_protocol::views::{LeaderInfo, MarathonInfo};

use super::views;
use crate::error::ApiError;
use crate::shell::Master;

pub async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "pong").into_response()
}

/// `GET /metrics`: Marathon 1.7+'s JSON for clients that ask for JSON or say nothing, the
/// Prometheus text for a scraper (`Accept: text/plain` or OpenMetrics without JSON).
pub async fn metrics(State(master): State<Arc<Master>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let scraper = (accept.contains("text/plain") || accept.contains("openmetrics")) && !accept.contains("json");
    if scraper {
        return prometheus_text(&master).await;
    }
    let guard = master.read().await;
    let body =
        master.metrics.json(&guard.core, master.events.published(), master.callbacks.stats(), &master.registry.metrics);
    Json(body).into_response()
}

/// `GET /metrics/prometheus`: the Prometheus text exposition.
pub async fn prometheus(State(master): State<Arc<Master>>) -> Response {
    prometheus_text(&master).await
}

async fn prometheus_text(master: &Master) -> Response {
    let guard = master.read().await;
    let mut text = master.metrics.render(&guard.core, master.events.published(), master.callbacks.stats());
    text.push_str(&master.registry.metrics.render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

pub async fn leader(State(master): State<Arc<Master>>) -> Json<LeaderInfo> {
    Json(LeaderInfo { leader: master.leader.clone() })
}

/// `GET /v2/info`: Marathon's shape with Plinth's values (Plinth's own details: `/v1/info`).
pub async fn info(State(master): State<Arc<Master>>) -> Json<MarathonInfo> {
    let guard = master.read().await;
    Json(views::info(&master, &guard.core))
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
