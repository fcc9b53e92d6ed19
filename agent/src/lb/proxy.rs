//! One proxied TCP connection: connect to the first backend that answers (a refused or
//! slow connect moves on to the next, so a backend that just died costs the client
//! nothing), then copy both ways until both sides are done.
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::frontend::Frontend;
use super::stats::BackendStats;

/// A backend that has not answered a connect by then is skipped.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) async fn serve(client: TcpStream, frontend: Arc<Frontend>) {
    serve_with_head(client, frontend, Vec::new()).await;
}

/// [`serve`] for a connection whose first bytes (`head`) were read already (the HTTP
/// frontend routes by them); they go to the backend first.
pub(crate) async fn serve_with_head(mut client: TcpStream, frontend: Arc<Frontend>, head: Vec<u8>) {
    frontend.stats.connections.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    for backend in frontend.candidates() {
        // Counted open from before the connect: a drain must not miss a connection in the making.
        let open = Open::new(backend.clone(), &frontend);
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.addr)).await;
        let mut upstream = match attempt {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(error)) => {
                debug!(port = frontend.port, backend = %backend.addr, %error, "backend refused; trying the next");
                backend.failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => {
                debug!(port = frontend.port, backend = %backend.addr, "backend connect timed out; trying the next");
                backend.failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let _ = upstream.set_nodelay(true);
        if !head.is_empty() {
            if upstream.write_all(&head).await.is_err() {
                backend.failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            backend.bytes_in.fetch_add(head.len() as u64, Ordering::Relaxed);
        }
        backend.total.fetch_add(1, Ordering::Relaxed);
        let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        if let Ok((to_backend, to_client)) = copied {
            open.backend.bytes_in.fetch_add(to_backend, Ordering::Relaxed);
            open.backend.bytes_out.fetch_add(to_client, Ordering::Relaxed);
        }
        return;
    }
    frontend.stats.unserved.fetch_add(1, Ordering::Relaxed);
    reset(&client);
}

/// A connection counted open on its backend until dropped.
struct Open {
    backend: Arc<BackendStats>,
    drained: Arc<tokio::sync::Notify>,
}

impl Open {
    fn new(backend: Arc<BackendStats>, frontend: &Frontend) -> Self {
        backend.active.fetch_add(1, Ordering::Relaxed);
        Open { backend, drained: frontend.drained.clone() }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let left = self.backend.active.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && self.backend.retired.load(Ordering::Relaxed) {
            self.drained.notify_one();
        }
    }
}

/// Closes with a reset (linger 0), so the client learns at once that nothing serves it
/// and the socket leaves no TIME_WAIT behind.
fn reset(stream: &TcpStream) {
    let linger = nix::sys::socket::sockopt::Linger;
    let _ = nix::sys::socket::setsockopt(&stream.as_fd(), linger, &libc::linger { l_onoff: 1, l_linger: 0 });
}
