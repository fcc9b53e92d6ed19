//! The outermost layer of the API on masters on etcd: a follower answers liveness and
//! who leads itself, relays event streams (`event_relay.rs`), sends agents with a
//! certificate to the leader, and proxies everything else (`leader_proxy.rs`); with no
//! leader it answers 503.
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::event_relay;
use crate::leader_proxy::{proxy, to_the_leader};
use crate::role::{not_leading, Role, VIA};
use crate::shell::Master;

/// Requests a follower answers itself: liveness and who leads.
fn answered_here(request: &Request) -> bool {
    let path = request.uri().path();
    path == "/ping" || (path == "/v2/leader" && request.method() == axum::http::Method::GET)
}

/// The outermost layer of the API: on a follower, every request goes to the leader.
pub async fn follow_leader(State(master): State<Arc<Master>>, request: Request, next: Next) -> Response {
    let role = master.role.borrow().clone();
    if role.leads() || answered_here(&request) {
        return next.run(request).await;
    }
    match role {
        // A request another master already proxied is not sent on again (no loops).
        Role::Following(Some(leader)) if !request.headers().contains_key(VIA) => {
            // The agent protocol admits an agent by its connection's certificate, which a
            // proxy cannot pass on: the agent is sent to the leader.
            if master.identity.is_some() && request.uri().path().starts_with("/agent/") {
                return to_the_leader(&leader);
            }
            if event_relay::is_event_stream(&request) {
                return event_relay::follow(&master, &leader, request).await;
            }
            proxy(&master, &leader, request).await.unwrap_or_else(IntoResponse::into_response)
        }
        role => not_leading(&role).into_response(),
    }
}
