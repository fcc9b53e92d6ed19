//! Marathon clients, unchanged, against a real cluster (a master and two agents): the PyPI
//! `marathon` client (0.13.0, a strict client: its models refuse fields Marathon does not
//! have) driving every call it offers that Plinth supports (`tests/marathon/client_check.py`),
//! and the `curl` lines of Marathon's documentation, with the `text/plain` `/v2/tasks` that
//! HAProxy bridge scripts parse. The client is installed once into a virtualenv under
//! `target/` (PyPI must be reachable the first time; `python3` with `venv`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;

const CLIENT: &str = "marathon==0.13.0";

/// The Cargo target directory this test binary was built into (it holds `CACHEDIR.TAG`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(output.status.success(), "{what} failed:\n{}\n{}", stdout(&output), stderr(&output));
    output
}

/// A virtualenv with the client, made once per client version and kept under `target/`
/// (a half-made one, without its marker, is made again).
fn client_venv() -> PathBuf {
    let venv = target_dir().join(format!("marathon-client-venv-{}", CLIENT.replace("==", "-")));
    let marker = venv.join(".installed");
    if marker.exists() {
        return venv;
    }
    let _ = fs::remove_dir_all(&venv);
    let created = Command::new("python3").args(["-m", "venv"]).arg(&venv).output();
    match created {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "python3 -m venv failed (Debian: apt-get install python3-venv):\n{}\n{}",
            stdout(&output),
            stderr(&output)
        ),
        Err(e) => panic!("cannot run python3 (Debian: apt-get install python3 python3-venv): {e}"),
    }
    run(
        Command::new(venv.join("bin/pip")).args(["install", "--disable-pip-version-check", "--quiet", CLIENT]),
        &format!("pip install {CLIENT} (from PyPI)"),
    );
    fs::write(&marker, CLIENT).expect("mark the virtualenv complete");
    venv
}

/// A command that talks to the test network directly, never through a proxy.
fn direct(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(var);
    }
    command.env("NO_PROXY", "*").env("no_proxy", "*");
    command
}

#[test]
fn the_python_marathon_client_drives_every_call_unchanged() {
    let venv = client_venv();
    let cluster = Cluster::start("marathon-client", 2);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/marathon/client_check.py");
    let output = direct(venv.join("bin/python"))
        .arg(&script)
        .args(["--master", &cluster.master_url(), "--callback-host", &cluster.gateway().to_string()])
        .output()
        .expect("run the client check");
    let (out, err) = (stdout(&output), stderr(&output));
    println!("{out}");
    assert!(output.status.success(), "the marathon client failed:\n{out}\n{err}");
    assert!(out.contains("all calls passed"), "{out}\n{err}");
}

/// `curl` with the usual flags of Marathon's documentation examples.
fn curl(args: &[&str]) -> String {
    stdout(&run(direct("curl").args(["-sS", "--max-time", "20"]).args(args), &format!("curl {}", args.join(" "))))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What a HAProxy bridge makes of `GET /v2/tasks` as `text/plain`: one `listen` block per
/// app and service port with a `server` line per task address (read the way those shell
/// scripts read it: words of a line, app id, service port, then addresses).
const BRIDGE: &str = r#"
curl -sSf --max-time 10 -H 'Accept: text/plain' "$1/v2/tasks" | while read -r line; do
  set -- $line
  [ $# -ge 2 ] || continue
  app=$1 port=$2; shift 2
  case $port in *[!0-9]*) continue ;; esac
  echo "listen $app-$port"
  echo "  bind 0.0.0.0:$port"
  n=0
  for server in "$@"; do n=$((n + 1)); echo "  server $app-$n $server check"; done
done
"#;

#[test]
fn curl_lines_of_marathons_documentation_work() {
    let cluster = Cluster::start("marathon-curl", 2);
    let m = cluster.master_url();

    let app = cluster.dir().join("app.json");
    fs::write(
        &app,
        r#"{"id": "client-curl", "cmd": "exec python3 -m http.server $PORT0", "cpus": 0.1, "mem": 32, "instances": 2}"#,
    )
    .expect("write app.json");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        &format!("{m}/v2/apps"),
        "-d",
        &format!("@{}", app.display()),
    ]);
    assert_eq!(code, "201");
    let tasks = cluster.wait_for_running("/client-curl", 2, secs(60));
    let addresses: Vec<String> = tasks
        .iter()
        .map(|t| format!("{}:{}", str_field(t, "host"), t["ports"][0].as_u64().unwrap_or_default()))
        .collect();
    let service_port = tasks[0]["servicePorts"][0].as_u64().expect("a service port");

    // The text HAProxy bridges parse, from both listings.
    let text = curl(&["-H", "Accept: text/plain", &format!("{m}/v2/tasks")]);
    let line = text.lines().find(|l| l.starts_with("client-curl\t")).unwrap_or_else(|| panic!("{text:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1], service_port.to_string(), "{line:?}");
    let mut listed: Vec<String> = words[2..].iter().map(|s| s.to_string()).collect();
    let mut expected = addresses.clone();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "{line:?}");
    let per_app = curl(&["-H", "Accept: text/plain", &format!("{m}/v2/apps/client-curl/tasks")]);
    assert_eq!(per_app.lines().collect::<Vec<_>>(), vec![line], "{per_app:?}");
    let config = stdout(&run(direct("bash").args(["-c", BRIDGE, "bridge", &m]), "the HAProxy bridge"));
    assert!(config.contains(&format!("listen client-curl-{service_port}\n")), "{config}");
    for address in &addresses {
        assert!(config.contains(&format!(" {address} check")), "{address} in\n{config}");
    }

    // Marathon's JSON where the documentation pipes it to a JSON tool.
    let info = json(&curl(&[&format!("{m}/v2/info")]));
    assert_eq!(info["http_config"]["http_port"], 8080, "{info}");
    assert!(info["zookeeper_config"].is_object() && info.get("storage").is_none(), "{info}");
    let apps = json(&curl(&["-H", "Accept: application/json", &format!("{m}/v2/apps?embed=apps.tasks")]));
    assert_eq!(apps["apps"][0]["tasks"].as_array().map(Vec::len), Some(2), "{apps}");
    let tasks = json(&curl(&[&format!("{m}/v2/tasks")]));
    assert!(tasks["tasks"].as_array().is_some_and(|t| t.iter().all(|t| t.get("agentId").is_none())), "{tasks}");
    let metrics = json(&curl(&[&format!("{m}/metrics")]));
    assert!(metrics["counters"].is_object() && metrics["gauges"].is_object(), "{metrics}");
    let scraped = curl(&["-H", "Accept: text/plain", &format!("{m}/metrics")]);
    assert!(scraped.contains("# TYPE plinth_tasks gauge"), "{scraped}");
    assert!(curl(&[&format!("{m}/metrics/prometheus")]).contains("plinth_http_requests_total"));

    // Scale with PUT, the events stream, delete.
    let scaled = json(&curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        &format!("{m}/v2/apps/client-curl"),
        "-d",
        r#"{"instances": 3}"#,
    ]));
    assert!(scaled["deploymentId"].is_string() && scaled["version"].is_string(), "{scaled}");
    cluster.wait_for_running("/client-curl", 3, secs(60));
    // `curl -N` reads the stream until --max-time ends it (exit 28), as a user's would.
    let streamed = direct("curl")
        .args(["-sS", "-N", "--max-time", "2", "-H", "Accept: text/event-stream", &format!("{m}/v2/events")])
        .output()
        .expect("curl the event stream");
    let events = stdout(&streamed);
    assert!(events.contains("event: event_stream_attached\ndata: {"), "{events}");
    let deleted = json(&curl(&["-X", "DELETE", &format!("{m}/v2/apps/client-curl")]));
    assert!(deleted["deploymentId"].is_string(), "{deleted}");
    let old = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        &format!("{m}/v2/apps"),
        "-d",
        r#"{"id": "old", "cmd": "x", "container": {"image": "docker:///libmesos/ubuntu"}}"#,
    ]);
    let old = json(&old);
    let message = old["details"][0]["errors"][0].as_str().unwrap_or_default();
    assert!(
        message.contains("before 1.0") && message.contains("\"docker\": {\"image\": \"libmesos/ubuntu\"}"),
        "{old}"
    );
}
