//! `plinth bench boot`: the node image booted as a standalone node in QEMU under software
//! emulation, timed from QEMU's start (ping, agent registered, first task), with the image's
//! size and the init's and role's memory.
use std::path::PathBuf;

use anyhow::Context;

/// `plinth bench boot`: boot a standalone node VM under software emulation and time it.
#[derive(Debug, clap::Args)]
pub struct BenchBootArgs {
    /// Boots to measure (the first also pays for cold caches).
    #[arg(long, default_value_t = 2)]
    pub runs: u32,
    /// VM memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub mem_mb: u32,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-boot.json")]
    pub out: PathBuf,
}

/// One measured boot; times are seconds since QEMU was started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootSample {
    pub ping_s: f64,
    pub agent_registered_s: f64,
    pub first_task_running_s: f64,
    /// Boot phases inside the init (from the init's own status document).
    pub init_boot_s: f64,
    /// Kernel start → role started (the kernel's uptime then, from the init's status).
    pub kernel_to_role_start_s: f64,
    /// The init's phases with their milliseconds (guest clock), in order.
    pub phases: serde_json::Value,
    pub init_rss_kb: u64,
    pub role_rss_kb: u64,
    pub poweroff_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchBootReport {
    pub accel: &'static str,
    pub initramfs_bytes: u64,
    pub initramfs_bytes_without_modules: u64,
    pub modules: usize,
    pub image_build_s: f64,
    pub samples: Vec<BootSample>,
}

/// Builds the image, boots it `runs` times with `plinth.role=standalone` in QEMU (TCG),
/// and records: QEMU start → /ping, → agent registered, → first task TASK_RUNNING;
/// initramfs size; init and role memory; poweroff time. Writes JSON to `args.out`.
pub fn run_bench_boot(args: BenchBootArgs) -> anyhow::Result<BenchBootReport> {
    use std::time::Instant;
    let work = WorkDir::create()?;
    let started = Instant::now();
    let opts = plinth_image::BuildOptions {
        out: work.0.join("image"),
        kernel: None,
        modules: None,
        binary: std::env::current_exe().context("finding the running plinth binary")?,
        role: Some("standalone".into()),
        cmdline: vec![],
        manifest: plinth_image::Manifest::default(),
        formats: vec![],
        source_date_epoch: 0,
    };
    let image = plinth_image::build(&opts, &mut |_| {})?;
    let image_build_s = started.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a tokio runtime")?;
    let mut samples = Vec::new();
    for run in 1..=args.runs {
        let sample = rt.block_on(bench_one_boot(&opts.out, &image.cmdline, args.mem_mb, &work.0))?;
        eprintln!(
            "run {run}: role started {:.1}s after kernel start, /ping {:.1}s, agent registered {:.1}s, first task running {:.1}s after QEMU start; init rss {} KiB, role rss {} KiB",
            sample.kernel_to_role_start_s, sample.ping_s, sample.agent_registered_s, sample.first_task_running_s, sample.init_rss_kb, sample.role_rss_kb
        );
        samples.push(sample);
    }
    let report = BenchBootReport {
        accel: "tcg",
        initramfs_bytes: image.initramfs_bytes,
        initramfs_bytes_without_modules: image.initramfs_bytes_without_modules,
        modules: image.modules.len(),
        image_build_s,
        samples,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}

/// A scratch directory removed when the benchmark ends.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> anyhow::Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("plinth-bench-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills QEMU by pid when the benchmark ends, however it ends.
struct QemuGuard(std::process::Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

async fn bench_one_boot(
    image: &std::path::Path,
    cmdline: &str,
    mem_mb: u32,
    work: &std::path::Path,
) -> anyhow::Result<BootSample> {
    use std::time::{Duration, Instant};
    let port = |()| std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
    let (api, node) = (port(())?, port(())?);
    let console = work.join("console.log");
    let t0 = Instant::now();
    let child = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-smp",
            "2",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-monitor",
            "none",
        ])
        .args(["-m", &mem_mb.to_string()])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(image.join("vmlinuz"))
        .arg("-initrd")
        .arg(image.join("initramfs.img"))
        .args(["-append", cmdline])
        .args(["-netdev", &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{api}-:8080,hostfwd=tcp:127.0.0.1:{node}-:5052")])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut qemu = QemuGuard(child);
    // Short timeouts: before the guest listens, QEMU's user-net accepts the host side of a
    // forwarded connection and leaves it hanging, so a long timeout would blur the timing.
    // No pooling either: a pooled half-open connection would fail every later poll.
    let client = reqwest::Client::builder().timeout(Duration::from_millis(700)).pool_max_idle_per_host(0).build()?;
    let base = format!("http://127.0.0.1:{api}");
    let deadline = t0 + Duration::from_secs(300);
    let until = |what: &'static str| {
        move || -> anyhow::Result<()> {
            if Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {what}");
            }
            Ok(())
        }
    };
    let poll = Duration::from_millis(100);
    let check = until("/ping");
    while !client.get(format!("{base}/ping")).send().await.is_ok_and(|r| r.status().is_success()) {
        check()?;
        tokio::time::sleep(poll).await;
    }
    let ping_s = t0.elapsed().as_secs_f64();
    let check = until("the agent to register");
    loop {
        let slaves: Option<serde_json::Value> = match client.get(format!("{base}/master/slaves")).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if slaves.as_ref().and_then(|v| v["slaves"].as_array()).is_some_and(|s| !s.is_empty()) {
            break;
        }
        check()?;
        tokio::time::sleep(poll).await;
    }
    let agent_registered_s = t0.elapsed().as_secs_f64();
    let app = serde_json::json!({"id": "/bench-boot", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16});
    client.post(format!("{base}/v2/apps")).json(&app).send().await?.error_for_status()?;
    let check = until("the first task to run");
    loop {
        let tasks: Option<serde_json::Value> = match client.get(format!("{base}/v2/apps/bench-boot/tasks")).send().await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if tasks
            .as_ref()
            .and_then(|v| v["tasks"].as_array())
            .is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_RUNNING"))
        {
            break;
        }
        check()?;
        tokio::time::sleep(poll).await;
    }
    let first_task_running_s = t0.elapsed().as_secs_f64();
    let node_api = format!("http://127.0.0.1:{node}/node/v1");
    if let Ok(dir) = std::env::var("PLINTH_BENCH_BOOT_LOG_DIR") {
        let logs = client.get(format!("{node_api}/logs")).send().await?.text().await?;
        std::fs::write(std::path::Path::new(&dir).join(format!("node-{api}.log")), logs)?;
    }
    let status: serde_json::Value = client.get(format!("{node_api}/status")).send().await?.json().await?;
    let procs: serde_json::Value = client.get(format!("{node_api}/processes")).send().await?.json().await?;
    let rss = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        procs.as_array().and_then(|p| p.iter().find(|p| pred(p))).and_then(|p| p["rss_kb"].as_u64()).unwrap_or(0)
    };
    let init_rss_kb = rss(&|p| p["pid"] == 1);
    let role_rss_kb = rss(&|p| p["cmdline"].as_str().is_some_and(|c| c.starts_with("plinth standalone")));
    let off = Instant::now();
    client.post(format!("{node_api}/poweroff")).send().await?.error_for_status()?;
    let check = until("poweroff");
    while qemu.0.try_wait()?.is_none() {
        check()?;
        tokio::time::sleep(poll).await;
    }
    Ok(BootSample {
        ping_s,
        agent_registered_s,
        first_task_running_s,
        init_boot_s: status["boot_seconds"].as_f64().unwrap_or(0.0),
        kernel_to_role_start_s: status["uptime_at_role_start"].as_f64().unwrap_or(0.0),
        phases: status["phases"].clone(),
        init_rss_kb,
        role_rss_kb,
        poweroff_s: off.elapsed().as_secs_f64(),
    })
}
