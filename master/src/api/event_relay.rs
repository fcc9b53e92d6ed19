//! `/v2/events` and `/v1/events` on masters on etcd: one stream that follows the lead, so
//! a client keeps its connection across failovers. While this master leads it serves its
//! own bus; while another leads it relays that leader's stream, and when the leader
//! changes (or its stream breaks) it attaches to the next one behind the client's back.
//! The client gets one `event_stream_attached`, the first; a leader's events reach it
//! once, and those published while no leader could be reached are not replayed.
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use plinth_protocol::views::events::EventStreamAttached;
use plinth_protocol::Timestamp;
use plinth_scheduler::Event;

use super::event_selection::{sse, Selection};
use super::{ClientAddr, Params};
use crate::error::ApiError;
use crate::leader_proxy;
use crate::role::{Role, LEADER};
use crate::shell::Master;

const ATTACHED: &str = "event_stream_attached";
/// Between attempts to reach a leader that does not answer.
const RETRY: Duration = Duration::from_millis(500);

/// Whether the request opens an event stream (a relay follows the lead for it).
pub fn is_event_stream(request: &Request) -> bool {
    request.method() == axum::http::Method::GET && matches!(request.uri().path(), "/v2/events" | "/v1/events")
}

/// What a relay needs to attach to any leader: the path and query, and the client's headers.
#[derive(Clone)]
struct Upstream {
    path_and_query: String,
    headers: HeaderMap,
}

struct Relay {
    master: Weak<Master>,
    upstream: Upstream,
    selection: Selection,
    remote: String,
    out: mpsc::Sender<SseEvent>,
    /// The client has had its `event_stream_attached`.
    attached: bool,
}

/// A stream opened on the leader: its own bus for as long as it leads, then the next leader's.
pub(crate) fn lead(
    master: &Arc<Master>,
    request_headers: &HeaderMap,
    path_and_query: &str,
    selection: Selection,
    remote: String,
) -> Response {
    let (out, events) = mpsc::channel(256);
    let relay = Relay {
        master: Arc::downgrade(master),
        upstream: Upstream { path_and_query: path_and_query.to_string(), headers: request_headers.clone() },
        selection,
        remote,
        out,
        attached: false,
    };
    let role = master.role.subscribe();
    tokio::spawn(relay.run(role, None));
    respond(events)
}

/// A stream opened on a follower: the leader's, relayed; its refusal (a 401, say) as it is.
pub async fn follow(master: &Arc<Master>, leader_url: &str, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let params = match Params::from_request_parts(&mut parts, &()).await {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    let remote = ClientAddr::from_request_parts(&mut parts, &()).await.map(|c| c.0).ok().flatten();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let selection = Selection::of(&params, parts.uri.path() == "/v2/events");
    let upstream = Upstream { path_and_query, headers: parts.headers };
    let role = master.role.subscribe();
    let first = match connect(master, leader_url, &upstream).await {
        Ok(answer) if answer.status() == reqwest::StatusCode::OK => answer,
        Ok(answer) => return leader_proxy::relay_answer(master, leader_url, answer),
        Err(e) => return e.into_response(),
    };
    let (out, events) = mpsc::channel(256);
    let relay = Relay {
        master: Arc::downgrade(master),
        upstream,
        selection,
        remote: remote.map(|a| a.to_string()).unwrap_or_default(),
        out,
        attached: false,
    };
    tokio::spawn(relay.run(role, Some((leader_url.to_string(), first))));
    let mut response = respond(events);
    if let Ok(value) = HeaderValue::from_str(leader_url) {
        response.headers_mut().insert(HeaderName::from_static(LEADER), value);
    }
    response
}

fn respond(events: mpsc::Receiver<SseEvent>) -> Response {
    let stream = ReceiverStream::new(events).map(Ok::<_, Infallible>);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

async fn connect(master: &Master, leader_url: &str, upstream: &Upstream) -> Result<reqwest::Response, ApiError> {
    let url = format!("{}{}", leader_url.trim_end_matches('/'), upstream.path_and_query);
    let request = leader_proxy::forward(master, reqwest::Method::GET, &url, &upstream.headers);
    request.send().await.map_err(|e| {
        ApiError::Unavailable(format!(
            "the leader {leader_url} did not answer: {}; retry in a few seconds",
            plinth_protocol::error_chain(&e)
        ))
    })
}

/// Why a phase of the relay ended.
enum Next {
    /// Look at who leads now and attach there.
    Reattach,
    /// The client went away (or the master did): stop.
    Stop,
}

impl Relay {
    async fn run(mut self, mut role: watch::Receiver<Role>, mut first: Option<(String, reqwest::Response)>) {
        loop {
            let next = if let Some((leader_url, answer)) = first.take() {
                self.relay_from(&leader_url, answer, &mut role).await
            } else {
                let current = role.borrow_and_update().clone();
                match current {
                    Role::Single | Role::Leading => self.serve_own(&mut role).await,
                    Role::Following(Some(leader_url)) => match self.attach(&leader_url).await {
                        Some(answer) => {
                            first = Some((leader_url, answer));
                            Next::Reattach
                        }
                        None => self.pause(&mut role, RETRY).await,
                    },
                    Role::Following(None) => self.pause(&mut role, Duration::MAX).await,
                }
            };
            if matches!(next, Next::Stop) {
                return;
            }
        }
    }

    async fn attach(&self, leader_url: &str) -> Option<reqwest::Response> {
        let master = self.master.upgrade()?;
        match connect(&master, leader_url, &self.upstream).await {
            Ok(answer) if answer.status() == reqwest::StatusCode::OK => Some(answer),
            Ok(answer) => {
                tracing::debug!(
                    leader = leader_url,
                    status = answer.status().as_u16(),
                    "event stream: the leader refused; retrying"
                );
                None
            }
            Err(e) => {
                tracing::debug!(leader = leader_url, error = %plinth_protocol::error_chain(&e), "event stream: retrying");
                None
            }
        }
    }

    /// Waits for a change of leader (or `limit`), unless the client leaves first.
    async fn pause(&self, role: &mut watch::Receiver<Role>, limit: Duration) -> Next {
        tokio::select! {
            () = tokio::time::sleep(limit.min(Duration::from_secs(3600))) => Next::Reattach,
            changed = role.changed() => if changed.is_ok() { Next::Reattach } else { Next::Stop },
            () = self.out.closed() => Next::Stop,
        }
    }

    async fn send(&mut self, event: SseEvent) -> Next {
        match self.out.send(event).await {
            Ok(()) => Next::Reattach,
            Err(_) => Next::Stop,
        }
    }

    /// This master's own events, for as long as it leads.
    async fn serve_own(&mut self, role: &mut watch::Receiver<Role>) -> Next {
        let Some(master) = self.master.upgrade() else { return Next::Stop };
        let mut bus = master.events.subscribe();
        drop(master);
        if !self.attached {
            self.attached = true;
            let attached = Event::of(Timestamp::now(), &EventStreamAttached { remote_address: self.remote.clone() });
            if let Next::Stop = self.send(sse(&attached)).await {
                return Next::Stop;
            }
        }
        loop {
            tokio::select! {
                received = bus.recv() => match received {
                    Ok(event) if self.selection.passes(&event) => {
                        if let Next::Stop = self.send(sse(&event)).await {
                            return Next::Stop;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::warn!(skipped, "an event stream client is too slow; events skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Next::Stop,
                },
                changed = role.changed() => {
                    if changed.is_err() {
                        return Next::Stop;
                    }
                    if !role.borrow_and_update().leads() {
                        return Next::Reattach;
                    }
                }
                () = self.out.closed() => return Next::Stop,
            }
        }
    }

    /// The leader's events, until its stream ends or another master leads.
    async fn relay_from(
        &mut self,
        leader_url: &str,
        answer: reqwest::Response,
        role: &mut watch::Receiver<Role>,
    ) -> Next {
        let mut events = answer.bytes_stream().eventsource();
        let mut watching = role.clone();
        loop {
            tokio::select! {
                item = events.next() => match item {
                    Some(Ok(event)) => {
                        // Each leader greets; the client was greeted once already.
                        let greeting = event.event == ATTACHED;
                        if greeting && self.attached {
                            continue;
                        }
                        self.attached |= greeting;
                        let relayed = SseEvent::default().event(event.event).data(event.data);
                        if let Next::Stop = self.send(relayed).await {
                            return Next::Stop;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(leader = leader_url, error = %e, "event stream from the leader broke; attaching again");
                        return Next::Reattach;
                    }
                    None => return Next::Reattach,
                },
                () = leader_proxy::until_not_following(&mut watching, leader_url) => return Next::Reattach,
                () = self.out.closed() => return Next::Stop,
            }
        }
    }
}
