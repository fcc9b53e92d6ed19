//! Node identity with real masters and agents in namespaces: with `--cluster-ca` the
//! master makes a CA (its fingerprint printed, its certificate at `/v1/ca.pem`), an agent
//! trades the join token once for a client certificate and from then on speaks mutual
//! TLS, also without the token; clients without a certificate, or with one of another CA,
//! are refused by the agent protocol and by the agent's own API, while the master's
//! proxy still reads a task's log and views from the agent with the master's certificate
//! (also for the CLI, which then needs no certificate).

use crate::common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const TOKEN: &str = "mtls-join-secret-41c9";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// `sha256:` and the lower-case hex SHA-256 of the PEM certificate's DER, by openssl.
fn fingerprint_of(pem_path: &Path) -> String {
    let out = sh("openssl", &["x509", "-in", &pem_path.display().to_string(), "-noout", "-fingerprint", "-sha256"]);
    let hex = out.trim().rsplit('=').next().unwrap_or_default().replace(':', "").to_lowercase();
    format!("sha256:{hex}")
}

/// A CA of the test's own and a client certificate from it for `common_name` (PEM
/// certificate + key), as a stranger to the cluster would make them.
fn foreign_identity(common_name: &str) -> Vec<u8> {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Plinth cluster CA");
    let ca = ca_params.self_signed(&ca_key).expect("foreign CA");
    let key = rcgen::KeyPair::generate().expect("client key");
    let mut params = rcgen::CertificateParams::new(vec![common_name.to_string()]).expect("client params");
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).expect("foreign client certificate");
    format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes()
}

/// `POST path` with a JSON body and, when given, the join token header.
fn post(http: &Http, path: &str, token: Option<&str>, body: &Value) -> Result<Reply, String> {
    let headers: Vec<(&str, &str)> = token.map(|t| ("x-plinth-token", t)).into_iter().collect();
    http.try_request_with("POST", path, &headers, Some(body.to_string().into_bytes()))
}

#[test]
fn agents_join_once_with_the_token_and_then_speak_mutual_tls_only() {
    let mut cluster = Cluster::new("mtls");
    let token = cluster.secret_file("token", &format!("{TOKEN}\n"));

    // Without a join token there is nothing to trade for a certificate: refused, clearly.
    let out =
        plinth(&["master", "--cluster-ca", "--data-dir", "/nonexistent/plinth-mtls", "--listen", "127.0.0.1:0"], &[]);
    assert!(!out.status.success(), "--cluster-ca without a token is refused");
    assert!(stderr(&out).contains("--cluster-ca needs a join token"), "{}", stderr(&out));

    let ca = cluster.start_master_with_cluster_ca(&["--token-file", &token]);
    let ca_pem = std::fs::read(&ca).expect("read ca.pem");
    assert_eq!(mode(&ca.with_file_name("ca.key")), 0o600, "the CA key is private");

    // The fingerprint printed at start is the one of the CA the API serves.
    let api = cluster.api();
    let served = api.get("/v1/ca.pem").expect_status(200);
    assert_eq!(served.text.as_bytes(), ca_pem.as_slice(), "/v1/ca.pem is the CA in the data dir");
    let served_path = cluster.dir().join("served-ca.pem");
    std::fs::write(&served_path, &served.text).expect("write the served CA");
    let expected = fingerprint_of(&served_path);
    let master_log = read(&cluster.node("master").log);
    let printed = master_log
        .lines()
        .find_map(|l| l.strip_prefix("plinth: cluster CA ").and_then(|l| l.split(" fingerprint ").nth(1)))
        .unwrap_or_else(|| panic!("no fingerprint printed:\n{master_log}"));
    assert_eq!(printed.trim(), expected, "printed fingerprint against openssl's");
    // curl (which prefers HTTP/2 when offered) trusts it as the README says.
    let url = format!("{}/v1/ca.pem", cluster.master_url());
    let curled = sh("curl", &["-sS", "--max-time", "10", "--cacert", &ca.display().to_string(), &url]);
    assert_eq!(curled.as_bytes(), ca_pem.as_slice(), "curl reads /v1/ca.pem over HTTPS");

    // The agent trades the token once for a certificate, kept privately in its work dir.
    cluster.start_agent("agent-1", &["--ca-file", &ca.display().to_string(), "--token-file", &token]);
    cluster.wait_for_agents(1);
    let tls_dir = cluster.dir().join("agent-1").join("tls");
    assert_eq!(mode(&tls_dir.join("node.key")), 0o600, "the node key is private");
    let issued_log = read(&cluster.node("master").log);
    assert!(
        issued_log.lines().any(|l| l.contains("client certificate issued") && l.contains("agent-1")),
        "the master logs the certificate it issued:\n{issued_log}"
    );
    let agent_identity =
        [std::fs::read(tls_dir.join("node.pem")).unwrap(), std::fs::read(tls_dir.join("node.key")).unwrap()].concat();

    cluster.deploy(&cmd_app("/mtls", "echo hello-over-mutual-tls; sleep 1000", 1));
    let task = cluster.wait_for_running("/mtls", 1, secs(60));
    let task_id = str_field(&task[0], "id").to_string();

    // The master's log proxy reads the log from the agent's HTTPS API with its own certificate.
    wait_until("the log proxy to return the task's output", secs(30), || {
        let reply = api.try_get(&format!("/v1/tasks/{task_id}/logs?stream=stdout"))?;
        if reply.status == 200 && reply.text.contains("hello-over-mutual-tls") {
            Ok(())
        } else {
            Err(format!("{}: {}", reply.status, reply.text))
        }
    });

    // The CLI of an operator with no certificate of the cluster (only the CA to trust the
    // master) reads the task's log and views through the master.
    let ca_arg = ca.display().to_string();
    let logs = cluster.cli(&["logs", "--ca-file", &ca_arg, &task_id]);
    assert!(logs.status.success(), "plinth logs through the master: {}", stderr(&logs));
    assert!(stdout(&logs).contains("hello-over-mutual-tls"), "{}", stdout(&logs));
    let inspected = cluster.cli(&["task", "inspect", "--ca-file", &ca_arg, &task_id]);
    assert!(inspected.status.success(), "plinth task inspect through the master: {}", stderr(&inspected));
    assert!(stdout(&inspected).contains(&task_id), "{}", stdout(&inspected));
    let bad = cluster.cli(&["task", "inspect", "--ca-file", &ca_arg, "../../v2/apps"]);
    assert!(!bad.status.success() && stderr(&bad).contains("is not a task id"), "{}", stderr(&bad));
    let unknown = api.try_get(&format!("/v1/tasks/{task_id}/secrets")).expect("an answer");
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(unknown.json["message"].as_str().unwrap_or_default().contains("no such view"), "{}", unknown.text);

    // The node API through the master: a process agent has no PID 1 of Plinth, a clear 502;
    // an unknown node or view is a 404, a power request for a busy node a 409.
    let agent_id = str_field(&api.get("/master/slaves").json["slaves"][0], "id").to_string();
    let no_node_api = api.try_get(&format!("/v1/nodes/{agent_id}/status")).expect("an answer");
    assert_eq!(no_node_api.status, 502, "{}", no_node_api.text);
    assert!(no_node_api.json["message"].as_str().unwrap_or_default().contains("node API"), "{}", no_node_api.text);
    assert_eq!(api.try_get("/v1/nodes/nobody/status").expect("an answer").status, 404);
    assert_eq!(api.try_get(&format!("/v1/nodes/{agent_id}/secrets")).expect("an answer").status, 404);
    let busy = post(&api, &format!("/v1/nodes/{agent_id}/poweroff"), None, &json!({})).expect("an answer");
    assert_eq!(busy.status, 409, "{}", busy.text);
    assert!(busy.json["message"].as_str().unwrap_or_default().contains("not drained"), "{}", busy.text);

    // The agent protocol: the token without a certificate gets a 401 that says what is missing.
    let sync = json!({"agent_id": "x", "generation": 0});
    let refused = post(&api, "/agent/v1/sync", Some(TOKEN), &sync).expect("an answer over TLS");
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(refused.json["message"].as_str().unwrap_or_default().contains("mutual TLS"), "{}", refused.text);
    // A certificate of another CA does not even finish the handshake.
    let stranger = Http::with_identity(cluster.master_url(), &ca_pem, Some(&foreign_identity("agent-1")));
    let answer = post(&stranger, "/agent/v1/sync", Some(TOKEN), &sync);
    assert!(answer.is_err(), "a foreign certificate is refused: {:?}", answer.map(|r| r.text));
    // The CSR endpoint stays open to the token, and refuses a wrong one.
    let csr = json!({"csr": "not a CSR"});
    let wrong = post(&api, "/agent/v1/certificate", Some("guess"), &csr).expect("an answer");
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let garbage = post(&api, "/agent/v1/certificate", Some(TOKEN), &csr).expect("an answer");
    assert_eq!(garbage.status, 400, "{}", garbage.text);
    assert!(garbage.json["message"].as_str().unwrap_or_default().contains("CSR"), "{}", garbage.text);

    // The agent's own API: HTTPS that requires a certificate of the cluster.
    let agent_url = format!("https://{}:{AGENT_PORT}", cluster.node("agent-1").host.ip);
    let logs = format!("/v1/tasks/{task_id}/logs?stream=stdout");
    let anonymous = Http::with_identity(agent_url.clone(), &ca_pem, None).try_get(&logs);
    assert!(anonymous.is_err(), "no certificate, no answer: {:?}", anonymous.map(|r| r.text));
    let foreign = Http::with_identity(agent_url.clone(), &ca_pem, Some(&foreign_identity("plinth-master")));
    let foreign = foreign.try_get(&logs);
    assert!(foreign.is_err(), "a foreign certificate is refused: {:?}", foreign.map(|r| r.text));
    let plain = Http::new(format!("http://{}:{AGENT_PORT}", cluster.node("agent-1").host.ip)).try_get(&logs);
    assert!(plain.as_ref().map_or(true, |r| r.status != 200), "no plain HTTP: {:?}", plain.map(|r| r.text));
    let member = Http::with_identity(agent_url, &ca_pem, Some(&agent_identity)).get(&logs).expect_status(200);
    assert!(member.text.contains("hello-over-mutual-tls"), "{}", member.text);

    // Restarted without the token, the agent still belongs: its certificate is enough.
    cluster.kill9("agent-1");
    cluster.edit_args("agent-1", |args| {
        let at = args.iter().position(|a| a == "--token-file").expect("the agent had --token-file");
        args.drain(at..at + 2);
    });
    cluster.respawn("agent-1");
    cluster.api().put("/v2/apps/mtls", &json!({"instances": 2})).expect_status(200);
    let tasks = cluster.wait_for_running("/mtls", 2, secs(60));
    assert!(ids(&tasks).contains(&task_id), "the first task was adopted: {}", task_summary(&tasks));
    let agent_log = read(&cluster.node("agent-1").log);
    assert!(!agent_log.contains("refused"), "the agent without its token was not refused:\n{agent_log}");
}
