//! `plinth`: one binary for the whole node OS and cluster. Run as PID 1 it is the init;
//! otherwise the subcommand picks the role (`master`, `agent`, `standalone`), a client
//! command against the master's API (`app`, `task`, `logs`, `node`, `queue`), image
//! building (`image`) or a benchmark (`bench`).
mod cli;
// why: glibc's malloc spent much of the master's time in free-list upkeep at 1M tasks
// (BENCHMARKS.md, "Scheduler"); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod flag_values;
mod os;
mod token_file;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flag_values::{
    parse_attributes, parse_etcd_prefix, parse_master_list, parse_resources, parse_service_ports, parse_userns_remap,
};
use plinth_protocol::{Attributes, Resources};
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

// why: parsed once at start and moved into the role; the flag structs' size costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Build boot images (kernel + initramfs, disk, ISO, Vagrant box); list, pull and remove the master registry's images.
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
    /// File holding the join token: the master requires it from agents, agents present it
    /// (else the PLINTH_TOKEN environment variable; never on the command line).
    #[arg(long, env = "PLINTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Refused with a message: tokens on the command line are readable by every process.
    #[arg(long, hide = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Name this node reports (default: the kernel's hostname).
    #[arg(long, env = "PLINTH_HOSTNAME")]
    hostname: Option<String>,
    #[command(flatten)]
    dns: DnsArgs,
}

/// The node's DNS server (README: Service discovery).
#[derive(Debug, Args)]
struct DnsArgs {
    /// Port of the DNS server (UDP and TCP, all of the node's addresses): Mesos-DNS names
    /// (APP.marathon.DOMAIN, ...), other names forwarded; 0: no DNS server.
    #[arg(long, env = "PLINTH_DNS_PORT", default_value_t = plinth_dns::DEFAULT_PORT)]
    dns_port: u16,
    /// The domain the DNS server answers for (Mesos-DNS's `domain`).
    #[arg(long, env = "PLINTH_DNS_DOMAIN", default_value = plinth_dns::DEFAULT_DOMAIN, value_parser = plinth_dns::DnsSettings::check_domain)]
    dns_domain: String,
    /// Seconds DNS answers may be cached.
    #[arg(long, env = "PLINTH_DNS_TTL", default_value_t = plinth_dns::DEFAULT_TTL_SECS)]
    dns_ttl: u32,
    /// The resolv.conf whose nameservers get the names outside the domain (loopback stubs skipped).
    #[arg(long, env = "PLINTH_DNS_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    dns_resolv_conf: PathBuf,
}

impl DnsArgs {
    fn settings(&self) -> plinth_dns::DnsSettings {
        plinth_dns::DnsSettings {
            port: self.dns_port,
            domain: self.dns_domain.clone(),
            ttl_secs: self.dns_ttl,
            resolv_conf: self.dns_resolv_conf.clone(),
            ..plinth_dns::DnsSettings::default()
        }
    }

    /// What containers search when the node answers DNS where resolv.conf can name it
    /// (port 53 only).
    fn container_search(&self) -> Option<String> {
        (self.dns_port == plinth_dns::DEFAULT_PORT).then(|| format!("marathon.{}", self.dns_domain))
    }
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
    /// Milliseconds between the scheduler's timed rounds (backoffs, timeouts, health
    /// deadlines). Commands that create work (a POST, a scale, a task ending, an agent
    /// joining) get a round at once whatever this says.
    #[arg(long, env = "PLINTH_TICK_MS", default_value_t = 150, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    tick_ms: u64,
    /// Cluster-wide service ports: `servicePort: 0` / `port: 0` get a free one of START-END,
    /// and an explicit one above END is refused (the agents' task host ports lie above).
    #[arg(long, env = "PLINTH_SERVICE_PORTS", value_name = "START-END", default_value = "10000-20000", value_parser = parse_service_ports)]
    service_ports: (u16, u16),
    /// Address the image registry (pull-through cache, push target) listens on.
    #[arg(long, env = "PLINTH_REGISTRY_LISTEN", default_value = "0.0.0.0:5000")]
    registry_listen: SocketAddr,
    /// Upstream registry (HOST:PORT) spoken to over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", env = "PLINTH_INSECURE_REGISTRY", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// Upstream registry (as image names spell it: docker.io, quay.io, HOST:PORT) the
    /// registry may pull from before an app names it; repeatable. Clients of :5000 never
    /// choose an upstream themselves.
    #[arg(long = "allow-registry", env = "PLINTH_ALLOW_REGISTRY", value_delimiter = ',')]
    allowed_registries: Vec<String>,
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
    /// Serve the API over HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "PLINTH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PLINTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Node identity: a cluster CA in DATA_DIR/ca (made at first start, fingerprint printed);
    /// agents trade the join token once for a certificate and then must speak mutual TLS;
    /// the API is HTTPS (with the CA's certificate unless --tls-cert). Needs a join token.
    #[arg(long, env = "PLINTH_CLUSTER_CA")]
    cluster_ca: bool,
    /// Another DNS name or IP address for the master's certificate from the cluster CA; repeatable.
    #[arg(long = "tls-san", env = "PLINTH_TLS_SAN", value_delimiter = ',', requires = "cluster_ca")]
    tls_sans: Vec<String>,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// The HA store (README: High availability): without --etcd, redb in the data dir.
#[derive(Debug, Default, Args)]
struct EtcdArgs {
    /// etcd endpoints (http(s)://HOST:2379, comma-separated): the state lives in etcd and
    /// masters elect one leader; --hostname must be an address the other masters reach.
    #[arg(long, env = "PLINTH_ETCD", value_delimiter = ',', value_name = "URL")]
    etcd: Vec<String>,
    /// Key prefix of this cluster's state in etcd.
    #[arg(long, env = "PLINTH_ETCD_PREFIX", default_value = "/plinth", value_parser = parse_etcd_prefix)]
    etcd_prefix: String,
    /// PEM CA certificate of the etcd servers.
    #[arg(long, env = "PLINTH_ETCD_CACERT", value_name = "PATH")]
    etcd_cacert: Option<PathBuf>,
    /// PEM client certificate for etcd (with --etcd-key).
    #[arg(long, env = "PLINTH_ETCD_CERT", value_name = "PATH", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The PEM private key of --etcd-cert.
    #[arg(long, env = "PLINTH_ETCD_KEY", value_name = "PATH", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user; the password comes from --etcd-password-file or PLINTH_ETCD_PASSWORD.
    #[arg(long, env = "PLINTH_ETCD_USER")]
    etcd_user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long, env = "PLINTH_ETCD_PASSWORD_FILE", value_name = "PATH", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// Seconds of the leader's etcd lease: a leader silent this long is replaced.
    #[arg(long, env = "PLINTH_LEADER_LEASE_SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    leader_lease_secs: u64,
}

/// Where to find etcd, with the password read from its file or `PLINTH_ETCD_PASSWORD`.
fn etcd_settings(args: EtcdArgs) -> anyhow::Result<Option<plinth_master::store::EtcdSettings>> {
    if args.etcd.is_empty() {
        return Ok(None);
    }
    for url in &args.etcd {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("--etcd {url}: an etcd endpoint is a URL like http://10.0.0.2:2379");
        }
    }
    let user = match args.etcd_user {
        None => None,
        Some(user) => {
            let password = match &args.etcd_password_file {
                Some(path) => read_secret_file(path)?.trim_end_matches(['\r', '\n']).to_string(),
                None => std::env::var("PLINTH_ETCD_PASSWORD").map_err(|_| {
                    anyhow::anyhow!("--etcd-user needs a password: --etcd-password-file PATH or PLINTH_ETCD_PASSWORD")
                })?,
            };
            Some((user, password))
        }
    };
    let mut settings = plinth_master::store::EtcdSettings::new(args.etcd);
    settings.prefix = args.etcd_prefix;
    settings.cacert = args.etcd_cacert;
    settings.cert = args.etcd_cert;
    settings.key = args.etcd_key;
    settings.user = user;
    Ok(Some(settings))
}

/// Who may use the API (README: Access control). Secrets come from files or the
/// environment, never from the command line.
#[derive(Debug, Default, Args)]
struct AccessArgs {
    /// File of `user:password` lines with admin access (HTTP Basic). PLINTH_HTTP_CREDENTIALS=user:password adds one.
    #[arg(long, env = "PLINTH_HTTP_CREDENTIALS_FILE", value_name = "PATH")]
    http_credentials_file: Option<PathBuf>,
    /// File of `user:password` lines with read-only access.
    #[arg(long, env = "PLINTH_HTTP_READONLY_CREDENTIALS_FILE", value_name = "PATH")]
    http_readonly_credentials_file: Option<PathBuf>,
    /// File of bearer tokens (one a line) with admin access.
    #[arg(long, env = "PLINTH_API_TOKEN_FILE", value_name = "PATH")]
    api_token_file: Option<PathBuf>,
    /// File of bearer tokens with read-only access.
    #[arg(long, env = "PLINTH_API_READONLY_TOKEN_FILE", value_name = "PATH")]
    api_readonly_token_file: Option<PathBuf>,
    /// URL prefixes event callbacks may be subscribed under (default: any while the API is open, none with credentials).
    #[arg(long, env = "PLINTH_EVENT_CALLBACK_ALLOW", value_delimiter = ',', value_name = "PREFIX")]
    event_callback_allow: Vec<String>,
    /// Events carry apps' env values (by default they are replaced by "<redacted>").
    #[arg(long, env = "PLINTH_EVENTS_INCLUDE_ENV")]
    events_include_env: bool,
    /// PLINTH_HTTP_CREDENTIALS, taken out of the environment at start (`main`).
    #[arg(skip)]
    env_credentials: Option<String>,
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
    /// Run containers in a user namespace: container uid/gid 0.. are host ids START..
    /// (START:COUNT, e.g. 100000:65536; Docker's option). Layers get a cache of their own.
    #[arg(long, env = "PLINTH_USERNS_REMAP", value_name = "START:COUNT", value_parser = parse_userns_remap)]
    userns_remap: Option<plinth_agent::userns::IdRemap>,
    /// Follow this master even if the checkpoint names another cluster (once, after the
    /// cluster was really rebuilt: tasks the new master does not know are then killed).
    #[arg(long, env = "PLINTH_REJOIN_CLUSTER")]
    rejoin_cluster: bool,
    /// PEM CA certificate(s) to trust for an https:// master.
    #[arg(long, env = "PLINTH_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// User of command tasks whose app names no `user` (Mesos' --switch_user).
    #[arg(long, env = "PLINTH_DEFAULT_TASK_USER", default_value = plinth_agent::DEFAULT_TASK_USER)]
    default_task_user: String,
    /// Let apps run command tasks as root (`"user": "root"`; Docker's default capabilities).
    #[arg(long, env = "PLINTH_ALLOW_ROOT_TASKS")]
    allow_root_tasks: bool,
    /// More paths command tasks must not see, comma-separated (the work dir is always hidden).
    #[arg(long, env = "PLINTH_HIDE_FROM_TASKS", value_delimiter = ',')]
    hide_from_tasks: Vec<PathBuf>,
    /// Stop every task after this many seconds without an answer from the master (below the
    /// master's --agent-timeout-secs, old tasks are gone before replacements start). Default:
    /// tasks keep running through a partition, as with Marathon.
    #[arg(long, env = "PLINTH_STOP_TASKS_AFTER_MASTER_LOST_SECS", value_parser = clap::value_parser!(u64).range(2..))]
    stop_tasks_after_master_lost_secs: Option<u64>,
    /// Serve only the service ports of apps labelled HAPROXY_GROUP=NAME (default: every app).
    #[arg(long, env = "PLINTH_LB_GROUP")]
    lb_group: Option<String>,
    /// Run no service balancer on this agent (the master then waits for no drain from it).
    #[arg(long, env = "PLINTH_NO_LB")]
    no_lb: bool,
    /// Also serve HTTP on this port, routed by Host to the apps' HAPROXY_{n}_VHOST (e.g. 80).
    #[arg(long, env = "PLINTH_LB_HTTP_PORT")]
    lb_http_port: Option<u16>,
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
    /// With HA masters: every master's URL, comma-separated, given to booted agents as
    /// plinth.master= so they follow the leader (default: the advertise URL alone).
    #[arg(long, env = "PLINTH_BOOT_MASTERS", value_parser = parse_master_list)]
    boot_masters: Option<String>,
    /// Seconds a booting machine's single-use bootstrap token can be exchanged for the join token.
    #[arg(long, env = "PLINTH_BOOTSTRAP_TOKEN_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    bootstrap_token_ttl_secs: u64,
}

#[derive(Debug, Args)]
struct AgentCommand {
    /// The master's URL, e.g. http://10.0.0.2:8080; with HA masters, several, comma-separated.
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

fn main() {
    // Every HTTP client (master, agent, executor, CLI) needs rustls' provider installed.
    plinth_oci::tls::install_provider();
    // A command task's init is PID 1 of its namespace, never the node's init.
    plinth_agent::task_init::maybe_run();
    // Must come first: as PID 1 nothing else (argument parsing included) applies.
    os::maybe_run_as_init();
    let mut cli = Cli::parse();
    // Taken out before any thread starts, so nothing the node starts inherits the secret.
    if let Command::Master(MasterCommand { master, .. }) | Command::Standalone(StandaloneCommand { master, .. }) =
        &mut cli.command
    {
        master.access.env_credentials = std::env::var(ENV_CREDENTIALS).ok();
        std::env::remove_var(ENV_CREDENTIALS);
    }

    // The executor is forked per task; it runs its own small loop without tokio.
    if let Command::Executor { spec } = &cli.command {
        run_executor(spec);
    }

    let client_command =
        matches!(cli.command, Command::Client(_) | Command::Image { cmd: os::ImageCommand::Registry(_) });
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
        (master, json, Command::Image { cmd: os::ImageCommand::Registry(images) }) => {
            let cmd = os::ImageCommand::Registry(images.with_globals(master, json));
            Cli { command: Command::Image { cmd }, ..cli }
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
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // hickory logs every DNS query at info: only its warnings, unless RUST_LOG names it.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("hickory")) {
        for quiet in ["hickory_server=warn", "hickory_proto=warn", "hickory_resolver=warn"] {
            filter = filter.add_directive(quiet.parse().expect("a valid directive"));
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        // Synchronous commands run outside any runtime: they may start their own.
        Command::Image { cmd: os::ImageCommand::Registry(cmd) } => runtime()?.block_on(cmd.run()),
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

/// Marathon's `--http_credentials` as an environment variable: one `user:password`, admin.
const ENV_CREDENTIALS: &str = "PLINTH_HTTP_CREDENTIALS";

fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
        tracing::warn!(path = %path.display(), "a credentials file is readable by every user; chmod 600 it");
    }
    Ok(text)
}

fn access_config(args: AccessArgs) -> anyhow::Result<plinth_master::access::AccessConfig> {
    use plinth_master::access::{CallbackPrefix, Credentials, Role};
    let mut credentials = Credentials::default();
    if let Some(pair) = &args.env_credentials {
        credentials.add_users(pair, Role::Admin, ENV_CREDENTIALS)?;
    }
    let files = [
        (&args.http_credentials_file, Role::Admin, false),
        (&args.http_readonly_credentials_file, Role::ReadOnly, false),
        (&args.api_token_file, Role::Admin, true),
        (&args.api_readonly_token_file, Role::ReadOnly, true),
    ];
    for (path, role, tokens) in files {
        let Some(path) = path else { continue };
        let text = read_secret_file(path)?;
        let name = path.display().to_string();
        if tokens {
            credentials.add_tokens(&text, role, &name)?;
        } else {
            credentials.add_users(&text, role, &name)?;
        }
    }
    let callback_allow = if args.event_callback_allow.is_empty() {
        None
    } else {
        Some(args.event_callback_allow.iter().map(|p| CallbackPrefix::parse(p)).collect::<Result<Vec<_>, _>>()?)
    };
    Ok(plinth_master::access::AccessConfig {
        credentials: std::sync::Arc::new(credentials),
        callback_allow,
        events_include_env: args.events_include_env,
    })
}

/// The join token of `plinth master|agent|standalone`: `--token-file`, else `PLINTH_TOKEN`.
fn join_token(node: &NodeArgs) -> anyhow::Result<Option<plinth_protocol::agent::JoinToken>> {
    token_file::resolve(node.token_file.as_deref(), node.token.is_some())
}

fn master_config(
    args: MasterArgs,
    node: &NodeArgs,
    token: Option<plinth_protocol::agent::JoinToken>,
) -> anyhow::Result<plinth_master::MasterConfig> {
    if args.cluster_ca && token.is_none() {
        anyhow::bail!(
            "--cluster-ca needs a join token (--token-file PATH or PLINTH_TOKEN): agents trade it for their certificate"
        );
    }
    Ok(plinth_master::MasterConfig {
        access: access_config(args.access)?,
        listen: args.listen,
        data_dir: args.data_dir,
        agent_timeout: std::time::Duration::from_secs(args.agent_timeout_secs),
        tick_interval: std::time::Duration::from_millis(args.tick_ms),
        service_ports: args.service_ports,
        rounds_on_commands: true,
        token,
        hostname: node.hostname.clone().unwrap_or_else(kernel_hostname),
        registry: plinth_master::registry::RegistryConfig {
            listen: args.registry_listen,
            insecure: args.insecure_registries,
            allowed: args.allowed_registries,
            docker_config: args.docker_config,
            aliases: args.registry_aliases,
            max_blob_bytes: args.registry_max_blob_bytes,
            max_store_bytes: args.registry_max_bytes,
            ..Default::default()
        },
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| plinth_master::tls::TlsFiles { cert, key }),
        cluster_ca: args.cluster_ca.then_some(plinth_master::tls::ClusterCaSettings { extra_names: args.tls_sans }),
        dns: node.dns.settings(),
        leader_lease: std::time::Duration::from_secs(args.etcd.leader_lease_secs),
        etcd: etcd_settings(args.etcd)?,
    })
}

fn agent_config(
    master: String,
    listen: SocketAddr,
    args: AgentArgs,
    node: &NodeArgs,
    token: Option<plinth_protocol::agent::JoinToken>,
) -> plinth_agent::AgentConfig {
    plinth_agent::AgentConfig {
        master: master.trim_end_matches('/').to_string(),
        work_dir: args.work_dir,
        hostname: node.hostname.clone().unwrap_or_else(kernel_hostname),
        advertise_ip: args.advertise_ip,
        resources: args.resources,
        attributes: args.attributes,
        listen,
        token,
        rejoin_cluster: args.rejoin_cluster,
        ca_file: args.ca_file,
        dns: node.dns.settings(),
        containers: plinth_agent::ContainerSettings {
            registry: args.registry,
            bridge: args.container_bridge,
            subnet: args.container_subnet,
            max_layer_bytes: args.max_layer_mb.saturating_mul(1 << 20),
            dns_search: node.dns.container_search(),
            userns_remap: args.userns_remap,
        },
        confinement: plinth_agent::TaskConfinement {
            default_user: args.default_task_user,
            allow_root: args.allow_root_tasks,
            // The join token file too: a task that read it could join agents of its own.
            hidden_paths: args.hide_from_tasks.into_iter().chain(node.token_file.clone()).collect(),
        },
        stop_tasks_after_master_lost: args.stop_tasks_after_master_lost_secs.map(std::time::Duration::from_secs),
        lb: plinth_agent::LbSettings {
            enabled: !args.no_lb,
            group: args.lb_group,
            http_port: args.lb_http_port,
            ..Default::default()
        },
    }
}

async fn run_master(cmd: MasterCommand) -> anyhow::Result<()> {
    let token = join_token(&cmd.node)?;
    let config = master_config(cmd.master, &cmd.node, token)?;
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
        agent_masters: pxe.boot_masters,
        bootstrap_ttl: std::time::Duration::from_secs(pxe.bootstrap_token_ttl_secs),
    };
    plinth_master::start::run(config, Some(boot)).await.context("master failed")
}

async fn run_agent(cmd: AgentCommand) -> anyhow::Result<()> {
    let token = join_token(&cmd.node)?;
    let config = agent_config(cmd.master, cmd.listen, cmd.agent, &cmd.node, token);
    tracing::info!(master = %config.master, work_dir = %config.work_dir.display(), "starting agent");
    plinth_agent::run(config).await.context("agent failed")
}

/// The URL the embedded agent uses to reach the master in the same process.
fn local_master_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { listen.ip() };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// [`local_master_url`] for the API, which may be HTTPS (its certificate must name the address).
fn local_api_url(listen: SocketAddr, tls: bool) -> String {
    let url = local_master_url(listen);
    if tls {
        url.replacen("http://", "https://", 1)
    } else {
        url
    }
}

async fn run_standalone(cmd: StandaloneCommand) -> anyhow::Result<()> {
    let tls = cmd.master.tls_cert.is_some() || cmd.master.cluster_ca;
    let master_url = cmd.master_url.clone().unwrap_or_else(|| local_api_url(cmd.master.listen, tls));
    // The embedded agent pulls from the embedded registry, wherever it listens.
    let local_registry = local_master_url(cmd.master.registry_listen);
    let token = join_token(&cmd.node)?;
    let access = &cmd.master.access;
    let secret_files: Vec<PathBuf> = [
        &access.http_credentials_file,
        &access.http_readonly_credentials_file,
        &access.api_token_file,
        &access.api_readonly_token_file,
        &cmd.master.tls_key,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    if let Some(ports) = cmd.agent.resources.as_ref().map(|r| &r.ports) {
        let (low, high) = cmd.master.service_ports;
        if let Some((begin, end)) = ports.ranges().iter().find(|(b, e)| *b <= high && *e >= low) {
            anyhow::bail!(
                "--service-ports {low}-{high} overlaps this node's task host ports {begin}-{end} (--resources)"
            );
        }
    }
    let master = master_config(cmd.master, &cmd.node, token.clone())?;
    let mut agent = agent_config(master_url, cmd.agent_listen, cmd.agent, &cmd.node, token);
    agent.containers.registry.get_or_insert(local_registry);
    // One DNS server per node: the master's (containers still search marathon.DOMAIN there).
    agent.dns.port = 0;
    // The master's store (every app's env) and its secrets are on this node too: tasks
    // must not see them.
    agent.confinement.hidden_paths.push(master.data_dir.clone());
    agent.confinement.hidden_paths.extend(secret_files);
    if master.cluster_ca.is_some() && master.tls.is_none() && agent.ca_file.is_none() {
        // The embedded agent trusts the embedded master's CA, made now if this is the first start.
        plinth_master::ca::ClusterCa::load_or_create(&master.data_dir).context("the cluster CA")?;
        let ca = plinth_master::ca::CA_DIR;
        agent.ca_file = Some(master.data_dir.join(ca).join(plinth_master::ca::CA_CERT_FILE));
    }
    tracing::info!(
        listen = %master.listen, data_dir = %master.data_dir.display(),
        work_dir = %agent.work_dir.display(), "starting standalone master + agent"
    );
    tokio::spawn(announce_when_ready(local_api_url(master.listen, tls), agent.ca_file.clone()));
    // Either half ending means the node is broken: stop the whole process so it is noticed.
    tokio::select! {
        result = plinth_master::start::run(master, None) => result.context("master failed").and_then(|()| anyhow::bail!("master stopped")),
        result = plinth_agent::run(agent) => result.context("agent failed").and_then(|()| anyhow::bail!("agent stopped")),
    }
}

/// Tells a person who just started the one-box cluster where it answers and what to try,
/// once the API answers (on stdout: logs go to stderr).
async fn announce_when_ready(api: String, ca_file: Option<PathBuf>) {
    let mut client = reqwest::Client::builder();
    if let Some(certs) =
        ca_file.and_then(|f| std::fs::read(f).ok()).and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok())
    {
        client = client.tls_certs_merge(certs);
    }
    let Ok(client) = client.build() else { return };
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
    fn boot_masters_take_master_urls_and_refuse_anything_else() {
        let parse = |value: &str| Cli::try_parse_from(["plinth", "master", "--boot-masters", value]);
        let Command::Master(cmd) = parse("http://10.0.0.2:8080/, http://10.0.0.3:8080").unwrap().command else {
            panic!("a master command")
        };
        assert_eq!(cmd.pxe.boot_masters.as_deref(), Some("http://10.0.0.2:8080,http://10.0.0.3:8080"));
        for value in ["10.0.0.2:8080", "http://", "http://a:1,", "ftp://x", "http://a b:1"] {
            let err = parse(value).unwrap_err();
            assert!(
                err.to_string().contains("--boot-masters") && err.to_string().contains("not a master URL"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn service_ports_take_a_range_and_garbage_is_a_usage_error_naming_it() {
        let parse = |value: &str| Cli::try_parse_from(["plinth", "master", "--service-ports", value]);
        let Command::Master(cmd) = parse("15000-15009").unwrap().command else { panic!("a master command") };
        assert_eq!(cmd.master.service_ports, (15000, 15009));
        let Command::Master(cmd) = Cli::try_parse_from(["plinth", "master"]).unwrap().command else { panic!() };
        assert_eq!(cmd.master.service_ports, (10000, 20000), "the default");
        for (value, says) in [
            ("9-3", "starts above its end (9 > 3)"),
            ("abc", "'abc' is not a range"),
            ("0-10", "'0' is not a port"),
            ("10-70000", "'70000' is not a port"),
            ("30000-31500", "overlaps the agents' default task host ports 31000-32000"),
        ] {
            let err = parse(value).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{value}");
            assert!(err.to_string().contains(says) && err.to_string().contains("--service-ports"), "{value}: {err}");
        }
    }

    #[test]
    fn a_token_on_the_command_line_is_refused_naming_the_token_file() {
        let cli = Cli::try_parse_from(["plinth", "master", "--token", "s3cret"]).unwrap();
        let Command::Master(cmd) = cli.command else { panic!("a master command") };
        let err = join_token(&cmd.node).unwrap_err().to_string();
        assert!(err.contains("--token-file") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn access_comes_from_the_environment_and_files_and_bad_input_names_its_source() {
        use plinth_master::access::Role;
        let dir = tempfile::tempdir().unwrap();
        let readers = dir.path().join("readers");
        std::fs::write(&readers, "viewer:pw\n").unwrap();
        let args = AccessArgs {
            env_credentials: Some("ops:s3cret".into()),
            http_readonly_credentials_file: Some(readers.clone()),
            event_callback_allow: vec!["http://10.0.0.5:9000/hooks".into()],
            ..Default::default()
        };
        let access = access_config(args).unwrap();
        let basic = |pair: &str| format!("Basic {}", base64_of(pair)).into_bytes();
        assert_eq!(access.credentials.authenticate(Some(&basic("ops:s3cret"))).unwrap().role, Role::Admin);
        assert_eq!(access.credentials.authenticate(Some(&basic("viewer:pw"))).unwrap().role, Role::ReadOnly);
        assert!(access.check_callback(&"http://10.0.0.5:9000/hooks/a".parse().unwrap()).is_ok());

        let err = access_config(AccessArgs { env_credentials: Some("no-colon".into()), ..Default::default() });
        assert_eq!(err.unwrap_err().to_string(), "PLINTH_HTTP_CREDENTIALS line 1: expected user:password");
        let missing = dir.path().join("missing");
        let err = access_config(AccessArgs { api_token_file: Some(missing.clone()), ..Default::default() });
        assert_eq!(err.unwrap_err().to_string(), format!("cannot read {}", missing.display()));
        let err = access_config(AccessArgs { event_callback_allow: vec!["ftp://x".into()], ..Default::default() });
        assert!(err.unwrap_err().to_string().contains("--event-callback-allow"));
        let open = access_config(AccessArgs::default()).unwrap();
        assert!(open.credentials.is_empty() && !open.events_include_env);
    }

    /// The `Authorization` header reqwest (the CLI's client) sends for `user:password`.
    fn base64_of(pair: &str) -> String {
        let (user, password) = pair.split_once(':').unwrap();
        plinth_oci::tls::install_provider();
        let request = reqwest::Client::new().get("http://x/").basic_auth(user, Some(password)).build().unwrap();
        let header = request.headers()["authorization"].to_str().unwrap();
        header.strip_prefix("Basic ").unwrap().to_string()
    }

    #[test]
    fn standalone_agent_joins_its_own_master() {
        assert_eq!(local_master_url("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080");
        assert_eq!(local_master_url("10.1.2.3:9090".parse().unwrap()), "http://10.1.2.3:9090");
    }
}
