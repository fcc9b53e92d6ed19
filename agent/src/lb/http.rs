//! The HTTP frontend (`--lb-http-port`, marathon-lb's port 80): an HTTP/1 server that
//! routes every request by its `Host` to the service port whose `HAPROXY_{n}_VHOST` names
//! it, so the requests of one keep-alive connection may go to different apps. A request
//! for a port in http mode goes as that port's own requests do (`pooled.rs`); for a port
//! in tcp mode, a client connection keeps its upstream connection for the next request
//! while that goes to the same app and the backend still serves; otherwise it opens a new
//! one (what HAProxy's `http-server-close` does), so a drained backend gets no request it
//! would answer after its kill. An unknown host is a 503, a request without a host, or
//! bytes that are not HTTP, a 400. `X-Forwarded-For` names the client; upgrades
//! (WebSocket) are tunnelled.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::exchange::{self, answer, ClientBody, Release, Sender};
use super::frontend::Frontend;
use super::open::Open;
use super::pooled;
use super::proxy;

/// Host name (lower case, no port) → the frontend of the service port it routes to.
pub(crate) type VhostMap = Arc<RwLock<HashMap<String, Arc<Frontend>>>>;

pub(crate) fn start(port: u16, bind: IpAddr, vhosts: VhostMap) -> Result<JoinHandle<()>, String> {
    let addr = SocketAddr::new(bind, port);
    let listener = super::listeners::tcp_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, peer)) => {
                    tokio::spawn(serve(client, peer, vhosts.clone()));
                }
                Err(error) => {
                    warn!(port, %error, "HTTP frontend cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}

/// The upstream connection a client connection holds between its requests.
struct Upstream {
    frontend: Arc<Frontend>,
    sender: Sender,
    open: Open,
}

impl Upstream {
    /// Whether the next request for `frontend` may go here too.
    fn serves(&self, frontend: &Arc<Frontend>) -> bool {
        Arc::ptr_eq(&self.frontend, frontend)
            && !self.open.backend.retired.load(Ordering::Relaxed)
            && !self.sender.is_closed()
    }
}

/// An upgraded connection's tunnel holds it until it ends.
impl Release for Upstream {
    fn release(self: Box<Self>, _reusable: bool) {}
}

async fn serve(client: TcpStream, peer: SocketAddr, vhosts: VhostMap) {
    // Dropped with the client connection, and with it the upstream connection.
    let upstream = Arc::new(Mutex::new(None::<Upstream>));
    exchange::serve_client(client, peer, move |request| {
        let (vhosts, upstream) = (vhosts.clone(), upstream.clone());
        async move { route(request, peer, &vhosts, &upstream).await }
    })
    .await;
}

/// One request: to the app its host names, on the kept upstream connection or a new one.
async fn route(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    vhosts: &VhostMap,
    upstream: &Mutex<Option<Upstream>>,
) -> Response<ClientBody> {
    let host = match host_of(&request) {
        Ok(Some(host)) => host,
        Ok(None) => return answer(StatusCode::BAD_REQUEST, "no Host header".into()),
        Err(()) => return answer(StatusCode::BAD_REQUEST, "malformed Host header".into()),
    };
    let frontend = vhosts.read().expect("vhost lock is never poisoned").get(&host).cloned();
    let Some(frontend) = frontend else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, format!("no app serves {host}"));
    };
    if frontend.http_mode() {
        // Per request over the port's pool; a kept connection to a tcp-mode app goes.
        *upstream.lock().await = None;
        return pooled::forward(&frontend, request, peer).await;
    }
    let (version, client_upgrade) = exchange::prepare(&mut request, peer);
    let mut request = request.map(http_body_util::Either::Left);
    let mut slot = upstream.lock().await;
    if !slot.as_ref().is_some_and(|u| u.serves(&frontend)) {
        // Let go of the old one first: its backend may be draining.
        *slot = None;
        *slot = open_upstream(&frontend).await;
    }
    // A kept connection the backend closed meanwhile gives the request back: once more on a new one.
    for _ in 0..2 {
        let Some(up) = slot.as_mut() else { break };
        let backend = up.open.backend.clone();
        backend.requests.fetch_add(1, Ordering::Relaxed);
        match up.sender.try_send_request(request).await {
            Ok(response) => {
                let upgrading = client_upgrade.is_some() && response.status() == StatusCode::SWITCHING_PROTOCOLS;
                let hold = if upgrading { slot.take().map(|u| Box::new(u) as Box<dyn Release>) } else { None };
                return exchange::respond(response, version, client_upgrade, hold);
            }
            Err(mut error) => {
                backend.failures.fetch_add(1, Ordering::Relaxed);
                *slot = None;
                let Some(unsent) = error.take_message() else {
                    let error = error.into_error();
                    debug!(backend = %backend.addr, %error, "backend failed a request");
                    return answer(StatusCode::BAD_GATEWAY, format!("the backend of {host} failed: {error}"));
                };
                request = unsent;
                *slot = open_upstream(&frontend).await;
            }
        }
    }
    answer(StatusCode::SERVICE_UNAVAILABLE, format!("no backend of {} answered", frontend.route().app_id))
}

/// A new HTTP connection to the first backend of `frontend` that accepts one.
async fn open_upstream(frontend: &Arc<Frontend>) -> Option<Upstream> {
    let (open, stream) = proxy::connect(frontend).await?;
    let (sender, open) = exchange::handshake(open, stream).await?;
    Some(Upstream { frontend: frontend.clone(), sender, open })
}

/// The request's host (`Host`, else an absolute URI's), lower case and without its port.
fn host_of(request: &Request<Incoming>) -> Result<Option<String>, ()> {
    let value = match request.headers().get(HOST) {
        Some(value) => value.to_str().map_err(|_| ())?,
        None => match request.uri().authority() {
            Some(authority) => authority.as_str(),
            None => return Ok(None),
        },
    };
    Ok(Some(host_name(value)))
}

fn host_name(value: &str) -> String {
    let value = value.trim().to_ascii_lowercase();
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_string(),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn the_host_is_read_lower_case_without_its_port() {
        assert_eq!(host_name("Hello.Example:80"), "hello.example");
        assert_eq!(host_name(" b.example "), "b.example");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }
}
