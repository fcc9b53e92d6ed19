//! End-to-end test harness: a private network of "hosts" (one `ip netns` each, joined by
//! veth pairs to a bridge in the root namespace) running the real `plinth` binary.
//!
//! Each test gets its own `10.77.X.0/24` (the bridge holds `.1`, the test process talks
//! from there; the master is `.2`, agents `.3`, `.4`, ...). No namespace has a default
//! route, so nothing started here can reach beyond the test network. Dropping the
//! [`Cluster`] kills every process in its namespaces by pid, removes the cgroups those
//! processes used, the namespaces, the bridge and the temp dirs — also when the test
//! panics, in which case the node logs are printed first.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
pub const MASTER_PORT: u16 = 8080;
pub const AGENT_PORT: u16 = 5051;
/// What each test agent offers: explicit, so placement does not depend on the machine.
pub const AGENT_RESOURCES: &str = "cpus:4;mem:2048;disk:4096;ports:[31000-31099]";
/// Seconds of missed heartbeats before the test master declares an agent lost.
pub const AGENT_TIMEOUT_SECS: u64 = 3;
/// A PATH for the nodes (and so their tasks) that does not depend on the test runner's.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LOCK_DIR: &str = "/run/plinth-tests";
const POLL: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------------------
// Waiting

pub use plinth_testkit::wait_until;

/// Asserts `check` holds on every poll for the whole `period` (e.g. "never above target").
pub fn holds_for(what: &str, period: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    while started.elapsed() < period {
        if let Err(seen) = check() {
            panic!("{what} stopped holding after {:?}: {seen}", started.elapsed());
        }
        std::thread::sleep(POLL);
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------------
// HTTP

/// An HTTP answer: status, body text and the body as JSON (`Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Panics with the whole answer unless the status is `expected`.
    pub fn expect_status(self, expected: u16) -> Self {
        assert_eq!(self.status, expected, "unexpected status; body: {}", self.text);
        self
    }
}

/// A JSON HTTP client for one base URL (the master, an agent, an app).
#[derive(Clone)]
pub struct Http {
    pub base: String,
    client: reqwest::blocking::Client,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Self {
        plinth_oci::tls::install_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .expect("HTTP client");
        Http { base: base.into(), client }
    }

    /// A client that also trusts the PEM CA certificates in `ca_file` (an HTTPS master).
    pub fn with_ca(base: impl Into<String>, ca_file: &Path) -> Self {
        plinth_oci::tls::install_provider();
        let pem = fs::read(ca_file).expect("read the CA file");
        let certs = reqwest::Certificate::from_pem_bundle(&pem).expect("PEM CA certificates");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .no_proxy()
            .tls_certs_merge(certs)
            .build()
            .expect("HTTP client");
        Http { base: base.into(), client }
    }

    /// A client that trusts only the PEM CA `ca_pem` and, with `identity` (a PEM certificate
    /// and key), presents that client certificate (mutual TLS).
    pub fn with_identity(base: impl Into<String>, ca_pem: &[u8], identity: Option<&[u8]>) -> Self {
        plinth_oci::tls::install_provider();
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("a PEM CA certificate");
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .no_proxy()
            .tls_certs_only([ca]);
        if let Some(pem) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(pem).expect("a PEM certificate and key"));
        }
        Http { base: base.into(), client: builder.build().expect("HTTP client") }
    }

    pub fn try_request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Reply, String> {
        self.try_request_with(method, path, &[], body)
    }

    /// [`Http::try_request`] with extra headers (a join token, say).
    pub fn try_request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().map_err(|e| format!("{path}: {e:#}"))?;
        let status = response.status().as_u16();
        let text = response.text().map_err(|e| format!("{path}: reading body: {e:#}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, text, json })
    }

    fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Reply {
        self.try_request(method, path, body).unwrap_or_else(|e| panic!("{method} {}{path} failed: {e}", self.base))
    }

    pub fn try_get(&self, path: &str) -> Result<Reply, String> {
        self.try_request("GET", path, None)
    }
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(body.to_string().into_bytes()))
    }
    pub fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.request("POST", path, Some(body.into()))
    }
    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.request("PUT", path, Some(body.to_string().into_bytes()))
    }
    pub fn put_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.request("PUT", path, Some(body.into()))
    }
    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None)
    }

    /// A POST as curl sends large bodies: `Expect: 100-continue` first, so a server that
    /// refuses the body by its declared size can answer without reading it.
    pub fn post_expect_continue(&self, path: &str, body: &[u8]) -> Result<Reply, String> {
        let address = self.base.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = std::net::TcpStream::connect(address).map_err(|e| format!("connect {address}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(15))).map_err(|e| e.to_string())?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).map_err(|e| format!("send head: {e}"))?;
        let (mut head, mut answer) = read_http_message(&mut stream).ok_or("no answer to the request head")?;
        if status_of(&head) == Some(100) {
            stream.write_all(body).map_err(|e| format!("send body: {e}"))?;
            (head, answer) = read_http_message(&mut stream).ok_or("no answer to the body")?;
        }
        let status = status_of(&head).ok_or_else(|| format!("bad status line: {head}"))?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, text, json })
    }

    /// GET that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        self.get(path).expect_status(200).json
    }
}

/// Reads a Server-Sent Events stream on a thread, collecting `(event, data)` pairs.
pub struct EventStream {
    pub events: Arc<Mutex<Vec<(String, Value)>>>,
}

impl EventStream {
    pub fn open(url: &str) -> Self {
        let events: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        plinth_oci::tls::install_provider();
        let client = reqwest::blocking::Client::builder().timeout(None).no_proxy().build().expect("HTTP client");
        let response = client
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .unwrap_or_else(|e| panic!("opening the event stream {url}: {e:#}"));
        assert_eq!(response.status().as_u16(), 200, "event stream {url}");
        let sink = events.clone();
        std::thread::spawn(move || {
            let mut name = String::new();
            let mut data = String::new();
            for line in BufReader::new(response).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("event:") {
                    name = rest.trim().to_string();
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.trim_start());
                } else if line.is_empty() && !(name.is_empty() && data.is_empty()) {
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                    sink.lock().expect("event list").push((std::mem::take(&mut name), value));
                    data.clear();
                }
            }
        });
        EventStream { events }
    }

    pub fn snapshot(&self) -> Vec<(String, Value)> {
        self.events.lock().expect("event list").clone()
    }

    pub fn names(&self) -> Vec<String> {
        self.snapshot().into_iter().map(|(name, _)| name).collect()
    }

    /// Waits until an event of this name has arrived.
    pub fn wait_for(&self, name: &str, timeout: Duration) {
        wait_until(&format!("a {name} event"), timeout, || {
            let names = self.names();
            if names.iter().any(|n| n == name) {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        });
    }
}

/// A tiny HTTP server (on the bridge address) that records every JSON body POSTed to it:
/// the receiving end of `/v2/eventSubscriptions`.
pub struct CallbackServer {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl CallbackServer {
    pub fn start(ip: Ipv4Addr) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind the callback server");
        let port = listener.local_addr().expect("local addr").port();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    if let Some(body) = read_http_body(&mut stream) {
                        if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                            sink.lock().expect("callback list").push(value);
                        }
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                });
            }
        });
        CallbackServer { url: format!("http://{ip}:{port}/cb"), bodies }
    }

    pub fn snapshot(&self) -> Vec<Value> {
        self.bodies.lock().expect("callback list").clone()
    }
}

fn read_http_body(stream: &mut impl Read) -> Option<Vec<u8>> {
    read_http_message(stream).map(|(_, body)| body)
}

/// Reads one HTTP/1.1 message (head, body by content-length or to EOF).
fn read_http_message(stream: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let length: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(str::to_string))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some((head, buffer[header_end..].to_vec()))
}

fn status_of(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

// ---------------------------------------------------------------------------------------
// Commands

/// Runs a command that must succeed; panics with its output otherwise.
pub fn sh(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command and ignores its failure (cleanup of things that may already be gone).
fn sh_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs the `plinth` binary as a client from the test process (outside any namespace).
pub fn plinth(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(PLINTH);
    command.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    clear_plinth_env(&mut command);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run plinth")
}

fn clear_plinth_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("PLINTH_") {
            command.env_remove(key);
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// The test network

/// One network namespace with its address on the test bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    veth: String,
}

/// The bridge and namespaces of one test. Created by [`Cluster::new`].
struct TestNet {
    subnet: u8,
    bridge: String,
    /// Held (flock) for the life of the test.
    _lock: File,
    hosts: Vec<Host>,
}

fn net_prefix(subnet: u8) -> String {
    format!("plt{subnet}")
}

impl TestNet {
    /// Claims a free `10.77.X.0/24`. Ownership is an exclusive `flock` on a file per
    /// subnet, which the kernel releases when the test process ends however it ends; a
    /// free subnet's leftovers (from a test that was killed) are removed first.
    fn claim(test_name: &str) -> TestNet {
        fs::create_dir_all(LOCK_DIR).expect("create the lock dir");
        sweep_leftovers();
        let seed = test_name.bytes().fold(std::process::id() as u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        for attempt in 0..254u64 {
            let subnet = u8::try_from((seed + attempt) % 254 + 1).expect("1..=254");
            let Some(lock) = lock_subnet(subnet) else { continue };
            remove_leftovers(subnet);
            let bridge = net_prefix(subnet);
            if !sh_quiet("ip", &["link", "add", &bridge, "type", "bridge"]) {
                // An interface of that name we do not own: leave it alone.
                continue;
            }
            let net = TestNet { subnet, bridge, _lock: lock, hosts: Vec::new() };
            sh("ip", &["addr", "add", &format!("{}/24", net.gateway()), "dev", &net.bridge]);
            sh("ip", &["link", "set", &net.bridge, "up"]);
            return net;
        }
        panic!("no free test subnet in 10.77.1-254.0/24");
    }

    /// The bridge address: where the test process itself is reachable.
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    fn add_host(&mut self, name: &str) -> Host {
        let index = u8::try_from(self.hosts.len() + 2).expect("at most 253 hosts on a /24");
        let prefix = net_prefix(self.subnet);
        let host = Host {
            name: name.to_string(),
            netns: format!("{prefix}-{name}"),
            ip: Ipv4Addr::new(10, 77, self.subnet, index),
            veth: format!("{prefix}h{index}"),
        };
        let peer = format!("{prefix}p{index}");
        sh("ip", &["netns", "add", &host.netns]);
        self.hosts.push(host.clone());
        sh("ip", &["link", "add", &host.veth, "type", "veth", "peer", "name", &peer]);
        sh("ip", &["link", "set", &peer, "netns", &host.netns]);
        sh("ip", &["link", "set", &host.veth, "master", &self.bridge, "up"]);
        sh("ip", &["-n", &host.netns, "link", "set", "lo", "up"]);
        sh("ip", &["-n", &host.netns, "link", "set", &peer, "name", "eth0"]);
        sh("ip", &["-n", &host.netns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"]);
        sh("ip", &["-n", &host.netns, "link", "set", "eth0", "up"]);
        host
    }

    fn teardown(&mut self) {
        for host in self.hosts.drain(..) {
            kill_netns_processes(&host.netns);
            sh_quiet("ip", &["netns", "del", &host.netns]);
            sh_quiet("ip", &["link", "del", &host.veth]);
        }
        sh_quiet("ip", &["link", "del", &self.bridge]);
    }
}

/// The subnet's lock, if no live test holds it. The file is opened close-on-exec, so the
/// nodes we start do not inherit (and keep) it.
fn lock_subnet(subnet: u8) -> Option<File> {
    let path = Path::new(LOCK_DIR).join(format!("net-{subnet}.lock"));
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).ok()?;
    // SAFETY: flock(2) on a descriptor this function owns.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    locked.then_some(file)
}

/// Subnets with namespaces or links of ours (`pltX...`) whose test no longer runs.
fn sweep_leftovers() {
    let netns = Command::new("ip").args(["netns", "list"]).output().map(|o| stdout(&o)).unwrap_or_default();
    let links = Command::new("ip").args(["-br", "link"]).output().map(|o| stdout(&o)).unwrap_or_default();
    let subnets: BTreeSet<u8> = netns
        .lines()
        .chain(links.lines())
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("plt"))
        .filter_map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok())
        .collect();
    for subnet in subnets {
        if let Some(_lock) = lock_subnet(subnet) {
            remove_leftovers(subnet);
        }
    }
}

/// Removes what a dead earlier owner of this subnet left: its namespaces (and the
/// processes in them, all started by that test) and its bridge.
fn remove_leftovers(subnet: u8) {
    let prefix = format!("{}-", net_prefix(subnet));
    let listing = Command::new("ip").args(["netns", "list"]).output().map(|o| stdout(&o)).unwrap_or_default();
    for netns in listing.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(&prefix)) {
        kill_netns_processes(netns);
        sh_quiet("ip", &["netns", "del", netns]);
    }
    sh_quiet("ip", &["link", "del", &net_prefix(subnet)]);
}

/// Pids of every process in a namespace we created (our nodes and their tasks).
pub fn netns_pids(netns: &str) -> Vec<i32> {
    let output = Command::new("ip").args(["netns", "pids", netns]).output();
    output.map(|o| stdout(&o).lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default()
}

fn kill_netns_processes(netns: &str) {
    for _ in 0..50 {
        let pids = netns_pids(netns);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a pid inside a namespace this test created; no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cgroup directories (absolute paths) a process is in, under the agent's `plinth` parent.
fn plinth_cgroups_of(pid: i32) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if !path.contains("/plinth/") {
                return None;
            }
            let controller = controllers.split(',').find(|c| !c.is_empty()).map(|c| c.trim_start_matches("name="));
            let mount = match controller {
                None => cgroup2_mount(),
                Some(c) => PathBuf::from("/sys/fs/cgroup").join(c),
            };
            Some(mount.join(path.trim_start_matches('/')))
        })
        .collect()
}

fn cgroup2_mount() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// Every task cgroup directory named after one of `task_ids` (the agent puts tasks in
/// `<controller>/plinth/<task id>`).
fn task_cgroups(task_ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/plinth")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path().join("plinth")));
    }
    roots.iter().flat_map(|root| task_ids.iter().map(move |id| root.join(id))).filter(|p| p.is_dir()).collect()
}

/// SIGKILLs every process in a cgroup tree.
fn kill_cgroup_processes(dir: &Path) {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else { return };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) on a process in a cgroup our agents created for their tasks.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            kill_cgroup_processes(&entry.path());
        }
    }
}

/// What a killed executor could not tear down for its container: the network
/// namespace's bind mount and the runtime state (both named by task id).
/// Task ids with a sandbox under any node's work dir (`DIR/NODE/tasks/ID`).
fn sandboxed_task_ids(dir: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let Ok(nodes) = fs::read_dir(dir) else { return ids };
    for node in nodes.flatten() {
        let Ok(tasks) = fs::read_dir(node.path().join("tasks")) else { continue };
        ids.extend(tasks.flatten().filter_map(|t| t.file_name().into_string().ok()));
    }
    ids
}

fn cleanup_containers(task_ids: &BTreeSet<String>) {
    for id in task_ids {
        let netns = Path::new("/run/plinth/netns").join(id);
        if netns.exists() {
            sh_quiet("umount", &["-l", &netns.display().to_string()]);
            let _ = fs::remove_file(&netns);
        }
        let _ = fs::remove_dir_all(Path::new("/run/plinth/containers").join(id));
    }
}

/// Removes a cgroup directory tree, deepest first (only empty cgroups can go).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    for _ in 0..20 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Task ids found in a process's environment (`MESOS_TASK_ID`).
pub fn task_id_of_pid(pid: i32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("MESOS_TASK_ID=").map(str::to_string))
}

// ---------------------------------------------------------------------------------------
// Nodes and the cluster

/// One `plinth` process (master, agent or standalone) in its namespace.
pub struct Node {
    pub host: Host,
    args: Vec<String>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Node {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| i32::try_from(c.id()).expect("a pid fits in pid_t"))
    }
}

/// A test cluster: the network, the nodes and their data dirs. Dropping it cleans up.
pub struct Cluster {
    net: TestNet,
    /// `None` only once Drop decided to keep it for a failed test.
    dir: Option<tempfile::TempDir>,
    nodes: BTreeMap<String, Node>,
    seen_tasks: Mutex<BTreeSet<String>>,
    /// Set by [`Cluster::use_tls`]: the master's API is HTTPS with a certificate from this CA.
    ca_file: Option<PathBuf>,
}

impl Cluster {
    /// An empty test network for `test_name`.
    pub fn new(test_name: &str) -> Cluster {
        assert!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() } == 0,
            "the end-to-end tests must run as root (they create network namespaces)"
        );
        let net = TestNet::claim(test_name);
        let dir = tempfile::Builder::new().prefix(&format!("plinth-{test_name}-")).tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("logs")).expect("log dir");
        Cluster { net, dir: Some(dir), nodes: BTreeMap::new(), seen_tasks: Mutex::default(), ca_file: None }
    }

    /// A master (agent timeout [`AGENT_TIMEOUT_SECS`]) and `agents` agents, all registered.
    pub fn start(test_name: &str, agents: usize) -> Cluster {
        let mut cluster = Cluster::new(test_name);
        cluster.start_master(&[]);
        for i in 1..=agents {
            cluster.start_agent(&format!("agent-{i}"), &[]);
        }
        cluster.wait_for_agents(agents);
        cluster
    }

    /// The address of the test process on the test network.
    pub fn gateway(&self) -> Ipv4Addr {
        self.net.gateway()
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("test dir exists until drop").path()
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.get(name).unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn master_ip(&self) -> Ipv4Addr {
        self.node("master").host.ip
    }

    pub fn master_url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{MASTER_PORT}", self.master_ip())
    }

    /// From now on the master's API is HTTPS (the test starts it with a certificate signed
    /// by `ca_file`), and the harness trusts that CA.
    pub fn use_tls(&mut self, ca_file: &Path) {
        self.ca_file = Some(ca_file.to_path_buf());
    }

    /// The address the master will have (it is the first host started).
    pub fn next_master_ip(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.gateway().octets();
        Ipv4Addr::new(a, b, c, 2)
    }

    /// Writes `content` to a file only root can read in the test dir (a `--token-file`);
    /// returns its path.
    pub fn secret_file(&self, name: &str, content: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir().join(name);
        fs::write(&path, content).expect("write the secret file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod 600 the secret file");
        path.display().to_string()
    }

    /// The master's API.
    pub fn api(&self) -> Http {
        match &self.ca_file {
            Some(ca) => Http::with_ca(self.master_url(), ca),
            None => Http::new(self.master_url()),
        }
    }

    /// An agent's own HTTP API.
    pub fn agent_api(&self, name: &str) -> Http {
        Http::new(format!("http://{}:{AGENT_PORT}", self.node(name).host.ip))
    }

    pub fn start_master(&mut self, extra: &[&str]) {
        self.spawn_master(extra);
        self.wait_for_ping(&self.api());
    }

    /// A master with `--cluster-ca` (and `extra`, which must give it a join token): waits
    /// for it to make its CA, which the harness trusts from then on (its API is HTTPS).
    /// Returns the CA certificate's path.
    pub fn start_master_with_cluster_ca(&mut self, extra: &[&str]) -> PathBuf {
        let ca = self.dir().join("master").join("ca").join("ca.pem");
        let mut args = vec!["--cluster-ca"];
        args.extend(extra);
        self.ca_file = Some(ca.clone());
        self.spawn_master(&args);
        wait_until("the master to make its cluster CA", secs(60), || {
            self.check_nodes_alive()?;
            if fs::metadata(&ca).is_ok_and(|m| m.len() > 0) {
                Ok(())
            } else {
                Err(format!("no {}", ca.display()))
            }
        });
        self.wait_for_ping(&self.api());
        ca
    }

    fn spawn_master(&mut self, extra: &[&str]) {
        let data_dir = self.dir().join("master");
        let mut args: Vec<String> = vec![
            "master".into(),
            "--listen".into(),
            format!("0.0.0.0:{MASTER_PORT}"),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--agent-timeout-secs".into(),
            AGENT_TIMEOUT_SECS.to_string(),
            "--hostname".into(),
            "master".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_node("master", |_| args);
    }

    pub fn start_agent(&mut self, name: &str, extra: &[&str]) {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        self.start_agent_with(name, |_| extra);
    }

    /// [`Cluster::start_agent`] with extra flags made once the agent's host exists (e.g.
    /// from its MAC address).
    pub fn start_agent_with(&mut self, name: &str, extra_for: impl FnOnce(&Host) -> Vec<String>) {
        let master = self.master_url();
        self.start_agent_of(name, master, extra_for);
    }

    /// [`Cluster::start_agent_with`] following `master` (a URL, or several comma-separated).
    pub fn start_agent_of(&mut self, name: &str, master: String, extra_for: impl FnOnce(&Host) -> Vec<String>) {
        let work_dir = self.dir().join(name);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            master,
            "--work-dir".into(),
            work_dir.display().to_string(),
            "--hostname".into(),
            name.into(),
            "--listen".into(),
            format!("0.0.0.0:{AGENT_PORT}"),
            "--resources".into(),
            AGENT_RESOURCES.into(),
        ];
        self.spawn_node(name, |host| {
            args.extend(extra_for(host));
            args.extend(["--advertise-ip".to_string(), host.ip.to_string()]);
            args
        });
    }

    /// `plinth standalone` in its own namespace, with its state under the test dir.
    pub fn start_standalone(&mut self, name: &str) {
        self.start_standalone_with(name, &[]);
    }

    /// [`Cluster::start_standalone`] with more flags; the master's data dir is
    /// `DIR/NAME-master`, the agent's work dir `DIR/NAME-agent`.
    pub fn start_standalone_with(&mut self, name: &str, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "standalone".into(),
            "--data-dir".into(),
            self.dir().join(format!("{name}-master")).display().to_string(),
            "--work-dir".into(),
            self.dir().join(format!("{name}-agent")).display().to_string(),
            "--resources".into(),
            AGENT_RESOURCES.into(),
            "--hostname".into(),
            name.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_node(name, |host| {
            let mut args = args;
            args.extend(["--advertise-ip".to_string(), host.ip.to_string()]);
            args
        });
        let url = format!("http://{}:{MASTER_PORT}", self.node(name).host.ip);
        self.wait_for_ping(&Http::new(url));
    }

    /// A host on the test network with nothing started in it (for an etcd member, say);
    /// removed, and what runs in it killed, with the cluster.
    pub fn add_host(&mut self, name: &str) -> Host {
        self.net.add_host(name)
    }

    /// `plinth ARGS` as a node of its own (a master with custom flags, say); `args_for`
    /// gets its host.
    pub fn start_node(&mut self, name: &str, args_for: impl FnOnce(&Host) -> Vec<String>) {
        self.spawn_node(name, args_for);
    }

    /// The API (port 8080) of any node.
    pub fn api_of(&self, name: &str) -> Http {
        Http::new(format!("http://{}:{MASTER_PORT}", self.node(name).host.ip))
    }

    /// Gives the node its own namespace on the test network and starts it there.
    fn spawn_node(&mut self, name: &str, args_for: impl FnOnce(&Host) -> Vec<String>) {
        let host = self.net.add_host(name);
        let args = args_for(&host);
        let log = self.dir().join("logs").join(format!("{name}.log"));
        self.nodes.insert(name.to_string(), Node { host, args, child: None, log });
        self.respawn(name);
    }

    /// Starts the node's process again with its arguments plus `extra` (kept for later
    /// restarts).
    pub fn respawn_with(&mut self, name: &str, extra: &[&str]) {
        let node = self.nodes.get_mut(name).unwrap_or_else(|| panic!("no node {name}"));
        node.args.extend(extra.iter().map(|s| s.to_string()));
        self.respawn(name);
    }

    /// Changes the arguments the node's next start gets (a flag taken away, say).
    pub fn edit_args(&mut self, name: &str, edit: impl FnOnce(&mut Vec<String>)) {
        edit(&mut self.nodes.get_mut(name).unwrap_or_else(|| panic!("no node {name}")).args);
    }

    /// Starts the node's process again with the same arguments (and so the same dirs).
    pub fn respawn(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).unwrap_or_else(|| panic!("no node {name}"));
        assert!(node.child.is_none(), "{name} is still running");
        let log = OpenOptions::new().create(true).append(true).open(&node.log).expect("open the node log");
        // nsenter joins only the network namespace. `ip netns exec` would also give the
        // node a private mount namespace with a fresh /sys, hiding /sys/fs/cgroup from it
        // (no task cgroups, no containers).
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", node.host.netns))
            .arg("--")
            .arg(PLINTH)
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .env("PATH", NODE_PATH)
            .env("RUST_LOG", "info,plinth_master=debug,plinth_agent=debug")
            .process_group(0);
        clear_plinth_env(&mut command);
        // SAFETY: only async-signal-safe prctl between fork and exec. A backstop: should
        // the test process die without running Drop, its nodes die with it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        node.child = Some(child);
    }

    /// Waits for the node's process to end by itself; its exit status and its log so far.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> (std::process::ExitStatus, String) {
        let node = self.nodes.get_mut(name).unwrap_or_else(|| panic!("no node {name}"));
        let mut child = node.child.take().unwrap_or_else(|| panic!("{name} is not running"));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the node") {
                break status;
            }
            if started.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} still running after {timeout:?}; it should have ended by itself");
            }
            std::thread::sleep(POLL);
        };
        (status, fs::read_to_string(&node.log).unwrap_or_default())
    }

    /// `kill -9` of the node's plinth process only (its tasks, if any, keep running).
    pub fn kill9(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).unwrap_or_else(|| panic!("no node {name}"));
        let mut child = node.child.take().unwrap_or_else(|| panic!("{name} is not running"));
        let pid = i32::try_from(child.id()).expect("a pid fits in pid_t");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
    }

    fn wait_for_ping(&self, http: &Http) {
        wait_until(&format!("{}/ping to answer", http.base), secs(60), || {
            self.check_nodes_alive()?;
            match http.try_get("/ping") {
                Ok(reply) if reply.status == 200 => Ok(()),
                Ok(reply) => Err(format!("status {}: {}", reply.status, reply.text)),
                Err(e) => Err(e),
            }
        });
    }

    /// Fails fast (with the reason) when a node we started has exited on its own.
    pub fn check_nodes_alive(&self) -> Result<(), String> {
        for (name, node) in &self.nodes {
            if let Some(pid) = node.pid() {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
                if stat.is_empty() || zombie {
                    panic!("{name} (pid {pid}) exited unexpectedly; see its log below");
                }
            }
        }
        Ok(())
    }

    /// Waits until the master lists `count` active agents.
    pub fn wait_for_agents(&self, count: usize) {
        wait_until(&format!("{count} active agents"), secs(60), || {
            self.check_nodes_alive()?;
            let active = self.active_agents()?;
            if active.len() == count {
                Ok(())
            } else {
                Err(format!("active: {active:?}"))
            }
        });
    }

    /// Hostnames of the agents the master lists as active.
    pub fn active_agents(&self) -> Result<Vec<String>, String> {
        let reply = self.api().try_get("/master/slaves")?;
        let slaves = reply.json.get("slaves").and_then(Value::as_array).cloned().ok_or(reply.text)?;
        Ok(slaves
            .iter()
            .filter(|s| s.get("active").and_then(Value::as_bool) == Some(true))
            .filter_map(|s| s.get("hostname").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// The IP of a task's `host` field (an address or a node's hostname).
    pub fn ip_of_host(&self, host: &str) -> Ipv4Addr {
        if let Ok(ip) = host.parse() {
            return ip;
        }
        self.node(host).host.ip
    }

    /// The node name of a task's `host` field (an address or a node's hostname).
    pub fn node_of_host(&self, host: &str) -> String {
        let ip = self.ip_of_host(host);
        self.nodes
            .iter()
            .find(|(_, node)| node.host.ip == ip)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| panic!("no node at {host}"))
    }

    /// The app's tasks as the master reports them (`GET /v2/apps/{id}/tasks`).
    pub fn tasks(&self, app: &str) -> Vec<Value> {
        let reply = self.api().get(&format!("/v2/apps{app}/tasks"));
        let tasks = reply.json.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut seen = self.seen_tasks.lock().expect("seen tasks");
        seen.extend(tasks.iter().filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string)));
        tasks
    }

    /// Tasks of the app in `TASK_RUNNING`.
    pub fn running_tasks(&self, app: &str) -> Vec<Value> {
        self.tasks(app).into_iter().filter(|t| t.get("state").and_then(Value::as_str) == Some("TASK_RUNNING")).collect()
    }

    /// Waits until exactly `count` tasks of the app run and none of its deployments is in
    /// progress (so the next change is not refused as locked).
    pub fn wait_for_running(&self, app: &str, count: usize, timeout: Duration) -> Vec<Value> {
        wait_until(&format!("{count} running tasks of {app}"), timeout, || {
            self.check_nodes_alive()?;
            let deployments = self.api().try_get(&format!("/v2/apps{app}"))?.json["app"]["deployments"].clone();
            if deployments.as_array().is_none_or(|d| !d.is_empty()) {
                return Err(format!("deployments of {app}: {deployments}"));
            }
            let tasks = self.tasks(app);
            let running: Vec<Value> = tasks
                .iter()
                .filter(|t| t.get("state").and_then(Value::as_str) == Some("TASK_RUNNING"))
                .cloned()
                .collect();
            if running.len() == count && tasks.len() == count {
                Ok(running)
            } else {
                Err(format!("{} tasks: {}", tasks.len(), task_summary(&tasks)))
            }
        })
    }

    /// POSTs the app (expecting 201) and waits until its `instances` tasks run.
    pub fn deploy(&self, app: &Value) -> Vec<Value> {
        self.api().post("/v2/apps", app).expect_status(201);
        let instances = usize::try_from(app["instances"].as_u64().unwrap_or(1)).expect("instances fit in usize");
        self.wait_for_running(str_field(app, "id"), instances, secs(60))
    }

    /// Waits until the master reports no deployment in progress.
    pub fn wait_for_no_deployments(&self, timeout: Duration) {
        wait_until("all deployments to finish", timeout, || {
            self.check_nodes_alive()?;
            let reply = self.api().try_get("/v2/deployments")?;
            match reply.json.as_array() {
                Some(list) if list.is_empty() => Ok(()),
                _ => Err(reply.text),
            }
        });
    }

    /// Task id → pids of that task's processes in the node's namespace (from the
    /// `MESOS_TASK_ID` in each process's environment).
    pub fn task_pids(&self, node: &str) -> BTreeMap<String, BTreeSet<i32>> {
        let mut map: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for pid in netns_pids(&self.node(node).host.netns) {
            if let Some(task) = task_id_of_pid(pid) {
                map.entry(task).or_default().insert(pid);
            }
        }
        map
    }

    /// Runs the `plinth` CLI from the test process against this cluster's master.
    pub fn cli(&self, args: &[&str]) -> Output {
        plinth(args, &[("PLINTH_MASTER", &self.master_url())])
    }

    /// Like [`Cluster::cli`] for a command that should end on its own: killed (by pid)
    /// and reported if it is still running after `timeout`.
    pub fn cli_bounded(&self, args: &[&str], timeout: Duration) -> Output {
        let mut command = Command::new(PLINTH);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        clear_plinth_env(&mut command);
        command.env_remove("RUST_LOG").env("PLINTH_MASTER", self.master_url());
        let mut child = command.spawn().expect("run plinth");
        let started = Instant::now();
        while child.try_wait().expect("poll plinth").is_none() {
            if started.elapsed() >= timeout {
                let _ = child.kill();
                let output = child.wait_with_output().expect("reap plinth");
                panic!("plinth {} still running after {timeout:?}; output so far: {}", args.join(" "), stdout(&output));
            }
            std::thread::sleep(POLL);
        }
        child.wait_with_output().expect("plinth output")
    }

    fn print_logs(&self) {
        for (name, node) in &self.nodes {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(400);
            eprintln!("===== {name} log ({}; last {} lines) =====", node.log.display(), lines.len() - start);
            for line in &lines[start..] {
                eprintln!("{line}");
            }
        }
    }
}

/// One line per task for failure messages.
pub fn task_summary(tasks: &[Value]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} {} on {} ports {}",
                t.get("id").and_then(Value::as_str).unwrap_or("?"),
                t.get("state").and_then(Value::as_str).unwrap_or("?"),
                t.get("host").and_then(Value::as_str).unwrap_or("?"),
                t.get("ports").map(Value::to_string).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A command app small enough that many fit on a test agent.
pub fn cmd_app(id: &str, cmd: &str, instances: u64) -> Value {
    serde_json::json!({"id": id, "cmd": cmd, "cpus": 0.1, "mem": 32, "instances": instances})
}

pub fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks.iter().filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string)).collect()
}

pub fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("no string '{key}' in {value}"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // Cgroups are found from the processes in them, and from task ids the test saw.
        let mut cgroups: BTreeSet<PathBuf> = BTreeSet::new();
        for host in &self.net.hosts {
            for pid in netns_pids(&host.netns) {
                cgroups.extend(plinth_cgroups_of(pid));
                if let Some(task) = task_id_of_pid(pid) {
                    self.seen_tasks.lock().map(|mut s| s.insert(task)).ok();
                }
            }
        }
        // Our own children first (by pid, then their process groups), then anything left in
        // our namespaces: tasks that were started by our agents.
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let pid = i32::try_from(child.id()).expect("a pid fits in pid_t");
                // SAFETY: kill(2) on a child we spawned (and on the group it leads).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = child.wait();
            }
        }
        for host in &self.net.hosts {
            kill_netns_processes(&host.netns);
        }
        if let Ok(mut seen) = self.seen_tasks.lock() {
            // Tasks the test never listed still have a sandbox in their agent's work dir;
            // without them their containers' netns pins outlive the test.
            seen.extend(sandboxed_task_ids(self.dir()));
            cgroups.extend(task_cgroups(&seen));
            // Containers on a bridge live in their own network namespace, out of reach
            // of the sweep above: their cgroup finds them.
            for cgroup in &cgroups {
                kill_cgroup_processes(cgroup);
            }
            cleanup_containers(&seen);
        }
        for cgroup in cgroups.iter().rev() {
            remove_cgroup(cgroup);
        }
        unmount_below(self.dir());
        self.net.teardown();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test dir kept for inspection: {}", dir.keep().display());
            }
        }
    }
}

/// Unmounts anything our nodes mounted below `dir` (deepest first), so it can be removed.
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        sh_quiet("umount", &["-l", point]);
    }
}

/// Reads a whole file, for assertions about what a node wrote.
pub fn read(path: &Path) -> String {
    let mut text = String::new();
    File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map(|_| text).unwrap_or_default()
}
