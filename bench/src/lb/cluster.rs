//! The Plinth side of `plinth bench lb`: a network namespace of the bench's own (only its
//! loopback is up, so every byte stays on this machine and no port clashes with the host's),
//! a `plinth master` and a `plinth agent` in it, and the bench's app: three backends
//! (`plinth bench lb-backend --port $PORT0` command tasks) behind one service port.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub const APP_ID: &str = "/bench-lb";
const MASTER: &str = "127.0.0.1:8080";
const REGISTRY: &str = "127.0.0.1:5000";
const AGENT: &str = "127.0.0.1:5051";

/// `ip netns add NAME` with its loopback up; on drop, what still runs in it is killed (all
/// of it was started by this bench) and the namespace removed.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        ip(&["netns", "add", name])?;
        let netns = Netns { name: name.to_string() };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Runs `f` on a thread inside the namespace; processes and threads it starts stay there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let inside = path.clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let path = inside;
                    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
                    // SAFETY: setns on a valid namespace fd changes only this new thread's namespace.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        bail!("entering {path}: {}", std::io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the bench's thread in {path} panicked")))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let listed = Command::new("ip").args(["netns", "pids", &self.name]).output();
        let listed = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let own = std::process::id();
        for pid in listed.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if u32::try_from(pid) != Ok(own) {
                eprintln!("bench lb: killing pid {pid}, left in the bench's namespace");
                // SAFETY: a process in the namespace this bench created, so one it started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// A master and an agent (its balancer on) on the namespace's loopback.
pub struct Cluster {
    master: Child,
    agent: Child,
    pub api: String,
    agent_api: String,
    http: reqwest::blocking::Client,
    dir: PathBuf,
}

impl Cluster {
    /// Starts both and waits until the agent registered.
    pub fn start(dir: &Path, exe: &Path) -> anyhow::Result<Cluster> {
        let master = spawn(
            exe,
            &dir.join("master.log"),
            &["master", "--listen", MASTER, "--registry-listen", REGISTRY, "--hostname", "master", "--dns-port", "0"],
            &["--data-dir", &dir.join("master").display().to_string()],
        )?;
        let agent = match spawn(
            exe,
            &dir.join("agent.log"),
            &["agent", "--master", &format!("http://{MASTER}"), "--listen", AGENT, "--advertise-ip", "127.0.0.1"],
            &[
                "--work-dir",
                &dir.join("agent").display().to_string(),
                "--hostname",
                "bench-agent",
                "--resources",
                "cpus:8;mem:8192;disk:4096;ports:[31000-31999]",
                "--dns-port",
                "0",
            ],
        ) {
            Ok(agent) => agent,
            Err(err) => {
                let mut master = master;
                stop(&mut master);
                return Err(err);
            }
        };
        let cluster = Cluster {
            master,
            agent,
            api: format!("http://{MASTER}"),
            agent_api: format!("http://{AGENT}"),
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build()?,
            dir: dir.to_path_buf(),
        };
        cluster.wait("the agent to register", Duration::from_secs(60), |c| {
            let slaves = c.get(&format!("{}/master/slaves", c.api))?;
            Ok(slaves["slaves"].as_array().is_some_and(|s| !s.is_empty()))
        })?;
        Ok(cluster)
    }

    /// The agent process: it holds the balancer (and runs the health checks, syncs).
    pub fn agent_pid(&self) -> i32 {
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = self.agent.id() as i32;
        pid
    }

    fn get(&self, url: &str) -> anyhow::Result<Value> {
        Ok(self.http.get(url).send()?.error_for_status()?.json()?)
    }

    /// Polls `ready` every 100 ms until it says yes; `Err` past `limit`, with the logs' place.
    pub fn wait(
        &self,
        what: &str,
        limit: Duration,
        mut ready: impl FnMut(&Cluster) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let last = match ready(self) {
                Ok(true) => return Ok(()),
                Ok(false) => String::new(),
                Err(err) => format!(" (last: {err:#})"),
            };
            if started.elapsed() > limit {
                bail!("timed out after {limit:?} waiting for {what}{last}; logs in {}", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates the bench's app (`HAPROXY_GROUP` for the marathon-lb side, an HTTP health
    /// check both sides follow) and returns its assigned service port.
    /// The bench app with `instances` tasks, its service port in `mode` (`HAPROXY_0_MODE`).
    pub fn create_app(&self, exe: &Path, instances: u32, mode: &str) -> anyhow::Result<u16> {
        let app = json!({
            "id": APP_ID, "cmd": format!("exec {} bench lb-backend --port $PORT0", exe.display()),
            "cpus": 0.1, "mem": 64, "instances": instances,
            "portDefinitions": [{"port": 0, "protocol": "tcp", "name": "http"}],
            "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 30,
                "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}],
            "labels": {"HAPROXY_GROUP": super::haproxy::GROUP, "HAPROXY_0_MODE": mode},
        });
        let reply = self.http.post(format!("{}/v2/apps", self.api)).json(&app).send()?;
        let status = reply.status();
        let body: Value = reply.json().unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("POST /v2/apps: {status} {body}");
        }
        body["portDefinitions"][0]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("no service port assigned: {body}"))
    }

    /// `PUT /v2/apps/bench-lb {"instances": n}` (forced: a deployment may still run).
    pub fn scale(&self, instances: u32) -> anyhow::Result<()> {
        let reply = self
            .http
            .put(format!("{}/v2/apps{APP_ID}?force=true", self.api))
            .json(&json!({"instances": instances}))
            .send()?;
        if !reply.status().is_success() {
            bail!("scaling to {instances}: {} {}", reply.status(), reply.text().unwrap_or_default());
        }
        Ok(())
    }

    /// Waits until exactly `n` tasks run, all healthy, none left over, and the agent's
    /// balancer lists `n` backends on the service port.
    pub fn wait_for_instances(&self, service_port: u16, n: usize, limit: Duration) -> anyhow::Result<()> {
        self.wait(&format!("{n} healthy tasks"), limit, |c| {
            let tasks = c.get(&format!("{}/v2/apps{APP_ID}/tasks", c.api))?;
            let tasks = tasks["tasks"].as_array().cloned().unwrap_or_default();
            let healthy = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter(|t| t["healthCheckResults"].as_array().is_some_and(|r| r.iter().any(|r| r["alive"] == true)))
                .count();
            Ok(tasks.len() == n && healthy == n)
        })?;
        self.wait(&format!("the balancer to list {n} backends"), limit, |c| {
            let view = c.get(&format!("{}/v1/lb", c.agent_api))?;
            let frontends = view["frontends"].as_array().cloned().unwrap_or_default();
            let frontend = frontends.iter().find(|f| f["port"] == json!(service_port));
            Ok(frontend.and_then(|f| f["backends"].as_array()).is_some_and(|b| b.len() == n))
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Tasks outlive their agent by design: remove the app and wait for the kills first,
        // so no task, cgroup or sandbox is left behind.
        let _ = self.http.delete(format!("{}/v2/apps{APP_ID}?force=true", self.api)).send();
        let _ = self.wait("the app's tasks to end", Duration::from_secs(30), |c| {
            let tasks = c.get(&format!("{}/v2/tasks", c.api))?;
            Ok(tasks["tasks"].as_array().is_none_or(Vec::is_empty))
        });
        // A moment for the agent to see its executors exit and clean up.
        std::thread::sleep(Duration::from_millis(500));
        stop(&mut self.agent);
        stop(&mut self.master);
    }
}

/// SIGTERM, 10 s to end, then SIGKILL.
fn stop(child: &mut Child) {
    // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
    #[allow(clippy::cast_possible_wrap)]
    let pid = child.id() as i32;
    // SAFETY: SIGTERM to a child this bench started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while matches!(child.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `exe ARGS EXTRA`, its output in `log`, without the caller's `PLINTH_*` settings.
fn spawn(exe: &Path, log: &Path, args: &[&str], extra: &[&str]) -> anyhow::Result<Child> {
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PLINTH_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting plinth {}", args.first().copied().unwrap_or_default()))
}
