//! One proxied TCP connection: connect to the first backend that answers (a refused or
//! slow connect moves on to the next, so a backend that just died costs the client
//! nothing), then copy both ways until both sides are done.
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use super::frontend::Frontend;
use super::open::Open;
use super::stats::BackendStats;

/// A backend that has not answered a connect by then is skipped.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) async fn serve(mut client: TcpStream, frontend: Arc<Frontend>) {
    let _ = client.set_nodelay(true);
    let Some((open, mut upstream)) = connect(&frontend).await else {
        reset(&client);
        return;
    };
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    if let Ok((to_backend, to_client)) = copied {
        open.backend.bytes_in.fetch_add(to_backend, Ordering::Relaxed);
        open.backend.bytes_out.fetch_add(to_client, Ordering::Relaxed);
    }
}

/// A new connection of the frontend to the first backend that accepts it, counted open
/// on that backend while the guard lives (`None`: no backend, or none answered).
pub(crate) async fn connect(frontend: &Frontend) -> Option<(Open, TcpStream)> {
    frontend.stats.connections.fetch_add(1, Ordering::Relaxed);
    for backend in frontend.candidates() {
        // Counted open from before the connect: a drain must not miss a connection in the making.
        let open = Open::new(backend.clone(), &frontend.drained);
        if let Some(upstream) = dial(frontend, &backend).await {
            return Some((open, upstream));
        }
    }
    frontend.stats.unserved.fetch_add(1, Ordering::Relaxed);
    None
}

/// A new connection to `backend` (`None`: refused or timed out, counted as its failure).
pub(crate) async fn dial(frontend: &Frontend, backend: &BackendStats) -> Option<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.addr)).await {
        Ok(Ok(upstream)) => {
            let _ = upstream.set_nodelay(true);
            backend.total.fetch_add(1, Ordering::Relaxed);
            return Some(upstream);
        }
        Ok(Err(error)) => {
            debug!(port = frontend.port, backend = %backend.addr, %error, "backend refused; trying the next");
        }
        Err(_) => {
            debug!(port = frontend.port, backend = %backend.addr, "backend connect timed out; trying the next")
        }
    }
    backend.failures.fetch_add(1, Ordering::Relaxed);
    None
}

/// Closes with a reset (linger 0), so the client learns at once that nothing serves it
/// and the socket leaves no TIME_WAIT behind.
fn reset(stream: &TcpStream) {
    let linger = nix::sys::socket::sockopt::Linger;
    let _ = nix::sys::socket::setsockopt(&stream.as_fd(), linger, &libc::linger { l_onoff: 1, l_linger: 0 });
}
