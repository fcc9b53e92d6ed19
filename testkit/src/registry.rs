//! Debian's `docker-registry` (the reference registry, distribution v2) on a loopback
//! address, with its storage in a temp dir, and pushes into any v2 registry.
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::BuiltImage;
use crate::netns;

pub const BINARY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Child,
    pub addr: String,
    pub netns: Option<String>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry listening on `addr` (e.g. `127.0.0.1:5000`), inside `netns` if given.
    pub fn start(netns: Option<&str>, addr: &str) -> Result<Registry> {
        let dir = tempfile::Builder::new().prefix("plinth-registry-").tempdir()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BINARY]);
                c
            }
            None => Command::new(BINARY),
        };
        command.arg("serve").arg(&config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = command.spawn().with_context(|| format!("start {BINARY} (apt-get install docker-registry)"))?;
        let registry = Registry { child, addr: addr.to_string(), netns: netns.map(str::to_string), dir };
        let started = Instant::now();
        loop {
            let url = format!("{}/v2/", registry.url());
            let ok = registry.run(move || {
                plinth_oci::tls::install_provider();
                reqwest::blocking::Client::new().get(&url).send().map(|r| r.status().is_success()).unwrap_or(false)
            });
            if ok {
                return Ok(registry);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("docker-registry did not answer on {addr}: {}", registry.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Runs `f` where the registry is reachable (its namespace, if any).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match &self.netns {
            Some(ns) => netns::run_in(ns, f),
            None => f(),
        }
    }

    /// Pushes `image` as `name:tag`.
    pub fn push(&self, name: &str, tag: &str, image: &BuiltImage) -> Result<()> {
        let (base, name, tag, image) = (self.url(), name.to_string(), tag.to_string(), image.clone());
        self.run(move || push(&base, &name, &tag, &image))
    }

    /// Where the registry keeps a blob on disk, to tamper with it.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// Stops the registry (upstream outage).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // `ip netns exec` execs the registry, so this pid is the registry itself.
        // why: pids are at most the kernel's pid_max (2^22), so they fit in pid_t.
        #[allow(clippy::cast_possible_wrap)]
        let pid = child.id() as i32;
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

/// Pushes an image to any v2 registry with monolithic blob uploads, then the manifest.
pub fn push(base: &str, name: &str, tag: &str, image: &BuiltImage) -> Result<()> {
    plinth_oci::tls::install_provider();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let mut blobs: Vec<(&str, &[u8])> = vec![(image.config_digest.as_str(), &image.config)];
    blobs.extend(image.layers.iter().map(|l| (l.digest.as_str(), l.blob.as_slice())));
    for (digest, bytes) in blobs {
        upload_blob(&client, base, name, digest, bytes)?;
    }
    let reply = client
        .put(format!("{base}/v2/{name}/manifests/{tag}"))
        .header("content-type", image.manifest_media_type.as_str())
        .body(image.manifest.clone())
        .send()?;
    if !reply.status().is_success() {
        bail!("manifest push to {base}/{name}:{tag}: {} {}", reply.status(), reply.text().unwrap_or_default());
    }
    Ok(())
}

/// Uploads one blob (POST then PUT with the digest).
pub fn upload_blob(
    client: &reqwest::blocking::Client,
    base: &str,
    name: &str,
    digest: &str,
    bytes: &[u8],
) -> Result<()> {
    let reply = client.post(format!("{base}/v2/{name}/blobs/uploads/")).send()?;
    if reply.status().as_u16() != 202 {
        bail!("upload start at {base}/{name}: {} {}", reply.status(), reply.text().unwrap_or_default());
    }
    let location = reply
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| anyhow!("no Location on the upload"))?
        .to_string();
    let location = if location.starts_with('/') { format!("{base}{location}") } else { location };
    let separator = if location.contains('?') { '&' } else { '?' };
    let reply = client
        .put(format!("{location}{separator}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()?;
    if reply.status().as_u16() != 201 {
        bail!("blob {digest} upload: {} {}", reply.status(), reply.text().unwrap_or_default());
    }
    Ok(())
}
