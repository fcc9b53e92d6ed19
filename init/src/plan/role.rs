//! The role's command line at run time: the flags of `plinth master|agent|standalone`
//! from the plan's [`RoleLaunch`] and what the node found out at boot ([`NodeFacts`]).
use std::net::Ipv4Addr;

use super::{Role, RoleLaunch, DATA_DIR, MASTER_PORT};

/// What the node found out at boot, needed for the role's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub hostname: String,
    /// The address other nodes reach this one on.
    pub advertise_ip: Option<Ipv4Addr>,
    pub cpus: u32,
    pub mem_mb: u64,
    pub disk_mb: u64,
}

impl NodeFacts {
    /// Mesos resource string for the agent: leave memory for the OS and the agent itself.
    pub fn resources(&self) -> String {
        let reserve = (self.mem_mb / 4).clamp(128, 1024);
        let mem = self.mem_mb.saturating_sub(reserve).max(64);
        let disk = self.disk_mb.saturating_sub(self.disk_mb / 10).max(64);
        format!("cpus:{};mem:{};disk:{};ports:[31000-32000]", self.cpus.max(1), mem, disk)
    }
}

fn default_work_dir() -> String {
    format!("{DATA_DIR}/agent")
}

/// The agent's work dir when the role runs an agent (`plinth.work_dir=` or the default):
/// where a PXE-booted agent keeps the join token it got for its bootstrap token.
pub fn agent_work_dir(launch: &RoleLaunch) -> Option<String> {
    if !launch.role.runs_agent() {
        return None;
    }
    let flag = launch.extra_flags.iter().rev().find(|(name, _)| name == "work-dir");
    Some(flag.and_then(|(_, value)| value.clone()).unwrap_or_else(default_work_dir))
}

/// The role's argv (without argv\[0\]) and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCommand {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Flags for `plinth master|agent|standalone`, derived from the plan and run-time facts.
/// `plinth.<flag>=` on the command line replaces a derived flag of the same name.
pub fn role_args(launch: &RoleLaunch, facts: &NodeFacts) -> RoleCommand {
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    if launch.role.runs_master() {
        flags.push(("listen".into(), Some(format!("0.0.0.0:{MASTER_PORT}"))));
        flags.push(("data-dir".into(), Some(format!("{DATA_DIR}/master"))));
        // Masters sharing an etcd name the leader to each other (and to agents and
        // clients) by this; node hostnames resolve nowhere, addresses do.
        let in_ha = launch.extra_flags.iter().any(|(name, _)| name == "etcd");
        if let (true, Some(ip)) = (in_ha && launch.role == Role::Master, facts.advertise_ip) {
            flags.push(("hostname".into(), Some(ip.to_string())));
        }
    }
    if launch.role.runs_agent() {
        if launch.role == Role::Agent {
            if let Some(url) = &launch.master_url {
                flags.push(("master".into(), Some(url.clone())));
            }
        }
        flags.push(("work-dir".into(), Some(default_work_dir())));
        flags.push(("hostname".into(), Some(facts.hostname.clone())));
        if let Some(ip) = facts.advertise_ip {
            flags.push(("advertise-ip".into(), Some(ip.to_string())));
        }
        flags.push(("resources".into(), Some(facts.resources())));
    }
    for (name, value) in &launch.extra_flags {
        flags.retain(|(n, _)| n != name);
        flags.push((name.clone(), value.clone()));
    }

    let mut args = vec![launch.role.as_str().to_string()];
    for (name, value) in flags {
        args.push(format!("--{name}"));
        if let Some(v) = value {
            args.push(v);
        }
    }
    // The token travels in the environment so it does not show up in `ps` output (or in
    // any other process's /proc/PID/cmdline); /proc/PID/environ is the role's alone.
    let env = launch.token.iter().map(|t| ("PLINTH_TOKEN".to_string(), t.clone())).collect();
    RoleCommand { args, env }
}
