//! UDP service ports: each client address is a flow with its own upstream socket to one
//! backend (picked like a TCP connection); replies go back through the service port.
//! A flow idle for [`FLOW_IDLE`] is closed.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use super::frontend::Frontend;

const FLOW_IDLE: Duration = Duration::from_secs(60);
/// Largest datagram forwarded.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams queued per flow before new ones are dropped (UDP may drop).
const FLOW_QUEUE: usize = 256;

pub(crate) async fn serve(socket: UdpSocket, frontend: Arc<Frontend>) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((len, client)) = socket.recv_from(&mut buf).await else { continue };
        let datagram = buf[..len].to_vec();
        if let Some(flow) = flows.get(&client) {
            match flow.try_send(datagram) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => continue,
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    flows.remove(&client);
                    start_flow(&socket, &frontend, client, d, &mut flows).await;
                }
            }
        } else {
            start_flow(&socket, &frontend, client, datagram, &mut flows).await;
        }
    }
}

async fn start_flow(
    socket: &Arc<UdpSocket>,
    frontend: &Arc<Frontend>,
    client: SocketAddr,
    first: Vec<u8>,
    flows: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) {
    flows.retain(|_, f| !f.is_closed());
    frontend.stats.connections.fetch_add(1, Ordering::Relaxed);
    let Some(backend) = frontend.candidates().into_iter().next() else {
        frontend.stats.unserved.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let bind: SocketAddr = if backend.addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("valid");
    let upstream = match UdpSocket::bind(bind).await {
        Ok(s) if s.connect(backend.addr).await.is_ok() => s,
        _ => {
            backend.failures.fetch_add(1, Ordering::Relaxed);
            frontend.stats.unserved.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(FLOW_QUEUE);
    let _ = tx.try_send(first);
    flows.insert(client, tx);
    let socket = socket.clone();
    backend.active.fetch_add(1, Ordering::Relaxed);
    backend.total.fetch_add(1, Ordering::Relaxed);
    let drained = frontend.drained.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some(datagram) = out else { break };
                    if let Ok(n) = upstream.send(&datagram).await {
                        backend.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                back = upstream.recv(&mut buf) => match back {
                    Ok(n) => {
                        if socket.send_to(&buf[..n], client).await.is_ok() {
                            backend.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(error) => {
                        debug!(backend = %backend.addr, %error, "udp backend unreachable");
                        backend.failures.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                },
                () = tokio::time::sleep(FLOW_IDLE) => break,
            }
        }
        let left = backend.active.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && backend.retired.load(Ordering::Relaxed) {
            drained.notify_one();
        }
    });
}
