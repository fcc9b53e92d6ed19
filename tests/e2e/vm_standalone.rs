//! A VM booted from the image with `plinth.role=standalone` is a whole cluster: the host
//! reaches its API through a forwarded port, a command app reaches TASK_RUNNING, the node
//! API answers diagnostics, and `POST /node/v1/poweroff` turns the VM off cleanly.

use std::time::Duration;

use crate::vm_common::*;

#[test]
fn standalone_vm_runs_an_app_and_powers_off_through_the_node_api() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let (api, node) = (free_port(), free_port());
    let mut vm = Vm::start(VmConfig {
        name: "standalone".into(),
        boot: Boot::Kernel {
            dir: image().to_path_buf(),
            cmdline: cmdline("plinth.role=standalone plinth.hostname=solo"),
        },
        mem_mb: 2048,
        args: user_net(3, "52:54:00:00:00:10", &[(api, 8080), (node, 5052)]),
    })?;
    let master = format!("http://127.0.0.1:{api}");
    let (pong, boot_time) = wait_http(&mut vm, &format!("{master}/ping"), BOOT_TIMEOUT)?;
    eprintln!("standalone VM answered /ping {:.1}s after QEMU started", boot_time.as_secs_f64());
    assert_eq!(pong.trim(), "pong");

    let console = vm.wait_console("=====================================================", Duration::from_secs(30))?;
    for line in [
        "PLINTH NODE",
        "role:       standalone",
        "hostname:   solo",
        "addresses:  eth0 10.0.2.15/24 (dhcp)",
        "node API:   http://10.0.2.15:5052/node/v1/",
    ] {
        assert!(console.contains(line), "status block lacks {line:?}:\n{}", tail(&console, 40));
    }

    let client = http();
    let created = client
        .post(format!("{master}/v2/apps"))
        .json(&serde_json::json!({"id": "/sleeper", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32}))
        .send()?;
    assert_eq!(created.status().as_u16(), 201, "{}", created.text()?);
    let state = eventually("task reaches TASK_RUNNING", Duration::from_secs(120), || {
        Ok(task_state(&master, "sleeper")?.filter(|s| s == "TASK_RUNNING"))
    })?;
    assert_eq!(state, "TASK_RUNNING");

    // Diagnostics without a shell.
    let node_api = format!("http://127.0.0.1:{node}/node/v1");
    let status: serde_json::Value = client.get(format!("{node_api}/status")).send()?.json()?;
    assert_eq!(status["role"], "standalone");
    assert_eq!(status["hostname"], "solo");
    let mounts: serde_json::Value = client.get(format!("{node_api}/mounts")).send()?.json()?;
    let has_mount = |target: &str, fstype: &str| {
        mounts.as_array().is_some_and(|m| m.iter().any(|e| e["target"] == target && e["fstype"] == fstype))
    };
    assert!(has_mount("/sys/fs/cgroup", "cgroup2"), "{mounts}");
    assert!(has_mount("/var/lib/plinth", "tmpfs"), "{mounts}");
    assert!(has_mount("/", "tmpfs"), "root left the initramfs for a tmpfs: {mounts}");
    // TASK_RUNNING is reported once the executor started the task; under emulation its
    // shell may still be exec'ing `sleep` when the list is read, so wait for it.
    let processes = eventually("the task's process in the node's process list", Duration::from_secs(30), || {
        let processes = client.get(format!("{node_api}/processes")).send()?.text()?;
        Ok(processes.contains("sleep 1000").then_some(processes))
    })?;
    assert!(processes.contains("plinth standalone"), "{processes}");
    let logs = client.get(format!("{node_api}/logs")).send()?.text()?;
    assert!(logs.contains("role started"), "{}", tail(&logs, 20));
    let dmesg = client.get(format!("{node_api}/dmesg")).send()?.text()?;
    assert!(dmesg.contains("Linux version"), "{}", tail(&dmesg, 20));
    let subtree = client.get(format!("{node_api}/network")).send()?.text()?;
    assert!(subtree.contains("10.0.2.15/24"), "{subtree}");
    assert_eq!(client.get(format!("{node_api}/poweroff")).send()?.status().as_u16(), 405, "GET must not power off");

    let resp = client.post(format!("{node_api}/poweroff")).send()?;
    assert_eq!(resp.status().as_u16(), 202);
    let status = vm.wait_exit(Duration::from_secs(90))?;
    assert!(status.success(), "QEMU exit status {status}");
    let console = vm.console_text();
    assert!(console.contains("plinth-init: powering off"), "{}", tail(&console, 30));
    assert!(console.contains("reboot: Power down"), "{}", tail(&console, 30));
    assert!(!console.contains("Kernel panic"), "{}", tail(&console, 60));
    Ok(())
}
