//! The balancer against real sockets on loopback: backends are tokio servers that answer
//! with their name, the frontends listen on free ports of 127.0.0.1.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use plinth_protocol::agent::{Backend, Balance, LbMode, Service, ServiceProtocol, ServiceTable};
use plinth_protocol::{AppId, TaskId};
use plinth_testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::{Balancer, LbSettings};

pub(super) const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A TCP backend answering every connection with its name, then closing.
pub(super) async fn named_backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    port
}

pub(super) fn service(port: u16, protocol: ServiceProtocol, group: Option<&str>, backends: &[(&str, u16)]) -> Service {
    Service {
        app_id: AppId::parse("/web").unwrap(),
        service_port: port,
        protocol,
        group: group.map(str::to_string),
        balance: Balance::RoundRobin,
        vhosts: vec![],
        mode: LbMode::Tcp,
        backends: backends
            .iter()
            .map(|(task, p)| Backend { task_id: TaskId::new(*task), host: "127.0.0.1".into(), port: *p })
            .collect(),
    }
}

pub(super) fn balancer(group: Option<&str>) -> Balancer {
    Balancer::new(LbSettings { enabled: true, group: group.map(str::to_string), bind: LOOPBACK, http_port: None })
}

pub(super) async fn ask(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, port)).await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn connections_rotate_over_backends_and_a_refused_backend_is_skipped() {
    let (a, b) = (named_backend("a").await, named_backend("b").await);
    let dead = free_port();
    let port = free_port();
    let lb = balancer(None);
    let backends = [("t-a", a), ("t-dead", dead), ("t-b", b)];
    lb.apply(ServiceTable { generation: 1, services: vec![service(port, ServiceProtocol::Tcp, None, &backends)] });
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(ask(port).await.expect("served"));
    }
    assert!(answers.iter().all(|x| x == "a" || x == "b"), "{answers:?}");
    assert!(answers.contains(&"a".to_string()) && answers.contains(&"b".to_string()), "{answers:?}");
    let view = lb.view();
    let dead_view = view.frontends[0].backends.iter().find(|x| x.task_id.as_str() == "t-dead").unwrap();
    assert!(dead_view.failures >= 1 && dead_view.total_connections == 0, "{view:?}");
    assert_eq!(view.frontends[0].connections, 6);
    assert_eq!(lb.applied_generation(), Some(1));
}

#[tokio::test]
async fn a_table_change_keeps_open_connections_and_the_drain_waits_for_them() {
    // A backend that holds each connection open until the client closes it.
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let held = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let other = named_backend("other").await;
    let port = free_port();
    let lb = balancer(None);
    lb.apply(ServiceTable {
        generation: 1,
        services: vec![service(port, ServiceProtocol::Tcp, None, &[("old", held)])],
    });
    let mut open = TcpStream::connect(SocketAddr::new(LOOPBACK, port)).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();
    // The task is drained: the table now lists another one.
    lb.apply(ServiceTable {
        generation: 2,
        services: vec![service(port, ServiceProtocol::Tcp, None, &[("new", other)])],
    });
    assert_eq!(ask(port).await.unwrap(), "other", "new connections go to the new backend");
    assert_eq!((lb.applied_generation(), lb.drained_generation()), (Some(2), Some(1)), "a connection is still open");
    open.write_all(b"pong").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong", "the open connection was not touched");
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), lb.drain_progress()).await.expect("the drain is signalled");
    assert_eq!(lb.drained_generation(), Some(2));
    // A backend that leaves and comes back while a connection is open holds no drain.
    let mut again = TcpStream::connect(SocketAddr::new(LOOPBACK, port)).await.unwrap();
    let mut name = [0u8; 5];
    again.read_exact(&mut name).await.unwrap();
    assert_eq!(&name, b"other");
    lb.apply(ServiceTable { generation: 3, services: vec![service(port, ServiceProtocol::Tcp, None, &[])] });
    lb.apply(ServiceTable {
        generation: 4,
        services: vec![service(port, ServiceProtocol::Tcp, None, &[("new", other)])],
    });
    assert_eq!(lb.drained_generation(), Some(4), "back in the table: nothing to wait for");
    drop(again);
    // The port goes with its app.
    lb.apply(ServiceTable { generation: 5, services: vec![] });
    assert!(ask(port).await.is_err(), "closed");
    assert!(lb.view().frontends.is_empty());
}

#[tokio::test]
async fn only_the_agents_group_is_served_and_a_port_without_backends_resets() {
    let a = named_backend("a").await;
    let (internal, external, empty) = (free_port(), free_port(), free_port());
    let lb = balancer(Some("external"));
    lb.apply(ServiceTable {
        generation: 1,
        services: vec![
            service(internal, ServiceProtocol::Tcp, Some("internal"), &[("t", a)]),
            service(external, ServiceProtocol::Tcp, Some("external"), &[("t", a)]),
            service(empty, ServiceProtocol::Tcp, Some("external"), &[]),
        ],
    });
    assert!(ask(internal).await.is_err(), "another group's port is not served");
    assert_eq!(ask(external).await.unwrap(), "a");
    let refused = ask(empty).await;
    assert!(refused.as_deref().map_or(true, str::is_empty), "{refused:?}");
    let view = lb.view();
    assert_eq!(view.frontends.len(), 2);
    assert_eq!(view.frontends.iter().find(|f| f.port == empty).unwrap().unserved, 1);
    let off = Balancer::new(LbSettings { enabled: false, ..LbSettings::default() });
    assert_eq!((off.applied_generation(), off.drained_generation()), (None, None), "no balancer: nothing to wait for");
}

#[tokio::test]
async fn udp_datagrams_are_forwarded_per_flow_and_answered() {
    let echo = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let port = free_port();
    let lb = balancer(None);
    lb.apply(ServiceTable {
        generation: 1,
        services: vec![service(port, ServiceProtocol::Udp, None, &[("u", echo_port)])],
    });
    let client = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    client.connect(SocketAddr::new(LOOPBACK, port)).await.unwrap();
    for word in ["one", "two"] {
        client.send(word.as_bytes()).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await.expect("an answer").unwrap();
        assert_eq!(&buf[..n], word.as_bytes());
    }
    let view = lb.view();
    assert_eq!(view.frontends[0].connections, 1, "one flow: {view:?}");
    assert_eq!(view.frontends[0].backends[0].bytes_out, 6);
}

/// A UDP backend answering each datagram with `NAME DATA`.
pub(super) async fn named_udp_backend(name: &'static str) -> u16 {
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let answer = [name.as_bytes(), b" ", &buf[..n]].concat();
            let _ = socket.send_to(&answer, from).await;
        }
    });
    port
}

pub(super) async fn udp_ask(client: &UdpSocket, word: &str) -> String {
    client.send(word.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await.expect("an answer").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_udp_flow_leaves_a_drained_backend_and_a_closed_port_is_free_at_once() {
    let (a, b) = (named_udp_backend("a").await, named_udp_backend("b").await);
    let port = free_port();
    let lb = balancer(None);
    let table = |generation, backends: &[(&str, u16)]| ServiceTable {
        generation,
        services: vec![service(port, ServiceProtocol::Udp, None, backends)],
    };
    lb.apply(table(1, &[("ta", a)]));
    let client = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    client.connect(SocketAddr::new(LOOPBACK, port)).await.unwrap();
    assert_eq!(udp_ask(&client, "one").await, "a one");
    // The task is drained: the same client's next datagram goes to the backend left.
    lb.apply(table(2, &[("tb", b)]));
    assert_eq!(udp_ask(&client, "two").await, "b two");
    // The old flow ends once quiet, so the drain does not wait for the idle timeout.
    tokio::time::timeout(Duration::from_secs(5), async {
        while lb.drained_generation() != Some(2) {
            lb.drain_progress().await;
        }
    })
    .await
    .expect("the drained backend's flow ends");
    assert_eq!(udp_ask(&client, "three").await, "b three");
    // The app goes: its port is free for anyone at once, although a flow was open.
    lb.apply(ServiceTable { generation: 3, services: vec![] });
    let rebound = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match UdpSocket::bind((LOOPBACK, port)).await {
                Ok(socket) => return socket,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(rebound.is_ok(), "the service port is still bound after its app left");
}

/// An HTTP/1.1 backend that answers every request of a keep-alive connection with
/// `NAME HOST` (the request's `Host`), plus its `X-Forwarded-For` when there is one.
pub(super) async fn http_backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Ok(head) = read_head(&mut s).await {
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
                            .map(|(_, v)| v.trim().to_string())
                    };
                    let mut body = format!("{name} {}", header("host").unwrap_or_default());
                    if let Some(client) = header("x-forwarded-for") {
                        body = format!("{body} for {client}");
                    }
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Reads one message head (requests here have no body), as text.
pub(super) async fn read_head(s: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// One request on an open connection: the status line and the body of the answer
/// (`Content-Length` or chunked).
pub(super) async fn exchange(s: &mut TcpStream, request: &str) -> (String, String) {
    s.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(s)).await.expect("an answer").unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim())
    };
    let mut body = Vec::new();
    if header("transfer-encoding") == Some("chunked") {
        loop {
            let size_line = read_line(s).await;
            let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(header("content-length").map_or(0, |v| v.parse().unwrap()), 0);
        s.read_exact(&mut body).await.unwrap();
    }
    (head.lines().next().unwrap_or_default().to_string(), String::from_utf8_lossy(&body).into_owned())
}

async fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn vhost_service(app: &str, vhosts: &[&str], backends: &[(&str, u16)]) -> Service {
    let mut s = service(free_port(), ServiceProtocol::Tcp, None, backends);
    s.app_id = AppId::parse(app).unwrap();
    s.vhosts = vhosts.iter().map(|h| h.to_string()).collect();
    s
}

#[tokio::test]
async fn the_http_frontend_routes_each_request_of_a_keep_alive_connection_by_its_host() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let http_port = free_port();
    let lb = Balancer::new(LbSettings { enabled: true, group: None, bind: LOOPBACK, http_port: Some(http_port) });
    let sa = vhost_service("/web", &["a.example"], &[("ta", a)]);
    let sb = vhost_service("/other", &["b.example", "www.b.example"], &[("tb", b)]);
    lb.apply(ServiceTable { generation: 1, services: vec![sa, sb] });
    let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, http_port)).await.unwrap();
    let ok = |body: &str| ("HTTP/1.1 200 OK".to_string(), body.to_string());
    // One connection, three hosts in turn: each request reaches the app its host names.
    let a_body = "a a.example for 127.0.0.1";
    assert_eq!(exchange(&mut s, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await, ok(a_body));
    let b_body = "b WWW.B.example:80 for 127.0.0.1";
    assert_eq!(exchange(&mut s, "GET / HTTP/1.1\r\nHost: WWW.B.example:80\r\n\r\n").await, ok(b_body));
    assert_eq!(exchange(&mut s, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await, ok(a_body));
    let forwarded = "GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n";
    assert_eq!(exchange(&mut s, forwarded).await, ok("a a.example for 10.1.2.3, 127.0.0.1"));
    let (status, body) = exchange(&mut s, "GET / HTTP/1.1\r\nHost: nobody.example\r\n\r\n").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 503 Service Unavailable", "no app serves nobody.example"));
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "", "the connection ends after an unknown host");

    let send = |raw: &'static [u8]| async move {
        let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, http_port)).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    };
    assert!(send(b"\x16\x03\x01garbage\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    assert!(send(b"GET / HTTP/1.0\r\n\r\n").await.contains("no Host header"));
    let view = lb.view();
    assert_eq!((view.http_port, view.http_error.as_deref()), (Some(http_port), None));
    assert!(view.frontends.iter().any(|f| f.vhosts == ["b.example", "www.b.example"]), "{view:?}");
    let a_view = view.frontends.iter().find(|f| f.app_id.as_str() == "/web").unwrap();
    assert_eq!(a_view.backends[0].total_connections, 2, "a new upstream connection each time the host changed");
    assert!(a_view.backends[0].bytes_out > 0 && a_view.backends[0].bytes_in > 0, "{view:?}");
}

/// An HTTP/1.0 backend: one request per connection, answered with `NAME`, then closed.
async fn http10_backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            if read_head(&mut s).await.is_ok() {
                let answer = format!("HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n{name}");
                let _ = s.write_all(answer.as_bytes()).await;
            }
        }
    });
    port
}

#[tokio::test]
async fn a_keep_alive_client_stays_connected_to_a_backend_that_closes_after_each_answer() {
    let old = http10_backend("old-style").await;
    let http_port = free_port();
    let lb = Balancer::new(LbSettings { enabled: true, group: None, bind: LOOPBACK, http_port: Some(http_port) });
    lb.apply(ServiceTable { generation: 1, services: vec![vhost_service("/web", &["a.example"], &[("t", old)])] });
    let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, http_port)).await.unwrap();
    for _ in 0..3 {
        let (status, body) = exchange(&mut s, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "old-style"));
    }
    let view = lb.view();
    assert_eq!(view.frontends[0].backends[0].total_connections, 3, "one backend connection per request");
    assert_eq!(view.frontends[0].backends[0].failures, 0, "{view:?}");
}

#[tokio::test]
async fn a_kept_http_connection_leaves_a_drained_backend_at_its_next_request() {
    let (old, new) = (http_backend("old").await, http_backend("new").await);
    let http_port = free_port();
    let lb = Balancer::new(LbSettings { enabled: true, group: None, bind: LOOPBACK, http_port: Some(http_port) });
    let table = |generation, backends: &[(&str, u16)]| ServiceTable {
        generation,
        services: vec![vhost_service("/web", &["a.example"], backends)],
    };
    lb.apply(table(1, &[("t-old", old)]));
    let mut s = TcpStream::connect(SocketAddr::new(LOOPBACK, http_port)).await.unwrap();
    let request = "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    assert_eq!(exchange(&mut s, request).await.1, "old a.example for 127.0.0.1");
    lb.apply(table(2, &[("t-new", new)]));
    assert_eq!(lb.drained_generation(), Some(1), "the kept connection still counts on the old backend");
    // The client keeps its connection; its next request goes to the backend that serves now.
    assert_eq!(exchange(&mut s, request).await.1, "new a.example for 127.0.0.1");
    assert_eq!(lb.drained_generation(), Some(2), "nothing holds the old backend any more");
}
