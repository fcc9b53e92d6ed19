//! The boot sequence as data: a pure function of the kernel command line.
//!
//! `plan` decides *what* happens at boot and in which order; `boot.rs` carries it out.
//! Everything the plan cannot know yet (addresses from DHCP, memory size) is filled in at
//! run time through [`role_args`], which is pure too.
//!
//! `network.rs` reads the `ip=` entries, `role.rs` makes the role's flags; the tests
//! below drive the whole plan from command lines.
// Pure: no clock, entropy or spawning here or in the files below (the ban is in clippy.toml).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt;

use crate::cmdline::KernelCmdline;

mod etcd;
mod network;
mod role;

pub use etcd::{etcd_args, parse_initial_cluster, EtcdLaunch, EtcdMember, ETCD_BINARY};
use network::network_plan;
pub use network::{netmask_to_prefix, NetConfig, StaticAddr};
pub use role::{agent_work_dir, role_args, NodeFacts, RoleCommand};

/// Where node data lives; a disk labelled [`DATA_LABEL`] is mounted here, else a tmpfs.
pub const DATA_DIR: &str = "/var/lib/plinth";
/// Filesystem label of the optional persistent data disk.
pub const DATA_LABEL: &str = "PLINTH_DATA";
/// Port of the init's own node API (`/node/v1/...`).
pub const NODE_API_PORT: u16 = 5052;
/// Port of the master API, as in the design brief.
pub const MASTER_PORT: u16 = 8080;

/// Modules every node loads at boot when the image has them: a VM's virtio devices and
/// entropy. Other drivers (e1000, AHCI, SCSI disks, ...) load when a device under /sys
/// names them (modalias matching), so a machine without them pays nothing.
pub const BASE_MODULES: &[&str] =
    &["virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_rng", "virtio_console"];
/// Modules the image carries for hardware that modalias matching finds, and file systems
/// loaded when something needs them (ext4 when a data disk is found) or that an operator
/// names in `plinth.modules=`.
pub const ON_DEMAND_MODULES: &[&str] =
    &["e1000", "e1000e", "ata_piix", "ahci", "sd_mod", "sr_mod", "isofs", "ext4", "vfat"];
/// Modules that containers need on an agent: overlayfs layers, veth + bridge networking, NAT.
pub const CONTAINER_MODULES: &[&str] = &[
    "overlay",
    "veth",
    "bridge",
    "br_netfilter",
    "nf_conntrack",
    "nf_nat",
    "xt_MASQUERADE",
    "iptable_nat",
    "iptable_filter",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
    "tun",
];

/// The node's role, from `plinth.role=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Agent,
    Standalone,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, PlanError> {
        match s {
            "master" => Ok(Role::Master),
            "agent" => Ok(Role::Agent),
            "standalone" => Ok(Role::Standalone),
            other => Err(PlanError::UnknownRole(other.to_string())),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
            Role::Standalone => "standalone",
        }
    }
    fn runs_master(self) -> bool {
        matches!(self, Role::Master | Role::Standalone)
    }
    fn runs_agent(self) -> bool {
        matches!(self, Role::Agent | Role::Standalone)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the command line cannot be booted. Shown on the console before the countdown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("plinth.role is missing from the kernel command line; set plinth.role=master, plinth.role=agent or plinth.role=standalone")]
    MissingRole,
    #[error("plinth.role={0:?} is not a role; use master, agent or standalone")]
    UnknownRole(String),
    #[error("plinth.role=agent needs plinth.master=http://IP:8080 (the master's API URL)")]
    AgentWithoutMaster,
    #[error("plinth.etcd_initial_cluster={value:?} is not valid: {reason} (form: NAME=http://HOST:2380,NAME=http://HOST:2380,...)")]
    BadEtcdCluster { value: String, reason: String },
    #[error("plinth.etcd_initial_cluster is for master nodes: an agent runs no etcd member (use plinth.role=master)")]
    EtcdWithoutMaster,
    #[error("this node (hostname {hostname:?}, address {address}) is not a member of plinth.etcd_initial_cluster; name it there, or set plinth.etcd_name=")]
    NotAnEtcdMember { hostname: String, address: String },
    #[error("plinth.master={0:?} is not an http:// or https:// URL with a host")]
    BadMasterUrl(String),
    #[error("ip={entry:?} is not valid: {reason} (form: ip=CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:AUTOCONF[:DNS0[:DNS1]] or ip=dhcp)")]
    BadIp { entry: String, reason: String },
    #[error(
        "plinth.hostname={0:?} is not a valid hostname (letters, digits, '-', '.', at most 63 characters per label)"
    )]
    BadHostname(String),
}

/// A filesystem to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: Option<&'static str>,
}

/// The mount flags the init uses, kept as data so plans compare in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountFlags {
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

/// Where the hostname comes from, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostnameSource {
    /// `plinth.hostname=` or the hostname field of a static `ip=`.
    Explicit(String),
    /// The DHCP server's hostname option, else `plinth-` and the last 3 bytes of the MAC.
    DhcpOrMac,
}

/// Everything needed to start the role; run-time facts are added by [`role_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleLaunch {
    pub role: Role,
    pub master_url: Option<String>,
    pub token: Option<String>,
    /// `plinth.<flag>=value` passed through as `--<flag> value`, overriding derived flags.
    pub extra_flags: Vec<(String, Option<String>)>,
}

/// One boot step. The order in the plan is the order of execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Mount(MountSpec),
    /// Copy the initramfs into a tmpfs and switch root to it, so containers can `pivot_root`
    /// (impossible from the initramfs rootfs). Skipped when `/` already is a real mount.
    LeaveInitramfs,
    /// Write `+cpu +memory ...` (every available controller) to the root `cgroup.subtree_control`.
    EnableCgroupControllers,
    /// Ask the kernel for SIGINT on ctrl-alt-del instead of an instant reboot.
    TrapCtrlAltDel,
    /// Load these modules (and their dependencies) if the image has them.
    LoadModules(Vec<String>),
    /// Load the modules whose modalias patterns match devices under /sys.
    LoadHardwareModules,
    /// Load these modules on a thread of their own while the boot goes on: what only
    /// containers need (overlay, veth, bridge, netfilter), so the role starts without
    /// waiting for them. `CONTAINER_MODULES_LOADING` exists until they are in; the
    /// executor waits for it before it starts a container.
    LoadModulesInBackground(Vec<String>),
    Loopback,
    Network(Vec<NetConfig>),
    Hostname(HostnameSource),
    /// Mount the disk labelled `label` at `target`, else a tmpfs.
    DataDisk {
        label: &'static str,
        target: &'static str,
    },
    NodeApi {
        port: u16,
    },
    /// Run this node's etcd member (supervised like the role, started before it).
    StartEtcd(EtcdLaunch),
    StartRole(RoleLaunch),
}

impl Phase {
    /// Short name for logs and the boot timing in `/node/v1/status`.
    pub fn name(&self) -> String {
        match self {
            Phase::Mount(m) => format!("mount {}", m.target),
            Phase::LeaveInitramfs => "leave initramfs".into(),
            Phase::EnableCgroupControllers => "cgroup controllers".into(),
            Phase::TrapCtrlAltDel => "trap ctrl-alt-del".into(),
            Phase::LoadModules(m) => format!("load {} modules", m.len()),
            Phase::LoadHardwareModules => "hardware modules".into(),
            Phase::LoadModulesInBackground(m) => format!("load {} modules in the background", m.len()),
            Phase::Loopback => "loopback".into(),
            Phase::Network(n) => format!("network ({} interfaces)", n.len()),
            Phase::Hostname(_) => "hostname".into(),
            Phase::DataDisk { .. } => "data disk".into(),
            Phase::NodeApi { port } => format!("node API :{port}"),
            Phase::StartEtcd(_) => "start etcd".into(),
            Phase::StartRole(l) => format!("start {}", l.role),
        }
    }
}

const BASIC: MountFlags = MountFlags { nosuid: true, nodev: true, noexec: true };

/// The early mounts, in order. `/proc` comes first: leaving the initramfs needs it.
pub fn early_mounts() -> Vec<MountSpec> {
    let m = |source, target, fstype, flags, data| MountSpec { source, target, fstype, flags, data };
    vec![
        m("proc", "/proc", "proc", BASIC, None),
        m("sysfs", "/sys", "sysfs", BASIC, None),
        m("devtmpfs", "/dev", "devtmpfs", MountFlags { nosuid: true, ..Default::default() }, Some("mode=0755")),
        m(
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags { nosuid: true, noexec: true, nodev: false },
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
        m("shm", "/dev/shm", "tmpfs", MountFlags { nosuid: true, nodev: true, noexec: false }, Some("mode=1777")),
        m("run", "/run", "tmpfs", MountFlags { nosuid: true, nodev: true, noexec: false }, Some("mode=0755")),
        m("tmp", "/tmp", "tmpfs", MountFlags { nosuid: true, nodev: true, noexec: false }, Some("mode=1777")),
        m("cgroup2", "/sys/fs/cgroup", "cgroup2", BASIC, Some("nsdelegate")),
    ]
}

/// Command-line keys the init consumes itself; every other `plinth.*` key is a role flag.
const INIT_KEYS: &[&str] = &[
    "role",
    "master",
    "token",
    "hostname",
    "modules",
    "iface",
    "noswitchroot",
    "fatal_wait",
    "etcd_initial_cluster",
    "etcd-initial-cluster",
    "etcd_name",
    "etcd-name",
];

/// `plinth.etcd_initial_cluster=` (or with dashes, as etcd spells its flag).
fn etcd_of(cmdline: &KernelCmdline) -> Result<Option<EtcdLaunch>, PlanError> {
    let either = |key: &str| {
        cmdline.get(&format!("plinth.{key}")).or_else(|| cmdline.get(&format!("plinth.{}", key.replace('_', "-"))))
    };
    either("etcd_initial_cluster").map(|value| parse_initial_cluster(value, either("etcd_name"))).transpose()
}

/// The boot plan for this command line.
pub fn plan(cmdline: &KernelCmdline) -> Result<Vec<Phase>, PlanError> {
    let role = Role::parse(cmdline.get("plinth.role").ok_or(PlanError::MissingRole)?)?;
    let master_url = cmdline.get("plinth.master").map(str::to_string);
    if let Some(url) = &master_url {
        validate_master_url(url)?;
    }
    if role == Role::Agent && master_url.is_none() {
        return Err(PlanError::AgentWithoutMaster);
    }
    let network = network_plan(cmdline)?;
    let hostname = match cmdline.get("plinth.hostname") {
        Some(h) => {
            validate_hostname(h)?;
            HostnameSource::Explicit(h.to_string())
        }
        None => match network.iter().find_map(|n| match n {
            NetConfig::Static(s) => s.hostname.clone(),
            NetConfig::Dhcp { .. } => None,
        }) {
            Some(h) => HostnameSource::Explicit(h),
            None => HostnameSource::DhcpOrMac,
        },
    };

    let mut mounts = early_mounts().into_iter();
    let mut phases = Vec::new();
    phases.push(Phase::Mount(mounts.next().expect("early_mounts starts with /proc")));
    if !cmdline.has("plinth.noswitchroot") {
        phases.push(Phase::LeaveInitramfs);
    }
    phases.extend(mounts.map(Phase::Mount));
    phases.push(Phase::EnableCgroupControllers);
    phases.push(Phase::TrapCtrlAltDel);

    let mut modules: Vec<String> = BASE_MODULES.iter().map(|m| m.to_string()).collect();
    if let Some(extra) = cmdline.get("plinth.modules") {
        modules.extend(extra.split(',').filter(|m| !m.is_empty()).map(str::to_string));
    }
    phases.push(Phase::LoadModules(modules));
    phases.push(Phase::LoadHardwareModules);
    if role.runs_agent() {
        // Disks and NICs first (the network needs them); containers' modules meanwhile.
        phases.push(Phase::LoadModulesInBackground(CONTAINER_MODULES.iter().map(|m| m.to_string()).collect()));
    }
    phases.push(Phase::Loopback);
    if !network.is_empty() {
        phases.push(Phase::Network(network));
    }
    phases.push(Phase::Hostname(hostname));
    phases.push(Phase::DataDisk { label: DATA_LABEL, target: DATA_DIR });
    phases.push(Phase::NodeApi { port: NODE_API_PORT });

    let etcd = etcd_of(cmdline)?;
    let mut extra_flags: Vec<(String, Option<String>)> = Vec::new();
    if let Some(etcd) = etcd {
        if !role.runs_master() {
            return Err(PlanError::EtcdWithoutMaster);
        }
        // The master talks to every member (a later plinth.etcd= still wins).
        extra_flags.push(("etcd".into(), Some(etcd.client_urls())));
        phases.push(Phase::StartEtcd(etcd));
    }
    extra_flags.extend(
        cmdline
            .with_prefix("plinth.")
            .filter(|(k, _)| !INIT_KEYS.contains(k))
            .map(|(k, v)| (k.replace('_', "-"), v.map(str::to_string))),
    );
    phases.push(Phase::StartRole(RoleLaunch {
        role,
        master_url,
        token: cmdline.get("plinth.token").map(str::to_string),
        extra_flags,
    }));
    Ok(phases)
}

fn validate_master_url(url: &str) -> Result<(), PlanError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| PlanError::BadMasterUrl(url.to_string()))?;
    let host = rest.split(['/', ':']).next().unwrap_or("");
    if host.is_empty() {
        return Err(PlanError::BadMasterUrl(url.to_string()));
    }
    Ok(())
}

fn validate_hostname(h: &str) -> Result<(), PlanError> {
    if plinth_protocol::is_valid_hostname(h) {
        Ok(())
    } else {
        Err(PlanError::BadHostname(h.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn plan_of(line: &str) -> Result<Vec<Phase>, PlanError> {
        plan(&KernelCmdline::parse(line))
    }

    fn launch(phases: &[Phase]) -> &RoleLaunch {
        match phases.last() {
            Some(Phase::StartRole(l)) => l,
            other => panic!("plan must end by starting the role, got {other:?}"),
        }
    }

    fn modules(phases: &[Phase]) -> &[String] {
        phases
            .iter()
            .find_map(|p| match p {
                Phase::LoadModules(m) => Some(m.as_slice()),
                _ => None,
            })
            .expect("plan loads modules")
    }

    fn background_modules(phases: &[Phase]) -> &[String] {
        phases
            .iter()
            .find_map(|p| match p {
                Phase::LoadModulesInBackground(m) => Some(m.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "node-a".into(),
            advertise_ip: Some(Ipv4Addr::new(10, 0, 2, 15)),
            cpus: 2,
            mem_mb: 2048,
            disk_mb: 1000,
        }
    }

    #[test]
    fn standalone_mounts_first_then_modules_network_and_role_last() {
        let phases = plan_of("console=ttyS0 plinth.role=standalone").expect("valid");
        assert_eq!(phases[0], Phase::Mount(early_mounts()[0].clone()));
        assert_eq!(phases[1], Phase::LeaveInitramfs);
        let targets: Vec<_> = phases
            .iter()
            .filter_map(|p| match p {
                Phase::Mount(m) => Some(m.target),
                _ => None,
            })
            .collect();
        assert_eq!(targets, ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup"]);
        let pos = |want: fn(&Phase) -> bool| phases.iter().position(want).expect("phase present");
        assert!(
            pos(|p| matches!(p, Phase::EnableCgroupControllers))
                > pos(|p| matches!(p, Phase::Mount(m) if m.target == "/sys/fs/cgroup"))
        );
        assert!(pos(|p| matches!(p, Phase::LoadModules(_))) < pos(|p| matches!(p, Phase::Network(_))));
        assert!(pos(|p| matches!(p, Phase::Network(_))) < pos(|p| matches!(p, Phase::Hostname(_))));
        assert!(pos(|p| matches!(p, Phase::DataDisk { .. })) < pos(|p| matches!(p, Phase::StartRole(_))));
        assert_eq!(
            phases.iter().find(|p| matches!(p, Phase::Network(_))),
            Some(&Phase::Network(vec![NetConfig::Dhcp { iface: None }]))
        );
        assert!(background_modules(&phases).contains(&"overlay".to_string()), "standalone runs containers");
        assert!(!modules(&phases).contains(&"overlay".to_string()), "containers' modules do not hold the boot up");
        let pos = |f: &dyn Fn(&Phase) -> bool| phases.iter().position(f).expect("phase present");
        assert!(
            pos(&|p| matches!(p, Phase::LoadHardwareModules))
                < pos(&|p| matches!(p, Phase::LoadModulesInBackground(_))),
            "NIC and disk drivers first"
        );
        let l = launch(&phases);
        assert_eq!(l.role, Role::Standalone);
        let cmd = role_args(l, &facts());
        assert_eq!(
            cmd.args,
            [
                "standalone",
                "--listen",
                "0.0.0.0:8080",
                "--data-dir",
                "/var/lib/plinth/master",
                "--work-dir",
                "/var/lib/plinth/agent",
                "--hostname",
                "node-a",
                "--advertise-ip",
                "10.0.2.15",
                "--resources",
                "cpus:2;mem:1536;disk:900;ports:[31000-32000]"
            ]
        );
    }

    #[test]
    fn a_master_in_its_own_etcd_cluster_starts_etcd_first_and_talks_to_every_member() {
        let cluster = "m1=http://10.0.0.11:2380,m2=http://10.0.0.12:2380,m3=http://10.0.0.13:2380";
        let phases = plan_of(&format!("plinth.role=master plinth.etcd-initial-cluster={cluster}")).expect("valid");
        let etcd_at = phases.iter().position(|p| matches!(p, Phase::StartEtcd(_))).expect("etcd is started");
        assert_eq!(etcd_at, phases.len() - 2, "right before the role");
        let cmd = role_args(launch(&phases), &facts());
        let urls = "http://10.0.0.11:2379,http://10.0.0.12:2379,http://10.0.0.13:2379";
        assert_eq!(cmd.args[cmd.args.len() - 2..], ["--etcd".to_string(), urls.to_string()]);
        assert!(cmd.args.windows(2).any(|w| w == ["--hostname", "10.0.2.15"]), "named by its address: {cmd:?}");
        assert!(!cmd.args.iter().any(|a| a.contains("initial-cluster")), "an init key, not a master flag: {cmd:?}");
        // An explicit plinth.etcd= (an etcd elsewhere) wins over the derived URLs.
        let phases =
            plan_of(&format!("plinth.role=master plinth.etcd_initial_cluster={cluster} plinth.etcd=http://e:2379"))
                .expect("valid");
        let cmd = role_args(launch(&phases), &facts());
        assert_eq!(cmd.args.iter().filter(|a| *a == "--etcd").count(), 1, "{cmd:?}");
        assert_eq!(cmd.args.last().map(String::as_str), Some("http://e:2379"));
        let agent = plan_of(&format!(
            "plinth.role=agent plinth.master=http://10.0.0.1:8080 plinth.etcd_initial_cluster={cluster}"
        ));
        assert_eq!(agent, Err(PlanError::EtcdWithoutMaster));
        assert!(matches!(
            plan_of("plinth.role=master plinth.etcd_initial_cluster=m1"),
            Err(PlanError::BadEtcdCluster { .. })
        ));
    }

    #[test]
    fn master_has_no_container_modules_and_no_agent_flags() {
        let phases = plan_of("plinth.role=master plinth.hostname=m1").expect("valid");
        assert!(!modules(&phases).contains(&"overlay".to_string()));
        assert!(background_modules(&phases).is_empty(), "a master runs no containers");
        assert!(phases.contains(&Phase::Hostname(HostnameSource::Explicit("m1".into()))));
        let cmd = role_args(launch(&phases), &facts());
        assert_eq!(cmd.args, ["master", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/plinth/master"]);
        assert!(cmd.env.is_empty());
    }

    #[test]
    fn agent_gets_master_url_token_in_env_and_passthrough_flags() {
        let phases = plan_of(
            "plinth.role=agent plinth.master=http://192.168.76.1:8080 plinth.token=s3cret plinth.attributes=rack:r1 plinth.resources=cpus:1;mem:256 plinth.modules=dummy,",
        )
        .expect("valid");
        assert!(modules(&phases).ends_with(&["dummy".to_string()]));
        let cmd = role_args(launch(&phases), &facts());
        assert_eq!(
            cmd.args,
            [
                "agent",
                "--master",
                "http://192.168.76.1:8080",
                "--work-dir",
                "/var/lib/plinth/agent",
                "--hostname",
                "node-a",
                "--advertise-ip",
                "10.0.2.15",
                "--attributes",
                "rack:r1",
                "--resources",
                "cpus:1;mem:256"
            ]
        );
        assert_eq!(cmd.env, [("PLINTH_TOKEN".to_string(), "s3cret".to_string())]);
        assert!(!cmd.args.iter().any(|a| a.contains("s3cret")), "the token is in no argument");
        assert_eq!(agent_work_dir(launch(&phases)).as_deref(), Some("/var/lib/plinth/agent"));
    }

    #[test]
    fn the_agent_work_dir_follows_its_flag_and_masters_have_none() {
        let phases = plan_of("plinth.role=agent plinth.master=http://10.0.0.1:8080 plinth.work_dir=/data/a").unwrap();
        assert_eq!(agent_work_dir(launch(&phases)).as_deref(), Some("/data/a"));
        let phases = plan_of("plinth.role=standalone").unwrap();
        assert_eq!(agent_work_dir(launch(&phases)).as_deref(), Some("/var/lib/plinth/agent"));
        let phases = plan_of("plinth.role=master").unwrap();
        assert_eq!(agent_work_dir(launch(&phases)), None);
    }

    #[test]
    fn bad_command_lines_give_clear_errors() {
        assert_eq!(plan_of("console=ttyS0"), Err(PlanError::MissingRole));
        let err = plan_of("plinth.role=nonsense").expect_err("unknown role");
        assert_eq!(err, PlanError::UnknownRole("nonsense".into()));
        assert!(err.to_string().contains("\"nonsense\" is not a role; use master, agent or standalone"));
        assert_eq!(plan_of("plinth.role=agent"), Err(PlanError::AgentWithoutMaster));
        assert_eq!(
            plan_of("plinth.role=agent plinth.master=10.0.0.1:8080"),
            Err(PlanError::BadMasterUrl("10.0.0.1:8080".into()))
        );
        assert_eq!(plan_of("plinth.role=master plinth.hostname=-bad"), Err(PlanError::BadHostname("-bad".into())));
        assert!(matches!(plan_of("plinth.role=master ip=10.0.0.300::::::off"), Err(PlanError::BadIp { .. })));
        assert!(matches!(plan_of("plinth.role=master ip=::::::off"), Err(PlanError::BadIp { .. })));
        assert!(matches!(plan_of("plinth.role=master ip=10.0.0.1:::255.0.255.0:::off"), Err(PlanError::BadIp { .. })));
    }

    #[test]
    fn ip_entries_give_static_and_dhcp_per_interface() {
        let phases = plan_of(
            "plinth.role=master ip=:::::eth0:dhcp ip=192.168.76.1::192.168.76.254:255.255.255.0:m1:eth1:off:192.168.76.53",
        )
        .expect("valid");
        let net = phases.iter().find(|p| matches!(p, Phase::Network(_))).expect("network phase");
        assert_eq!(
            net,
            &Phase::Network(vec![
                NetConfig::Dhcp { iface: Some("eth0".into()) },
                NetConfig::Static(StaticAddr {
                    iface: Some("eth1".into()),
                    address: Ipv4Addr::new(192, 168, 76, 1),
                    prefix_len: 24,
                    gateway: Some(Ipv4Addr::new(192, 168, 76, 254)),
                    hostname: Some("m1".into()),
                    dns: vec![Ipv4Addr::new(192, 168, 76, 53)],
                }),
            ])
        );
        assert!(
            phases.contains(&Phase::Hostname(HostnameSource::Explicit("m1".into()))),
            "static ip= hostname is used"
        );
        let off = plan_of("plinth.role=master ip=off plinth.noswitchroot").expect("valid");
        assert!(!off.iter().any(|p| matches!(p, Phase::Network(_))));
        assert!(!off.contains(&Phase::LeaveInitramfs));
    }

    #[test]
    fn netmask_prefix_and_resources() {
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        let small = NodeFacts { mem_mb: 512, disk_mb: 0, cpus: 0, ..facts() };
        assert_eq!(small.resources(), "cpus:1;mem:384;disk:64;ports:[31000-32000]");
    }
}
