//! UDP service ports: each client address is a flow with its own upstream socket to one
//! backend (picked like a TCP connection); replies go back through the service port.
//! A flow idle for [`FLOW_IDLE`] is closed. A flow whose backend left the table takes no
//! new datagrams (the client's next one starts a flow to a serving backend) and ends once
//! it has been quiet for [`LINGER`], so a drain never waits for idle UDP clients. Flows
//! hold the service port's socket weakly: closing the port frees it at once.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::frontend::Frontend;
use super::stats::BackendStats;

const FLOW_IDLE: Duration = Duration::from_secs(60);
/// How long a flow that takes no new datagrams still waits for the backend's replies.
const LINGER: Duration = Duration::from_secs(1);
/// How often a flow looks at its idle time, its backend and its port.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Largest datagram forwarded.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams queued per flow before new ones are dropped (UDP may drop).
const FLOW_QUEUE: usize = 256;
/// Open flows per service port at most; past it a new client's datagrams are dropped.
const MAX_FLOWS: usize = 16_384;

/// The service port's end of one flow.
struct Flow {
    tx: mpsc::Sender<Vec<u8>>,
    backend: Arc<BackendStats>,
}

pub(crate) async fn serve(socket: UdpSocket, frontend: Arc<Frontend>) {
    // The only strong reference: when this task is aborted (the port closes), the socket closes.
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                debug!(port = frontend.port, %error, "udp service port receive failed");
                continue;
            }
        };
        let mut datagram = buf[..len].to_vec();
        if let Some(flow) = flows.get(&client) {
            if !flow.backend.retired.load(Ordering::Relaxed) {
                match flow.tx.try_send(datagram) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                    Err(mpsc::error::TrySendError::Closed(d)) => datagram = d,
                }
            }
            // Dropping its sender lets the old flow linger for late replies, then end.
            flows.remove(&client);
        }
        start_flow(&socket, &frontend, client, datagram, &mut flows).await;
    }
}

async fn start_flow(
    socket: &Arc<UdpSocket>,
    frontend: &Arc<Frontend>,
    client: SocketAddr,
    first: Vec<u8>,
    flows: &mut HashMap<SocketAddr, Flow>,
) {
    if flows.len() >= MAX_FLOWS / 2 {
        flows.retain(|_, f| !f.tx.is_closed());
    }
    frontend.stats.connections.fetch_add(1, Ordering::Relaxed);
    let backend = match frontend.candidates().into_iter().next() {
        Some(backend) if flows.len() < MAX_FLOWS => backend,
        _ => {
            frontend.stats.unserved.fetch_add(1, Ordering::Relaxed);
            return;
        }
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
    let (tx, rx) = mpsc::channel::<Vec<u8>>(FLOW_QUEUE);
    let _ = tx.try_send(first);
    flows.insert(client, Flow { tx, backend: backend.clone() });
    backend.active.fetch_add(1, Ordering::Relaxed);
    backend.total.fetch_add(1, Ordering::Relaxed);
    let drained = frontend.drained.clone();
    let socket = Arc::downgrade(socket);
    tokio::spawn(async move {
        forward(upstream, rx, socket, client, &backend).await;
        let left = backend.active.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && backend.retired.load(Ordering::Relaxed) {
            drained.notify_one();
        }
    });
}

/// One flow: the client's datagrams to the backend, the backend's back to the client,
/// until idle, drained, closed or refused.
async fn forward(
    upstream: UdpSocket,
    mut rx: mpsc::Receiver<Vec<u8>>,
    socket: Weak<UdpSocket>,
    client: SocketAddr,
    backend: &BackendStats,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // False once the service port sends this flow nothing more (a new flow took the client).
    let mut fed = true;
    let mut last = Instant::now();
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            out = rx.recv(), if fed => match out {
                Some(datagram) => {
                    last = Instant::now();
                    if let Ok(n) = upstream.send(&datagram).await {
                        backend.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                None => {
                    fed = false;
                    last = Instant::now();
                }
            },
            back = upstream.recv(&mut buf) => match back {
                Ok(n) => {
                    last = Instant::now();
                    let Some(socket) = socket.upgrade() else { return };
                    if socket.send_to(&buf[..n], client).await.is_ok() {
                        backend.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Err(error) => {
                    debug!(backend = %backend.addr, %error, "udp backend unreachable");
                    backend.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = check.tick() => {
                let lingering = !fed || backend.retired.load(Ordering::Relaxed);
                let limit = if lingering { LINGER } else { FLOW_IDLE };
                if socket.strong_count() == 0 || last.elapsed() >= limit {
                    return;
                }
            }
        }
    }
}
