//! Port mappings for BRIDGE containers as a userland proxy (like `docker-proxy`):
//! threads in the executor listen on `0.0.0.0:hostPort` and copy each connection (or UDP
//! datagram) to `containerIP:containerPort`. It needs nothing on the node (no iptables
//! rules to leak after a crash: the sockets die with the executor), works from other
//! hosts and from the agent itself, and binds before the container starts, so a taken
//! port fails the start with a clear message.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ContainerError;
use crate::executor_contract::MappedPort;

/// How long an idle UDP "connection" keeps its upstream socket.
const UDP_IDLE: Duration = Duration::from_secs(60);
const UDP_POLL: Duration = Duration::from_millis(200);

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Host ports bound but not yet forwarding (the container's address may not be known
/// yet when they are bound).
pub struct Reserved {
    ports: Vec<(MappedPort, Bound)>,
}

/// Binds every mapped host port; the first failure names the port.
pub fn reserve(mappings: &[MappedPort]) -> Result<Reserved, ContainerError> {
    let mut ports = Vec::new();
    for mapping in mappings {
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, mapping.host_port);
        let bound = match mapping.protocol.to_ascii_lowercase().as_str() {
            "tcp" => TcpListener::bind(addr).map(Bound::Tcp),
            "udp" => UdpSocket::bind(addr).map(Bound::Udp),
            other => {
                return Err(ContainerError::Port {
                    port: mapping.host_port,
                    protocol: other.to_string(),
                    reason: "only tcp and udp can be mapped".into(),
                })
            }
        }
        .map_err(|e| ContainerError::Port {
            port: mapping.host_port,
            protocol: mapping.protocol.clone(),
            reason: format!("cannot bind the host port: {e}"),
        })?;
        ports.push((mapping.clone(), bound));
    }
    Ok(Reserved { ports })
}

/// Running forwarders; [`Proxies::stop`] (or drop) closes the host ports.
pub struct Proxies {
    stop: Arc<AtomicBool>,
    listeners: Vec<i32>,
    threads: Vec<JoinHandle<()>>,
}

impl Reserved {
    /// Starts forwarding to the container at `ip`.
    pub fn start(self, ip: Ipv4Addr) -> Proxies {
        let stop = Arc::new(AtomicBool::new(false));
        let mut listeners = Vec::new();
        let mut threads = Vec::new();
        for (mapping, bound) in self.ports {
            let target = SocketAddr::V4(SocketAddrV4::new(ip, mapping.container_port));
            let stop = stop.clone();
            match bound {
                Bound::Tcp(listener) => {
                    listeners.push(listener.as_raw_fd());
                    threads.push(std::thread::spawn(move || serve_tcp(listener, target, stop)));
                }
                Bound::Udp(socket) => {
                    let _ = socket.set_read_timeout(Some(UDP_POLL));
                    threads.push(std::thread::spawn(move || serve_udp(socket, target, stop)));
                }
            }
        }
        Proxies { stop, listeners, threads }
    }
}

impl Proxies {
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for fd in self.listeners.drain(..) {
            // SAFETY: the fd belongs to a listener owned by a thread joined below, so it
            // is still open; shutdown on a listening socket wakes its blocked accept().
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_tcp(listener: TcpListener, target: SocketAddr, stop: Arc<AtomicBool>) {
    for incoming in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = incoming else { continue };
        // Connections are detached: they end when either side closes (or the executor
        // exits), which is what a proxy for a dead container should do anyway.
        std::thread::spawn(move || {
            let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else { return };
            let back = std::thread::spawn(move || copy(upstream2, client2));
            copy(client, upstream);
            let _ = back.join();
        });
    }
}

/// Copies until EOF, then half-closes the other side so the peer sees it.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn serve_udp(socket: UdpSocket, target: SocketAddr, stop: Arc<AtomicBool>) {
    // One upstream socket per client, so replies find their way back.
    let flows: Arc<Mutex<HashMap<SocketAddr, (UdpSocket, std::time::Instant)>>> = Arc::default();
    let mut buffer = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, client)) = socket.recv_from(&mut buffer) else { continue };
        let mut table = match flows.lock() {
            Ok(table) => table,
            Err(poisoned) => poisoned.into_inner(),
        };
        table.retain(|_, (_, last)| last.elapsed() < UDP_IDLE);
        if let std::collections::hash_map::Entry::Vacant(flow) = table.entry(client) {
            let Ok(upstream) = UdpSocket::bind("0.0.0.0:0") else { continue };
            if upstream.connect(target).is_err() {
                continue;
            }
            let _ = upstream.set_read_timeout(Some(UDP_POLL));
            let (Ok(reader), Ok(reply)) = (upstream.try_clone(), socket.try_clone()) else { continue };
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 65536];
                let mut idle = std::time::Instant::now();
                while !stop.load(Ordering::SeqCst) && idle.elapsed() < UDP_IDLE {
                    if let Ok(n) = reader.recv(&mut buffer) {
                        let _ = reply.send_to(&buffer[..n], client);
                        idle = std::time::Instant::now();
                    }
                }
            });
            flow.insert((upstream, std::time::Instant::now()));
        }
        if let Some((upstream, last)) = table.get_mut(&client) {
            let _ = upstream.send(&buffer[..n]);
            *last = std::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_is_forwarded_and_a_taken_port_is_refused() {
        let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
        let backend_port = backend.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in backend.incoming().flatten() {
                let mut stream = stream;
                let mut line = [0u8; 5];
                if stream.read_exact(&mut line).is_ok() {
                    let _ = stream.write_all(b"pong:");
                    let _ = stream.write_all(&line);
                }
            }
        });
        // A free port, found by binding and letting go.
        let host_port = TcpListener::bind("0.0.0.0:0").expect("probe").local_addr().expect("addr").port();
        let mapping = MappedPort { container_port: backend_port, host_port, protocol: "tcp".into() };
        let reserved = reserve(std::slice::from_ref(&mapping)).expect("reserve");
        let err = reserve(std::slice::from_ref(&mapping)).err().expect("taken");
        assert!(err.to_string().contains(&host_port.to_string()), "{err}");
        let mut proxies = reserved.start(Ipv4Addr::LOCALHOST);
        let mut client = TcpStream::connect(("127.0.0.1", host_port)).expect("connect");
        client.write_all(b"hello").expect("write");
        let mut reply = String::new();
        client.shutdown(Shutdown::Write).expect("half close");
        client.read_to_string(&mut reply).expect("read");
        assert_eq!(reply, "pong:hello");
        proxies.stop();
        assert!(TcpListener::bind(("0.0.0.0", host_port)).is_ok(), "the host port is free again");
    }
}
