//! `plinth image build`: kernel + initramfs, bootable disk/ISO and Vagrant box from a manifest.
//!
//! The initramfs is assembled in memory ([`cpio::Archive`]) from: `/init` (the `plinth`
//! binary itself), the shared libraries and dynamic loader it needs, the kernel modules the
//! init loads (plus their dependencies, with a filtered `modules.dep`/`modules.alias`), CA
//! certificates and a minimal `/etc`. Entries are sorted, owned by root and stamped with
//! `SOURCE_DATE_EPOCH`, and gzip gets a zero mtime, so a build is byte-for-byte reproducible.

pub mod cpio;
pub mod manifest;
mod outputs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use cpio::{Archive, Entry};
pub use manifest::{Format, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no kernel found: {reason} (install linux-image-amd64 or pass --kernel PATH)")]
    NoKernel { reason: String },
    #[error("kernel modules directory {path} is missing or has no modules.dep (pass --modules DIR, e.g. /lib/modules/RELEASE)")]
    NoModules { path: PathBuf },
    #[error("kernel module {name:?} is not in {dir}/modules.dep and not built into the kernel")]
    MissingModule { name: String, dir: PathBuf },
    #[error("manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {tool} (is the package that provides it installed? see scripts/packages-os.txt)")]
    Tool {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    ToolFailed { tool: String, stderr: String },
    #[error("invalid option: {0}")]
    Invalid(String),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Everything `plinth image build` takes.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: PathBuf,
    pub kernel: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    /// The binary that becomes `/init`; normally the running `plinth`.
    pub binary: PathBuf,
    pub role: Option<String>,
    /// Extra command-line words, after the manifest's.
    pub cmdline: Vec<String>,
    pub manifest: Manifest,
    pub formats: Vec<Format>,
    /// Timestamp for every file (SOURCE_DATE_EPOCH); default 0.
    pub source_date_epoch: u32,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub initramfs_bytes: u64,
    /// Compressed size without the kernel modules (the size target excludes them).
    pub initramfs_bytes_without_modules: u64,
    pub modules: Vec<String>,
    pub cmdline: String,
    pub outputs: Vec<PathBuf>,
}

/// Modules the image carries by default: the init's lists plus a few useful extras.
pub fn default_modules() -> Vec<String> {
    let mut m: Vec<String> = plinth_init::plan::BASE_MODULES
        .iter()
        .chain(plinth_init::plan::ON_DEMAND_MODULES)
        .chain(plinth_init::plan::CONTAINER_MODULES)
        .map(|s| s.to_string())
        .collect();
    m.extend(
        ["virtio_input", "virtio_balloon", "crc32c_generic", "nls_cp437", "nls_ascii", "squashfs", "loop"]
            .map(String::from),
    );
    m
}

/// The default kernel command line for `role`: serial console last so it becomes /dev/console.
pub fn default_cmdline(role: Option<&str>) -> String {
    let mut s = "console=tty0 console=ttyS0,115200 loglevel=4 panic=10".to_string();
    if let Some(r) = role {
        s.push_str(&format!(" plinth.role={r}"));
    }
    s
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ImageError::Read { path: path.to_path_buf(), source })
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|source| ImageError::Write { path: path.to_path_buf(), source })
}

/// Newest `/boot/vmlinuz-*` and its release, or an explicit kernel.
pub fn find_kernel(explicit: Option<&Path>, boot_dir: &Path) -> Result<(PathBuf, Option<String>)> {
    if let Some(k) = explicit {
        if !k.is_file() {
            return Err(ImageError::NoKernel { reason: format!("{} does not exist", k.display()) });
        }
        let release =
            k.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("vmlinuz-")).map(str::to_string);
        return Ok((k.to_path_buf(), release));
    }
    let mut kernels: Vec<(PathBuf, String)> = std::fs::read_dir(boot_dir)
        .map_err(|e| ImageError::NoKernel { reason: format!("cannot list {}: {e}", boot_dir.display()) })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-").map(|r| (e.path(), r.to_string()))
        })
        .collect();
    kernels.sort_by(|a, b| version_cmp(&a.1, &b.1));
    let (path, release) = kernels
        .pop()
        .ok_or_else(|| ImageError::NoKernel { reason: format!("no vmlinuz-* in {}", boot_dir.display()) })?;
    Ok((path, Some(release)))
}

/// Compares kernel releases numerically where they are numbers (6.1.0-10 < 6.1.0-9 is wrong).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', '+', '~']).map(|p| (p.parse::<u64>().unwrap_or(0), p.to_string())).collect()
    };
    parts(a).cmp(&parts(b))
}

/// Shared libraries and loader the binary needs, from `ldd` (empty for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out =
        Command::new("ldd").arg(binary).output().map_err(|source| ImageError::Tool { tool: "ldd".into(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(ImageError::ToolFailed {
            tool: "ldd".into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(parse_ldd(&text))
}

/// `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

/// Strips debug info into a temporary copy when `strip` exists; otherwise the binary as is.
fn init_binary(binary: &Path, strip: bool, progress: &mut dyn FnMut(&str)) -> Result<Vec<u8>> {
    if strip {
        let tmp = std::env::temp_dir().join(format!("plinth-init-strip-{}", std::process::id()));
        let status = Command::new("strip").arg("--strip-debug").arg("-o").arg(&tmp).arg(binary).status();
        if let Ok(s) = status {
            if s.success() {
                let data = read(&tmp);
                let _ = std::fs::remove_file(&tmp);
                return data;
            }
        }
        progress("  strip not available or failed; using the binary unstripped");
    }
    read(binary)
}

fn minimal_etc(archive: &mut Archive, cmdline: &str) {
    let file = |data: &str| Entry::File { mode: 0o644, data: data.as_bytes().to_vec() };
    archive.add(
        "/etc/passwd",
        file("root:x:0:0:root:/root:/init\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
    );
    archive.add("/etc/group", file("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"));
    archive.add("/etc/hosts", file("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
    archive.add("/etc/nsswitch.conf", file("passwd: files\ngroup: files\nhosts: files dns\n"));
    archive.add("/etc/resolv.conf", file(""));
    archive.add("/etc/hostname", file("plinth\n"));
    archive.add(
        "/etc/os-release",
        file(&format!(
            "NAME=Plinth\nID=plinth\nPRETTY_NAME=\"Plinth node OS {}\"\nVERSION_ID={}\n",
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_PKG_VERSION")
        )),
    );
    archive.add("/etc/plinth/default-cmdline", file(&format!("{cmdline}\n")));
    for dir in [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/root",
        "/var/lib/plinth",
        "/var/log",
        "/usr/bin",
        "/usr/sbin",
        "/mnt",
    ] {
        archive.add(dir, Entry::Dir { mode: 0o755 });
    }
    archive.add("/tmp", Entry::Dir { mode: 0o1777 });
    archive.add("/root", Entry::Dir { mode: 0o700 });
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    archive.add("/dev/console", Entry::CharDev { mode: 0o600, major: 5, minor: 1 });
    archive.add("/usr/bin/plinth", Entry::Symlink { target: "/init".into() });
}

/// Adds the selected modules (and dependencies) with filtered depmod files. Returns the
/// module names included.
fn add_modules(
    archive: &mut Archive,
    dir: &Path,
    release: &str,
    wanted_required: &[String],
    wanted_optional: &[String],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<String>> {
    let dep_path = dir.join("modules.dep");
    if !dep_path.is_file() {
        return Err(ImageError::NoModules { path: dir.to_path_buf() });
    }
    let text = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let (dep, builtin, alias, softdep) =
        (text("modules.dep"), text("modules.builtin"), text("modules.alias"), text("modules.softdep"));
    let index = plinth_init::modules::ModuleIndex::parse(&dep, &builtin, &alias).with_softdeps(&softdep);
    let (_, missing_required) = index.load_order(wanted_required);
    if let Some(name) = missing_required.into_iter().next() {
        return Err(ImageError::MissingModule { name, dir: dir.to_path_buf() });
    }
    let mut wanted: Vec<String> = wanted_optional.to_vec();
    wanted.extend_from_slice(wanted_required);
    let (files, missing) = index.load_order(&wanted);
    if !missing.is_empty() {
        progress(&format!("  not in this kernel (skipped): {}", missing.join(", ")));
    }
    let base = format!("/lib/modules/{release}");
    let included: std::collections::BTreeSet<&str> = files.iter().map(String::as_str).collect();
    for rel in &files {
        archive.add(&format!("{base}/{rel}"), Entry::File { mode: 0o644, data: read(&dir.join(rel))? });
    }
    // Keep only the lines of modules in the image, so the init never tries a missing file.
    let dep_filtered: String = dep
        .lines()
        .filter(|l| l.split_once(':').is_some_and(|(p, _)| included.contains(p.trim())))
        .map(|l| format!("{l}\n"))
        .collect();
    let names: std::collections::BTreeSet<String> =
        files.iter().map(|f| plinth_init::modules::module_name(f)).collect();
    let alias_filtered: String = alias
        .lines()
        .filter(|l| l.split_whitespace().nth(2).is_some_and(|m| names.contains(&m.replace('-', "_"))))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = |s: String| Entry::File { mode: 0o644, data: s.into_bytes() };
    archive.add(&format!("{base}/modules.dep"), file(dep_filtered));
    archive.add(&format!("{base}/modules.alias"), file(alias_filtered));
    archive.add(&format!("{base}/modules.builtin"), file(builtin));
    archive.add(&format!("{base}/modules.softdep"), file(softdep));
    Ok(names.into_iter().collect())
}

/// Where Debian's `etcd-server` installs etcd; the init runs it from the same path.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// etcd and the libraries it links (a master node's own etcd member).
fn add_etcd(archive: &mut Archive, etcd: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let data = std::fs::read(etcd).map_err(|e| {
        ImageError::Invalid(format!("etcd = true but {} cannot be read ({e}): install etcd-server", etcd.display()))
    })?;
    progress(&format!("  {} ({} KiB)", etcd.display(), data.len() / 1024));
    archive.add(&etcd.to_string_lossy(), Entry::File { mode: 0o755, data });
    for lib in shared_libraries(etcd)? {
        let data = read(&lib)?;
        archive.add(&lib.to_string_lossy(), Entry::File { mode: 0o755, data });
    }
    Ok(())
}

/// busybox as `/bin/busybox` with a symlink per applet (`/bin/sh`, `/bin/sleep`, ...).
/// Command apps run through `/bin/sh -c`, and operators get basic tools in command tasks.
fn add_busybox(archive: &mut Archive, busybox: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let Ok(data) = std::fs::read(busybox) else {
        progress(&format!("  {} not found; image has no /bin/sh (install busybox-static)", busybox.display()));
        return Ok(());
    };
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|source| ImageError::Tool { tool: "busybox --list".into(), source })?;
    archive.add("/bin/busybox", Entry::File { mode: 0o755, data });
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    applets.sort();
    for applet in applets {
        // Never shadow the init, and keep plinth reachable as `plinth`.
        if matches!(applet.as_str(), "init" | "linuxrc" | "busybox") || applet.contains('/') {
            continue;
        }
        archive.add(&format!("/bin/{applet}"), Entry::Symlink { target: "busybox".into() });
    }
    progress("  /bin/busybox (+ applets)");
    Ok(())
}

/// zstd: the kernel unpacks it about three times faster than gzip, which matters for boot
/// time under emulation. One frame, fixed level, no timestamps: deterministic output.
fn zstd_compress(data: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(data, 12).map_err(|source| ImageError::Write { path: "initramfs (zstd)".into(), source })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("finishing a Vec cannot fail")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the image into `opts.out`, reporting progress lines through `progress`.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<BuildReport> {
    let m = &opts.manifest;
    let role = opts.role.clone().or_else(|| m.role.clone());
    if let Some(r) = &role {
        if !matches!(r.as_str(), "master" | "agent" | "standalone") {
            return Err(ImageError::Invalid(format!("--role {r:?} is not master, agent or standalone")));
        }
    }
    std::fs::create_dir_all(&opts.out).map_err(|source| ImageError::Write { path: opts.out.clone(), source })?;

    progress("[1/5] kernel");
    let (kernel, release) = find_kernel(opts.kernel.as_deref(), Path::new("/boot"))?;
    let modules_dir = match (&opts.modules, &release) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => Path::new("/lib/modules").join(r),
        (None, None) => {
            return Err(ImageError::Invalid(format!(
                "cannot tell the release of {}; pass --modules DIR",
                kernel.display()
            )))
        }
    };
    let release = match &release {
        Some(r) => r.clone(),
        None => modules_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    progress(&format!("  {} (release {release})", kernel.display()));

    let mut cmdline = default_cmdline(role.as_deref());
    if let Some(c) = &m.cmdline {
        cmdline.push(' ');
        cmdline.push_str(c.trim());
    }
    for c in &opts.cmdline {
        cmdline.push(' ');
        cmdline.push_str(c.trim());
    }

    progress("[2/5] /init and its libraries");
    let mut archive = Archive::default();
    let binary = init_binary(&opts.binary, m.strip.unwrap_or(true), progress)?;
    progress(&format!("  /init = {} ({} KiB)", opts.binary.display(), binary.len() / 1024));
    archive.add("/init", Entry::File { mode: 0o755, data: binary });
    for lib in shared_libraries(&opts.binary)? {
        // The file the link points at, stored under the path the loader looks up.
        let data = read(&lib)?;
        progress(&format!("  {}", lib.display()));
        archive.add(&lib.to_string_lossy(), Entry::File { mode: 0o755, data });
    }
    minimal_etc(&mut archive, &cmdline);
    for ca in ["/etc/ssl/certs/ca-certificates.crt"] {
        if let Ok(data) = std::fs::read(ca) {
            archive.add(ca, Entry::File { mode: 0o644, data });
        } else {
            progress(&format!("  {ca} not found; image has no CA certificates (install ca-certificates)"));
        }
    }
    if m.busybox.unwrap_or(true) {
        add_busybox(&mut archive, Path::new("/bin/busybox"), progress)?;
    }
    if m.etcd.unwrap_or(false) {
        add_etcd(&mut archive, Path::new(ETCD_BINARY), progress)?;
    }
    for f in &m.files {
        archive.add(&f.dest, Entry::File { mode: f.mode_bits()?, data: read(&f.source)? });
    }
    let without_modules = {
        let mut b = Vec::new();
        archive
            .write_newc(&mut b, opts.source_date_epoch)
            .map_err(|source| ImageError::Write { path: "initramfs".into(), source })?;
        match m.compression.unwrap_or_default() {
            manifest::Compression::Zstd => zstd_compress(&b)?.len() as u64,
            manifest::Compression::Gzip => gzip(&b).len() as u64,
        }
    };

    progress("[3/5] kernel modules");
    let optional = if m.default_modules.unwrap_or(true) { default_modules() } else { Vec::new() };
    let modules = add_modules(&mut archive, &modules_dir, &release, &m.modules, &optional, progress)?;
    progress(&format!("  {} modules", modules.len()));

    let compression = m.compression.unwrap_or_default();
    progress(&format!("[4/5] initramfs.img (newc cpio, {compression:?})"));
    let mut raw = Vec::new();
    archive
        .write_newc(&mut raw, opts.source_date_epoch)
        .map_err(|source| ImageError::Write { path: "initramfs".into(), source })?;
    let compressed = match compression {
        manifest::Compression::Zstd => zstd_compress(&raw)?,
        manifest::Compression::Gzip => gzip(&raw),
    };
    let initramfs = opts.out.join("initramfs.img");
    write(&initramfs, &compressed)?;
    let vmlinuz = opts.out.join("vmlinuz");
    let kernel_bytes = read(&kernel)?;
    write(&vmlinuz, &kernel_bytes)?;
    write(&opts.out.join("cmdline"), format!("{cmdline}\n").as_bytes())?;
    progress(&format!(
        "  {} entries, {} KiB raw, {} KiB compressed",
        archive.len(),
        raw.len() / 1024,
        compressed.len() / 1024
    ));

    let mut outputs = vec![vmlinuz.clone(), initramfs.clone(), opts.out.join("cmdline")];
    let mut formats = opts.formats.clone();
    formats.extend(m.formats.iter().copied());
    formats.sort();
    formats.dedup();
    progress(&format!(
        "[5/5] outputs: {}",
        if formats.is_empty() { "kernel + initramfs only".to_string() } else { format!("{formats:?}") }
    ));
    outputs.extend(outputs::build_formats(&opts.out, &formats, &cmdline, opts.source_date_epoch, progress)?);

    let sums: String = outputs
        .iter()
        .filter(|p| p.is_file())
        .map(|p| {
            Ok(format!(
                "{}  {}\n",
                sha256_hex(&read(p)?),
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ))
        })
        .collect::<Result<_>>()?;
    write(&opts.out.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(BuildReport {
        kernel,
        initramfs,
        initramfs_bytes: compressed.len() as u64,
        initramfs_bytes_without_modules: without_modules,
        modules,
        cmdline,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_and_loader_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn newest_kernel_wins_numerically_and_missing_kernel_is_explained() {
        let boot = tempfile::tempdir().expect("tempdir");
        for r in ["6.1.0-9-amd64", "6.1.0-10-amd64"] {
            std::fs::write(boot.path().join(format!("vmlinuz-{r}")), b"k").expect("write");
        }
        let (path, release) = find_kernel(None, boot.path()).expect("found");
        assert_eq!(release.as_deref(), Some("6.1.0-10-amd64"));
        assert!(path.ends_with("vmlinuz-6.1.0-10-amd64"));
        let empty = tempfile::tempdir().expect("tempdir");
        let err = find_kernel(None, empty.path()).expect_err("no kernel");
        assert!(err.to_string().contains("no vmlinuz-* in"), "{err}");
        let err =
            find_kernel(Some(Path::new("/nonexistent/vmlinuz")), empty.path()).expect_err("missing explicit kernel");
        assert!(err.to_string().contains("/nonexistent/vmlinuz does not exist"), "{err}");
    }

    #[test]
    fn modules_bring_their_dependencies_and_a_missing_required_module_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("kernel/n")).expect("mkdir");
        for f in ["virtio_net.ko", "failover.ko", "other.ko"] {
            std::fs::write(dir.path().join("kernel/n").join(f), f).expect("write");
        }
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/n/virtio_net.ko: kernel/n/failover.ko\nkernel/n/failover.ko:\nkernel/n/other.ko:\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("modules.alias"), "alias virtio:d00000001v* virtio_net\nalias pci:v1* other\n")
            .expect("write");
        let mut a = Archive::default();
        let names =
            add_modules(&mut a, dir.path(), "6.1", &["virtio_net".into()], &["nope".into()], &mut |_| {}).expect("ok");
        assert_eq!(names, ["failover", "virtio_net"]);
        assert!(a.contains("/lib/modules/6.1/kernel/n/failover.ko"));
        assert!(!a.contains("/lib/modules/6.1/kernel/n/other.ko"));
        match a.get("/lib/modules/6.1/modules.alias") {
            Some(Entry::File { data, .. }) => {
                assert_eq!(String::from_utf8_lossy(data), "alias virtio:d00000001v* virtio_net\n")
            }
            other => panic!("alias file missing: {other:?}"),
        }
        let err = add_modules(&mut Archive::default(), dir.path(), "6.1", &["wireguard".into()], &[], &mut |_| {})
            .expect_err("missing");
        assert!(err.to_string().contains("\"wireguard\" is not in"), "{err}");
        let err = add_modules(&mut Archive::default(), Path::new("/nonexistent"), "6.1", &[], &[], &mut |_| {})
            .expect_err("no dir");
        assert!(err.to_string().contains("/nonexistent is missing or has no modules.dep"), "{err}");
    }
}
