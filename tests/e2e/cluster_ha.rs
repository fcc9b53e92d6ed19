//! High availability on etcd: a 3-member etcd cluster (Debian's `etcd-server`), three
//! masters and an agent, each in its own namespace on the test network. One master leads;
//! the others proxy to it; killing, pausing or abdicating the leader hands the lead on
//! within the lease, with every acknowledged write kept and no task restarted.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
const LEASE_SECS: u64 = 3;

struct Ha {
    cluster: Cluster,
    etcd: plinth_testkit::Etcd,
}

impl Ha {
    fn start(test: &str, masters: &[&str]) -> Ha {
        let mut cluster = Cluster::new(test);
        let members: Vec<plinth_testkit::etcd::Member> = (1..=3)
            .map(|n| {
                let host = cluster.add_host(&format!("etcd-{n}"));
                plinth_testkit::etcd::Member { name: format!("e{n}"), netns: host.netns, ip: host.ip.to_string() }
            })
            .collect();
        let etcd = plinth_testkit::Etcd::cluster(members).expect("start a 3-member etcd cluster");
        let mut ha = Ha { cluster, etcd };
        for name in masters {
            ha.start_master(name);
        }
        ha
    }

    fn start_master(&mut self, name: &str) {
        let data_dir = self.cluster.dir().join(name);
        let endpoints = self.etcd.endpoints().join(",");
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
            .collect()
        });
        let api = self.cluster.api_of(name);
        wait_until(&format!("{name} to answer /ping"), secs(60), || {
            self.cluster.check_nodes_alive()?;
            api.try_get("/ping").map(drop)
        });
    }

    fn address(&self, name: &str) -> String {
        format!("{}:{MASTER_PORT}", self.cluster.node(name).host.ip)
    }

    fn urls(&self) -> String {
        MASTERS.iter().map(|m| format!("http://{}", self.address(m))).collect::<Vec<_>>().join(",")
    }

    /// The master every one of `asked` names as leader, once they agree on one of them.
    fn agreed_leader(&self, asked: &[&str], timeout: Duration) -> String {
        wait_until("the masters to agree on one leader", timeout, || {
            let mut seen = BTreeSet::new();
            for name in asked {
                let reply = self.cluster.api_of(name).try_get("/v2/leader")?;
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
        let reply = self.cluster.api_of(master).get(&format!("/v2/apps{app}/tasks")).expect_status(200);
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
