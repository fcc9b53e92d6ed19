//! The service balancer inside the agent: for every service port in the master's service
//! table (every app, or only those of `--lb-group`) it listens on all of the agent's
//! addresses and spreads connections over the app's serving tasks. Table changes apply
//! in place: ports open and close, backends come and go, open connections are untouched.
//! A backend the table dropped counts as drained once its last connection through this
//! agent ends; the agent tells the master ([`Balancer::drained_generation`]), which kills
//! the task only then (or after its drain timeout).
//!
//! In http mode (`HAPROXY_{n}_MODE=http`) a backend counts requests in flight instead of
//! connections, so keep-alive clients never hold a drain up.
//!
//! One job per file: `frontend.rs` (one service port's routing state), `listeners.rs`
//! (sockets and accept loops), `http.rs` (the `--lb-http-port` frontend routing each
//! request by `HAPROXY_{n}_VHOST`), `pooled.rs` (http mode: per request over pooled
//! backend connections, kept in `pool.rs`), `exchange.rs` (what both HTTP proxies
//! share), `counted.rs` (upstream byte counters), `select.rs` (backend order), `proxy.rs`
//! (connecting to a backend, one TCP connection; `open.rs` counts each open one),
//! `udp.rs` (datagram flows), `stats.rs` (counters and their views).
mod counted;
mod exchange;
mod frontend;
mod http;
mod listeners;
mod open;
mod pool;
mod pooled;
mod proxy;
mod select;
pub mod stats;
mod udp;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use plinth_protocol::agent::{ServiceProtocol, ServiceTable};
use tokio::sync::Notify;
use tracing::{info, warn};

use frontend::Frontend;
use stats::{BackendStats, LbView};

/// `plinth agent`'s balancer flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbSettings {
    /// Off: no service port is served, and the master waits for no drain from this agent.
    pub enabled: bool,
    /// `--lb-group`: serve only apps labelled `HAPROXY_GROUP` with this name.
    pub group: Option<String>,
    /// The address service ports listen on (all of the agent's by default).
    pub bind: IpAddr,
    /// `--lb-http-port`: an HTTP frontend routing by host name (`HAPROXY_{n}_VHOST`).
    pub http_port: Option<u16>,
}

impl Default for LbSettings {
    fn default() -> Self {
        LbSettings { enabled: true, group: None, bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED), http_port: None }
    }
}

pub(crate) struct Balancer {
    settings: LbSettings,
    inner: Mutex<Inner>,
    /// Woken when a retired backend's last connection ends.
    drained: Arc<Notify>,
    /// The HTTP frontend's routes, and its listener (started with the first table).
    vhosts: http::VhostMap,
    http: Mutex<Option<Result<tokio::task::JoinHandle<()>, String>>>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    frontends: BTreeMap<(u16, ServiceProtocol), Arc<Frontend>>,
    /// Backends the table of that generation removed, while connections to them remain.
    retired: Vec<(u64, Arc<BackendStats>)>,
}

impl Balancer {
    pub fn new(settings: LbSettings) -> Self {
        Balancer {
            settings,
            inner: Mutex::new(Inner::default()),
            drained: Arc::new(Notify::new()),
            vhosts: http::VhostMap::default(),
            http: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("balancer lock is never poisoned")
    }

    /// The table generation applied (`None` when the balancer is off).
    pub fn applied_generation(&self) -> Option<u64> {
        self.settings.enabled.then(|| self.lock().generation)
    }

    /// The newest generation whose removed backends have no connection left here.
    pub fn drained_generation(&self) -> Option<u64> {
        if !self.settings.enabled {
            return None;
        }
        let mut inner = self.lock();
        inner.retired.retain(|(_, b)| b.active() > 0);
        let generation = inner.generation;
        Some(inner.retired.iter().map(|(g, _)| g.saturating_sub(1)).min().unwrap_or(generation))
    }

    /// Resolves when a drain may have completed (a retired backend's last connection ended).
    pub async fn drain_progress(&self) {
        self.drained.notified().await;
    }

    /// Applies a newer table in place; must run inside the tokio runtime (it spawns the
    /// listeners). Ports that could not be bound are retried with every table.
    pub fn apply(&self, table: ServiceTable) {
        if !self.settings.enabled {
            return;
        }
        let mut inner = self.lock();
        if table.generation <= inner.generation && inner.frontends.values().all(|f| f.listening()) {
            return;
        }
        let generation = table.generation.max(inner.generation);
        let wanted: Vec<_> =
            table.services.iter().filter(|s| self.settings.group.is_none() || s.group == self.settings.group).collect();
        let mut retired = Vec::new();
        for service in &wanted {
            let key = (service.service_port, service.protocol);
            let frontend = inner
                .frontends
                .entry(key)
                .or_insert_with(|| Arc::new(Frontend::new(service, self.drained.clone())))
                .clone();
            retired.extend(frontend.update(service, resolve));
            if !frontend.listening() {
                let started = listeners::start(&frontend, self.settings.bind);
                match &started {
                    Ok(_) => info!(port = service.service_port, protocol = %service.protocol, app_id = %service.app_id,
                        backends = service.backends.len(), "service port open"),
                    Err(error) => warn!(port = service.service_port, app_id = %service.app_id, %error,
                        "service port cannot be served"),
                }
                frontend.set_listener(started);
            }
        }
        let keys: Vec<_> = inner.frontends.keys().copied().collect();
        for key in keys {
            if wanted.iter().any(|s| (s.service_port, s.protocol) == key) {
                continue;
            }
            if let Some(frontend) = inner.frontends.remove(&key) {
                info!(port = key.0, protocol = %key.1, "service port closed");
                frontend.close();
                retired.extend(frontend.route().backends);
                for b in &frontend.route().backends {
                    b.retired.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        inner.retired.extend(retired.into_iter().map(|b| (generation, b)));
        // A task the table gave back (a flap) is no longer drained: its old connections hold nothing.
        let serving: std::collections::HashSet<(plinth_protocol::TaskId, SocketAddr)> = inner
            .frontends
            .values()
            .flat_map(|f| f.route().backends.into_iter().map(|b| (b.task_id.clone(), b.addr)))
            .collect();
        inner.retired.retain(|(_, b)| !serving.contains(&(b.task_id.clone(), b.addr)));
        inner.generation = generation;
        let routes = wanted
            .iter()
            .flat_map(|s| s.vhosts.iter().map(move |h| (h.clone(), (s.service_port, s.protocol))))
            .filter_map(|(host, key)| Some((host, inner.frontends.get(&key)?.clone())))
            .collect();
        *self.vhosts.write().expect("vhost lock is never poisoned") = routes;
        self.start_http();
    }

    /// The `--lb-http-port` frontend, once (retried with each table while it cannot bind).
    fn start_http(&self) {
        let Some(port) = self.settings.http_port else { return };
        let mut http = self.http.lock().expect("http lock is never poisoned");
        if matches!(*http, Some(Ok(_))) {
            return;
        }
        let started = http::start(port, self.settings.bind, self.vhosts.clone());
        match &started {
            Ok(_) => info!(port, "HTTP frontend open"),
            Err(error) => warn!(port, %error, "HTTP frontend cannot be served"),
        }
        *http = Some(started);
    }

    /// `GET /v1/lb`.
    pub fn view(&self) -> LbView {
        let drained_generation = self.drained_generation().unwrap_or(0);
        let inner = self.lock();
        let http_error = match &*self.http.lock().expect("http lock is never poisoned") {
            Some(Err(error)) => Some(error.clone()),
            _ => None,
        };
        LbView {
            generation: inner.generation,
            drained_generation,
            group: self.settings.group.clone(),
            http_port: self.settings.http_port,
            http_error,
            frontends: inner.frontends.values().map(|f| f.snapshot().view()).collect(),
        }
    }
}

/// A backend's socket address (the master sends agents' advertised IPs).
fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_http_mode;
