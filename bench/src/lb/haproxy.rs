//! The HAProxy side of `plinth bench lb`, set up as marathon-lb sets it up: the config is
//! written from `GET /v2/apps?embed=apps.tasks` with marathon-lb's templates (its
//! `HAPROXY_HEAD` defaults: `retries 3`, `option redispatch`; per service port a frontend,
//! a backend with `balance roundrobin` and one `server` per running, healthy task with
//! `check inter {intervalSeconds}s fall {maxConsecutiveFailures + 1}`), HAProxy runs in
//! master-worker mode (`-W`, as marathon-lb's runit service runs it; the master hands the
//! listeners to new workers on a reload), and a poller standing in for marathon-lb rewrites
//! the config and reloads it (`SIGUSR2` to the master, after saving the servers' state)
//! whenever the task set changes.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

/// marathon-lb's `--group`: apps labelled `HAPROXY_GROUP` with it are served.
pub const GROUP: &str = "external";

/// Marathon task states marathon-lb leaves out (`EXCLUDED_TASK_STATES`).
const EXCLUDED_STATES: [&str; 4] = ["TASK_KILLING", "TASK_KILLED", "TASK_FINISHED", "TASK_ERROR"];

/// How often the stand-in for marathon-lb reads `/v2/apps` (marathon-lb follows the event
/// stream; a short poll gives HAProxy the same head start or better).
const POLL: Duration = Duration::from_millis(100);

/// One service port as marathon-lb configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub app_id: String,
    pub service_port: u16,
    /// `HAPROXY_{n}_MODE`, lower case: `tcp` (marathon-lb's default) or `http`.
    pub mode: String,
    pub health: Option<Health>,
    /// `(host, ip, port)` of each task, sorted as marathon-lb sorts them (host, port).
    pub servers: Vec<(String, String, u16)>,
}

/// The fields of the app's first health check that marathon-lb's templates use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub interval_seconds: u64,
    pub max_consecutive_failures: u64,
    /// The path of an HTTP check (an http-mode backend checks with `option httpchk`).
    pub http_path: Option<String>,
    pub timeout_seconds: u64,
}

#[derive(Debug, Deserialize)]
struct Apps {
    apps: Vec<App>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct App {
    id: String,
    #[serde(default)]
    port_definitions: Vec<PortDefinition>,
    #[serde(default)]
    health_checks: Vec<HealthCheck>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    tasks: Vec<Task>,
}

#[derive(Debug, Deserialize)]
struct PortDefinition {
    port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthCheck {
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default = "default_timeout")]
    timeout_seconds: u64,
    #[serde(default = "default_interval")]
    interval_seconds: u64,
    #[serde(default = "default_failures")]
    max_consecutive_failures: u64,
}

fn default_interval() -> u64 {
    60
}

fn default_timeout() -> u64 {
    20
}

fn default_failures() -> u64 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Task {
    #[serde(default)]
    host: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    ip_addresses: Vec<IpAddress>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    health_check_results: Option<Vec<HealthResult>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpAddress {
    ip_address: String,
}

#[derive(Debug, Deserialize)]
struct HealthResult {
    alive: bool,
}

/// The services of `/v2/apps?embed=apps.tasks` in `group`, with the tasks marathon-lb
/// (`--health-check`) would list: not in an excluded state, alive by their health checks
/// when the app has some, with an address.
pub fn services_of(apps_json: &str, group: &str) -> anyhow::Result<Vec<Service>> {
    let apps: Apps = serde_json::from_str(apps_json).context("reading /v2/apps")?;
    let mut services = Vec::new();
    for app in apps.apps {
        if app.labels.get("HAPROXY_GROUP").map(String::as_str) != Some(group) {
            continue;
        }
        let health = app.health_checks.first().map(|h| Health {
            interval_seconds: h.interval_seconds,
            max_consecutive_failures: h.max_consecutive_failures,
            http_path: h.protocol.eq_ignore_ascii_case("HTTP").then(|| h.path.clone().unwrap_or_else(|| "/".into())),
            timeout_seconds: h.timeout_seconds,
        });
        for (index, definition) in app.port_definitions.iter().enumerate() {
            let mut servers: Vec<(String, String, u16)> = app
                .tasks
                .iter()
                .filter(|t| !t.host.is_empty())
                .filter(|t| t.state.as_deref().is_none_or(|s| !EXCLUDED_STATES.contains(&s)))
                .filter(|t| {
                    app.health_checks.is_empty()
                        || t.health_check_results.as_ref().is_some_and(|r| r.iter().any(|r| r.alive))
                })
                .filter_map(|t| {
                    let ip = t
                        .ip_addresses
                        .first()
                        .map(|a| a.ip_address.clone())
                        .or_else(|| t.host.parse::<std::net::IpAddr>().is_ok().then(|| t.host.clone()))?;
                    Some((t.host.clone(), ip, *t.ports.get(index)?))
                })
                .collect();
            servers.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
            let mode = app.labels.get(&format!("HAPROXY_{index}_MODE")).map(|m| m.trim().to_ascii_lowercase());
            let mode = mode.filter(|m| m == "http").unwrap_or_else(|| "tcp".into());
            services.push(Service {
                app_id: app.id.clone(),
                service_port: definition.port,
                mode,
                health: health.clone(),
                servers,
            });
        }
    }
    Ok(services)
}

/// Where HAProxy's files live and which port each service port's frontend binds.
#[derive(Debug, Clone)]
pub struct Layout {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Service port → the frontend's port (Plinth's balancer holds the service port itself
    /// in the bench's namespace).
    pub frontend_ports: BTreeMap<u16, u16>,
}

/// marathon-lb's config for `services` (its `HAPROXY_HEAD` less syslog, TLS and Lua, and
/// `maxconn` 4096 instead of 50000, which needs more file descriptors than a default hard
/// limit allows; its
/// `FRONTEND_HEAD`, `BACKEND_HEAD` and `BACKEND_SERVER_OPTIONS` with the TCP health-check
/// options for a service port in tcp mode, marathon-lb's default without
/// `HAPROXY_{n}_VHOST`; in http mode (`HAPROXY_{n}_MODE=http`) also `BACKEND_HTTP_OPTIONS`
/// and, for an HTTP health check, `BACKEND_HTTP_HEALTHCHECK_OPTIONS`). A service without
/// servers gets no frontend, as marathon-lb skips it.
pub fn config(services: &[Service], layout: &Layout) -> String {
    let mut out = format!(
        "global\n  spread-checks 5\n  max-spread-checks 15000\n  maxconn 4096\n  \
         stats socket {} expose-fd listeners\n  server-state-file global\n  server-state-base {}/\n\
         defaults\n  load-server-state-from-file global\n  retries                   3\n  \
         backlog               10000\n  maxconn               4096\n  timeout connect          3s\n  \
         timeout client          30s\n  timeout server          30s\n  timeout tunnel        3600s\n  \
         timeout http-keep-alive  1s\n  timeout http-request    15s\n  timeout queue           30s\n  \
         timeout tarpit          60s\n  option            redispatch\n  option            http-server-close\n  \
         option            dontlognull\n  \
         option            tcp-smart-accept\n  option            tcp-smart-connect\n",
        layout.socket.display(),
        layout.state_dir.display()
    );
    for service in services.iter().filter(|s| !s.servers.is_empty()) {
        let backend = format!("{}_{}", service.app_id.trim_start_matches('/').replace('/', "_"), service.service_port);
        let bind = layout.frontend_ports.get(&service.service_port).copied().unwrap_or(service.service_port);
        let mode = &service.mode;
        let _ = write!(out, "\nfrontend {backend}\n  bind 127.0.0.1:{bind}\n  mode {mode}\n  use_backend {backend}\n");
        let _ = write!(out, "\nbackend {backend}\n  balance roundrobin\n  mode {mode}\n");
        if mode == "http" {
            out.push_str(
                "  option forwardfor\n  http-request set-header X-Forwarded-Port %[dst_port]\n  \
                 http-request add-header X-Forwarded-Proto https if { ssl_fc }\n",
            );
            if let Some(Health { http_path: Some(path), timeout_seconds, .. }) = &service.health {
                let _ = write!(out, "  option  httpchk GET {path}\n  timeout check {timeout_seconds}s\n");
            }
        }
        for (host, ip, port) in &service.servers {
            let name = if host == ip { format!("{ip}_{port}") } else { format!("{host}_{ip}_{port}") };
            let name: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            let check = service.health.as_ref().map_or(String::new(), |h| {
                format!(" check inter {}s fall {}", h.interval_seconds, h.max_consecutive_failures + 1)
            });
            let _ = writeln!(out, "  server {name} {ip}:{port}{check}");
        }
    }
    out
}

/// HAProxy (master-worker) and its marathon-lb stand-in, stopped on drop.
pub struct HaproxyStack {
    master: Child,
    log: PathBuf,
    frontend_ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
    /// Reloads done so far, and the servers of the config HAProxy runs now.
    pub reloads: Arc<AtomicUsize>,
    servers: Arc<Mutex<Vec<String>>>,
    /// The poller's last failure, if it is failing.
    error: Arc<Mutex<Option<String>>>,
}

impl HaproxyStack {
    /// Writes the first config from `api`, starts HAProxy on it and the poller.
    pub fn start(dir: &Path, api: &str, layout: Layout) -> anyhow::Result<HaproxyStack> {
        std::fs::create_dir_all(&layout.state_dir)?;
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).no_proxy().build()?;
        let cfg = dir.join("haproxy.cfg");
        let text = config(&fetch(&http, api)?, &layout);
        write_atomically(&cfg, &text)?;
        let log_path = dir.join("haproxy.log");
        let log = std::fs::File::create(&log_path)?;
        let master = Command::new("haproxy")
            .arg("-W")
            .arg("-f")
            .arg(&cfg)
            .arg("-p")
            .arg(dir.join("haproxy.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting haproxy")?;
        let stack = HaproxyStack {
            master,
            log: log_path,
            frontend_ports: layout.frontend_ports.values().copied().collect(),
            stop: Arc::new(AtomicBool::new(false)),
            poller: None,
            reloads: Arc::new(AtomicUsize::new(0)),
            servers: Arc::new(Mutex::new(server_lines(&text))),
            error: Arc::new(Mutex::new(None)),
        };
        stack.start_poller(http, api.to_string(), cfg, layout, text)
    }

    fn start_poller(
        mut self,
        http: reqwest::blocking::Client,
        api: String,
        cfg: PathBuf,
        layout: Layout,
        mut current: String,
    ) -> anyhow::Result<HaproxyStack> {
        let (stop, reloads, servers, error) =
            (self.stop.clone(), self.reloads.clone(), self.servers.clone(), self.error.clone());
        let master = self.master_pid();
        self.poller = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(POLL);
                let step = (|| -> anyhow::Result<()> {
                    let text = config(&fetch(&http, &api)?, &layout);
                    if text == current {
                        return Ok(());
                    }
                    // marathon-lb's reload_haproxy.sh: keep the servers' check state across the
                    // reload. Without it the new workers only start their checks afresh.
                    let _ = save_server_state(&layout);
                    write_atomically(&cfg, &text)?;
                    // SAFETY: SIGUSR2 to the HAProxy master this bench started: its reload signal.
                    if unsafe { libc::kill(master, libc::SIGUSR2) } != 0 {
                        bail!("reloading haproxy: {}", std::io::Error::last_os_error());
                    }
                    reloads.fetch_add(1, Ordering::Relaxed);
                    *servers.lock().expect("servers") = server_lines(&text);
                    current = text;
                    Ok(())
                })();
                *error.lock().expect("error") = step.err().map(|e| format!("{e:#}"));
            }
        }));
        Ok(self)
    }

    fn master_pid(&self) -> i32 {
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = self.master.id() as i32;
        pid
    }

    /// The master and its workers (old ones still finishing connections included).
    pub fn pids(&self) -> Vec<i32> {
        let master = self.master_pid();
        let mut pids = vec![master];
        pids.extend(super::children_of(master));
        pids
    }

    /// The servers in the config HAProxy was last given.
    pub fn servers(&self) -> Vec<String> {
        self.servers.lock().expect("servers").clone()
    }

    /// Waits until HAProxy's config lists `n` servers and its frontends accept connections
    /// (then half a second for a reload to settle).
    pub fn wait_for_servers(&mut self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.master.try_wait()? {
                bail!("haproxy exited ({status}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            let listening = self.frontend_ports.iter().all(|&port| {
                std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
            });
            if listening && self.servers().len() == n {
                break;
            }
            if started.elapsed() > limit {
                let error = self.error.lock().expect("error").clone().unwrap_or_default();
                bail!(
                    "haproxy did not serve {n} servers in {limit:?} (config: {:?}, listening: {listening}) {error}; log: {}",
                    self.servers(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }
}

impl Drop for HaproxyStack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        // SAFETY: SIGTERM to the HAProxy master this bench started; it stops its workers.
        unsafe { libc::kill(self.master_pid(), libc::SIGTERM) };
        let started = Instant::now();
        while matches!(self.master.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

fn fetch(http: &reqwest::blocking::Client, api: &str) -> anyhow::Result<Vec<Service>> {
    let body = http.get(format!("{api}/v2/apps?embed=apps.tasks")).send()?.error_for_status()?.text()?;
    services_of(&body, GROUP)
}

fn server_lines(config: &str) -> Vec<String> {
    config.lines().filter(|l| l.trim_start().starts_with("server ")).map(|l| l.trim().to_string()).collect()
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `show servers state` through the stats socket into the state file HAProxy loads.
fn save_server_state(layout: &Layout) -> anyhow::Result<()> {
    let mut socket = UnixStream::connect(&layout.socket)
        .with_context(|| format!("connecting to haproxy's socket {}", layout.socket.display()))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.write_all(b"show servers state\n")?;
    let mut state = String::new();
    socket.read_to_string(&mut state)?;
    write_atomically(&layout.state_dir.join("global"), &state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apps() -> String {
        let task = |port: u16, state: &str, alive: bool| {
            json!({"host": "agent-1", "state": state, "ports": [port],
                "ipAddresses": [{"ipAddress": "10.1.0.2", "protocol": "IPv4"}],
                "healthCheckResults": [{"alive": alive}]})
        };
        json!({"apps": [
            {"id": "/shop/web", "portDefinitions": [{"port": 10001}], "labels": {"HAPROXY_GROUP": "external"},
             "healthChecks": [{"protocol": "HTTP", "intervalSeconds": 2, "maxConsecutiveFailures": 3}],
             "tasks": [task(31002, "TASK_RUNNING", true), task(31001, "TASK_RUNNING", true),
                       task(31003, "TASK_KILLING", true), task(31004, "TASK_RUNNING", false),
                       {"host": "agent-1", "state": "TASK_RUNNING", "ports": [31005]}]},
            {"id": "/api", "portDefinitions": [{"port": 10003}],
             "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "HTTP"},
             "healthChecks": [{"protocol": "HTTP", "path": "/ping", "timeoutSeconds": 1}],
             "tasks": [task(31020, "TASK_RUNNING", true)]},
            {"id": "/internal", "portDefinitions": [{"port": 10002}], "labels": {},
             "tasks": [task(31010, "TASK_RUNNING", true)]}
        ]})
        .to_string()
    }

    fn layout() -> Layout {
        Layout {
            socket: "/run/hap/socket".into(),
            state_dir: "/run/hap/state".into(),
            frontend_ports: BTreeMap::from([(10001, 20001)]),
        }
    }

    #[test]
    fn only_running_healthy_tasks_of_the_group_become_servers() {
        let services = services_of(&apps(), GROUP).unwrap();
        assert_eq!(services.len(), 2, "{services:?}");
        assert_eq!((services[0].mode.as_str(), services[1].mode.as_str()), ("tcp", "http"));
        assert_eq!(services[0].service_port, 10001);
        let ports: Vec<u16> = services[0].servers.iter().map(|s| s.2).collect();
        assert_eq!(ports, [31001, 31002], "killing, unhealthy and unchecked tasks are left out");
    }

    #[test]
    fn the_config_has_the_frontend_port_and_every_task_as_a_server() {
        let text = config(&services_of(&apps(), GROUP).unwrap(), &layout());
        for line in [
            "frontend shop_web_10001",
            "  bind 127.0.0.1:20001",
            "backend shop_web_10001",
            "  balance roundrobin",
            "  option            redispatch",
            "  retries                   3",
            "  server agent-1_10_1_0_2_31001 10.1.0.2:31001 check inter 2s fall 4",
            "  server agent-1_10_1_0_2_31002 10.1.0.2:31002 check inter 2s fall 4",
            "  stats socket /run/hap/socket expose-fd listeners",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert_eq!(server_lines(&text).len(), 3, "{text}");
        let http = text.split("backend api_10003").nth(2).unwrap_or_default();
        for line in ["  mode http", "  option forwardfor", "  option  httpchk GET /ping", "  timeout check 1s"] {
            assert!(http.lines().any(|l| l == line), "{line:?} missing from the http backend:\n{text}");
        }
        let tcp = text.split("backend shop_web_10001").nth(2).unwrap_or_default();
        let tcp = tcp.split("frontend").next().unwrap_or_default();
        assert!(tcp.lines().any(|l| l == "  mode tcp") && !tcp.contains("httpchk"), "{text}");
    }

    #[test]
    fn a_service_without_servers_gets_no_frontend() {
        let service =
            Service { app_id: "/a".into(), service_port: 10001, mode: "tcp".into(), health: None, servers: vec![] };
        assert!(!config(&[service], &layout()).contains("frontend"));
    }

    #[test]
    fn haproxy_accepts_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config(&services_of(&apps(), GROUP).unwrap(), &layout())).unwrap();
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg).output();
        let check = check.expect("haproxy is installed (scripts/setup.sh installs it)");
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}
