//! Which master leads, with `--etcd`: every master campaigns on `{prefix}/leader` with
//! etcd's election API under a lease of `--leader-lease-secs` (3 s) kept alive every
//! third of it. The winner sets its [`Fence`] on the store (every write it makes then
//! holds only while its leader key lives), loads the state and acts; it stops at once
//! when its lease may have ended (no keep-alive answered within the TTL, measured from
//! when the last answered one was sent, so never later than etcd ends it), when a write
//! is refused, or on `DELETE /v2/leader`. Followers keep the core empty and proxy every
//! API request to the leader (`api/follow_leader.rs`), or answer 503 while no one leads.
//! On redb the master is [`Role::Single`]. `GET /v1/masters` is here too.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;

use crate::error::ApiError;
use crate::role::{address_of, Role};
use crate::shell::Master;
use crate::store::Fence;

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
