//! Who may join and whom an agent follows, with real masters and agents in namespaces:
//! join tokens come from files (never argv, never a log line), a PXE script carries a
//! single-use bootstrap token that a booting agent exchanges once for the join token (and
//! keeps), and an agent whose master came back as a new, empty cluster refuses to follow
//! it and keeps its tasks.

use crate::common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

const TOKEN: &str = "identity-join-secret-7f3a";

/// `POST /agent/v1/join` with `token`, claiming `macs`.
fn join(cluster: &Cluster, token: &str, macs: &[&str]) -> Reply {
    plinth_oci::tls::install_provider();
    let client = reqwest::blocking::Client::builder().no_proxy().timeout(secs(15)).build().expect("HTTP client");
    let response = client
        .post(format!("{}/agent/v1/join", cluster.master_url()))
        .header("x-plinth-token", token)
        .json(&json!({"hostname": "test", "macs": macs}))
        .send()
        .expect("POST /agent/v1/join");
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, text, json }
}

/// The bootstrap token in an iPXE script's kernel command line.
fn bootstrap_token(script: &str) -> String {
    let word = script.split_whitespace().find_map(|w| w.strip_prefix("plinth.token=")).unwrap_or_else(|| {
        panic!("no plinth.token= in the script:\n{script}");
    });
    assert!(word.starts_with("plinth-bootstrap."), "a bootstrap token, not the join token: {word}");
    word.to_string()
}

/// The MAC of eth0 in a host's namespace.
fn mac_of(host: &Host) -> String {
    let out = sh("ip", &["-n", &host.netns, "-o", "link", "show", "eth0"]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in: {out}"))
        .to_string()
}

fn cmdline_of(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
}

fn log_of(cluster: &Cluster, node: &str) -> String {
    read(&cluster.node(node).log)
}

/// Runs `plinth` from the test process; killed (by pid) if it has not ended after 30 s.
fn plinth_bounded(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(PLINTH)
        .args(args)
        .env_remove("PLINTH_TOKEN")
        .env_remove("PLINTH_TOKEN_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run plinth");
    let started = std::time::Instant::now();
    while child.try_wait().expect("poll plinth").is_none() {
        if started.elapsed() > secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap plinth");
            panic!("plinth {} did not end: {}", args.join(" "), stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().expect("plinth output")
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn agents_join_with_a_token_file_and_the_token_is_on_no_command_line_and_in_no_log() {
    let mut cluster = Cluster::new("id-token");
    let token = cluster.secret_file("token", &format!("{TOKEN}\n"));
    let guess = cluster.secret_file("guess", "not-the-token");
    // Readable by everyone: it still works, with a warning.
    std::fs::set_permissions(&guess, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");

    // A token on the command line is refused before anything starts, naming the way to go.
    let data = cluster.dir().join("refused");
    let data = data.display().to_string();
    let out = plinth_bounded(&[
        "master",
        "--token",
        TOKEN,
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--registry-listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success(), "plinth master --token is refused");
    let message = stderr(&out);
    assert!(message.contains("--token-file") && message.contains("PLINTH_TOKEN"), "{message}");
    assert!(!message.contains(TOKEN), "the refusal does not repeat the token: {message}");

    cluster.start_master(&["--token-file", &token]);
    cluster.start_agent("agent-1", &["--token-file", &token]);
    cluster.start_agent("agent-2", &["--token-file", &guess]);
    wait_until("the agent with the token file to join", secs(60), || {
        let active = cluster.active_agents()?;
        if active == ["agent-1"] {
            Ok(())
        } else {
            Err(format!("{active:?}"))
        }
    });
    cluster.deploy(&cmd_app("/joined", "sleep 1000", 1));
    let refused = log_of(&cluster, "agent-2");
    assert!(refused.contains("--token-file"), "the refused agent is told what to pass:\n{refused}");
    assert!(refused.contains("readable by other users"), "a world-readable token file is warned about:\n{refused}");

    // No process of these hosts (masters, agents, executors, tasks) shows the token.
    let mut seen = 0;
    for node in ["master", "agent-1", "agent-2"] {
        for pid in netns_pids(&cluster.node(node).host.netns) {
            let cmdline = cmdline_of(pid);
            assert!(!cmdline.contains(TOKEN), "the token is in /proc/{pid}/cmdline: {cmdline}");
            seen += usize::from(cmdline.contains("plinth"));
        }
    }
    assert!(seen >= 3, "the nodes' processes were looked at");
    for node in ["master", "agent-1", "agent-2"] {
        let log = log_of(&cluster, node);
        assert!(!log.is_empty() && !log.contains(TOKEN), "the token is in the {node} log:\n{log}");
    }

    // Without PXE the master hands out nothing at /boot/ipxe, and there is no exchange.
    let script = cluster.api().get("/boot/ipxe?mac=52:54:00:12:34:56");
    assert_eq!(script.status, 404, "{}", script.text);
    assert!(script.json["message"].as_str().is_some_and(|m| m.contains("PXE boot is not enabled")), "{}", script.text);
    assert!(!script.text.contains(TOKEN));
    let exchange = join(&cluster, TOKEN, &["52:54:00:12:34:56"]);
    assert_eq!(exchange.status, 404, "{}", exchange.text);
    assert!(!exchange.text.contains(TOKEN));
}

#[test]
fn a_pxe_bootstrap_token_works_once_and_the_agent_keeps_the_join_token() {
    let mut cluster = Cluster::new("id-pxe");
    let token = cluster.secret_file("token", TOKEN);
    let boot_dir = tempfile::tempdir().expect("boot dir");
    let boot_dir = boot_dir.path().display().to_string();
    cluster.start_master(&["--token-file", &token, "--pxe-interface", "eth0", "--proxy-dhcp", "--boot-dir", &boot_dir]);
    let api = cluster.api();
    let framework_id = api.get_json("/v2/info")["frameworkId"].as_str().expect("a framework id").to_string();

    // A script carries a bootstrap token, never the join token.
    let (mac, other) = ("52:54:00:aa:00:01", "52:54:00:aa:00:02");
    let script = api.get(&format!("/boot/ipxe?mac={mac}")).expect_status(200).text;
    assert!(!script.contains(TOKEN), "the join token is not in the script:\n{script}");
    let bootstrap = bootstrap_token(&script);

    // Another machine cannot use it; its own machine can, once.
    let refused = join(&cluster, &bootstrap, &[other]);
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(refused.json["message"].as_str().is_some_and(|m| m.contains(mac)), "{}", refused.text);
    let joined = join(&cluster, &bootstrap, &[other, mac]).expect_status(200).json;
    assert_eq!(joined["token"], TOKEN);
    assert_eq!(joined["cluster_id"], framework_id.as_str());
    let again = join(&cluster, &bootstrap, &[mac]);
    assert_eq!(again.status, 401, "a used bootstrap token is refused: {}", again.text);
    assert!(again.json["message"].as_str().is_some_and(|m| m.contains("already used")), "{}", again.text);
    assert!(!again.text.contains(TOKEN));
    assert_eq!(join(&cluster, "plinth-bootstrap.guess", &[mac]).status, 401);

    // A real agent booted with a bootstrap token for its MAC exchanges it and joins.
    let script_api = api.clone();
    let dir = cluster.dir().to_path_buf();
    cluster.start_agent_with("pxe-agent", move |host| {
        let script = script_api.get(&format!("/boot/ipxe?mac={}", mac_of(host))).expect_status(200).text;
        let path = dir.join("bootstrap-token");
        std::fs::write(&path, bootstrap_token(&script)).expect("write the bootstrap token");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        vec!["--token-file".into(), path.display().to_string()]
    });
    cluster.wait_for_agents(1);
    let stored = cluster.dir().join("pxe-agent").join("join-token");
    assert_eq!(read(&stored).trim(), TOKEN, "the agent keeps the join token it got");
    let mode = std::fs::metadata(&stored).expect("the stored token").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the stored token is the agent's alone");

    // Restarted, it presents the stored token (its bootstrap token is spent) and registers.
    cluster.kill9("pxe-agent");
    cluster.respawn("pxe-agent");
    wait_until("the restarted agent to register again", secs(60), || {
        let log = log_of(&cluster, "pxe-agent");
        match log.matches("registered with the master").count() {
            2.. => Ok(()),
            n => Err(format!("{n} registrations")),
        }
    });
    assert_eq!(log_of(&cluster, "pxe-agent").matches("bootstrap token exchanged").count(), 1, "exchanged once");
    cluster.deploy(&cmd_app("/after-pxe", "sleep 1000", 1));
    for node in ["master", "pxe-agent"] {
        let log = log_of(&cluster, node);
        assert!(!log.contains(TOKEN) && !log.contains(&bootstrap), "no token in the {node} log:\n{log}");
    }
}

#[test]
fn an_agent_refuses_a_master_that_came_back_as_a_new_cluster_and_keeps_its_tasks() {
    let mut cluster = Cluster::start("id-cluster", 1);
    let old_id = cluster.api().get_json("/v2/info")["frameworkId"].as_str().expect("framework id").to_string();
    cluster.deploy(&cmd_app("/kept", "sleep 1000", 1));
    let pids: Vec<i32> = cluster.task_pids("agent-1").into_values().flatten().collect();
    assert!(!pids.is_empty(), "the task runs on agent-1");
    let checkpoint = cluster.dir().join("agent-1").join("checkpoint.json");
    let named =
        |path: &std::path::Path| serde_json::from_str::<Value>(&read(path)).expect("checkpoint")["cluster_id"].clone();
    assert_eq!(named(&checkpoint), old_id.as_str(), "the checkpoint names the cluster");

    // The master loses its whole data dir and starts a new, empty cluster.
    cluster.kill9("master");
    std::fs::remove_dir_all(cluster.dir().join("master")).expect("wipe the master's data dir");
    cluster.respawn("master");
    let api = cluster.api();
    let new_id = wait_until("the new master to answer", secs(60), || {
        let info = api.try_get("/v2/info")?.json;
        info["frameworkId"].as_str().map(str::to_string).ok_or_else(|| info.to_string())
    });
    assert_ne!(new_id, old_id, "a new cluster");

    wait_until("the agent to refuse the new cluster", secs(60), || {
        let log = log_of(&cluster, "agent-1");
        let refusal = log.lines().find(|l| l.contains("ERROR") && l.contains("not following it"));
        match refusal {
            Some(line) if line.contains(&old_id) && line.contains(&new_id) => Ok(()),
            Some(line) => Err(format!("the refusal names both ids: {line}")),
            None => Err("no refusal yet".into()),
        }
    });
    holds_for("the task to keep running and the agent to stay out", secs(6), || {
        if let Some(dead) = pids.iter().find(|pid| !alive(**pid)) {
            return Err(format!("task process {dead} was killed"));
        }
        let slaves = api.get_json("/master/slaves");
        match slaves["slaves"].as_array() {
            Some(list) if list.is_empty() => Ok(()),
            _ => Err(format!("the new master took the agent: {slaves}")),
        }
    });
    assert_eq!(named(&checkpoint), old_id.as_str(), "the checkpoint still names the old cluster");
    let master_log = log_of(&cluster, "master");
    assert!(master_log.contains("agent of another cluster refused"), "{master_log}");

    // The operator accepts the new cluster: the agent joins it once started with --rejoin-cluster.
    cluster.kill9("agent-1");
    cluster.respawn_with("agent-1", &["--rejoin-cluster"]);
    cluster.wait_for_agents(1);
    wait_until("the checkpoint to name the new cluster", secs(30), || {
        let id = named(&checkpoint);
        if id == new_id.as_str() {
            Ok(())
        } else {
            Err(id.to_string())
        }
    });
}

/// A test CA and a server certificate for `ip` signed by it (PEM files in `dir`): the CA's
/// path, the certificate's and the key's.
fn test_certificates(dir: &std::path::Path, ip: std::net::Ipv4Addr) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca, ca_key, cert, key, csr, ext) =
        (path("ca.pem"), path("ca.key"), path("server.pem"), path("server.key"), path("server.csr"), path("san.ext"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", "/CN=plinth-test-ca"]);
    sh("openssl", &args);
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=plinth-master"]);
    sh("openssl", &args);
    std::fs::write(&ext, format!("subjectAltName=IP:{ip}\n")).expect("write the SAN extension");
    sh(
        "openssl",
        &["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-out", &cert, "-days", "2"]
            .into_iter()
            .chain(["-extfile", ext.as_str()])
            .collect::<Vec<_>>(),
    );
    (ca, cert, key)
}

#[test]
fn the_api_over_https_with_agents_and_the_cli_trusting_a_ca_file() {
    let mut cluster = Cluster::new("id-tls");
    let token = cluster.secret_file("token", TOKEN);
    let (ca, cert, key) = test_certificates(cluster.dir(), cluster.next_master_ip());
    cluster.use_tls(std::path::Path::new(&ca));
    cluster.start_master(&["--tls-cert", &cert, "--tls-key", &key, "--token-file", &token]);
    cluster.start_agent("agent-1", &["--ca-file", &ca, "--token-file", &token]);
    cluster.start_agent("no-ca", &["--token-file", &token]);
    cluster.wait_for_agents(1);
    cluster.deploy(&cmd_app("/over-tls", "sleep 1000", 1));

    // Plain HTTP gets no answer from the HTTPS port.
    let plain = Http::new(format!("http://{}:{MASTER_PORT}", cluster.master_ip())).try_get("/ping");
    assert!(plain.as_ref().map_or(true, |r| r.status != 200), "plain HTTP is not served: {:?}", plain.map(|r| r.text));

    // An agent that does not trust the CA does not join, and says why.
    holds_for("only the agent trusting the CA to be registered", secs(3), || {
        let active = cluster.active_agents()?;
        if active == ["agent-1"] {
            Ok(())
        } else {
            Err(format!("{active:?}"))
        }
    });
    let refused = log_of(&cluster, "no-ca");
    assert!(
        refused.to_lowercase().contains("certificate"),
        "the agent says the certificate is not trusted:\n{refused}"
    );

    // The CLI trusts the CA with --ca-file, and fails clearly without it.
    let listed = cluster.cli(&["node", "list", "--ca-file", &ca]);
    assert!(listed.status.success() && stdout(&listed).contains("agent-1"), "{}", stderr(&listed));
    let untrusted = cluster.cli(&["node", "list"]);
    assert!(!untrusted.status.success(), "without the CA the CLI refuses the master: {}", stdout(&untrusted));
    assert!(stderr(&untrusted).contains("cannot reach the master"), "{}", stderr(&untrusted));
}
