//! Service ports in http mode against real sockets on loopback: each request of one
//! keep-alive client connection picks its backend, backend connections are pooled, a
//! drain waits for requests in flight and not for idle connections, a request a backend
//! reset is retried elsewhere when that is safe; and a `udp,tcp` port serves both.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plinth_protocol::agent::{LbMode, Service, ServiceProtocol, ServiceTable};
use plinth_testkit::free_port;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

use super::tests::{
    ask, balancer, exchange, http_backend, named_backend, named_udp_backend, read_head, service, udp_ask, LOOPBACK,
};

const GET: &str = "GET / HTTP/1.1\r\nHost: web.example\r\n\r\n";

fn http_service(port: u16, backends: &[(&str, u16)]) -> Service {
    let mut s = service(port, ServiceProtocol::Tcp, None, backends);
    s.mode = LbMode::Http;
    s
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(SocketAddr::new(LOOPBACK, port)).await.unwrap()
}

/// An HTTP backend answering `NAME`, but `GET /slow` only once `gate` is notified.
async fn gated_backend(name: &'static str, gate: Arc<Notify>) -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let gate = gate.clone();
            tokio::spawn(async move {
                while let Ok(head) = read_head(&mut s).await {
                    if head.starts_with("GET /slow") {
                        gate.notified().await;
                    }
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}", name.len());
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A backend that reads a request's head and resets the connection without an answer.
async fn resetting_backend() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = read_head(&mut s).await;
            let linger = nix::sys::socket::sockopt::Linger;
            let _ = nix::sys::socket::setsockopt(&s, linger, &libc::linger { l_onoff: 1, l_linger: 0 });
        }
    });
    port
}

#[tokio::test]
async fn each_request_of_one_client_connection_picks_a_backend_over_pooled_connections() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let dead = free_port();
    let port = free_port();
    let lb = balancer(None);
    let backends = [("t-a", a), ("t-dead", dead), ("t-b", b)];
    lb.apply(ServiceTable { generation: 1, services: vec![http_service(port, &backends)] });
    let mut s = connect(port).await;
    let mut answers = Vec::new();
    for _ in 0..12 {
        let (status, body) = exchange(&mut s, GET).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        answers.push(body);
    }
    let count = |name: &str| answers.iter().filter(|x| *x == &format!("{name} web.example for 127.0.0.1")).count();
    assert_eq!(count("a") + count("b"), 12, "every answer names its backend and the client: {answers:?}");
    assert!(count("a") >= 4 && count("b") >= 4, "requests, not the connection, pick the backend: {answers:?}");
    let view = lb.view();
    let frontend = &view.frontends[0];
    assert_eq!((frontend.mode, frontend.connections), (LbMode::Http, 1), "one client connection: {view:?}");
    for backend in frontend.backends.iter().filter(|x| x.task_id.as_str() != "t-dead") {
        assert_eq!(backend.total_connections, 1, "one pooled connection per backend, reused: {view:?}");
        assert!(backend.requests >= 4 && backend.active_connections == 0, "{view:?}");
    }
    let dead_view = frontend.backends.iter().find(|x| x.task_id.as_str() == "t-dead").unwrap();
    assert!(dead_view.failures >= 1 && dead_view.total_connections == 0, "{view:?}");
}

#[tokio::test]
async fn a_drain_waits_for_the_request_in_flight_and_not_for_kept_alive_clients() {
    let gate = Arc::new(Notify::new());
    let (old, new) = (gated_backend("old", gate.clone()).await, gated_backend("new", gate.clone()).await);
    let port = free_port();
    let lb = balancer(None);
    lb.apply(ServiceTable { generation: 1, services: vec![http_service(port, &[("t-old", old)])] });
    let mut idle = connect(port).await;
    assert_eq!(exchange(&mut idle, GET).await.1, "old");
    let mut slow = connect(port).await;
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: web.example\r\n\r\n").await.unwrap();
    let in_flight = async {
        while lb.view().frontends[0].backends[0].active_connections == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), in_flight).await.expect("the slow request reaches the backend");

    lb.apply(ServiceTable { generation: 2, services: vec![http_service(port, &[("t-new", new)])] });
    assert_eq!(lb.drained_generation(), Some(1), "a request is in flight on the old backend");
    assert_eq!(
        exchange(&mut idle, GET).await.1,
        "new",
        "the kept client connection's next request goes to the new one"
    );
    gate.notify_one();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), async {
        let head = read_head(&mut slow).await.unwrap();
        let mut body = [0u8; 3];
        tokio::io::AsyncReadExt::read_exact(&mut slow, &mut body).await.unwrap();
        (head.lines().next().unwrap_or_default().to_string(), String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .expect("the request in flight is answered");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "old"));
    let drained = async {
        while lb.drained_generation() != Some(2) {
            tokio::time::timeout(Duration::from_millis(100), lb.drain_progress()).await.ok();
        }
    };
    tokio::time::timeout(Duration::from_secs(5), drained).await.expect("drained while both clients stay connected");
    assert_eq!(exchange(&mut slow, GET).await.1, "new", "both client connections are still open");
}

#[tokio::test]
async fn a_request_reset_before_its_answer_is_retried_elsewhere_only_when_it_is_safe() {
    let (reset, a) = (resetting_backend().await, http_backend("a").await);
    let port = free_port();
    let lb = balancer(None);
    lb.apply(ServiceTable { generation: 1, services: vec![http_service(port, &[("t-reset", reset), ("t-a", a)])] });
    let mut s = connect(port).await;
    for _ in 0..4 {
        assert_eq!(exchange(&mut s, GET).await, ("HTTP/1.1 200 OK".into(), "a web.example for 127.0.0.1".into()));
    }
    // The cursor is at the resetting backend again: a POST with a body is not sent twice.
    let mut s = connect(port).await;
    let post = "POST / HTTP/1.1\r\nHost: web.example\r\nContent-Length: 1\r\n\r\nx";
    let (status, _) = exchange(&mut s, post).await;
    assert_eq!(status, "HTTP/1.1 502 Bad Gateway");
    let mut s = connect(port).await;
    assert_eq!(exchange(&mut s, post).await.0, "HTTP/1.1 200 OK", "a POST to a serving backend goes through");
    let view = lb.view();
    let reset_view = view.frontends[0].backends.iter().find(|x| x.task_id.as_str() == "t-reset").unwrap();
    assert!(reset_view.failures >= 3, "{view:?}");
}

#[tokio::test]
async fn a_udp_tcp_service_port_serves_a_connection_and_a_datagram_on_the_same_port() {
    let (tcp, udp) = (named_backend("tcp-task").await, named_udp_backend("udp-task").await);
    let port = free_port();
    let lb = balancer(None);
    lb.apply(ServiceTable {
        generation: 1,
        services: vec![
            service(port, ServiceProtocol::Tcp, None, &[("t", tcp)]),
            service(port, ServiceProtocol::Udp, None, &[("t", udp)]),
        ],
    });
    assert_eq!(ask(port).await.unwrap(), "tcp-task");
    let client = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    client.connect(SocketAddr::new(LOOPBACK, port)).await.unwrap();
    assert_eq!(udp_ask(&client, "hello").await, "udp-task hello");
    let view = lb.view();
    let ports: Vec<(u16, ServiceProtocol, bool)> =
        view.frontends.iter().map(|f| (f.port, f.protocol, f.listening)).collect();
    assert_eq!(ports, vec![(port, ServiceProtocol::Tcp, true), (port, ServiceProtocol::Udp, true)]);
}
