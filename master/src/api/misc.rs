//! `/ping`, `/metrics`, `/v2/info`, `/v2/leader` (and its abdication), the landing page, and what answers when
//! no handler does: the 404 and 405 fallbacks, the request limits (414, 431) and
//! [`json_errors`], which makes every error of every route Marathon's `{"message": ...}`.
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use plinth_protocol::views::{LeaderInfo, MarathonInfo};

use super::views;
use crate::error::ApiError;
use crate::role::Role;
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

/// `GET /v2/leader`: answered by every master (followers know who leads from etcd).
pub async fn leader(State(master): State<Arc<Master>>) -> Result<Json<LeaderInfo>, ApiError> {
    let role = master.role.borrow().clone();
    match role {
        Role::Single | Role::Leading => Ok(Json(LeaderInfo { leader: master.leader.clone() })),
        Role::Following(Some(url)) => Ok(Json(LeaderInfo { leader: crate::role::address_of(&url).to_string() })),
        Role::Following(None) => Err(crate::role::not_leading(&role)),
    }
}

/// `DELETE /v2/leader`: Marathon's abdication hands leadership to another master. This
/// master runs alone (its store is its own redb file, no election), so there is no one to
/// hand over to: answering Marathon's 200 would claim a failover that never happens, and
/// stepping down would only stop the cluster. A 409 says so and changes nothing.
/// With etcd, the leader gives the lead up and another master wins the election.
pub async fn abdicate(State(master): State<Arc<Master>>) -> Response {
    if master.etcd.is_some() && master.leads() {
        tracing::info!(leader = %master.leader, "abdicating");
        master.abdication.notify_one();
        return Json(serde_json::json!({"message": "Leadership abdicated"})).into_response();
    }
    abdication_refused(&master).into_response()
}

fn abdication_refused(master: &Master) -> ApiError {
    tracing::info!(leader = %master.leader, "leadership abdication refused: no other master");
    ApiError::Conflict(format!(
        "Leadership not abdicated: {} is the only master (no HA store), so no other master could take over; \
         it stays the leader",
        master.leader
    ))
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

/// A known path asked with a method it does not take (axum adds the `Allow` header).
pub async fn method_not_allowed(request: Request) -> ApiError {
    let error = ApiError::MethodNotAllowed(format!("{} is not allowed on {}", request.method(), request.uri().path()));
    super::drain(request).await;
    error
}

/// Longest request target accepted (Marathon's ids and queries fit many times over).
const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes accepted (hyper itself refuses far more, or more than 100 headers,
/// with an empty 431 before any of this runs).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// 414 and 431 with Marathon's JSON, for what hyper lets through.
pub async fn request_limits(request: Request, next: Next) -> Response {
    let uri = request.uri().to_string().len();
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    let refused = if uri > MAX_URI_BYTES {
        Some((StatusCode::URI_TOO_LONG, format!("URI too long: {uri} bytes, the limit is {MAX_URI_BYTES}")))
    } else if headers > MAX_HEADER_BYTES {
        Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers too large: {headers} bytes, the limit is {MAX_HEADER_BYTES}"),
        ))
    } else {
        None
    };
    match refused {
        Some((status, message)) => {
            super::drain(request).await;
            ApiError::TooLong { status, message }.into_response()
        }
        None => next.run(request).await,
    }
}

/// Error answers longer than this are not read back (ours are a few hundred bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Makes every 4xx/5xx Marathon's `{"message": ...}`: the JSON ones stay as they are
/// (ours, with their `details`), others (axum's plain-text extractor rejections, an empty
/// 405 or 416) become JSON with their text, or the status's name when they have none.
/// The iPXE script's errors stay scripts: firmware runs them (`pxe.rs`).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let ipxe = request.uri().path() == "/boot/ipxe";
    let head = request.method() == Method::HEAD;
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || ipxe {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, ERROR_BODY_LIMIT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        text => text.to_string(),
    };
    let body = serde_json::json!({ "message": message }).to_string();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let body = if head { axum::body::Body::empty() } else { axum::body::Body::from(body) };
    Response::from_parts(parts, body)
}
