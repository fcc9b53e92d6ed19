//! The agent's start-up (its composition root): loads the checkpoint and the agent id,
//! settles the join token and, with a cluster CA, the node's certificate (`join.rs`), builds the [`Node`], re-adopts the tasks it still runs, spawns the loops (tasks,
//! status outbox, health checks, image collection, the DNS server), serves the API and talks to the
//! master until the process stops.
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::info;

use crate::client::MasterClient;
use crate::config::{AgentConfig, AgentOptions};
use crate::error::AgentError;
use crate::master_link::{self, read_agent_id};
use crate::node::{blocking, Node, TASKS_DIR};
use crate::resources::detect_resources;
use crate::runtime::{self, TaskRuntime};
use crate::state::NodeState;
use crate::{api, checks, fsutil, join};

/// Runs the agent with command tasks (each under `plinth executor`) until the process
/// is stopped. Tunables come from the environment (see [`AgentOptions::from_env`]).
/// Stopping the agent never stops its tasks: a restarted agent re-adopts them from the
/// checkpoint.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let runtime = Arc::new(runtime::ProcessRuntime::new(runtime::ExecutorCommand::plinth_binary()));
    run_with(config, runtime, AgentOptions::from_env()).await
}

/// Runs the agent with the given runtime until the process is stopped or the API server
/// fails. Dropping the future stops the agent but not its tasks.
pub async fn run_with(
    config: AgentConfig,
    runtime: Arc<dyn TaskRuntime>,
    options: AgentOptions,
) -> Result<(), AgentError> {
    fsutil::create_dir_all(&config.work_dir.join(TASKS_DIR))?;
    let state = NodeState::load(&config.work_dir)?;
    let agent_id = read_agent_id(&config.work_dir)?;
    // A PXE-booted agent's first start waits here for its bootstrap token's exchange.
    let token = join::resolve(&config, options.max_backoff).await?;
    let advertise_ip = match config.advertise_ip {
        Some(ip) => ip,
        None => {
            MasterClient::new(&config.master, None, config.ca_file.as_deref(), None)?
                .local_address_towards_master()
                .await
        }
    };
    // With a cluster CA the master takes the certificate instead of the token; the token
    // still goes along (when the agent has one) for a master that dropped its CA.
    let identity = join::identity(&config, token.as_ref(), advertise_ip, options.max_backoff).await?;
    let client = MasterClient::new(&config.master, token, config.ca_file.as_deref(), identity.as_ref())?;
    let resources = config.resources.clone().unwrap_or_else(|| detect_resources(&config.work_dir));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind { addr: config.listen, source })?;
    let runtime_name = runtime.name();
    let node = Arc::new(Node::new(config, options, resources, advertise_ip, runtime, state, agent_id));
    info!(
        node_id = %node.node_id(), runtime = runtime_name, resources = %node.resources,
        advertise_ip = %node.advertise_ip, certificate = identity.is_some(), "agent starting"
    );
    let recovering = node.clone();
    blocking(move || recovering.recover()).await;

    let router = api::router(node.clone());
    let mut background = vec![];
    let tls = match &identity {
        Some(identity) => {
            let (server, served) = identity.server_config()?;
            let renewal =
                join::renewal_loop(node.config.clone(), identity.clone(), advertise_ip, client.clone(), served);
            background.push(tokio::spawn(renewal));
            Some(server)
        }
        None => None,
    };
    let api = async {
        match tls {
            None => axum::serve(listener, router).await,
            Some(server) => {
                let listener = plinth_oci::tls::TlsListener::new(listener, server)
                    .map_err(|source| AgentError::Serve { source })?;
                axum::serve(listener, router).await
            }
        }
        .map_err(|source| AgentError::Serve { source })
    };
    let ticker = node.clone();
    background.extend([
        tokio::spawn(async move { ticker.tick_loop().await }),
        tokio::spawn(master_link::outbox_loop(node.clone(), client.clone())),
        tokio::spawn(checks::check_loop(node.clone())),
        tokio::spawn(node.clone().image_gc_loop()),
    ]);
    background.extend(crate::dns::start(node.clone(), client.clone()).await);
    let _background = AbortOnDrop(background);
    tokio::select! {
        result = api => result,
        () = master_link::master_loop(node.clone(), client) => Ok(()),
    }
}

/// Background tasks that end with the agent (when `run_with` returns or is dropped).
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}
