//! `plinth standalone` for benchmarks: started on loopback ports with its state in the
//! bench dir, and stopped with every app removed first.
use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `plinth standalone` on loopback ports, its state in the bench dir.
pub struct Standalone {
    child: Child,
    pub api: String,
    pub http: reqwest::blocking::Client,
}

impl Standalone {
    /// Starts one with `resources` and `extra` flags, and waits until its agent registered.
    pub fn start(dir: &Path, resources: &str, extra: &[&str]) -> anyhow::Result<Standalone> {
        let (api_port, registry_port, agent_port) = (free_port()?, free_port()?, free_port()?);
        let log = File::create(dir.join("standalone.log"))?;
        let child = Command::new("/proc/self/exe")
            .args(["standalone", "--listen", &format!("127.0.0.1:{api_port}")])
            .args(["--registry-listen", &format!("127.0.0.1:{registry_port}")])
            .args(["--agent-listen", &format!("127.0.0.1:{agent_port}"), "--advertise-ip", "127.0.0.1"])
            .args(["--data-dir", &dir.join("master").display().to_string()])
            .args(["--work-dir", &dir.join("agent").display().to_string()])
            .args(["--resources", resources, "--hostname", "bench"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting plinth standalone")?;
        let standalone = Standalone {
            child,
            api: format!("http://127.0.0.1:{api_port}"),
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build()?,
        };
        let started = Instant::now();
        while standalone
            .http
            .get(format!("{}/master/slaves", standalone.api))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_none_or(|s| s["slaves"].as_array().is_none_or(Vec::is_empty))
        {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("plinth standalone did not come up; see {}", dir.join("standalone.log").display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(standalone)
    }
}

/// Removes every app that has tasks and waits (up to 30 s) until their kills are done.
pub fn remove_apps_with_tasks(http: &reqwest::blocking::Client, api: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let tasks: Value = match http.get(format!("{api}/v2/tasks")).send().and_then(|r| r.json()) {
            Ok(tasks) => tasks,
            Err(_) => break,
        };
        let ids: BTreeSet<String> = tasks["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["appId"].as_str().map(str::to_string))
            .collect();
        if ids.is_empty() {
            break;
        }
        for id in ids {
            let _ = http.delete(format!("{api}/v2/apps{id}?force=true")).send();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        // Tasks outlive their agent by design: remove the apps and wait for the kills
        // before stopping it, so nothing is left running or mounted.
        remove_apps_with_tasks(&self.http, &self.api);
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = self.child.id() as i32;
        // SAFETY: SIGTERM to our own child; its tasks are killed with the apps above.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The machine a result was measured on: cores, CPU model, load.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!("{cpus} cpus, {model}, load {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}
