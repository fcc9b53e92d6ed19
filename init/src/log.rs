//! Init logging: every line goes to the console, to `/dev/kmsg` (so `dmesg` and the
//! node API's `/node/v1/dmesg` have it), and to an in-memory ring for `/node/v1/logs`.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};

const RING_LINES: usize = 5000;

fn ring() -> &'static Mutex<VecDeque<String>> {
    static RING: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(RING_LINES)))
}

fn remember(line: &str) {
    let mut ring = ring().lock().unwrap_or_else(|p| p.into_inner());
    if ring.len() == RING_LINES {
        ring.pop_front();
    }
    ring.push_back(line.to_string());
}

/// The remembered log lines (init and role output), oldest first.
pub fn recent_lines() -> Vec<String> {
    ring().lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
}

/// Writes a line from the role's stdout/stderr: console and ring, not kmsg (too chatty).
/// A line of a supervised service's output: the role's, or `[etcd] ...`.
pub fn service_line(tag: &str, line: &str) {
    if tag == "role" {
        role_line(line);
    } else {
        let line = format!("[{tag}] {line}");
        remember(&line);
        let _ = writeln!(io::stderr(), "{line}");
    }
}

pub fn role_line(line: &str) {
    static FIRST: std::sync::Once = std::sync::Once::new();
    // How long the role takes to say anything is part of the boot time; note it once.
    FIRST.call_once(|| {
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        init_line(&format!(
            "plinth-init: first output of the role at uptime {}s",
            uptime.split_whitespace().next().unwrap_or("?")
        ));
    });
    let line = format!("[role] {line}");
    remember(&line);
    let _ = writeln!(io::stderr(), "{line}");
}

/// Writes one already-formatted init message everywhere.
pub fn init_line(line: &str) {
    let line = line.trim_end();
    remember(line);
    let _ = writeln!(io::stderr(), "{line}");
    // <14> = facility user, level info: below the console level the image sets (loglevel=4),
    // so the console does not show each line twice.
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let tagged = if line.starts_with("plinth-init:") { line.to_string() } else { format!("plinth-init: {line}") };
        let _ = kmsg.write_all(format!("<14>{tagged}\n").as_bytes());
    }
}

/// `tracing` writer that sends each formatted event to [`init_line`].
#[derive(Clone, Copy, Default)]
pub struct InitWriter;

impl Write for InitWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for line in String::from_utf8_lossy(buf).lines() {
            init_line(line);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for InitWriter {
    type Writer = InitWriter;
    fn make_writer(&'a self) -> Self::Writer {
        InitWriter
    }
}

/// Installs the init's tracing subscriber (no-op if one is already set).
pub fn install() {
    let _ = tracing_subscriber::fmt()
        .with_writer(InitWriter)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}
