//! Task logs: `stdout`/`stderr` files in the sandbox, size-capped by copy-truncate
//! rotation (the task keeps its O_APPEND descriptor, so nothing has to reopen anything),
//! and read back by offset for the agent's HTTP API. Both go through
//! [`crate::sandbox_fs`]: the task owns what is in its sandbox, so a log's name is never
//! trusted to still be the log.
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::sandbox_fs::{self, SandboxDir};

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
    pub const fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

fn generation_name(stream: Stream, generation: u32) -> PathBuf {
    PathBuf::from(format!("{}.{generation}", stream.file_name()))
}

/// Rotates the log the task writes to when it is larger than the cap: `stdout.1` →
/// `stdout.2` …, a copy of the log becomes `stdout.1`, and the log is truncated in place.
/// It works on `log`, the executor's own (read-write) handle on the file it gave the
/// task, never on the name `stdout`: a task that replaced its log with a symlink to a root-only file
/// gets that file neither copied nor truncated. The generations are renamed and created
/// beneath the sandbox's fd (a planted link is moved or replaced, never followed).
/// Bytes written between the copy and the truncation are lost; that is the price of
/// never touching the task's fd. Returns whether it rotated.
pub fn rotate_if_needed(sandbox: &SandboxDir, stream: Stream, log: &File, policy: LogPolicy) -> io::Result<bool> {
    let size = log.metadata()?.len();
    if size <= policy.max_bytes {
        return Ok(false);
    }
    if policy.generations > 0 {
        for generation in (1..policy.generations).rev() {
            match sandbox.rename(&generation_name(stream, generation), &generation_name(stream, generation + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let first = generation_name(stream, 1);
        let tmp = sandbox_fs::temporary_name(&first);
        let mut copy = sandbox.create_new(&tmp, 0o640)?;
        copy_prefix(log, size, &mut copy)?;
        sandbox.rename(&tmp, &first)?;
    }
    log.set_len(0)?;
    Ok(true)
}

/// Copies the first `len` bytes of `from` with positioned reads: the handle shares its
/// file offset with the task's descriptor, which must not move.
fn copy_prefix(from: &File, len: u64, to: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0;
    while offset < len {
        let want = usize::try_from(len - offset).unwrap_or(usize::MAX).min(buf.len());
        let read = from.read_at(&mut buf[..want], offset)?;
        if read == 0 {
            break;
        }
        to.write_all(&buf[..read])?;
        offset += read as u64;
    }
    Ok(())
}

/// Reads up to `max` bytes of a task's log from `offset`. When the file shrank below
/// `offset` (it was rotated), reading starts over at 0; the returned offset is where the
/// next read goes. Only a regular file in the sandbox itself is read: a symlink (to a
/// root-only file, say), a FIFO or a device under the log's name is refused.
pub fn read_from(sandbox: &SandboxDir, stream: Stream, offset: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
    let mut file = sandbox.open_regular(Path::new(stream.file_name()))?;
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
    use std::fs::{self, OpenOptions};

    fn sandbox() -> (tempfile::TempDir, SandboxDir) {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = SandboxDir::open(dir.path()).unwrap();
        (dir, sandbox)
    }

    #[test]
    fn rotation_copies_truncates_and_keeps_generations() {
        let (dir, sandbox) = sandbox();
        let path = dir.path().join("stdout");
        let policy = LogPolicy { max_bytes: 10, generations: 2 };
        // Written through an O_APPEND handle that stays open, as the task's is.
        let mut task_fd = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let log = sandbox_fs::reopen(&task_fd, true).unwrap();
        task_fd.write_all(b"0123456789").unwrap();
        assert!(!rotate_if_needed(&sandbox, Stream::Stdout, &log, policy).unwrap(), "at the cap is not over it");
        task_fd.write_all(b"A").unwrap();
        assert!(rotate_if_needed(&sandbox, Stream::Stdout, &log, policy).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(fs::read(dir.path().join("stdout.1")).unwrap(), b"0123456789A");
        task_fd.write_all(b"second gen!").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second gen!", "appends land at the new start");
        assert!(rotate_if_needed(&sandbox, Stream::Stdout, &log, policy).unwrap());
        task_fd.write_all(b"third generation").unwrap();
        assert!(rotate_if_needed(&sandbox, Stream::Stdout, &log, policy).unwrap());
        assert_eq!(fs::read(dir.path().join("stdout.1")).unwrap(), b"third generation");
        assert_eq!(fs::read(dir.path().join("stdout.2")).unwrap(), b"second gen!");
        assert!(!dir.path().join("stdout.3").exists(), "only two generations are kept");
    }

    #[test]
    fn rotation_works_on_the_handle_not_on_a_planted_link() {
        let outer = tempfile::tempdir().unwrap();
        let secret = outer.path().join("secret");
        fs::write(&secret, vec![b's'; 4096]).unwrap();
        let root = outer.path().join("sandbox");
        fs::create_dir(&root).unwrap();
        let sandbox = SandboxDir::open(&root).unwrap();
        let mut task_fd = sandbox.open_append(Path::new("stdout"), 0o640).unwrap();
        let log = sandbox_fs::reopen(&task_fd, true).unwrap();
        task_fd.write_all(b"the task's own output").unwrap();
        // The task swaps its log's name for a link to the secret, and plants the next
        // generation's name too.
        fs::remove_file(root.join("stdout")).unwrap();
        std::os::unix::fs::symlink(&secret, root.join("stdout")).unwrap();
        std::os::unix::fs::symlink(&secret, root.join("stdout.1")).unwrap();
        let policy = LogPolicy { max_bytes: 10, generations: 2 };
        assert!(rotate_if_needed(&sandbox, Stream::Stdout, &log, policy).unwrap());
        assert_eq!(fs::read(&secret).unwrap(), vec![b's'; 4096], "the secret is neither truncated nor written");
        assert_eq!(fs::read(root.join("stdout.1")).unwrap(), b"the task's own output");
        assert!(fs::symlink_metadata(root.join("stdout.2")).unwrap().file_type().is_symlink(), "the link moved");
        assert_eq!(log.metadata().unwrap().len(), 0, "the task's file was truncated");
        let err = read_from(&sandbox, Stream::Stdout, 0, 100).unwrap_err();
        assert!(sandbox_fs::is_refused_link(&err), "the API does not read through the link: {err}");
    }

    #[test]
    fn reads_by_offset_and_restarts_after_truncation() {
        let (dir, sandbox) = sandbox();
        let path = dir.path().join("stdout");
        fs::write(&path, b"hello world").unwrap();
        assert_eq!(read_from(&sandbox, Stream::Stdout, 6, 100).unwrap(), (b"world".to_vec(), 11));
        assert_eq!(read_from(&sandbox, Stream::Stdout, 0, 5).unwrap(), (b"hello".to_vec(), 5));
        assert_eq!(read_from(&sandbox, Stream::Stdout, 11, 5).unwrap(), (Vec::new(), 11));
        fs::write(&path, b"new").unwrap();
        assert_eq!(read_from(&sandbox, Stream::Stdout, 11, 100).unwrap(), (b"new".to_vec(), 3));
        assert_eq!(read_from(&sandbox, Stream::Stderr, 0, 100).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
