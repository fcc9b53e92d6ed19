//! Real PXE: in a test network (a bridge and one namespace per host), the master serves
//! DHCP/TFTP/HTTP on its interface; a QEMU VM (software emulation, NIC on a tap in the
//! bridge, `-boot n`, Debian's iPXE ROM, no disk) boots from the network, comes up as an
//! agent with its profile's attributes, and an app that waited for such a node starts on
//! it. Plus bad input against the boot server (garbage DHCP, unknown MACs, TFTP path
//! traversal, wrong join token): ignored or refused, and nothing changes. Booting machines
//! get single-use bootstrap tokens, which their agents exchange for the join token.

use crate::common::*;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "pxe-join-secret";
/// Debian's ipxe-qemu: iPXE as the virtio NIC's option ROM. Built for the modern virtio
/// device id (1af4:1041), so the NIC is `disable-legacy=on`: SeaBIOS runs a ROM only when
/// its ids match the device's.
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// A tap device in the test bridge; deleted on drop (also when the test fails).
struct Tap(String);

impl Tap {
    fn create(name: &str, bridge: &str) -> Tap {
        let _ = Command::new("ip").args(["link", "del", name]).output();
        sh("ip", &["tuntap", "add", "dev", name, "mode", "tap"]);
        let tap = Tap(name.to_string());
        sh("ip", &["link", "set", name, "master", bridge, "up"]);
        tap
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// A diskless QEMU that boots from its NIC; killed by pid on drop.
struct PxeVm {
    child: Child,
    console: PathBuf,
}

impl PxeVm {
    /// On a tap device in the test bridge.
    fn start(dir: &Path, tap: &str, mac: &str) -> PxeVm {
        PxeVm::start_with(
            dir,
            &[
                "-netdev".into(),
                format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},disable-legacy=on,romfile={IPXE_ROM}"),
            ],
        )
    }

    fn start_with(dir: &Path, net: &[String]) -> PxeVm {
        let console = dir.join("pxe-vm-console.log");
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-machine",
                "q35",
                "-smp",
                "2",
                "-m",
                "1024",
                "-display",
                "none",
                "-nodefaults",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(net)
            .args(["-boot", "n"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64 (package qemu-system-x86)");
        PxeVm { child, console }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for PxeVm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.console();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- PXE VM console (last 80 lines) ---\n{}", lines[lines.len().saturating_sub(80)..].join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn subnet_of(cluster: &Cluster) -> u8 {
    cluster.gateway().octets()[2]
}

fn bridge_of(cluster: &Cluster) -> String {
    format!("plt{}", subnet_of(cluster))
}

fn start_pxe_master(cluster: &mut Cluster, boot_dir: &Path, unknown: &str) {
    let net = subnet_of(cluster);
    let range = format!("10.77.{net}.100-10.77.{net}.120");
    let boot_dir = boot_dir.display().to_string();
    let token = cluster.secret_file("token", TOKEN);
    cluster.start_master(&[
        "--pxe-interface",
        "eth0",
        "--dhcp-range",
        &range,
        "--boot-dir",
        &boot_dir,
        "--pxe-unknown",
        unknown,
        "--token-file",
        &token,
    ]);
}

fn machine(api: &Http, mac: &str) -> Value {
    api.get("/v1/machines").json["machines"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["mac"] == mac).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn blank_vm_pxe_boots_joins_as_agent_and_runs_the_app_waiting_for_its_rack() {
    let _serial = crate::vm_common::serial();
    let image = crate::vm_common::image();
    let mut cluster = Cluster::new("pxe-boot");
    start_pxe_master(&mut cluster, image, "ignore");
    let api = cluster.api();
    let net = subnet_of(&cluster);
    let mac = format!("52:54:00:77:{net:02x}:01");

    api.put(
        &format!("/v1/machines/{mac}"),
        &json!({"role": "agent", "hostname": "pxe-r2", "attributes": "rack:r2;zone:b"}),
    )
    .expect_status(201);
    // An app that can only run in rack r2 waits: no such node exists yet.
    let app = json!({"id": "/rack2-only", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "constraints": [["rack", "LIKE", "r2"]]});
    api.post("/v2/apps", &app).expect_status(201);
    std::thread::sleep(secs(1));
    assert!(cluster.running_tasks("/rack2-only").is_empty());

    let tap = Tap::create(&format!("plt{net}tap"), &bridge_of(&cluster));
    let mut vm = PxeVm::start(cluster.dir(), &tap.0, &mac);

    let agent = wait_until("the PXE-booted VM registered as agent pxe-r2", secs(300), || {
        if vm.exited() {
            return Err("QEMU exited".into());
        }
        let slaves = api.try_get("/master/slaves")?.json["slaves"].as_array().cloned().unwrap_or_default();
        slaves.into_iter().find(|s| s["hostname"] == "pxe-r2" && s["active"] == true).ok_or_else(|| {
            let console = vm.console();
            console.lines().last().unwrap_or("").to_string()
        })
    });
    assert_eq!(agent["attributes"]["rack"], "r2", "{agent}");
    let console = vm.console();
    assert!(console.contains("plinth.token=") || console.contains("iPXE"), "booted over the network: {console}");

    let m = machine(&api, &mac);
    assert_eq!(m["state"], "registered", "{m}");
    let ip: Ipv4Addr =
        m["ip"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("machine has an address: {m}"));
    assert!((100..=120).contains(&ip.octets()[3]) && ip.octets()[2] == net, "address from the range: {ip}");

    // The waiting app starts on the new node without anyone touching it.
    let tasks = cluster.wait_for_running("/rack2-only", 1, secs(120));
    assert_eq!(tasks[0]["host"], ip.to_string(), "{}", task_summary(&tasks));

    // Decommission: drain (its task has nowhere else to go, so only the flag is checked),
    // then power it off through the node API.
    let out = cluster.cli(&["node", "drain", "pxe-r2", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = cluster.cli(&["node", "poweroff", "pxe-r2"]);
    assert!(!refused.status.success(), "poweroff of an undrained node is refused");
    assert!(stderr(&refused).contains("not drained"), "{}", stderr(&refused));
    api.delete("/v2/apps/rack2-only").expect_status(200);
    wait_until("the node drained", secs(60), || {
        let slaves = api.try_get("/master/slaves")?.json["slaves"].clone();
        let s =
            slaves.as_array().and_then(|a| a.iter().find(|s| s["hostname"] == "pxe-r2").cloned()).unwrap_or_default();
        if s["drained"] == true {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    // The node booted with the join token: its power endpoints need it, which a stranger
    // calling the node API has not; the master, asked by the CLI, presents it.
    // Its node API through the master, for an operator with credentials for the master only.
    let slaves = api.get("/master/slaves").json["slaves"].clone();
    let node_id =
        slaves.as_array().and_then(|a| a.iter().find(|s| s["hostname"] == "pxe-r2").cloned()).unwrap_or_default()["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    let status = api.get(&format!("/v1/nodes/{node_id}/status")).expect_status(200);
    assert_eq!(status.json["role"], "agent", "{}", status.text);
    let logs = api.get(&format!("/v1/nodes/{node_id}/logs")).expect_status(200);
    assert!(!logs.text.is_empty(), "the node's log through the master");
    let node_api = Http::new(format!("http://{ip}:5052"));
    let direct = node_api.try_request_with("POST", "/node/v1/poweroff", &[], None).expect("the node API answers");
    assert_eq!(direct.status, 401, "the node API refuses a power request without the token: {}", direct.text);
    let out = cluster.cli(&["node", "poweroff", "pxe-r2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the VM powered off", secs(120), || {
        if vm.exited() {
            Ok(())
        } else {
            Err(vm.console().lines().last().unwrap_or("").into())
        }
    });
    wait_until("the machine listed as lost", secs(60), || {
        let m = machine(&api, &mac);
        if m["state"] == "lost" {
            Ok(())
        } else {
            Err(m.to_string())
        }
    });
    drop(vm);
    drop(tap);
}

fn dhcp_discover(mac: [u8; 6], ipxe: bool) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 1]); // DISCOVER
    if ipxe {
        p.extend_from_slice(&[77, 4, b'i', b'P', b'X', b'E']);
    }
    p.push(255);
    p
}

fn tftp_rrq(name: &str) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    p.extend_from_slice(b"octet\0");
    p
}

#[test]
fn boot_server_ignores_garbage_unknown_machines_traversal_and_wrong_tokens() {
    let boot_dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::new("pxe-bad");
    start_pxe_master(&mut cluster, boot_dir.path(), "ignore");
    let api = cluster.api();
    let master = cluster.master_ip();
    let known = [0x52, 0x54, 0, 0x66, 0, 1];
    api.put("/v1/machines/52:54:00:66:00:01", &json!({"attributes": "rack:r1"})).expect_status(201);
    let before = api.get("/v1/machines").json;

    // The test process sits on the bridge; the boot server answers on the master's eth0.
    let udp = UdpSocket::bind((cluster.gateway(), 0)).expect("bind on the test bridge");
    udp.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let good = dhcp_discover(known, true);
    for _ in 0..3 {
        for bad in [vec![], vec![0xde, 0xad], vec![0u8; 700], good[..100].to_vec(), good[..241].to_vec()] {
            udp.send_to(&bad, (master, 67)).expect("send garbage");
        }
        udp.send_to(&dhcp_discover([0x52, 0x54, 0, 0x66, 0, 9], true), (master, 67)).expect("send unknown");
    }
    std::thread::sleep(secs(1));
    assert_eq!(api.get("/v1/machines").json, before, "bad DHCP input changed nothing");
    let log = read(&cluster.dir().join("logs/master.log"));
    assert_eq!(log.matches("malformed DHCP packet").count(), 1, "garbage from one source is logged once:\n{log}");
    assert_eq!(log.matches("unknown machine 52:54:00:66:00:09").count(), 1, "unknown MAC logged once:\n{log}");

    // The server does answer a known machine (so silence above was a decision).
    udp.send_to(&good, (master, 67)).expect("send known");
    wait_until("the known machine listed as booting", secs(10), || {
        let m = machine(&api, "52:54:00:66:00:01");
        if m["state"] == "booting" {
            Ok(())
        } else {
            Err(m.to_string())
        }
    });
    // Its iPXE script carries a single-use bootstrap token, never the join token; an
    // unknown machine gets none.
    let script = Http::new(cluster.master_url()).get("/boot/ipxe?mac=52:54:00:66:00:01");
    assert!(
        script.text.contains("plinth.token=plinth-bootstrap.")
            && !script.text.contains(TOKEN)
            && script.text.contains("plinth.attributes=rack:r1"),
        "{}",
        script.text
    );
    let unknown = Http::new(cluster.master_url()).get("/boot/ipxe?mac=52:54:00:66:00:09");
    assert_eq!(unknown.status, 404, "{}", unknown.text);

    // TFTP: traversal is an access violation; the iPXE binaries are served.
    let mut buf = [0u8; 1600];
    udp.send_to(&tftp_rrq("../etc/passwd"), (master, 69)).expect("send rrq");
    let (n, _) = udp.recv_from(&mut buf).expect("TFTP error reply");
    assert_eq!(&buf[..4], &[0, 5, 0, 2], "access violation: {}", String::from_utf8_lossy(&buf[..n]));
    udp.send_to(&tftp_rrq("undionly.kpxe"), (master, 69)).expect("send rrq");
    let (n, _) = udp.recv_from(&mut buf).expect("TFTP data");
    assert_eq!(&buf[..4], &[0, 3, 0, 1], "first data block ({n} bytes)");

    // Profiles: bad MACs and values are refused and change nothing.
    assert_eq!(api.put("/v1/machines/not-a-mac", &json!({})).status, 422);
    assert_eq!(api.put("/v1/machines/52:54:00:66:00:01", &json!({"hostname": "bad host"})).status, 422);
    assert_eq!(api.put_raw("/v1/machines/52:54:00:66:00:01", "{\"role\":").status, 400);
    assert_eq!(machine(&api, "52:54:00:66:00:01")["profile"]["attributes"], "rack:r1");

    // An agent without the join token is refused; with it, it joins.
    cluster.start_agent("no-token", &[]);
    let (guess, token) = (cluster.secret_file("guess", "guess"), cluster.secret_file("token", TOKEN));
    cluster.start_agent("wrong-token", &["--token-file", &guess]);
    cluster.start_agent("with-token", &["--token-file", &token]);
    wait_until("the agent with the token to join", secs(60), || {
        let active = cluster.active_agents()?;
        if active == ["with-token"] {
            Ok(())
        } else {
            Err(format!("{active:?}"))
        }
    });
    std::thread::sleep(secs(2));
    let names: Vec<String> = api.get("/master/slaves").json["slaves"]
        .as_array()
        .map(|a| a.iter().map(|s| s["hostname"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["with-token"]);
}

#[test]
fn drain_moves_tasks_to_another_agent_without_a_gap() {
    // Both tasks land on agent-1 (the only agent), then agent-2 joins.
    let mut cluster = Cluster::start("pxe-drain", 1);
    cluster.deploy(&cmd_app("/drained", "sleep 1000", 2));
    cluster.start_agent("agent-2", &[]);
    cluster.wait_for_agents(2);
    let before = cluster.running_tasks("/drained");
    let (ip1, ip2) = (cluster.ip_of_host("agent-1").to_string(), cluster.ip_of_host("agent-2").to_string());
    assert!(before.iter().all(|t| t["host"] == ip1.as_str()), "both run on agent-1: {}", task_summary(&before));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let api = cluster.api();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut min = usize::MAX;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = api.try_get("/v2/apps/drained/tasks") {
                    let running = r.json["tasks"]
                        .as_array()
                        .map_or(0, |t| t.iter().filter(|t| t["state"] == "TASK_RUNNING").count());
                    min = min.min(running);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            min
        })
    };
    let out = cluster.cli_bounded(&["node", "drain", "agent-1", "--timeout-secs", "90"], secs(120));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let min_running = watcher.join().expect("watcher");
    assert!(out.status.success(), "drain failed: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("drained"), "{}", stdout(&out));
    assert!(min_running >= 2, "running count dropped to {min_running} during the drain");
    let after = cluster.running_tasks("/drained");
    assert_eq!(after.len(), 2, "{}", task_summary(&after));
    assert!(after.iter().all(|t| t["host"] == ip2.as_str()), "{}", task_summary(&after));
    // A drained agent gets nothing new.
    cluster.api().put("/v2/apps/drained", &json!({"instances": 3})).expect_status(200);
    let three = cluster.wait_for_running("/drained", 3, secs(60));
    assert!(three.iter().all(|t| t["host"] == ip2.as_str()), "{}", task_summary(&three));
    // Poweroff of a plain process agent: no node API there, a clear error.
    let out = cluster.cli(&["node", "poweroff", "agent-1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node API"), "{}", stderr(&out));
}

/// A DHCP server that is not ours (Debian's dnsmasq, DHCP only, PXE disabled) in its own
/// namespace on the test bridge; killed by pid and removed on drop.
struct Dnsmasq {
    child: Child,
    netns: String,
    veth: String,
    log: PathBuf,
}

impl Dnsmasq {
    fn start(cluster: &Cluster) -> Dnsmasq {
        let net = subnet_of(cluster);
        // The harness sweeps `plt<subnet>-*` namespaces of killed tests.
        let netns = format!("plt{net}-dnsmasq");
        let veth = format!("plt{net}hd");
        let log = cluster.dir().join("logs/dnsmasq.log");
        sh("ip", &["netns", "add", &netns]);
        sh("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "dnsmasq0", "netns", &netns]);
        sh("ip", &["link", "set", &veth, "master", &bridge_of(cluster), "up"]);
        sh("ip", &["-n", &netns, "addr", "add", &format!("10.77.{net}.250/24"), "dev", "dnsmasq0"]);
        sh("ip", &["-n", &netns, "link", "set", "dnsmasq0", "up"]);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
            ])
            .arg("--interface=dnsmasq0")
            .arg("--bind-interfaces")
            .arg(format!("--dhcp-range=10.77.{net}.50,10.77.{net}.60,1h"))
            .arg(format!("--dhcp-leasefile={}", cluster.dir().join("dnsmasq.leases").display()))
            .arg("--pid-file=")
            .arg("--log-dhcp")
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("start dnsmasq (package dnsmasq-base)");
        Dnsmasq { child, netns, veth, log }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dnsmasq log ---\n{}", read(&self.log));
        }
        // `ip netns exec` execs dnsmasq in place, so the child's pid is dnsmasq's.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
    }
}

#[test]
fn proxy_dhcp_beside_another_dhcp_server_boots_the_vm() {
    let _serial = crate::vm_common::serial();
    let image = crate::vm_common::image();
    let mut cluster = Cluster::new("pxe-proxy");
    let boot_dir = image.display().to_string();
    let token = cluster.secret_file("token", TOKEN);
    cluster.start_master(&["--pxe-interface", "eth0", "--proxy-dhcp", "--boot-dir", &boot_dir, "--token-file", &token]);
    let dnsmasq = Dnsmasq::start(&cluster);
    let api = cluster.api();
    let net = subnet_of(&cluster);
    let mac = format!("52:54:00:78:{net:02x}:01");
    let tap = Tap::create(&format!("plt{net}tap"), &bridge_of(&cluster));
    let mut vm = PxeVm::start(cluster.dir(), &tap.0, &mac);
    // No profile: the default profile boots it as an agent named after its MAC.
    let hostname = format!("node-52540078{net:02x}01");
    let agent = wait_until("the VM booted through proxyDHCP registered", secs(300), || {
        if vm.exited() {
            return Err("QEMU exited".into());
        }
        let slaves = api.try_get("/master/slaves")?.json["slaves"].as_array().cloned().unwrap_or_default();
        slaves
            .into_iter()
            .find(|s| s["hostname"] == hostname.as_str() && s["active"] == true)
            .ok_or_else(|| vm.console().lines().last().unwrap_or("").to_string())
    });
    // Its address came from dnsmasq's range; ours leased nothing.
    let m = machine(&api, &mac);
    assert_eq!(m["state"], "registered", "{m}");
    let ip: Ipv4Addr = m["ip"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("address: {m} {agent}"));
    assert!((50..=60).contains(&ip.octets()[3]), "address from dnsmasq: {ip}");
    assert!(read(&dnsmasq.log).contains(&mac), "dnsmasq served the VM");
    drop(vm);
    drop(tap);
    drop(dnsmasq);
}

/// The Vagrant playground without libvirt: a master VM booted like the Vagrantfile boots it
/// (direct kernel boot, `master-initrd.img` from scripts/vagrant-image.sh carrying the boot
/// files, PXE flags on the kernel command line) serves DHCP and the boot files on a private
/// link (a QEMU socket link), and a diskless agent VM PXE-boots from it and registers.
#[test]
fn master_vm_booted_like_the_vagrantfile_pxe_boots_an_agent_vm() {
    let _serial = crate::vm_common::serial();
    let image = crate::vm_common::image();
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["vmlinuz", "initramfs.img"] {
        std::fs::copy(image.join(f), dir.path().join(f)).expect("copy the image");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vagrant-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("PLINTH_IMAGE", dir.path())
        .env("PLINTH_SKIP_BUILD", "1")
        .output()
        .expect("run vagrant-image.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Boot::Kernel takes initramfs.img from its dir: give it the master's initrd.
    let master_dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(dir.path().join("vmlinuz"), master_dir.path().join("vmlinuz")).expect("copy");
    std::fs::copy(dir.path().join("master-initrd.img"), master_dir.path().join("initramfs.img")).expect("copy");

    let (api, link) = (crate::vm_common::free_port(), crate::vm_common::free_port());
    let mut master_args = crate::vm_common::user_net(3, "52:54:00:00:03:01", &[(api, 8080)]);
    master_args.extend(crate::vm_common::socket_net(4, "52:54:00:00:04:01", link, true));
    let mut master = crate::vm_common::Vm::start(crate::vm_common::VmConfig {
        name: "pxe-master".into(),
        boot: crate::vm_common::Boot::Kernel {
            dir: master_dir.path().to_path_buf(),
            cmdline: crate::vm_common::cmdline(&format!(
                "plinth.role=master plinth.hostname=plinth-master plinth.token={TOKEN} ip=:::::eth0:dhcp \
                 ip=192.168.77.2:::255.255.255.0::eth1:off plinth.pxe_interface=eth1 \
                 plinth.dhcp_range=192.168.77.100-192.168.77.200 plinth.boot_dir=/srv/plinth-boot"
            )),
        },
        mem_mb: 1024,
        args: master_args,
    })
    .expect("start the master VM");
    let base = format!("http://127.0.0.1:{api}");
    crate::vm_common::wait_http(&mut master, &format!("{base}/ping"), crate::vm_common::BOOT_TIMEOUT)
        .expect("master VM answers");
    let api = Http::new(base);

    let console = tempfile::tempdir().expect("tempdir");
    let mut agent = PxeVm::start_with(
        console.path(),
        &[
            "-netdev".into(),
            format!("socket,id=n0,connect=127.0.0.1:{link}"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac=52:54:00:77:00:01,disable-legacy=on,romfile={IPXE_ROM}"),
        ],
    );
    let agent_node = wait_until("the agent VM PXE-booted from the master VM and registered", secs(400), || {
        if agent.exited() {
            return Err("agent QEMU exited".into());
        }
        let slaves = api.try_get("/master/slaves")?.json["slaves"].as_array().cloned().unwrap_or_default();
        slaves
            .into_iter()
            .find(|s| s["hostname"] == "node-525400770001")
            .ok_or_else(|| agent.console().lines().last().unwrap_or("").to_string())
    });
    assert_eq!(agent_node["active"], true, "{agent_node}");
    let m = machine(&api, "52:54:00:77:00:01");
    assert_eq!(m["state"], "registered", "{m}");
    assert!(m["ip"].as_str().is_some_and(|ip| ip.starts_with("192.168.77.1")), "leased from the range: {m}");
}
