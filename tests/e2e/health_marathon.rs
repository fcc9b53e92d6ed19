//! Marathon behaviours on a real cluster beyond health: placement constraints
//! (`constraint-demo`), artifact `fetch`, groups with dependencies, and bad input that is
//! refused with a path and changes nothing.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tasks of the app by state.
fn states(cluster: &Cluster, id: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for task in cluster.tasks(id) {
        *counts.entry(task["state"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    counts
}

/// The app's entry in Plinth's queue (`/v1/queue`: Marathon's counts and the reasons in words).
fn queue_entry(api: &Http, id: &str) -> Option<Value> {
    let queue = api.get_json("/v1/queue");
    queue["queue"].as_array()?.iter().find(|e| e["appId"] == id).cloned()
}

/// Waits until exactly `expected` tasks run, each on its own host; returns the hosts.
fn running_hosts(cluster: &Cluster, expected: usize) -> BTreeSet<String> {
    wait_until(&format!("{expected} running constraint-demo tasks"), secs(60), || {
        cluster.check_nodes_alive()?;
        let tasks = cluster.tasks("/constraint-demo");
        let hosts: BTreeSet<String> = tasks.iter().map(|t| cluster.node_of_host(str_field(t, "host"))).collect();
        let running = tasks.iter().filter(|t| t["state"] == "TASK_RUNNING").count();
        if running == expected && tasks.len() == expected && hosts.len() == expected {
            Ok(hosts)
        } else {
            Err(task_summary(&tasks))
        }
    })
}

#[test]
fn constraint_demo_places_one_task_per_host_and_uses_a_new_agent() {
    let mut cluster = Cluster::start("health-constraint", 3);
    let api = cluster.api();
    api.post(
        "/v2/apps",
        &json!({
            "id": "constraint-demo", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 6,
            "constraints": [["hostname", "UNIQUE"]]
        }),
    )
    .expect_status(201);

    running_hosts(&cluster, 3);
    // The other three wait, and the queue says why.
    let entry = wait_until("constraint-demo in /v1/queue with the constraint as reason", secs(30), || {
        let entry = queue_entry(&api, "/constraint-demo").ok_or("not queued")?;
        if entry["count"] == 3 && entry.to_string().contains("constraint hostname UNIQUE") {
            Ok(entry)
        } else {
            Err(entry.to_string())
        }
    });
    assert_eq!(entry["count"], 3, "{entry}");
    holds_for("no second task on any host", secs(3), || {
        let counts = states(&cluster, "/constraint-demo");
        if counts.values().sum::<usize>() == 3 {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    });

    // A fourth machine: one more task runs, two still wait.
    cluster.start_agent("agent-4", &[]);
    cluster.wait_for_agents(4);
    let hosts = running_hosts(&cluster, 4);
    assert!(hosts.contains("agent-4"), "{hosts:?}");
    let entry = queue_entry(&api, "/constraint-demo").expect("still queued");
    assert_eq!(entry["count"], 2, "{entry}");
}

/// Serves fixed files over HTTP from the test process (on the bridge address), counting
/// requests per path.
struct FileServer {
    base: String,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl FileServer {
    fn start(ip: Ipv4Addr, files: BTreeMap<String, Vec<u8>>) -> FileServer {
        let listener = TcpListener::bind((ip, 0)).expect("bind the file server");
        let port = listener.local_addr().expect("local addr").port();
        let hits: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let (files, sink) = (Arc::new(files), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (files, sink) = (files.clone(), sink.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    *sink.lock().expect("hits").entry(path.clone()).or_default() += 1;
                    let answer = match files.get(&path) {
                        Some(body) => {
                            let mut a = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            a.extend_from_slice(body);
                            a
                        }
                        None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                    };
                    let _ = stream.write_all(&answer);
                });
            }
        });
        FileServer { base: format!("http://{ip}:{port}"), hits }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().expect("hits").get(path).copied().unwrap_or(0)
    }
}

/// A `.tar.gz` of `files` (name, mode, content), made with tar as a user would.
fn tarball(dir: &std::path::Path, files: &[(&str, u32, &str)]) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    let src = dir.join("artifact-src");
    std::fs::create_dir_all(&src).expect("artifact dir");
    for (name, mode, content) in files {
        let path = src.join(name);
        std::fs::write(&path, content).expect("artifact file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    let out = dir.join("greeter.tar.gz");
    let mut args = vec!["-czf".to_string(), out.display().to_string(), "-C".into(), src.display().to_string()];
    args.extend(files.iter().map(|(name, _, _)| name.to_string()));
    sh("tar", &args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::read(out).expect("tarball")
}

#[test]
fn fetch_downloads_and_extracts_artifacts_before_the_command_runs() {
    let cluster = Cluster::start("health-fetch", 1);
    let api = cluster.api();
    let archive = tarball(
        cluster.dir(),
        &[
            ("greet.sh", 0o755, "#!/bin/sh\nexec python3 -m http.server \"$PORT0\"\n"),
            ("index.html", 0o644, "hello from the archive\n"),
        ],
    );
    let files = BTreeMap::from([
        ("/artifacts/greeter.tar.gz".to_string(), archive),
        ("/artifacts/banner.sh".to_string(), b"#!/bin/sh\necho fetched banner\n".to_vec()),
    ]);
    let server = FileServer::start(cluster.gateway(), files);

    api.post(
        "/v2/apps",
        &json!({
            "id": "fetch-demo", "cpus": 0.1, "mem": 32,
            "cmd": "./banner.sh > banner.txt && ./greet.sh",
            "fetch": [
                {"uri": format!("{}/artifacts/greeter.tar.gz", server.base), "extract": true},
                {"uri": format!("{}/artifacts/banner.sh", server.base), "executable": true}
            ]
        }),
    )
    .expect_status(201);
    let task = cluster.wait_for_running("/fetch-demo", 1, secs(90)).remove(0);
    let ip = cluster.ip_of_host(str_field(&task, "host"));
    let port = task["ports"][0].as_u64().expect("host port");
    let app = Http::new(format!("http://{ip}:{port}"));
    let page = wait_until("the fetched script to serve the archive's page", secs(30), || {
        let reply = app.try_get("/index.html")?;
        if reply.status == 200 {
            Ok(reply.text)
        } else {
            Err(format!("status {}", reply.status))
        }
    });
    assert_eq!(page, "hello from the archive\n");
    let banner = app.try_get("/banner.txt").expect("banner");
    assert_eq!(banner.text, "fetched banner\n", "the executable artifact ran");
    assert_eq!(server.hits("/artifacts/greeter.tar.gz"), 1);

    // A URI that cannot be fetched: the task fails and says which URI.
    api.post(
        "/v2/apps",
        &json!({
            "id": "fetch-missing", "cpus": 0.1, "mem": 16, "cmd": "sleep 1000",
            "uris": [format!("{}/artifacts/missing.tar.gz", server.base)]
        }),
    )
    .expect_status(201);
    let failure = wait_until("the fetch failure on the app", secs(60), || {
        let app = api.try_get("/v2/apps/fetch-missing?embed=app.lastTaskFailure")?.json;
        let failure = app["app"]["lastTaskFailure"].clone();
        if failure.is_object() {
            Ok(failure)
        } else {
            Err(app.to_string())
        }
    });
    assert!(failure["message"].as_str().is_some_and(|m| m.contains("missing.tar.gz")), "{failure}");
    assert!(matches!(failure["state"].as_str(), Some("TASK_FAILED" | "TASK_ERROR")), "{failure}");
}

/// POSTs (or PUTs) a bad definition: 422, with a detail at `path`.
fn refused(reply: Reply, path: &str) {
    assert_eq!(reply.status, 422, "expected 422 for {path}: {}", reply.text);
    let details = reply.json["details"].as_array().cloned().unwrap_or_default();
    assert!(
        details.iter().any(|d| d["path"] == path && d["errors"].as_array().is_some_and(|e| !e.is_empty())),
        "no error at {path}: {}",
        reply.text
    );
}

#[test]
fn bad_input_is_refused_with_a_path_and_groups_start_in_dependency_order() {
    let cluster = Cluster::start("health-bad-input", 1);
    let api = cluster.api();
    let app = |extra: Value| {
        let mut base = json!({"id": "bad", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16});
        for (k, v) in extra.as_object().expect("object") {
            base[k] = v.clone();
        }
        base
    };
    // Something that exists, so "nothing changes" is not trivially true.
    api.post("/v2/apps", &json!({"id": "/keep/db", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16})).expect_status(201);
    cluster.wait_for_running("/keep/db", 1, secs(60));
    let before = (api.get_json("/v2/apps"), api.get_json("/v2/groups"));

    refused(api.post("/v2/apps", &app(json!({"constraints": [["hostname", "SOMETIMES"]]}))), "/constraints(0)");
    refused(api.post("/v2/apps", &app(json!({"constraints": [["hostname", "LIKE"]]}))), "/constraints(0)");
    refused(
        api.post("/v2/apps", &app(json!({"healthChecks": [{"protocol": "HTTP", "portIndex": 1}]}))),
        "/healthChecks(0)/portIndex",
    );
    refused(
        api.post("/v2/apps", &app(json!({"upgradeStrategy": {"minimumHealthCapacity": 1.5}}))),
        "/upgradeStrategy/minimumHealthCapacity",
    );
    refused(
        api.post("/v2/apps", &app(json!({"upgradeStrategy": {"maximumOverCapacity": -0.1}}))),
        "/upgradeStrategy/maximumOverCapacity",
    );
    // The same checks on an update of an existing app, and inside a group.
    refused(api.put("/v2/apps/keep/db", &json!({"constraints": [["hostname", "LIKE"]]})), "/constraints(0)");
    refused(
        api.post(
            "/v2/groups",
            &json!({"id": "/shop", "apps": [app(json!({"id": "web", "constraints": [["rack", "MAX_PER"]]}))]}),
        ),
        "/apps(0)/constraints(0)",
    );
    // A cycle between groups' dependencies.
    let cycle = json!({"id": "/shop", "groups": [
        {"id": "frontend", "dependencies": ["/shop/backend"], "apps": [app(json!({"id": "web"}))]},
        {"id": "backend", "dependencies": ["../frontend"], "apps": [app(json!({"id": "api"}))]}]});
    let reply = api.post("/v2/groups", &cycle);
    assert_eq!(reply.status, 422, "{}", reply.text);
    let detail = &reply.json["details"][0];
    assert!(
        detail["path"].as_str().is_some_and(|p| p.starts_with("/groups(") && p.ends_with("/dependencies")),
        "{}",
        reply.text
    );
    let message = detail["errors"][0].as_str().unwrap_or_default();
    assert!(
        message.contains("cycle") && message.contains("/shop/frontend") && message.contains("/shop/backend"),
        "{message}"
    );
    // Depending on something that does not exist.
    refused(
        api.post(
            "/v2/groups",
            &json!({"id": "/shop", "apps": [app(json!({"id": "web", "dependencies": ["/nowhere"]}))]}),
        ),
        "/apps(0)/dependencies",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!((api.get_json("/v2/apps"), api.get_json("/v2/groups")), before, "a refused request changed something");
    assert!(api.get_json("/v2/deployments").as_array().is_some_and(Vec::is_empty));

    // The valid group: the database starts, the service that depends on it starts too;
    // deleting the group removes both.
    let shop = json!({"id": "/shop", "groups": [
        {"id": "backend", "apps": [app(json!({"id": "db"}))]},
        {"id": "frontend", "dependencies": ["../backend"], "apps": [app(json!({"id": "web"}))]}]});
    let plan = api.post("/v2/groups?dryRun=true", &shop).expect_status(200);
    let steps = plan.json["steps"].to_string();
    let (db_at, web_at) = (steps.find("/shop/backend/db"), steps.find("/shop/frontend/web"));
    assert!(db_at.is_some() && web_at.is_some() && db_at < web_at, "dependency order: {steps}");
    let created = api.post("/v2/groups", &shop).expect_status(201);
    assert!(created.json["deploymentId"].is_string(), "{}", created.text);
    cluster.wait_for_running("/shop/backend/db", 1, secs(60));
    cluster.wait_for_running("/shop/frontend/web", 1, secs(60));
    let group = api.get_json("/v2/groups/shop/frontend");
    assert_eq!(group["dependencies"], json!(["/shop/backend"]), "{group}");
    api.post("/v2/groups", &shop).expect_status(409);

    api.delete("/v2/groups/shop").expect_status(200);
    wait_until("the group's tasks to end", secs(60), || {
        let left: Vec<Value> = ["/shop/backend/db", "/shop/frontend/web"]
            .iter()
            .flat_map(|id| {
                api.try_get(&format!("/v2/apps{id}/tasks"))
                    .map(|r| r.json["tasks"].as_array().cloned().unwrap_or_default())
                    .unwrap_or_default()
            })
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(task_summary(&left))
        }
    });
    api.get("/v2/groups/shop").expect_status(404);
    assert_eq!(api.get_json("/v2/apps")["apps"].as_array().map(Vec::len), Some(1));
}
