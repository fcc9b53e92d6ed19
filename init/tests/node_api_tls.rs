//! The node API over real sockets: plain HTTP until the agent has its certificate, then
//! mutual TLS only — a caller without a certificate, with plain HTTP or with one of
//! another CA gets no answer, a node's certificate reads but may not power off, the
//! master's may; a renewed certificate is served without a restart.
// why: test code (a panic is a failed test); clippy's allow-unwrap-in-tests covers only
// #[test] functions, not the helpers of an integration test.
#![allow(clippy::unwrap_used)]
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_init::api::{serve_on, NodeView, PowerRequest};
use plinth_init::api_tls::NodeTls;
use plinth_protocol::agent::{MASTER_COMMON_NAME, NODE_CA_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NODE_TLS_DIR};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};

#[derive(Default)]
struct Node {
    power: Mutex<Vec<PowerRequest>>,
}

impl NodeView for Node {
    fn status(&self) -> Value {
        json!({"role": "agent"})
    }
    fn logs(&self) -> String {
        "a log line\n".into()
    }
    fn dmesg(&self) -> String {
        String::new()
    }
    fn mounts(&self) -> String {
        String::new()
    }
    fn network(&self) -> Value {
        json!({})
    }
    fn processes(&self) -> Value {
        json!([])
    }
    fn power(&self, req: PowerRequest) {
        self.power.lock().unwrap().push(req);
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Plinth cluster CA");
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// PEM certificate and PEM key for `common_name`, valid for 127.0.0.1.
    fn issue(&self, common_name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes the node's identity as the agent does, in `work_dir/tls/`.
fn install_identity(work_dir: &Path, ca: &Ca, common_name: &str) {
    let dir = work_dir.join(NODE_TLS_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = ca.issue(common_name);
    std::fs::write(dir.join(NODE_KEY_FILE), key).unwrap();
    std::fs::write(dir.join(NODE_CA_FILE), ca.cert.pem()).unwrap();
    // Written last, as the agent does: its presence switches the API to TLS.
    std::fs::write(dir.join(NODE_CERT_FILE), cert).unwrap();
}

fn start(work_dir: &Path) -> (u16, Arc<Node>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let node = Arc::new(Node::default());
    serve_on(listener, node.clone(), NodeTls::of_agent(Some(work_dir))).unwrap();
    (port, node)
}

fn request_text(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
}

/// The status code of a plain-HTTP exchange, `None` when there is no HTTP answer.
fn plain(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(request_text(method, path).as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    status_of(&answer)
}

fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The status code over TLS trusting `trust`, showing `identity` (PEM cert, key) if
/// any; `Err` when the TLS exchange fails.
fn tls(port: u16, trust: &Ca, identity: Option<(String, String)>, method: &str, path: &str) -> Result<u16, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(trust.cert.pem().as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(client, conn);
    stream.write_all(request_text(method, path).as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    status_of(&answer).ok_or_else(|| format!("no HTTP answer: {answer:?}"))
}

#[test]
fn the_node_api_speaks_mutual_tls_from_the_agents_first_certificate_on() {
    let work_dir = tempfile::tempdir().unwrap();
    let (port, node) = start(work_dir.path());

    // Before the agent joined: plain HTTP, as on a cluster without a CA.
    assert_eq!(plain(port, "GET", "/node/v1/status"), Some(200));

    let ca = Ca::new();
    install_identity(work_dir.path(), &ca, "agent-1");
    assert_eq!(plain(port, "GET", "/node/v1/status"), None, "no plain HTTP once the node has its certificate");
    assert!(tls(port, &ca, None, "GET", "/node/v1/status").is_err(), "no certificate, no answer");
    let stranger = Ca::new();
    let foreign = stranger.issue(MASTER_COMMON_NAME);
    assert!(tls(port, &ca, Some(foreign), "GET", "/node/v1/status").is_err(), "another CA's certificate is refused");

    // A node of the cluster reads, but may not power another node off.
    assert_eq!(tls(port, &ca, Some(ca.issue("agent-2")), "GET", "/node/v1/logs"), Ok(200));
    assert_eq!(tls(port, &ca, Some(ca.issue("agent-2")), "POST", "/node/v1/poweroff"), Ok(403));
    assert!(node.power.lock().unwrap().is_empty(), "a refused power request does nothing");
    // The master may.
    assert_eq!(tls(port, &ca, Some(ca.issue(MASTER_COMMON_NAME)), "POST", "/node/v1/reboot"), Ok(202));
    assert_eq!(*node.power.lock().unwrap(), [PowerRequest::Reboot]);

    // A renewed identity (here: from a rotated CA) is served without a restart.
    let rotated = Ca::new();
    std::thread::sleep(Duration::from_millis(20));
    install_identity(work_dir.path(), &rotated, "agent-1");
    assert_eq!(tls(port, &rotated, Some(rotated.issue("agent-3")), "GET", "/node/v1/status"), Ok(200));
    assert!(tls(port, &ca, Some(ca.issue(MASTER_COMMON_NAME)), "GET", "/node/v1/status").is_err());

    // Broken files never mean plain HTTP again.
    std::fs::write(work_dir.path().join(NODE_TLS_DIR).join(NODE_CERT_FILE), "not a certificate").unwrap();
    assert_eq!(plain(port, "GET", "/node/v1/status"), None, "a broken certificate refuses, never falls back");
}
