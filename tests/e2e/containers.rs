//! Docker images end to end on a real cluster: Debian's `docker-registry` on the
//! master's loopback holds images the test built from `busybox-static`; the master
//! pulls through its registry on `:5000`, agents pull only from the master, unpack the
//! layers and run real containers (libcontainer) with BRIDGE or HOST networking.

use crate::common::*;
use plinth_testkit::image::{BuiltImage, Compression, Entry, ImageConfig, Layer};
use plinth_testkit::{busybox_hello, netns, Registry};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::Path;

/// Where the upstream registry listens, inside the master's namespace (as in the
/// Marathon tutorial, the image name is `127.0.0.1:5000/...`).
const UPSTREAM: &str = "127.0.0.1:5000";
pub(crate) const HELLO: &str = "127.0.0.1:5000/demo/hello";

/// A cluster whose master runs its registry on its own address and treats the upstream
/// on its loopback as plain HTTP, with `demo/hello:latest` pushed upstream.
pub(crate) struct ImageCluster {
    pub(crate) cluster: Cluster,
    upstream: Registry,
}

impl ImageCluster {
    pub(crate) fn start(test: &str, agents: usize, agent_flags: &[&str]) -> ImageCluster {
        let mut cluster = Cluster::new(test);
        let gateway = cluster.gateway().octets();
        // The master is the first host after the gateway.
        let master_ip = Ipv4Addr::new(gateway[0], gateway[1], gateway[2], gateway[3] + 1);
        let registry_listen = format!("{master_ip}:5000");
        cluster.start_master(&["--registry-listen", &registry_listen, "--insecure-registry", UPSTREAM]);
        assert_eq!(cluster.master_ip(), master_ip, "the master's address");
        let upstream = Registry::start(Some(&cluster.node("master").host.netns), UPSTREAM).expect("docker-registry");
        upstream.push("demo/hello", "latest", &busybox_hello().expect("test image")).expect("push demo/hello");
        for i in 1..=agents {
            cluster.start_agent(&format!("agent-{i}"), agent_flags);
        }
        cluster.wait_for_agents(agents);
        ImageCluster { cluster, upstream }
    }
}

/// GET `http://ip:port/greet/NAME` until it answers 200; returns the body.
pub(crate) fn greet(ip: &str, port: u64, name: &str) -> String {
    wait_until(&format!("{ip}:{port} to greet"), secs(30), || {
        let reply = Http::new(format!("http://{ip}:{port}")).try_get(&format!("/greet/{name}"))?;
        if reply.status == 200 {
            Ok(reply.text)
        } else {
            Err(format!("status {}: {}", reply.status, reply.text))
        }
    })
}

fn host_port(task: &Value) -> u64 {
    task["ports"][0].as_u64().unwrap_or_else(|| panic!("no host port in {task}"))
}

fn task_ip(cluster: &Cluster, task: &Value) -> String {
    cluster.ip_of_host(str_field(task, "host")).to_string()
}

/// The classic Mesos + Marathon tutorial app, unchanged but for the image name.
pub(crate) fn hello_sinatra() -> Value {
    json!({"id":"hello-sinatra","cpus":0.5,"mem":128,"instances":1,"container":{"type":"DOCKER",
      "docker":{"image":HELLO,"network":"BRIDGE","portMappings":
      [{"containerPort":3000,"hostPort":0,"servicePort":9000,"protocol":"tcp"}]}}})
}

/// Waits until the app has a failed task (or a queue entry) and returns the last failure message.
fn wait_for_failure(cluster: &Cluster, app: &str) -> String {
    wait_until(&format!("{app} to report a failure"), secs(90), || {
        let reply = cluster.api().try_get(&format!("/v2/apps{app}"))?;
        let failure = &reply.json["app"]["lastTaskFailure"];
        match failure.get("message").and_then(Value::as_str) {
            Some(message) if !message.is_empty() => Ok(message.to_string()),
            _ => Err(format!("no failure yet: {}", reply.json["app"]["tasks"])),
        }
    })
}

#[test]
fn the_marathon_tutorial_app_runs_from_a_docker_image_on_a_bridge() {
    let ic = ImageCluster::start("ctr-bridge", 1, &[]);
    let cluster = &ic.cluster;
    let api = cluster.api();
    // The tutorial's relative id is created as /hello-sinatra.
    api.post("/v2/apps", &hello_sinatra()).expect_status(201);
    let task = cluster.wait_for_running("/hello-sinatra", 1, secs(90)).remove(0);
    let (ip, port) = (task_ip(cluster, &task), host_port(&task));
    assert!((31000..=31099).contains(&port), "host port {port} from the agent's range");
    // From another namespace (the test process) through the agent's address.
    assert_eq!(greet(&ip, port, "world"), "Hello world!");
    // The task has its own address on the agent's container bridge.
    let container_ip = task["ipAddresses"][0]["ipAddress"].as_str().unwrap_or_default().to_string();
    assert!(container_ip.starts_with("172.31.0."), "container address in {task}");
    // From the agent itself.
    let agent_ns = cluster.node("agent-1").host.netns.clone();
    let (ip2, port2) = (ip.clone(), port);
    let local = netns::run_in(&agent_ns, move || {
        plinth_oci::tls::install_provider();
        reqwest::blocking::get(format!("http://{ip2}:{port2}/greet/agent"))
            .and_then(|r| r.text())
            .map_err(|e| e.to_string())
    });
    assert_eq!(local.as_deref(), Ok("Hello agent!"));

    // inspect: image digest, pid, address, ports, cgroup.
    let id = str_field(&task, "id").to_string();
    let inspect = cluster.agent_api("agent-1").get_json(&format!("/v1/tasks/{id}/inspect"));
    let container = &inspect["container"];
    assert!(container["image_digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{inspect}");
    assert_eq!(container["ip"].as_str(), Some(container_ip.as_str()), "{inspect}");
    assert!(container["pid"].as_i64().is_some_and(|p| p > 1), "{inspect}");
    let out = plinth(&["task", "inspect", &id], &[("PLINTH_MASTER", &cluster.master_url())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&container_ip), "{}", stdout(&out));
    let top = plinth(&["task", "top", &id], &[("PLINTH_MASTER", &cluster.master_url())]);
    assert!(stdout(&top).contains("nc -ll -p"), "top shows the server: {}", stdout(&top));
    let stats = cluster.agent_api("agent-1").get_json(&format!("/v1/tasks/{id}/stats"));
    assert_eq!(stats["memory_limit_bytes"].as_u64(), Some(128 << 20), "{stats}");

    // Scale to 2: two containers on the one agent, two different host ports.
    api.put("/v2/apps/hello-sinatra", &json!({"instances": 2})).expect_status(200);
    let tasks = cluster.wait_for_running("/hello-sinatra", 2, secs(90));
    let ports: std::collections::BTreeSet<u64> = tasks.iter().map(host_port).collect();
    assert_eq!(ports.len(), 2, "two different host ports: {tasks:?}");
    for task in &tasks {
        assert_eq!(greet(&task_ip(cluster, task), host_port(task), "again"), "Hello again!");
    }
}

#[test]
fn host_networking_serves_on_port0_and_agents_pull_only_from_the_master() {
    let mut ic = ImageCluster::start("ctr-host", 2, &[]);
    let cluster = &ic.cluster;
    // HOST networking: the server listens on $PORT0, the host port from the offer.
    let app = |id: &str, agent: &str| {
        json!({"id": id, "cpus": 0.2, "mem": 64, "instances": 1, "constraints": [["hostname", "CLUSTER", agent]],
               "cmd": "exec nc -ll -p $PORT0 -e /app/greet.sh",
               "container": {"type": "DOCKER", "docker": {"image": HELLO, "network": "HOST"}}})
    };
    let task = cluster.deploy(&app("/host-1", "agent-1")).remove(0);
    assert_eq!(greet(&task_ip(cluster, &task), host_port(&task), "host"), "Hello host!");

    // The upstream goes away: the second agent still gets the image, from the master.
    ic.upstream.stop();
    let cluster = &ic.cluster;
    let task = cluster.deploy(&app("/host-2", "agent-2")).remove(0);
    assert_eq!(str_field(&task, "host"), cluster.node("agent-2").host.ip.to_string());
    assert_eq!(greet(&task_ip(cluster, &task), host_port(&task), "cache"), "Hello cache!");
}

#[test]
fn images_pushed_to_the_master_with_skopeo_deploy() {
    let ic = ImageCluster::start("ctr-push", 1, &[]);
    let cluster = &ic.cluster;
    let layout = cluster.dir().join("layout");
    let image = busybox_hello().expect("image");
    image.write_oci_layout(&layout, "v1").expect("layout");
    let target = format!("docker://{}:5000/demo/pushed:v1", cluster.master_ip());
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", layout.display()), &target])
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    let app = json!({"id": "/pushed", "cpus": 0.2, "mem": 64, "container": {"type": "DOCKER", "docker": {
        "image": format!("{}:5000/demo/pushed:v1", cluster.master_ip()), "network": "BRIDGE",
        "portMappings": [{"containerPort": 3000, "hostPort": 0}]}}});
    let task = cluster.deploy(&app).remove(0);
    assert_eq!(greet(&task_ip(cluster, &task), host_port(&task), "laptop"), "Hello laptop!");
}

#[test]
fn a_container_past_its_memory_limit_is_killed_as_oom() {
    let ic = ImageCluster::start("ctr-oom", 1, &[]);
    let cluster = &ic.cluster;
    // tail keeps the last lines of an endless line: it grows far past the 32 MiB limit.
    let app = json!({"id": "/hog", "cpus": 0.2, "mem": 32, "cmd": "head -c 300m /dev/zero | tail",
        "container": {"type": "DOCKER", "docker": {"image": HELLO}}});
    cluster.api().post("/v2/apps", &app).expect_status(201);
    let message = wait_for_failure(cluster, "/hog");
    let failure = cluster.api().get_json("/v2/apps/hog")["app"]["lastTaskFailure"].clone();
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    assert!(message.to_lowercase().contains("memory"), "OOM is named: {failure}");
    cluster.api().delete("/v2/apps/hog").expect_status(200);
}

#[test]
fn bad_images_fail_tasks_with_clear_messages_and_nothing_escapes() {
    let sentinel = Path::new("/tmp/plinth-ctr-escape");
    let _ = std::fs::remove_dir_all(sentinel);
    let ic = ImageCluster::start("ctr-bad", 1, &["--max-layer-mb", "16"]);
    let cluster = &ic.cluster;
    let api = cluster.api();
    let config =
        ImageConfig { cmd: Some(vec!["/bin/sh".into(), "-c".into(), "sleep 600".into()]), ..Default::default() };
    let base = busybox_hello().expect("image").layers[0].clone();
    let with_layer = |layer: Layer| BuiltImage::new(&config, vec![base.clone(), layer]);

    // Hostile layers: a `../` path, a symlink that leads out, then a write through it.
    let escape = with_layer(Layer::new(
        &[Entry::File {
            path: "../../../../../../tmp/plinth-ctr-escape/dotdot".into(),
            mode: 0o644,
            data: b"x".to_vec(),
        }],
        Compression::Gzip,
    ));
    ic.upstream.push("demo/escape", "latest", &escape).expect("push");
    let symlink = with_layer(Layer::new(
        &[
            Entry::Symlink { path: "out".into(), target: "../../../../../../../../tmp/plinth-ctr-escape".into() },
            Entry::File { path: "out/through-symlink".into(), mode: 0o644, data: b"x".to_vec() },
        ],
        Compression::Gzip,
    ));
    ic.upstream.push("demo/symlink", "latest", &symlink).expect("push");
    // A decompression bomb: 64 MiB of zeros, gzip'd to a few KiB, over the 16 MiB cap.
    let bomb = with_layer(Layer::new(
        &[Entry::File { path: "bomb".into(), mode: 0o644, data: vec![0u8; 64 << 20] }],
        Compression::Gzip,
    ));
    ic.upstream.push("demo/bomb", "latest", &bomb).expect("push");
    // A tampered blob: the registry serves other bytes than the digest names.
    let tampered = with_layer(Layer::new(
        &[Entry::File { path: "data".into(), mode: 0o644, data: b"original".to_vec() }],
        Compression::None,
    ));
    ic.upstream.push("demo/tampered", "latest", &tampered).expect("push");
    std::fs::write(ic.upstream.blob_path(&tampered.layers[1].digest), b"tampered").expect("tamper");

    let cases: [(&str, &str, &[&str]); 5] = [
        ("/unknown", "127.0.0.1:5000/demo/nope:latest", &["not found", "unknown"]),
        ("/escape", "127.0.0.1:5000/demo/escape", &[".."]),
        ("/symlink", "127.0.0.1:5000/demo/symlink", &["symlink"]),
        ("/bomb", "127.0.0.1:5000/demo/bomb", &["bomb", "more than"]),
        ("/tampered", "127.0.0.1:5000/demo/tampered", &["digest", "size"]),
    ];
    for (id, image, _) in &cases {
        let app =
            json!({"id": id, "cpus": 0.1, "mem": 32, "container": {"type": "DOCKER", "docker": {"image": image}}});
        api.post("/v2/apps", &app).expect_status(201);
    }
    for (id, image, words) in &cases {
        let message = wait_for_failure(cluster, id);
        let lower = message.to_lowercase();
        assert!(words.iter().any(|w| lower.contains(w)), "{id} ({image}) fails with a clear message, got: {message}");
        // The queue says why the app is not running.
        let queue = api.get_json("/v2/queue");
        let item = queue["queue"].as_array().and_then(|q| q.iter().find(|i| i["app"]["id"] == *id).cloned());
        assert!(item.is_some(), "{id} is in the queue: {queue}");
    }
    // Not stuck: every app deletes at once, and nothing was written outside the store.
    for (id, _, _) in &cases {
        api.delete(&format!("/v2/apps{id}")).expect_status(200);
    }
    assert!(!sentinel.exists(), "a hostile layer wrote outside the layer store");
}

#[test]
fn containers_survive_an_agent_kill_and_are_readopted() {
    let mut ic = ImageCluster::start("ctr-adopt", 1, &[]);
    ic.cluster.api().post("/v2/apps", &hello_sinatra()).expect_status(201);
    let task = ic.cluster.wait_for_running("/hello-sinatra", 1, secs(90)).remove(0);
    let (ip, port, id) = (task_ip(&ic.cluster, &task), host_port(&task), str_field(&task, "id").to_string());
    assert_eq!(greet(&ip, port, "before"), "Hello before!");
    let pid_before =
        ic.cluster.agent_api("agent-1").get_json(&format!("/v1/tasks/{id}/inspect"))["container"]["pid"].clone();

    ic.cluster.kill9("agent-1");
    // The container keeps serving while its agent is gone.
    assert_eq!(greet(&ip, port, "orphan"), "Hello orphan!");
    ic.cluster.respawn("agent-1");
    ic.cluster.wait_for_agents(1);
    let tasks = ic.cluster.wait_for_running("/hello-sinatra", 1, secs(60));
    assert_eq!(str_field(&tasks[0], "id"), id, "the same task, re-adopted");
    let inspect = ic.cluster.agent_api("agent-1").get_json(&format!("/v1/tasks/{id}/inspect"));
    assert_eq!(inspect["container"]["pid"], pid_before, "the same container process: {inspect}");
    assert_eq!(greet(&ip, port, "after"), "Hello after!");

    // Killing the app cleans the container up: no netns file, no runtime state.
    ic.cluster.api().delete("/v2/apps/hello-sinatra").expect_status(200);
    wait_until("the container's leftovers to go", secs(30), || {
        let leftovers: Vec<String> = ["/run/plinth/netns", "/run/plinth/containers"]
            .iter()
            .map(|d| Path::new(d).join(&id))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if leftovers.is_empty() {
            Ok(())
        } else {
            Err(format!("{leftovers:?}"))
        }
    });
}

#[test]
fn with_userns_remap_container_root_is_an_unprivileged_host_user() {
    const START: u32 = 100_000;
    let ic = ImageCluster::start("ctr-userns", 1, &["--userns-remap", "100000:65536"]);
    let cluster = &ic.cluster;
    // Writes its uid to the sandbox and a file at the root of its image, then serves.
    let app = json!({"id": "/remapped", "cpus": 0.2, "mem": 64,
        "cmd": "id -u > /mnt/mesos/sandbox/uid && touch /made-by-root && exec nc -ll -p 3000 -e /app/greet.sh",
        "container": {"type": "DOCKER", "docker": {"image": HELLO, "network": "BRIDGE",
            "portMappings": [{"containerPort": 3000, "hostPort": 0}]}}});
    let task = cluster.deploy(&app).remove(0);
    assert_eq!(greet(&task_ip(cluster, &task), host_port(&task), "userns"), "Hello userns!");

    use std::os::unix::fs::MetadataExt;
    let id = str_field(&task, "id").to_string();
    let agent_dir = cluster.dir().join("agent-1");
    let uid_file = agent_dir.join("tasks").join(&id).join("uid");
    assert_eq!(std::fs::read_to_string(&uid_file).expect("the uid it wrote").trim(), "0", "root inside");
    let written = std::fs::metadata(&uid_file).expect("uid file");
    assert_eq!((written.uid(), written.gid()), (START, START), "what it writes is START's on the host");
    // The process itself, seen from the host.
    let inspect = cluster.agent_api("agent-1").get_json(&format!("/v1/tasks/{id}/inspect"));
    let pid = inspect["container"]["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {inspect}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the container's process");
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default();
    assert_eq!(uids.split_whitespace().collect::<Vec<_>>(), ["100000"; 4], "{status}");
    // Its layers come from the remap's own cache, shifted (the image's files are uid 0).
    let layers = agent_dir.join("images").join("layers-100000-65536");
    let greeter = std::fs::read_dir(&layers)
        .expect("the remap's layer cache")
        .flatten()
        .map(|layer| layer.path().join("app/greet.sh"))
        .find(|path| path.exists())
        .expect("a layer with /app/greet.sh");
    assert_eq!(std::fs::metadata(&greeter).expect("greet.sh").uid(), START);
    let plain_layers = std::fs::read_dir(agent_dir.join("images").join("layers")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(plain_layers, 0, "nothing unpacked unshifted");
}
