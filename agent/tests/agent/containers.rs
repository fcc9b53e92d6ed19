//! Real containers through the executor (the crate's `plinth-agent-executor` binary)
//! and youki's libcontainer, on a busybox root filesystem built by the test from the
//! host's static busybox. Needs root; skipped otherwise. BRIDGE tests run the executor
//! inside a network namespace of their own, so the host's network is never touched.
//! Every test removes what it made (executors, containers, cgroups, namespaces), also
//! when it fails.
use plinth_agent::cgroup::{self, TaskCgroup};
use plinth_agent::container::{self, network, run};
use plinth_agent::executor_contract::{
    ContainerNetwork, ContainerRecord, ContainerTask, ExecutorSpec, LocalImage, MappedPort, Termination,
    CONTAINER_FILE, EXIT_FILE, SPEC_FILE,
};
use plinth_agent::taskenv::{task_env, TaskCommand};
use plinth_agent::testing::task_spec;
use plinth_agent::userns::IdRemap;
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() || !Path::new("/bin/busybox").exists() {
            eprintln!("skipped: needs root and /bin/busybox");
            return;
        }
    };
}

fn unique_id(name: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("ct-{name}.{}-{n}", std::process::id())
}

/// A busybox image: rootfs with every applet linked, `/etc/passwd`, and an image config.
fn busybox_image(dir: &Path, config: serde_json::Value) -> LocalImage {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(rootfs.join(sub)).expect("rootfs dirs");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/tmp:/bin/sh\n")
        .expect("passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nweb:x:1000:\n").expect("group");
    let config_path = dir.join("image-config.json");
    let image = json!({"architecture": "amd64", "os": "linux", "config": config,
                       "rootfs": {"type": "layers", "diff_ids": []}});
    std::fs::write(&config_path, serde_json::to_vec(&image).expect("json")).expect("config");
    LocalImage { rootfs, config: config_path }
}

/// A running executor with its container; killed and cleaned up on drop.
struct Task {
    id: String,
    sandbox: PathBuf,
    child: Child,
    cgroup: Option<TaskCgroup>,
    _dir: tempfile::TempDir,
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        container::cleanup_leftovers(&self.sandbox);
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup::remove(cgroup);
        }
    }
}

struct Options {
    network: ContainerNetwork,
    port_mappings: Vec<MappedPort>,
    image_config: serde_json::Value,
    /// Network namespace the executor runs in (BRIDGE tests).
    netns: Option<PathBuf>,
    kill_grace_ms: u64,
    /// `--userns-remap`; the test's local rootfs is then handed to the shifted root.
    userns_remap: Option<IdRemap>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            network: ContainerNetwork::Host,
            port_mappings: Vec::new(),
            image_config: json!({"Cmd": ["/bin/sh", "-c", "echo image-default"], "Env": ["PATH=/bin"]}),
            netns: None,
            kill_grace_ms: 1000,
            userns_remap: None,
        }
    }
}

fn launch(name: &str, app: serde_json::Value, options: Options) -> Task {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = unique_id(name);
    let image = busybox_image(dir.path(), options.image_config.clone());
    if let Some(remap) = options.userns_remap {
        // A local rootfs is used as it is: its owners are the test's to shift.
        let status = Command::new("chown").arg("-hR").arg(format!("{0}:{0}", remap.start)).arg(&image.rootfs).status();
        assert!(status.expect("chown").success());
    }
    let sandbox = dir.path().join("sandbox");
    std::fs::create_dir_all(&sandbox).expect("sandbox");
    let task = task_spec(&id, app, options.port_mappings.iter().map(|m| m.host_port).collect());
    let cgroup = cgroup::create(&id, task.app.cpus, task.app.mem);
    let spec = ExecutorSpec {
        task_id: id.clone(),
        sandbox: sandbox.clone(),
        command: TaskCommand::Exec(Vec::new()),
        env: task_env(&task, "127.0.0.1", &sandbox),
        kill_grace_ms: options.kill_grace_ms,
        cgroup_dirs: cgroup.as_ref().map(|c| c.dirs.clone()).unwrap_or_default(),
        logs: Default::default(),
        user: None,
        allow_root: false,
        hidden_paths: Vec::new(),
        task: Some(task.clone()),
        fetch: Vec::new(),
        fetch_cache: None,
        container: Some(ContainerTask {
            image: "local/busybox".into(),
            force_pull: false,
            registry: "http://127.0.0.1:5000".into(),
            images_dir: dir.path().join("images"),
            max_layer_bytes: 1 << 30,
            network: options.network,
            port_mappings: options.port_mappings,
            host: "127.0.0.1".into(),
            dns_search: None,
            local_image: Some(image),
            userns_remap: options.userns_remap,
        }),
        notify_socket: None,
    };
    let spec_path = sandbox.join(SPEC_FILE);
    std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("spec json")).expect("write spec");
    let log = std::fs::File::create(sandbox.join("executor.log")).expect("executor log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_plinth-agent-executor"));
    command
        .arg("--spec")
        .arg(&spec_path)
        .current_dir(&sandbox)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let netns = options.netns.map(|p| std::fs::File::open(p).expect("open test netns"));
    // SAFETY: setsid and setns are async-signal-safe system calls on data made before
    // the fork.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            if let Some(ns) = &netns {
                use std::os::fd::AsRawFd;
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn executor");
    Task { id, sandbox, child, cgroup, _dir: dir }
}

impl Task {
    fn wait_exit(&mut self, timeout: Duration) -> Termination {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(bytes) = std::fs::read(self.sandbox.join(EXIT_FILE)) {
                if let Ok(termination) = serde_json::from_slice(&bytes) {
                    return termination;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no exit.json after {timeout:?}; executor log:\n{}",
                self.read("executor.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_running(&self) -> ContainerRecord {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(bytes) = std::fs::read(self.sandbox.join(CONTAINER_FILE)) {
                return serde_json::from_slice(&bytes).expect("container.json");
            }
            if self.sandbox.join(EXIT_FILE).exists() {
                panic!("the container ended before running: {}\n{}", self.read(EXIT_FILE), self.read("executor.log"));
            }
            assert!(Instant::now() < deadline, "not running; executor log:\n{}", self.read("executor.log"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.sandbox.join(file)).unwrap_or_default()
    }

    fn wait_for_output(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stdout = self.read("stdout");
            if stdout.contains(needle) || Instant::now() > deadline {
                return stdout;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing of the task is left on the node.
    fn assert_no_leftovers(&self) {
        self.assert_no_container_leftovers();
        for controller in ["memory", "cpu", "pids", "unified"] {
            let dir = Path::new("/sys/fs/cgroup").join(controller).join("plinth").join(&self.id);
            assert!(!dir.exists(), "cgroup left: {}", dir.display());
        }
    }

    /// Nothing of the container is left (a task that never started keeps the cgroup
    /// the agent made for it until the agent removes it).
    fn assert_no_container_leftovers(&self) {
        let cid = run::container_id(&self.id);
        assert!(!Path::new(run::STATE_ROOT).join(&cid).exists(), "container state left");
        assert!(!network::netns_path(&cid).exists(), "netns file left");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&cid), "mounts left: {mounts}");
    }
}

#[test]
fn a_cmd_runs_as_pid_1_in_its_own_namespaces() {
    require_root!();
    let mut task = launch(
        "cmd",
        json!({"id": "/hello", "cmd": "echo hello $MESOS_TASK_ID; hostname; id; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$",
               "mem": 64, "cpus": 0.2}),
        Options::default(),
    );
    let termination = task.wait_exit(Duration::from_secs(30));
    let stdout = task.read("stdout");
    assert_eq!(
        termination.code,
        Some(0),
        "{termination:?}\nstdout: {stdout}\nstderr: {}\nlog: {}",
        task.read("stderr"),
        task.read("executor.log")
    );
    assert!(stdout.contains(&format!("hello {}", task.id)), "{stdout}");
    assert!(stdout.contains(&container::spec::hostname(&task.id, &Default::default())), "{stdout}");
    assert!(stdout.contains("uid=0(root) gid=0(root)"), "{stdout}");
    assert!(stdout.contains("/bin/sh -c echo hello"), "pid 1 is the shell: {stdout}");
    assert_eq!(stdout.lines().last(), Some("1"), "the shell is pid 1: {stdout}");
    let record: ContainerRecord =
        serde_json::from_str(&task.read(CONTAINER_FILE)).expect("container.json while it ran");
    assert_eq!(record.network, "host");
    assert_eq!(record.cgroup, format!("/plinth/{}", task.id));
    task.assert_no_leftovers();
}

#[test]
fn args_and_image_defaults_decide_the_command() {
    require_root!();
    let image = json!({"Entrypoint": ["/bin/echo", "entry"], "Cmd": ["default-cmd"], "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
                       "WorkingDir": "/tmp", "User": "web"});
    let mut with_args = launch(
        "args",
        json!({"id": "/args", "args": ["given", "args"]}),
        Options { image_config: image.clone(), ..Default::default() },
    );
    let mut defaults =
        launch("defaults", json!({"id": "/defaults"}), Options { image_config: image, ..Default::default() });
    assert_eq!(with_args.wait_exit(Duration::from_secs(30)).code, Some(0), "{}", with_args.read("executor.log"));
    assert_eq!(with_args.read("stdout"), "entry given args\n");
    assert_eq!(defaults.wait_exit(Duration::from_secs(30)).code, Some(0), "{}", defaults.read("executor.log"));
    assert_eq!(defaults.read("stdout"), "entry default-cmd\n");
    with_args.assert_no_leftovers();
    defaults.assert_no_leftovers();
}

#[test]
fn the_image_user_workdir_and_env_apply() {
    require_root!();
    let image = json!({"Cmd": ["/bin/sh", "-c", "id -u; pwd; echo $FROM_IMAGE $PORT0"], "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
                       "WorkingDir": "/tmp", "User": "web"});
    let mut task = launch("user", json!({"id": "/user"}), Options { image_config: image, ..Default::default() });
    assert_eq!(task.wait_exit(Duration::from_secs(30)).code, Some(0), "{}", task.read("executor.log"));
    assert_eq!(task.read("stdout"), "1000\n/tmp\nyes\n");
}

#[test]
fn a_missing_program_or_parameter_fails_clearly() {
    require_root!();
    let mut missing = launch(
        "missing",
        json!({"id": "/missing", "args": ["/no/such/program"]}),
        Options { image_config: json!({"Env": ["PATH=/bin"]}), ..Default::default() },
    );
    let termination = missing.wait_exit(Duration::from_secs(30));
    let error = termination.error.clone().unwrap_or_default();
    assert!(error.contains("/no/such/program"), "{termination:?}");
    missing.assert_no_container_leftovers();

    let mut parameter = launch(
        "parameter",
        json!({"id": "/param", "cmd": "true", "container": {"type": "DOCKER", "docker": {"image": "x",
               "parameters": [{"key": "cap-add", "value": "SYS_ADMIN"}]}}}),
        Options::default(),
    );
    let termination = parameter.wait_exit(Duration::from_secs(30));
    let error = termination.error.clone().unwrap_or_default();
    assert!(error.contains("cap-add") && error.contains("not supported"), "{termination:?}");
    parameter.assert_no_container_leftovers();
}

#[test]
fn sigterm_to_the_executor_stops_the_container_within_the_grace() {
    require_root!();
    let mut task = launch(
        "kill",
        json!({"id": "/kill", "cmd": "sleep 1000", "mem": 32}),
        Options { kill_grace_ms: 500, ..Default::default() },
    );
    let record = task.wait_running();
    assert!(Path::new(&format!("/proc/{}", record.pid)).exists());
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(task.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let termination = task.wait_exit(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(termination.killed, "{termination:?}");
    let _ = task.child.wait();
    assert!(!Path::new(&format!("/proc/{}", record.pid)).exists(), "the container's init is gone");
    task.assert_no_leftovers();
}

#[test]
fn a_container_past_its_memory_is_oom_killed() {
    require_root!();
    let mut task = launch(
        "oom",
        json!({"id": "/oom", "cmd": "head -c 300m /dev/zero | tail", "mem": 32, "cpus": 0.5}),
        Options::default(),
    );
    let termination = task.wait_exit(Duration::from_secs(60));
    assert!(termination.oom, "{termination:?}\n{}", task.read("executor.log"));
    task.assert_no_leftovers();
}

/// A network namespace for one test (`ip netns`), deleted on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new() -> TestNetns {
        let name = format!("plt{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add").success());
        assert!(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().expect("lo up").success());
        TestNetns { name }
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }

    fn links(&self) -> String {
        let out = Command::new("ip").args(["-n", &self.name, "-o", "link"]).output().expect("ip link");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn http_get(port: u16) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn bridge_containers_get_addresses_and_host_ports() {
    require_root!();
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: the test needs `ip` to make its namespace");
        return;
    }
    let ns = TestNetns::new();
    let ipam = tempfile::tempdir().expect("ipam");
    let bridge = ContainerNetwork::Bridge {
        bridge: "pltest0".into(),
        subnet: "10.213.7.0/24".into(),
        ipam_dir: ipam.path().to_path_buf(),
    };
    // A server answering every connection with its address.
    let server = "ip -4 -o addr show eth0; nc -ll -p 3000 -e /bin/sh -c 'echo hello from $(hostname)'";
    let launch_web = |name: &str, host_port: u16| {
        launch(
            name,
            json!({"id": "/web", "cmd": server, "mem": 64}),
            Options {
                network: bridge.clone(),
                port_mappings: vec![MappedPort { container_port: 3000, host_port, protocol: "tcp".into() }],
                netns: Some(ns.path()),
                ..Default::default()
            },
        )
    };
    let first = launch_web("bridge-a", 31801);
    let second = launch_web("bridge-b", 31802);
    let a = first.wait_running();
    let b = second.wait_running();
    assert_eq!(a.network, "bridge");
    let (ip_a, ip_b) = (a.ip.expect("a has an ip"), b.ip.expect("b has an ip"));
    assert_ne!(ip_a, ip_b);
    assert!(ip_a.to_string().starts_with("10.213.7."), "{ip_a}");
    assert!(first.wait_for_output(&ip_a.to_string()).contains(&format!("{ip_a}/24")), "eth0 has the leased address");
    assert_eq!(a.ports.len(), 1);

    let reply = ns.run(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match http_get(31801) {
                Ok(reply) if reply.contains("hello") => return reply,
                _ if Instant::now() > deadline => return String::from("no answer"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    assert!(reply.contains("hello from"), "{reply}");
    let links = ns.links();
    let veth_a = network::veth_name(&run::container_id(&first.id));
    assert!(links.contains(&veth_a) && links.contains("pltest0"), "{links}");

    // A host port already taken fails the start clearly and leaves nothing.
    let mut clash = launch_web("bridge-clash", 31801);
    let termination = clash.wait_exit(Duration::from_secs(30));
    let error = termination.error.clone().unwrap_or_default();
    assert!(error.contains("31801"), "{termination:?}");
    clash.assert_no_container_leftovers();
    assert!(!ns.links().contains(&network::veth_name(&run::container_id(&clash.id))));

    // Killing the first tears its pieces down and gives its address back.
    let first_id = first.id.clone();
    let mut first = first;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    first.wait_exit(Duration::from_secs(10));
    let _ = first.child.wait();
    first.assert_no_leftovers();
    assert!(!ns.links().contains(&veth_a), "veth of {first_id} left");
    let leases = std::fs::read_to_string(ipam.path().join("leases.json")).unwrap_or_default();
    assert!(!leases.contains(&run::container_id(&first_id)), "{leases}");
    assert!(leases.contains(&run::container_id(&second.id)), "{leases}");
    drop(second);
}

/// The `Uid:` line of a process's status, as the host sees it (real, effective, saved, fs).
fn host_uids(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the container's init is running");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn with_userns_remap_the_containers_root_is_an_unprivileged_host_user() {
    require_root!();
    let remap = IdRemap { start: 100_000, count: 65_536 };
    let script = "id -u; echo written > /mnt/mesos/sandbox/by-root; echo ready; sleep 30";
    let remapped = launch(
        "userns",
        json!({"id": "/userns", "cmd": script, "mem": 64}),
        Options { userns_remap: Some(remap), ..Options::default() },
    );
    let record = remapped.wait_running();
    let stdout = remapped.wait_for_output("ready");
    assert_eq!(stdout.lines().next(), Some("0"), "root inside; stderr: {}", remapped.read("stderr"));
    assert_eq!(host_uids(record.pid), "100000 100000 100000 100000", "START on the host");
    let written = std::fs::metadata(remapped.sandbox.join("by-root")).expect("the file it wrote");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((written.uid(), written.gid()), (100_000, 100_000), "owned by START on the host");

    // Without the flag nothing changes: root is the host's root.
    let plain = launch("no-userns", json!({"id": "/plain", "cmd": script, "mem": 64}), Options::default());
    let record = plain.wait_running();
    let stdout = plain.wait_for_output("ready");
    assert_eq!(stdout.lines().next(), Some("0"), "stderr: {}", plain.read("stderr"));
    assert_eq!(host_uids(record.pid), "0 0 0 0");
    assert_eq!(std::fs::metadata(plain.sandbox.join("by-root")).expect("the file it wrote").uid(), 0);
}
