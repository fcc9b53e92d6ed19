//! The shell around the pure DHCP decision: provisioning state shared with the master's
//! HTTP side (profiles, leases, machines that booted, all persisted), and the UDP
//! sockets (67, 4011, 69) bound to the PXE interface.
use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use plinth_protocol::error_chain;
use tokio::net::UdpSocket;

use crate::dhcp::{self, Decision, Destination, DhcpConfig, LeaseTable, Port};
use crate::mac::MacAddr;
use crate::profile::{DefaultProfile, MachineProfile, ProfileError};
use crate::store::{ProvisioningStore, SeenMachine, StoreError};
use crate::tftp;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("interface {interface} has no IPv4 address (the PXE interface needs one)")]
    NoAddress { interface: String },
    #[error("cannot bind UDP port {port} on {interface}")]
    Bind { port: u16, interface: String, source: std::io::Error },
    #[error("profile is invalid")]
    Invalid(Vec<ProfileError>),
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Provisioning state: the store plus in-memory copies the DHCP path reads without I/O.
pub struct Provisioning {
    store: ProvisioningStore,
    pub default_profile: DefaultProfile,
    profiles: Mutex<BTreeMap<MacAddr, MachineProfile>>,
    leases: Mutex<LeaseTable>,
    seen: Mutex<BTreeMap<MacAddr, SeenMachine>>,
    /// (reason kind, machine or source) pairs already logged.
    logged: Mutex<HashSet<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Provisioning {
    pub fn open(data_dir: &Path, default_profile: DefaultProfile) -> Result<Arc<Provisioning>, ServeError> {
        let store = ProvisioningStore::open(data_dir)?;
        let profiles = store.profiles()?;
        let leases = store.leases()?;
        let seen = store.seen()?;
        tracing::info!(path = %store.path().display(), profiles = profiles.len(), leases = leases.leases.len(), "provisioning store loaded");
        Ok(Arc::new(Provisioning {
            store,
            default_profile,
            profiles: Mutex::new(profiles),
            leases: Mutex::new(leases),
            seen: Mutex::new(seen),
            logged: Mutex::default(),
        }))
    }

    pub fn profiles(&self) -> BTreeMap<MacAddr, MachineProfile> {
        lock(&self.profiles).clone()
    }

    pub fn profile(&self, mac: MacAddr) -> Option<MachineProfile> {
        lock(&self.profiles).get(&mac).cloned()
    }

    /// The profile a machine boots with: its own, the default agent one, or none (ignored).
    pub fn boot_profile(&self, mac: MacAddr) -> Option<MachineProfile> {
        self.profile(mac).or_else(|| (self.default_profile == DefaultProfile::Agent).then(MachineProfile::default))
    }

    /// Validates and stores a profile; on error nothing changes.
    pub fn set_profile(&self, mac: MacAddr, profile: MachineProfile) -> Result<(), ServeError> {
        let errors = profile.validate();
        if !errors.is_empty() {
            return Err(ServeError::Invalid(errors));
        }
        let mut profiles = lock(&self.profiles);
        self.store.put_profile(mac, &profile)?;
        profiles.insert(mac, profile);
        tracing::info!(mac = %mac, "machine profile set");
        Ok(())
    }

    pub fn delete_profile(&self, mac: MacAddr) -> Result<bool, ServeError> {
        let mut profiles = lock(&self.profiles);
        let existed = self.store.delete_profile(mac)?;
        profiles.remove(&mac);
        Ok(existed)
    }

    pub fn seen(&self) -> BTreeMap<MacAddr, SeenMachine> {
        lock(&self.seen).clone()
    }

    pub fn leases(&self) -> LeaseTable {
        lock(&self.leases).clone()
    }

    /// Notes that `mac` asked to boot (DHCP with a boot file, or the iPXE script).
    pub fn record_boot(&self, mac: MacAddr, ip: Option<Ipv4Addr>, via: &str) {
        let mut seen = lock(&self.seen);
        let ip = ip.or_else(|| seen.get(&mac).and_then(|s| s.ip));
        let record = SeenMachine { ip, last_boot_ms: now_ms(), via: via.to_string() };
        if let Err(e) = self.store.put_seen(mac, &record) {
            tracing::warn!(mac = %mac, error = %error_chain(&e), "cannot record the boot");
        }
        seen.insert(mac, record);
    }

    /// Logs `what` about `subject` once (bad input must not flood the log).
    pub fn log_once(&self, kind: &str, subject: &str, what: &dyn std::fmt::Display) {
        let mut logged = lock(&self.logged);
        if logged.len() > 10_000 {
            logged.clear();
        }
        if logged.insert((kind.to_string(), subject.to_string())) {
            tracing::info!(kind, subject, "DHCP request ignored: {what}");
        }
    }

    /// Runs the pure decision over the current tables and persists lease changes.
    pub fn handle_dhcp(&self, packet: &[u8], port: Port, config: &DhcpConfig, source: SocketAddr) -> Decision {
        let profiles = self.profiles();
        let mut leases = lock(&self.leases);
        let decision = dhcp::decide(packet, port, config, &profiles, &mut leases, now_secs());
        if decision.leases_changed() {
            if let Err(e) = self.store.put_leases(&leases) {
                tracing::error!(error = %error_chain(&e), "cannot persist DHCP leases");
            }
        }
        drop(leases);
        match &decision {
            Decision::Reply(reply) => {
                tracing::info!(mac = %reply.mac, kind = ?reply.kind, client = ?reply.client, address = ?reply.address,
                    bootfile = reply.bootfile.as_deref().unwrap_or(""), "DHCP reply");
                if reply.bootfile.is_some() {
                    self.record_boot(reply.mac, reply.address, "dhcp");
                }
            }
            Decision::Ignore { reason, mac, .. } => {
                let subject = mac.map(|m| m.to_string()).unwrap_or_else(|| source.ip().to_string());
                self.log_once(reason.kind(), &subject, reason);
            }
        }
        decision
    }
}

/// The IPv4 address of `interface`.
pub fn interface_ipv4(interface: &str) -> Result<Ipv4Addr, ServeError> {
    let no_address = || ServeError::NoAddress { interface: interface.to_string() };
    let addrs = nix::ifaddrs::getifaddrs().map_err(|_| no_address())?;
    addrs
        .filter(|a| a.interface_name == interface)
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip())))
        .next()
        .ok_or_else(no_address)
}

/// What `plinth master --pxe-interface` serves.
#[derive(Debug, Clone)]
pub struct PxeConfig {
    pub interface: String,
    pub dhcp: DhcpConfig,
    /// Where `undionly.kpxe` and `ipxe.efi` are (Debian's `ipxe`: /usr/lib/ipxe).
    pub tftp_root: PathBuf,
    /// Whether DHCP is answered now: with HA masters only the leader answers (two
    /// masters offering would race), while every master serves boot files.
    pub answering: Answering,
}

/// A check asked before each DHCP answer (see [`PxeConfig::answering`]).
#[derive(Clone)]
pub struct Answering(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Answering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Answering({})", (self.0)())
    }
}

fn bind(port: u16, interface: &str, broadcast: bool) -> Result<UdpSocket, ServeError> {
    tftp::bind_udp(SocketAddr::from(([0, 0, 0, 0], port)), Some(interface), broadcast)
        .map_err(|source| ServeError::Bind { port, interface: interface.to_string(), source })
}

/// Binds DHCP (67, and 4011 for PXE boot-server requests) and TFTP (69) on the PXE
/// interface and serves them in background tasks. Errors binding are returned at once.
pub fn spawn(provisioning: Arc<Provisioning>, config: PxeConfig) -> Result<(), ServeError> {
    let dhcp_socket = Arc::new(bind(67, &config.interface, true)?);
    let boot_socket = Arc::new(bind(4011, &config.interface, true)?);
    let tftp_socket = bind(69, &config.interface, false)?;
    tracing::info!(interface = %config.interface, server_ip = %config.dhcp.server_ip, mode = ?config.dhcp.mode,
        tftp_root = %config.tftp_root.display(), "PXE boot server listening (DHCP 67, PXE 4011, TFTP 69)");
    let config = Arc::new(config);
    for (socket, port) in [(dhcp_socket, Port::Dhcp), (boot_socket, Port::PxeBoot)] {
        let provisioning = provisioning.clone();
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = dhcp_loop(&socket, port, &provisioning, &config).await {
                tracing::error!(error = %error_chain(&e), port = ?port, "DHCP socket failed; PXE boot stopped");
            }
        });
    }
    let root = config.tftp_root.clone();
    let interface = config.interface.clone();
    tokio::spawn(async move {
        if let Err(e) = tftp::serve(tftp_socket, root, Some(interface)).await {
            tracing::error!(error = %error_chain(&e), "TFTP socket failed");
        }
    });
    Ok(())
}

async fn dhcp_loop(
    socket: &UdpSocket,
    port: Port,
    provisioning: &Provisioning,
    config: &PxeConfig,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, source) = socket.recv_from(&mut buf).await?;
        if !(config.answering.0)() {
            continue;
        }
        let Decision::Reply(reply) = provisioning.handle_dhcp(&buf[..n], port, &config.dhcp, source) else { continue };
        let to = match reply.to {
            Destination::Broadcast => SocketAddr::from((Ipv4Addr::BROADCAST, 68)),
            Destination::Unicast(ip) => SocketAddr::from((ip, 68)),
            Destination::Source => source,
        };
        if let Err(e) = socket.send_to(&reply.packet, to).await {
            tracing::warn!(mac = %reply.mac, to = %to, error = %error_chain(&e), "cannot send the DHCP reply");
        }
    }
}
