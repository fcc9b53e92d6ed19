//! One service port on this agent: the app it belongs to, its backends (replaced in place
//! when the table changes, so open connections are never touched), its counters, and the
//! listener task that accepts on it.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use plinth_protocol::agent::{Balance, LbMode, Service, ServiceProtocol};
use plinth_protocol::AppId;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::pool::Pool;
use super::select;
use super::stats::{BackendStats, FrontendSnapshot, FrontendStats};

/// Where a frontend sends connections now.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub app_id: AppId,
    pub balance: Balance,
    pub vhosts: Vec<String>,
    pub mode: LbMode,
    pub backends: Vec<Arc<BackendStats>>,
}

pub(crate) struct Frontend {
    pub port: u16,
    pub protocol: ServiceProtocol,
    route: RwLock<Route>,
    /// The route's mode, read by every accept without the lock.
    http: AtomicBool,
    cursor: AtomicUsize,
    /// Idle keep-alive connections to the backends (http mode).
    pub pool: Pool,
    pub stats: FrontendStats,
    /// Why the port is not served (bind failed), if it is not.
    error: Mutex<Option<String>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Woken when the last connection of a retired backend ends (the drain can be confirmed).
    pub drained: Arc<Notify>,
}

impl Frontend {
    pub fn new(service: &Service, drained: Arc<Notify>) -> Self {
        Frontend {
            port: service.service_port,
            protocol: service.protocol,
            route: RwLock::new(Route {
                app_id: service.app_id.clone(),
                balance: service.balance,
                vhosts: service.vhosts.clone(),
                mode: service.mode,
                backends: Vec::new(),
            }),
            http: AtomicBool::new(service.mode == LbMode::Http),
            cursor: AtomicUsize::new(0),
            pool: Pool::default(),
            stats: FrontendStats::default(),
            error: Mutex::new(None),
            listener: Mutex::new(None),
            drained,
        }
    }

    pub fn route(&self) -> Route {
        self.route.read().expect("route lock is never poisoned").clone()
    }

    /// Takes the service's backends, keeping the counters of those that stay; returns
    /// the backends it no longer has.
    pub fn update(
        &self,
        service: &Service,
        resolve: impl Fn(&str, u16) -> Option<SocketAddr>,
    ) -> Vec<Arc<BackendStats>> {
        let mut route = self.route.write().expect("route lock is never poisoned");
        let mut next = Vec::with_capacity(service.backends.len());
        for backend in &service.backends {
            let Some(addr) = resolve(&backend.host, backend.port) else { continue };
            let kept = route.backends.iter().find(|b| b.addr == addr && b.task_id == backend.task_id).cloned();
            let stats = kept.unwrap_or_else(|| Arc::new(BackendStats::new(backend.task_id.clone(), addr)));
            stats.retired.store(false, Ordering::Relaxed);
            next.push(stats);
        }
        let gone: Vec<Arc<BackendStats>> =
            route.backends.iter().filter(|b| !next.iter().any(|n| Arc::ptr_eq(n, b))).cloned().collect();
        for b in &gone {
            b.retired.store(true, Ordering::Relaxed);
            self.pool.forget(b);
        }
        if service.mode != route.mode {
            // Connections of the other mode are not reused.
            self.pool.clear();
        }
        self.http.store(service.mode == LbMode::Http, Ordering::Relaxed);
        *route = Route {
            app_id: service.app_id.clone(),
            balance: service.balance,
            vhosts: service.vhosts.clone(),
            mode: service.mode,
            backends: next,
        };
        gone
    }

    /// Whether client connections are served as HTTP, request by request.
    pub fn http_mode(&self) -> bool {
        self.http.load(Ordering::Relaxed)
    }

    /// The backends a new connection tries, in order.
    pub fn candidates(&self) -> Vec<Arc<BackendStats>> {
        let route = self.route.read().expect("route lock is never poisoned");
        let cursor = self.cursor.fetch_add(1, Ordering::Relaxed);
        select::order(&route.backends, route.balance, cursor)
    }

    pub fn listening(&self) -> bool {
        self.listener.lock().expect("listener lock is never poisoned").is_some()
    }

    pub fn set_listener(&self, result: Result<JoinHandle<()>, String>) {
        let (handle, error) = match result {
            Ok(handle) => (Some(handle), None),
            Err(error) => (None, Some(error)),
        };
        *self.listener.lock().expect("listener lock is never poisoned") = handle;
        *self.error.lock().expect("error lock is never poisoned") = error;
    }

    /// Closes the port; connections already accepted run on in their own tasks.
    pub fn close(&self) {
        if let Some(handle) = self.listener.lock().expect("listener lock is never poisoned").take() {
            handle.abort();
        }
        self.pool.clear();
    }

    pub fn snapshot(&self) -> FrontendSnapshot<'_> {
        let route = self.route();
        FrontendSnapshot {
            port: self.port,
            protocol: self.protocol,
            app_id: route.app_id,
            balance: route.balance,
            vhosts: route.vhosts,
            mode: route.mode,
            error: self.error.lock().expect("error lock is never poisoned").clone(),
            stats: &self.stats,
            backends: route.backends,
        }
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.close();
    }
}
