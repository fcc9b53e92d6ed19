//! `plinth bench containers`: one image (the test kit's busybox greeter) from one local
//! registry (Debian's `docker-registry` on loopback), side by side in one run:
//! - Plinth end to end: `POST /v2/apps` → `TASK_RUNNING` on a `plinth standalone`, with
//!   the image cached (master and agent) and cold (a fresh layer each run);
//! - `podman run -d` of the same image, cached and cold;
//! - from the start request to the first HTTP answer, Plinth against podman, HOST and
//!   BRIDGE (`first_answer.rs`);
//! - create + start (+ delete) of one unpacked bundle through Plinth's libcontainer path,
//!   `crun` and `runc`.
//!
//! Medians go to stdout and, with every sample, to `--out`.
use anyhow::{bail, Context};
use plinth_testkit::image::Entry;
use plinth_testkit::{busybox_hello_with, Registry};

use crate::series::{ms, Series};
use crate::standalone::{free_port, machine, Standalone};
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct BenchContainersArgs {
    /// Samples per measurement.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-containers.json")]
    pub out: PathBuf,
}

pub fn run(args: BenchContainersArgs) -> anyhow::Result<Value> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("plinth bench containers runs containers: run it as root");
    }
    let dir = tempfile::Builder::new().prefix("plinth-bench-containers-").tempdir()?;
    let upstream_addr = format!("127.0.0.1:{}", free_port()?);
    let upstream = Registry::start(None, &upstream_addr).context("starting docker-registry")?;
    let image = |nonce: &str| {
        busybox_hello_with(vec![Entry::File { path: "app/nonce".into(), mode: 0o644, data: nonce.as_bytes().to_vec() }])
    };
    let runs = args.runs.max(1);
    // One image per cold run (its own layer digest), plus the warm one.
    upstream.push("bench/hello", "warm", &image("warm")?)?;
    for i in 0..runs {
        upstream.push("bench/hello", &format!("plinth-cold-{i}"), &image(&format!("plinth-{i}"))?)?;
        upstream.push("bench/hello", &format!("podman-cold-{i}"), &image(&format!("podman-{i}"))?)?;
    }

    let mut results = Vec::new();
    let standalone = Standalone::start(
        dir.path(),
        "cpus:8;mem:8192;disk:8192;ports:[31000-31999]",
        &["--insecure-registry", &upstream_addr],
    )?;
    results.extend(plinth_end_to_end(&standalone, &upstream_addr, runs));
    results.extend(crate::first_answer::plinth(&standalone, &format!("{upstream_addr}/bench/hello:warm"), runs));
    drop(standalone);
    results.extend(podman(dir.path(), &upstream_addr, runs));
    results.extend(create_start(dir.path(), &image("bundle")?, runs));

    let report = json!({
        "machine": machine(),
        "image": format!("{upstream_addr}/bench/hello (busybox-static, one gzip layer)"),
        "runs": runs,
        "series": results,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{:<44} {:>12}  note", "contender", "median ms");
    for s in &results {
        let median = s.median_ms.map_or("-".to_string(), |m| format!("{m:.1}"));
        println!("{:<44} {:>12}  {}", s.name, median, s.note.as_deref().unwrap_or(""));
    }
    println!("(results with every sample in {})", args.out.display());
    Ok(report)
}

impl Standalone {
    /// POSTs an app and returns the milliseconds until its task is `TASK_RUNNING`.
    fn time_to_running(&self, id: &str, image: &str) -> anyhow::Result<f64> {
        let app = json!({"id": id, "cpus": 0.1, "mem": 32, "cmd": "sleep 3600", "portDefinitions": [],
            "container": {"type": "DOCKER", "docker": {"image": image, "network": "HOST"}}});
        let started = Instant::now();
        let reply = self.http.post(format!("{}/v2/apps", self.api)).json(&app).send()?;
        if reply.status().as_u16() != 201 {
            bail!("POST /v2/apps: {} {}", reply.status(), reply.text().unwrap_or_default());
        }
        loop {
            let tasks: Value = self.http.get(format!("{}/v2/apps/{id}/tasks", self.api)).send()?.json()?;
            let states: Vec<&str> =
                tasks["tasks"].as_array().into_iter().flatten().filter_map(|t| t["state"].as_str()).collect();
            if states.contains(&"TASK_RUNNING") {
                let elapsed = ms(started);
                let _ = self.http.delete(format!("{}/v2/apps/{id}?force=true", self.api)).send();
                return Ok(elapsed);
            }
            let app: Value = self.http.get(format!("{}/v2/apps/{id}", self.api)).send()?.json()?;
            let failure = &app["app"]["lastTaskFailure"];
            if !failure.is_null() || started.elapsed() > Duration::from_secs(120) {
                let _ = self.http.delete(format!("{}/v2/apps/{id}?force=true", self.api)).send();
                bail!("{id} did not start: {failure}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn plinth_end_to_end(standalone: &Standalone, upstream: &str, runs: usize) -> Vec<Series> {
    let collect = |name: &str, f: &dyn Fn(usize) -> anyhow::Result<f64>| {
        let mut samples = Vec::new();
        for i in 0..runs {
            match f(i) {
                Ok(sample) => samples.push(sample),
                Err(err) => return Series::failed(name, format!("{err:#}")),
            }
        }
        Series::new(name, samples)
    };
    let cold = collect("plinth: POST -> TASK_RUNNING, cold pull", &|i| {
        standalone.time_to_running(&format!("/bench-cold-{i}"), &format!("{upstream}/bench/hello:plinth-cold-{i}"))
    });
    // First warm-up pulls the warm image; then every run finds it cached.
    let _ = standalone.time_to_running("/bench-warmup", &format!("{upstream}/bench/hello:warm"));
    let warm = collect("plinth: POST -> TASK_RUNNING, image cached", &|i| {
        standalone.time_to_running(&format!("/bench-warm-{i}"), &format!("{upstream}/bench/hello:warm"))
    });
    vec![warm, cold]
}

/// podman with its own storage and config in the bench dir (this host needs runc and
/// no default ulimits; see DEVELOPERS notes), plain HTTP to the local registry.
fn podman(dir: &Path, upstream: &str, runs: usize) -> Vec<Series> {
    let root = dir.join("podman");
    let conf = dir.join("containers.conf");
    if let Err(err) = std::fs::create_dir_all(&root).and_then(|()| {
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
        )
    }) {
        return vec![Series::failed("podman run -d", err.to_string())];
    }
    let podman = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("podman")
            .env("CONTAINERS_CONF", &conf)
            .args([
                "--root",
                &root.join("root").display().to_string(),
                "--runroot",
                &root.join("run").display().to_string(),
            ])
            .args(["--runtime", "runc"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running podman (apt-get install podman)")?;
        if !out.status.success() {
            bail!("podman {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let time_run = |image: &str, name: &str| -> anyhow::Result<f64> {
        let started = Instant::now();
        podman(&["run", "-d", "--tls-verify=false", "--network", "host", "--name", name, image, "sleep", "3600"])?;
        let elapsed = ms(started);
        podman(&["rm", "-f", "-t", "0", name])?;
        Ok(elapsed)
    };
    let series = |label: &str, image_for: &dyn Fn(usize) -> String| {
        let mut samples = Vec::new();
        for i in 0..runs {
            match time_run(&image_for(i), &format!("plinth-bench-{}-{i}", label.len())) {
                Ok(s) => samples.push(s),
                Err(err) => return Series::failed(label, format!("{err:#}")),
            }
        }
        Series::new(label, samples)
    };
    let cold = series("podman run -d, cold pull", &|i| format!("{upstream}/bench/hello:podman-cold-{i}"));
    let _ = time_run(&format!("{upstream}/bench/hello:warm"), "plinth-bench-warmup");
    let warm = series("podman run -d, image cached", &|_| format!("{upstream}/bench/hello:warm"));
    let answers = crate::first_answer::podman(&podman, &format!("{upstream}/bench/hello:warm"), runs);
    // Leave nothing mounted in the bench dir.
    let _ = podman(&["system", "reset", "-f"]);
    let mut all = vec![warm, cold];
    all.extend(answers);
    all
}

/// create + start (+ delete, untimed) of one bundle unpacked by umoci.
fn create_start(dir: &Path, image: &plinth_testkit::BuiltImage, runs: usize) -> Vec<Series> {
    let bundle = dir.join("bundle");
    if let Err(err) = unpack_bundle(dir, image, &bundle) {
        let why = format!("{err:#}");
        return ["plinth (libcontainer)", "crun", "runc"]
            .iter()
            .map(|n| Series::failed(&format!("create+start: {n}"), why.clone()))
            .collect();
    }
    let state_root = dir.join("plinth-state");
    let mut plinth = Vec::new();
    let mut plinth_error = None;
    for i in 0..runs {
        let id = format!("plinth-bench-{}-{i}", std::process::id());
        let devnull = || File::options().write(true).open("/dev/null");
        let started = Instant::now();
        let (Ok(out), Ok(err)) = (devnull(), devnull()) else { break };
        match plinth_agent::container::run::create_and_start(&id, &state_root, &bundle, out, err, &mut Vec::new()) {
            Ok(pid) => {
                plinth.push(ms(started));
                // SAFETY: SIGKILL to the container init we just started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = plinth_agent::container::run::delete(&id, &state_root);
            }
            Err(e) => {
                plinth_error = Some(plinth_protocol::error_chain(&e).to_string());
                break;
            }
        }
    }
    let mut results = vec![match plinth_error {
        Some(why) => Series::failed("create+start: plinth (libcontainer)", why),
        None => Series::new("create+start: plinth (libcontainer)", plinth),
    }];
    for (runtime, global) in [("crun", vec!["--cgroup-manager=disabled"]), ("runc", vec![])] {
        let name = format!("create+start: {runtime}");
        let mut samples = Vec::new();
        let mut failure = None;
        for i in 0..runs {
            let id = format!("{runtime}-bench-{}-{i}", std::process::id());
            let cmd = |args: &[&str]| -> anyhow::Result<()> {
                // The container inherits the runtime's stdio: a pipe would stay open (and
                // its reader wait) for as long as the container runs, so errors go to a file.
                let err_path = dir.join(format!("{runtime}.err"));
                let status = Command::new(runtime)
                    .args(&global)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(File::create(&err_path)?)
                    .status()
                    .with_context(|| format!("running {runtime}"))?;
                if !status.success() {
                    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                    bail!("{runtime} {}: {}", args.join(" "), err.trim());
                }
                Ok(())
            };
            let started = Instant::now();
            let timed =
                cmd(&["create", "--bundle", &bundle.display().to_string(), &id]).and_then(|()| cmd(&["start", &id]));
            let elapsed = ms(started);
            let _ = cmd(&["delete", "-f", &id]);
            match timed {
                Ok(()) => samples.push(elapsed),
                Err(err) => {
                    failure = Some(format!("{err:#}"));
                    break;
                }
            }
        }
        results.push(match failure {
            Some(why) => Series::failed(&name, why),
            None => Series::new(&name, samples),
        });
    }
    results
}

fn unpack_bundle(dir: &Path, image: &plinth_testkit::BuiltImage, bundle: &Path) -> anyhow::Result<()> {
    let layout = dir.join("layout");
    image.write_oci_layout(&layout, "bench")?;
    let out = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:bench", layout.display()), &bundle.display().to_string()])
        .output()
        .context("running umoci (apt-get install umoci)")?;
    if !out.status.success() {
        bail!("umoci unpack: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    // The same process everywhere: a sleeping shell, no terminal, host network namespace
    // kept out so the runtimes differ only in what they do themselves.
    let config_path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    config["process"]["args"] = json!(["/bin/sleep", "3600"]);
    config["process"]["terminal"] = json!(false);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}
