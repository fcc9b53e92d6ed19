//! Requests a follower sends on to the leader: Marathon's `X-Marathon-Via` on the way
//! there, `X-Marathon-Leader` on the answer, hop-by-hop headers dropped; over HTTPS with
//! this master's certificate when there is a cluster CA. The middleware that decides what
//! goes to the leader is `api/follow_leader.rs`; event streams use these pieces too
//! (`api/event_relay.rs`).
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use crate::error::ApiError;
use crate::role::{Role, LEADER, VIA};
use crate::shell::Master;

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // No total time limit: long polls and event streams pass through.
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .expect("the proxy's HTTP client builds")
    })
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A 503 naming the leader in `X-Marathon-Leader`, which agents then ask directly.
pub(crate) fn to_the_leader(leader: &str) -> Response {
    let message =
        format!("this master is not the leader; agents with a certificate speak to the leader ({leader}) directly");
    let mut response = ApiError::Unavailable(message).into_response();
    if let Ok(value) = HeaderValue::from_str(leader) {
        response.headers_mut().insert(HeaderName::from_static(LEADER), value);
    }
    response
}

/// A request to the leader carrying the client's headers (but hop-by-hop ones) and this
/// master's `X-Marathon-Via`.
pub fn forward(
    master: &Master,
    method: reqwest::Method,
    url: &str,
    headers: &axum::http::HeaderMap,
) -> reqwest::RequestBuilder {
    // An HTTPS leader of a cluster CA: trusted by that CA, and shown this master's certificate.
    let http = match &master.identity {
        Some(identity) if url.starts_with("https://") => &identity.agent_client,
        _ => client(),
    };
    let mut outgoing = http.request(method, url);
    for (name, value) in headers {
        if name != axum::http::header::HOST && !HOP_BY_HOP.contains(&name.as_str()) {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing.header(VIA, via(master))
}

fn via(master: &Master) -> String {
    format!("1.1 {}", master.leader)
}

pub(crate) async fn proxy(master: &Master, leader: &str, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", leader.trim_end_matches('/'));
    let outgoing = forward(master, parts.method.clone(), &url, &parts.headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    // A leader that goes silent (partitioned, paused) holds a proxied request only until
    // this master sees it no longer leads.
    let mut role = master.role.subscribe();
    let answer = tokio::select! {
        answer = outgoing.send() => answer.map_err(|e| {
            ApiError::Unavailable(format!("the leader {leader} did not answer: {}; retry in a few seconds", error_text(&e)))
        })?,
        () = until_not_following(&mut role, leader) => return Err(ApiError::Unavailable(format!(
            "the leader {leader} stopped leading before it answered (the request may or may not have been carried out); \
             check, then retry in a few seconds"
        ))),
    };
    Ok(relay_answer(master, leader, answer))
}

/// The leader's answer as this master's, with `X-Marathon-Leader` and `X-Marathon-Via`.
pub fn relay_answer(master: &Master, leader: &str, answer: reqwest::Response) -> Response {
    let via = via(master);
    let mut response = Response::builder().status(answer.status().as_u16());
    if let Some(headers) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                headers.append(name, value.clone());
            }
        }
        if let Ok(value) = HeaderValue::from_str(leader) {
            headers.insert(HeaderName::from_static(LEADER), value);
        }
        if let Ok(value) = HeaderValue::from_str(&via) {
            headers.insert(HeaderName::from_static(VIA), value);
        }
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_else(|e| ApiError::Internal(format!("cannot relay the leader's answer: {e}")).into_response())
}

/// Returns once this master no longer names `leader` as the leader.
pub async fn until_not_following(role: &mut tokio::sync::watch::Receiver<Role>, leader: &str) {
    loop {
        if !matches!(&*role.borrow_and_update(), Role::Following(Some(current)) if current == leader) {
            return;
        }
        if role.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn error_text(e: &reqwest::Error) -> String {
    plinth_protocol::error_chain(e).to_string()
}
