//! The agent's DNS server: the master's Mesos-DNS records (long-polled from
//! `GET /agent/v1/dns`, woken by every change) served on the agent's addresses, names
//! outside the domain forwarded to the host's resolvers (`plinth_dns`). Until the first
//! answer, and while the master is away, the last records it sent keep being served.
use std::sync::Arc;
use std::time::Duration;

use plinth_dns::DnsRecords;
use plinth_protocol::error_chain;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::client::MasterClient;
use crate::node::Node;

/// How long one long-poll waits for a change.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// Pause after a failed poll (and before the agent has an id).
const RETRY: Duration = Duration::from_millis(500);

/// Starts the DNS server and the feed that keeps it current; nothing when the port is 0
/// or cannot be bound (a warning says which flag to change).
pub async fn start(node: Arc<Node>, client: MasterClient) -> Vec<tokio::task::JoinHandle<()>> {
    let settings = node.config.dns.clone();
    let (sender, receiver) = watch::channel(Arc::new(DnsRecords::default()));
    match plinth_dns::serve(&settings, receiver).await {
        Some(server) => vec![server, tokio::spawn(feed_loop(node, client, sender))],
        None => Vec::new(),
    }
}

async fn feed_loop(node: Arc<Node>, client: MasterClient, sender: watch::Sender<Arc<DnsRecords>>) {
    let mut generation = 0;
    let mut failing = false;
    loop {
        let Some(agent) = node.agent_id() else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        match client.dns(&agent, generation, POLL_WAIT).await {
            Ok(records) => {
                if failing {
                    info!("DNS records from the master again");
                    failing = false;
                }
                if records.generation != generation {
                    generation = records.generation;
                    sender.send_replace(Arc::new(records));
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %error_chain(&e), "DNS records not fetched from the master; serving the last ones");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
