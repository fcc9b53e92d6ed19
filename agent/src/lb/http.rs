//! The HTTP frontend (`--lb-http-port`, marathon-lb's port 80): reads a connection's
//! request head, routes it by its `Host` to the service port whose `HAPROXY_{n}_VHOST`
//! names it, then proxies the whole connection there (head included). An unknown host,
//! or a head that is not HTTP, gets a 503 or 400 and the connection ends.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::warn;

use super::frontend::Frontend;
use super::proxy;

/// Host name (lower case, no port) → the frontend of the service port it routes to.
pub(crate) type VhostMap = Arc<RwLock<HashMap<String, Arc<Frontend>>>>;

/// Largest request head read before routing.
const MAX_HEAD: usize = 16 * 1024;
/// A client must have sent its head by then.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADERS: usize = 64;

pub(crate) fn start(port: u16, bind: std::net::IpAddr, vhosts: VhostMap) -> Result<JoinHandle<()>, String> {
    let addr = std::net::SocketAddr::new(bind, port);
    let listener = super::listeners::tcp_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    tokio::spawn(route(client, vhosts.clone()));
                }
                Err(error) => {
                    warn!(port, %error, "HTTP frontend cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}

async fn route(mut client: TcpStream, vhosts: VhostMap) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(head)) => head,
        _ => return answer(&mut client, "400 Bad Request", "malformed or incomplete request head").await,
    };
    let host = match host_of(&head) {
        Ok(Some(host)) => host,
        Ok(None) => return answer(&mut client, "400 Bad Request", "no Host header").await,
        Err(()) => return answer(&mut client, "400 Bad Request", "malformed request head").await,
    };
    let frontend = vhosts.read().expect("vhost lock is never poisoned").get(&host).cloned();
    match frontend {
        Some(frontend) => proxy::serve_with_head(client, frontend, head).await,
        None => answer(&mut client, "503 Service Unavailable", &format!("no app serves {host}")).await,
    }
}

/// Reads until the end of the request head (or `MAX_HEAD` bytes, an error).
async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// The request's host, lower case and without its port.
fn host_of(head: &[u8]) -> Result<Option<String>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(()),
    }
    let Some(value) = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value) else {
        return Ok(None);
    };
    let value = std::str::from_utf8(value).map_err(|_| ())?.trim().to_ascii_lowercase();
    let host = match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_string(),
        _ => value,
    };
    Ok(Some(host))
}

async fn answer(client: &mut TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_is_read_without_its_port_and_garbage_is_refused() {
        let head = b"GET / HTTP/1.1\r\nHost: Hello.Example:80\r\nAccept: */*\r\n\r\n";
        assert_eq!(host_of(head), Ok(Some("hello.example".into())));
        assert_eq!(host_of(b"GET / HTTP/1.0\r\n\r\n"), Ok(None));
        assert_eq!(host_of(b"\x16\x03\x01 not http\r\n\r\n"), Err(()));
    }
}
