//! The Vagrant playground for real: `vagrant up` with the project's Vagrantfile (Debian's
//! `vagrant` + `vagrant-libvirt`) against a `libvirtd` this test starts inside a network
//! namespace of its own, so libvirt's network and the VMs' traffic never leave it. The
//! README's playground walk-through is run block by block from the README itself, with the
//! cluster's state checked after each block; then `vagrant destroy -f` must leave no
//! domain, network or process behind.
//!
//! Long: three VMs boot under software emulation (about 10 minutes here). `vagrant validate`
//! and the Vagrantfile's refusals of bad input are checked first, in seconds.
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MASTER: &str = "http://192.168.77.2:8080";
const TOUR_START: &str = "<!-- playground-tour -->";
const TOUR_END: &str = "<!-- /playground-tour -->";

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn vagrant_installed() -> bool {
    Command::new("vagrant").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `vagrant ARGS` in the project directory with state kept in `dir` (never in the tree).
fn vagrant_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("vagrant")
        .args(args)
        .current_dir(project())
        .env("VAGRANT_HOME", dir.join("home"))
        .env("VAGRANT_DOTFILE_PATH", dir.join("dot"))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run vagrant")
}

#[test]
fn vagrantfile_validates_and_refuses_bad_input_with_a_clear_message() {
    if !vagrant_installed() {
        panic!("vagrant is not installed: run scripts/setup.sh (scripts/packages-pxe.txt lists it)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for nodes in ["2", "3", "0"] {
        let out = vagrant_in(dir.path(), &["validate"], &[("NODES", nodes)]);
        assert!(out.status.success() && text(&out).contains("validated successfully"), "NODES={nodes}: {}", text(&out));
    }
    for nodes in ["abc", "-1", "2.5", ""] {
        let out = vagrant_in(dir.path(), &["validate"], &[("NODES", nodes)]);
        assert!(!out.status.success(), "NODES={nodes:?} must be refused");
        assert!(text(&out).contains("NODES must be a whole number"), "NODES={nodes:?}: {}", text(&out));
    }
    for masters in ["1", "3", "5"] {
        let out = vagrant_in(dir.path(), &["validate"], &[("MASTERS", masters)]);
        assert!(out.status.success(), "MASTERS={masters}: {}", text(&out));
    }
    for masters in ["2", "0", "x", ""] {
        let out = vagrant_in(dir.path(), &["validate"], &[("MASTERS", masters)]);
        assert!(!out.status.success(), "MASTERS={masters:?} must be refused");
        assert!(text(&out).contains("MASTERS must be 1, 3 or 5"), "MASTERS={masters:?}: {}", text(&out));
    }
    // Without the built image, `vagrant up` names the script that builds it, before
    // touching libvirt at all.
    let missing = dir.path().join("no-image");
    let out = vagrant_in(dir.path(), &["up"], &[("PLINTH_IMAGE", missing.to_str().expect("utf-8 path"))]);
    assert!(!out.status.success());
    assert!(text(&out).contains("scripts/vagrant-image.sh"), "{}", text(&out));
    assert!(!dir.path().join("dot").join("machines").join("master").join("libvirt").join("id").exists());
}

/// A `libvirtd` + `virtlogd` of this test, in a network namespace of this test. Dropping it
/// stops both by pid and removes the namespace.
struct Libvirt {
    netns: String,
    daemons: Vec<Child>,
    logs: PathBuf,
}

impl Libvirt {
    fn start(logs: &Path) -> Libvirt {
        // libvirt's system sockets are in /run/libvirt: a daemon already there is not ours.
        if UnixStream::connect("/run/libvirt/libvirt-sock").is_ok() {
            panic!("a libvirtd already listens on /run/libvirt/libvirt-sock; this test starts its own: stop it first");
        }
        let netns = format!("plinth-vagrant-{}", std::process::id());
        run("ip", &["netns", "add", &netns]);
        let mut libvirt = Libvirt { netns, daemons: Vec::new(), logs: logs.to_path_buf() };
        run("ip", &["-n", &libvirt.netns, "link", "set", "lo", "up"]);
        for daemon in ["virtlogd", "libvirtd"] {
            let log = std::fs::File::create(logs.join(format!("{daemon}.log"))).expect("daemon log");
            let child = libvirt
                .command(daemon, &[])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {daemon} (package libvirt-daemon-system): {e}"));
            libvirt.daemons.push(child);
        }
        let end = Instant::now() + Duration::from_secs(60);
        while !Command::new("virsh")
            .args(["-c", "qemu:///system", "version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(Instant::now() < end, "libvirtd did not answer within 60 s:\n{}", libvirt.log("libvirtd"));
            std::thread::sleep(Duration::from_millis(250));
        }
        libvirt
    }

    /// `program ARGS` inside the namespace (network only: `ip netns exec` would remount /sys).
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.netns)).arg(program).args(args);
        command
    }

    fn log(&self, daemon: &str) -> String {
        let log = std::fs::read_to_string(self.logs.join(format!("{daemon}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("ethtool ioctl error")).collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn virsh(&self, args: &[&str]) -> String {
        let out = Command::new("virsh").args(["-c", "qemu:///system"]).args(args).output().expect("run virsh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn names(&self, args: &[&str]) -> Vec<String> {
        self.virsh(args).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        // This daemon is ours alone: whatever domain or network it still has, the test made.
        for domain in self.names(&["list", "--all", "--name"]) {
            self.virsh(&["destroy", &domain]);
            self.virsh(&["undefine", &domain, "--nvram"]);
        }
        for network in self.names(&["net-list", "--all", "--name"]).into_iter().filter(|n| n == "plinth-pxe") {
            self.virsh(&["net-destroy", &network]);
            self.virsh(&["net-undefine", &network]);
        }
        for child in self.daemons.iter_mut().rev() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let end = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
}

/// The playground of one test: its libvirt, its image, Vagrant's state and the consoles.
struct Playground {
    libvirt: Libvirt,
    dir: tempfile::TempDir,
    hello_layout: PathBuf,
}

impl Playground {
    fn new() -> Playground {
        let dir = tempfile::Builder::new().prefix("plinth-playground-").tempdir().expect("tempdir");
        // libvirt runs QEMU as libvirt-qemu: it must reach the kernel, initrd and consoles.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        for sub in ["logs", "consoles", "image"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let hello_layout = dir.path().join("hello-layout");
        plinth_testkit::busybox_hello()
            .expect("greeter image")
            .write_oci_layout(&hello_layout, "latest")
            .expect("layout");
        let libvirt = Libvirt::start(&dir.path().join("logs"));
        Playground { libvirt, dir, hello_layout }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// What a user's shell has: the plinth binary on PATH, the playground's settings.
    fn env(&self) -> Vec<(String, String)> {
        let bin = Path::new(env!("CARGO_BIN_EXE_plinth")).parent().expect("bin dir").display().to_string();
        let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
        let s = |p: PathBuf| p.display().to_string();
        vec![
            ("PATH".into(), path),
            ("PLINTH_BIN".into(), env!("CARGO_BIN_EXE_plinth").into()),
            ("PLINTH_IMAGE".into(), s(self.path("image"))),
            ("VAGRANT_HOME".into(), s(self.path("home"))),
            ("VAGRANT_DOTFILE_PATH".into(), s(self.path("dot"))),
            ("VAGRANT_CHECKPOINT_DISABLE".into(), "1".into()),
            ("VAGRANT_DEFAULT_PROVIDER".into(), "libvirt".into()),
            // KVM may be missing or hang here: software emulation, one vCPU per VM (2 cores).
            ("PLINTH_LIBVIRT_DRIVER".into(), "qemu".into()),
            ("PLINTH_VM_CPUS".into(), "1".into()),
            ("PLINTH_CONSOLE_DIR".into(), s(self.path("consoles"))),
            ("HELLO_IMAGE".into(), format!("oci:{}:latest", self.hello_layout.display())),
        ]
    }

    /// Runs one block of the walk-through in the namespace, from the project directory.
    fn shell(&self, script: &str) -> Output {
        self.libvirt
            .command("bash", &["-euo", "pipefail", "-c", script])
            .current_dir(project())
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .expect("run bash")
    }

    fn spawn_shell(&self, script: &str) -> Child {
        self.libvirt
            .command("bash", &["-euo", "pipefail", "-c", script])
            .current_dir(project())
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bash")
    }

    /// GET on the master's API from inside the namespace.
    fn api(&self, path: &str) -> Value {
        let out = self
            .libvirt
            .command("curl", &["-fsS", "--max-time", "10", &format!("{MASTER}{path}")])
            .output()
            .expect("curl");
        assert!(out.status.success(), "GET {path}: {}\n{}", text(&out), self.diagnostics());
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", text(&out)))
    }

    fn consoles(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.path("consoles")).into_iter().flatten().flatten() {
            let log = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = log.lines().collect();
            all.push_str(&format!(
                "--- {} ---\n{}\n",
                entry.path().display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
        all
    }

    fn diagnostics(&self) -> String {
        format!("{}\n--- libvirtd ---\n{}", self.consoles(), self.libvirt.log("libvirtd"))
    }

    /// Runs block `n` of the walk-through; fails with its output and the VMs' consoles.
    fn step(&self, blocks: &[String], n: usize) -> String {
        let started = Instant::now();
        let out = self.shell(&script(blocks, n));
        let output = text(&out);
        eprintln!("--- walk-through block {n} ({:.0?}) ---\n{}\n{output}", started.elapsed(), blocks[n]);
        assert!(
            out.status.success(),
            "walk-through block {n} failed:\n{}\n{output}\n{}",
            blocks[n],
            self.diagnostics()
        );
        output
    }

    /// Processes in the test's namespace (libvirt's QEMUs and dnsmasq included), daemons aside.
    fn processes_left(&self) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::metadata(format!("/run/netns/{}", self.libvirt.netns)).expect("netns").ino();
        let daemons: Vec<u32> = self.libvirt.daemons.iter().map(Child::id).collect();
        let mut left = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if daemons.contains(&pid) || pid == std::process::id() {
                continue;
            }
            if std::fs::metadata(entry.path().join("ns/net")).is_ok_and(|m| m.ino() == ours) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                left.push(format!("{pid} {}", comm.trim()));
            }
        }
        left
    }
}

/// Block `n` as the user's shell runs it: after the `export`s of the blocks before it.
fn script(blocks: &[String], n: usize) -> String {
    let exports: String = blocks[..n]
        .iter()
        .flat_map(|b| b.lines())
        .filter(|l| l.starts_with("export "))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{exports}{}", blocks[n])
}

/// The ```sh blocks of the README's playground walk-through, in order.
fn tour_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(project().join("README.md")).expect("README.md");
    let start = readme.find(TOUR_START).expect("README has the playground walk-through");
    let end = readme[start..].find(TOUR_END).expect("the walk-through ends") + start;
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[start..end].lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn running_tasks(playground: &Playground, app: &str) -> Vec<Value> {
    let tasks = playground.api(&format!("/v2/apps/{app}/tasks"));
    let tasks = tasks["tasks"].as_array().cloned().unwrap_or_default();
    tasks.into_iter().filter(|t| t["state"] == "TASK_RUNNING").collect()
}

fn hosts(tasks: &[Value]) -> std::collections::BTreeSet<String> {
    tasks.iter().map(|t| t["host"].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn vagrant_up_brings_up_the_playground_and_the_readme_walk_through_works() {
    if !vagrant_installed() {
        panic!("vagrant is not installed: run scripts/setup.sh (scripts/packages-pxe.txt lists it)");
    }
    let blocks = tour_blocks();
    assert_eq!(blocks.len(), 6, "the walk-through's blocks are: up, deploy, scale, waiting app, add a node, destroy");
    let playground = Playground::new();

    // 1. Image, `vagrant up`, agents registered. A second `vagrant up` while the first
    // runs is refused at once, and no VM is doubled.
    let started = Instant::now();
    let mut first = playground.spawn_shell(&script(&blocks, 0));
    let end = Instant::now() + Duration::from_secs(900);
    let mut second = None;
    while first.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < end, "block 0 still running after 15 minutes:\n{}", playground.diagnostics());
        if second.is_none() && !playground.libvirt.names(&["list", "--all", "--name"]).is_empty() {
            second = Some(playground.shell("vagrant up"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = first.wait_with_output().expect("first vagrant up");
    let output = text(&out);
    eprintln!("--- walk-through block 0 ({:.0?}) ---\n{}\n{output}", started.elapsed(), blocks[0]);
    assert!(out.status.success(), "block 0 failed:\n{output}\n{}", playground.diagnostics());
    let second = second.expect("the first vagrant up created domains");
    assert!(!second.status.success(), "a second vagrant up during the first must be refused");
    assert!(text(&second).contains("another `vagrant up` is running for this playground"), "{}", text(&second));
    let mut domains = playground.libvirt.names(&["list", "--all", "--name"]);
    domains.sort();
    assert_eq!(domains.len(), 3, "master, node1, node2 once each: {domains:?}");
    let slaves = playground.api("/master/slaves");
    let agents = slaves["slaves"].as_array().cloned().unwrap_or_default();
    assert_eq!(agents.iter().filter(|a| a["active"] == true).count(), 2, "{slaves}");

    // 2. The tutorial's app from the master's registry answers on its host port.
    let output = playground.step(&blocks, 1);
    assert!(output.contains("Hello world!"), "{output}");
    assert_eq!(running_tasks(&playground, "hello-sinatra").len(), 1);

    // 3. Scaled to two: a second container, on another endpoint, both answering.
    let output = playground.step(&blocks, 2);
    let tasks = running_tasks(&playground, "hello-sinatra");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let endpoints: std::collections::BTreeSet<String> =
        tasks.iter().map(|t| format!("{}:{}", t["host"].as_str().unwrap_or_default(), t["ports"][0])).collect();
    assert_eq!(endpoints.len(), 2, "two endpoints: {endpoints:?}");
    for endpoint in &endpoints {
        assert!(output.contains(&format!("Hello {endpoint}!")), "{endpoint} answered: {output}");
    }

    // 4. An app with one instance per host waits for a third host, and says why.
    let output = playground.step(&blocks, 3);
    assert!(output.contains("2 of 3 instance(s) running"), "{output}");
    assert!(output.contains("UnfulfilledConstraint"), "the queue says why: {output}");
    let waiting = running_tasks(&playground, "hello-everywhere");
    assert_eq!(waiting.len(), 2, "two of three run: {waiting:?}");

    // 5. Powering on a third node: it PXE-boots, registers, and the waiting instance runs there.
    playground.step(&blocks, 4);
    let everywhere = running_tasks(&playground, "hello-everywhere");
    assert_eq!(everywhere.len(), 3, "{everywhere:?}");
    assert_eq!(hosts(&everywhere).len(), 3, "one per host: {everywhere:?}");
    assert!(hosts(&everywhere).iter().any(|h| !hosts(&waiting).contains(h)), "the third runs on the new node");

    // 6. `vagrant destroy -f`: no domain, no network, no QEMU left.
    playground.step(&blocks, 5);
    assert_eq!(playground.libvirt.names(&["list", "--all", "--name"]), Vec::<String>::new(), "domains left");
    assert!(
        !playground.libvirt.names(&["net-list", "--all", "--name"]).contains(&"plinth-pxe".to_string()),
        "network left"
    );
    let end = Instant::now() + Duration::from_secs(30);
    while !playground.processes_left().is_empty() {
        assert!(Instant::now() < end, "processes left in the namespace: {:?}", playground.processes_left());
        std::thread::sleep(Duration::from_millis(250));
    }
    for pool in playground.libvirt.names(&["pool-list", "--all", "--name"]) {
        let volumes = playground.libvirt.virsh(&["vol-list", &pool]);
        assert!(!volumes.contains(".img") && !volumes.contains(".qcow2"), "volumes left in {pool}: {volumes}");
    }
}

/// GET on one master's API from inside the namespace (`None` when it does not answer 2xx).
fn api_at(playground: &Playground, ip: &str, path: &str) -> Option<Value> {
    let url = format!("http://{ip}:8080{path}");
    let out = playground.libvirt.command("curl", &["-fsS", "--max-time", "5", &url]).output().expect("curl");
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// The leader every answering master names, once they agree (`/v2/leader` of each).
fn agreed_leader(playground: &Playground, ips: &[&str], timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        let named: Vec<Option<String>> = ips
            .iter()
            .map(|ip| api_at(playground, ip, "/v2/leader").and_then(|v| v["leader"].as_str().map(str::to_string)))
            .collect();
        if let Some(Some(first)) = named.first() {
            if named.iter().all(|n| n.as_ref() == Some(first)) {
                return first.clone();
            }
        }
        assert!(
            Instant::now() < end,
            "the masters {ips:?} did not agree on a leader: {named:?}\n{}",
            playground.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn masters_3_boots_three_masters_on_their_own_etcd_and_the_cluster_survives_the_leaders_loss() {
    if !vagrant_installed() {
        panic!("vagrant is not installed: run scripts/setup.sh (scripts/packages-pxe.txt lists it)");
    }
    let playground = Playground::new();
    let started = Instant::now();
    let up = playground.shell("scripts/vagrant-image.sh && MASTERS=3 NODES=1 vagrant up");
    assert!(up.status.success(), "MASTERS=3 vagrant up:\n{}\n{}", text(&up), playground.diagnostics());
    eprintln!("MASTERS=3 NODES=1 vagrant up took {:.0?}", started.elapsed());
    let masters = ["192.168.77.2", "192.168.77.3", "192.168.77.4"];
    let leader = agreed_leader(&playground, &masters, Duration::from_secs(120));
    let info = api_at(&playground, masters[0], "/v1/masters").expect("/v1/masters");
    assert_eq!(info["etcd"]["members"].as_array().map(Vec::len), Some(3), "three etcd members: {info}");
    assert_eq!(info["masters"].as_array().map(Vec::len), Some(3), "three masters campaign: {info}");

    // The PXE-booted agent registered, and an app posted to a follower runs on it.
    let follower = *masters.iter().find(|ip| !leader.starts_with(&format!("{ip}:"))).expect("a follower");
    let post = playground
        .libvirt
        .command(
            "curl",
            &[
                "-fsS",
                "--max-time",
                "10",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"id": "/ha-sleeper", "cmd": "sleep 100000", "cpus": 0.1, "mem": 16}"#,
                &format!("http://{follower}:8080/v2/apps"),
            ],
        )
        .output()
        .expect("curl");
    assert!(post.status.success(), "POST through a follower: {}", text(&post));
    let task = |ip: &str| {
        api_at(&playground, ip, "/v2/apps/ha-sleeper/tasks")
            .and_then(|v| v["tasks"].as_array().and_then(|t| t.first().cloned()))
            .filter(|t| t["state"] == "TASK_RUNNING")
    };
    let end = Instant::now() + Duration::from_secs(180);
    let before = loop {
        if let Some(t) = task(follower) {
            break t;
        }
        assert!(Instant::now() < end, "the task never ran:\n{}", playground.diagnostics());
        std::thread::sleep(Duration::from_secs(1));
    };

    // Power the leader's VM off: the two others elect a leader, the task keeps its id.
    let leader_ip = leader.split(':').next().expect("ip:port").to_string();
    let machine = match masters.iter().position(|ip| *ip == leader_ip) {
        Some(0) => "master".to_string(),
        Some(i) => format!("master{}", i + 1),
        None => panic!("the leader {leader} is none of the masters"),
    };
    let domain = playground
        .libvirt
        .names(&["list", "--name"])
        .into_iter()
        .find(|d| d.ends_with(&format!("_{machine}")))
        .unwrap_or_else(|| panic!("no domain for {machine}"));
    playground.libvirt.virsh(&["destroy", &domain]);
    let survivors: Vec<&str> = masters.iter().copied().filter(|ip| *ip != leader_ip).collect();
    let lost_at = Instant::now();
    // They name the lost leader until its lease runs out, then agree on one of them.
    let second = loop {
        let now = agreed_leader(&playground, &survivors, Duration::from_secs(60));
        if now != leader {
            break now;
        }
        assert!(lost_at.elapsed() < Duration::from_secs(60), "{leader} is still named the leader");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("new leader {second} {:.1?} after the leader's VM was powered off", lost_at.elapsed());
    let end = Instant::now() + Duration::from_secs(60);
    let after = loop {
        if let Some(t) = task(survivors[0]) {
            break t;
        }
        assert!(Instant::now() < end, "the task is not running under the new leader:\n{}", playground.diagnostics());
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(after["id"], before["id"], "the same task: {before} → {after}");

    let down = playground.shell("MASTERS=3 NODES=1 vagrant destroy -f");
    assert!(down.status.success(), "vagrant destroy: {}", text(&down));
    assert_eq!(playground.libvirt.names(&["list", "--all", "--name"]), Vec::<String>::new(), "domains left");
}
