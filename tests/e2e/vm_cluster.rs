//! Two VMs on a private QEMU network (a point-to-point socket link over loopback): one boots
//! as master, one as agent pointed at it by the kernel command line. The agent registers
//! with the VM's own resources and runs a task the master places on it.

use std::time::Duration;

use crate::vm_common::*;

#[test]
fn agent_vm_joins_master_vm_and_runs_a_task() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let (api, link) = (free_port(), free_port());
    // Master: eth0 = user net (host reaches its API), eth1 = the cluster link, static.
    let mut master_args = user_net(3, "52:54:00:00:01:01", &[(api, 8080)]);
    master_args.extend(socket_net(4, "52:54:00:00:02:01", link, true));
    let mut master = Vm::start(VmConfig {
        name: "master".into(),
        boot: Boot::Kernel {
            dir: image().to_path_buf(),
            cmdline: cmdline(
                "plinth.role=master plinth.hostname=m1 ip=:::::eth0:dhcp ip=192.168.76.1:::255.255.255.0::eth1:off",
            ),
        },
        mem_mb: 1024,
        args: master_args,
    })?;
    let base = format!("http://127.0.0.1:{api}");
    wait_http(&mut master, &format!("{base}/ping"), BOOT_TIMEOUT)?;

    let mut agent = Vm::start(VmConfig {
        name: "agent".into(),
        boot: Boot::Kernel {
            dir: image().to_path_buf(),
            cmdline: cmdline("plinth.role=agent plinth.master=http://192.168.76.1:8080 plinth.hostname=a1 ip=192.168.76.2:::24::eth0:off"),
        },
        mem_mb: 1536,
        args: socket_net(3, "52:54:00:00:02:02", link, false),
    })?;

    let slave = eventually("agent a1 registers with the master", BOOT_TIMEOUT, || {
        let v: serde_json::Value = http().get(format!("{base}/master/slaves")).send()?.json()?;
        Ok(v["slaves"].as_array().and_then(|s| s.iter().find(|s| s["hostname"] == "a1").cloned()))
    })?;
    eprintln!("agent registered {:.1}s after its QEMU started", agent.started.elapsed().as_secs_f64());
    assert_eq!(slave["active"], true, "{slave}");
    assert_eq!(slave["resources"]["cpus"].as_f64(), Some(2.0), "the VM's 2 vCPUs: {slave}");
    let mem = slave["resources"]["mem"].as_f64().unwrap_or(0.0);
    assert!((1000.0..1536.0).contains(&mem), "memory of a 1536 MiB VM minus the OS reserve: {slave}");
    let console = agent.wait_console("PLINTH NODE", Duration::from_secs(10))?;
    assert!(console.contains("master:     http://192.168.76.1:8080"), "{}", tail(&console, 30));
    assert!(console.contains("eth0 192.168.76.2/24 (static)"), "{}", tail(&console, 30));

    let created = http()
        .post(format!("{base}/v2/apps"))
        .json(&serde_json::json!({"id": "/on-agent", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32}))
        .send()?;
    assert_eq!(created.status().as_u16(), 201, "{}", created.text()?);
    eventually("task runs on the agent VM", Duration::from_secs(120), || {
        let v: serde_json::Value = http().get(format!("{base}/v2/apps/on-agent/tasks")).send()?.json()?;
        let task = v["tasks"].as_array().and_then(|t| t.first()).cloned();
        Ok(task.filter(|t| t["state"] == "TASK_RUNNING").map(|t| {
            assert_eq!(t["host"], "192.168.76.2", "placed on the agent VM: {t}");
        }))
    })?;
    Ok(())
}
