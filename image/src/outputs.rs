//! Bootable containers for the kernel + initramfs: hybrid ISO (grub-mkrescue: BIOS via the
//! El Torito/MBR boot image, UEFI via the embedded EFI system partition), disk images and a
//! Vagrant libvirt box. These use Debian's bootloader tools rather than our own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::manifest::Format;
use crate::{ImageError, Result};

fn run(cmd: &mut Command, tool: &str) -> Result<()> {
    let out = cmd.output().map_err(|source| ImageError::Tool { tool: tool.to_string(), source })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.len() > 2000 {
            stderr = stderr[stderr.len() - 2000..].to_string();
        }
        return Err(ImageError::ToolFailed { tool: tool.to_string(), stderr });
    }
    Ok(())
}

/// grub.cfg that boots the kernel with `cmdline`, on serial and VGA consoles.
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\nset timeout=1\nset default=0\n\nmenuentry \"Plinth\" {{\n  linux /boot/vmlinuz {cmdline}\n  initrd /boot/initramfs.img\n}}\n"
    )
}

pub fn build_formats(
    out: &Path,
    formats: &[Format],
    cmdline: &str,
    epoch: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    let wants = |f| formats.contains(&f);
    if !(wants(Format::Iso) || wants(Format::Disk) || wants(Format::Box)) {
        return Ok(made);
    }
    let iso = out.join("plinth.iso");
    let staging = out.join(".iso-root");
    let _ = std::fs::remove_dir_all(&staging);
    let mk =
        |p: &Path| std::fs::create_dir_all(p).map_err(|source| ImageError::Write { path: p.to_path_buf(), source });
    mk(&staging.join("boot/grub"))?;
    for (src, dst) in [("vmlinuz", "boot/vmlinuz"), ("initramfs.img", "boot/initramfs.img")] {
        std::fs::copy(out.join(src), staging.join(dst))
            .map_err(|source| ImageError::Write { path: staging.join(dst), source })?;
    }
    std::fs::write(staging.join("boot/grub/grub.cfg"), grub_cfg(cmdline))
        .map_err(|source| ImageError::Write { path: staging.join("boot/grub/grub.cfg"), source })?;
    progress("  plinth.iso (grub-mkrescue: BIOS + UEFI hybrid)");
    run(
        Command::new("grub-mkrescue")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .arg("-o")
            .arg(&iso)
            .arg(&staging)
            .args(["--", "-volid", "PLINTH"]),
        "grub-mkrescue",
    )?;
    let _ = std::fs::remove_dir_all(&staging);
    if wants(Format::Iso) {
        made.push(iso.clone());
    }
    if wants(Format::Disk) || wants(Format::Box) {
        // The hybrid ISO carries an MBR and an EFI partition, so written to a disk it boots
        // from BIOS and UEFI firmware alike: the raw disk image is that image, padded to MiB.
        let raw = out.join("disk.raw");
        std::fs::copy(&iso, &raw).map_err(|source| ImageError::Write { path: raw.clone(), source })?;
        let len = std::fs::metadata(&raw).map_err(|source| ImageError::Read { path: raw.clone(), source })?.len();
        let padded = len.div_ceil(1 << 20) << 20;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&raw)
            .and_then(|f| f.set_len(padded))
            .map_err(|source| ImageError::Write { path: raw.clone(), source })?;
        let qcow2 = out.join("disk.qcow2");
        progress("  disk.raw, disk.qcow2");
        run(
            Command::new("qemu-img").args(["convert", "-q", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&qcow2),
            "qemu-img",
        )?;
        if wants(Format::Disk) {
            made.push(raw.clone());
            made.push(qcow2.clone());
        }
        if wants(Format::Box) {
            made.push(vagrant_box(out, &qcow2, padded, epoch, progress)?);
        }
        if !wants(Format::Disk) {
            let _ = std::fs::remove_file(&raw);
            let _ = std::fs::remove_file(&qcow2);
        }
    }
    if !wants(Format::Iso) {
        let _ = std::fs::remove_file(&iso);
    }
    Ok(made)
}

/// Vagrant libvirt box: a gzip'd tar of metadata.json, box.img (qcow2) and a Vagrantfile.
fn vagrant_box(
    out: &Path,
    qcow2: &Path,
    virtual_size: u64,
    epoch: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let dir = out.join(".box");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| ImageError::Write { path: dir.clone(), source })?;
    let w = |name: &str, data: String| {
        std::fs::write(dir.join(name), data).map_err(|source| ImageError::Write { path: dir.join(name), source })
    };
    w(
        "metadata.json",
        serde_json::json!({ "provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size.div_ceil(1 << 30).max(1) }).to_string(),
    )?;
    w(
        "Vagrantfile",
        "# Plinth nodes boot straight into PID 1: there is no SSH, manage them over the API.\nVagrant.configure(\"2\") do |config|\n  config.vm.synced_folder \".\", \"/vagrant\", disabled: true\n  config.ssh.insert_key = false\n  config.vm.provider :libvirt do |lv|\n    lv.driver = \"qemu\"\n    lv.memory = 2048\n    lv.cpus = 2\n    lv.disk_bus = \"virtio\"\n  end\nend\n"
            .to_string(),
    )?;
    std::fs::copy(qcow2, dir.join("box.img"))
        .map_err(|source| ImageError::Write { path: dir.join("box.img"), source })?;
    let boxfile = out.join("plinth.box");
    progress("  plinth.box (Vagrant libvirt)");
    run(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", &format!("--mtime=@{epoch}"), "-czf"])
            .arg(&boxfile)
            .args(["metadata.json", "Vagrantfile", "box.img"])
            .env("GZIP", "-n"),
        "tar",
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(boxfile)
}
