//! Which master leads, with `--etcd`: every master campaigns on `{prefix}/leader` with
//! etcd's election API under a lease of `--leader-lease-secs` (3 s) kept alive every
//! third of it. The winner sets its [`Fence`] on the store (every write it makes then
//! holds only while its leader key lives), loads the state and acts; it stops at once
//! when its lease may have ended (no keep-alive answered within the TTL, measured from
//! when the last answered one was sent, so never later than etcd ends it), when a write
//! is refused, or on `DELETE /v2/leader`. Followers keep the core empty and proxy every
//! API request to the leader ([`follow_leader`], Marathon's `X-Marathon-Leader` /
//! `X-Marathon-Via`; over HTTPS with this master's certificate when there is a cluster CA,
//! whose agents are sent to the leader instead), or answer 503 while no one leads. On
//! redb the master is [`Role::Single`].
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use plinth_protocol::Timestamp;
use plinth_scheduler::Event;

use crate::error::ApiError;
use crate::shell::Master;
use crate::store::Fence;

/// Who leads, as this master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// redb: the only master, always leading.
    Single,
    /// Won the election; its lease is alive.
    Leading,
    /// Another master leads (its URL), or no one does yet.
    Following(Option<String>),
}

impl Role {
    pub fn leads(&self) -> bool {
        matches!(self, Role::Single | Role::Leading)
    }
}

pub const VIA: &str = "x-marathon-via";
pub const LEADER: &str = "x-marathon-leader";

/// The 503 of a request that needs the leader when this master is not it.
pub fn not_leading(role: &Role) -> ApiError {
    match role {
        Role::Following(Some(leader)) => {
            ApiError::Unavailable(format!("this master is not the leader ({leader} is); retry there or here"))
        }
        _ => ApiError::Unavailable(
            "no master is the leader at the moment (an election is under way, or etcd cannot be reached); \
             retry in a few seconds"
                .into(),
        ),
    }
}

/// `host:port` of a master's URL.
pub fn address_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/')
}

pub fn leader_event(event_type: &str, url: &str) -> Event {
    Event::new(event_type, Timestamp::now(), serde_json::json!({ "leader": address_of(url) }))
}

/// Starts campaigning (for as long as the master lives) and following who leads.
pub fn spawn(master: &Arc<Master>) {
    let campaigner = master.clone();
    tokio::spawn(async move {
        // A lease this master could not revoke (etcd was away): revoked when it is back,
        // so its stale leader key does not hold up the next election for a whole TTL.
        let mut stale = None;
        loop {
            if let Err(e) = term(&campaigner, &mut stale).await {
                tracing::warn!(error = %plinth_protocol::error_chain(&e), "leader election: retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let follower = Arc::downgrade(master);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Some(master) = follower.upgrade() else { return };
            if master.leads() {
                continue;
            }
            let Some(etcd) = master.etcd.clone() else { return };
            let seen = tokio::time::timeout(Duration::from_secs(2), async {
                let mut response = etcd.client().election_client().leader(etcd.election_name()).await.ok()?;
                let kv = response.take_kv()?;
                Some(String::from_utf8_lossy(kv.value()).into_owned())
            })
            .await
            .ok()
            .flatten()
            // Its own key outliving its lead (a lease not yet ended) names no one to follow.
            .filter(|url| *url != master.url);
            master.role.send_if_modified(|role| match role {
                Role::Following(current) if *current != seen => {
                    tracing::info!(leader = ?seen, "following");
                    *current = seen;
                    true
                }
                _ => false,
            });
        }
    });
}

/// One lease: campaign, lead until the lease may be gone or the lead is given up.
async fn term(master: &Arc<Master>, stale: &mut Option<i64>) -> Result<(), etcd_client::Error> {
    let etcd = master.etcd.clone().expect("the election runs only with etcd");
    let ttl = master.config.leader_lease;
    let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(3);
    let mut leases = etcd.client().lease_client();
    if let Some(old) = *stale {
        match leases.revoke(old).await {
            Ok(_) => *stale = None,
            // Gone already (it ran out): nothing to revoke.
            Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("not found") => *stale = None,
            Err(e) => return Err(e),
        }
    }
    let lease = leases.grant(ttl_secs, None).await?.id();
    let (mut keeper, mut answers) = leases.keep_alive(lease).await?;
    let deadline = Arc::new(Mutex::new(Instant::now() + ttl));
    let (lost_tx, mut lost) = tokio::sync::watch::channel(false);
    let watchdog_deadline = deadline.clone();
    let keep_alive = tokio::spawn(async move {
        let deadline_now = || *watchdog_deadline.lock().expect("the deadline lock is never poisoned");
        loop {
            // Neither the pause nor the wait for an answer runs past the deadline: the lead
            // ends the moment the lease may have (a partition is noticed within the TTL).
            let until = (Instant::now() + ttl / 3).min(deadline_now());
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
            let sent = Instant::now();
            if sent >= deadline_now() {
                let _ = lost_tx.send(true);
                return;
            }
            let wait = (ttl / 3).min(deadline_now().saturating_duration_since(sent));
            let answered = tokio::time::timeout(wait, async {
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            let mut deadline = watchdog_deadline.lock().expect("the deadline lock is never poisoned");
            match answered {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => *deadline = sent + ttl,
                Ok(Ok(Some(_))) => *deadline = sent,
                _ => {}
            }
            if Instant::now() >= *deadline {
                let _ = lost_tx.send(true);
                return;
            }
        }
    });
    let result = lead(master, &etcd, lease, &deadline, &mut lost).await;
    keep_alive.abort();
    if master.leads() {
        master.lose_lead("the lease ended").await;
    }
    // A lease revoked now lets another master win without waiting for its TTL.
    if !matches!(tokio::time::timeout(Duration::from_secs(1), leases.revoke(lease)).await, Ok(Ok(_))) {
        *stale = Some(lease);
    }
    result
}

async fn lead(
    master: &Arc<Master>,
    etcd: &crate::store::EtcdStore,
    lease: i64,
    deadline: &Mutex<Instant>,
    lost: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), etcd_client::Error> {
    let mut election = etcd.client().election_client();
    let leader_key = loop {
        tokio::select! {
            _ = lost.changed() => return Ok(()),
            won = election.campaign(etcd.election_name(), master.url.clone(), lease) => match won {
                Ok(mut won) => match won.take_leader() {
                    Some(key) => break key,
                    None => continue,
                },
                // The request's time limit ends a long wait (or etcd blinked): campaign
                // again on the same lease while it lives; the keep-alive says when it ends.
                Err(e) => {
                    tracing::debug!(error = %plinth_protocol::error_chain(&e), "campaigning again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    };
    etcd.set_fence(Some(Fence { key: leader_key.key().to_vec(), create_revision: leader_key.rev() }));
    if Instant::now() >= *deadline.lock().expect("the deadline lock is never poisoned") {
        return Ok(());
    }
    if let Err(e) = master.take_lead().await {
        tracing::error!(error = %plinth_protocol::error_chain(&e), "elected, but the state cannot be loaded; resigning");
        let _ = election.resign(Some(etcd_client::ResignOptions::new().with_leader(leader_key))).await;
        tokio::time::sleep(master.config.leader_lease).await;
        return Ok(());
    }
    tracing::info!(leader = %master.url, "leading");
    tokio::select! {
        _ = lost.changed() => master.lose_lead("the leader lease may have ended (no keep-alive answered in time)").await,
        () = master.abdication.notified() => {
            master.lose_lead("abdicated (DELETE /v2/leader)").await;
            let _ = election.resign(Some(etcd_client::ResignOptions::new().with_leader(leader_key))).await;
            // Let another master win before campaigning again.
            tokio::time::sleep(master.config.leader_lease).await;
        }
        () = wait_until_not_leading(master) => {}
    }
    Ok(())
}

/// Returns once this master stopped leading for another reason (a refused write).
async fn wait_until_not_leading(master: &Master) {
    let mut role = master.role.subscribe();
    while role.borrow_and_update().leads() {
        if role.changed().await.is_err() {
            return;
        }
    }
}

/// `GET /v1/masters`: the masters campaigning (the first by create revision leads), the
/// lease, and etcd's members with the one leading them.
pub async fn masters(State(master): State<Arc<Master>>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Some(etcd) = master.etcd.clone() else {
        return Ok(axum::Json(serde_json::json!({
            "store": "redb",
            "leader": master.leader,
            "masters": [{"address": master.leader, "leader": true}],
        })));
    };
    let unavailable = |e: etcd_client::Error| ApiError::Unavailable(format!("etcd did not answer: {e}"));
    let read = async {
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_sort(etcd_client::SortTarget::Create, etcd_client::SortOrder::Ascend);
        let campaigns = etcd.client().kv_client().get(format!("{}/", etcd.election_name()), Some(options)).await?;
        let members = etcd.client().cluster_client().member_list().await?;
        let status = etcd.client().maintenance_client().status().await?;
        Ok::<_, etcd_client::Error>((campaigns, members, status))
    };
    let (campaigns, members, status) = tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .map_err(|_| ApiError::Unavailable("etcd did not answer within 3 s".into()))?
        .map_err(unavailable)?;
    let masters: Vec<serde_json::Value> = campaigns
        .kvs()
        .iter()
        .enumerate()
        .map(|(n, kv)| {
            let url = String::from_utf8_lossy(kv.value());
            serde_json::json!({"address": address_of(&url), "leader": n == 0, "lease": format!("{:x}", kv.lease())})
        })
        .collect();
    let members: Vec<serde_json::Value> = members
        .members()
        .iter()
        .map(|m| {
            serde_json::json!({"name": m.name(), "id": format!("{:x}", m.id()), "clientUrls": m.client_urls(),
                "leader": m.id() == status.leader()})
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "store": "etcd",
        "prefix": etcd.prefix(),
        "leader": masters.first().and_then(|m| m.get("address")).cloned(),
        "leaseTtlSeconds": master.config.leader_lease.as_secs(),
        "masters": masters,
        "etcd": {"version": status.version(), "members": members},
    })))
}

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

/// Requests a follower answers itself: liveness and who leads.
fn answered_here(request: &Request) -> bool {
    let path = request.uri().path();
    path == "/ping" || (path == "/v2/leader" && request.method() == axum::http::Method::GET)
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
            if crate::api::event_relay::is_event_stream(&request) {
                return crate::api::event_relay::follow(&master, &leader, request).await;
            }
            proxy(&master, &leader, request).await.unwrap_or_else(IntoResponse::into_response)
        }
        role => not_leading(&role).into_response(),
    }
}

/// A 503 naming the leader in `X-Marathon-Leader`, which agents then ask directly.
fn to_the_leader(leader: &str) -> Response {
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

async fn proxy(master: &Master, leader: &str, request: Request) -> Result<Response, ApiError> {
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
