//! `plinth image build`: reproducible bytes, clear errors for bad input, and the ISO and
//! disk outputs boot (ISO on BIOS firmware, the disk on UEFI firmware).

use std::process::Command;

use crate::vm_common::*;

fn build_fails(args: &[&str]) -> String {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(plinth())
        .args(["image", "build", "--out"])
        .arg(out_dir.path())
        .args(args)
        .output()
        .expect("run plinth");
    assert!(!out.status.success(), "build with {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn two_builds_are_byte_identical() -> anyhow::Result<()> {
    let a = tempfile::tempdir()?;
    let b = tempfile::tempdir()?;
    // Same input binary for both builds: the one in target/ may be relinked meanwhile.
    let bin_dir = tempfile::tempdir()?;
    let binary = bin_dir.path().join("plinth");
    std::fs::copy(plinth(), &binary)?;
    let args = [
        "--role",
        "agent",
        "--cmdline",
        "plinth.master=http://10.9.9.9:8080",
        "--binary",
        binary.to_str().expect("utf-8 path"),
    ];
    build_image(a.path(), &args)?;
    build_image(b.path(), &args)?;
    for file in ["initramfs.img", "vmlinuz", "cmdline", "SHA256SUMS"] {
        let (x, y) = (std::fs::read(a.path().join(file))?, std::fs::read(b.path().join(file))?);
        assert!(x == y, "{file} differs between two builds");
    }
    let cmdline = std::fs::read_to_string(a.path().join("cmdline"))?;
    assert!(cmdline.contains("plinth.role=agent plinth.master=http://10.9.9.9:8080"), "{cmdline}");
    // The archive is a valid newc cpio that holds the init, its loader and the modules.
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("zstdcat {} | cpio -t --quiet", a.path().join("initramfs.img").display()))
        .output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in ["init", "lib64/ld-linux-x86-64.so.2", "bin/sh", "etc/ssl/certs/ca-certificates.crt", "dev/console"] {
        assert!(listing.lines().any(|l| l == path), "initramfs lacks {path}");
    }
    assert!(listing.lines().any(|l| l.ends_with("/virtio_net.ko")), "initramfs lacks virtio_net.ko");
    assert!(listing.lines().any(|l| l.ends_with("/modules.dep")), "initramfs lacks modules.dep");
    Ok(())
}

#[test]
fn bad_inputs_fail_with_a_reason() -> anyhow::Result<()> {
    let err = build_fails(&["--kernel", "/nonexistent/vmlinuz-1"]);
    assert!(err.contains("no kernel found: /nonexistent/vmlinuz-1 does not exist"), "{err}");
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("plinth-image.toml");
    std::fs::write(&manifest, "modules = [\"no_such_module_xyz\"]\n")?;
    let err = build_fails(&["--manifest", manifest.to_str().expect("utf-8 path")]);
    assert!(err.contains("kernel module \"no_such_module_xyz\" is not in"), "{err}");
    std::fs::write(&manifest, "modulez = [\"overlay\"]\n")?;
    let err = build_fails(&["--manifest", manifest.to_str().expect("utf-8 path")]);
    assert!(err.contains("unknown field `modulez`"), "{err}");
    let err = build_fails(&["--role", "boss"]);
    assert!(err.contains("invalid value 'boss'"), "{err}");
    let err = build_fails(&["--modules", "/nonexistent-modules"]);
    assert!(err.contains("/nonexistent-modules is missing or has no modules.dep"), "{err}");
    Ok(())
}

#[test]
fn iso_boots_on_bios_and_disk_boots_on_uefi() -> anyhow::Result<()> {
    let _one_at_a_time = serial();
    let dir = tempfile::tempdir()?;
    build_image(dir.path(), &["--role", "master", "--format", "iso,disk,box"])?;
    for f in ["plinth.iso", "disk.raw", "disk.qcow2", "plinth.box"] {
        assert!(dir.path().join(f).is_file(), "{f} was not built");
    }
    let listing = Command::new("tar").arg("-tzf").arg(dir.path().join("plinth.box")).output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    for member in ["metadata.json", "Vagrantfile", "box.img"] {
        assert!(listing.lines().any(|l| l == member), "box lacks {member}: {listing}");
    }

    for (name, boot) in [
        ("iso-bios", Boot::Cdrom(dir.path().join("plinth.iso"))),
        ("disk-uefi", Boot::UefiDisk(dir.path().join("disk.qcow2"))),
    ] {
        let api = free_port();
        let mut vm = Vm::start(VmConfig {
            name: name.into(),
            boot,
            mem_mb: 1024,
            args: user_net(3, "52:54:00:00:03:01", &[(api, 8080)]),
        })?;
        let (_, t) = wait_http(&mut vm, &format!("http://127.0.0.1:{api}/ping"), BOOT_TIMEOUT)?;
        eprintln!("{name}: /ping answered {:.1}s after QEMU started", t.as_secs_f64());
        let console = vm.wait_console("role:       master", std::time::Duration::from_secs(30))?;
        assert!(!console.contains("Kernel panic"), "{}", tail(&console, 40));
    }
    Ok(())
}
