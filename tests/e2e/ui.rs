//! The web UI (`/ui/`) in a real browser: Debian's `chromium`, driven by `playwright-core`
//! (`tests/ui/`, installed there by `npm ci`; no browser download), against a real
//! `plinth standalone` in its own network namespace, reached from the test's namespace
//! over the test bridge. Each test runs one scenario script (`node tests/ui/X.mjs URL
//! DIR`) and asserts on its exit code and output; the script asks the test (a line on its
//! stdout, answered on its stdin) when the master must stop or start under the page.
//! Screenshots of every view land in `target/tmp/ui/<scenario>/`.

use crate::common::*;
use plinth_testkit::{busybox_hello, Registry};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const UI_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui");
const CHROMIUM: &str = "/usr/bin/chromium";
/// A whole scenario, browser start to close (they take well under a minute here).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(480);
const NODE: &str = "solo";

/// Says what is missing, and how to get it, before anything starts.
fn check_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(node.as_ref().is_ok_and(|o| o.status.success()), "the UI tests need Node.js (`node`): {node:?}");
    assert!(
        Path::new(UI_TESTS).join("node_modules/playwright-core/package.json").is_file(),
        "the UI tests need playwright-core: run `npm ci` in {UI_TESTS}"
    );
    assert!(Path::new(CHROMIUM).is_file(), "the UI tests need Debian's chromium: apt-get install chromium");
}

/// The directory a scenario's screenshots go to (emptied first).
fn screenshot_dir(scenario: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the screenshot dir");
    dir
}

/// `plinth standalone` with its agent registered; the master's URL.
fn standalone(test: &str) -> (Cluster, String) {
    let mut cluster = Cluster::new(test);
    cluster.start_standalone(NODE);
    let url = format!("http://{}:{MASTER_PORT}", cluster.node(NODE).host.ip);
    wait_for_agent(&url);
    (cluster, url)
}

fn wait_for_agent(url: &str) {
    let api = Http::new(url);
    wait_until("the embedded agent to be active", secs(60), || {
        let slaves = api.try_get("/master/slaves")?.json;
        let active = slaves["slaves"].as_array().is_some_and(|s| s.iter().any(|a| a["active"] == true));
        if active {
            Ok(())
        } else {
            Err(slaves.to_string())
        }
    });
}

/// The node process and its browser, killed (whole process group) if the test ends first.
struct Script {
    child: Child,
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = i32::try_from(self.child.id()).expect("a pid fits in pid_t");
            // SAFETY: kill(2) on the process group of a child we spawned (its own group).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Runs `tests/ui/<scenario>.mjs` against the cluster's standalone node, answering its
/// control requests; panics with its whole output unless it exits 0. Returns the output.
fn run_scenario(cluster: &mut Cluster, url: &str, scenario: &str) -> String {
    check_tools();
    let shots = screenshot_dir(scenario);
    // The browser gets a namespace of its own on the test bridge: in the host's, every
    // veth another test adds or removes is a "network change" to chromium, which then
    // aborts the page's module loads (net::ERR_NETWORK_CHANGED) and the UI never starts.
    let browser = cluster.add_host(&format!("browser-{scenario}"));
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", browser.netns))
        .arg("node")
        .arg(Path::new(UI_TESTS).join(format!("{scenario}.mjs")))
        .arg(url)
        .arg(&shots)
        .current_dir(UI_TESTS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .process_group(0);
    let mut script = Script { child: command.spawn().unwrap_or_else(|e| panic!("start node: {e}")) };
    let mut stdin: ChildStdin = script.child.stdin.take().expect("piped stdin");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = script.child.stdout.take().expect("piped stdout");
    let stderr = script.child.stderr.take().expect("piped stderr");
    let err_tx = lines_tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if err_tx.send(format!("[stderr] {line}")).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut output = String::new();
    loop {
        let left = SCENARIO_TIMEOUT.saturating_sub(started.elapsed());
        match lines.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                eprintln!("{scenario}: {line}");
                output.push_str(&line);
                output.push('\n');
                if let Some(what) = line.strip_prefix("@@control ") {
                    control(cluster, url, what.trim());
                    writeln!(stdin, "done {}", what.trim()).expect("answer the script");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{scenario} did not finish within {SCENARIO_TIMEOUT:?}; its output:\n{output}")
            }
        }
    }
    let status = script.child.wait().expect("wait for node");
    assert!(
        status.success(),
        "{scenario} failed ({status}); screenshots in {}; its output:\n{output}",
        shots.display()
    );
    assert!(output.contains(&format!("ui {scenario}: all ")), "{scenario} did not say it passed:\n{output}");
    output
}

/// What a script may ask: stop the master (kill -9 of the standalone process: master and
/// agent; tasks keep running) or start it again (same dirs; it adopts them).
fn control(cluster: &mut Cluster, url: &str, what: &str) {
    match what {
        "stop-master" => cluster.kill9(NODE),
        "start-master" => {
            cluster.respawn(NODE);
            let api = Http::new(url);
            wait_until("the master to answer again", secs(60), || {
                cluster.check_nodes_alive()?;
                api.try_get("/ping").map(|_| ())
            });
            wait_for_agent(url);
        }
        other => panic!("the script asked for an unknown control: {other}"),
    }
}

fn steps(output: &str) -> usize {
    output.lines().filter(|l| l.starts_with("step ok: ")).count()
}

#[test]
fn unit_tests_of_the_ui_modules() {
    let output = Command::new("node")
        .args(["--test", "unit.test.mjs"])
        .current_dir(UI_TESTS)
        .output()
        .unwrap_or_else(|e| panic!("run node --test: {e}"));
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "node --test failed:\n{text}");
    assert!(text.contains("# fail 0"), "{text}");
}

#[test]
fn a_user_creates_scales_kills_edits_rolls_back_and_destroys_hello() {
    let (mut cluster, url) = standalone("ui-lifecycle");
    // API clients keep the master's answer at `/`; browsers are sent to the UI.
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("HTTP client");
    let api_client = client.get(format!("{url}/")).header("accept", "application/json").send().expect("GET /");
    assert_eq!(api_client.status().as_u16(), 200);
    let browser = client.get(format!("{url}/")).header("accept", "text/html,*/*;q=0.8").send().expect("GET /");
    assert_eq!(browser.status().as_u16(), 303);
    assert_eq!(browser.headers()["location"], "/ui/");
    let page = client.get(format!("{url}/ui/")).send().expect("GET /ui/");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let missing = client.get(format!("{url}/ui/nope.js")).send().expect("GET /ui/nope.js");
    assert_eq!(missing.status().as_u16(), 404);
    let body: serde_json::Value = missing.json().expect("a JSON 404");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("/ui/nope.js")), "{body}");

    let output = run_scenario(&mut cluster, &url, "lifecycle");
    assert!(steps(&output) >= 12, "{output}");
}

#[test]
fn bad_input_and_waiting_apps_are_explained() {
    let (mut cluster, url) = standalone("ui-bad-input");
    let output = run_scenario(&mut cluster, &url, "bad_input");
    assert!(steps(&output) >= 10, "{output}");
}

#[test]
fn the_page_says_when_the_master_is_gone_and_when_it_is_back() {
    let (mut cluster, url) = standalone("ui-outage");
    let output = run_scenario(&mut cluster, &url, "outage");
    assert!(output.contains("@@control stop-master") && output.contains("@@control start-master"), "{output}");
    assert!(steps(&output) >= 5, "{output}");
}

#[test]
fn a_docker_bridge_tasks_host_port_links_open_the_app() {
    // The standalone is the first host after the gateway; its registry listens on that
    // address, so the upstream (`127.0.0.1:5000`, plain HTTP) can sit on its loopback.
    let mut cluster = Cluster::new("ui-docker-links");
    let gateway = cluster.gateway().octets();
    let ip = Ipv4Addr::new(gateway[0], gateway[1], gateway[2], gateway[3] + 1);
    let registry_listen = format!("{ip}:5000");
    cluster
        .start_standalone_with(NODE, &["--registry-listen", &registry_listen, "--insecure-registry", "127.0.0.1:5000"]);
    assert_eq!(cluster.node(NODE).host.ip, ip, "the standalone's address");
    let upstream = Registry::start(Some(&cluster.node(NODE).host.netns), "127.0.0.1:5000").expect("docker-registry");
    upstream.push("demo/hello", "latest", &busybox_hello().expect("test image")).expect("push demo/hello");
    let url = format!("http://{ip}:{MASTER_PORT}");
    wait_for_agent(&url);
    let output = run_scenario(&mut cluster, &url, "docker_links");
    assert!(steps(&output) >= 4, "{output}");
}

#[test]
fn with_credentials_the_page_asks_for_them_and_a_read_only_user_is_refused_changes() {
    let mut cluster = Cluster::new("ui-login");
    let admins = cluster.dir().join("admins");
    let readers = cluster.dir().join("readers");
    std::fs::write(&admins, "ops:s3cret\n").expect("admin credentials");
    std::fs::write(&readers, "viewer:look\n").expect("read-only credentials");
    cluster.start_standalone_with(
        NODE,
        &[
            "--http-credentials-file",
            &admins.display().to_string(),
            "--http-readonly-credentials-file",
            &readers.display().to_string(),
        ],
    );
    let url = format!("http://{}:{MASTER_PORT}", cluster.node(NODE).host.ip);
    let output = run_scenario(&mut cluster, &url, "login");
    assert!(steps(&output) >= 6, "{output}");
}
