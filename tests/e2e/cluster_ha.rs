//! High availability on etcd: a 3-member etcd cluster (Debian's `etcd-server`), three
//! masters and an agent, each in its own namespace on the test network. One master leads;
//! the others proxy to it; killing, pausing or abdicating the leader hands the lead on
//! within the lease, with every acknowledged write kept and no task restarted.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
const LEASE_SECS: u64 = 3;

struct Ha {
    cluster: Cluster,
    etcd: plinth_testkit::Etcd,
    /// Flags every master gets besides the HA ones.
    extra: Vec<String>,
    /// With `--cluster-ca`: the CA the first master made and every other one shares.
    ca: Option<std::path::PathBuf>,
}

impl Ha {
    fn start(test: &str, masters: &[&str]) -> Ha {
        Ha::start_with(test, masters, Vec::new())
    }

    fn start_with(test: &str, masters: &[&str], extra: Vec<String>) -> Ha {
        let mut cluster = Cluster::new(test);
        let members: Vec<plinth_testkit::etcd::Member> = (1..=3)
            .map(|n| {
                let host = cluster.add_host(&format!("etcd-{n}"));
                plinth_testkit::etcd::Member { name: format!("e{n}"), netns: host.netns, ip: host.ip.to_string() }
            })
            .collect();
        let etcd = plinth_testkit::Etcd::cluster(members).expect("start a 3-member etcd cluster");
        let mut ha = Ha { cluster, etcd, extra, ca: None };
        for name in masters {
            ha.start_master(name);
        }
        ha
    }

    fn start_master(&mut self, name: &str) {
        let data_dir = self.cluster.dir().join(name);
        let endpoints = self.etcd.endpoints().join(",");
        let cluster_ca = self.extra.iter().any(|f| f == "--cluster-ca");
        if let Some(ca) = self.ca.as_ref().filter(|_| cluster_ca) {
            // One cluster CA for all masters: each issues its own certificate from it.
            let ca_dir = data_dir.join("ca");
            std::fs::create_dir_all(&ca_dir).expect("the CA dir");
            for file in ["ca.pem", "ca.key"] {
                std::fs::copy(ca.with_file_name(file), ca_dir.join(file)).expect("copy the cluster CA");
            }
        }
        let extra = self.extra.clone();
        self.cluster.start_node(name, |host| {
            [
                "master",
                "--listen",
                "0.0.0.0:8080",
                "--registry-listen",
                "0.0.0.0:5000",
                // An agent that was talking to a paused leader moves on within 3 s.
                "--agent-timeout-secs",
                "10",
                "--leader-lease-secs",
                &LEASE_SECS.to_string(),
                "--etcd",
                &endpoints,
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(["--data-dir".into(), data_dir.display().to_string(), "--hostname".into(), host.ip.to_string()])
            .chain(extra)
            .collect()
        });
        if cluster_ca && self.ca.is_none() {
            let ca = data_dir.join("ca").join("ca.pem");
            wait_until(&format!("{name} to make the cluster CA"), secs(30), || {
                self.cluster.check_nodes_alive()?;
                if std::fs::metadata(&ca).is_ok_and(|m| m.len() > 0) {
                    Ok(())
                } else {
                    Err(format!("no {}", ca.display()))
                }
            });
            self.ca = Some(ca);
        }
        let api = self.api(name);
        wait_until(&format!("{name} to answer /ping"), secs(60), || {
            self.cluster.check_nodes_alive()?;
            api.try_get("/ping").map(drop)
        });
    }

    fn address(&self, name: &str) -> String {
        format!("{}:{MASTER_PORT}", self.cluster.node(name).host.ip)
    }

    fn scheme(&self) -> &'static str {
        if self.ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}://{}", self.scheme(), self.address(name))
    }

    fn urls(&self) -> String {
        MASTERS.iter().map(|m| self.url(m)).collect::<Vec<_>>().join(",")
    }

    /// A master's API, over HTTPS trusting the cluster CA when there is one.
    fn api(&self, name: &str) -> Http {
        match &self.ca {
            Some(ca) => Http::with_ca(self.url(name), ca),
            None => self.cluster.api_of(name),
        }
    }

    /// The master every one of `asked` names as leader, once they agree on one of them.
    fn agreed_leader(&self, asked: &[&str], timeout: Duration) -> String {
        wait_until("the masters to agree on one leader", timeout, || {
            let mut seen = BTreeSet::new();
            for name in asked {
                let reply = self.api(name).try_get("/v2/leader")?;
                if reply.status != 200 {
                    return Err(format!("{name}: {} {}", reply.status, reply.text));
                }
                seen.insert(str_field(&reply.json, "leader").to_string());
            }
            match seen.into_iter().collect::<Vec<_>>().as_slice() {
                [one] => asked
                    .iter()
                    .find(|m| self.address(m) == *one)
                    .map(|m| m.to_string())
                    .ok_or_else(|| format!("{one} is none of {asked:?}")),
                many => Err(format!("they name {many:?}")),
            }
        })
    }

    fn tasks_via(&self, master: &str, app: &str) -> Vec<Value> {
        let reply = self.api(master).get(&format!("/v2/apps{app}/tasks")).expect_status(200);
        reply.json["tasks"].as_array().cloned().unwrap_or_default()
    }

    fn running_via(&self, master: &str, app: &str, count: usize, timeout: Duration) -> Vec<Value> {
        wait_until(&format!("{count} running tasks of {app} via {master}"), timeout, || {
            let tasks: Vec<Value> =
                self.tasks_via(master, app).into_iter().filter(|t| t["state"] == "TASK_RUNNING").collect();
            if tasks.len() == count {
                Ok(tasks)
            } else {
                Err(task_summary(&tasks))
            }
        })
    }
}

impl Ha {
    /// `count` agents following every master, registered with the leader.
    fn start_agents(&mut self, count: usize) {
        for n in 1..=count {
            let masters = self.urls();
            self.cluster.start_agent_of(&format!("agent-{n}"), masters, |_| Vec::new());
        }
        let leader = self.agreed_leader(&MASTERS, secs(30));
        wait_until(&format!("{count} agents to register"), secs(60), || {
            self.cluster.check_nodes_alive()?;
            let reply = self.api(&leader).try_get("/master/slaves")?;
            let active =
                reply.json["slaves"].as_array().map_or(0, |s| s.iter().filter(|a| a["active"] == true).count());
            if active == count {
                Ok(())
            } else {
                Err(reply.text)
            }
        });
    }

    /// Task id → pids on every agent of the test (`agent-1`, `agent-2`, ...).
    fn agent_task_pids(&self, agents: usize) -> BTreeMap<String, BTreeSet<i32>> {
        (1..=agents).flat_map(|n| self.cluster.task_pids(&format!("agent-{n}"))).collect()
    }

    /// Cuts the master off from everything on the test network (etcd, the other masters,
    /// the agents) but the test process: iptables inside its own namespace only.
    fn partition(&self, name: &str) {
        let netns = self.cluster.node(name).host.netns.clone();
        let gateway = self.cluster.gateway();
        let [a, b, c, _] = gateway.octets();
        let subnet = format!("{a}.{b}.{c}.0/24");
        for (chain, side) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            for (peer, verdict) in [(gateway.to_string(), "ACCEPT"), (subnet.clone(), "DROP")] {
                sh("ip", &["netns", "exec", &netns, "iptables", "-A", chain, side, &peer, "-j", verdict]);
            }
        }
    }

    fn heal(&self, name: &str) {
        let netns = self.cluster.node(name).host.netns.clone();
        for chain in ["INPUT", "OUTPUT"] {
            sh("ip", &["netns", "exec", &netns, "iptables", "-F", chain]);
        }
    }
}

/// What must hold after a history of writes and faults: every acknowledged version is
/// there; each app's scale is its last acknowledged one or one sent after it whose answer
/// did not say (never an older one); once settled each app runs exactly its instances and
/// the agents run exactly the tasks the leader knows (no duplicate, none left over).
fn check_history(ha: &Ha, leader: &str, apps: &[&str], history: &[Write], summary: &str, agents: usize) {
    let api = ha.cluster.api_of(leader);
    for app in apps {
        let versions = api.get_json(&format!("/v2/apps{app}/versions"));
        let listed: BTreeSet<&str> =
            versions["versions"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let writes: Vec<&Write> = history.iter().filter(|w| w.app == *app).collect();
        for write in writes.iter().filter(|w| w.version.is_some()) {
            let version = write.version.as_deref().expect("acknowledged");
            assert!(listed.contains(version), "acknowledged {write:?} is missing from {versions}");
        }
        let last = writes.iter().rposition(|w| w.version.is_some()).expect("an acknowledged write per app");
        let allowed: BTreeSet<u64> = writes[last..]
            .iter()
            .enumerate()
            .filter(|(n, w)| *n == 0 || w.version.is_none())
            .map(|(_, w)| w.instances)
            .collect();
        let current = api.get_json(&format!("/v2/apps{app}"))["app"]["instances"].as_u64().expect("instances");
        assert!(allowed.contains(&current), "{app} has {current} instances, not one of {allowed:?}:\n{summary}");
    }

    // Once settled: each app runs exactly its instances, and the agents run exactly the
    // tasks the leader knows (no duplicate, none left over).
    wait_until("the deployments to settle", secs(45), || {
        let deployments = api.try_get("/v2/deployments")?.json;
        if deployments.as_array().is_some_and(Vec::is_empty) {
            Ok(())
        } else {
            Err(deployments.to_string())
        }
    });
    holds_for("every app runs its instances, and only the leader's tasks run", secs(4), || {
        let mut known = BTreeSet::new();
        for app in apps {
            let instances = api.try_get(&format!("/v2/apps{app}"))?.json["app"]["instances"].as_u64().unwrap_or(0);
            let tasks = ha.tasks_via(leader, app);
            let running: Vec<Value> = tasks.iter().filter(|t| t["state"] == "TASK_RUNNING").cloned().collect();
            if running.len() as u64 != instances || tasks.len() != running.len() {
                return Err(format!("{app}: {instances} instances, tasks {}", task_summary(&tasks)));
            }
            known.extend(ids(&running));
        }
        let on_agents: BTreeSet<String> = ha.agent_task_pids(agents).into_keys().collect();
        if on_agents == known {
            Ok(())
        } else {
            Err(format!("agents run {on_agents:?}, the leader knows {known:?}"))
        }
    });
}

fn others(leader: &str) -> Vec<&'static str> {
    MASTERS.iter().copied().filter(|m| *m != leader).collect()
}

fn signal(node: &Node, signal: i32) {
    let pid = node.pid().expect("the node runs");
    // SAFETY: kill(2) on the pid of a master this test started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal the master");
}

#[test]
fn three_masters_on_etcd_fail_over_without_losing_a_write_or_restarting_a_task() {
    let mut ha = Ha::start("ha", &MASTERS);
    let leader = ha.agreed_leader(&MASTERS, secs(30));
    let follower = others(&leader)[0];
    let info = ha.cluster.api_of(follower).get_json("/v2/info");
    assert_eq!(info["elected"], true, "a follower's /v2/info is the leader's: {info}");
    assert_eq!(info["leader"], ha.address(&leader).as_str(), "{info}");
    let masters = ha.cluster.api_of(follower).get_json("/v1/masters");
    let listed = masters["masters"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 3, "{masters}");
    assert_eq!(listed.iter().filter(|m| m["leader"] == true).count(), 1, "{masters}");
    assert_eq!(masters["leader"], ha.address(&leader).as_str(), "{masters}");
    let members = masters["etcd"]["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{masters}");
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1, "{masters}");

    let masters = ha.urls();
    ha.cluster.start_agent_of("agent-1", masters, |_| Vec::new());
    wait_until("the agent to register", secs(60), || {
        let reply = ha.cluster.api_of(follower).try_get("/master/slaves")?;
        let active = reply.json["slaves"].as_array().map_or(0, |s| s.iter().filter(|a| a["active"] == true).count());
        if active == 1 {
            Ok(())
        } else {
            Err(reply.text)
        }
    });

    // A write sent to a follower is proxied to the leader.
    ha.cluster.api_of(follower).post("/v2/apps", &cmd_app("/ha/sleeper", "sleep 1000", 2)).expect_status(201);
    let before = ha.running_via(&leader, "/ha/sleeper", 2, secs(60));
    plinth_oci::tls::install_provider();
    let proxied = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/v2/apps", ha.address(follower)))
        .send()
        .unwrap();
    let header = |name: &str| proxied.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(header("x-marathon-leader"), Some(format!("http://{}", ha.address(&leader))));
    assert!(header("x-marathon-via").is_some_and(|via| via.contains(&ha.address(follower))), "{:?}", proxied.headers());
    let pids_before = ha.cluster.task_pids("agent-1");
    assert_eq!(pids_before.len(), 2, "{pids_before:?}");

    // kill -9 of the leader: another master leads within the lease (plus its load).
    ha.cluster.kill9(&leader);
    let killed_at = Instant::now();
    let survivors = others(&leader);
    let second = ha.agreed_leader(&survivors, secs(20));
    let failover = killed_at.elapsed();
    assert_ne!(second, leader);
    assert!(failover < secs(LEASE_SECS + 7), "the new leader took {failover:?}");
    eprintln!("failover after kill -9: {failover:?}");
    let metrics = ha.cluster.api_of(&second).get("/metrics/prometheus").expect_status(200).text;
    assert!(metrics.contains("plinth_leader_changes_total 1"), "the new leader counts its win: {metrics}");

    // The tasks kept running: same ids, same processes.
    let after = ha.running_via(&second, "/ha/sleeper", 2, secs(30));
    assert_eq!(ids(&after), ids(&before), "the same tasks: {}", task_summary(&after));
    holds_for("the task processes stay the same", secs(4), || {
        let pids = ha.cluster.task_pids("agent-1");
        if pids == pids_before {
            Ok(())
        } else {
            Err(format!("{pids:?} (before {pids_before:?})"))
        }
    });

    // A scale through the new leader works.
    ha.cluster.api_of(&second).put("/v2/apps/ha/sleeper", &json!({"instances": 3})).expect_status(200);
    let scaled = ha.running_via(&second, "/ha/sleeper", 3, secs(60));
    assert!(ids(&before).is_subset(&ids(&scaled)), "the two tasks stay: {}", task_summary(&scaled));

    // The CLI given every master finds one that answers (the killed one is listed first).
    let list = format!("http://{},http://{}", ha.address(&leader), ha.address(&second));
    let output = plinth(&["--master", &list, "app", "list"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("/ha/sleeper"), "{}", stdout(&output));

    // A paused leader is deposed and, resumed, cannot write: its agent seemed silent for
    // longer than the agent timeout, but nothing it would do about it reaches etcd.
    let third_candidates: Vec<&str> = survivors.iter().copied().filter(|m| *m != second).collect();
    signal(ha.cluster.node(&second), libc::SIGSTOP);
    let third = ha.agreed_leader(&third_candidates, secs(20));
    signal(ha.cluster.node(&second), libc::SIGCONT);
    let everyone: Vec<&str> = survivors.clone();
    assert_eq!(ha.agreed_leader(&everyone, secs(20)), third, "the resumed master follows");
    holds_for("the three tasks stay running under the third leader", secs(5), || {
        let running: Vec<Value> =
            ha.tasks_via(&third, "/ha/sleeper").into_iter().filter(|t| t["state"] == "TASK_RUNNING").collect();
        if ids(&running) == ids(&scaled) {
            Ok(())
        } else {
            Err(task_summary(&running))
        }
    });
    let log = read(&ha.cluster.node(&second).log);
    assert!(log.contains("no longer the leader"), "the resumed master says it stepped down");

    // DELETE /v2/leader hands the lead on.
    let reply = ha.cluster.api_of(&third).delete("/v2/leader").expect_status(200);
    assert_eq!(reply.json["message"], "Leadership abdicated");
    let fourth = wait_until("another master to lead after the abdication", secs(20), || {
        let now = ha.agreed_leader(&everyone, secs(20));
        if now != third {
            Ok(now)
        } else {
            Err(format!("{third} still leads"))
        }
    });

    // The killed master comes back as a follower.
    ha.cluster.respawn(&leader);
    assert_eq!(ha.agreed_leader(&MASTERS, secs(30)), fourth);
    assert_eq!(ha.running_via(&leader, "/ha/sleeper", 3, secs(30)).len(), 3, "served through the proxy");
    let app = ha.cluster.api_of(&leader).get_json("/v2/apps/ha/sleeper");
    assert_eq!(app["app"]["instances"], 3, "the acknowledged scale is there: {app}");
}

#[test]
fn without_an_etcd_quorum_writes_get_503_and_the_masters_recover_by_themselves() {
    let mut ha = Ha::start("ha-quorum", &MASTERS[..2]);
    let leader = ha.agreed_leader(&MASTERS[..2], secs(30));
    let api = ha.cluster.api_of(&leader);
    api.post("/v2/apps", &cmd_app("/ha/kept", "sleep 1000", 0)).expect_status(201);

    ha.etcd.stop(1);
    ha.etcd.stop(2);
    // Within the lease the leader stops; every request then gets a clear 503, never a hang.
    let started = Instant::now();
    let refused = wait_until("a write to be refused without a quorum", secs(30), || {
        let body = json!({"instances": 0, "cmd": "sleep 999"}).to_string().into_bytes();
        let reply = api.try_request("PUT", "/v2/apps/ha/kept", Some(body))?;
        assert_ne!(reply.status / 100, 2, "a write acknowledged without an etcd quorum: {}", reply.text);
        if reply.status == 503 {
            Ok(reply)
        } else {
            Err(format!("{} {}", reply.status, reply.text))
        }
    });
    assert!(started.elapsed() < secs(20), "took {:?}", started.elapsed());
    let message = str_field(&refused.json, "message");
    assert!(message.contains("leader") || message.contains("etcd"), "{message}");

    ha.etcd.restart(1).expect("restart an etcd member");
    ha.etcd.restart(2).expect("restart an etcd member");
    let back = ha.agreed_leader(&MASTERS[..2], secs(60));
    let app = ha.cluster.api_of(&back).get_json("/v2/apps/ha/kept");
    assert_eq!(app["app"]["cmd"], "sleep 1000", "nothing unacknowledged was written: {app}");
}

#[test]
fn a_master_with_an_unreachable_or_foreign_etcd_says_so_and_exits() {
    let mut cluster = Cluster::new("ha-bad");
    let dir = cluster.dir().display().to_string();
    // Nothing listens on that port inside the master's own namespace.
    cluster.start_node("m1", |_| {
        ["master", "--etcd", "http://127.0.0.1:2", "--data-dir", &dir, "--registry-listen", "127.0.0.1:5000"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let (status, log) = cluster.wait_exit("m1", secs(30));
    assert!(!status.success());
    assert!(log.contains("cannot reach etcd at http://127.0.0.1:2"), "{log}");

    // Refused before anything is reached.
    let output = plinth(&["master", "--etcd", "127.0.0.1:2379"], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("a URL like http://"), "{}", stderr(&output));
    let output = plinth(&["master", "--etcd", "http://127.0.0.1:2", "--etcd-prefix", "plinth"], &[]);
    assert!(stderr(&output).contains("starts with /"), "{}", stderr(&output));
}

/// A deployment that waits for its tasks' health (a COMMAND check that passes once the
/// test drops a marker) when the leader is killed: the new leader finishes it.
#[test]
fn a_leader_killed_during_a_deployment_hands_it_on_with_its_tasks_and_every_acknowledged_write() {
    let mut ha = Ha::start("ha-deploy", &MASTERS);
    ha.start_agents(2);
    let leader = ha.agreed_leader(&MASTERS, secs(30));
    let markers = ha.cluster.dir().join("markers");
    std::fs::create_dir_all(&markers).expect("marker dir");
    let ready = markers.join("ready");
    let app = json!({
        "id": "/ha/web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 6,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": format!("test -e {}", ready.display())},
                          "gracePeriodSeconds": 300, "intervalSeconds": 1, "timeoutSeconds": 2,
                          "maxConsecutiveFailures": 3}]
    });
    ha.cluster.api_of(others(&leader)[0]).post("/v2/apps", &app).expect_status(201);
    // Six tasks run on both agents, none healthy yet: the deployment is in progress.
    let before = ha.running_via(&leader, "/ha/web", 6, secs(60));
    let hosts: BTreeSet<&str> = before.iter().map(|t| str_field(t, "host")).collect();
    assert_eq!(hosts.len(), 2, "the tasks spread over both agents: {}", task_summary(&before));
    let pids_before = wait_until("the six task processes", secs(30), || {
        let pids = ha.agent_task_pids(2);
        if pids.len() == 6 {
            Ok(pids)
        } else {
            Err(format!("{pids:?}"))
        }
    });
    assert_eq!(pids_before.keys().cloned().collect::<BTreeSet<_>>(), ids(&before));

    // Writes acknowledged through every master, the last one just before the kill.
    let mut acknowledged = Vec::new();
    for (n, master) in MASTERS.iter().enumerate() {
        let id = format!("/ha/acknowledged-{n}");
        ha.cluster.api_of(master).post("/v2/apps", &cmd_app(&id, "sleep 1000", 0)).expect_status(201);
        acknowledged.push(id);
    }
    let deployments = ha.cluster.api_of(&leader).get_json("/v2/deployments");
    let deploying = |list: &Value| {
        list.as_array().is_some_and(|l| l.iter().any(|d| d["affectedApps"].to_string().contains("/ha/web")))
    };
    assert!(deploying(&deployments), "the deployment is in progress at the kill: {deployments}");

    ha.cluster.kill9(&leader);
    let killed_at = Instant::now();
    let survivors = others(&leader);
    let second = ha.agreed_leader(&survivors, secs(10));
    assert!(killed_at.elapsed() < secs(10), "another master leads within 10 s: {:?}", killed_at.elapsed());
    eprintln!("failover during a deployment: {:?}", killed_at.elapsed());

    let api = ha.cluster.api_of(&second);
    for id in &acknowledged {
        let app = api.get(&format!("/v2/apps{id}")).expect_status(200).json;
        assert_eq!(app["app"]["id"], id.as_str(), "{app}");
    }
    let deployments = api.get_json("/v2/deployments");
    assert!(deploying(&deployments), "the new leader has the deployment: {deployments}");
    let after = ha.running_via(&second, "/ha/web", 6, secs(30));
    assert_eq!(ids(&after), ids(&before), "the same tasks: {}", task_summary(&after));
    assert_eq!(ha.agent_task_pids(2), pids_before, "the same task processes");

    // The tasks turn healthy: the deployment completes under the new leader, with the
    // same six tasks and never a seventh.
    std::fs::write(&ready, "").expect("drop the ready marker");
    wait_until("the deployment to complete under the new leader", secs(45), || {
        let app = api.try_get("/v2/apps/ha/web")?.json;
        let deployments = api.try_get("/v2/deployments")?.json;
        if app["app"]["tasksHealthy"] == 6 && deployments.as_array().is_some_and(Vec::is_empty) {
            Ok(())
        } else {
            Err(format!("tasksHealthy {}, deployments {deployments}", app["app"]["tasksHealthy"]))
        }
    });
    holds_for("six tasks, the same ones, and no other task process", secs(4), || {
        let tasks = ha.tasks_via(&second, "/ha/web");
        let running: Vec<Value> = tasks.iter().filter(|t| t["state"] == "TASK_RUNNING").cloned().collect();
        let pids = ha.agent_task_pids(2);
        if tasks.len() == 6 && ids(&running) == ids(&before) && pids == pids_before {
            Ok(())
        } else {
            Err(format!("{} (processes {pids:?})", task_summary(&tasks)))
        }
    });

    // The killed master comes back as a follower.
    ha.cluster.respawn(&leader);
    assert_eq!(ha.agreed_leader(&MASTERS, secs(30)), second, "the old leader follows");
    let app = ha.cluster.api_of(&leader).get_json("/v2/apps/ha/web");
    assert_eq!(app["app"]["tasksHealthy"], 6, "served through the proxy: {app}");
}

/// One PUT of the history: which master it went to, when, and what came back.
#[derive(Debug, Clone)]
struct Write {
    master: &'static str,
    app: &'static str,
    instances: u64,
    answered_at: Instant,
    /// The version a 2xx named; `None` for a refusal or no answer (not acknowledged).
    version: Option<String>,
    /// Whether the master answered as leader (a proxied answer names the leader).
    by_itself: bool,
    outcome: String,
}

/// One line per write, timed from `since`, for failure messages.
fn summarize(history: &[Write], since: Instant) -> String {
    let lines: Vec<String> = history
        .iter()
        .map(|w| {
            let at = w.answered_at.checked_duration_since(since).map_or("before".into(), |d| format!("+{d:.1?}"));
            format!("{at} {} {} → {}", w.master, w.app, w.outcome)
        })
        .collect();
    lines.join("\n")
}

/// Scales `apps` through masters picked at random (a fixed seed) until `stop` (at most `max` writes),
/// recording each answer.
fn write_history(
    addresses: Vec<(&'static str, String)>,
    apps: &'static [&'static str],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: usize,
) -> std::thread::JoinHandle<Vec<Write>> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(secs(4))
            .connect_timeout(secs(1))
            .build()
            .expect("HTTP client");
        let mut history = Vec::new();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in 0..max {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            // xorshift64: a repeatable pick of the master.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pick = usize::try_from(seed % addresses.len() as u64).expect("an index");
            let (master, address) = &addresses[pick];
            let app = apps[n % apps.len()];
            let instances = u64::try_from(n % 3 + 1).expect("small");
            let url = format!("http://{address}/v2/apps{app}?force=true");
            let answer = client.put(url).json(&json!({"instances": instances})).send();
            let (version, by_itself, outcome) = match answer {
                Ok(reply) => {
                    let status = reply.status().as_u16();
                    let by_itself = !reply.headers().contains_key("x-marathon-leader");
                    let body: Value = reply.json().unwrap_or(Value::Null);
                    let version = (status / 100 == 2).then(|| body["version"].as_str().map(str::to_string)).flatten();
                    (version, by_itself, format!("{status} {body}"))
                }
                Err(e) => (None, false, format!("no answer: {e}")),
            };
            let answered_at = Instant::now();
            history.push(Write { master, app, instances, answered_at, version, by_itself, outcome });
            std::thread::sleep(Duration::from_millis(150));
        }
        history
    })
}

/// The leader is cut off from etcd, the other masters and the agents while a client
/// writes through every master: it stops leading within the lease, acknowledges nothing
/// after that, another master leads, and once the link is back there is one leader,
/// every acknowledged write is there and no app runs more tasks than its instances.
#[test]
fn a_partitioned_leader_steps_down_and_no_acknowledged_write_is_lost() {
    const APPS: &[&str] = &["/ha/part-a", "/ha/part-b"];
    let mut ha = Ha::start("ha-partition", &MASTERS);
    ha.start_agents(2);
    let leader = ha.agreed_leader(&MASTERS, secs(30));
    for app in APPS {
        ha.cluster.api_of(&leader).post("/v2/apps", &cmd_app(app, "sleep 1000", 1)).expect_status(201);
        ha.running_via(&leader, app, 1, secs(60));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addresses = MASTERS.iter().map(|m| (*m, ha.address(m))).collect();
    let writer = write_history(addresses, APPS, stop.clone(), 120);

    std::thread::sleep(secs(3));
    ha.partition(&leader);
    let partitioned_at = Instant::now();
    let log = ha.cluster.node(&leader).log.clone();
    let before = read(&log).matches("no longer the leader").count();
    wait_until("the partitioned leader to step down", secs(LEASE_SECS + 5), || {
        if read(&log).matches("no longer the leader").count() > before {
            Ok(())
        } else {
            Err("it still leads".into())
        }
    });
    let stepped_down = partitioned_at.elapsed();
    eprintln!("the partitioned leader stepped down after {stepped_down:?}");
    assert!(stepped_down < secs(LEASE_SECS + 1), "it stopped acting within the lease: {stepped_down:?}");
    let survivors = others(&leader);
    let second = ha.agreed_leader(&survivors, secs(20));
    eprintln!("another leader after {:?}", partitioned_at.elapsed());
    std::thread::sleep(secs(3));

    ha.heal(&leader);
    let healed_at = Instant::now();
    assert_eq!(ha.agreed_leader(&MASTERS, secs(20)), second, "exactly one leader after the heal");
    std::thread::sleep(secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let history = writer.join().expect("the writer thread");
    let summary = summarize(&history, partitioned_at);
    let acknowledged: Vec<&Write> = history.iter().filter(|w| w.version.is_some()).collect();
    assert!(acknowledged.len() >= 10, "enough writes went through:\n{summary}");
    assert!(
        acknowledged.iter().any(|w| w.answered_at > partitioned_at && w.answered_at < healed_at),
        "writes were acknowledged during the partition:\n{summary}"
    );
    // Cut off, the old leader acknowledges nothing after its lease: neither as leader nor
    // through a proxy until the heal; afterwards only as a follower.
    let lease_end = partitioned_at + secs(LEASE_SECS);
    for write in acknowledged.iter().filter(|w| w.master == leader && w.answered_at > lease_end) {
        assert!(
            !write.by_itself && write.answered_at > healed_at,
            "the partitioned leader acknowledged a write after its lease: {write:?}\n{summary}"
        );
    }

    check_history(&ha, &second, APPS, &history, &summary, 2);
}

/// `api_post_event`s of `app` a stream has received.
fn posts_of(stream: &EventStream, app: &str) -> usize {
    stream
        .snapshot()
        .iter()
        .filter(|(name, data)| name == "api_post_event" && data["appDefinition"]["id"] == app)
        .count()
}

fn wait_for_post(stream: &EventStream, which: &str, app: &str) {
    wait_until(&format!("the api_post_event of {app} on {which}'s stream"), secs(15), || {
        if posts_of(stream, app) > 0 {
            Ok(())
        } else {
            Err(format!("{:?}", stream.names()))
        }
    });
}

/// Clients on the followers' `/v2/events` keep their connection when the leader is
/// killed: one follower becomes the leader and serves its own events, the other attaches
/// to it behind the client's back; when that leader abdicates the roles swap again. Each
/// event arrives once, and so does the greeting.
#[test]
fn event_streams_on_followers_survive_a_kill_and_an_abdication() {
    let mut ha = Ha::start("ha-events", &MASTERS);
    let leader = ha.agreed_leader(&MASTERS, secs(30));
    let followers = others(&leader);
    let streams: Vec<(&str, EventStream)> =
        followers.iter().map(|f| (*f, EventStream::open(&format!("http://{}/v2/events", ha.address(f))))).collect();
    ha.cluster.api_of(&leader).post("/v2/apps", &cmd_app("/ha/before", "sleep 1000", 0)).expect_status(201);
    for (name, stream) in &streams {
        wait_for_post(stream, name, "/ha/before");
    }

    ha.cluster.kill9(&leader);
    let second = ha.agreed_leader(&followers, secs(20));
    // Both followers already name the new leader; their streams re-attach at once.
    std::thread::sleep(secs(1));
    let third = followers.iter().find(|f| **f != second).expect("two survivors");
    ha.cluster.api_of(third).post("/v2/apps", &cmd_app("/ha/after", "sleep 1000", 0)).expect_status(201);
    for (name, stream) in &streams {
        wait_for_post(stream, name, "/ha/after");
    }

    // The new leader abdicates: the stream it served from its own bus now relays the
    // other master's, and the one it relayed is served by that master itself.
    ha.api(&second).delete("/v2/leader").expect_status(200);
    let fourth = ha.agreed_leader(&followers, secs(20));
    assert_eq!(fourth, *third, "the other survivor leads");
    std::thread::sleep(secs(1));
    ha.api(&second).post("/v2/apps", &cmd_app("/ha/abdicated", "sleep 1000", 0)).expect_status(201);
    for (name, stream) in &streams {
        wait_for_post(stream, name, "/ha/abdicated");
    }

    // Nothing twice.
    std::thread::sleep(secs(1));
    for (name, stream) in &streams {
        let names = stream.names();
        assert_eq!(names.iter().filter(|n| *n == "event_stream_attached").count(), 1, "{name}: {names:?}");
        for app in ["/ha/before", "/ha/after", "/ha/abdicated"] {
            assert_eq!(posts_of(stream, app), 1, "{name}, {app}: {names:?}");
        }
    }
}

/// A Jepsen-style history, bounded: a client scales two apps through masters picked at
/// random while the test kills and partitions leaders and followers twenty times; afterwards
/// there is one leader, every acknowledged write is there and no app runs more tasks than
/// its instances.
#[test]
fn a_history_of_writes_through_random_masters_survives_kills_and_partitions() {
    const APPS: &[&str] = &["/ha/history-a", "/ha/history-b"];
    const FAULTS: [&str; 4] = ["kill the leader", "partition a follower", "partition the leader", "kill a follower"];
    let mut ha = Ha::start("ha-history", &MASTERS);
    ha.start_agents(1);
    let mut leader = ha.agreed_leader(&MASTERS, secs(30));
    for app in APPS {
        ha.cluster.api_of(&leader).post("/v2/apps", &cmd_app(app, "sleep 1000", 1)).expect_status(201);
        ha.running_via(&leader, app, 1, secs(60));
    }
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addresses = MASTERS.iter().map(|m| (*m, ha.address(m))).collect();
    let writer = write_history(addresses, APPS, stop.clone(), 500);
    for n in 0..20 {
        let fault = FAULTS[n % FAULTS.len()];
        let target = if fault.ends_with("leader") { leader.clone() } else { others(&leader)[n % 2].to_string() };
        eprintln!("fault {n} at {:?}: {fault} ({target})", started.elapsed());
        let kill = fault.starts_with("kill");
        if kill {
            ha.cluster.kill9(&target);
        } else {
            ha.partition(&target);
        }
        // The others agree on a leader among them: a new one when the leader was hit, the
        // same one when a follower was.
        let interim = ha.agreed_leader(&others(&target), secs(20));
        if target != leader {
            assert_eq!(interim, leader, "a fault of a follower leaves the leader in place");
        }
        std::thread::sleep(secs(1));
        if kill {
            ha.cluster.respawn(&target);
        } else {
            ha.heal(&target);
        }
        leader = ha.agreed_leader(&MASTERS, secs(30));
    }
    std::thread::sleep(secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let history = writer.join().expect("the writer thread");
    let summary = summarize(&history, started);
    let acknowledged = history.iter().filter(|w| w.version.is_some()).count();
    eprintln!("{acknowledged} of {} writes acknowledged in {:?}", history.len(), started.elapsed());
    assert!(acknowledged >= 20, "enough writes went through:\n{summary}");
    check_history(&ha, &leader, APPS, &history, &summary, 1);
}

/// Masters sharing one cluster CA serve HTTPS: a follower proxies to the leader trusting
/// that CA and presenting its own master certificate, and sends an agent that asks it to
/// the leader (the agent protocol admits by the connection's certificate, which no proxy
/// can pass on). The agent keeps its certificate, and its task, through a failover.
#[test]
fn masters_with_a_cluster_ca_proxy_over_https_and_send_agents_to_the_leader() {
    let secrets = tempfile::tempdir().expect("a secrets dir");
    let token = secrets.path().join("token");
    std::fs::write(&token, "ha-mtls-join-secret-7d21\n").expect("write the token");
    let token = token.display().to_string();
    let extra = ["--cluster-ca", "--token-file", &token].map(String::from).to_vec();
    let mut ha = Ha::start_with("ha-mtls", &MASTERS, extra);
    let ca = ha.ca.clone().expect("the cluster CA");
    let leader = ha.agreed_leader(&MASTERS, secs(30));
    let follower = others(&leader)[0];

    // A write through a follower, over HTTPS both ways.
    ha.api(follower).post("/v2/apps", &cmd_app("/ha/tls", "sleep 1000", 1)).expect_status(201);
    let pem = std::fs::read(&ca).expect("read ca.pem");
    let proxied = reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("the CA certificate")])
        .build()
        .expect("HTTP client")
        .get(format!("{}/v2/apps/ha/tls", ha.url(follower)))
        .send()
        .expect("GET through the follower");
    assert_eq!(proxied.status().as_u16(), 200);
    let named = proxied.headers().get("x-marathon-leader").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(named, Some(ha.url(&leader)), "{:?}", proxied.headers());

    // An agent that lists a follower first joins, gets its certificate and registers.
    let third = others(&leader)[1];
    let masters = [follower, leader.as_str(), third].map(|m| ha.url(m)).join(",");
    let ca_arg = ca.display().to_string();
    let agent_token = token.clone();
    ha.cluster.start_agent_of("agent-1", masters, move |_| {
        vec!["--ca-file".into(), ca_arg, "--token-file".into(), agent_token]
    });
    let before = ha.running_via(&leader, "/ha/tls", 1, secs(60));
    assert!(ha.cluster.dir().join("agent-1").join("tls").join("node.key").exists(), "the agent has a certificate");

    // kill -9 of the leader: the agent speaks mutual TLS with the next one, which knows
    // the task and places a new one there.
    ha.cluster.kill9(&leader);
    let second = ha.agreed_leader(&others(&leader), secs(20));
    let after = ha.running_via(&second, "/ha/tls", 1, secs(30));
    assert_eq!(ids(&after), ids(&before), "the same task: {}", task_summary(&after));
    ha.api(&second).put("/v2/apps/ha/tls", &json!({"instances": 2})).expect_status(200);
    let scaled = ha.running_via(&second, "/ha/tls", 2, secs(60));
    assert!(ids(&before).is_subset(&ids(&scaled)), "{}", task_summary(&scaled));
}
