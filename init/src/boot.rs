//! Carries out a boot plan. Each phase either succeeds, degrades with a warning (a missing
//! module, no DHCP answer) or is fatal (no /proc, no role binary): see [`Boot::run_phase`].

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plinth_protocol::error_chain;
use tracing::{info, warn};

use crate::error::{InitError, Result};
use crate::modules::ModuleIndex;
use crate::net::{self, Lease, Link};
use crate::plan::{HostnameSource, MountFlags, NetConfig, NodeFacts, Phase};
use crate::system::System;

/// How one interface was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceState {
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub address: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub via: &'static str,
    pub lease: Option<Lease>,
}

/// Facts gathered while booting, for the role's flags and the status block.
#[derive(Debug, Clone, Default)]
pub struct BootState {
    pub ifaces: Vec<IfaceState>,
    pub hostname: String,
    pub data_dir_source: String,
    pub modules_loaded: usize,
    pub modules_missing: Vec<String>,
}

impl BootState {
    /// The address other nodes should use: the one on the master's subnet, else the first.
    pub fn advertise_ip(&self, master_url: Option<&str>) -> Option<Ipv4Addr> {
        let master_ip: Option<Ipv4Addr> = master_url
            .and_then(|u| u.split("://").nth(1))
            .and_then(|rest| rest.split(['/', ':']).next())
            .and_then(|h| h.parse().ok());
        let addrs = self.ifaces.iter().filter_map(|i| i.address);
        if let Some(m) = master_ip {
            let same_subnet = addrs.clone().find(|(a, p)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*p)).unwrap_or(0);
                u32::from(*a) & mask == u32::from(m) & mask
            });
            if let Some((a, _)) = same_subnet {
                return Some(a);
            }
        }
        addrs.map(|(a, _)| a).next()
    }
}

pub struct Boot<S: System> {
    pub sys: S,
    pub state: BootState,
    modules_dir: PathBuf,
    index: Option<ModuleIndex>,
    /// Module files already handled (loaded or failed), so rescans do not retry them.
    attempted: std::collections::BTreeSet<String>,
}

/// What the executor should do after a phase failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Severity {
    /// The node cannot work: show the error, count down, reboot.
    Fatal,
    /// The node works with less (no data disk, a missing module): warn and go on.
    Degraded,
}

/// Whether a failure of `phase` stops the boot.
pub fn severity(phase: &Phase) -> Severity {
    match phase {
        Phase::Mount(m) if matches!(m.target, "/proc" | "/sys" | "/dev") => Severity::Fatal,
        Phase::StartRole(_) | Phase::StartEtcd(_) => Severity::Fatal,
        _ => Severity::Degraded,
    }
}

impl<S: System> Boot<S> {
    pub fn new(sys: S, modules_dir: PathBuf) -> Self {
        Boot { sys, state: BootState::default(), modules_dir, index: None, attempted: Default::default() }
    }

    fn module_index(&mut self) -> &ModuleIndex {
        if self.index.is_none() {
            let mut read = |name: &str| {
                String::from_utf8_lossy(&self.sys.read_file(&self.modules_dir.join(name)).unwrap_or_default())
                    .into_owned()
            };
            let index = ModuleIndex::parse(&read("modules.dep"), &read("modules.builtin"), &read("modules.alias"))
                .with_softdeps(&read("modules.softdep"));
            self.index = Some(index);
        }
        self.index.as_ref().expect("set just above")
    }

    /// Loads `names` and their dependencies, a wave of independent modules at a time;
    /// returns how many files were loaded.
    pub fn load_modules(&mut self, names: &[String]) -> usize {
        let mut loaded = 0;
        for paths in self.module_waves(names) {
            for result in self.sys.load_modules_together(&paths) {
                match result {
                    Ok(()) => loaded += 1,
                    Err(e) => warn!(error = %error_chain(&e), "module load failed"),
                }
            }
        }
        self.state.modules_loaded += loaded;
        loaded
    }

    /// The module files `names` need, in waves that may load together, without those
    /// already handled (which from now on count as handled); missing ones are noted.
    pub fn module_waves(&mut self, names: &[String]) -> Vec<Vec<PathBuf>> {
        let (waves, missing) = self.module_index().load_waves(names);
        for m in &missing {
            info!(module = %m, "module not in this image, skipped");
        }
        self.state.modules_missing.extend(missing);
        waves
            .into_iter()
            .map(|wave| {
                wave.into_iter()
                    .filter(|rel| self.attempted.insert(rel.clone()))
                    .map(|rel| self.modules_dir.join(rel))
                    .collect::<Vec<PathBuf>>()
            })
            .filter(|paths| !paths.is_empty())
            .collect()
    }

    fn hardware_modaliases(&mut self) -> Vec<String> {
        let mut aliases = Vec::new();
        for bus in self.sys.list_dir(Path::new("/sys/bus")) {
            let devices = Path::new("/sys/bus").join(&bus).join("devices");
            for dev in self.sys.list_dir(&devices) {
                if let Ok(a) = self.sys.read_file(&devices.join(&dev).join("modalias")) {
                    let a = String::from_utf8_lossy(&a).trim().to_string();
                    if !a.is_empty() {
                        aliases.push(a);
                    }
                }
            }
        }
        aliases
    }

    pub fn enable_cgroup_controllers(&mut self) -> Result<()> {
        let root = Path::new("/sys/fs/cgroup");
        let available = self.sys.read_file(&root.join("cgroup.controllers"))?;
        let wanted: Vec<String> =
            String::from_utf8_lossy(&available).split_whitespace().map(|c| format!("+{c}")).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        self.sys.write_file(&root.join("cgroup.subtree_control"), wanted.join(" ").as_bytes())
    }

    /// Runs one phase other than `StartRole`/`NodeApi`/`LeaveInitramfs`/`TrapCtrlAltDel`,
    /// which need the process itself and are handled by the caller.
    pub fn run_phase(&mut self, phase: &Phase) -> Result<()> {
        match phase {
            Phase::Mount(m) => self.sys.mount(m.source, m.target, m.fstype, m.flags, m.data),
            Phase::EnableCgroupControllers => self.enable_cgroup_controllers(),
            // PID 1 runs this one on a thread (`pid1.rs`); here, for tests and other
            // callers, it loads in place.
            Phase::LoadModules(names) | Phase::LoadModulesInBackground(names) => {
                let n = self.load_modules(names);
                info!(loaded = n, "modules loaded");
                Ok(())
            }
            Phase::LoadHardwareModules => {
                // Twice: loading a bus driver (virtio_pci) reveals new devices (virtio_net).
                for _ in 0..2 {
                    let aliases = self.hardware_modaliases();
                    let wanted = self.module_index().match_aliases(aliases.iter().map(String::as_str));
                    let n = self.load_modules(&wanted);
                    info!(devices = aliases.len(), loaded = n, "hardware modules loaded");
                    if n == 0 {
                        break;
                    }
                }
                Ok(())
            }
            Phase::Hostname(source) => {
                let name = match source {
                    HostnameSource::Explicit(h) => h.clone(),
                    HostnameSource::DhcpOrMac => self
                        .state
                        .ifaces
                        .iter()
                        .find_map(|i| i.lease.as_ref().and_then(|l| l.hostname.clone()))
                        .or_else(|| self.state.ifaces.iter().find_map(|i| i.mac.map(|m| net::hostname_from_mac(&m))))
                        .unwrap_or_else(|| "plinth".to_string()),
                };
                self.sys.set_hostname(&name)?;
                let _ = self.sys.write_file(Path::new("/etc/hostname"), format!("{name}\n").as_bytes());
                // Resolve our own name locally: a lookup must never wait on outside DNS.
                let _ = self.sys.write_file(Path::new("/etc/hosts"), hosts_file(&name, &self.state.ifaces).as_bytes());
                self.state.hostname = name;
                Ok(())
            }
            Phase::DataDisk { label, target } => {
                self.sys.mkdir_all(Path::new(target))?;
                let found = crate::system::block_devices()
                    .into_iter()
                    .find(|dev| crate::system::ext4_label(dev).ok().flatten().as_deref() == Some(*label));
                let tmpfs = MountFlags { nosuid: true, nodev: true, noexec: false };
                match found {
                    Some(dev) => {
                        // Not loaded at boot: most nodes (PXE, VMs) have no data disk.
                        self.load_modules(&["ext4".to_string()]);
                        let dev_s = dev.to_string_lossy().into_owned();
                        match self.sys.mount(
                            &dev_s,
                            target,
                            "ext4",
                            MountFlags { nosuid: true, nodev: true, noexec: false },
                            None,
                        ) {
                            Ok(()) => {
                                self.state.data_dir_source = format!("{dev_s} (ext4, label {label})");
                                return Ok(());
                            }
                            Err(e) => warn!(error = %error_chain(&e), "data disk found but not mountable; using tmpfs"),
                        }
                    }
                    None => info!(label, "no data disk with this label; node data lives in memory (tmpfs)"),
                }
                self.sys.mount("plinth-data", target, "tmpfs", tmpfs, Some("mode=0755"))?;
                self.state.data_dir_source = "tmpfs (lost at reboot)".to_string();
                Ok(())
            }
            Phase::Loopback => {
                let links = net::list_links()?;
                for l in links.iter().filter(|l| l.loopback) {
                    net::link_up(l)?;
                }
                Ok(())
            }
            Phase::Network(configs) => self.configure_network(configs),
            Phase::LeaveInitramfs
            | Phase::TrapCtrlAltDel
            | Phase::NodeApi { .. }
            | Phase::StartEtcd(_)
            | Phase::StartRole(_) => Ok(()),
        }
    }

    fn configure_network(&mut self, configs: &[NetConfig]) -> Result<()> {
        // NICs may show up a moment after their driver loads.
        let mut links = Vec::new();
        for _ in 0..50 {
            links = net::list_links()?.into_iter().filter(|l| !l.loopback && l.mac.is_some()).collect::<Vec<Link>>();
            if !links.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut used: Vec<String> = Vec::new();
        let mut first_error = None;
        for config in configs {
            let want = match config {
                NetConfig::Dhcp { iface } => iface.clone(),
                NetConfig::Static(s) => s.iface.clone(),
            };
            let link = match &want {
                Some(name) => links.iter().find(|l| &l.name == name),
                None => links.iter().find(|l| !used.contains(&l.name)),
            };
            let Some(link) = link.cloned() else {
                let e = InitError::Net {
                    op: "finding interface".into(),
                    iface: want.unwrap_or_else(|| "(first NIC)".into()),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("found only {:?}", links.iter().map(|l| &l.name).collect::<Vec<_>>()),
                    ),
                };
                warn!(error = %error_chain(&e), "network interface missing");
                first_error.get_or_insert(e);
                continue;
            };
            used.push(link.name.clone());
            if let Err(e) = self.configure_link(&link, config) {
                warn!(error = %error_chain(&e), iface = %link.name, "interface not configured");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn configure_link(&mut self, link: &Link, config: &NetConfig) -> Result<()> {
        net::link_up(link)?;
        let mut state = IfaceState {
            name: link.name.clone(),
            mac: link.mac,
            address: None,
            gateway: None,
            via: "static",
            lease: None,
        };
        let result = match config {
            NetConfig::Static(s) => {
                net::add_address(link, s.address, s.prefix_len)?;
                state.address = Some((s.address, s.prefix_len));
                if let Some(gw) = s.gateway {
                    net::add_default_route(link, gw)?;
                    state.gateway = Some(gw);
                }
                if !s.dns.is_empty() {
                    let conf: String = s.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
                    let _ = self.sys.write_file(Path::new("/etc/resolv.conf"), conf.as_bytes());
                }
                info!(iface = %link.name, address = %s.address, prefix = s.prefix_len, "static address set");
                Ok(())
            }
            NetConfig::Dhcp { .. } => {
                state.via = "dhcp";
                if !net::wait_for_carrier(link, Duration::from_secs(5)) {
                    warn!(iface = %link.name, "no carrier after 5 s; trying DHCP anyway");
                }
                let lease = net::acquire_lease(link, Duration::from_secs(30))?;
                apply_lease(link, &lease)?;
                let _ = self.sys.write_file(Path::new("/etc/resolv.conf"), lease.resolv_conf().as_bytes());
                state.address = Some((lease.address, lease.prefix_len));
                state.gateway = lease.router;
                info!(iface = %link.name, address = %lease.address, prefix = lease.prefix_len, server = %lease.server, lease_secs = lease.lease_secs, "DHCP lease");
                spawn_renewal(link.clone(), lease.clone());
                state.lease = Some(lease);
                Ok(())
            }
        };
        self.state.ifaces.push(state);
        result
    }

    /// Node facts for the role's flags, read from /proc and the data dir.
    pub fn facts(&mut self, master_url: Option<&str>) -> NodeFacts {
        let cpus =
            std::thread::available_parallelism().map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX)).unwrap_or(1);
        let meminfo =
            String::from_utf8_lossy(&self.sys.read_file(Path::new("/proc/meminfo")).unwrap_or_default()).into_owned();
        let mem_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let disk_mb = nix::sys::statvfs::statvfs(crate::plan::DATA_DIR)
            .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
            .unwrap_or(0);
        NodeFacts {
            hostname: self.state.hostname.clone(),
            advertise_ip: self.state.advertise_ip(master_url),
            cpus,
            mem_mb: mem_kb / 1024,
            disk_mb,
        }
    }
}

/// `/etc/hosts`: localhost, and this node's name on each of its addresses.
pub fn hosts_file(hostname: &str, ifaces: &[IfaceState]) -> String {
    let mut out = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n");
    for (addr, _) in ifaces.iter().filter_map(|i| i.address) {
        out.push_str(&format!("{addr}\t{hostname}\n"));
    }
    out
}

fn apply_lease(link: &Link, lease: &Lease) -> Result<()> {
    net::add_address(link, lease.address, lease.prefix_len)?;
    if let Some(gw) = lease.router {
        net::add_default_route(link, gw)?;
    }
    Ok(())
}

/// Renews the lease at T1 for as long as the node runs; a failed renewal keeps the address
/// (the server may be down briefly) and retries after a minute.
fn spawn_renewal(link: Link, mut lease: Lease) {
    let spawned = std::thread::Builder::new().name(format!("dhcp-{}", link.name)).spawn(move || loop {
        std::thread::sleep(Duration::from_secs(u64::from(lease.renew_secs.max(30))));
        match net::renew_lease(&link, &lease, Duration::from_secs(20)) {
            Ok(new) => {
                if new.address != lease.address {
                    if let Err(e) = apply_lease(&link, &new) {
                        warn!(error = %error_chain(&e), "applying renewed lease failed");
                    }
                }
                info!(iface = %link.name, address = %new.address, "DHCP lease renewed");
                lease = new;
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "DHCP renewal failed; keeping the address");
                lease.renew_secs = 60;
            }
        }
    });
    if let Err(e) = spawned {
        warn!(error = %error_chain(&e), "cannot start DHCP renewal thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Records side effects; files come from a map.
    #[derive(Default)]
    struct FakeSystem {
        files: BTreeMap<PathBuf, Vec<u8>>,
        written: Vec<(PathBuf, String)>,
        loaded: Vec<PathBuf>,
        mounts: Vec<String>,
        fail_module: Option<&'static str>,
    }

    impl System for FakeSystem {
        fn mount(&mut self, _s: &str, target: &str, fstype: &str, _f: MountFlags, _d: Option<&str>) -> Result<()> {
            self.mounts.push(format!("{fstype} {target}"));
            Ok(())
        }
        fn mkdir_all(&mut self, _p: &Path) -> Result<()> {
            Ok(())
        }
        fn read_file(&mut self, path: &Path) -> Result<Vec<u8>> {
            self.files.get(path).cloned().ok_or_else(|| InitError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        }
        fn write_file(&mut self, path: &Path, data: &[u8]) -> Result<()> {
            self.written.push((path.to_path_buf(), String::from_utf8_lossy(data).into_owned()));
            Ok(())
        }
        fn load_module(&mut self, path: &Path) -> Result<()> {
            if self.fail_module.is_some_and(|f| path.ends_with(f)) {
                return Err(InitError::LoadModule {
                    path: path.to_path_buf(),
                    source: std::io::Error::from_raw_os_error(libc::ENOEXEC),
                });
            }
            self.loaded.push(path.to_path_buf());
            Ok(())
        }
        fn set_hostname(&mut self, _n: &str) -> Result<()> {
            Ok(())
        }
        fn list_dir(&mut self, path: &Path) -> Vec<String> {
            let mut names: Vec<String> = self
                .files
                .keys()
                .filter_map(|k| {
                    k.strip_prefix(path).ok()?.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned())
                })
                .collect();
            names.dedup();
            names
        }
    }

    fn fake() -> FakeSystem {
        let mut sys = FakeSystem::default();
        let m = |p: &str| PathBuf::from("/lib/modules/6.1").join(p);
        sys.files.insert(m("modules.dep"), b"kernel/a/virtio_pci.ko: kernel/a/virtio_pci_modern_dev.ko\nkernel/a/virtio_pci_modern_dev.ko:\nkernel/n/virtio_net.ko: kernel/n/failover.ko\nkernel/n/failover.ko:\n".to_vec());
        sys.files.insert(m("modules.alias"), b"alias virtio:d00000001v* virtio_net\n".to_vec());
        sys.files.insert("/sys/bus/virtio/devices/virtio0/modalias".into(), b"virtio:d00000001v00001AF4\n".to_vec());
        sys.files.insert("/sys/fs/cgroup/cgroup.controllers".into(), b"cpuset cpu io memory pids\n".to_vec());
        sys
    }

    #[test]
    fn listed_then_hardware_modules_load_in_dependency_order() {
        let mut boot = Boot::new(fake(), "/lib/modules/6.1".into());
        boot.run_phase(&Phase::LoadModules(vec!["virtio_pci".into(), "not_here".into()]))
            .expect("degrades, never fails");
        boot.run_phase(&Phase::LoadHardwareModules).expect("ok");
        let names: Vec<_> =
            boot.sys.loaded.iter().map(|p| p.file_name().expect("file").to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["virtio_pci_modern_dev.ko", "virtio_pci.ko", "failover.ko", "virtio_net.ko"]);
        assert_eq!(boot.state.modules_missing, ["not_here"]);
    }

    #[test]
    fn a_failing_module_does_not_stop_the_others() {
        let mut sys = fake();
        sys.fail_module = Some("failover.ko");
        let mut boot = Boot::new(sys, "/lib/modules/6.1".into());
        boot.run_phase(&Phase::LoadModules(vec!["virtio_net".into(), "virtio_pci".into()])).expect("degrades");
        assert_eq!(boot.state.modules_loaded, 3);
    }

    #[test]
    fn cgroup_controllers_are_all_enabled_for_children() {
        let mut boot = Boot::new(fake(), "/lib/modules/6.1".into());
        boot.run_phase(&Phase::EnableCgroupControllers).expect("ok");
        assert_eq!(
            boot.sys.written,
            [(PathBuf::from("/sys/fs/cgroup/cgroup.subtree_control"), "+cpuset +cpu +io +memory +pids".to_string())]
        );
    }

    #[test]
    fn only_core_mounts_and_the_role_are_fatal() {
        let plan = crate::plan::plan(&crate::cmdline::KernelCmdline::parse("plinth.role=standalone")).expect("valid");
        let fatal: Vec<_> = plan.iter().filter(|p| severity(p) == Severity::Fatal).collect();
        assert_eq!(fatal.len(), 4, "/proc, /sys, /dev and the role: {fatal:?}");
    }

    #[test]
    fn hostname_is_written_with_a_hosts_entry_per_address() {
        let mut boot = Boot::new(fake(), "/lib/modules/6.1".into());
        boot.state.ifaces.push(IfaceState {
            name: "eth0".into(),
            mac: None,
            address: Some(([10, 0, 2, 15].into(), 24)),
            gateway: None,
            via: "dhcp",
            lease: None,
        });
        boot.run_phase(&Phase::Hostname(HostnameSource::Explicit("n1".into()))).expect("ok");
        let hosts = boot
            .sys
            .written
            .iter()
            .find(|(p, _)| p == Path::new("/etc/hosts"))
            .map(|(_, c)| c.clone())
            .expect("hosts written");
        assert!(hosts.contains("127.0.1.1\tn1\n") && hosts.contains("10.0.2.15\tn1\n"), "{hosts}");
        assert_eq!(boot.state.hostname, "n1");
    }

    #[test]
    fn advertise_ip_prefers_the_masters_subnet() {
        let iface = |ip: [u8; 4]| IfaceState {
            name: "e".into(),
            mac: None,
            address: Some((ip.into(), 24)),
            gateway: None,
            via: "static",
            lease: None,
        };
        let state = BootState { ifaces: vec![iface([10, 0, 2, 15]), iface([192, 168, 76, 2])], ..Default::default() };
        assert_eq!(state.advertise_ip(Some("http://192.168.76.1:8080")), Some(Ipv4Addr::new(192, 168, 76, 2)));
        assert_eq!(state.advertise_ip(None), Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(BootState::default().advertise_ip(None), None);
    }
}
