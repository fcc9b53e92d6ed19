//! The balancer's counters (per frontend and per backend) and their two views: the JSON
//! of `GET /v1/lb` and the Prometheus lines of `/metrics`.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use plinth_protocol::agent::{Balance, LbMode, ServiceProtocol};
use plinth_protocol::{AppId, TaskId};
use serde::{Deserialize, Serialize};

/// One backend of one frontend. Kept across table changes while the backend stays, so
/// its counters keep counting.
#[derive(Debug)]
pub(crate) struct BackendStats {
    pub task_id: TaskId,
    pub addr: SocketAddr,
    /// Open connections; in http mode, requests in flight (idle pooled connections hold nothing).
    pub active: AtomicU64,
    /// Connections made to it.
    pub total: AtomicU64,
    /// HTTP requests sent to it (http mode and the HTTP frontend).
    pub requests: AtomicU64,
    /// Client → backend bytes.
    pub bytes_in: AtomicU64,
    /// Backend → client bytes.
    pub bytes_out: AtomicU64,
    /// Connects that were refused or timed out.
    pub failures: AtomicU64,
    /// Removed from the table: the balancer waits for its connections to end.
    pub retired: AtomicBool,
}

impl BackendStats {
    pub fn new(task_id: TaskId, addr: SocketAddr) -> Self {
        BackendStats {
            task_id,
            addr,
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    fn view(&self) -> BackendView {
        BackendView {
            task_id: self.task_id.clone(),
            address: self.addr.to_string(),
            active_connections: self.active(),
            total_connections: self.total.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// Counters of one service port.
#[derive(Debug, Default)]
pub(crate) struct FrontendStats {
    pub connections: AtomicU64,
    /// Connections (or datagrams) closed at once: no backend, or none would connect.
    pub unserved: AtomicU64,
}

/// `GET /v1/lb`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbView {
    /// The service table generation applied, and the one drained (no connection left to
    /// backends it removed).
    pub generation: u64,
    pub drained_generation: u64,
    /// `--lb-group`: only apps with this `HAPROXY_GROUP` are served (`None`: all).
    pub group: Option<String>,
    /// `--lb-http-port`, and why it is not served if it is not.
    pub http_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_error: Option<String>,
    pub frontends: Vec<FrontendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontendView {
    pub port: u16,
    pub protocol: ServiceProtocol,
    pub app_id: AppId,
    pub balance: Balance,
    /// Host names the HTTP frontend routes here (`HAPROXY_{n}_VHOST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vhosts: Vec<String>,
    /// `HAPROXY_{n}_MODE`: `tcp` (per connection) or `http` (per request).
    #[serde(default)]
    pub mode: LbMode,
    /// False when the port could not be bound (`error` says why).
    pub listening: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub connections: u64,
    pub unserved: u64,
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub task_id: TaskId,
    pub address: String,
    /// Open connections; in http mode, requests in flight.
    pub active_connections: u64,
    pub total_connections: u64,
    /// HTTP requests sent (http mode and the HTTP frontend).
    #[serde(default)]
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub failures: u64,
}

/// What a frontend shows of itself.
pub(crate) struct FrontendSnapshot<'a> {
    pub port: u16,
    pub protocol: ServiceProtocol,
    pub app_id: AppId,
    pub balance: Balance,
    pub vhosts: Vec<String>,
    pub mode: LbMode,
    pub error: Option<String>,
    pub stats: &'a FrontendStats,
    pub backends: Vec<std::sync::Arc<BackendStats>>,
}

impl FrontendSnapshot<'_> {
    pub fn view(&self) -> FrontendView {
        FrontendView {
            port: self.port,
            protocol: self.protocol,
            app_id: self.app_id.clone(),
            balance: self.balance,
            vhosts: self.vhosts.clone(),
            mode: self.mode,
            listening: self.error.is_none(),
            error: self.error.clone(),
            connections: self.stats.connections.load(Ordering::Relaxed),
            unserved: self.stats.unserved.load(Ordering::Relaxed),
            backends: self.backends.iter().map(|b| b.view()).collect(),
        }
    }
}

/// Prometheus text of the balancer's counters.
pub fn prometheus(view: &LbView) -> String {
    let mut out = String::new();
    let families: [(&str, &str, &str); 8] = [
        ("plinth_lb_connections_total", "counter", "Connections accepted on a service port."),
        ("plinth_lb_unserved_total", "counter", "Connections closed at once: no backend would take them."),
        ("plinth_lb_backend_active_connections", "gauge", "Open connections to a backend."),
        ("plinth_lb_backend_connections_total", "counter", "Connections made to a backend."),
        ("plinth_lb_backend_bytes_in_total", "counter", "Bytes from clients to a backend."),
        ("plinth_lb_backend_bytes_out_total", "counter", "Bytes from a backend to its clients."),
        ("plinth_lb_backend_failures_total", "counter", "Connects to a backend refused or timed out."),
        ("plinth_lb_backend_requests_total", "counter", "HTTP requests sent to a backend."),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for f in &view.frontends {
            let labels = format!("port=\"{}\",protocol=\"{}\",app_id=\"{}\"", f.port, f.protocol, f.app_id);
            match i {
                0 => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", f.connections);
                }
                1 => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", f.unserved);
                }
                _ => {
                    for b in &f.backends {
                        let value = match i {
                            2 => b.active_connections,
                            3 => b.total_connections,
                            4 => b.bytes_in,
                            5 => b.bytes_out,
                            6 => b.failures,
                            _ => b.requests,
                        };
                        let _ = writeln!(out, "{name}{{{labels},backend=\"{}\"}} {value}", b.address);
                    }
                }
            }
        }
    }
    out
}
