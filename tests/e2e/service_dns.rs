//! DNS for apps (Mesos-DNS names) on a real cluster: `dig` at an agent's address answers
//! `hello.marathon.mesos` (A) and `_hello._tcp.marathon.mesos` (SRV) with the running
//! tasks' agents and host ports, follows a scale, forwards names outside the domain (to
//! the master's own DNS server, which answers the domain `upstream.test` here: the only
//! upstream inside the test's network), and answers garbage, oversized and unknown-type
//! queries with the right rcode while it keeps serving. A BRIDGE container resolves an
//! app by name through its node, and a standalone node serves the names once.
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// What `dig` printed: the rcode, the header flags and the answer section's records.
#[derive(Debug)]
struct Dug {
    status: String,
    flags: String,
    answers: Vec<String>,
}

impl Dug {
    /// The last field of each answer (the address of an A, the target of an SRV).
    fn data(&self) -> BTreeSet<String> {
        self.answers.iter().filter_map(|a| a.split_whitespace().last()).map(str::to_string).collect()
    }
}

fn dig(server: Ipv4Addr, name: &str, record_type: &str) -> Dug {
    let output = std::process::Command::new("dig")
        .args(["+tries=1", "+time=3", &format!("@{server}"), name, record_type])
        .output()
        .expect("run dig (package bind9-dnsutils)");
    let text = stdout(&output);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no answer from {server} for {name} {record_type}:\n{text}{}", stderr(&output)))
        .to_string();
    let flags = text.split(";; flags: ").nth(1).and_then(|rest| rest.split(';').next()).unwrap_or("").to_string();
    let answers = text
        .split(";; ANSWER SECTION:\n")
        .nth(1)
        .map(|section| section.lines().take_while(|l| !l.trim().is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    Dug { status, flags, answers }
}

/// Waits until `server` answers `name` with exactly `expected` (see [`Dug::data`]).
fn wait_for_answer(server: Ipv4Addr, name: &str, record_type: &str, expected: &BTreeSet<String>) -> Dug {
    wait_until(&format!("{name} {record_type} at {server} to be {expected:?}"), secs(10), || {
        let dug = dig(server, name, record_type);
        if dug.status == "NOERROR" && &dug.data() == expected {
            Ok(dug)
        } else {
            Err(format!("{dug:?}"))
        }
    })
}

/// A DNS query's bytes: a 12-byte header asking `questions` times for `name` (type A).
fn query_bytes(id: u16, name: &str, questions: u16) -> Vec<u8> {
    query_of_type(id, name, questions, 1)
}

fn query_of_type(id: u16, name: &str, questions: u16, record_type: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend(id.to_be_bytes());
    bytes.extend([0x01, 0x00]); // a standard query, recursion desired
    bytes.extend(questions.to_be_bytes());
    bytes.extend([0, 0, 0, 0, 0, 0]);
    for _ in 0..questions {
        for label in name.split('.') {
            bytes.push(u8::try_from(label.len()).expect("short labels"));
            bytes.extend(label.as_bytes());
        }
        bytes.push(0);
        bytes.extend(record_type.to_be_bytes());
        bytes.extend([0, 1]);
    }
    bytes
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

fn udp_exchange(server: Ipv4Addr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    socket.send_to(bytes, (server, 53)).expect("send the datagram");
    let mut reply = vec![0; 65536];
    let (n, _) = socket.recv_from(&mut reply).ok()?;
    reply.truncate(n);
    Some(reply)
}

fn tcp_exchange(server: Ipv4Addr, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((server, 53)), secs(3)).expect("connect to :53");
    stream.set_read_timeout(Some(secs(5))).expect("timeout");
    let length = u16::try_from(message.len()).expect("a TCP DNS message fits 64 KiB");
    stream.write_all(&length.to_be_bytes()).expect("send the length");
    stream.write_all(message).expect("send the message");
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).expect("an answer over TCP");
    let mut reply = vec![0; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut reply).expect("the whole answer");
    reply
}

fn task_hosts_and_ports(
    cluster: &Cluster,
    tasks: &[serde_json::Value],
    index: usize,
) -> (BTreeSet<String>, BTreeSet<u64>) {
    let ips = tasks.iter().map(|t| cluster.ip_of_host(str_field(t, "host")).to_string()).collect();
    let ports = tasks.iter().filter_map(|t| t["ports"][index].as_u64()).collect();
    (ips, ports)
}

fn srv_ports(dug: &Dug) -> BTreeSet<u64> {
    // `_hello._tcp.marathon.mesos. 5 IN SRV 0 0 PORT TARGET`
    dug.answers.iter().filter_map(|a| a.split_whitespace().rev().nth(1)?.parse().ok()).collect()
}

#[test]
fn agents_answer_app_names_follow_a_scale_forward_and_survive_bad_queries() {
    let mut cluster = Cluster::new("dns");
    let master_ip = cluster.next_master_ip();
    // The loopback stub goes unused; the master is the only upstream.
    let resolv = cluster.dir().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver 127.0.0.53\nnameserver {master_ip}\n")).expect("write resolv.conf");
    let resolv = resolv.display().to_string();
    cluster.start_master(&["--dns-domain", "upstream.test", "--dns-ttl", "7"]);
    for agent in ["agent-1", "agent-2"] {
        cluster.start_agent(agent, &["--dns-resolv-conf", &resolv]);
    }
    cluster.wait_for_agents(2);
    let agent_1 = cluster.node("agent-1").host.ip;
    let agent_2 = cluster.node("agent-2").host.ip;
    let agent_ips: BTreeSet<String> = [agent_1, agent_2].iter().map(Ipv4Addr::to_string).collect();

    // Nodes and the master, before any task.
    wait_for_answer(agent_1, "agent-2.slave.mesos", "A", &[agent_2.to_string()].into());
    wait_for_answer(agent_1, "slave.mesos", "A", &agent_ips);
    let leader = dig(agent_2, "leader.mesos", "A");
    assert_eq!(leader.data(), [master_ip.to_string()].into(), "{leader:?}");
    assert!(leader.flags.contains("aa"), "authoritative for its domain: {leader:?}");
    assert!(leader.answers[0].split_whitespace().nth(1) == Some("5"), "the default TTL: {leader:?}");

    let app = json!({"id": "/hello", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 1,
        "portDefinitions": [{"port": 0, "protocol": "tcp"}, {"port": 0, "protocol": "udp"}]});
    let tasks = cluster.deploy(&app);
    let (ips, tcp_ports) = task_hosts_and_ports(&cluster, &tasks, 0);
    let (_, udp_ports) = task_hosts_and_ports(&cluster, &tasks, 1);
    for agent in [agent_1, agent_2] {
        wait_for_answer(agent, "hello.marathon.mesos", "A", &ips);
    }
    let srv = dig(agent_2, "_hello._tcp.marathon.mesos", "SRV");
    assert_eq!(srv_ports(&srv), tcp_ports, "{srv:?}");
    let target = srv.data().into_iter().next().expect("an SRV target");
    assert_eq!(dig(agent_2, &target, "A").data(), ips, "the SRV target names the task's agent");
    assert_eq!(srv_ports(&dig(agent_1, "_hello._udp.marathon.mesos", "SRV")), udp_ports, "the udp port only");

    // Scaled to 3 over two agents: every task's agent and port; both agents agree.
    cluster.api().put("/v2/apps/hello", &json!({"instances": 3})).expect_status(200);
    let scaled_at = Instant::now();
    let tasks = cluster.wait_for_running("/hello", 3, secs(60));
    let (ips, tcp_ports) = task_hosts_and_ports(&cluster, &tasks, 0);
    for agent in [agent_1, agent_2] {
        wait_for_answer(agent, "hello.marathon.mesos", "A", &ips);
        wait_until("the SRV records of 3 tasks", secs(10), || {
            let ports = srv_ports(&dig(agent, "_hello._tcp.marathon.mesos", "SRV"));
            if ports == tcp_ports {
                Ok(())
            } else {
                Err(format!("{ports:?}, want {tcp_ports:?}"))
            }
        });
    }
    eprintln!("DNS followed the scale {:?} after the PUT", scaled_at.elapsed());
    // Scaled back to 1: the killed tasks' names go.
    cluster.api().put("/v2/apps/hello", &json!({"instances": 1})).expect_status(200);
    let tasks = cluster.wait_for_running("/hello", 1, secs(60));
    let (ips, tcp_ports) = task_hosts_and_ports(&cluster, &tasks, 0);
    wait_for_answer(agent_2, "hello.marathon.mesos", "A", &ips);
    assert_eq!(srv_ports(&dig(agent_2, "_hello._tcp.marathon.mesos", "SRV")), tcp_ports);

    // The master's own server and its Mesos-DNS HTTP API, in its domain.
    assert_eq!(dig(master_ip, "hello.marathon.upstream.test", "A").data(), ips);
    let hosts = cluster.api().get("/v1/hosts/hello.marathon.upstream.test").expect_status(200).json;
    let ip = ips.iter().next().expect("one address");
    assert_eq!(hosts, json!([{"host": "hello.marathon.upstream.test.", "ip": ip}]));
    let services = cluster.api().get("/v1/services/_hello._tcp.marathon.upstream.test").expect_status(200).json;
    assert_eq!(services[0]["port"], tcp_ports.iter().next().expect("one port").to_string(), "{services}");

    // Outside the domain: forwarded to the upstream, its answer and its NXDOMAIN alike.
    let forwarded = dig(agent_1, "leader.upstream.test", "A");
    assert_eq!((forwarded.status.as_str(), forwarded.data()), ("NOERROR", [master_ip.to_string()].into()));
    assert!(!forwarded.flags.contains("aa") && forwarded.flags.contains("ra"), "{forwarded:?}");
    assert_eq!(dig(agent_1, "nothing.upstream.test", "A").status, "NXDOMAIN");

    // In the domain: NXDOMAIN for unknown names, an empty NOERROR for other types.
    let unknown = dig(agent_1, "nothing.marathon.mesos", "A");
    assert_eq!((unknown.status.as_str(), unknown.answers.len()), ("NXDOMAIN", 0));
    for record_type in ["TXT", "AAAA", "TYPE65280"] {
        let other = dig(agent_1, "hello.marathon.mesos", record_type);
        assert_eq!((other.status.as_str(), other.answers.len()), ("NOERROR", 0), "{record_type}: {other:?}");
    }
    let transfer = tcp_exchange(agent_1, &query_of_type(9, "mesos", 1, 252));
    assert_eq!(rcode(&transfer), 5, "REFUSED: no zone transfers");

    // Garbage, truncated and oversized queries: the right rcode, and the server answers on.
    let mut truncated = query_bytes(0x1234, "hello.marathon.mesos", 1);
    truncated.truncate(20);
    let reply = udp_exchange(agent_1, &truncated).expect("an answer to a truncated question");
    assert_eq!((&reply[..2], rcode(&reply)), (&[0x12, 0x34][..], 1), "FORMERR");
    let noise: Vec<u8> = (0..512u32).map(|i| u8::try_from(i * 7 % 251).expect("below 251")).collect();
    let _ = udp_exchange(agent_1, &noise);
    let _ = udp_exchange(agent_1, &[0xff; 5]);
    let _ = udp_exchange(agent_1, &vec![0xab; 9000]);
    // 2,520 questions in one 64 KiB message over TCP.
    let oversized = query_bytes(0x4242, "hello.marathon.mesos", 2520);
    assert!(oversized.len() > 65_000);
    let reply = tcp_exchange(agent_1, &oversized);
    assert_eq!((&reply[..2], rcode(&reply)), (&[0x42, 0x42][..], 1), "FORMERR for many questions");
    let reply = tcp_exchange(agent_1, &query_bytes(7, "hello.marathon.mesos", 1));
    assert_eq!(rcode(&reply), 0, "TCP answers on");
    assert_eq!(dig(agent_1, "hello.marathon.mesos", "A").data(), ips, "UDP answers on");
    cluster.check_nodes_alive().expect("no node crashed");
}

#[test]
fn a_container_resolves_an_app_by_name_through_its_agent() {
    let ic = crate::containers::ImageCluster::start("dns-ctr", 1, &[]);
    let cluster = &ic.cluster;
    let agent_ip = cluster.node("agent-1").host.ip.to_string();
    cluster.api().post("/v2/apps", &crate::containers::hello_sinatra()).expect_status(201);
    cluster.wait_for_running("/hello-sinatra", 1, secs(90));
    // A BRIDGE container of another app asks the node's DNS (the bridge's address).
    let client = json!({"id": "/client", "cpus": 0.1, "mem": 32, "instances": 1,
        "cmd": "cat /etc/resolv.conf; busybox nslookup hello-sinatra.marathon.mesos; sleep 1000",
        "container": {"type": "DOCKER", "docker": {"image": crate::containers::HELLO, "network": "BRIDGE"}}});
    cluster.api().post("/v2/apps", &client).expect_status(201);
    let task = cluster.wait_for_running("/client", 1, secs(90)).remove(0);
    let task_id = str_field(&task, "id").to_string();
    let logs = wait_until("the client's lookup in its log", secs(30), || {
        let output = cluster.cli(&["logs", &task_id]);
        let text = stdout(&output);
        if text.contains("Address") && text.contains("hello-sinatra.marathon.mesos") {
            Ok(text)
        } else {
            Err(format!("stdout {text:?}, stderr {:?}", stderr(&output)))
        }
    });
    assert!(
        logs.lines().next().is_some_and(|l| l.starts_with("nameserver 172.31.0.1")),
        "the node's DNS first:\n{logs}"
    );
    assert!(logs.lines().any(|l| l.starts_with("search marathon.mesos")), "{logs}");
    let answer = logs.split("hello-sinatra.marathon.mesos").last().unwrap_or_default();
    assert!(answer.contains(&format!("Address: {agent_ip}")), "the app's agent:\n{logs}");
}

#[test]
fn a_standalone_node_serves_the_names_once() {
    let mut cluster = Cluster::new("dns-one");
    // Named `master`, so the harness's API helpers find it.
    cluster.start_standalone("master");
    let ip = cluster.node("master").host.ip;
    cluster.wait_for_agents(1);
    let tasks = cluster.deploy(&cmd_app("/solo/web", "sleep 1000", 1));
    let port = tasks[0]["ports"][0].as_u64().expect("a host port");
    wait_for_answer(ip, "web-solo.marathon.mesos", "A", &[ip.to_string()].into());
    assert_eq!(srv_ports(&dig(ip, "_web-solo._tcp.marathon.mesos", "SRV")), [port].into());
    assert_eq!(dig(ip, "master.slave.mesos", "A").data(), [ip.to_string()].into());
    let log = std::fs::read_to_string(&cluster.node("master").log).expect("the node's log");
    assert!(!log.contains("DNS not served"), "the embedded agent leaves :53 to the master:\n{log}");
}

#[test]
fn with_the_cluster_ca_agents_fetch_records_over_mutual_tls_and_strangers_are_refused() {
    let mut cluster = Cluster::new("dns-mtls");
    let token = cluster.secret_file("token", "dns-mtls-join-secret-7d1e");
    let ca = cluster.start_master_with_cluster_ca(&["--token-file", &token]).display().to_string();
    cluster.start_agent("agent-1", &["--ca-file", &ca, "--token-file", &token]);
    cluster.wait_for_agents(1);
    let ip = cluster.node("agent-1").host.ip;
    wait_for_answer(ip, "agent-1.slave.mesos", "A", &[ip.to_string()].into());
    let tasks = cluster.deploy(&cmd_app("/web", "sleep 1000", 1));
    assert_eq!(tasks.len(), 1);
    wait_for_answer(ip, "web.marathon.mesos", "A", &[ip.to_string()].into());
    // Without the agent's certificate the feed is refused, as the rest of the agent protocol.
    let refused = cluster.api().get("/agent/v1/dns?agent_id=agent-1");
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(refused.json["message"].as_str().is_some_and(|m| m.contains("mutual TLS")), "{}", refused.text);
}
