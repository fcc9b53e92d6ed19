//! The HTTP frontend (`--lb-http-port`, marathon-lb's port 80): an HTTP/1 server that
//! routes every request by its `Host` to the service port whose `HAPROXY_{n}_VHOST` names
//! it, so the requests of one keep-alive connection may go to different apps. A client
//! connection keeps its upstream connection for the next request while that goes to the
//! same app and the backend still serves; otherwise it opens a new one (what HAProxy's
//! `http-server-close` does), so a drained backend gets no request it would answer after
//! its kill. An unknown host is a 503, a request without a host, or bytes that are not
//! HTTP, a 400. `X-Forwarded-For` names the client; upgrades (WebSocket) are tunnelled.
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::counted::Counted;
use super::frontend::Frontend;
use super::proxy::{self, Open};

/// Host name (lower case, no port) → the frontend of the service port it routes to.
pub(crate) type VhostMap = Arc<RwLock<HashMap<String, Arc<Frontend>>>>;

/// Largest request head read (hyper's read buffer; a larger head is a 431).
const MAX_HEAD: usize = 16 * 1024;
/// A client must have sent a request's head by then.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// A backend's answer, or one of ours.
type Body = Either<Incoming, Full<Bytes>>;

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
    sender: SendRequest<Incoming>,
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

async fn serve(client: TcpStream, peer: SocketAddr, vhosts: VhostMap) {
    let _ = client.set_nodelay(true);
    // Dropped with the client connection, and with it the upstream connection.
    let upstream = Arc::new(Mutex::new(None::<Upstream>));
    let service = hyper::service::service_fn(move |request| {
        let (vhosts, upstream) = (vhosts.clone(), upstream.clone());
        async move { Ok::<_, Infallible>(route(request, peer, &vhosts, &upstream).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        debug!(%peer, %error, "HTTP frontend connection ended");
    }
}

/// One request: to the app its host names, on the kept upstream connection or a new one.
async fn route(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    vhosts: &VhostMap,
    upstream: &Mutex<Option<Upstream>>,
) -> Response<Body> {
    let host = match host_of(&request) {
        Ok(Some(host)) => host,
        Ok(None) => return answer(StatusCode::BAD_REQUEST, "no Host header".into()),
        Err(()) => return answer(StatusCode::BAD_REQUEST, "malformed Host header".into()),
    };
    let frontend = vhosts.read().expect("vhost lock is never poisoned").get(&host).cloned();
    let Some(frontend) = frontend else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, format!("no app serves {host}"));
    };
    forwarded_for(&mut request, peer);
    let version = request.version();
    let client_upgrade = wants_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    if client_upgrade.is_none() {
        strip_hop_by_hop(request.headers_mut());
    }
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
        match up.sender.try_send_request(request).await {
            Ok(mut response) => {
                if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) = (response.status(), client_upgrade) {
                    let backend_side = hyper::upgrade::on(&mut response);
                    tokio::spawn(tunnel(client_side, backend_side, slot.take()));
                } else {
                    // The client's connection keeps its own terms (an HTTP/1.0 backend closing
                    // after each answer does not close a keep-alive client).
                    strip_hop_by_hop(response.headers_mut());
                    *response.version_mut() = version;
                }
                return response.map(Either::Left);
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
    let io = TokioIo::new(Counted::new(stream, open.backend.clone()));
    match hyper::client::conn::http1::handshake(io).await {
        Ok((sender, connection)) => {
            tokio::spawn(async move {
                if let Err(error) = connection.with_upgrades().await {
                    debug!(%error, "backend connection ended");
                }
            });
            Some(Upstream { frontend: frontend.clone(), sender, open })
        }
        Err(error) => {
            debug!(backend = %open.backend.addr, %error, "no HTTP connection to the backend");
            open.backend.failures.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Both sides of an upgraded connection, copied until either ends; the upstream
/// connection (and its count on the backend) lives as long.
async fn tunnel(client: OnUpgrade, backend: OnUpgrade, held: Option<Upstream>) {
    if let (Ok(client), Ok(backend)) = tokio::join!(client, backend) {
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await;
    }
    drop(held);
}

fn wants_upgrade(request: &Request<Incoming>) -> bool {
    let connection = request.headers().get_all(CONNECTION).iter().filter_map(|v| v.to_str().ok());
    request.headers().contains_key(UPGRADE)
        && connection.flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the headers that speak of one connection only (RFC 9110 7.6.1): each side of
/// the proxy has its own; hyper frames each body anew.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
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

/// Adds the client's address to `X-Forwarded-For` (HAProxy's `option forwardfor`).
fn forwarded_for(request: &mut Request<Incoming>, peer: SocketAddr) {
    let client = peer.ip().to_string();
    let value = match request.headers().get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        request.headers_mut().insert(X_FORWARDED_FOR, value);
    }
}

/// One of our own answers; the connection ends after it.
fn answer(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
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
