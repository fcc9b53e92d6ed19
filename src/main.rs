//! `plinth`: one binary for the whole node OS and cluster. Run as PID 1 it is the init;
//! otherwise the subcommand picks the role (`master`, `agent`, `standalone`), a client
//! command against the master's API (`app`, `task`, `logs`, `node`, `queue`), image
//! building (`image`) or a benchmark (`bench`).
mod cli;
mod os;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use plinth_protocol::{Attributes, ProtocolError, Resources};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "plinth", version, about = "Plinth: bare-metal node OS and cluster manager")]
struct Cli {
    /// Log output format (the filter comes from RUST_LOG, e.g. `info,plinth_master=debug`).
    #[arg(long, global = true, env = "PLINTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The master's URL, for the client commands (also accepted after the command).
    #[arg(long = "master", value_name = "URL")]
    master: Option<String>,
    /// Print the API's JSON instead of a table (client commands; also after the command).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master: scheduler, Marathon v2 API, durable state.
    Master(MasterCommand),
    /// Run an agent that joins a master and runs tasks.
    Agent(AgentCommand),
    /// Run a master and an agent in one process: a one-box cluster.
    Standalone(StandaloneCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Build boot images (kernel + initramfs, disk, ISO, Vagrant box).
    Image {
        #[command(subcommand)]
        cmd: os::ImageCommand,
    },
    /// Benchmarks, side by side with the alternatives (BENCHMARKS.md).
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        cmd: plinth_bench::BenchCommand,
    },
    /// Benchmarks: not in this build (`cargo build --release --features bench`).
    #[cfg(not(feature = "bench"))]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Internal: supervises one task on an agent (started by the agent itself).
    #[command(hide = true)]
    Executor {
        #[arg(long)]
        spec: PathBuf,
    },
}

/// Flags the master and the agent both take.
#[derive(Debug, Args)]
struct NodeArgs {
    /// Join token: the master requires it from agents, agents present it.
    #[arg(long, env = "PLINTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Name this node reports (default: the kernel's hostname).
    #[arg(long, env = "PLINTH_HOSTNAME")]
    hostname: Option<String>,
}

#[derive(Debug, Args)]
struct MasterArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "PLINTH_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Where the durable state lives.
    #[arg(long, env = "PLINTH_DATA_DIR", default_value = "/var/lib/plinth/master")]
    data_dir: PathBuf,
    /// Seconds without heartbeats after which an agent is lost and its tasks replaced.
    #[arg(long, env = "PLINTH_AGENT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    agent_timeout_secs: u64,
    /// Address the image registry (pull-through cache, push target) listens on.
    #[arg(long, env = "PLINTH_REGISTRY_LISTEN", default_value = "0.0.0.0:5000")]
    registry_listen: SocketAddr,
    /// Upstream registry (HOST:PORT) spoken to over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", env = "PLINTH_INSECURE_REGISTRY", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// Another name of this master's registry in image names (HOST:PORT); repeatable.
    #[arg(long = "registry-alias", env = "PLINTH_REGISTRY_ALIAS", value_delimiter = ',')]
    registry_aliases: Vec<String>,
    /// Docker config.json with credentials for upstream registries (auths.<registry>.auth).
    #[arg(long, env = "PLINTH_DOCKER_CONFIG")]
    docker_config: Option<PathBuf>,
    /// Registry blob store high-water mark in bytes; unused blobs above it are collected.
    #[arg(long, env = "PLINTH_REGISTRY_MAX_BYTES", default_value_t = plinth_master::registry::DEFAULT_MAX_STORE_BYTES)]
    registry_max_bytes: u64,
    /// Largest blob a push may upload, in bytes.
    #[arg(long, env = "PLINTH_REGISTRY_MAX_BLOB_BYTES", default_value_t = plinth_master::registry::DEFAULT_MAX_BLOB_BYTES)]
    registry_max_blob_bytes: u64,
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// Where task sandboxes and the agent's checkpoint live.
    #[arg(long, env = "PLINTH_WORK_DIR", default_value = "/var/lib/plinth/agent")]
    work_dir: PathBuf,
    /// Address other hosts reach this agent's tasks at (default: detected).
    #[arg(long, env = "PLINTH_ADVERTISE_IP")]
    advertise_ip: Option<IpAddr>,
    /// Resources to offer, e.g. 'cpus:2;mem:1024;disk:4096;ports:[31000-32000]' (default: detected).
    #[arg(long, env = "PLINTH_RESOURCES", value_parser = parse_resources)]
    resources: Option<Resources>,
    /// Attributes for constraints, e.g. 'rack:r1;zone:a'.
    #[arg(long, env = "PLINTH_ATTRIBUTES", value_parser = parse_attributes, default_value = "")]
    attributes: Attributes,
    /// Registry to pull Docker images from (default: the master's host, port 5000).
    #[arg(long, env = "PLINTH_REGISTRY")]
    registry: Option<String>,
    /// Bridge for BRIDGE-networked containers.
    #[arg(long, env = "PLINTH_CONTAINER_BRIDGE", default_value = plinth_agent::DEFAULT_BRIDGE)]
    container_bridge: String,
    /// Subnet for BRIDGE-networked containers (the bridge takes the first address).
    #[arg(long, env = "PLINTH_CONTAINER_SUBNET", default_value = plinth_agent::DEFAULT_CONTAINER_SUBNET)]
    container_subnet: String,
    /// Largest decompressed size of one image layer, in MiB (bigger layers are refused).
    #[arg(long, env = "PLINTH_MAX_LAYER_MB", default_value_t = plinth_agent::DEFAULT_MAX_LAYER_BYTES >> 20)]
    max_layer_mb: u64,
    /// User of command tasks whose app names no `user` (Mesos' --switch_user).
    #[arg(long, env = "PLINTH_DEFAULT_TASK_USER", default_value = plinth_agent::DEFAULT_TASK_USER)]
    default_task_user: String,
    /// Let apps run command tasks as root (`"user": "root"`; Docker's default capabilities).
    #[arg(long, env = "PLINTH_ALLOW_ROOT_TASKS")]
    allow_root_tasks: bool,
    /// More paths command tasks must not see, comma-separated (the work dir is always hidden).
    #[arg(long, env = "PLINTH_HIDE_FROM_TASKS", value_delimiter = ',')]
    hide_from_tasks: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct MasterCommand {
    #[command(flatten)]
    master: MasterArgs,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    pxe: PxeArgs,
}

/// PXE provisioning: the master boots blank machines on this network as agents.
#[derive(Debug, Args)]
struct PxeArgs {
    /// Serve DHCP (67, 4011) and TFTP (69) for PXE boot on this interface.
    #[arg(long, env = "PLINTH_PXE_INTERFACE")]
    pxe_interface: Option<String>,
    /// Full DHCP: lease addresses FIRST-LAST (isolated networks without another DHCP server).
    #[arg(long, env = "PLINTH_DHCP_RANGE", value_parser = plinth_provisioning::dhcp::AddressPool::parse_range, conflicts_with = "proxy_dhcp", requires = "pxe_interface")]
    dhcp_range: Option<plinth_provisioning::dhcp::AddressPool>,
    /// proxyDHCP beside an existing DHCP server: PXE options only (the default with --pxe-interface).
    #[arg(long, env = "PLINTH_PROXY_DHCP", requires = "pxe_interface")]
    proxy_dhcp: bool,
    /// Directory with vmlinuz and initramfs.img (from `plinth image build`) served to booting machines.
    #[arg(long, env = "PLINTH_BOOT_DIR")]
    boot_dir: Option<PathBuf>,
    /// Directory with iPXE for PXE firmware (undionly.kpxe, ipxe.efi).
    #[arg(long, env = "PLINTH_TFTP_ROOT", default_value = "/usr/lib/ipxe")]
    tftp_root: PathBuf,
    /// What machines without a profile boot as: agent, or ignore (no answer).
    #[arg(long, env = "PLINTH_PXE_UNKNOWN", default_value = "agent")]
    pxe_unknown: plinth_provisioning::DefaultProfile,
    /// The master URL booting machines use (default: http://PXE-INTERFACE-IP:PORT).
    #[arg(long, env = "PLINTH_ADVERTISE_URL")]
    advertise_url: Option<String>,
}

#[derive(Debug, Args)]
struct AgentCommand {
    /// The master's URL, e.g. http://10.0.0.2:8080.
    #[arg(long, env = "PLINTH_MASTER")]
    master: String,
    /// Address the agent's HTTP API (logs, task inspection) listens on.
    #[arg(long, env = "PLINTH_LISTEN", default_value = "0.0.0.0:5051")]
    listen: SocketAddr,
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, Args)]
struct StandaloneCommand {
    #[command(flatten)]
    master: MasterArgs,
    #[command(flatten)]
    agent: AgentArgs,
    #[command(flatten)]
    node: NodeArgs,
    /// Address the agent's HTTP API listens on.
    #[arg(long, env = "PLINTH_AGENT_LISTEN", default_value = "0.0.0.0:5051")]
    agent_listen: SocketAddr,
    /// The master URL the embedded agent joins (default: this process's master).
    #[arg(long = "master", env = "PLINTH_MASTER")]
    master_url: Option<String>,
}

/// Argument-time parsing so a typo is a usage error naming the bad part.
fn parse_resources(text: &str) -> Result<Resources, String> {
    Resources::parse(text).map_err(reason)
}

fn parse_attributes(text: &str) -> Result<Attributes, String> {
    plinth_protocol::parse_attributes(text).map_err(reason)
}

/// Only the reason: clap's message already names the flag and the value.
fn reason(error: ProtocolError) -> String {
    match error {
        ProtocolError::InvalidResources { reason, .. }
        | ProtocolError::InvalidAttributes { reason, .. }
        | ProtocolError::InvalidId { reason, .. } => reason,
    }
}

fn main() {
    // Every HTTP client (master, agent, executor, CLI) needs rustls' provider installed.
    plinth_oci::tls::install_provider();
    // Must come first: as PID 1 nothing else (argument parsing included) applies.
    os::maybe_run_as_init();
    let mut cli = Cli::parse();

    // The executor is forked per task; it runs its own small loop without tokio.
    if let Command::Executor { spec } = &cli.command {
        run_executor(spec);
    }

    let client_command = matches!(cli.command, Command::Client(_));
    init_logging(cli.log_format, if client_command { "warn" } else { "info" });
    if client_command {
        // A closed pipe (`plinth app list | head`) ends a client quietly, as it ends `ls`:
        // Rust ignores SIGPIPE and would panic on the failed write instead.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let cli = match (cli.master.take(), cli.json, cli.command) {
        (master, json, Command::Client(client)) => {
            Cli { command: Command::Client(client.with_globals(master, json)), ..cli }
        }
        (None, false, command) => Cli { command, ..cli },
        (_, _, _) => {
            eprintln!("error: --master and --json before the command are for the client commands; put them after it");
            std::process::exit(2);
        }
    };

    if let Err(err) = run(cli.command) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run_executor(spec: &std::path::Path) -> ! {
    std::process::exit(plinth_agent::executor::run(spec))
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        // Synchronous commands run outside any runtime: they may start their own.
        Command::Image { cmd } => os::run_image(cmd),
        #[cfg(feature = "bench")]
        Command::Bench { cmd } => plinth_bench::run(cmd),
        #[cfg(not(feature = "bench"))]
        Command::Bench { .. } => {
            anyhow::bail!(
                "this plinth was built without the benchmarks: build it with `cargo build --release --features bench`"
            )
        }
        Command::Executor { spec } => run_executor(&spec),
        Command::Master(cmd) => runtime()?.block_on(until_signal(run_master(cmd))),
        Command::Agent(cmd) => runtime()?.block_on(until_signal(run_agent(cmd))),
        Command::Standalone(cmd) => runtime()?.block_on(until_signal(run_standalone(cmd))),
        Command::Client(cmd) => runtime()?.block_on(cmd.run()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Runs a role until it fails or the process is asked to stop (SIGINT/SIGTERM). Tasks are
/// separate processes checkpointed by the agent, so stopping here leaves them running.
async fn until_signal(role: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    tokio::select! {
        result = role => result,
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT received, stopping"); Ok(()) }
        _ = term.recv() => { tracing::info!("SIGTERM received, stopping"); Ok(()) }
    }
}

fn kernel_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn master_config(args: MasterArgs, node: &NodeArgs) -> plinth_master::MasterConfig {
    plinth_master::MasterConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        agent_timeout: std::time::Duration::from_secs(args.agent_timeout_secs),
        token: node.token.clone(),
        hostname: node.hostname.clone().unwrap_or_else(kernel_hostname),
        registry: plinth_master::registry::RegistryConfig {
            listen: args.registry_listen,
            insecure: args.insecure_registries,
            docker_config: args.docker_config,
            aliases: args.registry_aliases,
            max_blob_bytes: args.registry_max_blob_bytes,
            max_store_bytes: args.registry_max_bytes,
            ..Default::default()
        },
    }
}

fn agent_config(master: String, listen: SocketAddr, args: AgentArgs, node: &NodeArgs) -> plinth_agent::AgentConfig {
    plinth_agent::AgentConfig {
        master: master.trim_end_matches('/').to_string(),
        work_dir: args.work_dir,
        hostname: node.hostname.clone().unwrap_or_else(kernel_hostname),
        advertise_ip: args.advertise_ip,
        resources: args.resources,
        attributes: args.attributes,
        listen,
        token: node.token.clone(),
        containers: plinth_agent::ContainerSettings {
            registry: args.registry,
            bridge: args.container_bridge,
            subnet: args.container_subnet,
            max_layer_bytes: args.max_layer_mb.saturating_mul(1 << 20),
        },
        confinement: plinth_agent::TaskConfinement {
            default_user: args.default_task_user,
            allow_root: args.allow_root_tasks,
            hidden_paths: args.hide_from_tasks,
        },
    }
}

async fn run_master(cmd: MasterCommand) -> anyhow::Result<()> {
    let config = master_config(cmd.master, &cmd.node);
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), "starting master");
    let pxe = cmd.pxe;
    let boot = plinth_master::pxe::BootConfig {
        pxe_interface: pxe.pxe_interface,
        dhcp: match pxe.dhcp_range {
            Some(pool) => plinth_master::pxe::PxeDhcp::Range(pool),
            None => plinth_master::pxe::PxeDhcp::Proxy,
        },
        boot_dir: pxe.boot_dir,
        tftp_root: pxe.tftp_root,
        default_profile: pxe.pxe_unknown,
        advertise_url: pxe.advertise_url,
    };
    plinth_master::start::run(config, Some(boot)).await.context("master failed")
}

async fn run_agent(cmd: AgentCommand) -> anyhow::Result<()> {
    let config = agent_config(cmd.master, cmd.listen, cmd.agent, &cmd.node);
    tracing::info!(master = %config.master, work_dir = %config.work_dir.display(), "starting agent");
    plinth_agent::run(config).await.context("agent failed")
}

/// The URL the embedded agent uses to reach the master in the same process.
fn local_master_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { listen.ip() };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

async fn run_standalone(cmd: StandaloneCommand) -> anyhow::Result<()> {
    let master_url = cmd.master_url.clone().unwrap_or_else(|| local_master_url(cmd.master.listen));
    // The embedded agent pulls from the embedded registry, wherever it listens.
    let local_registry = local_master_url(cmd.master.registry_listen);
    let master = master_config(cmd.master, &cmd.node);
    let mut agent = agent_config(master_url, cmd.agent_listen, cmd.agent, &cmd.node);
    agent.containers.registry.get_or_insert(local_registry);
    // The master's store (every app's env) is on this node too: tasks must not see it.
    agent.confinement.hidden_paths.push(master.data_dir.clone());
    tracing::info!(
        listen = %master.listen, data_dir = %master.data_dir.display(),
        work_dir = %agent.work_dir.display(), "starting standalone master + agent"
    );
    tokio::spawn(announce_when_ready(local_master_url(master.listen)));
    // Either half ending means the node is broken: stop the whole process so it is noticed.
    tokio::select! {
        result = plinth_master::start::run(master, None) => result.context("master failed").and_then(|()| anyhow::bail!("master stopped")),
        result = plinth_agent::run(agent) => result.context("agent failed").and_then(|()| anyhow::bail!("agent stopped")),
    }
}

/// Tells a person who just started the one-box cluster where it answers and what to try,
/// once the API answers (on stdout: logs go to stderr).
async fn announce_when_ready(api: String) {
    let client = reqwest::Client::new();
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "plinth".into());
    for _ in 0..600 {
        if client.get(format!("{api}/ping")).send().await.is_ok_and(|r| r.status().is_success()) {
            println!(
                "\nPlinth standalone is ready: Marathon API at {api}, web UI at {api}/ui/\n  try:  curl {api}/v2/apps\n        \
                 {exe} node list --master {api}\n  stop: Ctrl-C (tasks keep running; the next start adopts them)\n"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn resource_typos_are_usage_errors_naming_the_typo() {
        let err =
            Cli::try_parse_from(["plinth", "agent", "--master", "http://m:8080", "--resources", "cpu:2"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("unknown resource 'cpu'"), "{err}");
    }

    #[test]
    fn standalone_agent_joins_its_own_master() {
        assert_eq!(local_master_url("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080");
        assert_eq!(local_master_url("10.1.2.3:9090".parse().unwrap()), "http://10.1.2.3:9090");
    }
}
