//! What the two HTTP proxies share (the `--lb-http-port` frontend in `http.rs`, service
//! ports in http mode in `pooled.rs`): serving a client connection with hyper, the
//! request's rewrite on its way to a backend (hop-by-hop headers, `X-Forwarded-For`), the
//! answer's on its way back (an upgrade is tunnelled), a new HTTP connection to a backend,
//! and the proxy's own answers.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use super::counted::Counted;
use super::open::Open;

/// Largest request head read (hyper's read buffer; a larger head is a 431).
const MAX_HEAD: usize = 16 * 1024;
/// A client must have sent a request's head by then.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// What goes to a backend: the client's body, or an empty one when a request is replayed.
pub(crate) type UpBody = Either<Incoming, Full<Bytes>>;
/// One HTTP connection to a backend.
pub(crate) type Sender = SendRequest<UpBody>;
/// A backend's answer, or one of ours.
pub(crate) type ClientBody = Either<Answer, Full<Bytes>>;

/// Serves one client connection, each request answered by `handle`.
pub(crate) async fn serve_client<F, Fut>(client: TcpStream, peer: SocketAddr, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Response<ClientBody>>,
{
    let _ = client.set_nodelay(true);
    let service = hyper::service::service_fn(move |request| {
        let answered = handle(request);
        async move { Ok::<_, Infallible>(answered.await) }
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

/// Rewrites a client's request for a backend; returns the client's HTTP version and, when
/// the request asks for an upgrade, the client's side of it.
pub(crate) fn prepare(request: &mut Request<Incoming>, peer: SocketAddr) -> (Version, Option<OnUpgrade>) {
    forwarded_for(request, peer);
    let client_upgrade = wants_upgrade(request).then(|| hyper::upgrade::on(&mut *request));
    if client_upgrade.is_none() {
        strip_hop_by_hop(request.headers_mut());
    }
    (request.version(), client_upgrade)
}

/// What a finished (or abandoned) answer does with the backend connection it came on.
pub(crate) trait Release: Send + 'static {
    /// `reusable`: the answer was read to its end, so the connection may take another request.
    fn release(self: Box<Self>, reusable: bool);
}

/// The backend's answer as the client gets it. `hold` (the backend connection and its
/// count) is released when the body has ended, or lives as long as the tunnel of an upgrade.
pub(crate) fn respond(
    mut response: Response<Incoming>,
    version: Version,
    client_upgrade: Option<OnUpgrade>,
    hold: Option<Box<dyn Release>>,
) -> Response<ClientBody> {
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) = (response.status(), client_upgrade) {
        let backend_side = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_side, backend_side, hold));
        return response.map(|body| Either::Left(Answer { body, hold: None }));
    }
    // The client's connection keeps its own terms (an HTTP/1.0 backend closing after
    // each answer does not close a keep-alive client).
    strip_hop_by_hop(response.headers_mut());
    *response.version_mut() = version;
    response.map(|body| Either::Left(Answer { body, hold }))
}

/// A backend's body on its way to the client, releasing its connection once it ended.
pub(crate) struct Answer {
    body: Incoming,
    hold: Option<Box<dyn Release>>,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(hold) = this.hold.take() {
                    hold.release(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(hold) = this.hold.take() {
                    hold.release(false);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // hyper drops a body it knows has ended without polling it again.
        if let Some(hold) = self.hold.take() {
            hold.release(self.body.is_end_stream());
        }
    }
}

/// An HTTP/1 connection over a backend connection just made (counted by `open`).
pub(crate) async fn handshake(open: Open, stream: TcpStream) -> Option<(Sender, Open)> {
    let io = TokioIo::new(Counted::new(stream, open.backend.clone()));
    match hyper::client::conn::http1::handshake(io).await {
        Ok((sender, connection)) => {
            tokio::spawn(async move {
                if let Err(error) = connection.with_upgrades().await {
                    debug!(%error, "backend connection ended");
                }
            });
            Some((sender, open))
        }
        Err(error) => {
            debug!(backend = %open.backend.addr, %error, "no HTTP connection to the backend");
            open.backend.failures.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Both sides of an upgraded connection, copied until either ends; the backend
/// connection (and its count on the backend) lives as long.
async fn tunnel(client: OnUpgrade, backend: OnUpgrade, held: Option<Box<dyn Release>>) {
    if let (Ok(client), Ok(backend)) = tokio::join!(client, backend) {
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await;
    }
    if let Some(held) = held {
        held.release(false);
    }
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
pub(crate) fn answer(status: StatusCode, body: String) -> Response<ClientBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
