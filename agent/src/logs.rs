//! Task logs: `stdout`/`stderr` files in the sandbox, size-capped by copy-truncate
//! rotation (the task keeps its O_APPEND descriptor, so nothing has to reopen anything),
//! and read back by offset for the agent's HTTP API.
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Default cap per log file before it is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated generations kept (`stdout.1`, `stdout.2`).
pub const DEFAULT_GENERATIONS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    pub max_bytes: u64,
    pub generations: u32,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy { max_bytes: DEFAULT_MAX_BYTES, generations: DEFAULT_GENERATIONS }
    }
}

/// Which of a task's two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

fn generation_path(path: &Path, generation: u32) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{generation}"));
    path.with_file_name(name)
}

/// Rotates `path` when it is larger than the cap: `path.1` → `path.2` …, a copy of
/// `path` becomes `path.1`, and `path` is truncated in place. Bytes written between the
/// copy and the truncation are lost; that is the price of never touching the task's fd.
/// Returns whether it rotated.
pub fn rotate_if_needed(path: &Path, policy: LogPolicy) -> io::Result<bool> {
    let size = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= policy.max_bytes {
        return Ok(false);
    }
    if policy.generations == 0 {
        OpenOptions::new().write(true).open(path)?.set_len(0)?;
        return Ok(true);
    }
    for generation in (1..policy.generations).rev() {
        let from = generation_path(path, generation);
        if from.exists() {
            fs::rename(&from, generation_path(path, generation + 1))?;
        }
    }
    fs::copy(path, generation_path(path, 1))?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Reads up to `max` bytes from `offset`. When the file shrank below `offset` (it was
/// rotated), reading starts over at 0; the returned offset is where the next read goes.
pub fn read_from(path: &Path, offset: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = if offset > len { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(max.min(usize::try_from(len - start).unwrap_or(usize::MAX)));
    file.take(max as u64).read_to_end(&mut buf)?;
    let next = start + buf.len() as u64;
    Ok((buf, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotation_copies_truncates_and_keeps_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let policy = LogPolicy { max_bytes: 10, generations: 2 };
        // Written through an O_APPEND handle that stays open, as the task's is.
        let mut task_fd = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        task_fd.write_all(b"0123456789").unwrap();
        assert!(!rotate_if_needed(&path, policy).unwrap(), "at the cap is not over it");
        task_fd.write_all(b"A").unwrap();
        assert!(rotate_if_needed(&path, policy).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(fs::read(dir.path().join("stdout.1")).unwrap(), b"0123456789A");
        task_fd.write_all(b"second gen!").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second gen!", "appends land at the new start");
        assert!(rotate_if_needed(&path, policy).unwrap());
        task_fd.write_all(b"third generation").unwrap();
        assert!(rotate_if_needed(&path, policy).unwrap());
        assert_eq!(fs::read(dir.path().join("stdout.1")).unwrap(), b"third generation");
        assert_eq!(fs::read(dir.path().join("stdout.2")).unwrap(), b"second gen!");
        assert!(!dir.path().join("stdout.3").exists(), "only two generations are kept");
        assert!(!rotate_if_needed(&dir.path().join("missing"), policy).unwrap());
    }

    #[test]
    fn reads_by_offset_and_restarts_after_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        fs::write(&path, b"hello world").unwrap();
        assert_eq!(read_from(&path, 6, 100).unwrap(), (b"world".to_vec(), 11));
        assert_eq!(read_from(&path, 0, 5).unwrap(), (b"hello".to_vec(), 5));
        assert_eq!(read_from(&path, 11, 5).unwrap(), (Vec::new(), 11));
        fs::write(&path, b"new").unwrap();
        assert_eq!(read_from(&path, 11, 100).unwrap(), (b"new".to_vec(), 3));
    }
}
