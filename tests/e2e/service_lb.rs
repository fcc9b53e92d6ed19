//! Service ports end to end: every agent's balancer answers every app's service port
//! (the Marathon tutorial's `hello-sinatra` on 9000, from the greeter image), from other
//! hosts and from tasks on `127.0.0.1`; no request fails while the app scales, restarts
//! and scales down, and at most the one in flight when a task is killed with `kill -9`;
//! unhealthy tasks get no traffic; a lost agent's backends leave the others' balancers; a
//! port with no backend refuses a flood of connections at once; a UDP service port echoes
//! through every agent and closes with its app, and a `udp,tcp` port serves both on one
//! number; `--service-ports` sets the range ports are assigned from; `--lb-http-port`
//! routes each request of a connection by its host; in http mode (`HAPROXY_0_MODE`) one
//! keep-alive client connection loses no request while the app scales down and rolls out.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::containers::{hello_sinatra, ImageCluster};

const SERVICE_PORT: u16 = 9000;

/// One request on a fresh connection: `GET /greet/NAME` through `ip:port`; the body of a 200.
fn request(ip: &str, port: u16, name: &str) -> Result<String, String> {
    let addr: SocketAddr = format!("{ip}:{port}").parse().map_err(|e| format!("{e}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, secs(5)).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(secs(10))).map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET /greet/{name} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) =
        answer.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer from {addr}: {answer:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}: {head}"));
    }
    Ok(body.to_string())
}

/// The agent's `GET /v1/lb`.
fn lb(cluster: &Cluster, agent: &str) -> Value {
    cluster.agent_api(agent).get_json("/v1/lb")
}

/// Backend addresses of the service port in an agent's balancer (`None`: no such frontend).
fn backends(view: &Value, port: u16) -> Option<Vec<String>> {
    let frontend = view["frontends"].as_array()?.iter().find(|f| f["port"] == json!(port))?.clone();
    Some(frontend["backends"].as_array()?.iter().filter_map(|b| b["address"].as_str().map(str::to_string)).collect())
}

/// Waits until every listed agent balances the service port over exactly `count` backends.
fn wait_for_backends(cluster: &Cluster, agents: &[&str], count: usize) -> Vec<String> {
    wait_until(&format!("{count} backends on port {SERVICE_PORT} in every balancer"), secs(120), || {
        cluster.check_nodes_alive()?;
        let mut seen = Vec::new();
        for agent in agents {
            let list = backends(&lb(cluster, agent), SERVICE_PORT).unwrap_or_default();
            if list.len() != count {
                return Err(format!("{agent}: {list:?}"));
            }
            seen = list;
        }
        Ok(seen)
    })
}

/// The tutorial app with an HTTP health check on its port (the greeter answers 200 on `path`).
fn checked_sinatra(instances: u64, path: &str, max_failures: u64) -> Value {
    let mut app = hello_sinatra();
    app["instances"] = json!(instances);
    app["cpus"] = json!(0.1);
    app["mem"] = json!(32);
    // First probe after 1 s, not Marathon's default 15: a new task takes traffic soon.
    app["healthChecks"] = json!([{"protocol": "HTTP", "path": path, "portIndex": 0, "gracePeriodSeconds": 30,
        "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": max_failures, "delaySeconds": 1}]);
    app
}

#[test]
fn the_tutorial_app_answers_on_its_service_port_of_every_agent_and_from_a_task() {
    let ic = ImageCluster::start("lb-tutorial", 2, &[]);
    let cluster = &ic.cluster;
    let mut app = hello_sinatra();
    // agent-2 runs none of its tasks, and answers all the same.
    app["constraints"] = json!([["hostname", "CLUSTER", "agent-1"]]);
    let events = EventStream::open(&format!("{}/v1/events", cluster.master_url()));
    cluster.api().post("/v2/apps", &app).expect_status(201);
    let task = cluster.wait_for_running("/hello-sinatra", 1, secs(90)).remove(0);
    assert_eq!(task["servicePorts"], json!([SERVICE_PORT]), "{task}");
    let backend = format!("{}:{}", cluster.node("agent-1").host.ip, task["ports"][0]);
    assert_eq!(wait_for_backends(cluster, &["agent-1", "agent-2"], 1), vec![backend.clone()]);
    events.wait_for("lb_backend_added", secs(10));
    for agent in ["agent-1", "agent-2"] {
        let ip = cluster.node(agent).host.ip.to_string();
        let body =
            wait_until(&format!("{agent}:{SERVICE_PORT} to greet"), secs(30), || request(&ip, SERVICE_PORT, "world"));
        assert_eq!(body, "Hello world!", "through {agent}");
    }

    // A command task on agent-2 reaches the app on its own loopback.
    let probe = json!({"id": "/probe", "cpus": 0.1, "mem": 32, "constraints": [["hostname", "CLUSTER", "agent-2"]],
        "cmd": "for i in $(seq 1 60); do curl -sf http://127.0.0.1:9000/greet/task && break; sleep 0.5; done; sleep 600"});
    let probe_task = cluster.deploy(&probe).remove(0);
    let probe_id = str_field(&probe_task, "id").to_string();
    wait_until("the probe task to print the greeting", secs(60), || {
        let reply = cluster.agent_api("agent-2").try_get(&format!("/v1/tasks/{probe_id}/logs"))?;
        if reply.text.contains("Hello task!") {
            Ok(())
        } else {
            Err(format!("{}: {}", reply.status, reply.text))
        }
    });

    // Operators see it: the CLI, the stats and the metrics.
    let out = cluster.cli(&["lb", "status", "--agent", "agent-2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(shown.contains("9000/tcp") && shown.contains("/hello-sinatra") && shown.contains(&backend), "{shown}");
    let view = lb(cluster, "agent-2");
    let frontend = view["frontends"].as_array().unwrap().iter().find(|f| f["port"] == json!(SERVICE_PORT)).unwrap();
    assert!(frontend["backends"][0]["total_connections"].as_u64().unwrap_or(0) >= 2, "{view}");
    assert!(frontend["backends"][0]["bytes_out"].as_u64().unwrap_or(0) > 0, "{view}");
    let out = cluster.cli(&["app", "show", "/hello-sinatra"]);
    let shown = stdout(&out);
    let agent_2 = format!("{}:{SERVICE_PORT}", cluster.node("agent-2").host.ip);
    assert!(shown.contains("9000/tcp") && shown.contains(&agent_2), "{shown}{}", stderr(&out));
    let metrics = cluster.agent_api("agent-2").get("/metrics").text;
    assert!(
        metrics.contains("plinth_lb_connections_total{port=\"9000\",protocol=\"tcp\",app_id=\"/hello-sinatra\"}"),
        "{metrics}"
    );
}

/// A client sending requests without pause through both agents' service port until
/// stopped (at most `limit`); returns the number sent and the failures, each with when
/// its request started. One thread: at most one request is in flight at any time.
struct Client {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<(Instant, String)>)>,
}

impl Client {
    fn start(ips: Vec<String>, limit: usize) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut sent = 0;
            while !stopping.load(Ordering::Relaxed) && sent < limit {
                let ip = &ips[sent % ips.len()];
                let at = Instant::now();
                match request(ip, SERVICE_PORT, &format!("n{sent}")) {
                    Ok(body) if body == format!("Hello n{sent}!") => {}
                    Ok(body) => failures.push((at, format!("#{sent} via {ip}: wrong body {body:?}"))),
                    Err(e) => failures.push((at, format!("#{sent} via {ip}: {e}"))),
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(15));
            }
            (sent, failures)
        });
        Client { stop, thread }
    }

    fn finish(self) -> (usize, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("client thread")
    }
}

/// Kills one task's container process with SIGKILL and waits until a new task serves in
/// its place on every balancer; returns when the kill was sent and when it was replaced.
fn kill9_a_task_and_wait_for_its_replacement(cluster: &Cluster, agents: &[&str], count: usize) -> (Instant, Instant) {
    let victim = cluster.running_tasks("/hello-sinatra").remove(0);
    let id = str_field(&victim, "id").to_string();
    let node = cluster.node_of_host(str_field(&victim, "host"));
    let inspect = cluster.agent_api(&node).get_json(&format!("/v1/tasks/{id}/inspect"));
    let pid = inspect["container"]["pid"].as_i64().unwrap_or_else(|| panic!("the container's pid: {inspect}"));
    let killed_at = Instant::now();
    sh("kill", &["-9", &pid.to_string()]);
    wait_until("the killed task to be replaced", secs(60), || {
        cluster.check_nodes_alive()?;
        let running = cluster.running_tasks("/hello-sinatra");
        if running.len() == count && running.iter().all(|t| str_field(t, "id") != id) {
            Ok(())
        } else {
            Err(task_summary(&running))
        }
    });
    wait_for_backends(cluster, agents, count);
    (killed_at, Instant::now())
}

#[test]
fn no_request_fails_while_the_app_scales_up_restarts_and_scales_down() {
    let ic = ImageCluster::start("lb-zero-drop", 2, &[]);
    let cluster = &ic.cluster;
    let agents = ["agent-1", "agent-2"];
    cluster.api().post("/v2/apps", &checked_sinatra(1, "/greet/health", 3)).expect_status(201);
    cluster.wait_for_running("/hello-sinatra", 1, secs(90));
    wait_for_backends(cluster, &agents, 1);
    let ips: Vec<String> = agents.iter().map(|a| cluster.node(a).host.ip.to_string()).collect();
    let client = Client::start(ips, 20_000);
    let started = Instant::now();

    cluster.api().put("/v2/apps/hello-sinatra", &json!({"instances": 3})).expect_status(200);
    cluster.wait_for_running("/hello-sinatra", 3, secs(120));
    wait_for_backends(cluster, &agents, 3);
    let before: Vec<String> = cluster.tasks("/hello-sinatra").iter().map(|t| str_field(t, "id").to_string()).collect();

    cluster.api().post("/v2/apps/hello-sinatra/restart", &json!({})).expect_status(200);
    cluster.wait_for_no_deployments(secs(180));
    cluster.wait_for_running("/hello-sinatra", 3, secs(120));
    let after: Vec<String> = cluster.tasks("/hello-sinatra").iter().map(|t| str_field(t, "id").to_string()).collect();
    assert!(after.iter().all(|t| !before.contains(t)), "every task was replaced: {before:?} → {after:?}");
    wait_for_backends(cluster, &agents, 3);

    // Not planned: a task's process killed with kill -9. Only the request in flight then may fail.
    let (killed_at, replaced_at) = kill9_a_task_and_wait_for_its_replacement(cluster, &agents, 3);

    cluster.api().put("/v2/apps/hello-sinatra", &json!({"instances": 1})).expect_status(200);
    cluster.wait_for_running("/hello-sinatra", 1, secs(120));
    wait_for_backends(cluster, &agents, 1);
    // A little more traffic on the one task left.
    std::thread::sleep(secs(1));
    let (sent, failures) = client.finish();
    let (at_kill, planned): (Vec<_>, Vec<_>) =
        failures.into_iter().partition(|(at, _)| *at + secs(1) >= killed_at && *at <= replaced_at);
    eprintln!(
        "{sent} requests in {:?}, {} failed at the kill -9 ({:?} until replaced), {} during planned changes",
        started.elapsed(),
        at_kill.len(),
        replaced_at - killed_at,
        planned.len()
    );
    assert!(sent >= 200, "the client kept sending during the changes: {sent}");
    assert!(planned.is_empty(), "{} of {sent} requests failed: {planned:#?}", planned.len());
    assert!(at_kill.len() <= 1, "more than the one request in flight failed at the kill -9: {at_kill:#?}");
}

#[test]
fn a_task_not_yet_healthy_gets_no_traffic_and_a_port_without_backends_refuses_a_flood() {
    let ic = ImageCluster::start("lb-unhealthy", 1, &[]);
    let cluster = &ic.cluster;
    // The greeter answers 404 off /greet/: running, never healthy, never killed.
    cluster.api().post("/v2/apps", &checked_sinatra(1, "/nothing-here", 0)).expect_status(201);
    let deadline = Instant::now() + secs(90);
    wait_until("a running task", secs(90), || {
        cluster.check_nodes_alive()?;
        let running = cluster.running_tasks("/hello-sinatra");
        let checked = running.iter().any(|t| t["healthCheckResults"][0]["alive"] == json!(false));
        if checked {
            Ok(())
        } else {
            Err(format!("{running:?}"))
        }
    });
    assert!(Instant::now() < deadline);
    let view = lb(cluster, "agent-1");
    assert_eq!(backends(&view, SERVICE_PORT), Some(vec![]), "the port is served, with no backend: {view}");
    let ip = cluster.node("agent-1").host.ip.to_string();
    holds_for("no traffic to an unhealthy task", secs(2), || match request(&ip, SERVICE_PORT, "x") {
        Ok(body) => Err(format!("answered {body:?}")),
        Err(_) => Ok(()),
    });

    // A flood: every connection is closed at once, and the agent keeps no socket of it.
    let pid = cluster.node("agent-1").pid().expect("agent pid");
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let before = fds();
    let addr: SocketAddr = format!("{ip}:{SERVICE_PORT}").parse().unwrap();
    let started = Instant::now();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let failures = &failures;
            scope.spawn(move || {
                for i in 0..100 {
                    let attempt = Instant::now();
                    let outcome = TcpStream::connect_timeout(&addr, secs(2)).and_then(|mut s| {
                        s.set_read_timeout(Some(secs(2)))?;
                        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                        let mut buf = [0u8; 64];
                        s.read(&mut buf)
                    });
                    let slow = attempt.elapsed() > secs(1);
                    if matches!(outcome, Ok(n) if n > 0) || slow {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("worker {worker} #{i}: {outcome:?} after {:?}", attempt.elapsed()));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "every connection must be closed at once: {failures:#?}");
    eprintln!("800 unserved connections in {:?}", started.elapsed());
    let after = wait_until("the agent's descriptors to settle", secs(10), || {
        let now = fds();
        if now <= before + 5 {
            Ok(now)
        } else {
            Err(format!("{now} descriptors, {before} before the flood"))
        }
    });
    assert!(after <= before + 5);
    let view = lb(cluster, "agent-1");
    let frontend = view["frontends"].as_array().unwrap().iter().find(|f| f["port"] == json!(SERVICE_PORT)).unwrap();
    assert!(frontend["unserved"].as_u64().unwrap_or(0) >= 800, "{view}");
}

#[test]
fn a_killed_agents_backends_leave_the_other_balancers_and_do_not_come_back_stale() {
    let mut ic = ImageCluster::start("lb-lost-agent", 3, &[]);
    let mut app = hello_sinatra();
    app["instances"] = json!(2);
    app["cpus"] = json!(0.1);
    app["constraints"] = json!([["hostname", "UNIQUE"]]);
    ic.cluster.api().post("/v2/apps", &app).expect_status(201);
    let tasks = ic.cluster.wait_for_running("/hello-sinatra", 2, secs(90));
    let all = ["agent-1", "agent-2", "agent-3"];
    wait_for_backends(&ic.cluster, &all, 2);
    let victim = ic.cluster.node_of_host(str_field(&tasks[0], "host"));
    let victim_ip = ic.cluster.node(&victim).host.ip.to_string();
    let others: Vec<&str> = all.iter().copied().filter(|a| *a != victim).collect();
    ic.cluster.kill9(&victim);
    let killed_at = Instant::now();
    wait_until("the lost agent's backends to leave every other balancer", secs(30), || {
        for agent in &others {
            let list = backends(&lb(&ic.cluster, agent), SERVICE_PORT).unwrap_or_default();
            if list.iter().any(|b| b.starts_with(&format!("{victim_ip}:"))) {
                return Err(format!("{agent}: {list:?}"));
            }
        }
        Ok(())
    });
    let gone_after = killed_at.elapsed();
    assert!(gone_after < secs(AGENT_TIMEOUT_SECS + 5), "gone after {gone_after:?}");
    // The replacement takes traffic; the app answers through the survivors all along.
    wait_for_backends(&ic.cluster, &others, 2);
    let ip = ic.cluster.node(others[0]).host.ip.to_string();
    assert_eq!(request(&ip, SERVICE_PORT, "again").as_deref(), Ok("Hello again!"));

    // It comes back: its old task is killed, and no balancer lists it.
    ic.cluster.respawn(&victim);
    ic.cluster.wait_for_agents(3);
    let current: Vec<Value> = ic.cluster.wait_for_running("/hello-sinatra", 2, secs(60));
    let expected: Vec<String> =
        current.iter().map(|t| format!("{}:{}", ic.cluster.ip_of_host(str_field(t, "host")), t["ports"][0])).collect();
    wait_until("every balancer to list just the current tasks", secs(30), || {
        for agent in all {
            let mut list = backends(&lb(&ic.cluster, agent), SERVICE_PORT).unwrap_or_default();
            let mut want = expected.clone();
            list.sort();
            want.sort();
            if list != want {
                return Err(format!("{agent}: {list:?}, want {want:?}"));
            }
        }
        Ok(())
    });
}

/// A connection through the balancer that has sent half a request (the greeter waits for
/// the end of the request line).
fn half_request(ip: &str, name: &str) -> TcpStream {
    let addr: SocketAddr = format!("{ip}:{SERVICE_PORT}").parse().expect("an agent's address");
    let mut stream = TcpStream::connect_timeout(&addr, secs(5)).expect("connect through the balancer");
    stream.set_read_timeout(Some(secs(20))).expect("a read timeout");
    stream.write_all(format!("GET /greet/{name} HTTP/1.0").as_bytes()).expect("half a request sent");
    stream
}

#[test]
fn open_connections_finish_before_a_drained_task_is_killed() {
    let ic = ImageCluster::start("lb-drain", 1, &[]);
    let cluster = &ic.cluster;
    let mut app = checked_sinatra(3, "/greet/health", 3);
    app["labels"] = json!({"PLINTH_DRAIN_SECONDS": "60"});
    cluster.api().post("/v2/apps", &app).expect_status(201);
    cluster.wait_for_running("/hello-sinatra", 3, secs(120));
    wait_for_backends(cluster, &["agent-1"], 3);
    let ip = cluster.node("agent-1").host.ip.to_string();
    // Round robin: three connections, one on each task.
    let mut open: Vec<TcpStream> = (0..3).map(|i| half_request(&ip, &format!("slow{i}"))).collect();
    wait_until("one open connection on each backend", secs(10), || {
        let view = lb(cluster, "agent-1");
        let active: Vec<u64> = view["frontends"][0]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| b["active_connections"].as_u64().unwrap_or(0))
            .collect();
        if active == [1, 1, 1] {
            Ok(())
        } else {
            Err(format!("{view}"))
        }
    });

    cluster.api().put("/v2/apps/hello-sinatra", &json!({"instances": 1})).expect_status(200);
    wait_for_backends(cluster, &["agent-1"], 1);
    let killing = || cluster.tasks("/hello-sinatra").iter().filter(|t| t["state"] == json!("TASK_KILLING")).count();
    assert_eq!(killing(), 2, "{:?}", cluster.tasks("/hello-sinatra"));
    // The drained tasks keep running while their connections are open.
    holds_for("drained tasks with open connections to stay", secs(3), || match killing() {
        2 => Ok(()),
        n => Err(format!("{n} tasks killing")),
    });
    let started = Instant::now();
    for (i, mut stream) in open.drain(..).enumerate() {
        stream.write_all(b"\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with(&format!("Hello slow{i}!")), "connection {i}: {answer:?}");
        // Closed as an HTTP/1.0 client does: that is when the balancer counts it done.
        drop(stream);
    }
    // Their last connection ended: the kill follows, long before the 60 s drain timeout.
    cluster.wait_for_running("/hello-sinatra", 1, secs(20));
    assert!(started.elapsed() < secs(20));
}

#[test]
fn plinth_standalone_balances_an_assigned_service_port_too() {
    let mut cluster = Cluster::new("lb-standalone");
    cluster.start_standalone("solo");
    let ip = cluster.node("solo").host.ip;
    let api = Http::new(format!("http://{ip}:{MASTER_PORT}"));
    let app = json!({"id": "/web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.1, "mem": 64,
        "portDefinitions": [{"port": 0}]});
    let created = api.post("/v2/apps", &app).expect_status(201);
    let service_port = created.json["portDefinitions"][0]["port"].as_u64().expect("an assigned service port");
    assert!((10_000..=20_000).contains(&service_port), "{}", created.text);
    wait_until("the service port to answer on the box", secs(90), || {
        let reply = Http::new(format!("http://{ip}:{service_port}")).try_get("/")?;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(format!("status {}", reply.status))
        }
    });
}

#[test]
fn the_master_assigns_service_ports_from_its_configured_range_and_refuses_ports_beyond_it() {
    for (value, says) in [("9-3", "starts above its end"), ("abc", "is not a range"), ("0-10", "'0' is not a port")] {
        let out = plinth(&["master", "--service-ports", value], &[]);
        assert_eq!(out.status.code(), Some(2), "--service-ports {value} is a usage error");
        assert!(stderr(&out).contains(says) && stderr(&out).contains("--service-ports"), "{value}: {}", stderr(&out));
    }
    let out = plinth(&["standalone"], &[("PLINTH_SERVICE_PORTS", "31000-31010")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("overlaps the agents' default task host ports 31000-32000"), "{}", stderr(&out));

    let mut cluster = Cluster::new("lb-port-range");
    cluster.start_master(&["--service-ports", "15000-15009"]);
    let api = cluster.api();
    let app = |id: &str, port: u16| {
        json!({"id": id, "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 0,
        "portDefinitions": [{"port": port}]})
    };
    let created = api.post("/v2/apps", &app("/first", 0)).expect_status(201);
    assert_eq!(created.json["portDefinitions"][0]["port"], json!(15000), "{}", created.text);
    // Above the range: the agents' host ports live there.
    let refused = api.post("/v2/apps", &app("/beyond", 15010)).expect_status(422);
    let said = refused.json["details"][0]["errors"][0].as_str().unwrap_or_default().to_string();
    assert!(said.contains("15010") && said.contains("15000-15009"), "{}", refused.text);
    assert_eq!(refused.json["message"], json!("Object is not valid"), "{}", refused.text);
    api.get("/v2/apps/beyond").expect_status(404);
    // The ten ports of the range, then none left.
    for i in 1..10 {
        let created = api.post("/v2/apps", &app(&format!("/app-{i}"), 0)).expect_status(201);
        let port = created.json["portDefinitions"][0]["port"].as_u64().unwrap_or(0);
        assert!((15_001..=15_009).contains(&port), "{}", created.text);
    }
    let full = api.post("/v2/apps", &app("/one-too-many", 0)).expect_status(422);
    assert!(full.text.contains("No service port left in 15000-15009"), "{}", full.text);
}

/// One keep-alive connection (a client with a pool of one) sending requests without
/// pause through `ip:SERVICE_PORT` until stopped; returns the number sent and the failures.
struct KeepAliveClient {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl KeepAliveClient {
    fn start(ip: String) -> KeepAliveClient {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .timeout(secs(10))
                .build()
                .expect("an HTTP client");
            let (mut sent, mut failures) = (0, Vec::new());
            while !stopping.load(Ordering::Relaxed) {
                let url = format!("http://{ip}:{SERVICE_PORT}/greet/n{sent}");
                match http.get(&url).send().and_then(|r| Ok((r.status(), r.text()?))) {
                    Ok((status, body)) if status == 200 && body == format!("Hello n{sent}!") => {}
                    Ok((status, body)) => failures.push(format!("#{sent}: {status} {body:?}")),
                    Err(e) => failures.push(format!("#{sent}: {e}")),
                }
                sent += 1;
            }
            (sent, failures)
        });
        KeepAliveClient { stop, thread }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("client thread")
    }
}

#[test]
fn in_http_mode_one_keep_alive_connection_loses_no_request_while_the_app_scales_down_and_rolls_out() {
    let ic = ImageCluster::start("lb-http-mode", 2, &[]);
    let cluster = &ic.cluster;
    let agents = ["agent-1", "agent-2"];
    let mut app = checked_sinatra(3, "/greet/health", 3);
    app["labels"] = json!({"HAPROXY_0_MODE": "http"});
    cluster.api().post("/v2/apps", &app).expect_status(201);
    cluster.wait_for_running("/hello-sinatra", 3, secs(120));
    wait_for_backends(cluster, &agents, 3);
    let ip = cluster.node("agent-1").host.ip.to_string();
    let client = KeepAliveClient::start(ip);
    std::thread::sleep(secs(1));

    cluster.api().put("/v2/apps/hello-sinatra", &json!({"instances": 1})).expect_status(200);
    cluster.wait_for_running("/hello-sinatra", 1, secs(120));
    wait_for_backends(cluster, &agents, 1);
    let before = str_field(&cluster.running_tasks("/hello-sinatra")[0], "id").to_string();
    // A new version: the one task is replaced.
    let labels = json!({"labels": {"HAPROXY_0_MODE": "HTTP", "ROLLOUT": "2"}});
    cluster.api().put("/v2/apps/hello-sinatra", &labels).expect_status(200);
    cluster.wait_for_no_deployments(secs(180));
    let after = cluster.wait_for_running("/hello-sinatra", 1, secs(120));
    assert_ne!(str_field(&after[0], "id"), before, "the task was replaced");
    wait_for_backends(cluster, &agents, 1);
    std::thread::sleep(secs(1));
    let (sent, failures) = client.finish();

    let view = lb(cluster, "agent-1");
    let frontend = view["frontends"].as_array().unwrap().iter().find(|f| f["port"] == json!(SERVICE_PORT)).unwrap();
    eprintln!("{sent} requests on one connection, {} failed; {frontend}", failures.len());
    assert!(sent >= 200, "the client kept sending during the changes: {sent}");
    assert!(failures.is_empty(), "{} of {sent} requests failed: {failures:#?}", failures.len());
    assert_eq!(frontend["mode"], json!("http"), "{frontend}");
    assert_eq!(frontend["connections"], json!(1), "the client's one connection served every request: {frontend}");
    let requests = frontend["backends"][0]["requests"].as_u64().unwrap_or(0);
    assert!(requests > 0, "the new task got requests: {frontend}");
}

/// A UDP echo command task on `$PORT0`: answers each datagram with `TASK_ID DATA`.
const UDP_ECHO: &str = r#"exec python3 -c '
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(os.environ["PORT0"])))
me = os.environ["MESOS_TASK_ID"].encode()
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(me + b" " + data, peer)
'"#;
const UDP_SERVICE_PORT: u16 = 10_053;

/// One datagram to `ip:UDP_SERVICE_PORT` from `socket`: the task that echoed it (`None`: no answer in 2 s).
fn udp_ask(socket: &std::net::UdpSocket, ip: &str, word: &str) -> Option<String> {
    udp_ask_at(socket, &format!("{ip}:{UDP_SERVICE_PORT}"), word)
}

/// [`udp_ask`] of any address (a task's own host port).
fn udp_ask_at(socket: &std::net::UdpSocket, address: &str, word: &str) -> Option<String> {
    socket.set_read_timeout(Some(secs(2))).expect("a read timeout");
    socket.send_to(word.as_bytes(), address).expect("a datagram sent");
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    let (task, echoed) = answer.split_once(' ')?;
    (echoed == word).then(|| task.to_string())
}

fn udp_client() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("0.0.0.0:0").expect("a client socket")
}

/// Waits until every agent's balancer serves the UDP port over exactly `count` backends.
fn wait_for_udp_backends(cluster: &Cluster, agents: &[&str], count: usize) {
    wait_until(&format!("{count} backends on {UDP_SERVICE_PORT}/udp in every balancer"), secs(60), || {
        cluster.check_nodes_alive()?;
        for agent in agents {
            let view = lb(cluster, agent);
            let frontend = view["frontends"].as_array().and_then(|f| {
                f.iter().find(|f| f["port"] == json!(UDP_SERVICE_PORT) && f["protocol"] == json!("udp")).cloned()
            });
            let n = frontend.as_ref().and_then(|f| f["backends"].as_array()).map(Vec::len);
            if n != Some(count) {
                return Err(format!("{agent}: {frontend:?}"));
            }
        }
        Ok(())
    });
}

#[test]
fn a_udp_service_port_echoes_through_every_agent_follows_the_app_and_closes_with_it() {
    let cluster = Cluster::start("lb-udp", 2);
    let agents = ["agent-1", "agent-2"];
    let ips: Vec<String> = agents.iter().map(|a| cluster.node(a).host.ip.to_string()).collect();
    // agent-2 runs none of its tasks.
    let app = json!({"id": "/udp-echo", "cmd": UDP_ECHO, "cpus": 0.1, "mem": 32,
        "constraints": [["hostname", "CLUSTER", "agent-1"]],
        "portDefinitions": [{"port": UDP_SERVICE_PORT, "protocol": "udp", "name": "echo"}]});
    let first = cluster.deploy(&app).remove(0);
    assert_eq!(first["servicePorts"], json!([UDP_SERVICE_PORT]), "{first}");
    let first_id = str_field(&first, "id").to_string();
    wait_for_udp_backends(&cluster, &agents, 1);
    for ip in &ips {
        let client = udp_client();
        let task = wait_until(&format!("an echo through {ip}"), secs(20), || {
            udp_ask(&client, ip, "hello").ok_or_else(|| "no answer".to_string())
        });
        assert_eq!(task, first_id, "through {ip}");
    }

    // Two tasks: flows from many client ports are all answered, and spread over both.
    cluster.api().put("/v2/apps/udp-echo", &json!({"instances": 2})).expect_status(200);
    let running = cluster.wait_for_running("/udp-echo", 2, secs(60));
    wait_for_udp_backends(&cluster, &agents, 2);
    // A datagram to a task that runs but has not bound its socket yet is simply lost (UDP
    // has no refusal to retry on, and the app has no health check): wait until each task
    // answers on its own host port before asking through the balancers.
    for task in &running {
        let (id, host) = (str_field(task, "id"), str_field(task, "host"));
        let port = task["ports"][0].as_u64().expect("a host port");
        let client = udp_client();
        wait_until(&format!("{id} to answer on {host}:{port}"), secs(30), || {
            udp_ask_at(&client, &format!("{host}:{port}"), "ready").ok_or_else(|| "no answer".to_string())
        });
    }
    let clients: Vec<std::net::UdpSocket> = (0..8).map(|_| udp_client()).collect();
    let mut answered_by = std::collections::BTreeSet::new();
    for (i, client) in clients.iter().enumerate() {
        for ip in &ips {
            let word = format!("flow{i}");
            let task = udp_ask(client, ip, &word).unwrap_or_else(|| panic!("client {i} through {ip}: no answer"));
            answered_by.insert(task);
        }
    }
    assert_eq!(answered_by.len(), 2, "both tasks answer: {answered_by:?}");

    // Back to one: the flows that went to the drained task move to the one left.
    cluster.api().put("/v2/apps/udp-echo", &json!({"instances": 1})).expect_status(200);
    wait_for_udp_backends(&cluster, &agents, 1);
    let left = cluster.wait_for_running("/udp-echo", 1, secs(60));
    let left_id = str_field(&left[0], "id").to_string();
    for (i, client) in clients.iter().enumerate() {
        for ip in &ips {
            let task = udp_ask(client, ip, "again").unwrap_or_else(|| panic!("client {i} through {ip}: no answer"));
            assert_eq!(task, left_id, "client {i} through {ip}");
        }
    }

    // Deleted: the port answers nothing, and no socket holds it on any agent.
    cluster.api().delete("/v2/apps/udp-echo").expect_status(200);
    wait_until("the UDP port to leave every balancer", secs(30), || {
        for agent in agents {
            let view = lb(&cluster, agent);
            if view["frontends"].as_array().is_some_and(|f| f.iter().any(|f| f["port"] == json!(UDP_SERVICE_PORT))) {
                return Err(format!("{agent}: {view}"));
            }
        }
        Ok(())
    });
    for (agent, ip) in agents.iter().zip(&ips) {
        assert_eq!(udp_ask(&clients[0], ip, "gone"), None, "through {agent}");
        let netns = &cluster.node(agent).host.netns;
        let sockets = wait_until(&format!("{agent} to free {UDP_SERVICE_PORT}/udp"), secs(5), || {
            let listing = sh("ip", &["netns", "exec", netns, "ss", "-Hanu", &format!("sport = :{UDP_SERVICE_PORT}")]);
            if listing.trim().is_empty() {
                Ok(listing)
            } else {
                Err(listing)
            }
        });
        assert!(sockets.is_empty());
    }
}

/// A command app serving `NAME` at `/` (Python's HTTP/1.0 server) for `HAPROXY_0_VHOST` = `vhost`.
fn vhost_app(name: &str, vhost: &str) -> Value {
    json!({"id": format!("/{name}"), "cpus": 0.1, "mem": 32, "portDefinitions": [{"port": 0}],
        "labels": {"HAPROXY_0_VHOST": vhost},
        "cmd": format!("mkdir -p www && echo {name} > www/index.html && cd www && exec python3 -m http.server $PORT0")})
}

/// One request on an open connection to the HTTP frontend: the status line and the body.
fn vhost_request(stream: &mut TcpStream, host: &str) -> Result<(String, String), String> {
    stream.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).map_err(|e| format!("reading the answer for {host}: {e}"))?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("no length: {head}"))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((head.lines().next().unwrap_or_default().to_string(), String::from_utf8_lossy(&body).trim().to_string()))
}

#[test]
fn the_http_frontend_routes_each_request_of_a_keep_alive_connection_to_its_vhost_s_app() {
    let mut cluster = Cluster::new("lb-vhost");
    cluster.start_master(&[]);
    cluster.start_agent("agent-1", &["--lb-http-port", "80"]);
    cluster.wait_for_agents(1);
    cluster.deploy(&vhost_app("site-a", "a.example"));
    cluster.deploy(&vhost_app("site-b", "b.example,www.b.example"));
    let addr: SocketAddr = format!("{}:80", cluster.node("agent-1").host.ip).parse().unwrap();
    let connect = || {
        let stream = TcpStream::connect_timeout(&addr, secs(5)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(secs(10))).map_err(|e| e.to_string())?;
        Ok::<_, String>(stream)
    };
    wait_until("both vhosts to answer on port 80", secs(60), || {
        for (host, name) in [("a.example", "site-a"), ("b.example", "site-b")] {
            let answer = vhost_request(&mut connect()?, host)?;
            if answer.1 != name {
                return Err(format!("{host}: {answer:?}"));
            }
        }
        Ok(())
    });
    // One connection, hosts in turn: every request reaches the app its host names.
    let mut stream = connect().expect("a connection to the HTTP frontend");
    for (host, name) in [("a.example", "site-a"), ("WWW.B.example:80", "site-b"), ("a.example", "site-a")] {
        let answer = vhost_request(&mut stream, host).expect("an answer on the kept connection");
        assert_eq!(answer, ("HTTP/1.1 200 OK".to_string(), name.to_string()), "Host: {host}");
    }
    let unknown = vhost_request(&mut stream, "nobody.example").expect("an answer");
    assert_eq!(unknown, ("HTTP/1.1 503 Service Unavailable".to_string(), "no app serves nobody.example".to_string()));
}

/// A command task on `$PORT0` over TCP and UDP both: a connection gets `tcp TASK_ID`, a
/// datagram `TASK_ID DATA`.
const TCP_AND_UDP: &str = r#"exec python3 -c '
import os, socket, threading
port, me = int(os.environ["PORT0"]), os.environ["MESOS_TASK_ID"].encode()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(me + b" " + data, peer)
threading.Thread(target=udp, daemon=True).start()
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", port))
t.listen(16)
while True:
    c, _ = t.accept()
    c.sendall(b"tcp " + me)
    c.close()
'"#;

#[test]
fn a_udp_tcp_service_port_takes_a_connection_and_a_datagram_to_the_task() {
    let cluster = Cluster::start("lb-udp-tcp", 1);
    let ip = cluster.node("agent-1").host.ip.to_string();
    let app = json!({"id": "/both", "cmd": TCP_AND_UDP, "cpus": 0.1, "mem": 32,
        "portDefinitions": [{"port": UDP_SERVICE_PORT, "protocol": "udp,tcp", "name": "both"}]});
    let task = cluster.deploy(&app).remove(0);
    let id = str_field(&task, "id").to_string();
    wait_for_udp_backends(&cluster, &["agent-1"], 1);
    let over_tcp = wait_until(&format!("a connection to {ip}:{UDP_SERVICE_PORT}"), secs(20), || {
        let addr: SocketAddr = format!("{ip}:{UDP_SERVICE_PORT}").parse().map_err(|e| format!("{e}"))?;
        let mut stream = TcpStream::connect_timeout(&addr, secs(5)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(secs(5))).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        if answer.is_empty() {
            Err("no answer".to_string())
        } else {
            Ok(answer)
        }
    });
    assert_eq!(over_tcp, format!("tcp {id}"));
    let client = udp_client();
    let over_udp = wait_until("an echo over UDP", secs(20), || {
        udp_ask(&client, &ip, "hello").ok_or_else(|| "no answer".to_string())
    });
    assert_eq!(over_udp, id);
    let view = lb(&cluster, "agent-1");
    let protocols: Vec<&Value> = view["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["port"] == json!(UDP_SERVICE_PORT))
        .map(|f| &f["protocol"])
        .collect();
    assert_eq!(protocols, [&json!("tcp"), &json!("udp")], "{view}");
}
