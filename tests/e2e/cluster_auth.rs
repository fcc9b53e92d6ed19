//! Access control on a real master: with credentials configured every endpoint family
//! refuses strangers (401) and read-only callers' writes (403) with Marathon's JSON, the
//! event stream and callbacks need credentials and never carry apps' env values, pushes to
//! the registry need an admin while agents still pull, the CLI logs in, and no secret is
//! on a command line or in a log. Also: every error of every route is JSON.

use crate::common::*;
use plinth_testkit::busybox_hello;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};

const ADMIN: &str = "admin:Adm1n-pass-7f3e";
const VIEWER: &str = "viewer:V1ew-pass-92c1";
const ADMIN_TOKEN: &str = "tok-adm1n-5b7d9e";
const READ_TOKEN: &str = "tok-read-8a2c4f";
const ENV_SECRET: &str = "db-password-e4d1";
const SECRETS: [&str; 5] = ["Adm1n-pass-7f3e", "V1ew-pass-92c1", ADMIN_TOKEN, READ_TOKEN, ENV_SECRET];

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
enum As {
    Nobody,
    Basic(&'static str),
    Bearer(&'static str),
}

struct Api {
    base: String,
    client: reqwest::blocking::Client,
}

impl Api {
    fn new(base: String) -> Api {
        plinth_oci::tls::install_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(secs(15))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Api { base, client }
    }

    fn builder(&self, who: As, method: &str, path: &str) -> reqwest::blocking::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let request = self.client.request(method, format!("{}{path}", self.base));
        match who {
            As::Nobody => request,
            As::Basic(pair) => {
                let (user, password) = pair.split_once(':').expect("user:password");
                request.basic_auth(user, Some(password))
            }
            As::Bearer(token) => request.header("authorization", format!("Bearer {token}")),
        }
    }

    /// Status, `WWW-Authenticate`, body as JSON (`Null` if not JSON), body text.
    fn call(&self, who: As, method: &str, path: &str, body: Option<Value>) -> (u16, Option<String>, Value, String) {
        let mut request = self.builder(who, method, path);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
        let status = response.status().as_u16();
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("").to_string());
        let text = response.text().unwrap_or_default();
        (status, challenge, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }
}

fn message(body: &Value, text: &str) -> String {
    body["message"].as_str().unwrap_or_else(|| panic!("no JSON message in {text:?}")).to_string()
}

/// An SSE stream read on a thread, with credentials.
fn event_stream(api: &Api, who: As, path: &str) -> Arc<Mutex<Vec<(String, Value)>>> {
    let client = reqwest::blocking::Client::builder().timeout(None).no_proxy().build().expect("client");
    let response = api_with(client, &api.base).builder(who, "GET", path).send().expect("open the event stream");
    assert_eq!(response.status().as_u16(), 200, "event stream {path}");
    let events: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = events.clone();
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("event:") {
                name = rest.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("data:") {
                let value = serde_json::from_str(rest.trim()).unwrap_or(Value::Null);
                sink.lock().expect("events").push((std::mem::take(&mut name), value));
            }
        }
    });
    events
}

fn api_with(client: reqwest::blocking::Client, base: &str) -> Api {
    Api { base: base.to_string(), client }
}

/// A master with users and tokens of both roles, callbacks allowed under the prefix `allow`
/// gives, and `agents` agents.
fn secured_cluster(test: &str, agents: usize, allow: impl FnOnce(&Cluster) -> String) -> Cluster {
    let mut cluster = Cluster::new(test);
    let allow = allow(&cluster);
    let dir = cluster.dir().to_path_buf();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a credentials file");
        path.display().to_string()
    };
    let admins = write("admins", &format!("# admins\n{ADMIN}\n"));
    let viewers = write("viewers", &format!("{VIEWER}\n"));
    let tokens = write("tokens", &format!("{ADMIN_TOKEN}\n"));
    let read_tokens = write("read-tokens", &format!("{READ_TOKEN}\n"));
    cluster.start_master(&[
        "--http-credentials-file",
        &admins,
        "--http-readonly-credentials-file",
        &viewers,
        "--api-token-file",
        &tokens,
        "--api-readonly-token-file",
        &read_tokens,
        "--event-callback-allow",
        &allow,
    ]);
    for i in 1..=agents {
        cluster.start_agent(&format!("agent-{i}"), &[]);
    }
    let api = Api::new(cluster.master_url());
    wait_until(&format!("{agents} active agents"), secs(60), || {
        cluster.check_nodes_alive()?;
        let (status, _, body, text) = api.call(As::Basic(VIEWER), "GET", "/master/slaves", None);
        let active = body["slaves"].as_array().map(|s| s.iter().filter(|a| a["active"] == true).count());
        if status == 200 && active == Some(agents) {
            Ok(())
        } else {
            Err(text)
        }
    });
    cluster
}

#[test]
fn credentials_guard_every_endpoint_family_events_callbacks_and_the_registry() {
    // The callback receiver listens on the bridge address, where the master reaches the test.
    let mut receiver = None;
    let cluster = secured_cluster("auth", 1, |cluster| {
        let server = CallbackServer::start(cluster.gateway());
        let url = server.url.clone();
        receiver = Some(server);
        url
    });
    let callback = receiver.expect("the callback server started");
    let gateway = cluster.gateway();
    let api = Api::new(cluster.master_url());
    let master_ip = cluster.master_ip();

    // Open to anyone: the ping, the UI's files, the boot files firmware fetches.
    for path in ["/ping", "/ui/", "/ui/js/api.js", "/boot/ipxe?mac=52:54:00:aa:bb:cc"] {
        let (status, _, _, text) = api.call(As::Nobody, "GET", path, None);
        assert!(status == 200 || path.starts_with("/boot"), "{path} is open: {status} {text}");
        assert_ne!(status, 401, "{path}");
    }

    let mac = "/v1/machines/52:54:00:12:34:56";
    let reads = [
        "/v2/apps",
        "/v2/apps/x",
        "/v2/groups",
        "/v2/tasks",
        "/v2/deployments",
        "/v2/queue",
        "/v2/info",
        "/v2/leader",
        "/v2/eventSubscriptions",
        "/v1/info",
        "/v1/tasks",
        "/v1/queue",
        "/v1/deployments",
        "/v1/apps/x",
        "/v1/machines",
        mac,
        "/metrics",
        "/metrics/prometheus",
        "/master/slaves",
        "/master/state",
        "/master/state.json",
        "/",
        "/no/such/thing",
    ];
    let app =
        json!({"id": "/guarded", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "env": {"DB_PASSWORD": ENV_SECRET}});
    let writes: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/v2/apps".into(), Some(app.clone())),
        ("PUT", "/v2/apps/x".into(), Some(json!({"cmd": "sleep 1"}))),
        ("DELETE", "/v2/apps/x".into(), None),
        ("POST", "/v2/apps/x/restart".into(), None),
        ("POST", "/v2/groups".into(), Some(json!({"id": "/g"}))),
        ("POST", "/v2/tasks/delete".into(), Some(json!({"ids": ["x"]}))),
        ("DELETE", "/v2/deployments/x".into(), None),
        ("DELETE", "/v2/queue/x/delay".into(), None),
        ("POST", format!("/v2/eventSubscriptions?callbackUrl={}", callback.url), None),
        ("DELETE", format!("/v2/eventSubscriptions?callbackUrl={}", callback.url), None),
        ("POST", "/master/slaves/x/drain".into(), None),
        ("DELETE", "/master/slaves/x/drain".into(), None),
        ("PUT", mac.into(), Some(json!({"role": "agent"}))),
        ("DELETE", mac.into(), None),
    ];
    let every: Vec<(&str, String, Option<Value>)> =
        reads.iter().map(|p| ("GET", p.to_string(), None)).chain(writes.iter().cloned()).collect();
    for (method, path, body) in &every {
        for who in [As::Nobody, As::Basic("admin:wrong-password"), As::Bearer("not-a-token")] {
            let (status, challenge, json, text) = api.call(who, method, path, body.clone());
            assert_eq!(status, 401, "{method} {path} as {who:?}: {text}");
            assert_eq!(challenge.as_deref(), Some(r#"Basic realm="plinth""#), "{method} {path}");
            let said = message(&json, &text);
            assert!(!said.contains("wrong-password") && !said.contains("not-a-token"), "echoes no secret: {said}");
        }
    }
    for path in reads.iter().filter(|p| !p.contains("/x") && **p != mac && **p != "/no/such/thing") {
        for who in [As::Basic(VIEWER), As::Bearer(READ_TOKEN), As::Basic(ADMIN), As::Bearer(ADMIN_TOKEN)] {
            let (status, _, _, text) = api.call(who, "GET", path, None);
            assert_eq!(status, 200, "GET {path} as {who:?}: {text}");
        }
    }
    for (method, path, body) in &writes {
        for who in [As::Basic(VIEWER), As::Bearer(READ_TOKEN)] {
            let (status, _, json, text) = api.call(who, method, path, body.clone());
            assert_eq!(status, 403, "{method} {path} as {who:?}: {text}");
            assert!(message(&json, &text).contains("read-only"), "{text}");
        }
    }
    assert!(
        api.call(As::Basic(ADMIN), "GET", "/v2/apps", None).2["apps"].as_array().is_some_and(Vec::is_empty),
        "no refused write changed anything"
    );

    // The event stream needs credentials; a reader's stream carries no env value.
    let (status, _, json, text) = api.call(As::Nobody, "GET", "/v2/events", None);
    assert_eq!(status, 401, "{text}");
    message(&json, &text);
    let stream = event_stream(&api, As::Bearer(READ_TOKEN), "/v2/events");

    // Callbacks: only under the allowed prefix, and the allowed one works.
    let elsewhere = format!("http://{gateway}:9/elsewhere");
    let (status, _, json, text) =
        api.call(As::Basic(ADMIN), "POST", &format!("/v2/eventSubscriptions?callbackUrl={elsewhere}"), None);
    assert_eq!(status, 403, "{text}");
    assert!(message(&json, &text).contains("--event-callback-allow"), "{text}");
    let (status, _, _, text) =
        api.call(As::Basic(ADMIN), "POST", &format!("/v2/eventSubscriptions?callbackUrl={}", callback.url), None);
    assert_eq!(status, 200, "{text}");

    // An admin deploys (with a token) an app whose env holds a secret.
    let (status, _, _, text) = api.call(As::Bearer(ADMIN_TOKEN), "POST", "/v2/apps", Some(app));
    assert_eq!(status, 201, "{text}");
    let (status, _, body, _) = api.call(As::Basic(VIEWER), "GET", "/v2/apps/guarded", None);
    assert_eq!((status, body["app"]["env"]["DB_PASSWORD"].as_str()), (200, Some(ENV_SECRET)), "the API still shows it");
    let posted = wait_until("the api_post_event on the stream and at the callback", secs(30), || {
        let on_stream = stream.lock().expect("events").iter().find(|(n, _)| n == "api_post_event").cloned();
        let at_callback = callback.snapshot().into_iter().find(|b| b["eventType"] == "api_post_event");
        match (on_stream, at_callback) {
            (Some((_, streamed)), Some(called)) => Ok((streamed, called)),
            other => Err(format!("{other:?}")),
        }
    });
    for event in [&posted.0, &posted.1] {
        assert_eq!(event["appDefinition"]["env"], json!({"DB_PASSWORD": "<redacted>"}), "{event}");
        assert!(!event.to_string().contains(ENV_SECRET), "{event}");
    }
    wait_until("the app to run", secs(60), || {
        let (_, _, body, text) = api.call(As::Basic(VIEWER), "GET", "/v2/apps/guarded/tasks", None);
        let running = body["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"));
        running.then_some(()).ok_or(text)
    });

    // The registry: anonymous and read-only pushes are refused, an admin's works, and the
    // agent pulls the pushed image without credentials.
    let layout = cluster.dir().join("layout");
    busybox_hello().expect("image").write_oci_layout(&layout, "v1").expect("layout");
    let push = |creds: Option<&str>| {
        let mut args = vec!["copy".to_string(), "--dest-tls-verify=false".into()];
        if let Some(pair) = creds {
            args.extend(["--dest-creds".into(), pair.to_string()]);
        }
        args.extend([format!("oci:{}:v1", layout.display()), format!("docker://{master_ip}:5000/demo/pushed:v1")]);
        std::process::Command::new("skopeo").args(&args).env("HOME", cluster.dir()).output().expect("skopeo")
    };
    let anonymous = push(None);
    assert!(!anonymous.status.success(), "an anonymous push is refused");
    assert!(stderr(&anonymous).to_lowercase().contains("unauthorized"), "{}", stderr(&anonymous));
    let read_only = push(Some(VIEWER));
    assert!(!read_only.status.success(), "a read-only push is refused");
    let pushed = push(Some(ADMIN));
    assert!(pushed.status.success(), "an admin's push works: {}", stderr(&pushed));
    let image_app = json!({"id": "/pushed", "cpus": 0.2, "mem": 64, "container": {"type": "DOCKER", "docker": {
        "image": format!("{master_ip}:5000/demo/pushed:v1"), "network": "BRIDGE",
        "portMappings": [{"containerPort": 3000, "hostPort": 0}]}}});
    let (status, _, _, text) = api.call(As::Basic(ADMIN), "POST", "/v2/apps", Some(image_app));
    assert_eq!(status, 201, "{text}");
    wait_until("the pushed image to run on the agent", secs(90), || {
        let (_, _, body, text) = api.call(As::Basic(ADMIN), "GET", "/v2/apps/pushed/tasks", None);
        let running = body["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"));
        running.then_some(()).ok_or(text)
    });

    // The CLI: a 401 says how to log in; each way of logging in works; read-only cannot write.
    let master = cluster.master_url();
    let home = cluster.dir().join("home");
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let home = home.display().to_string();
        let mut all = vec![("PLINTH_MASTER", master.as_str()), ("HOME", home.as_str())];
        all.extend_from_slice(env);
        plinth(args, &all)
    };
    let refused = cli(&["app", "list"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    let said = stderr(&refused);
    assert!(said.contains("401") && said.contains("--user") && said.contains("PLINTH_API_TOKEN"), "{said}");
    assert!(cli(&["app", "list", "--user", ADMIN], &[]).status.success());
    let token_file = cluster.dir().join("my-token");
    std::fs::write(&token_file, format!("{READ_TOKEN}\n")).expect("token file");
    let listed = cli(&["app", "list", "--token-file", token_file.to_str().expect("utf-8")], &[]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("/guarded"), "{}", stdout(&listed));
    let user = ADMIN.split(':').next().expect("user");
    let password = ADMIN.split(':').nth(1).expect("password");
    assert!(cli(&["app", "list"], &[("PLINTH_USER", user), ("PLINTH_PASSWORD", password)]).status.success());
    let denied = cli(&["app", "destroy", "/guarded"], &[("PLINTH_API_TOKEN", READ_TOKEN)]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(stderr(&denied).contains("403") && stderr(&denied).contains("read-only"), "{}", stderr(&denied));
    std::fs::create_dir_all(home.join(".config/plinth")).expect("config dir");
    std::fs::write(home.join(".config/plinth/credentials"), format!("# mine\n{master} {ADMIN}\n")).expect("file");
    let from_file = cli(&["node", "list"], &[]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));

    // No secret on any command line in the cluster, nor in any node's log.
    for host in ["master", "agent-1"] {
        for pid in netns_pids(&cluster.node(host).host.netns) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            for secret in SECRETS {
                assert!(!cmdline.contains(secret), "pid {pid} on {host} has a secret on its command line: {cmdline}");
            }
        }
        let log = read(&cluster.node(host).log);
        for secret in SECRETS {
            assert!(!log.contains(secret), "{host}'s log holds a secret");
        }
    }
}

#[test]
fn every_error_of_every_route_is_marathon_json_and_answered() {
    let cluster = secured_cluster("auth-errors", 0, |_| "http://127.0.0.1:1/none".into());
    let api = Api::new(cluster.master_url());
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"];
    let mut paths: Vec<String> = [
        "/",
        "/ping",
        "/metrics",
        "/metrics/prometheus",
        "/v2/apps",
        "/v2/apps/",
        "/v2/apps//x",
        "/v2/apps/a/b/restart",
        "/v2/apps/x/tasks/y",
        "/v2/apps/x/versions/nope",
        "/v2/groups",
        "/v2/groups/a/versions",
        "/v2/tasks",
        "/v2/tasks/delete",
        "/v2/deployments",
        "/v2/deployments/%00",
        "/v2/queue",
        "/v2/queue/x/delay",
        "/v2/events",
        "/v2/eventSubscriptions",
        "/v2/eventSubscriptions?callbackUrl=%zz",
        "/v2/info",
        "/v2/leader",
        "/v1/info",
        "/v1/tasks",
        "/v1/tasks/x/logs",
        "/v1/apps/x",
        "/v1/machines",
        "/v1/machines/not-a-mac",
        "/v1/machines/52:54:00:00:00:01",
        "/master/slaves",
        "/master/slaves/x/drain",
        "/master/state",
        "/agent/v1/register",
        "/agent/v1/sync",
        "/agent/v1/status",
        "/boot/vmlinuz",
        "/boot/initramfs.img",
        "/ui/nope.js",
        "/ui/../../etc/passwd",
        "/v2/apps?embed=%ff%fe",
        "/%2e%2e/%2e%2e",
        "/v3/anything",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    // A little deterministic junk on top of the known routes.
    let pieces = ["v2", "apps", "%20", "..", "~", "groups", "%ff", "x", "tasks", "{id}", "versions", ";", "0"];
    let mut seed: u64 = 0x5eed;
    for _ in 0..40 {
        let mut path = String::new();
        for _ in 0..(seed % 4 + 1) {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            path.push('/');
            path.push_str(pieces[usize::try_from(seed >> 33).expect("fits") % pieces.len()]);
        }
        paths.push(path);
    }
    let mut checked = 0;
    for who in [As::Basic(ADMIN), As::Nobody, As::Bearer(READ_TOKEN)] {
        for path in &paths {
            for method in methods {
                let mut request = api.builder(who, method, path);
                if method == "POST" || method == "PUT" {
                    request = request.header("content-type", "application/json").body(r#"{"junk": [1, {"x": null}]}"#);
                }
                let response = request.send().unwrap_or_else(|e| panic!("{method} {path} as {who:?}: {e:#}"));
                let status = response.status().as_u16();
                // Only errors are read: a 200 of /v2/events is a stream that never ends.
                if status >= 400 {
                    let text = response.text().unwrap_or_default();
                    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    assert!(
                        json["message"].is_string(),
                        "{method} {path} as {who:?}: {status} without Marathon's JSON message: {text:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000, "{checked} error answers checked");

    // Not JSON at all, a wrong JSON shape, over-long URIs and headers: JSON too.
    for (method, path, body) in [("POST", "/v2/apps", "{not json"), ("PUT", "/v1/machines/52:54:00:00:00:02", "[1,")] {
        let response =
            api.builder(As::Basic(ADMIN), method, path).header("content-type", "application/json").body(body).send();
        let response = response.expect("answer");
        assert_eq!(response.status().as_u16(), 400);
        let json: Value = serde_json::from_str(&response.text().unwrap_or_default()).expect("JSON");
        assert!(json["message"].is_string(), "{json}");
    }
    let long = format!("/v2/apps/{}", "a".repeat(10_000));
    let (status, _, json, text) = api.call(As::Basic(ADMIN), "GET", &long, None);
    assert_eq!((status, json["message"].is_string()), (414, true), "{text}");
    let response =
        api.builder(As::Basic(ADMIN), "GET", "/v2/apps").header("x-filler", "f".repeat(70_000)).send().expect("answer");
    assert_eq!(response.status().as_u16(), 431);
    assert!(serde_json::from_str::<Value>(&response.text().unwrap_or_default()).expect("JSON")["message"].is_string());

    // A refused request's body is read, so the client reads the refusal, not a reset.
    let big = "x".repeat(900 * 1024);
    for who in [As::Nobody, As::Bearer(READ_TOKEN)] {
        let response = api.builder(who, "POST", "/v2/apps").body(big.clone()).send().expect("an answer, not a reset");
        assert!(matches!(response.status().as_u16(), 401 | 403), "{:?}", response.status());
    }
    let response =
        api.builder(As::Basic(ADMIN), "PATCH", "/v2/tasks").body(big).send().expect("an answer, not a reset");
    assert_eq!(response.status().as_u16(), 405);
    assert!(response.headers().contains_key("allow"), "405 names the allowed methods");
}
