//! One `wrk --latency` run, its summary read from a Lua `done` hook that prints it as JSON
//! (wrk's own figures: requests, duration, error counts, latency percentiles), so nothing
//! parses wrk's human-readable table.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Marks the summary line among wrk's output.
const MARK: &str = "PLINTH_WRK ";

/// wrk's `done(summary, latency, requests)`: one JSON line (times in microseconds).
const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PLINTH_WRK {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

/// How wrk's connections behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connections {
    /// wrk's default: each connection carries request after request.
    KeepAlive,
    /// `Connection: close`: one TCP connection (through the balancer to a backend) per request.
    Close,
}

impl Connections {
    pub fn label(self) -> &'static str {
        match self {
            Connections::KeepAlive => "keep-alive",
            Connections::Close => "connection: close",
        }
    }
}

/// What one run of wrk measured, as wrk counts it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    pub duration_us: u64,
    pub bytes: u64,
    /// Socket errors: connect, read, write, timeout (wrk's "Socket errors" line).
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    /// Answers with a status above 399 (wrk's "Non-2xx or 3xx responses").
    pub status: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Summary {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    /// Requests that did not get a good answer: socket errors and non-2xx/3xx answers.
    pub fn failed(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.status
    }
}

/// How wrk is run: threads, connections, per-request timeout; the script's place.
#[derive(Debug, Clone)]
pub struct Wrk {
    pub threads: usize,
    pub connections: usize,
    pub timeout: Duration,
    script: PathBuf,
}

impl Wrk {
    /// Writes the summary script into `dir`.
    pub fn new(dir: &Path, threads: usize, connections: usize, timeout: Duration) -> anyhow::Result<Wrk> {
        let script = dir.join("summary.lua");
        std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
        Ok(Wrk { threads, connections: connections.max(threads), timeout, script })
    }

    /// `wrk --latency` against `url` for `duration`; bounded: killed past the duration plus 20 s.
    pub fn run(&self, url: &str, duration: Duration, connections: Connections) -> anyhow::Result<Summary> {
        let mut command = Command::new("wrk");
        command
            .args(["--latency", "-t", &self.threads.to_string(), "-c", &self.connections.to_string()])
            .args(["-d", &format!("{}s", duration.as_secs().max(1)), "--timeout"])
            .arg(format!("{}s", self.timeout.as_secs().max(1)))
            .arg("-s")
            .arg(&self.script);
        if connections == Connections::Close {
            command.args(["-H", "Connection: close"]);
        }
        let mut child = command
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting wrk")?;
        let limit = duration + Duration::from_secs(20);
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("wrk against {url} did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(MARK)) else {
            bail!(
                "wrk against {url} printed no summary ({}): {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        };
        serde_json::from_str(line).with_context(|| format!("wrk's summary {line:?}"))
    }
}
