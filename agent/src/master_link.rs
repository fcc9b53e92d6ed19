//! The agent's link to the master: register (again whenever the master asks or forgets
//! this agent), long-poll `sync` and hand each newer desired state to the [`Node`], and
//! send the status outbox until the master acknowledges each update. Tasks keep running
//! whatever happens to the master.
//!
//! The agent belongs to one cluster: the first master that accepts it names it, and the
//! checkpoint keeps its id. A master of another cluster (one that lost its store and
//! started a new, empty cluster, say) is never followed, since its desired state would kill
//! every task: the agent logs an error naming both ids and keeps trying, until the old
//! master is back or the operator starts it once with `--rejoin-cluster`.
use plinth_protocol::agent::{ClusterMismatch, Registration, StatusBatch, SyncRequest};
use plinth_protocol::{error_chain, AgentId, ClusterId, Timestamp};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

use crate::client::MasterClient;
use crate::error::AgentError;
use crate::fsutil;
use crate::node::{blocking, millis, Node};
use crate::state::AGENT_ID_FILE;

/// Status updates sent per request.
const OUTBOX_BATCH: usize = 100;

/// The agent id the master gave this agent before, if any.
pub(crate) fn read_agent_id(work_dir: &Path) -> Result<Option<AgentId>, AgentError> {
    let path = work_dir.join(AGENT_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim()).filter(|t| !t.is_empty()).map(AgentId::new)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::ReadFile { path, source }),
    }
}

/// Exponential backoff between attempts to reach the master.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Self {
        Backoff { next: Self::FIRST, max }
    }
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
    fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

fn registration(node: &Node) -> Registration {
    let state = node.lock();
    Registration {
        agent_id: node.agent_id(),
        hostname: node.config.hostname.clone(),
        advertise_ip: node.advertise_ip.to_string(),
        http_port: node.config.listen.port(),
        resources: node.resources.clone(),
        attributes: node.config.attributes.clone(),
        last_generation: state.applied_generation,
        tasks: state.live_reports(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn remember_agent_id(node: &Node, agent_id: &AgentId) {
    let path = node.config.work_dir.join(AGENT_ID_FILE);
    if node.agent_id().as_ref() != Some(agent_id) {
        if let Err(err) = fsutil::write_atomic(&path, agent_id.as_str().as_bytes()) {
            error!(node_id = %agent_id, error = %error_chain(&err), "cannot persist the agent id");
        }
    }
    node.set_agent_id(agent_id.clone());
}

/// How often a refusal to follow another cluster's master is logged again.
const MISMATCH_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Logs (at most once a minute) that the master runs another cluster than this agent's.
struct MismatchLog {
    last: Option<(ClusterId, Instant)>,
}

impl MismatchLog {
    fn refuse(&mut self, node: &Node, master: &str, ours: &ClusterId, theirs: &ClusterId) {
        let recent = self.last.as_ref().is_some_and(|(id, at)| id == theirs && at.elapsed() < MISMATCH_LOG_INTERVAL);
        if !recent {
            error!(
                node_id = %node.node_id(), cluster_id = %ours, master_cluster_id = %theirs, master = %master,
                "the master runs cluster {theirs}, this agent belongs to cluster {ours}: not following it \
                 (tasks keep running; retrying). Bring back the master of {ours}, or start the agent once with \
                 --rejoin-cluster to join {theirs} (tasks that cluster does not know are then killed)"
            );
            self.last = Some((theirs.clone(), Instant::now()));
        }
    }
}

/// The cluster a master names, when it is not this agent's.
fn foreign_cluster(client: &MasterClient, theirs: Option<&ClusterId>) -> Option<(ClusterId, ClusterId)> {
    match (client.cluster(), theirs) {
        (Some(ours), Some(theirs)) if &ours != theirs => Some((ours, theirs.clone())),
        _ => None,
    }
}

/// The first master that accepts the agent names its cluster (kept in the checkpoint).
fn adopt_cluster(node: &Node, client: &MasterClient, cluster: Option<ClusterId>) {
    let Some(cluster) = cluster else { return };
    let mut state = node.lock();
    if state.cluster_id.as_ref() != Some(&cluster) {
        info!(node_id = %node.node_id(), cluster_id = %cluster, previous_cluster_id = ?state.cluster_id,
            "this agent belongs to cluster {cluster}");
        state.cluster_id = Some(cluster.clone());
        node.save(&state);
    }
    client.set_cluster(Some(cluster));
}

/// Register, then long-poll `sync` forever; register again when the master asks or
/// forgets us. Tasks keep running whatever happens to the master.
pub(crate) async fn master_loop(node: Arc<Node>, client: MasterClient) {
    let mut backoff = Backoff::new(node.options.max_backoff);
    let mut mismatch = MismatchLog { last: None };
    // `--rejoin-cluster`: name no cluster until a master has accepted this agent.
    client.set_cluster(if node.config.rejoin_cluster { None } else { node.lock().cluster_id.clone() });
    loop {
        let registration = registration(&node);
        let registered = match client.register(&registration).await {
            Ok(registered) => registered,
            Err(AgentError::MasterStatus { status: 409, body, .. }) => {
                match (serde_json::from_str::<ClusterMismatch>(&body), client.cluster()) {
                    (Ok(refusal), Some(ours)) => mismatch.refuse(&node, client.base(), &ours, &refusal.cluster_id),
                    _ => warn!(node_id = %node.node_id(), body = %body, "the master refused the registration"),
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                warn!(node_id = %node.node_id(), error = %error_chain(&err), retry_ms = millis(delay), "cannot register with the master");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        // A master that does not check clusters itself still names its own.
        if let Some((ours, theirs)) = foreign_cluster(&client, registered.cluster_id.as_ref()) {
            mismatch.refuse(&node, client.base(), &ours, &theirs);
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        backoff.reset();
        node.contact.heard();
        adopt_cluster(&node, &client, registered.cluster_id.clone());
        remember_agent_id(&node, &registered.agent_id);
        node.wake_outbox();
        info!(
            node_id = %registered.agent_id, tasks = registration.tasks.len(),
            generation = registration.last_generation, "registered with the master"
        );
        let heartbeat = Duration::from_millis(registered.heartbeat_interval_ms.max(100));
        sync_loop(&node, &client, &registered.agent_id, heartbeat, &mut backoff).await;
    }
}

/// Returns when the agent must register again.
async fn sync_loop(
    node: &Arc<Node>,
    client: &MasterClient,
    agent_id: &AgentId,
    heartbeat: Duration,
    backoff: &mut Backoff,
) {
    let wait = node.options.sync_wait.min(heartbeat);
    // A master that answers at once must not be hammered: at most one sync per this.
    let min_interval = heartbeat.min(Duration::from_secs(1));
    loop {
        let request = {
            let state = node.lock();
            SyncRequest {
                agent_id: agent_id.clone(),
                generation: state.applied_generation,
                tasks: state.live_reports(),
                wait_ms: millis(wait),
                services_generation: node.balancer.applied_generation(),
                services_drained: node.balancer.drained_generation(),
            }
        };
        let started = Instant::now();
        let answer = tokio::select! {
            answer = client.sync(&request) => answer,
            // A drained backend: tell the master now rather than at the next poll.
            () = node.balancer.drain_progress() => continue,
        };
        match answer {
            Ok(response) if response.reregister => {
                info!(node_id = %agent_id, "the master asks this agent to register again");
                return;
            }
            Ok(response) if foreign_cluster(client, response.cluster_id.as_ref()).is_some() => {
                // Another cluster's master took this address: its desired state is not ours.
                warn!(node_id = %agent_id, master_cluster_id = ?response.cluster_id, "the master changed cluster");
                return;
            }
            Ok(response) => {
                backoff.reset();
                node.contact.heard();
                let services = response.services.is_some();
                if let Some(table) = response.services {
                    debug!(node_id = %agent_id, generation = table.generation, "service table");
                    node.balancer.apply(table);
                }
                match response.desired {
                    Some(desired) => {
                        let node = node.clone();
                        blocking(move || node.apply(desired, Timestamp::now())).await;
                    }
                    // A new table is confirmed by the next sync, at once.
                    None if services => {}
                    None => tokio::time::sleep(min_interval.saturating_sub(started.elapsed())).await,
                }
            }
            Err(AgentError::MasterStatus { status, .. })
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                warn!(node_id = %agent_id, status, "the master rejected sync; registering again");
                tokio::time::sleep(backoff.next_delay()).await;
                return;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                warn!(node_id = %agent_id, error = %error_chain(&err), retry_ms = millis(delay), "sync with the master failed; tasks keep running");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sends queued status updates, oldest first, until the master acknowledges them.
pub(crate) async fn outbox_loop(node: Arc<Node>, client: MasterClient) {
    let mut backoff = Backoff::new(node.options.max_backoff.max(Duration::from_secs(1)));
    loop {
        let pending = {
            let state = node.lock();
            state.outbox.iter().take(OUTBOX_BATCH).cloned().collect::<Vec<_>>()
        };
        let Some(agent_id) = node.agent_id().filter(|_| !pending.is_empty()) else {
            // Woken by new updates or registration; the timeout is a safety net.
            let _ = tokio::time::timeout(Duration::from_secs(1), node.outbox_woken()).await;
            continue;
        };
        let batch = StatusBatch { agent_id: agent_id.clone(), updates: pending };
        match client.status(&batch).await {
            Ok(ack) if !ack.acknowledged.is_empty() => {
                backoff.reset();
                let node = node.clone();
                blocking(move || {
                    let mut state = node.lock();
                    state.outbox.retain(|u| !ack.acknowledged.contains(&u.update_id));
                    node.save(&state);
                })
                .await;
            }
            Ok(_) => {
                let delay = backoff.next_delay();
                warn!(node_id = %agent_id, retry_ms = millis(delay), "the master acknowledged no status update");
                tokio::time::sleep(delay).await;
            }
            Err(err) => {
                let delay = backoff.next_delay();
                debug!(node_id = %agent_id, error = %error_chain(&err), retry_ms = millis(delay), "cannot send status updates");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
