//! Provisioning inside the master: the HTTP side of PXE boot (`/boot/ipxe` scripts per
//! machine, `/boot/vmlinuz` and `/boot/initramfs.img` with range requests), machine
//! profiles (`/v1/machines/{mac}`), the list of machines that booted with their state
//! (booting, registered, lost), and [`start`], which starts the DHCP/TFTP boot server of
//! `plinth-provisioning` on the PXE interface and returns these routes (`start.rs` serves
//! them with the API).
//!
//! Scripts carry no cluster secret: each one gets a fresh single-use bootstrap token bound
//! to the machine's MAC (`plinth.token=`), which the booted agent exchanges once at
//! `POST /agent/v1/join` for the cluster's join token. The tokens live in memory: after a
//! master restart a machine that had not joined yet is refused, and gets a new token when
//! it PXE-boots again (firmware fetches the script on every boot).
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use plinth_protocol::agent::{JoinRequest, Joined, TOKEN_HEADER};
use plinth_protocol::{error_chain, Timestamp, Violation};
use plinth_provisioning::bootstrap::BootstrapTokens;
use plinth_provisioning::dhcp::{AddressPool, DhcpConfig, DhcpMode};
use plinth_provisioning::profile::{ipxe_script, BootParams};
use plinth_provisioning::serve::{self, Provisioning, PxeConfig, ServeError};
use plinth_provisioning::{DefaultProfile, MacAddr, MachineProfile};

use crate::api::Body;
use crate::error::{ApiError, MasterError};
use crate::shell::Master;
use plinth_scheduler::Core;

/// How the PXE boot server answers DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PxeDhcp {
    /// Beside an existing DHCP server: boot options only.
    Proxy,
    /// Addresses from this range (isolated networks).
    Range(AddressPool),
}

/// Provisioning settings of `plinth master` (`--pxe-interface` etc.).
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// Interface DHCP/TFTP listen on; `None` serves only the HTTP side (profiles, files).
    pub pxe_interface: Option<String>,
    pub dhcp: PxeDhcp,
    /// Holds `vmlinuz` and `initramfs.img` (from `plinth image build`).
    pub boot_dir: Option<PathBuf>,
    /// Where `undionly.kpxe` and `ipxe.efi` are (Debian's `ipxe`).
    pub tftp_root: PathBuf,
    pub default_profile: DefaultProfile,
    /// The master's URL as booting machines reach it (default: the PXE interface's address).
    pub advertise_url: Option<String>,
    /// Every master booted agents are given (HA masters), else just [`Self::advertise_url`].
    pub agent_masters: Option<String>,
    /// How long a script's bootstrap token can be exchanged.
    pub bootstrap_ttl: Duration,
}

impl BootConfig {
    /// This master boots machines: it serves DHCP/TFTP, or boot files for another DHCP
    /// server's iPXE. Otherwise `/boot/ipxe` and `/agent/v1/join` answer 404.
    pub fn pxe_enabled(&self) -> bool {
        self.pxe_interface.is_some() || self.boot_dir.is_some()
    }
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            pxe_interface: None,
            dhcp: PxeDhcp::Proxy,
            boot_dir: None,
            tftp_root: PathBuf::from("/usr/lib/ipxe"),
            default_profile: DefaultProfile::Agent,
            advertise_url: None,
            agent_masters: None,
            bootstrap_ttl: plinth_provisioning::bootstrap::DEFAULT_TTL,
        }
    }
}

/// The HTTP side's state.
pub struct BootService {
    master: Arc<Master>,
    provisioning: Arc<Provisioning>,
    /// The master URL every script carries (the token is one per script).
    params: BootParams,
    boot_dir: Option<PathBuf>,
    enabled: bool,
    tokens: Mutex<BootstrapTokens>,
}

const PXE_DISABLED: &str = "PXE boot is not enabled on this master: start it with --pxe-interface IFACE \
                            (DHCP and TFTP) or --boot-dir DIR (boot files for another DHCP server's iPXE)";

/// Opens the provisioning store, starts DHCP/TFTP on the PXE interface (if any) and
/// returns the boot routes over `master` (`port`: the API's port as machines reach it).
pub fn start(master: &Arc<Master>, boot: &BootConfig, port: u16) -> Result<Router, MasterError> {
    let provisioning = Provisioning::open(&master.config.data_dir, boot.default_profile)?;
    let mut advertise = boot.advertise_url.clone();
    // Booted agents need the CA too (a file in the image, `plinth.ca_file=` in the profile).
    let scheme = if master.config.tls.is_some() { "https" } else { "http" };
    if let Some(interface) = &boot.pxe_interface {
        let server_ip = serve::interface_ipv4(interface)?;
        let url = advertise.get_or_insert_with(|| format!("{scheme}://{server_ip}:{port}")).clone();
        let mode = match &boot.dhcp {
            PxeDhcp::Proxy => DhcpMode::Proxy,
            PxeDhcp::Range(pool) => DhcpMode::Full(pool.clone()),
        };
        let dhcp = DhcpConfig { server_ip, mode, http_base: url, default_profile: boot.default_profile };
        serve::spawn(
            provisioning.clone(),
            PxeConfig {
                interface: interface.clone(),
                dhcp,
                tftp_root: boot.tftp_root.clone(),
                // DHCP from the leader alone (`leader.rs`); always, on redb.
                answering: {
                    let master = Arc::downgrade(master);
                    serve::Answering(Arc::new(move || master.upgrade().is_some_and(|m| m.leads())))
                },
            },
        )?;
    }
    let master_url = advertise.unwrap_or_else(|| format!("{scheme}://{}:{port}", master.config.hostname));
    let params = BootParams { agent_masters: boot.agent_masters.clone(), ..BootParams::new(master_url, None) };
    let enabled = boot.pxe_enabled();
    tracing::info!(master_url = %params.master_url, boot_dir = ?boot.boot_dir, pxe = enabled,
        bootstrap_ttl_secs = boot.bootstrap_ttl.as_secs(), "boot files and machine profiles served");
    let service = Arc::new(BootService {
        master: master.clone(),
        provisioning,
        params,
        boot_dir: boot.boot_dir.clone(),
        enabled,
        tokens: Mutex::new(BootstrapTokens::new(boot.bootstrap_ttl)),
    });
    Ok(router(service))
}

pub fn router(service: Arc<BootService>) -> Router {
    Router::new()
        .route("/boot/ipxe", get(script))
        .route("/agent/v1/join", post(join))
        .route("/boot/vmlinuz", get(|s, h| file(s, h, "vmlinuz")))
        .route("/boot/initramfs.img", get(|s, h| file(s, h, "initramfs.img")))
        .route("/v1/machines", get(list))
        .route("/v1/machines/{mac}", get(get_one).put(put).delete(delete))
        .with_state(service)
}

type Shared = State<Arc<BootService>>;

fn parse_mac(raw: &str) -> Result<MacAddr, ApiError> {
    raw.parse::<MacAddr>()
        .map_err(|e| ApiError::Invalid(vec![Violation { path: "/mac".into(), errors: vec![e.to_string()] }]))
}

fn ipxe_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// `GET /boot/ipxe?mac=...`: the iPXE script for one machine.
async fn script(
    State(boot): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !boot.enabled {
        return ApiError::NotFound(PXE_DISABLED.into()).into_response();
    }
    let Some(raw) = query.get("mac").filter(|m| !m.is_empty() && !m.contains('$')) else {
        // A client that did not expand ${mac}: ask again with the MAC of its first NIC.
        let base = &boot.params.master_url;
        return ipxe_text(StatusCode::OK, format!("#!ipxe\nchain {base}/boot/ipxe?mac=${{net0/mac}}\n"));
    };
    let Ok(mac) = raw.parse::<MacAddr>() else {
        return ipxe_text(
            StatusCode::BAD_REQUEST,
            format!("#!ipxe\necho plinth: {raw:?} is not a MAC address\nexit 1\n"),
        );
    };
    let Some(profile) = boot.provisioning.boot_profile(mac) else {
        boot.provisioning.log_once("unknown-machine", &mac.to_string(), &"no profile and unknown machines are ignored");
        return ipxe_text(
            StatusCode::NOT_FOUND,
            format!("#!ipxe\necho plinth: machine {mac} has no profile\nexit 1\n"),
        );
    };
    let ip = match peer.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    // A cluster without a join token needs no bootstrap token either; a master or standalone
    // machine starts a cluster of its own and gets none.
    let token = match &boot.master.config.token {
        Some(_) if profile.role == plinth_provisioning::Role::Agent => match random_bytes() {
            Ok(random) => Some(boot.lock_tokens().issue(mac, random, Timestamp::now())),
            Err(e) => return ApiError::Internal(format!("no randomness for a bootstrap token: {e}")).into_response(),
        },
        _ => None,
    };
    boot.provisioning.record_boot(mac, ip, "ipxe-script");
    tracing::info!(mac = %mac, peer = %peer, role = profile.role.as_str(), bootstrap_token = token.is_some(),
        "iPXE script served");
    let params = BootParams { token: token.map(|t| t.expose().to_string()), ..boot.params.clone() };
    ipxe_text(StatusCode::OK, ipxe_script(mac, &profile, &params))
}

fn random_bytes() -> Result<[u8; 32], getrandom::Error> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)?;
    Ok(random)
}

impl BootService {
    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, BootstrapTokens> {
        // The table is consistent after every call: a panic elsewhere cannot leave it half-changed.
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `POST /agent/v1/join`: a booted agent's bootstrap token (header `x-plinth-token`),
/// exchanged once for the cluster's join token. Used, expired or foreign tokens get 401.
async fn join(State(boot): Shared, headers: HeaderMap, body: Body) -> Result<Json<Joined>, ApiError> {
    if !boot.enabled {
        return Err(ApiError::NotFound(PXE_DISABLED.into()));
    }
    let Some(cluster_token) = &boot.master.config.token else {
        return Err(ApiError::NotFound("this master has no join token: agents join without one".into()));
    };
    let request: JoinRequest = body.json()?;
    let Some(given) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::Unauthorized(format!("no bootstrap token: send it in the header {TOKEN_HEADER}")));
    };
    let macs: Vec<MacAddr> = request.macs.iter().filter_map(|m| m.parse().ok()).collect();
    let redeemed = boot.lock_tokens().redeem(given, &macs, Timestamp::now());
    match redeemed {
        Ok(mac) => {
            tracing::info!(mac = %mac, node = %request.hostname, "bootstrap token exchanged for the join token");
            Ok(Json(Joined {
                token: cluster_token.expose().to_string(),
                cluster_id: crate::api::agents::cluster_id(&boot.master),
            }))
        }
        Err(e) => {
            tracing::warn!(node = %request.hostname, reason = %e, "bootstrap token refused");
            Err(ApiError::Unauthorized(format!("bootstrap token refused: {e}")))
        }
    }
}

/// A byte range request's answer for a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`); several ranges or other units get the whole file.
fn parse_range(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeAnswer::Whole };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeAnswer::Whole };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => Some((start, end.min(len.saturating_sub(1)))),
        (Some(start), None) if b.is_empty() => Some((start, len.saturating_sub(1))),
        (None, Some(suffix)) if a.is_empty() && suffix > 0 => Some((len.saturating_sub(suffix), len.saturating_sub(1))),
        _ => return RangeAnswer::Whole,
    };
    match range {
        Some((start, end)) if start < len && start <= end => RangeAnswer::Part { start, end },
        _ => RangeAnswer::Unsatisfiable,
    }
}

/// `GET /boot/vmlinuz`, `GET /boot/initramfs.img`, streamed, with single range requests.
async fn file(State(boot): Shared, headers: HeaderMap, name: &'static str) -> Response {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Some(dir) = &boot.boot_dir else {
        return ApiError::NotFound(format!(
            "no boot files: start the master with --boot-dir DIR (from plinth image build) to serve {name}"
        ))
        .into_response();
    };
    let path = dir.join(name);
    let opened = async {
        let f = tokio::fs::File::open(&path).await?;
        let len = f.metadata().await?.len();
        Ok::<_, std::io::Error>((f, len))
    };
    let (mut f, len) = match opened.await {
        Ok(x) => x,
        Err(e) => return ApiError::NotFound(format!("{}: {e}", path.display())).into_response(),
    };
    let range = parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), len);
    let (status, start, count) = match range {
        RangeAnswer::Whole => (StatusCode::OK, 0, len),
        RangeAnswer::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeAnswer::Unsatisfiable => {
            return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{len}"))])
                .into_response()
        }
    };
    if let Err(e) = f.seek(std::io::SeekFrom::Start(start)).await {
        return ApiError::Internal(format!("{}: {e}", path.display())).into_response();
    }
    let stream = futures::stream::unfold((f.take(count), false), |(mut reader, done)| async move {
        if done {
            return None;
        }
        let mut buf = vec![0u8; 256 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), (reader, false)))
            }
            Err(e) => Some((Err(e), (reader, true))),
        }
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = header::HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

/// One consistent copy of the provisioning tables for a listing.
struct MachinesView {
    profiles: std::collections::BTreeMap<MacAddr, MachineProfile>,
    seen: std::collections::BTreeMap<MacAddr, plinth_provisioning::store::SeenMachine>,
    leases: plinth_provisioning::LeaseTable,
}

impl MachinesView {
    fn of(p: &Provisioning) -> MachinesView {
        MachinesView { profiles: p.profiles(), seen: p.seen(), leases: p.leases() }
    }
}

/// One machine: its profile, what booted, and what the cluster knows of it.
fn machine_json(view: &MachinesView, core: &Core, mac: MacAddr) -> Value {
    let profile = view.profiles.get(&mac).cloned();
    let seen = view.seen.get(&mac).cloned();
    let lease_ip = view.leases.leases.get(&mac).filter(|l| l.bound).map(|l| l.ip);
    let ip = lease_ip.or(seen.as_ref().and_then(|s| s.ip));
    let hostname = profile.clone().unwrap_or_default().hostname_for(mac);
    let agent = core
        .agents()
        .find(|a| a.record.hostname == hostname || ip.is_some_and(|ip| a.record.advertise_ip == ip.to_string()));
    let state = match (agent, &seen) {
        (Some(a), _) if a.record.active => "registered",
        (Some(_), _) => "lost",
        (None, Some(_)) => "booting",
        (None, None) => "configured",
    };
    json!({
        "mac": mac.to_string(),
        "ip": ip.map(|ip| ip.to_string()).or_else(|| agent.map(|a| a.record.advertise_ip.clone())),
        "hostname": hostname,
        "state": state,
        "agentId": agent.map(|a| a.record.id.to_string()),
        "profile": profile,
        "lastBoot": seen.as_ref().map(|s| s.last_boot_ms as f64 / 1000.0),
        "bootedVia": seen.map(|s| s.via),
    })
}

/// `GET /v1/machines`: every machine with a profile or that booted.
async fn list(State(boot): Shared) -> Json<Value> {
    let view = MachinesView::of(&boot.provisioning);
    let macs: std::collections::BTreeSet<MacAddr> = view.profiles.keys().chain(view.seen.keys()).copied().collect();
    let guard = boot.master.read().await;
    let machines: Vec<Value> = macs.into_iter().map(|mac| machine_json(&view, &guard.core, mac)).collect();
    Json(json!({"machines": machines, "defaultProfile": boot.provisioning.default_profile}))
}

async fn get_one(State(boot): Shared, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&raw)?;
    let view = MachinesView::of(&boot.provisioning);
    if !view.profiles.contains_key(&mac) && !view.seen.contains_key(&mac) {
        return Err(ApiError::NotFound(format!("machine {mac} has no profile and has not booted")));
    }
    let guard = boot.master.read().await;
    Ok(Json(machine_json(&view, &guard.core, mac)))
}

/// `PUT /v1/machines/{mac}`: create or replace a profile (validated; nothing changes on error).
async fn put(State(boot): Shared, Path(raw): Path<String>, body: Body) -> Result<Response, ApiError> {
    let mac = parse_mac(&raw)?;
    let profile: MachineProfile = body.json()?;
    let existed = boot.provisioning.profile(mac).is_some();
    boot.provisioning.set_profile(mac, profile.clone()).map_err(|e| match e {
        ServeError::Invalid(errors) => ApiError::Invalid(
            errors.into_iter().map(|e| Violation { path: e.path.to_string(), errors: vec![e.message] }).collect(),
        ),
        other => ApiError::Internal(error_chain(&other).to_string()),
    })?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({"mac": mac.to_string(), "profile": profile}))).into_response())
}

async fn delete(State(boot): Shared, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&raw)?;
    match boot.provisioning.delete_profile(mac) {
        Ok(true) => Ok(Json(json!({"mac": mac.to_string(), "deleted": true}))),
        Ok(false) => Err(ApiError::NotFound(format!("machine {mac} has no profile"))),
        Err(e) => Err(ApiError::Internal(error_chain(&e).to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_requests() {
        assert_eq!(parse_range(None, 100), RangeAnswer::Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), RangeAnswer::Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=90-"), 100), RangeAnswer::Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-10"), 100), RangeAnswer::Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=50-500"), 100), RangeAnswer::Part { start: 50, end: 99 });
        assert_eq!(parse_range(Some("bytes=100-"), 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), RangeAnswer::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), RangeAnswer::Whole);
        assert_eq!(parse_range(Some("bytes=9-1"), 100), RangeAnswer::Whole);
    }
}
