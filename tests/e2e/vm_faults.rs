//! Boot failures and console power events: a bad command line explains itself and
//! reboots instead of panicking the kernel; ctrl-alt-del reboots gracefully.

use std::time::Duration;

use crate::vm_common::*;

#[test]
fn nonsense_role_prints_why_and_reboots_without_a_kernel_panic() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let mut vm = Vm::start(VmConfig {
        name: "bad-role".into(),
        boot: Boot::Kernel { dir: image().to_path_buf(), cmdline: cmdline("plinth.role=nonsense plinth.fatal_wait=3") },
        mem_mb: 1024,
        args: vec![],
    })?;
    // -no-reboot: the reboot after the countdown makes QEMU exit on its own.
    vm.wait_exit(BOOT_TIMEOUT)?;
    let console = vm.console_text();
    assert!(
        console.contains("plinth-init: FATAL: this node cannot boot: plinth.role=\"nonsense\" is not a role; use master, agent or standalone"),
        "{}",
        tail(&console, 30)
    );
    assert!(console.contains("rebooting in 3 s"), "{}", tail(&console, 30));
    assert!(console.contains("reboot: Restarting system"), "{}", tail(&console, 30));
    assert!(!console.contains("Kernel panic"), "{}", tail(&console, 40));
    Ok(())
}

fn master_with_disk(disk: &std::path::Path, api: u16, node: u16) -> anyhow::Result<Vm> {
    let mut args = user_net(3, "52:54:00:00:00:20", &[(api, 8080), (node, 5052)]);
    args.extend(["-drive".to_string(), format!("if=virtio,format=raw,file={}", disk.display())]);
    Vm::start(VmConfig {
        name: "master-disk".into(),
        boot: Boot::Kernel { dir: image().to_path_buf(), cmdline: cmdline("plinth.role=master") },
        mem_mb: 1024,
        args,
    })
}

#[test]
fn ctrl_alt_del_reboots_gracefully_and_the_data_disk_keeps_the_masters_state() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir()?;
    let disk = data_disk(dir.path())?;
    let (api, node) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{api}");

    let mut vm = master_with_disk(&disk, api, node)?;
    wait_http(&mut vm, &format!("{base}/ping"), BOOT_TIMEOUT)?;
    let mounts: serde_json::Value = http().get(format!("http://127.0.0.1:{node}/node/v1/mounts")).send()?.json()?;
    let data = mounts.as_array().and_then(|m| m.iter().find(|e| e["target"] == "/var/lib/plinth").cloned());
    assert_eq!(data.as_ref().map(|d| d["fstype"].clone()), Some(serde_json::json!("ext4")), "{mounts}");
    let created = http()
        .post(format!("{base}/v2/apps"))
        .json(&serde_json::json!({"id": "/kept", "cmd": "sleep 1000", "instances": 0}))
        .send()?;
    assert_eq!(created.status().as_u16(), 201, "{}", created.text()?);

    vm.monitor("sendkey ctrl-alt-delete")?;
    vm.wait_exit(Duration::from_secs(90))?;
    let console = vm.console_text();
    assert!(console.contains("shutdown requested action=Reboot"), "{}", tail(&console, 30));
    assert!(console.contains("role stopped"), "the master got SIGTERM and exited: {}", tail(&console, 30));
    assert!(console.contains("plinth-init: rebooting"), "{}", tail(&console, 30));
    assert!(!console.contains("Kernel panic"), "{}", tail(&console, 40));
    drop(vm);

    // Boot again from the same disk: the app created before the reboot is still there.
    let mut vm = master_with_disk(&disk, api, node)?;
    wait_http(&mut vm, &format!("{base}/ping"), BOOT_TIMEOUT)?;
    let app = http().get(format!("{base}/v2/apps/kept")).send()?;
    assert_eq!(app.status().as_u16(), 200, "app lost across reboot: {}", app.text()?);
    Ok(())
}

#[test]
fn a_crashing_role_is_restarted_with_backoff_and_the_node_api_still_answers() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let node = free_port();
    // `plinth.<flag>=` is passed through to the role: an unknown flag makes it exit at once.
    let mut vm = Vm::start(VmConfig {
        name: "crashloop".into(),
        boot: Boot::Kernel {
            dir: image().to_path_buf(),
            cmdline: cmdline("plinth.role=master plinth.no_such_flag=1 plinth.token=t0ken"),
        },
        mem_mb: 1024,
        // The DHCP server names the node: no plinth.hostname on this command line.
        args: user_net_with(3, "52:54:00:00:00:30", &[(node, 5052)], ",hostname=named-by-dhcp"),
    })?;
    let restarted_twice = |c: &str| c.matches("role stopped; restarting").count() >= 2;
    let console = eventually("the role is restarted twice", BOOT_TIMEOUT, || {
        let c = vm.console_text();
        Ok(restarted_twice(&c).then_some(c))
    })?;
    assert!(console.contains("--no-such-flag"), "the role saw the passed-through flag: {}", tail(&console, 30));
    assert!(console.contains("restart_in_s=1"), "{}", tail(&console, 30));
    assert!(console.contains("restart_in_s=2"), "backoff grows: {}", tail(&console, 30));

    let status: serde_json::Value = http().get(format!("http://127.0.0.1:{node}/node/v1/status")).send()?.json()?;
    assert_eq!(status["role"], "master");
    assert_eq!(status["hostname"], "named-by-dhcp", "{status}");
    let logs = http().get(format!("http://127.0.0.1:{node}/node/v1/logs")).send()?.text()?;
    assert!(logs.contains("[role] error: unexpected argument '--no-such-flag'"), "{}", tail(&logs, 20));
    let poweroff = format!("http://127.0.0.1:{node}/node/v1/poweroff");
    assert_eq!(http().post(&poweroff).send()?.status().as_u16(), 401, "plinth.token guards the power endpoints");
    assert_eq!(http().post(&poweroff).bearer_auth("t0ken").send()?.status().as_u16(), 202);
    vm.wait_exit(Duration::from_secs(90))?;
    assert!(!vm.console_text().contains("Kernel panic"));
    Ok(())
}
