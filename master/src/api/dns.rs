//! DNS over HTTP: the agents' feed of the Mesos-DNS record set (`GET /agent/v1/dns`,
//! admitted like the rest of the agent protocol, long-polled) and Mesos-DNS's own HTTP
//! API (`GET /v1/hosts/{host}`, `GET /v1/services/{service}`, read role) over the
//! master's record set (`dns.rs`).
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Json, Router};

use plinth_dns::http_api::{self, HostEntry, ServiceEntry};
use plinth_dns::DnsRecords;
use plinth_protocol::AgentId;

use super::agents::{admit, check_agent_name, Refusal};
use super::{ClientAddr, Params};
use crate::error::ApiError;
use crate::shell::Master;
use crate::tls::PeerCertificate;

/// Upper bound of a long-poll, whatever the agent asks (well inside any agent timeout).
const MAX_WAIT: Duration = Duration::from_secs(25);

pub fn routes() -> Router<Arc<Master>> {
    Router::new()
        .route("/agent/v1/dns", get(feed))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
}

fn number(params: &Params, name: &str) -> Result<u64, ApiError> {
    match params.get(name) {
        None => Ok(0),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("query parameter '{name}' must be a number, got '{text}'"))),
    }
}

/// `GET /agent/v1/dns?agent_id=ID&after=GENERATION&wait_ms=N`: the record set, at once
/// when its generation is not `after` (a restarted master counts from 1 again), else when
/// it changes (or after `wait_ms`).
async fn feed(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    peer: Option<Extension<PeerCertificate>>,
    params: Params,
) -> Result<Json<DnsRecords>, Refusal> {
    let agent = params
        .get("agent_id")
        .filter(|id| !id.is_empty())
        .map(AgentId::new)
        .ok_or_else(|| ApiError::BadRequest("query parameter 'agent_id' is required".into()))?;
    let after = number(&params, "after")?;
    let wait = Duration::from_millis(number(&params, "wait_ms")?).min(MAX_WAIT);
    let certified = admit(&master, &headers, &client, &peer, agent.as_str())?;
    check_agent_name(&master.read().await.core, &agent, certified.as_deref())?;
    let mut records = master.dns.subscribe();
    if records.borrow_and_update().generation == after {
        let _ = tokio::time::timeout(wait, records.changed()).await;
    }
    let current = records.borrow().clone();
    Ok(Json((*current).clone()))
}

/// Mesos-DNS's `GET /v1/hosts/{host}`.
async fn hosts(State(master): State<Arc<Master>>, Path(host): Path<String>) -> Json<Vec<HostEntry>> {
    Json(http_api::hosts(&master.dns.current().records, &master.config.dns.domain, &host))
}

/// Mesos-DNS's `GET /v1/services/{service}`.
async fn services(State(master): State<Arc<Master>>, Path(service): Path<String>) -> Json<Vec<ServiceEntry>> {
    Json(http_api::services(&master.dns.current().records, &master.config.dns.domain, &service))
}
