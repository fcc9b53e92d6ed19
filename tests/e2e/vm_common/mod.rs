//! Shared helpers for the VM tests: build the node image once per test binary, boot it in
//! QEMU under software emulation (TCG, never KVM) with the serial console in a file, and
//! kill QEMU by pid when the test ends, pass or fail.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a TCG boot may take before a test gives up (boots take ~15-30 s here).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

pub fn plinth() -> &'static str {
    env!("CARGO_BIN_EXE_plinth")
}

/// VMs are slow under emulation on 2 cores: one test at a time within a test binary.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `plinth image build --out DIR ARGS...` and returns DIR; fails with the tool's output.
pub fn build_image(dir: &Path, args: &[&str]) -> Result<PathBuf> {
    let out = Command::new(plinth())
        .args(["image", "build", "--out"])
        .arg(dir)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .context("running plinth image build")?;
    if !out.status.success() {
        bail!(
            "plinth image build failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dir.to_path_buf())
}

/// A node's data disk: a 256 MiB file made ext4 labelled `PLINTH_DATA` (mkfs.ext4, e2fsprogs).
pub fn data_disk(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let disk = dir.join("data.img");
    std::fs::File::create(&disk)?.set_len(256 << 20)?;
    let out = std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-L", "PLINTH_DATA"]).arg(&disk).output()?;
    anyhow::ensure!(out.status.success(), "mkfs.ext4 failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(disk)
}

/// The default image (kernel + initramfs, no role preset), built once per test binary.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        build_image(&dir, &[]).expect("building the node image")
    })
}

pub use plinth_testkit::free_port;

/// What to boot.
pub enum Boot {
    /// Direct kernel boot of vmlinuz + initramfs with this command line.
    Kernel { dir: PathBuf, cmdline: String },
    /// A CD-ROM image (BIOS firmware).
    Cdrom(PathBuf),
    /// A disk image (qcow2) with UEFI firmware.
    UefiDisk(PathBuf),
}

pub struct VmConfig {
    pub name: String,
    pub boot: Boot,
    pub mem_mb: u32,
    /// Extra QEMU arguments (network devices etc.).
    pub args: Vec<String>,
}

/// One running QEMU. Dropping it kills QEMU by pid.
pub struct Vm {
    pub name: String,
    child: Child,
    pub console: PathBuf,
    pub monitor: PathBuf,
    pub started: Instant,
    _dir: tempfile::TempDir,
}

/// `-netdev user` with host ports forwarded to guest ports, on the NIC in PCI slot `slot`.
pub fn user_net(slot: u8, mac: &str, forwards: &[(u16, u16)]) -> Vec<String> {
    user_net_with(slot, mac, forwards, "")
}

/// [`user_net`] with extra `-netdev user` options, e.g. `,hostname=NAME` for DHCP option 12.
pub fn user_net_with(slot: u8, mac: &str, forwards: &[(u16, u16)], options: &str) -> Vec<String> {
    let fwd: String = forwards.iter().map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}")).collect();
    vec![
        "-netdev".into(),
        format!("user,id=un{slot}{fwd}{options}"),
        "-device".into(),
        format!("virtio-net-pci,netdev=un{slot},mac={mac},addr={slot:#x},romfile="),
    ]
}

/// A point-to-point QEMU socket link between two VMs over loopback TCP: one side listens.
pub fn socket_net(slot: u8, mac: &str, port: u16, listen: bool) -> Vec<String> {
    let mode = if listen { "listen" } else { "connect" };
    vec![
        "-netdev".into(),
        format!("socket,id=sn{slot},{mode}=127.0.0.1:{port}"),
        "-device".into(),
        format!("virtio-net-pci,netdev=sn{slot},mac={mac},addr={slot:#x},romfile="),
    ]
}

impl Vm {
    pub fn start(cfg: VmConfig) -> Result<Vm> {
        let dir = tempfile::Builder::new().prefix(&format!("plinth-vm-{}-", cfg.name)).tempdir()?;
        let console = dir.path().join("console.log");
        let monitor = dir.path().join("monitor.sock");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-machine", "q35", "-smp", "2", "-display", "none", "-no-reboot", "-nodefaults"])
            .args(["-m", &cfg.mem_mb.to_string()])
            .args(["-serial", &format!("file:{}", console.display())])
            .args(["-monitor", &format!("unix:{},server,nowait", monitor.display())]);
        match &cfg.boot {
            Boot::Kernel { dir, cmdline } => {
                cmd.arg("-kernel")
                    .arg(dir.join("vmlinuz"))
                    .arg("-initrd")
                    .arg(dir.join("initramfs.img"))
                    .args(["-append", cmdline]);
            }
            Boot::Cdrom(iso) => {
                cmd.arg("-cdrom").arg(iso).args(["-boot", "d"]);
            }
            Boot::UefiDisk(disk) => {
                let vars = dir.path().join("OVMF_VARS.fd");
                std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).context("copying OVMF vars (package ovmf)")?;
                cmd.args(["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
                    .arg("-drive")
                    .arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()))
                    .arg("-drive")
                    .arg(format!("if=virtio,format=qcow2,snapshot=on,file={}", disk.display()));
            }
        }
        cmd.args(&cfg.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
        Ok(Vm { name: cfg.name, child, console, monitor, started: Instant::now(), _dir: dir })
    }

    /// The serial console so far, with colour escapes removed.
    pub fn console_text(&self) -> String {
        let raw = std::fs::read(&self.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for n in chars.by_ref() {
                        if n.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                continue;
            }
            out.push(c);
        }
        out
    }

    /// Waits until the console contains `needle`; fails with the console tail otherwise.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let end = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if text.contains(needle) {
                return Ok(text);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{}: QEMU exited ({status}) before the console showed {needle:?}:\n{}",
                    self.name,
                    tail(&text, 60)
                );
            }
            if Instant::now() > end {
                bail!("{}: console did not show {needle:?} within {timeout:?}:\n{}", self.name, tail(&text, 60));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > end {
                bail!(
                    "{}: QEMU still running after {timeout:?}; console:\n{}",
                    self.name,
                    tail(&self.console_text(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends one human-monitor command (e.g. `sendkey ctrl-alt-delete`).
    pub fn monitor(&self, command: &str) -> Result<()> {
        let mut s = UnixStream::connect(&self.monitor).context("connecting to the QEMU monitor")?;
        s.write_all(format!("{command}\n").as_bytes())?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- console of {} (last lines) ---\n{}", self.name, tail(&self.console_text(), 80));
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn http() -> reqwest::blocking::Client {
    plinth_oci::tls::install_provider();
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("building an HTTP client")
}

/// Polls `url` until it answers 2xx; returns the body and when it first answered.
pub fn wait_http(vm: &mut Vm, url: &str, timeout: Duration) -> Result<(String, Duration)> {
    // A short per-request timeout: QEMU's user-net accepts forwarded connections before the
    // guest listens and leaves them hanging.
    plinth_oci::tls::install_provider();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let end = Instant::now() + timeout;
    loop {
        if let Ok(resp) = client.get(url).send() {
            if resp.status().is_success() {
                return Ok((resp.text()?, vm.started.elapsed()));
            }
        }
        if let Some(status) = vm.child.try_wait()? {
            bail!("{}: QEMU exited ({status}) before {url} answered:\n{}", vm.name, tail(&vm.console_text(), 60));
        }
        if Instant::now() > end {
            bail!("{}: {url} did not answer within {timeout:?}; console:\n{}", vm.name, tail(&vm.console_text(), 60));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls `check` every half second until it returns `Some`, or fails with `what`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let end = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > end {
            bail!("{what} did not happen within {timeout:?} (last error: {last_err:?})");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The state of the first task of `app` on the master at `base`, if any.
pub fn task_state(base: &str, app: &str) -> Result<Option<String>> {
    let v: serde_json::Value = http().get(format!("{base}/v2/apps/{app}/tasks")).send()?.json()?;
    Ok(v["tasks"].as_array().and_then(|t| t.first()).and_then(|t| t["state"].as_str()).map(str::to_string))
}

/// Direct-kernel-boot command line on the serial console, for a role and extra words.
pub fn cmdline(extra: &str) -> String {
    format!("console=ttyS0,115200 loglevel=4 panic=10 {extra}")
}
