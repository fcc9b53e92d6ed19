//! The master's HTTP API: Marathon v2 (`/v2/...`, Marathon's JSON exactly: `views.rs`),
//! events, Plinth's own views (`/v1/...`, `plinth.rs`), the agent protocol
//! (`/agent/v1/...`), Mesos-style operator views (`/master/...`), `/ping`, `/metrics`.
//! [`with_layers`] puts every route (the PXE ones too) behind the same gates: credentials
//! (`auth.rs`), request limits and Marathon's JSON for every error (`misc.rs`).
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{CONTENT_LENGTH, EXPECT};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, delete, get, post};
use axum::Router;
use futures::StreamExt;
use serde_json::Value;

use plinth_protocol::AppId;

use crate::error::ApiError;
use crate::shell::Master;

pub mod agents;
pub mod apps;
pub mod auth;
pub mod deployments;
pub mod dns;
pub mod event_relay;
pub mod event_selection;
pub mod events;
pub mod follow_leader;
pub mod group_body;
pub mod groups;
pub mod images;
pub mod misc;
pub mod node_api;
pub mod operator;
pub mod plinth;
pub mod queue;
pub mod task_views;
pub mod tasks;
pub mod ui;
pub mod views;

/// Largest request body accepted (a Marathon app JSON is a few KB).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Bodies over the limit but under this are read and dropped before the 413 (see [`Body`]).
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

pub type Shared = State<Arc<Master>>;

/// How long a refused request's body is read before the answer goes out anyway.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole API over one master, without the gates of [`with_layers`].
pub fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route("/", get(ui::root))
        .route("/ping", get(misc::ping))
        .route("/metrics", get(misc::metrics))
        .route("/metrics/prometheus", get(misc::prometheus))
        .route("/v2/info", get(misc::info))
        .route("/v2/leader", get(misc::leader).delete(misc::abdicate))
        .route("/v1/masters", get(crate::leader::masters))
        .route("/v2/apps", get(apps::list).post(apps::create).put(apps::update_many))
        .route("/v2/apps/", get(apps::list).post(apps::create).put(apps::update_many))
        .route("/v2/apps/{*rest}", any(apps::dispatch))
        .route("/v2/groups", any(groups::dispatch_root))
        .route("/v2/groups/", any(groups::dispatch_root))
        .route("/v2/groups/{*rest}", any(groups::dispatch))
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::delete_many))
        .route("/v2/deployments", get(deployments::list))
        .route("/v2/deployments/{id}", delete(deployments::cancel))
        .route("/v2/queue", get(queue::list))
        .route("/v2/queue/{*rest}", delete(queue::reset_delay))
        .route("/v2/events", get(events::stream))
        .route(
            "/v2/eventSubscriptions",
            get(events::list_subscriptions).post(events::subscribe).delete(events::unsubscribe),
        )
        .route("/agent/v1/register", post(agents::register))
        .route("/agent/v1/sync", post(agents::sync))
        .route("/agent/v1/status", post(agents::status))
        .route("/agent/v1/certificate", post(agents::certificate))
        .route("/v1/ca.pem", get(agents::ca_pem))
        .route("/master/slaves", get(operator::slaves))
        .route("/master/state", get(operator::state))
        .route("/master/state.json", get(operator::state))
        .route("/master/slaves/{id}/drain", post(operator::drain).delete(operator::undrain))
        .route("/v1/tasks/{id}/{view}", get(task_views::task_view))
        .route("/v1/nodes/{id}/{action}", get(node_api::view).post(node_api::power))
        .merge(ui::routes(ui::Source::from_env()))
        .merge(plinth::routes())
        .merge(images::routes())
        .merge(dns::routes())
        .fallback(misc::not_found)
        .with_state(master)
}

/// The gates every route passes, outermost first: errors become Marathon's JSON, requests
/// are counted, over-long URIs and headers are refused, credentials are checked. Given the
/// whole router (the PXE routes merged in), so no route can miss one.
pub fn with_layers(router: Router, master: &Arc<Master>) -> Router {
    auth::warn_if_open(&master.config.access);
    router
        .method_not_allowed_fallback(misc::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(master.clone(), auth::require_credentials))
        .layer(axum::middleware::from_fn(misc::request_limits))
        .layer(axum::middleware::from_fn_with_state(master.clone(), count_requests))
        .layer(axum::middleware::from_fn(misc::json_errors))
}

/// Reads and drops the body of a request that is refused without reading it (bounded in
/// size and time), so a client that sends its whole body reads the answer, not a reset
/// connection. Not with `Expect: 100-continue`: that client waits for the answer first.
pub async fn drain(request: Request) {
    let declared =
        request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if request.headers().contains_key(EXPECT) || declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return;
    }
    let mut stream = request.into_body().into_data_stream();
    let read = async {
        let mut received = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            received += chunk.len();
            if received > BODY_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

async fn count_requests(State(master): Shared, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    master.metrics.record_request(&method, response.status().as_u16());
    response
}

/// The request body, read up to [`BODY_LIMIT`] (413 with a JSON message beyond).
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let declared =
            request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let too_large = || ApiError::BodyTooLarge { limit: BODY_LIMIT };
        let mut stream = request.into_body().into_data_stream();
        if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
            // Far too large to read: refuse at once (the client may see the connection close).
            return Err(too_large());
        }
        let mut body = Vec::new();
        let mut received = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
            received += chunk.len();
            if received > DRAIN_LIMIT {
                return Err(too_large());
            }
            if received <= BODY_LIMIT {
                body.extend_from_slice(&chunk);
            }
            // Past the limit the rest is read and dropped, so a client that sends the whole
            // body (no `Expect: 100-continue`) reads the 413 instead of a reset connection.
        }
        if received > BODY_LIMIT || declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(too_large());
        }
        Ok(Body(Bytes::from(body)))
    }
}

impl Body {
    /// Parses JSON of a fixed type; a syntax error is 400, a shape error 422.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let value: Value = serde_json::from_slice(&self.0).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        serde_json::from_value(value).map_err(|e| {
            ApiError::Invalid(vec![plinth_protocol::Violation { path: "/".into(), errors: vec![e.to_string()] }])
        })
    }

    /// Parses any JSON value (400 on a syntax error).
    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.0).map_err(|e| ApiError::InvalidJson(e.to_string()))
    }
}

/// The client's address, when the server was started with connect info.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

impl ClientAddr {
    pub fn ip(&self) -> Option<String> {
        self.0.map(|a| a.ip().to_string())
    }
}

/// Query parameters, repeatable (`embed=a&embed=b`).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_pairs(query).map(Params)
    }
}

fn serde_urlencoded_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().map_err(|_| ApiError::BadRequest("malformed query string".into()))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter, comma-separated values split.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| {
                v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>()
            })
            .collect()
    }

    /// A boolean flag (`force=true`); anything but true/false is a 400.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                other => {
                    Err(ApiError::BadRequest(format!("query parameter '{name}' must be true or false, got '{other}'")))
                }
            },
        }
    }
}

/// Parses an app id from a URL path (404-worthy ids are reported as such).
pub fn parse_app_id(raw: &str) -> Result<AppId, ApiError> {
    AppId::parse(raw).map_err(|e| ApiError::NotFound(format!("App '/{}' does not exist ({e})", raw.trim_matches('/'))))
}
