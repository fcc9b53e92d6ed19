//! Container networking: the `plinth0` bridge with masquerading, address leases (IPAM),
//! one named network namespace per task, and the veth pair joining the two.
//!
//! Everything is done through netlink (`ip` is not on a Plinth node); only the
//! masquerade rule uses the `iptables` binary, and only when it exists. The named
//! namespace is made on a helper thread (`unshare(CLONE_NEWNET)`, then its
//! `/proc/thread-self/ns/net` is bind-mounted onto a file), so the executor itself never
//! leaves the agent's namespace. Teardown is idempotent and tolerates missing pieces:
//! it also runs for tasks whose executor died.
use futures::TryStreamExt;
use plinth_protocol::error_chain;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::ContainerError;

/// Named network namespaces of containers.
pub const NETNS_DIR: &str = "/run/plinth/netns";
const LEASES_FILE: &str = "leases.json";
const LOCK_FILE: &str = "leases.lock";

/// A parsed IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(text: &str) -> Result<Subnet, ContainerError> {
        let bad = |reason: &str| ContainerError::Subnet { subnet: text.to_string(), reason: reason.to_string() };
        let (addr, prefix) = text.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. 172.31.0.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("the prefix is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet { network: Ipv4Addr::from(u32::from(addr) & mask), prefix })
    }

    /// The bridge's own address: the first in the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Addresses a container may get: after the gateway, before broadcast.
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | (u32::MAX >> self.prefix);
        (first..broadcast).map(Ipv4Addr::from)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The named namespace file of a task.
pub fn netns_path(container_id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(container_id)
}

/// The host side of a task's veth: `pl` + 10 hex digits of a hash of the id (interface
/// names have at most 15 characters).
pub fn veth_name(container_id: &str) -> String {
    let digest = Sha256::digest(container_id.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("pl{hex}")
}

/// What a task's network is, once set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub netns: PathBuf,
    pub ip: Option<Ipv4Addr>,
    pub prefix: Option<u8>,
    pub gateway: Option<Ipv4Addr>,
    pub veth: Option<String>,
}

// ---------------------------------------------------------------------------------------
// IPAM

/// The lease file's content: address → container id.
type Leases = BTreeMap<Ipv4Addr, String>;

/// An exclusive lock on the IPAM directory (flock), released on drop.
struct IpamLock {
    _file: File,
    dir: PathBuf,
}

impl IpamLock {
    fn take(dir: &Path) -> Result<IpamLock, ContainerError> {
        std::fs::create_dir_all(dir).map_err(|source| ContainerError::Io {
            what: "creating the IPAM directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ContainerError::Io { what: "opening the IPAM lock", path: path.clone(), source })?;
        // SAFETY: flock on an fd we own; it blocks until the other executor is done.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ContainerError::Io { what: "locking", path, source: std::io::Error::last_os_error() });
        }
        Ok(IpamLock { _file: file, dir: dir.to_path_buf() })
    }

    fn read(&self) -> Result<Leases, ContainerError> {
        let path = self.dir.join(LEASES_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ContainerError::Ipam(format!("{} is not a lease file: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Leases::new()),
            Err(source) => Err(ContainerError::Io { what: "reading", path, source }),
        }
    }

    fn write(&self, leases: &Leases) -> Result<(), ContainerError> {
        let path = self.dir.join(LEASES_FILE);
        let tmp = self.dir.join(format!("{LEASES_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(leases).map_err(|e| ContainerError::Ipam(e.to_string()))?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| ContainerError::Io { what: "writing", path, source })
    }
}

/// Leases an address of `subnet` to `id` (the same one again if it has one).
pub fn lease(ipam_dir: &Path, subnet: Subnet, id: &str) -> Result<Ipv4Addr, ContainerError> {
    let lock = IpamLock::take(ipam_dir)?;
    let mut leases = lock.read()?;
    if let Some((ip, _)) = leases.iter().find(|(ip, owner)| *owner == id && subnet.contains(**ip)) {
        return Ok(*ip);
    }
    let ip = subnet
        .hosts()
        .find(|ip| !leases.contains_key(ip))
        .ok_or_else(|| ContainerError::Ipam(format!("no free address left in {subnet}")))?;
    leases.insert(ip, id.to_string());
    lock.write(&leases)?;
    Ok(ip)
}

/// Gives back every address leased to `id`; nothing leased is fine.
pub fn release(ipam_dir: &Path, id: &str) -> Result<(), ContainerError> {
    if !ipam_dir.join(LEASES_FILE).exists() {
        return Ok(());
    }
    let lock = IpamLock::take(ipam_dir)?;
    let mut leases = lock.read()?;
    let before = leases.len();
    leases.retain(|_, owner| owner != id);
    if leases.len() != before {
        lock.write(&leases)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// netlink

fn net_err(step: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Network { step: step.to_string(), message: e.to_string() }
}

/// Runs one netlink conversation on a private current-thread runtime, in the calling
/// thread's network namespace (the executor is synchronous).
fn with_netlink<T>(
    step: &str,
    f: impl AsyncFnOnce(rtnetlink::Handle) -> Result<T, rtnetlink::Error>,
) -> Result<T, ContainerError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| net_err(step, e))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| net_err(step, e))?;
        let conn_task = tokio::spawn(conn);
        let out = f(handle).await.map_err(|e| net_err(step, e));
        conn_task.abort();
        out
    })
}

async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await? {
        if link_name(&link).as_deref() == Some(name) {
            return Ok(Some(link.header.index));
        }
    }
    Ok(None)
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Makes sure the bridge exists with the subnet's first address and is up, that the
/// node forwards, and that container traffic leaving through another interface is
/// masqueraded. Safe to run concurrently (callers hold the IPAM lock) and repeatedly.
pub fn ensure_bridge(bridge: &str, subnet: Subnet) -> Result<(), ContainerError> {
    let gateway = subnet.gateway();
    let name = bridge.to_string();
    with_netlink("setting up the container bridge", async move |handle| {
        let index = match link_index(&handle, &name).await? {
            Some(index) => index,
            None => {
                handle.link().add(LinkBridge::new(&name).build()).execute().await?;
                link_index(&handle, &name).await?.ok_or(rtnetlink::Error::RequestFailed)?
            }
        };
        handle.address().add(index, gateway.into(), subnet.prefix).replace().execute().await?;
        handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await?;
        Ok(())
    })?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| net_err("enabling IPv4 forwarding (net.ipv4.ip_forward)", e))?;
    // The loopback case of the port proxy needs nothing more; containers reaching other
    // hosts need their source rewritten.
    let rule = ["-s", &subnet.to_string(), "!", "-o", bridge, "-j", "MASQUERADE"];
    match std::process::Command::new("iptables").args(["-w", "-t", "nat", "-C", "POSTROUTING"]).args(rule).output() {
        Ok(check) if check.status.success() => {}
        Ok(_) => {
            let add = std::process::Command::new("iptables")
                .args(["-w", "-t", "nat", "-A", "POSTROUTING"])
                .args(rule)
                .output()
                .map_err(|e| net_err("adding the masquerade rule", e))?;
            if !add.status.success() {
                return Err(net_err("adding the masquerade rule", String::from_utf8_lossy(&add.stderr).trim()));
            }
        }
        Err(err) => {
            tracing::warn!(err = %error_chain(&err), "iptables is not available: containers on the bridge cannot reach other hosts");
        }
    }
    Ok(())
}

/// Creates a named network namespace at `path` (with only `lo`, down).
fn create_netns(path: &Path) -> Result<(), ContainerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ContainerError::Io {
            what: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    File::create(path).map_err(|source| ContainerError::Io {
        what: "creating the namespace file",
        path: path.to_path_buf(),
        source,
    })?;
    let target = path.to_path_buf();
    // A thread of its own: unshare changes the calling thread's namespace, which must
    // not be the executor's main thread.
    let made = std::thread::spawn(move || -> Result<(), ContainerError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| net_err("creating a network namespace", e))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| net_err("pinning the network namespace", e))
    })
    .join()
    .map_err(|_| net_err("creating a network namespace", "the helper thread panicked"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Runs `f` on the calling thread inside the namespace at `netns`, and comes back to
/// the thread's own namespace after it: what `f` forks starts in `netns`.
pub fn inside_netns<T>(netns: &Path, f: impl FnOnce() -> Result<T, ContainerError>) -> Result<T, ContainerError> {
    let open = |path: &Path| {
        File::open(path).map_err(|source| ContainerError::Io {
            what: "opening the namespace",
            path: path.to_path_buf(),
            source,
        })
    };
    let (target, own) = (open(netns)?, open(Path::new("/proc/thread-self/ns/net"))?);
    nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| net_err("entering the task's network namespace", e))?;
    let result = f();
    // Threads started later (the port proxies) must start in the node's namespace.
    nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| net_err("coming back from the task's network namespace", e))?;
    result
}

/// Runs `f` on a helper thread that joined the namespace at `netns`.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, ContainerError> + Send + 'static,
) -> Result<T, ContainerError> {
    let file = File::open(netns).map_err(|source| ContainerError::Io {
        what: "opening the namespace",
        path: netns.to_path_buf(),
        source,
    })?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| net_err("entering the task's network namespace", e))?;
        f()
    })
    .join()
    .map_err(|_| net_err("configuring the task's network namespace", "the helper thread panicked"))?
}

fn loopback_up() -> Result<(), ContainerError> {
    with_netlink("bringing up lo", async |handle| {
        let index = link_index(&handle, "lo").await?.ok_or(rtnetlink::Error::RequestFailed)?;
        handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await
    })
}

/// NONE networking: a namespace with loopback only.
pub fn setup_none(id: &str) -> Result<Attached, ContainerError> {
    let netns = netns_path(id);
    create_netns(&netns)?;
    let attached = Attached { netns: netns.clone(), ip: None, prefix: None, gateway: None, veth: None };
    if let Err(err) = in_netns(&netns, loopback_up) {
        teardown(id, None);
        return Err(err);
    }
    Ok(attached)
}

/// BRIDGE networking: bridge, lease, namespace, veth with `eth0` inside. On failure
/// everything made so far is undone.
pub fn setup_bridge(id: &str, bridge: &str, subnet: &str, ipam_dir: &Path) -> Result<Attached, ContainerError> {
    let result = try_setup_bridge(id, bridge, subnet, ipam_dir);
    if result.is_err() {
        teardown(id, Some(ipam_dir));
    }
    result
}

fn try_setup_bridge(id: &str, bridge: &str, subnet: &str, ipam_dir: &Path) -> Result<Attached, ContainerError> {
    let subnet = Subnet::parse(subnet)?;
    {
        // Serialised with the other executors so two never race creating the bridge.
        let _lock = IpamLock::take(ipam_dir)?;
        ensure_bridge(bridge, subnet)?;
    }
    let ip = lease(ipam_dir, subnet, id)?;
    let netns = netns_path(id);
    create_netns(&netns)?;
    let veth = veth_name(id);
    let peer = format!("{veth}c");
    let ns_file = File::open(&netns).map_err(|source| ContainerError::Io {
        what: "opening the namespace",
        path: netns.clone(),
        source,
    })?;
    let (bridge_name, veth_host, peer_name) = (bridge.to_string(), veth.clone(), peer.clone());
    let ns_fd = ns_file.as_raw_fd();
    with_netlink("creating the veth pair", async move |handle| {
        // A leftover from a crashed executor with the same id goes first.
        if let Some(old) = link_index(&handle, &veth_host).await? {
            handle.link().del(old).execute().await?;
        }
        handle.link().add(LinkVeth::new(&veth_host, &peer_name).build()).execute().await?;
        let bridge_index = link_index(&handle, &bridge_name).await?.ok_or(rtnetlink::Error::RequestFailed)?;
        let host_index = link_index(&handle, &veth_host).await?.ok_or(rtnetlink::Error::RequestFailed)?;
        let peer_index = link_index(&handle, &peer_name).await?.ok_or(rtnetlink::Error::RequestFailed)?;
        handle.link().set(LinkUnspec::new_with_index(host_index).controller(bridge_index).build()).execute().await?;
        handle.link().set(LinkUnspec::new_with_index(host_index).up().build()).execute().await?;
        handle.link().set(LinkUnspec::new_with_index(peer_index).setns_by_fd(ns_fd).build()).execute().await?;
        Ok(())
    })?;
    drop(ns_file);
    let gateway = subnet.gateway();
    let prefix = subnet.prefix;
    in_netns(&netns, move || {
        loopback_up()?;
        with_netlink("configuring eth0", async move |handle| {
            let index = link_index(&handle, &peer).await?.ok_or(rtnetlink::Error::RequestFailed)?;
            handle.link().set(LinkUnspec::new_with_index(index).name("eth0".to_string()).build()).execute().await?;
            handle.address().add(index, ip.into(), prefix).replace().execute().await?;
            handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
            handle.route().add(route).replace().execute().await?;
            Ok(())
        })
    })?;
    Ok(Attached { netns, ip: Some(ip), prefix: Some(prefix), gateway: Some(gateway), veth: Some(veth) })
}

/// Removes the task's veth, namespace and lease. Missing pieces are fine; errors are
/// logged, never returned (teardown must get as far as it can).
pub fn teardown(id: &str, ipam_dir: Option<&Path>) {
    let veth = veth_name(id);
    let deleted = with_netlink("deleting the veth", async |handle| {
        if let Some(index) = link_index(&handle, &veth).await? {
            handle.link().del(index).execute().await?;
        }
        Ok(())
    });
    if let Err(err) = deleted {
        tracing::warn!(id, err = %error_chain(&err), "cannot delete the container's veth");
    }
    let netns = netns_path(id);
    if netns.exists() {
        // MNT_DETACH: a process still holding it (a dying container) must not block us.
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        if let Err(err) = std::fs::remove_file(&netns) {
            tracing::warn!(id, err = %error_chain(&err), "cannot remove the network namespace file");
        }
    }
    if let Some(dir) = ipam_dir {
        if let Err(err) = release(dir, id) {
            tracing::warn!(id, err = %error_chain(&err), "cannot release the container's address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_refuse_nonsense() {
        let subnet = Subnet::parse("172.31.0.7/24").expect("subnet");
        assert_eq!(subnet.network, Ipv4Addr::new(172, 31, 0, 0));
        assert_eq!(subnet.gateway(), Ipv4Addr::new(172, 31, 0, 1));
        assert_eq!(subnet.hosts().next(), Some(Ipv4Addr::new(172, 31, 0, 2)));
        assert_eq!(subnet.hosts().last(), Some(Ipv4Addr::new(172, 31, 0, 254)));
        for bad in ["172.31.0.0", "nope/24", "10.0.0.0/31", "10.0.0.0/x"] {
            let err = Subnet::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn leases_are_unique_stable_and_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let subnet = Subnet::parse("10.9.0.0/29").expect("subnet");
        let a = lease(dir.path(), subnet, "a").expect("a");
        let b = lease(dir.path(), subnet, "b").expect("b");
        assert_ne!(a, b);
        assert_eq!(lease(dir.path(), subnet, "a").expect("a again"), a);
        for id in ["c", "d", "e"] {
            lease(dir.path(), subnet, id).expect(id);
        }
        assert!(lease(dir.path(), subnet, "g").expect_err("full").to_string().contains("no free address"));
        release(dir.path(), "a").expect("release");
        assert_eq!(lease(dir.path(), subnet, "g").expect("g gets a's"), a);
        release(dir.path(), "nobody").expect("releasing nothing");
    }

    #[test]
    fn veth_names_fit() {
        let name = veth_name("some.very-long-task-id-0123456789");
        assert!(name.len() <= 15 && name.starts_with("pl"), "{name}");
        assert!(format!("{name}c").len() <= 15);
        assert_ne!(veth_name("a"), veth_name("b"));
    }
}
