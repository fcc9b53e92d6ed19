//! The listening sockets of service ports: TCP accept loops (each connection proxied in
//! its own task, as bytes or, in http mode, request by request) and UDP sockets
//! (datagrams forwarded per client flow).
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use plinth_protocol::agent::ServiceProtocol;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;
use tracing::warn;

use super::frontend::Frontend;
use super::{pooled, proxy, udp};

/// Pending connections the kernel queues per service port.
const BACKLOG: u32 = 4096;
/// Pause after an accept error (e.g. out of file descriptors) before accepting again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Binds the frontend's port on `bind` and starts serving it.
pub(crate) fn start(frontend: &Arc<Frontend>, bind: IpAddr) -> Result<JoinHandle<()>, String> {
    let addr = SocketAddr::new(bind, frontend.port);
    match frontend.protocol {
        ServiceProtocol::Tcp => {
            let listener = tcp_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let frontend = frontend.clone();
            Ok(tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((client, peer)) => {
                            if frontend.http_mode() {
                                tokio::spawn(pooled::serve(client, peer, frontend.clone()));
                            } else {
                                tokio::spawn(proxy::serve(client, frontend.clone()));
                            }
                        }
                        Err(error) => {
                            warn!(port = frontend.port, %error, "service port cannot accept");
                            tokio::time::sleep(ACCEPT_PAUSE).await;
                        }
                    }
                }
            }))
        }
        ServiceProtocol::Udp => {
            let socket = std::net::UdpSocket::bind(addr)
                .and_then(|s| {
                    s.set_nonblocking(true)?;
                    tokio::net::UdpSocket::from_std(s)
                })
                .map_err(|e| format!("cannot bind {addr}/udp: {e}"))?;
            Ok(tokio::spawn(udp::serve(socket, frontend.clone())))
        }
    }
}

pub(crate) fn tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // A restarted agent rebinds at once, whatever its old connections' TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
