//! The node API, served by PID 1 itself on port 5052 so a node without a shell can still be
//! inspected and powered off even when the role is down. Blocking HTTP/1.1, one thread per
//! connection, responses close the connection.
//!
//! | request | answer |
//! |---|---|
//! | `GET /node/v1/status` | JSON: role, hostname, interfaces, master URL, resources, boot time |
//! | `GET /node/v1/logs` | text: init and role log lines (last 5000) |
//! | `GET /node/v1/dmesg` | text: the kernel ring buffer |
//! | `GET /node/v1/mounts` | JSON: `[{"source","target","fstype","options"}]` |
//! | `GET /node/v1/network` | JSON: `{"interfaces":[{"name","addresses"}],"routes":"..."}` |
//! | `GET /node/v1/processes` | JSON: `[{"pid","ppid","state","rss_kb","cmdline"}]` |
//! | `POST /node/v1/poweroff`, `POST /node/v1/reboot` | 202, then a graceful shutdown |
//!
//! Until the node has a certificate of a cluster CA, the API is plain HTTP: when the node
//! booted with `plinth.token=...`, the power endpoints require `Authorization: Bearer
//! TOKEN` (401 otherwise) and the read-only views stay open. From the agent's first join
//! with a cluster CA on, it is mutual TLS only (`api_tls.rs`): every view needs a
//! certificate of the cluster, and the power endpoints the master's (403 for a node's).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_protocol::error_chain;
use serde_json::{json, Value};
use tracing::warn;

use crate::api_tls::{caller_of, Caller, NodeTls};
use crate::error::{InitError, Result};

/// What the node API can ask of PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    Poweroff,
    Reboot,
}

/// The status document, updated by the init as boot progresses.
pub type SharedStatus = Arc<Mutex<Value>>;

/// A routed request's answer: status, content type, body.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Self {
        Reply { status, content_type: "application/json", body: v.to_string() }
    }
    fn text(body: String) -> Self {
        Reply { status: 200, content_type: "text/plain; charset=utf-8", body }
    }
    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "message": message }))
    }
}

/// Data sources of the API, so routing is testable without a live node.
pub trait NodeView {
    fn status(&self) -> Value;
    fn logs(&self) -> String;
    fn dmesg(&self) -> String;
    fn mounts(&self) -> String;
    fn network(&self) -> Value;
    fn processes(&self) -> Value;
    fn power(&self, req: PowerRequest);
    /// The cluster token from the command line, if any; it guards the power endpoints.
    fn token(&self) -> Option<String> {
        None
    }
}

/// Maps the caller, method + path (+ the Authorization header) to an answer.
pub fn route(view: &dyn NodeView, caller: Caller, method: &str, path: &str, authorization: Option<&str>) -> Reply {
    let path = path.split('?').next().unwrap_or(path);
    if method == "POST" && matches!(path, "/node/v1/poweroff" | "/node/v1/reboot") {
        match caller {
            Caller::Cluster { master: true } => {}
            Caller::Cluster { master: false } => {
                return Reply::error(
                    403,
                    &format!("POST {path} is for the master's certificate only; ask the master (plinth node poweroff)"),
                );
            }
            Caller::Plain => {
                if let Some(token) = view.token() {
                    if authorization != Some(format!("Bearer {token}").as_str()) {
                        return Reply::error(
                            401,
                            &format!("POST {path} needs the header Authorization: Bearer <plinth.token>"),
                        );
                    }
                }
            }
        }
    }
    match (method, path) {
        ("GET", "/node/v1/status") => Reply::json(200, &view.status()),
        ("GET", "/node/v1/logs") => Reply::text(view.logs()),
        ("GET", "/node/v1/dmesg") => Reply::text(view.dmesg()),
        ("GET", "/node/v1/mounts") => Reply::json(200, &parse_mounts(&view.mounts())),
        ("GET", "/node/v1/network") => Reply::json(200, &view.network()),
        ("GET", "/node/v1/processes") => Reply::json(200, &view.processes()),
        ("POST", "/node/v1/poweroff") => {
            view.power(PowerRequest::Poweroff);
            Reply::json(202, &json!({ "message": "powering off" }))
        }
        ("POST", "/node/v1/reboot") => {
            view.power(PowerRequest::Reboot);
            Reply::json(202, &json!({ "message": "rebooting" }))
        }
        (_, "/node/v1/status" | "/node/v1/logs" | "/node/v1/dmesg" | "/node/v1/mounts" | "/node/v1/network" | "/node/v1/processes") => {
            Reply::error(405, "method not allowed; use GET")
        }
        (_, "/node/v1/poweroff" | "/node/v1/reboot") => Reply::error(405, "method not allowed; use POST"),
        _ => Reply::error(404, &format!("no such endpoint: {path}; see /node/v1/status, logs, dmesg, mounts, network, processes, poweroff, reboot")),
    }
}

/// `/proc/mounts` text → JSON list.
pub fn parse_mounts(text: &str) -> Value {
    let list: Vec<Value> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| json!({ "source": f[0], "target": f[1], "fstype": f[2], "options": f[3] }))
        })
        .collect();
    Value::Array(list)
}

/// Starts the listener thread on `0.0.0.0:port`.
pub fn serve(port: u16, view: Arc<dyn NodeView + Send + Sync>, tls: NodeTls) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|source| InitError::NodeApi { port, source })?;
    serve_on(listener, view, tls).map_err(|source| InitError::NodeApi { port, source })
}

/// Serves the API on a bound listener (the tests bind to port 0).
pub fn serve_on(listener: TcpListener, view: Arc<dyn NodeView + Send + Sync>, tls: NodeTls) -> std::io::Result<()> {
    let tls = Arc::new(tls);
    std::thread::Builder::new().name("node-api".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (view, tls) = (view.clone(), tls.clone());
            let _ = std::thread::Builder::new().name("node-api-conn".into()).spawn(move || {
                if let Err(e) = handle(conn, view.as_ref(), &tls) {
                    warn!(error = %error_chain(&e), "node API connection failed");
                }
            });
        }
    })?;
    Ok(())
}

fn handle(mut conn: TcpStream, view: &dyn NodeView, tls: &NodeTls) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let config = match tls.config() {
        Ok(None) => return exchange(&mut conn, view, Caller::Plain),
        Ok(Some(config)) => config,
        Err(reason) => {
            // Never plain HTTP for a node that has (broken) credentials: refuse.
            warn!(reason = %reason, "node API certificate unusable; connection refused");
            return Ok(());
        }
    };
    let mut server = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    while server.is_handshaking() {
        server.complete_io(&mut conn)?;
    }
    let caller = caller_of(&server);
    let mut stream = rustls::StreamOwned::new(server, conn);
    exchange(&mut stream, view, caller)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// Reads one request from `conn` and writes its answer.
fn exchange<S: Read + Write>(conn: &mut S, view: &dyn NodeView, caller: Caller) -> std::io::Result<()> {
    let mut reader = BufReader::new((&mut *conn).take(64 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    drop(reader);
    let mut parts = request_line.split_whitespace();
    let reply = match (parts.next(), parts.next()) {
        (Some(method), Some(path)) => route(view, caller, method, path, authorization.as_deref()),
        _ => Reply::error(400, "malformed request line"),
    };
    let reason = match reply.status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    write!(
        conn,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reason,
        reply.content_type,
        reply.body.len(),
        reply.body
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Fake {
        power: RefCell<Vec<PowerRequest>>,
        token: Option<String>,
    }
    impl NodeView for Fake {
        fn status(&self) -> Value {
            json!({"role": "agent"})
        }
        fn logs(&self) -> String {
            "line1\n".into()
        }
        fn dmesg(&self) -> String {
            "[0.0] Linux\n".into()
        }
        fn mounts(&self) -> String {
            "proc /proc proc rw,nosuid 0 0\nbroken\n".into()
        }
        fn network(&self) -> Value {
            json!({})
        }
        fn processes(&self) -> Value {
            json!([])
        }
        fn power(&self, req: PowerRequest) {
            self.power.borrow_mut().push(req);
        }
        fn token(&self) -> Option<String> {
            self.token.clone()
        }
    }

    #[test]
    fn with_a_token_power_requests_need_it_and_reads_stay_open() {
        let f = Fake { token: Some("s3cret".into()), ..Default::default() };
        let r = route(&f, Caller::Plain, "POST", "/node/v1/poweroff", None);
        assert_eq!(r.status, 401);
        assert!(r.body.contains("Authorization: Bearer"), "{}", r.body);
        assert_eq!(route(&f, Caller::Plain, "POST", "/node/v1/reboot", Some("Bearer wrong")).status, 401);
        assert!(f.power.borrow().is_empty());
        assert_eq!(route(&f, Caller::Plain, "GET", "/node/v1/status", None).status, 200);
        assert_eq!(route(&f, Caller::Plain, "POST", "/node/v1/reboot", Some("Bearer s3cret")).status, 202);
        assert_eq!(*f.power.borrow(), [PowerRequest::Reboot]);
    }

    #[test]
    fn routes_reads_and_power_requests() {
        let f = Fake::default();
        assert_eq!(route(&f, Caller::Plain, "GET", "/node/v1/status", None).body, r#"{"role":"agent"}"#);
        assert_eq!(route(&f, Caller::Plain, "GET", "/node/v1/logs?tail=1", None).body, "line1\n");
        assert_eq!(
            route(&f, Caller::Plain, "GET", "/node/v1/mounts", None).body,
            r#"[{"fstype":"proc","options":"rw,nosuid","source":"proc","target":"/proc"}]"#
        );
        assert!(f.power.borrow().is_empty(), "reads never power off");
        assert_eq!(route(&f, Caller::Plain, "POST", "/node/v1/poweroff", None).status, 202);
        assert_eq!(route(&f, Caller::Plain, "POST", "/node/v1/reboot", None).status, 202);
        assert_eq!(*f.power.borrow(), [PowerRequest::Poweroff, PowerRequest::Reboot]);
    }

    #[test]
    fn wrong_method_or_path_is_refused_without_side_effects() {
        let f = Fake::default();
        assert_eq!(route(&f, Caller::Plain, "GET", "/node/v1/poweroff", None).status, 405);
        assert_eq!(route(&f, Caller::Plain, "DELETE", "/node/v1/logs", None).status, 405);
        let r = route(&f, Caller::Plain, "GET", "/nope", None);
        assert_eq!(r.status, 404);
        assert!(r.body.contains("no such endpoint: /nope"));
        assert!(f.power.borrow().is_empty());
    }
}
