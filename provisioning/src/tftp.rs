//! A read-only TFTP server (RFC 1350 RRQ, with the RFC 2347/2348/2349 `blksize` and
//! `tsize` options) for firmware that only speaks PXE: it fetches iPXE (`undionly.kpxe`,
//! `ipxe.efi`) and iPXE takes over over HTTP. Only regular files below the root are
//! served; `..`, absolute escapes and symlinks out of the root are refused. Writes are
//! refused. Parsing and path checks are pure; the transfer loop is the thin shell.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_protocol::error_chain;
use tokio::net::UdpSocket;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;
const DEFAULT_BLKSIZE: usize = 512;
const MAX_BLKSIZE: usize = 65_464;
const RETRIES: usize = 5;
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// Files larger than this are not served over TFTP (iPXE binaries are ~1 MB).
const MAX_FILE: u64 = 64 * 1024 * 1024;

/// A read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub filename: String,
    pub blksize: Option<usize>,
    pub tsize: bool,
}

/// Why a request is refused: the TFTP error code and message sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request")]
    Malformed,
    #[error("read-only server")]
    WriteRefused,
    #[error("only octet/netascii mode")]
    BadMode,
    #[error("access violation: {0}")]
    Traversal(String),
    #[error("file not found: {0}")]
    NotFound(String),
}

impl Refusal {
    /// RFC 1350 error codes.
    pub fn code(&self) -> u16 {
        match self {
            Refusal::Malformed | Refusal::BadMode => 4,
            Refusal::WriteRefused | Refusal::Traversal(_) => 2,
            Refusal::NotFound(_) => 1,
        }
    }
}

/// Parses a request packet; only RRQ is accepted.
pub fn parse_request(packet: &[u8]) -> Result<ReadRequest, Refusal> {
    let op = u16::from_be_bytes(packet.get(..2).ok_or(Refusal::Malformed)?.try_into().map_err(|_| Refusal::Malformed)?);
    match op {
        OP_RRQ => {}
        OP_WRQ => return Err(Refusal::WriteRefused),
        _ => return Err(Refusal::Malformed),
    }
    let body = &packet[2..];
    if body.last() != Some(&0) {
        return Err(Refusal::Malformed);
    }
    let mut fields =
        body[..body.len() - 1].split(|b| *b == 0).map(|f| std::str::from_utf8(f).map_err(|_| Refusal::Malformed));
    let filename = fields.next().ok_or(Refusal::Malformed)??.to_string();
    let mode = fields.next().ok_or(Refusal::Malformed)??.to_ascii_lowercase();
    if filename.is_empty() {
        return Err(Refusal::Malformed);
    }
    if mode != "octet" && mode != "netascii" {
        return Err(Refusal::BadMode);
    }
    let mut request = ReadRequest { filename, blksize: None, tsize: false };
    while let Some(name) = fields.next() {
        let name = name?.to_ascii_lowercase();
        let value = fields.next().ok_or(Refusal::Malformed)??;
        match name.as_str() {
            "blksize" => {
                request.blksize = value.parse::<usize>().ok().map(|n| n.clamp(8, MAX_BLKSIZE));
            }
            "tsize" => request.tsize = true,
            _ => {} // Unknown options are ignored (RFC 2347).
        }
    }
    Ok(request)
}

/// The file below `root` that `name` names: relative components only, no `..`, and
/// after resolving symlinks still below `root`.
pub fn resolve(root: &Path, name: &str) -> Result<PathBuf, Refusal> {
    let relative = Path::new(name.trim_start_matches('/'));
    if name.contains('\\') || relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(Refusal::Traversal(name.to_string()));
    }
    let root = root.canonicalize().map_err(|_| Refusal::NotFound(name.to_string()))?;
    let path = root.join(relative).canonicalize().map_err(|_| Refusal::NotFound(name.to_string()))?;
    if !path.starts_with(&root) {
        return Err(Refusal::Traversal(name.to_string()));
    }
    if !path.is_file() {
        return Err(Refusal::NotFound(name.to_string()));
    }
    Ok(path)
}

pub fn error_packet(refusal: &Refusal) -> Vec<u8> {
    let mut p = OP_ERROR.to_be_bytes().to_vec();
    p.extend_from_slice(&refusal.code().to_be_bytes());
    p.extend_from_slice(refusal.to_string().as_bytes());
    p.push(0);
    p
}

fn data_packet(block: u16, data: &[u8]) -> Vec<u8> {
    let mut p = OP_DATA.to_be_bytes().to_vec();
    p.extend_from_slice(&block.to_be_bytes());
    p.extend_from_slice(data);
    p
}

fn oack_packet(options: &[(&str, String)]) -> Vec<u8> {
    let mut p = OP_OACK.to_be_bytes().to_vec();
    for (k, v) in options {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

fn is_ack(packet: &[u8], block: u16) -> bool {
    packet.len() >= 4 && packet[..2] == OP_ACK.to_be_bytes() && packet[2..4] == block.to_be_bytes()
}

/// Remembers which (client, kind) refusals were already logged.
#[derive(Default)]
struct LogOnce(Mutex<HashSet<(std::net::IpAddr, String)>>);

impl LogOnce {
    fn first(&self, peer: SocketAddr, kind: String) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert((peer.ip(), kind))
    }
}

/// Serves read requests on `socket` from `root` until the socket fails. Each transfer
/// gets its own socket (TFTP's TID), bound to the same interface as `interface` if given.
pub async fn serve(socket: UdpSocket, root: PathBuf, interface: Option<String>) -> std::io::Result<()> {
    let logged = Arc::new(LogOnce::default());
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        let packet = buf[..n].to_vec();
        let request = parse_request(&packet).and_then(|r| resolve(&root, &r.filename).map(|path| (r, path)));
        match request {
            Ok((request, path)) => {
                let interface = interface.clone();
                tokio::spawn(async move {
                    if let Err(e) = transfer(peer, &request, &path, interface.as_deref()).await {
                        tracing::warn!(peer = %peer, file = %request.filename, error = %error_chain(&e), "TFTP transfer failed");
                    }
                });
            }
            Err(refusal) => {
                let kind = format!("{refusal}");
                if logged.first(peer, kind) {
                    tracing::warn!(peer = %peer, reason = %refusal, "TFTP request refused");
                }
                let _ = socket.send_to(&error_packet(&refusal), peer).await;
            }
        }
    }
}

/// A UDP socket bound to `addr`, and to `interface` when given (SO_BINDTODEVICE).
pub fn bind_udp(addr: SocketAddr, interface: Option<&str>, broadcast: bool) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = std::net::UdpSocket::bind(addr)?;
    if let Some(iface) = interface {
        setsockopt(&socket, sockopt::BindToDevice, &std::ffi::OsString::from(iface)).map_err(std::io::Error::from)?;
    }
    if broadcast {
        socket.set_broadcast(true)?;
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

async fn transfer(
    peer: SocketAddr,
    request: &ReadRequest,
    path: &Path,
    interface: Option<&str>,
) -> std::io::Result<()> {
    let size = tokio::fs::metadata(path).await?.len();
    if size > MAX_FILE {
        return Err(std::io::Error::other(format!("{} is larger than {MAX_FILE} bytes", path.display())));
    }
    let data = tokio::fs::read(path).await?;
    let socket = bind_udp(SocketAddr::from(([0, 0, 0, 0], 0)), interface, false)?;
    socket.connect(peer).await?;
    let blksize = request.blksize.unwrap_or(DEFAULT_BLKSIZE);
    let mut options = Vec::new();
    if let Some(b) = request.blksize {
        options.push(("blksize", b.to_string()));
    }
    if request.tsize {
        options.push(("tsize", data.len().to_string()));
    }
    if !options.is_empty() {
        exchange(&socket, &oack_packet(&options), 0).await?;
    }
    let mut block: u16 = 1;
    let mut offset = 0usize;
    loop {
        let end = (offset + blksize).min(data.len());
        exchange(&socket, &data_packet(block, &data[offset..end]), block).await?;
        if end - offset < blksize {
            tracing::info!(peer = %peer, file = %request.filename, bytes = data.len(), "TFTP transfer done");
            return Ok(());
        }
        offset = end;
        block = block.wrapping_add(1);
    }
}

/// Sends `packet` until the ACK for `block` arrives (retransmitting on timeout).
async fn exchange(socket: &UdpSocket, packet: &[u8], block: u16) -> std::io::Result<()> {
    let mut buf = [0u8; 516];
    for _ in 0..RETRIES {
        socket.send(packet).await?;
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Ok(Ok(n)) if is_ack(&buf[..n], block) => return Ok(()),
                Ok(Ok(n)) if n >= 2 && buf[..2] == OP_ERROR.to_be_bytes() => {
                    return Err(std::io::Error::other("the client aborted the transfer"))
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no ACK for block {block}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(name: &str, extra: &[&str]) -> Vec<u8> {
        let mut p = OP_RRQ.to_be_bytes().to_vec();
        for f in [name, "octet"].iter().chain(extra) {
            p.extend_from_slice(f.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn parses_rrq_with_options_and_refuses_writes_and_garbage() {
        assert_eq!(
            parse_request(&rrq("undionly.kpxe", &["blksize", "1468", "tsize", "0"])),
            Ok(ReadRequest { filename: "undionly.kpxe".into(), blksize: Some(1468), tsize: true })
        );
        let mut wrq = rrq("x", &[]);
        wrq[1] = 2;
        assert_eq!(parse_request(&wrq), Err(Refusal::WriteRefused));
        for bad in [&[][..], &[0, 1][..], &[0, 1, b'a'][..], &[0, 9, 0][..]] {
            assert_eq!(parse_request(bad), Err(Refusal::Malformed), "{bad:?}");
        }
        let mut mail = OP_RRQ.to_be_bytes().to_vec();
        mail.extend_from_slice(b"x\0mail\0");
        assert_eq!(parse_request(&mail), Err(Refusal::BadMode));
    }

    #[test]
    fn resolve_serves_files_below_the_root_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("undionly.kpxe"), b"x").expect("write");
        std::fs::write(root.join("sub/f"), b"x").expect("write");
        std::fs::write(dir.path().join("secret"), b"x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).expect("symlink");
        assert!(resolve(&root, "undionly.kpxe").is_ok());
        assert!(resolve(&root, "/undionly.kpxe").is_ok());
        assert!(resolve(&root, "sub/f").is_ok());
        for bad in ["../secret", "../etc/passwd", "sub/../../secret", "link", "..\\secret"] {
            assert!(matches!(resolve(&root, bad), Err(Refusal::Traversal(_))), "{bad}: {:?}", resolve(&root, bad));
        }
        assert!(matches!(resolve(&root, "missing"), Err(Refusal::NotFound(_))));
        assert!(matches!(resolve(&root, "sub"), Err(Refusal::NotFound(_))));
    }

    #[tokio::test]
    async fn transfers_a_file_over_loopback_and_refuses_traversal_with_an_error_packet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("ipxe.efi"), &content).expect("write");
        let server = bind_udp("127.0.0.1:0".parse().expect("addr"), None, false).expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(serve(server, dir.path().to_path_buf(), None));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");

        client.send_to(&rrq("../etc/passwd", &[]), addr).await.expect("send");
        let mut buf = vec![0u8; 2048];
        let (n, _) = client.recv_from(&mut buf).await.expect("error reply");
        assert_eq!(&buf[..4], &[0, 5, 0, 2], "access violation: {:?}", String::from_utf8_lossy(&buf[..n]));

        client.send_to(&rrq("ipxe.efi", &["blksize", "1024", "tsize", "0"]), addr).await.expect("send");
        let (n, tid) = client.recv_from(&mut buf).await.expect("oack");
        assert_eq!(&buf[..2], &[0, 6]);
        assert!(String::from_utf8_lossy(&buf[2..n]).contains("tsize\u{0}3000"));
        client.send_to(&[0, 4, 0, 0], tid).await.expect("ack 0");
        let mut received = Vec::new();
        loop {
            let (n, _) = client.recv_from(&mut buf).await.expect("data");
            assert_eq!(&buf[..2], &[0, 3]);
            received.extend_from_slice(&buf[4..n]);
            client.send_to(&[0, 4, buf[2], buf[3]], tid).await.expect("ack");
            if n - 4 < 1024 {
                break;
            }
        }
        assert_eq!(received, content);
    }
}
