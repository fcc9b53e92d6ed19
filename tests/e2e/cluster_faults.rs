//! Faults on a real cluster: a lost agent, an agent that comes back, a master killed in
//! the middle of a deployment.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The node a task runs on.
fn node_of(cluster: &Cluster, task: &Value) -> String {
    cluster.node_of_host(str_field(task, "host"))
}

/// Task ids of `app` whose processes run in each agent's namespace, per agent.
fn running_processes(cluster: &Cluster, agents: &[&str], prefix: &str) -> BTreeMap<String, BTreeSet<i32>> {
    let mut all = BTreeMap::new();
    for agent in agents {
        all.extend(cluster.task_pids(agent).into_iter().filter(|(id, _)| id.starts_with(prefix)));
    }
    all
}

#[test]
fn lost_agent_tasks_move_and_a_returning_agent_leaves_no_surplus() {
    let mut cluster = Cluster::start("faults-agent", 2);
    let tasks = cluster.deploy(&cmd_app("/spread", "sleep 1000", 4));

    // The agent with the most tasks "loses its network": its process dies, its tasks keep
    // running unseen, as on a partitioned machine.
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        *per_host.entry(node_of(&cluster, task)).or_default() += 1;
    }
    let (victim, _) = per_host.iter().max_by_key(|(_, n)| **n).map(|(h, n)| (h.clone(), *n)).expect("tasks");
    let survivor = if victim == "agent-1" { "agent-2" } else { "agent-1" };
    let on_victim: BTreeSet<String> =
        tasks.iter().filter(|t| node_of(&cluster, t) == victim).map(|t| str_field(t, "id").to_string()).collect();
    cluster.kill9(&victim);

    // Within the agent timeout (plus scheduling slack) the master declares it lost and
    // replaces its tasks on the survivor.
    wait_until("the lost agent's tasks to be replaced on the survivor", secs(AGENT_TIMEOUT_SECS + 30), || {
        let running = cluster.running_tasks("/spread");
        let moved = running.len() == 4 && running.iter().all(|t| node_of(&cluster, t) == survivor);
        if moved {
            Ok(())
        } else {
            Err(task_summary(&running))
        }
    });
    assert_eq!(cluster.active_agents().expect("slaves"), vec![survivor.to_string()]);
    // The old tasks still run unseen on the partitioned machine: the surplus to come.
    let orphans: BTreeSet<String> = cluster.task_pids(&victim).into_keys().collect();
    assert!(orphans.is_superset(&on_victim), "expected {on_victim:?} still running, found {orphans:?}");

    // The agent comes back with the same work dir and reports its old tasks: they are
    // surplus now and must be killed, never kept beside the replacements.
    cluster.respawn(&victim);
    cluster.wait_for_agents(2);
    wait_until("the returning agent's surplus tasks to be killed", secs(60), || {
        let processes = running_processes(&cluster, &["agent-1", "agent-2"], "spread.");
        let running = cluster.running_tasks("/spread");
        let surplus: Vec<&String> = processes.keys().filter(|id| on_victim.contains(*id)).collect();
        if surplus.is_empty() && running.len() == 4 && processes.len() == 4 {
            Ok(())
        } else {
            Err(format!("master: {}; processes: {:?}", task_summary(&running), processes.keys()))
        }
    });
    holds_for("exactly 4 /spread tasks", secs(5), || {
        let processes = running_processes(&cluster, &["agent-1", "agent-2"], "spread.");
        let tasks = cluster.tasks("/spread");
        if tasks.len() == 4 && processes.len() == 4 {
            Ok(())
        } else {
            Err(format!("master: {}; processes: {:?}", task_summary(&tasks), processes.keys()))
        }
    });
}

#[test]
fn master_killed_mid_deployment_loses_nothing_and_adopts_running_tasks() {
    let mut cluster = Cluster::start("faults-master", 2);
    let api = cluster.api();
    let steady = ids(&cluster.deploy(&cmd_app("/steady", "sleep 1000", 2)));

    // Each agent offers mem 2048, so only two of these three fit: the deployment stays in
    // progress until a third agent joins.
    api.post("/v2/apps", &json!({"id": "/big", "cmd": "sleep 1000", "cpus": 0.1, "mem": 1500, "instances": 3}))
        .expect_status(201);
    wait_until("two /big tasks to run", secs(60), || {
        let running = cluster.running_tasks("/big");
        if running.len() == 2 {
            Ok(())
        } else {
            Err(task_summary(&cluster.tasks("/big")))
        }
    });
    let deployments = api.get_json("/v2/deployments");
    assert_eq!(deployments.as_array().map(Vec::len), Some(1), "the /big deployment is in progress: {deployments}");
    let big_before = ids(&cluster.running_tasks("/big"));
    let pids_before = running_processes(&cluster, &["agent-1", "agent-2"], "");

    cluster.kill9("master");
    cluster.respawn("master");
    cluster.wait_for_agents(2);

    // Everything acknowledged is back, and the running tasks were adopted, not restarted.
    let apps = api.get_json("/v2/apps");
    let app_ids: BTreeSet<&str> =
        apps["apps"].as_array().expect("apps").iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(app_ids, BTreeSet::from(["/big", "/steady"]));
    assert_eq!(api.get_json("/v2/apps/big")["app"]["instances"], 3);
    let deployments = api.get_json("/v2/deployments");
    assert_eq!(deployments.as_array().map(Vec::len), Some(1), "the deployment survived: {deployments}");
    let steady_after = ids(&cluster.wait_for_running("/steady", 2, secs(60)));
    assert_eq!(steady_after, steady, "/steady's tasks were adopted");

    // A third agent gives the deployment room to finish.
    cluster.start_agent("agent-3", &[]);
    cluster.wait_for_agents(3);
    let big_after = ids(&cluster.wait_for_running("/big", 3, secs(60)));
    cluster.wait_for_no_deployments(secs(60));
    assert!(big_after.is_superset(&big_before), "the two /big tasks were adopted: {big_before:?} vs {big_after:?}");
    let pids_after = running_processes(&cluster, &["agent-1", "agent-2"], "");
    for (task, pids) in &pids_before {
        assert_eq!(pids_after.get(task), Some(pids), "task {task} keeps its processes");
    }
}

#[test]
fn only_agents_with_the_join_token_join() {
    let mut cluster = Cluster::new("faults-token");
    let (token, guess) = (cluster.secret_file("token", "s3cret\n"), cluster.secret_file("guess", "guess"));
    cluster.start_master(&["--token-file", &token]);
    cluster.start_agent("agent-1", &["--token-file", &token]);
    cluster.start_agent("agent-2", &["--token-file", &guess]);
    cluster.start_agent("agent-3", &[]);
    wait_until("the agent with the token to join", secs(60), || {
        let active = cluster.active_agents()?;
        if active == ["agent-1"] {
            Ok(())
        } else {
            Err(format!("{active:?}"))
        }
    });
    holds_for("only agent-1 to be registered", secs(3), || {
        let slaves = cluster.api().get_json("/master/slaves");
        let names: Vec<&str> =
            slaves["slaves"].as_array().into_iter().flatten().filter_map(|s| s["hostname"].as_str()).collect();
        if names == ["agent-1"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    });
}

#[test]
fn a_master_on_an_empty_or_lost_store_refuses_to_start_and_no_task_is_killed() {
    let mut cluster = Cluster::start("faults-store", 1);
    let steady = ids(&cluster.deploy(&cmd_app("/steady", "sleep 1000", 2)));
    let pids_before = running_processes(&cluster, &["agent-1"], "");
    let store = cluster.dir().join("master").join("plinth.redb");

    // A 0-byte store (a disk that lost the file's content) is not a new, empty cluster.
    cluster.kill9("master");
    std::fs::write(&store, b"").expect("truncate the store");
    cluster.respawn("master");
    let (status, log) = cluster.wait_exit("master", secs(30));
    assert!(!status.success(), "the master refuses to start: {log}");
    assert!(log.contains("is empty (0 bytes)") && log.contains("restore it from a backup"), "{log}");

    // A missing store beside the data dir's cluster marker: refused the same way.
    std::fs::remove_file(&store).expect("remove the store");
    cluster.respawn("master");
    let (status, log) = cluster.wait_exit("master", secs(30));
    assert!(!status.success());
    assert!(log.contains("is missing but") && log.contains("held a cluster"), "{log}");
    assert!(!store.exists(), "no new, empty store was created");

    // The agent was never told to kill anything: its tasks run on, same processes.
    std::thread::sleep(secs(2));
    let pids_after = running_processes(&cluster, &["agent-1"], "");
    assert_eq!(pids_after.keys().cloned().collect::<BTreeSet<_>>(), steady, "both tasks still run");
    assert_eq!(pids_after, pids_before, "same processes");
}

#[test]
fn in_a_partition_agents_keep_or_stop_their_tasks_as_the_operator_chose() {
    let mut cluster = Cluster::new("faults-partition");
    cluster.start_master(&[]);
    cluster.start_agent("agent-1", &["--stop-tasks-after-master-lost-secs", "2"]);
    cluster.start_agent("agent-2", &[]);
    cluster.wait_for_agents(2);
    let app = json!({"id": "/both", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 2,
        "constraints": [["hostname", "UNIQUE"]]});
    cluster.deploy(&app);
    let on = |cluster: &Cluster, agent: &str| -> BTreeSet<String> {
        cluster.task_pids(agent).into_keys().filter(|id| id.starts_with("both.")).collect()
    };
    let (first, second) = (on(&cluster, "agent-1"), on(&cluster, "agent-2"));
    assert_eq!((first.len(), second.len()), (1, 1), "one task on each agent");

    // The master goes away: the agent that was told to stops its task, the other keeps it.
    cluster.kill9("master");
    wait_until("agent-1 to stop its task without the master", secs(30), || match on(&cluster, "agent-1") {
        running if running.is_empty() => Ok(()),
        running => Err(format!("still running: {running:?}")),
    });
    assert_eq!(on(&cluster, "agent-2"), second, "the default keeps tasks running through a partition");

    // Back together: the master hears TASK_KILLED and replaces the stopped task only.
    cluster.respawn("master");
    cluster.wait_for_agents(2);
    wait_until("the stopped task to be replaced on agent-1", secs(60), || {
        let (now_first, now_second) = (on(&cluster, "agent-1"), on(&cluster, "agent-2"));
        if now_first.len() == 1 && now_first != first && now_second == second {
            Ok(())
        } else {
            Err(format!("agent-1 {now_first:?}, agent-2 {now_second:?}"))
        }
    });
    let running = ids(&cluster.running_tasks("/both"));
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(running.is_superset(&second), "{running:?}");
}
