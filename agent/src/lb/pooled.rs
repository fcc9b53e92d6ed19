//! Service ports in http mode (`HAPROXY_{n}_MODE=http`): an HTTP/1.1 reverse proxy. Client
//! connections stay open across requests and each request picks its backend (round robin
//! or least connections, as connections do in tcp mode), travelling on a pooled keep-alive
//! connection to it. A backend the table dropped gets no new request and its idle
//! connections close, so its count (`active`: requests in flight) reaches zero with its
//! last answer, which is what lets the master kill the task. A request whose backend
//! connection is refused or reset before any answer is retried once on another backend:
//! an unsent request always, a sent one only when it is idempotent and has no body.
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::net::TcpStream;
use tracing::debug;

use super::exchange::{self, answer, ClientBody, Release, Sender};
use super::frontend::Frontend;
use super::open::Open;
use super::proxy;
use super::stats::BackendStats;

/// Connections tried for one request: stale pooled ones give an unsent request back.
const MAX_ATTEMPTS: usize = 4;

/// One client connection to the service port.
pub(crate) async fn serve(client: TcpStream, peer: SocketAddr, frontend: Arc<Frontend>) {
    frontend.stats.connections.fetch_add(1, Ordering::Relaxed);
    exchange::serve_client(client, peer, move |request| {
        let frontend = frontend.clone();
        async move { forward(&frontend, request, peer).await }
    })
    .await;
}

/// A backend connection lent to one request, counted on its backend until the answer ended.
struct Lease {
    frontend: Arc<Frontend>,
    sender: Sender,
    open: Open,
}

impl Release for Lease {
    fn release(self: Box<Self>, reusable: bool) {
        let backend = &self.open.backend;
        if reusable && !backend.retired.load(Ordering::Relaxed) && !self.sender.is_closed() {
            self.frontend.pool.put(backend, self.sender);
        }
    }
}

/// What a request that reached a backend unanswered needs to be sent again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// Only idempotent requests without a body (RFC 9110 9.2.2) are sent twice.
    fn of(request: &Request<Incoming>) -> Option<Replay> {
        let idempotent =
            matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);
        (idempotent && request.body().is_end_stream()).then(|| Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn request(&self) -> Request<exchange::UpBody> {
        let mut request = Request::new(Either::Right(Full::new(Bytes::new())));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One request through the frontend's backends.
pub(crate) async fn forward(
    frontend: &Arc<Frontend>,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ClientBody> {
    let (version, client_upgrade) = exchange::prepare(&mut request, peer);
    let mut replay = if client_upgrade.is_none() { Replay::of(&request) } else { None };
    let mut request = request.map(Either::Left);
    // The backend a sent request failed on: the retry goes elsewhere.
    let mut failed_on: Option<Arc<BackendStats>> = None;
    for _ in 0..MAX_ATTEMPTS {
        let Some(mut lease) = checkout(frontend, failed_on.as_ref()).await else { break };
        let backend = lease.open.backend.clone();
        backend.requests.fetch_add(1, Ordering::Relaxed);
        match lease.sender.try_send_request(request).await {
            Ok(response) => {
                let hold: Box<dyn Release> = Box::new(lease);
                return exchange::respond(response, version, client_upgrade, Some(hold));
            }
            Err(mut error) => {
                backend.failures.fetch_add(1, Ordering::Relaxed);
                if let Some(unsent) = error.take_message() {
                    request = unsent;
                    continue;
                }
                let error = error.into_error();
                debug!(port = frontend.port, backend = %backend.addr, %error, "backend failed a request");
                let Some(again) = replay.take() else {
                    return answer(StatusCode::BAD_GATEWAY, format!("the backend failed: {error}"));
                };
                request = again.request();
                failed_on = Some(backend);
            }
        }
    }
    answer(StatusCode::SERVICE_UNAVAILABLE, format!("no backend of {} answered", frontend.route().app_id))
}

/// A connection to the backend this request goes to, the first in the frontend's order
/// that has an idle connection or accepts a new one. `avoid` is tried last.
async fn checkout(frontend: &Arc<Frontend>, avoid: Option<&Arc<BackendStats>>) -> Option<Lease> {
    let mut candidates = frontend.candidates();
    if let Some(avoid) = avoid {
        if let Some(at) = candidates.iter().position(|b| Arc::ptr_eq(b, avoid)) {
            let last = candidates.remove(at);
            candidates.push(last);
        }
    }
    for backend in candidates {
        // Counted from before the request is sent: a drain must not miss it.
        let open = Open::new(backend.clone(), &frontend.drained);
        while let Some(mut sender) = frontend.pool.take(&backend) {
            if sender.ready().await.is_ok() {
                return Some(Lease { frontend: frontend.clone(), sender, open });
            }
        }
        let Some(stream) = proxy::dial(frontend, &backend).await else { continue };
        if let Some((sender, open)) = exchange::handshake(open, stream).await {
            return Some(Lease { frontend: frontend.clone(), sender, open });
        }
    }
    frontend.stats.unserved.fetch_add(1, Ordering::Relaxed);
    None
}
