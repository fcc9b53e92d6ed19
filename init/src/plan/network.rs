//! The network part of the plan: the kernel's `ip=` entries (static or DHCP per
//! interface) and `plinth.iface`, as [`NetConfig`]s.
use std::net::Ipv4Addr;

use super::{validate_hostname, PlanError};
use crate::cmdline::KernelCmdline;

/// How one interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfig {
    /// DHCP on the named interface, or the first Ethernet NIC found.
    Dhcp {
        iface: Option<String>,
    },
    Static(StaticAddr),
}

/// Static addressing from the kernel's `ip=` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAddr {
    pub iface: Option<String>,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub dns: Vec<Ipv4Addr>,
}

/// `ip=` entries → interface configs. No `ip=` means DHCP on `plinth.iface` or the first NIC.
pub(super) fn network_plan(cmdline: &KernelCmdline) -> Result<Vec<NetConfig>, PlanError> {
    let default_iface = cmdline.get("plinth.iface").map(str::to_string);
    let entries: Vec<&str> = cmdline.get_all("ip").collect();
    if entries.is_empty() {
        return Ok(vec![NetConfig::Dhcp { iface: default_iface }]);
    }
    let mut configs = Vec::new();
    for entry in entries {
        match entry {
            "off" | "none" => continue,
            "dhcp" | "on" | "any" | "both" | "bootp" => {
                configs.push(NetConfig::Dhcp { iface: default_iface.clone() });
                continue;
            }
            _ => {}
        }
        configs.push(parse_ip_entry(entry)?);
    }
    Ok(configs)
}

fn parse_ip_entry(entry: &str) -> Result<NetConfig, PlanError> {
    let bad = |reason: &str| PlanError::BadIp { entry: entry.to_string(), reason: reason.to_string() };
    let fields: Vec<&str> = entry.split(':').collect();
    let field = |i: usize| fields.get(i).copied().filter(|s| !s.is_empty());
    let iface = field(5).map(str::to_string);
    let autoconf = field(6).unwrap_or("off");
    match autoconf {
        "dhcp" | "on" | "any" | "both" | "bootp" => return Ok(NetConfig::Dhcp { iface }),
        "off" | "none" | "static" => {}
        other => return Err(bad(&format!("autoconf {other:?} is not dhcp, on, off or none"))),
    }
    let ip =
        |s: &str, what: &str| s.parse::<Ipv4Addr>().map_err(|_| bad(&format!("{what} {s:?} is not an IPv4 address")));
    let address = ip(field(0).ok_or_else(|| bad("static addressing needs the client address"))?, "client address")?;
    let gateway = field(2).map(|g| ip(g, "gateway")).transpose()?;
    let prefix_len = match field(3) {
        None => 24,
        Some(m) if m.contains('.') => {
            netmask_to_prefix(ip(m, "netmask")?).ok_or_else(|| bad("netmask is not contiguous"))?
        }
        Some(m) => m
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad("netmask is neither dotted nor a prefix length 0-32"))?,
    };
    let hostname = field(4).map(|h| validate_hostname(h).map(|_| h.to_string())).transpose()?;
    let dns = [field(7), field(8)].into_iter().flatten().map(|d| ip(d, "dns server")).collect::<Result<_, _>>()?;
    Ok(NetConfig::Static(StaticAddr { iface, address, prefix_len, gateway, hostname, dns }))
}

/// Prefix length of a contiguous netmask, `None` for masks like 255.0.255.0.
pub fn netmask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return None;
    }
    u8::try_from(ones).ok()
}
