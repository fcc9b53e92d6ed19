//! Debian's `etcd-server` started by a test: one member in a network namespace made for
//! it ([`Etcd::single`]), or a cluster with one member in each of the test's own
//! namespaces ([`Etcd::cluster`]); data dirs in a temp dir; members killed by pid (and the
//! namespace made here removed) on drop.
use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::netns;

pub const BINARY: &str = "/usr/bin/etcd";
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// Where one member runs: its namespace and the address it listens on there.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub netns: String,
    pub ip: String,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.ip)
    }
    fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.ip)
    }
}

pub struct Etcd {
    pub members: Vec<Member>,
    children: Vec<Option<Child>>,
    /// The namespace [`Etcd::single`] made (removed on drop).
    own_netns: Option<String>,
    dir: tempfile::TempDir,
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl Etcd {
    /// One member on loopback inside a new network namespace; reach it from code run with
    /// [`Etcd::run`] (a thread inside that namespace).
    pub fn single() -> Result<Etcd> {
        let ns = format!("plinth-etcd-{}-{}", std::process::id(), SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let status = Command::new("ip").args(["netns", "add", &ns]).status().context("ip netns add")?;
        if !status.success() {
            bail!("ip netns add {ns} failed");
        }
        let up = Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]).status();
        let member = Member { name: "m1".into(), netns: ns.clone(), ip: "127.0.0.1".into() };
        let mut etcd = Etcd::empty(vec![member])?;
        etcd.own_netns = Some(ns);
        if !up.is_ok_and(|s| s.success()) {
            bail!("cannot bring up loopback in the etcd namespace");
        }
        etcd.start_all()?;
        Ok(etcd)
    }

    /// One member in each given namespace (at its address there), forming one cluster.
    pub fn cluster(members: Vec<Member>) -> Result<Etcd> {
        let mut etcd = Etcd::empty(members)?;
        etcd.start_all()?;
        Ok(etcd)
    }

    fn empty(members: Vec<Member>) -> Result<Etcd> {
        let dir = tempfile::Builder::new().prefix("plinth-etcd-").tempdir()?;
        let children = members.iter().map(|_| None).collect();
        Ok(Etcd { members, children, own_netns: None, dir })
    }

    fn start_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.spawn(i, "new")?;
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i)?;
        }
        Ok(())
    }

    fn spawn(&mut self, index: usize, state: &str) -> Result<()> {
        let member = self.members[index].clone();
        let initial: Vec<String> = self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        let data = self.dir.path().join(&member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &member.netns, BINARY])
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={}", member.client_url()))
            .arg(format!("--advertise-client-urls={}", member.client_url()))
            .arg(format!("--listen-peer-urls={}", member.peer_url()))
            .arg(format!("--initial-advertise-peer-urls={}", member.peer_url()))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=plinth-test")
            .args(["--heartbeat-interval=100", "--election-timeout=1000", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {BINARY} (apt-get install etcd-server)"))?;
        self.children[index] = Some(child);
        Ok(())
    }

    fn wait_healthy(&self, index: usize) -> Result<()> {
        let member = self.members[index].clone();
        let started = Instant::now();
        loop {
            let url = format!("{}/health", member.client_url());
            let healthy = netns::run_in(&member.netns, move || {
                plinth_oci::tls::install_provider();
                reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .no_proxy()
                    .build()
                    .ok()
                    .and_then(|c| c.get(&url).send().ok())
                    .and_then(|r| r.text().ok())
                    .is_some_and(|body| body.contains("true"))
            });
            if healthy {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("etcd member {} is not healthy: {}", member.name, self.log(index));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://IP:2379` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Runs `f` on a thread inside the first member's namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        netns::run_in(&self.members[0].netns, f)
    }

    pub fn pid(&self, index: usize) -> Option<u32> {
        self.children[index].as_ref().map(Child::id)
    }

    /// Kills one member (SIGKILL); its data stays for [`Etcd::restart`].
    pub fn stop(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            kill(&mut child);
        }
    }

    /// Starts a stopped member again on its data.
    pub fn restart(&mut self, index: usize) -> Result<()> {
        self.spawn(index, "existing")
    }

    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.members[index].name))).unwrap_or_default()
    }
}

fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // `ip netns exec` execs etcd, so this pid is etcd itself.
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = child.id() as i32;
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            kill(child);
        }
        if let Some(ns) = &self.own_netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
