//! Boot failures and console power events: a bad command line explains itself and
//! reboots instead of panicking the kernel; ctrl-alt-del reboots gracefully.
mod vm_common;

use std::time::Duration;

use vm_common::*;

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

#[test]
fn ctrl_alt_del_stops_the_role_and_reboots() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let api = free_port();
    let mut vm = Vm::start(VmConfig {
        name: "cad".into(),
        boot: Boot::Kernel { dir: image().to_path_buf(), cmdline: cmdline("plinth.role=master") },
        mem_mb: 1024,
        args: user_net(3, "52:54:00:00:00:20", &[(api, 8080)]),
    })?;
    wait_http(&mut vm, &format!("http://127.0.0.1:{api}/ping"), BOOT_TIMEOUT)?;
    vm.monitor("sendkey ctrl-alt-delete")?;
    vm.wait_exit(Duration::from_secs(90))?;
    let console = vm.console_text();
    assert!(console.contains("shutdown requested action=Reboot"), "{}", tail(&console, 30));
    assert!(console.contains("role stopped"), "the master got SIGTERM and exited: {}", tail(&console, 30));
    assert!(console.contains("plinth-init: rebooting"), "{}", tail(&console, 30));
    assert!(!console.contains("Kernel panic"), "{}", tail(&console, 40));
    Ok(())
}
