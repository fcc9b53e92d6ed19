//! `plinth bench pxe`: a diskless QEMU (software emulation) PXE-boots from a real master and
//! each step is timed from QEMU's start: the iPXE script fetched (firmware + DHCP + iPXE),
//! the kernel running, the agent registered, its first task running. QEMU's user network
//! answers DHCP here (no root, no namespaces needed); its boot file points iPXE at the
//! master's HTTP boot endpoints on the host, so kernel and initramfs come over HTTP as on a
//! real network. The PXE tests (`tests/pxe_boot.rs`) cover the master's own DHCP server.
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct BenchPxeArgs {
    /// Boots to measure.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// VM memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub mem_mb: u32,
    /// An image directory from `plinth image build` (default: build one).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-pxe.json")]
    pub out: PathBuf,
}

/// Seconds since QEMU started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PxeSample {
    pub ipxe_script_s: f64,
    pub kernel_started_s: f64,
    pub agent_registered_s: f64,
    pub first_task_running_s: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct PxeReport {
    pub accel: &'static str,
    pub transport: &'static str,
    pub kernel_bytes: u64,
    pub initramfs_bytes: u64,
    pub samples: Vec<PxeSample>,
}

/// Kills a child by pid when the benchmark ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: BenchPxeArgs) -> anyhow::Result<PxeReport> {
    let scratch = Scratch(std::env::temp_dir().join(format!("plinth-bench-pxe-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).with_context(|| format!("creating {}", scratch.0.display()))?;
    let binary = std::env::current_exe().context("finding the running plinth binary")?;
    let image = match args.image {
        Some(dir) => dir,
        None => {
            let out = scratch.0.join("image");
            let opts = plinth_image::BuildOptions {
                out: out.clone(),
                kernel: None,
                modules: None,
                binary: binary.clone(),
                role: None,
                cmdline: vec![],
                manifest: plinth_image::Manifest::default(),
                formats: vec![],
                source_date_epoch: 0,
            };
            plinth_image::build(&opts, &mut |_| {})?;
            out
        }
    };
    let size = |name: &str| {
        std::fs::metadata(image.join(name)).map(|m| m.len()).with_context(|| format!("{name} in {}", image.display()))
    };
    let (kernel_bytes, initramfs_bytes) = (size("vmlinuz")?, size("initramfs.img")?);
    let mut samples = Vec::new();
    for run in 1..=args.runs {
        let sample = one_boot(&binary, &image, args.mem_mb, &scratch.0.join(format!("run-{run}")))?;
        eprintln!(
            "run {run}: iPXE script {:.1}s, kernel started {:.1}s, agent registered {:.1}s, first task running {:.1}s after QEMU start",
            sample.ipxe_script_s, sample.kernel_started_s, sample.agent_registered_s, sample.first_task_running_s
        );
        samples.push(sample);
    }
    let report = PxeReport { accel: "tcg", transport: "iPXE over HTTP", kernel_bytes, initramfs_bytes, samples };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}

/// A blocking-style HTTP client over a private current-thread runtime.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> anyhow::Result<Http> {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a tokio runtime")?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).no_proxy().build()?;
        Ok(Http { rt, client })
    }

    fn get_json(&self, url: &str) -> Option<Value> {
        self.rt.block_on(async { self.client.get(url).send().await.ok()?.json().await.ok() })
    }

    fn post_json(&self, url: &str, body: &Value) -> anyhow::Result<()> {
        self.rt.block_on(async { self.client.post(url).json(body).send().await?.error_for_status() })?;
        Ok(())
    }
}

fn one_boot(binary: &Path, image: &Path, mem_mb: u32, dir: &Path) -> anyhow::Result<PxeSample> {
    std::fs::create_dir_all(dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port())?;
    let base = format!("http://127.0.0.1:{port}");
    // The guest reaches the host's loopback as 10.0.2.2 on QEMU's user network.
    let guest_url = format!("http://10.0.2.2:{port}");
    let log = std::fs::File::create(dir.join("master.log"))?;
    let _master = Reaped(
        Command::new(binary)
            .args([
                "master",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--hostname",
                "bench-master",
                "--advertise-url",
                &guest_url,
            ])
            .arg("--data-dir")
            .arg(dir.join("master"))
            .arg("--boot-dir")
            .arg(image)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the master")?,
    );
    let client = Http::new()?;
    let ready = Instant::now();
    while client.get_json(&format!("{base}/v2/info")).is_none() {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the master did not answer on {base}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let app = serde_json::json!({"id": "/bench-pxe", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32});
    client.post_json(&format!("{base}/v2/apps"), &app).context("creating the benchmark app")?;

    let console = dir.join("console.log");
    let t0 = Instant::now();
    let mut qemu = Reaped(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-machine", "q35", "-smp", "2", "-display", "none", "-no-reboot", "-nodefaults", "-monitor", "none"])
            .args(["-m", &mem_mb.to_string()])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-netdev", &format!("user,id=n0,bootfile={guest_url}/boot/ipxe?mac=${{mac}}")])
            // Debian's ipxe-qemu ROM is built for the modern virtio id; SeaBIOS needs them equal.
            .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:be:0c:01,disable-legacy=on,romfile=/usr/lib/ipxe/qemu/efi-virtio.rom"])
            .args(["-boot", "n"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting qemu-system-x86_64")?,
    );
    let deadline = t0 + Duration::from_secs(400);
    let mut step = |what: &str, done: &mut dyn FnMut() -> bool| -> anyhow::Result<f64> {
        while !done() {
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; see {}", dir.display());
            }
            if let Ok(Some(status)) = qemu.0.try_wait() {
                bail!("QEMU exited ({status}) before {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(t0.elapsed().as_secs_f64())
    };
    let ipxe_script_s = step("the iPXE script request", &mut || {
        client.get_json(&format!("{base}/v1/machines")).is_some_and(|v| {
            v["machines"].as_array().is_some_and(|m| m.iter().any(|m| m["bootedVia"] == "ipxe-script"))
        })
    })?;
    let kernel_started_s =
        step("the kernel", &mut || std::fs::read_to_string(&console).is_ok_and(|c| c.contains("Linux version")))?;
    let agent_registered_s = step("the agent to register", &mut || {
        client
            .get_json(&format!("{base}/master/slaves"))
            .is_some_and(|v| v["slaves"].as_array().is_some_and(|s| !s.is_empty()))
    })?;
    let first_task_running_s = step("the first task to run", &mut || {
        client
            .get_json(&format!("{base}/v2/apps/bench-pxe/tasks"))
            .is_some_and(|v| v["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING")))
    })?;
    Ok(PxeSample { ipxe_script_s, kernel_started_s, agent_registered_s, first_task_running_s })
}
