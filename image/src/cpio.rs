//! A reproducible newc ("070701") cpio writer, the format the kernel unpacks as initramfs.
//! Entries are written sorted by path with fixed owner, mtime and inode numbers, so the
//! same inputs give the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An archive under construction: path (without leading `/`) → entry.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn normalize(path: &str) -> String {
    path.trim_start_matches('/').trim_end_matches('/').to_string()
}

impl Archive {
    /// Adds an entry and any missing parent directories (mode 0755). A later add of the
    /// same path replaces the earlier one.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = normalize(path);
        let mut parent = String::new();
        for comp in path.split('/').take(path.split('/').count().saturating_sub(1)) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(path, entry);
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalize(path))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&normalize(path))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of file contents.
    pub fn payload_bytes(&self) -> u64 {
        self.entries.values().map(|e| if let Entry::File { data, .. } = e { data.len() as u64 } else { 0 }).sum()
    }

    /// Paths and entries in archive order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Writes the archive in newc format with every mtime set to `mtime`.
    pub fn write_newc<W: Write>(&self, out: &mut W, mtime: u32) -> io::Result<()> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir { mode } => (0o040000 | mode, &[], (0, 0)),
                Entry::File { mode, data } => (0o100000 | mode, data, (0, 0)),
                Entry::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
                Entry::CharDev { mode, major, minor } => (0o020000 | mode, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir { .. }) { 2 } else { 1 };
            // newc sizes are 32-bit: a larger file cannot be archived.
            let size = u32::try_from(data.len()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: larger than cpio newc's 4 GiB"))
            })?;
            write_header(out, ino, mode, nlink, mtime, size, rdev, path)?;
            out.write_all(data)?;
            pad4(out, data.len())?;
        }
        write_header(out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!")
    }
}

#[allow(clippy::too_many_arguments)]
fn write_header<W: Write>(
    out: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{filesize:08X}{devmajor:08X}{devminor:08X}{rdevmajor:08X}{rdevminor:08X}{namesize:08X}{check:08X}",
        uid = 0,
        gid = 0,
        devmajor = 0,
        devminor = 0,
        rdevmajor = rdev.0,
        rdevminor = rdev.1,
        check = 0,
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, header.len() + namesize)
}

fn pad4<W: Write>(out: &mut W, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_order_is_sorted() {
        let mut a = Archive::default();
        a.add("/usr/lib/x.so", Entry::File { mode: 0o644, data: b"x".to_vec() });
        a.add("/init", Entry::File { mode: 0o755, data: b"#!".to_vec() });
        let paths: Vec<_> = a.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["init", "usr", "usr/lib", "usr/lib/x.so"]);
    }

    #[test]
    fn output_is_valid_newc_that_gnu_cpio_can_list() {
        let mut a = Archive::default();
        a.add("/etc/hostname", Entry::File { mode: 0o644, data: b"plinth\n".to_vec() });
        a.add("/bin/sh", Entry::Symlink { target: "/init".into() });
        a.add("/dev/console", Entry::CharDev { mode: 0o600, major: 5, minor: 1 });
        let mut bytes = Vec::new();
        a.write_newc(&mut bytes, 1_700_000_000).expect("write to vec");
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        let mut again = Vec::new();
        a.write_newc(&mut again, 1_700_000_000).expect("write to vec");
        assert_eq!(bytes, again, "same archive, same bytes");

        if std::process::Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("cpio not installed; skipping the cross-check");
            return;
        }
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cpio");
        child.stdin.take().expect("stdin").write_all(&bytes).expect("feed cpio");
        let out = child.wait_with_output().expect("cpio output");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "cpio rejected the archive: {listing}");
        assert!(listing.contains("etc/hostname"), "{listing}");
        assert!(listing.contains("bin/sh -> /init"), "{listing}");
        assert!(listing.lines().any(|l| l.starts_with('c') && l.contains("dev/console")), "{listing}");
    }
}
