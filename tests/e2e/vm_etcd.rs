//! A master node that runs its own etcd member: an image built `--with-etcd`, booted with
//! `plinth.etcd_initial_cluster=` on the kernel command line. PID 1 starts etcd before the
//! master, the master is elected on it, its state lives in etcd on the data disk and
//! survives a reboot; ctrl-alt-del stops the master first, then etcd.

use std::time::Duration;

use crate::vm_common::*;

fn master_on_etcd(image: &std::path::Path, disk: &std::path::Path, api: u16, node: u16) -> anyhow::Result<Vm> {
    let mut args = user_net(3, "52:54:00:00:00:40", &[(api, 8080), (node, 5052)]);
    args.extend(["-drive".to_string(), format!("if=virtio,format=raw,file={}", disk.display())]);
    Vm::start(VmConfig {
        name: "master-etcd".into(),
        boot: Boot::Kernel {
            dir: image.to_path_buf(),
            cmdline: cmdline(
                "plinth.role=master plinth.hostname=m1 plinth.etcd_initial_cluster=m1=http://127.0.0.1:2380",
            ),
        },
        mem_mb: 1024,
        args,
    })
}

#[test]
fn a_master_node_runs_its_own_etcd_member_and_keeps_its_state_there_across_a_reboot() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir()?;
    let image = build_image(&dir.path().join("image"), &["--with-etcd"])?;
    let disk = data_disk(dir.path())?;
    let (api, node) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{api}");

    let mut vm = master_on_etcd(&image, &disk, api, node)?;
    wait_http(&mut vm, &format!("{base}/ping"), BOOT_TIMEOUT)?;
    let masters: serde_json::Value = eventually("the master to be elected on its etcd", BOOT_TIMEOUT, || {
        let v: serde_json::Value = http().get(format!("{base}/v1/masters")).send()?.json()?;
        Ok((v["leader"].is_string() && !v["leader"].as_str().unwrap_or_default().is_empty()).then_some(v))
    })?;
    let processes = http().get(format!("http://127.0.0.1:{node}/node/v1/processes")).send()?.text()?;
    assert!(processes.contains("etcd --name m1"), "PID 1 runs etcd: {}", tail(&processes, 20));
    assert!(processes.contains("--etcd http://127.0.0.1:2379"), "the master uses it: {}", tail(&processes, 20));
    assert_eq!(masters["leader"], "10.0.2.15:8080", "named by its address: {masters} {}", tail(&processes, 20));
    let members = masters["etcd"]["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 1, "its own member: {masters}");
    let created = http()
        .post(format!("{base}/v2/apps"))
        .json(&serde_json::json!({"id": "/kept-in-etcd", "cmd": "sleep 1000", "instances": 0}))
        .send()?;
    assert_eq!(created.status().as_u16(), 201, "{}", created.text()?);

    vm.monitor("sendkey ctrl-alt-delete")?;
    vm.wait_exit(Duration::from_secs(90))?;
    let console = vm.console_text();
    let (role, etcd) = (console.find("role stopped"), console.find("etcd stopped"));
    assert!(role.is_some() && etcd.is_some(), "both stopped: {}", tail(&console, 30));
    assert!(role < etcd, "the master stops before the etcd it writes to: {}", tail(&console, 30));
    assert!(!console.contains("Kernel panic"), "{}", tail(&console, 40));
    drop(vm);

    // Boot again from the same disk: etcd rejoins its data, the app is there.
    let mut vm = master_on_etcd(&image, &disk, api, node)?;
    wait_http(&mut vm, &format!("{base}/ping"), BOOT_TIMEOUT)?;
    let app = eventually("the app back from etcd", BOOT_TIMEOUT, || {
        let reply = http().get(format!("{base}/v2/apps/kept-in-etcd")).send()?;
        Ok((reply.status().as_u16() == 200).then_some(()))
    });
    assert!(app.is_ok(), "app lost across the reboot: {}", tail(&vm.console_text(), 40));
    Ok(())
}

#[test]
fn an_agent_with_an_etcd_cluster_or_an_image_without_etcd_says_why() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    // The default image carries no etcd: the node says how to get one, and does not boot on.
    let mut vm = Vm::start(VmConfig {
        name: "no-etcd".into(),
        boot: Boot::Kernel {
            dir: image().to_path_buf(),
            cmdline: cmdline("plinth.role=master plinth.hostname=m1 plinth.etcd_initial_cluster=m1=http://127.0.0.1:2380 plinth.fatal_wait=60"),
        },
        mem_mb: 512,
        args: user_net(3, "52:54:00:00:00:41", &[]),
    })?;
    let console = vm.wait_console("FATAL", BOOT_TIMEOUT)?;
    assert!(console.contains("--with-etcd"), "{}", tail(&console, 20));
    drop(vm);
    let mut vm = Vm::start(VmConfig {
        name: "agent-etcd".into(),
        boot: Boot::Kernel {
            dir: image().to_path_buf(),
            cmdline: cmdline("plinth.role=agent plinth.master=http://10.0.2.2:8080 plinth.etcd_initial_cluster=m1=http://127.0.0.1:2380 plinth.fatal_wait=60"),
        },
        mem_mb: 512,
        args: user_net(3, "52:54:00:00:00:42", &[]),
    })?;
    let console = vm.wait_console("FATAL", BOOT_TIMEOUT)?;
    assert!(console.contains("plinth.etcd_initial_cluster is for master nodes"), "{}", tail(&console, 20));
    Ok(())
}
