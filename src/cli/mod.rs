//! Client commands: talk to a master's Marathon API (and to agents for logs) and show the
//! answers as aligned tables, or as the raw JSON with `--json` for scripts.
//!
//! This file holds the command line (clap types) and the dispatch; each command group
//! has its own module (`app`, `task`, `logs`, `node`, `queue`, `lb` (agents' balancers); `image` for the master
//! registry's images, which `plinth image` shares with `image build`), `master` is the API
//! client, `agent` finds and calls the agent that runs a task, `render` shows answers,
//! `progress` draws image pulls while a deployment is waited for, `credentials` finds the
//! client's credentials for the master.
use clap::{Args, Subcommand};
use std::time::Duration;

mod agent;
mod app;
mod credentials;
mod image;
mod lb;
mod logs;
mod master;
mod node;
mod progress;
mod queue;
mod render;
mod task;

pub use image::ImageRegistryCommand;
use master::MasterClient;

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The master's URL; with HA masters, several, comma-separated (the first that answers).
    #[arg(long, global = true, env = "PLINTH_MASTER", default_value = "http://127.0.0.1:8080")]
    master: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true, env = "PLINTH_JSON")]
    json: bool,
    /// Credentials for the master (HTTP Basic); USER alone takes the password from PLINTH_PASSWORD.
    #[arg(long, global = true, env = "PLINTH_USER", hide_env_values = true, value_name = "USER:PASSWORD")]
    user: Option<String>,
    /// File whose first line is a bearer token for the master (PLINTH_API_TOKEN: the token itself).
    #[arg(long, global = true, env = "PLINTH_API_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
    /// PEM CA certificate(s) to trust for an https:// master.
    #[arg(long, global = true, env = "PLINTH_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
}

impl ClientArgs {
    /// `--master` and `--json` given before the command win over the environment, as
    /// the flags after it do.
    fn apply_globals(&mut self, master: Option<String>, json: bool) {
        if let Some(master) = master {
            self.master = master;
        }
        self.json |= json;
    }
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Deploy, list, inspect, scale, restart and destroy apps.
    App {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: AppCommand,
    },
    /// List and kill tasks.
    Task {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: TaskCommand,
    },
    /// Print a task's stdout (or stderr), optionally following it.
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        /// The task id (as shown by `plinth task list`).
        task: String,
        /// Keep printing as the task writes.
        #[arg(short, long)]
        follow: bool,
        /// Show stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// Show the agents the master knows.
    Node {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: NodeCommand,
    },
    /// Show apps waiting for resources and why offers were declined.
    Queue {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The agents' service balancers.
    Lb {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: LbCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum LbCommand {
    /// Each agent's frontends (service ports) and backends with their counters.
    Status {
        /// Only this agent (id or hostname); default: every active agent.
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app from a Marathon JSON file (`-` reads stdin).
    Deploy {
        file: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List apps with their task counts.
    List,
    /// Show one app and its tasks.
    Show { id: String },
    /// Print `host:port` of every port of the app's running tasks, one per line.
    Endpoints { id: String },
    /// Wait until all of the app's instances run and no deployment holds it.
    Wait {
        id: String,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Set the number of instances.
    Scale {
        id: String,
        instances: u32,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Replace all tasks of an app with fresh ones.
    Restart {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Stop all tasks of an app and delete it.
    Destroy {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until the deployment has finished.
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Override a deployment that holds the app.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List running tasks, of all apps or of one.
    List { app: Option<String> },
    /// Kill tasks; they are replaced unless `--scale` lowers the app's instances.
    Kill {
        /// Task ids (as `plinth task list` shows them).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Lower the app's instances by the killed tasks instead of replacing them.
        #[arg(long)]
        scale: bool,
    },
    /// Everything about one task: container, image digest, pid, address, ports, cgroup.
    Inspect { id: String },
    /// The task's processes (everything in its cgroup).
    Top { id: String },
    /// CPU and memory use from the task's cgroup.
    Stats { id: String },
    /// Print `host:port` of each of the task's ports, one per line (as `docker port`).
    Port { id: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List agents with their resources.
    List,
    /// Place no new tasks on a node and move its tasks elsewhere (within each app's upgrade strategy).
    Drain {
        /// Agent id or hostname.
        node: String,
        /// Return at once instead of waiting until the node is drained.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Wait until at least COUNT agents are registered and active (nodes that are booting).
    Wait {
        count: usize,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Shut a (drained) node down: the master asks the node's PID 1 (node API).
    Poweroff {
        node: String,
        /// Also when tasks still run there.
        #[arg(long)]
        force: bool,
    },
    /// Machine profiles for PXE boot: role, hostname, attributes per MAC.
    Profile {
        #[command(subcommand)]
        cmd: node::ProfileCommand,
    },
}

impl ClientCommand {
    /// Applies `--master` and `--json` given before the command (`plinth --master URL app
    /// list`); they win over the environment as the flags after the command do.
    pub fn with_globals(mut self, master: Option<String>, json: bool) -> Self {
        let client = match &mut self {
            ClientCommand::App { client, .. }
            | ClientCommand::Task { client, .. }
            | ClientCommand::Logs { client, .. }
            | ClientCommand::Node { client, .. }
            | ClientCommand::Queue { client }
            | ClientCommand::Lb { client, .. } => client,
        };
        client.apply_globals(master, json);
        self
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ClientCommand::App { client, cmd } => app::run(MasterClient::new(&client)?, client.json, cmd).await,
            ClientCommand::Task { client, cmd } => task::run(MasterClient::new(&client)?, client.json, cmd).await,
            ClientCommand::Logs { client, task, follow, stderr } => {
                logs::run(MasterClient::new(&client)?, &task, follow, stderr).await
            }
            ClientCommand::Node { client, cmd: NodeCommand::List } => {
                node::list(&MasterClient::new(&client)?, client.json).await
            }
            ClientCommand::Node { client, cmd: NodeCommand::Wait { count, timeout_secs } } => {
                node::wait(&MasterClient::new(&client)?, count, timeout_secs).await
            }
            ClientCommand::Node { client, cmd: NodeCommand::Drain { node, no_wait, timeout_secs } } => {
                node::drain(
                    &MasterClient::new(&client)?,
                    client.json,
                    &node,
                    !no_wait,
                    Duration::from_secs(timeout_secs),
                )
                .await
            }
            ClientCommand::Node { client, cmd: NodeCommand::Poweroff { node, force } } => {
                node::poweroff(&MasterClient::new(&client)?, &node, force).await
            }
            ClientCommand::Node { client, cmd: NodeCommand::Profile { cmd } } => {
                node::profile(&MasterClient::new(&client)?, client.json, cmd).await
            }
            ClientCommand::Queue { client } => queue::show(&MasterClient::new(&client)?, client.json).await,
            ClientCommand::Lb { client, cmd: LbCommand::Status { agent } } => {
                lb::status(&MasterClient::new(&client)?, client.json, agent.as_deref()).await
            }
        }
    }
}
