//! `GET /v2/events` (Server-Sent Events of Marathon's event types), `GET /v1/events`
//! (every event, Plinth's own too) and `/v2/eventSubscriptions` (HTTP callbacks, to the
//! URLs `--event-callback-allow` allows: `access.rs`).
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use plinth_protocol::views::events::EventStreamAttached;
use plinth_protocol::views::EventSubscriptions;
use plinth_protocol::Timestamp;

use super::event_selection::{sse, Selection};
use super::{ClientAddr, Params};
use crate::error::ApiError;
use crate::events::subscription_event;
use crate::shell::Master;
use crate::store::Subscription;
use plinth_scheduler::Event;

/// `GET /v2/events[?event_type=...]`: `event_stream_attached` first, then every event
/// of Marathon's types published after the client attached (Marathon clients stop at a
/// type they do not know; Plinth's own events are on `/v1/events`).
pub async fn stream(
    State(master): State<Arc<Master>>,
    params: Params,
    client: ClientAddr,
    request: Request,
) -> Response {
    open(&master, &params, client, &request, true)
}

/// On etcd the stream follows the lead (`event_relay.rs`), unless a follower opened it:
/// that follower's relay moves on by itself.
fn open(master: &Arc<Master>, params: &Params, client: ClientAddr, request: &Request, marathon_only: bool) -> Response {
    let selection = Selection::of(params, marathon_only);
    if master.etcd.is_some() && !request.headers().contains_key(crate::role::VIA) {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let remote = client.0.map(|a| a.to_string()).unwrap_or_default();
        return super::event_relay::lead(master, request.headers(), path, selection, remote);
    }
    attach(master, selection, client).into_response()
}

/// `GET /v1/events[?event_type=...]`: like `/v2/events`, with Plinth's own events
/// (`image_pull_*`, `agent_lost_event`).
pub async fn stream_all(
    State(master): State<Arc<Master>>,
    params: Params,
    client: ClientAddr,
    request: Request,
) -> Response {
    open(&master, &params, client, &request, false)
}

fn attach(
    master: &Master,
    selection: Selection,
    client: ClientAddr,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before answering so nothing published after attach is missed.
    let receiver = master.events.subscribe();
    let remote = client.0.map(|a| a.to_string()).unwrap_or_default();
    let attached = Event::of(Timestamp::now(), &EventStreamAttached { remote_address: remote.clone() });
    tracing::debug!(remote_address = %remote, marathon_only = selection.marathon_only, "event stream attached");
    let first = futures::stream::iter([Ok(sse(&attached))]);
    let events = BroadcastStream::new(receiver).filter_map(move |item| {
        let out = match item {
            Ok(event) if selection.passes(&event) => Some(Ok(sse(&event))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "an event stream client is too slow; events skipped");
                None
            }
        };
        futures::future::ready(out)
    });
    Sse::new(first.chain(events)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn callback_url(params: &Params) -> Result<String, ApiError> {
    let url = params
        .get("callbackUrl")
        .ok_or_else(|| ApiError::BadRequest("query parameter 'callbackUrl' is required".into()))?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::BadRequest(format!("callbackUrl '{url}' is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::BadRequest(format!(
            "callbackUrl '{url}' must be an http:// or https:// URL with a host"
        )));
    }
    Ok(url.to_string())
}

/// `POST /v2/eventSubscriptions?callbackUrl=URL`.
pub async fn subscribe(
    State(master): State<Arc<Master>>,
    params: Params,
    client: ClientAddr,
) -> Result<Response, ApiError> {
    let url = callback_url(&params)?;
    master.callbacks.check(&url).map_err(ApiError::Forbidden)?;
    let sub = Subscription { callback_url: url.clone(), client_ip: client.ip(), created_at: Timestamp::now().to_iso() };
    let store = master.store().clone();
    let to_write = sub.clone();
    tokio::task::spawn_blocking(move || store.put_subscription(&to_write))
        .await
        .map_err(|e| ApiError::Internal(format!("storing the subscription failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("storing the subscription failed: {e}")))?;
    master.callbacks.add(&url);
    let event = subscription_event("subscribe_event", &url, client.ip().as_deref(), Timestamp::now());
    let body = event.payload.clone();
    master.publish(event);
    Ok(Json(body).into_response())
}

/// `GET /v2/eventSubscriptions`.
pub async fn list_subscriptions(State(master): State<Arc<Master>>) -> Json<EventSubscriptions> {
    Json(EventSubscriptions { callback_urls: master.callbacks.urls() })
}

/// `DELETE /v2/eventSubscriptions?callbackUrl=URL`.
pub async fn unsubscribe(
    State(master): State<Arc<Master>>,
    params: Params,
    client: ClientAddr,
) -> Result<Response, ApiError> {
    let url = params
        .get("callbackUrl")
        .ok_or_else(|| ApiError::BadRequest("query parameter 'callbackUrl' is required".into()))?
        .to_string();
    let store = master.store().clone();
    let target = url.clone();
    let existed = tokio::task::spawn_blocking(move || store.delete_subscription(&target))
        .await
        .map_err(|e| ApiError::Internal(format!("removing the subscription failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("removing the subscription failed: {e}")))?;
    let running = master.callbacks.remove(&url);
    if !existed && !running {
        return Err(ApiError::NotFound(format!("Callback URL '{url}' is not subscribed")));
    }
    let event = subscription_event("unsubscribe_event", &url, client.ip().as_deref(), Timestamp::now());
    let body = event.payload.clone();
    master.publish(event);
    Ok(Json(body).into_response())
}
