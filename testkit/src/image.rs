//! OCI images built in memory: layers from [`Entry`] lists (well-formed or hostile),
//! a config, a manifest (OCI or Docker schema2). [`busybox_hello`] is the test app:
//! Debian's static busybox serving `Hello {input}!` on `/greet/{input}`, port 3000.
use anyhow::Result;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// One tar entry. `path` is written into the header as it is, so `../x` and `/etc/x`
/// make hostile layers.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    CharDevice {
        path: String,
        major: u32,
        minor: u32,
    },
    /// A file entry with an owner and extended attributes (PAX `SCHILY.xattr.*`).
    OwnedFile {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
        data: Vec<u8>,
        xattrs: Vec<(String, Vec<u8>)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub media_type: String,
    /// The blob as stored in the registry (compressed).
    pub blob: Vec<u8>,
    pub digest: String,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

impl Layer {
    pub fn new(entries: &[Entry], compression: Compression) -> Layer {
        Layer::from_tar(tar_of(entries), compression)
    }

    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
        let diff_id = sha256(&tar);
        let (blob, media_type) = match compression {
            Compression::None => (tar, "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&tar).expect("in memory");
                (enc.finish().expect("in memory"), "application/vnd.oci.image.layer.v1.tar+gzip")
            }
            Compression::Zstd => (zstd_frame(&tar), "application/vnd.oci.image.layer.v1.tar+zstd"),
        };
        Layer { digest: sha256(&blob), media_type: media_type.to_string(), blob, diff_id }
    }
}

/// What the image config says about how to run it.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<Layer>,
}

impl BuiltImage {
    pub fn new(config: &ImageConfig, layers: Vec<Layer>) -> BuiltImage {
        BuiltImage::with_media_type(config, layers, OCI_MANIFEST)
    }

    /// `OCI_MANIFEST` or `DOCKER_MANIFEST` (layer media types are adjusted to match).
    pub fn with_media_type(config: &ImageConfig, mut layers: Vec<Layer>, media_type: &str) -> BuiltImage {
        let docker = media_type == DOCKER_MANIFEST;
        if docker {
            for layer in &mut layers {
                if layer.media_type.ends_with("+gzip") {
                    layer.media_type = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
                }
            }
        }
        let mut run = serde_json::Map::new();
        if let Some(e) = &config.entrypoint {
            run.insert("Entrypoint".into(), json!(e));
        }
        if let Some(c) = &config.cmd {
            run.insert("Cmd".into(), json!(c));
        }
        run.insert("Env".into(), json!(config.env));
        if let Some(w) = &config.working_dir {
            run.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &config.user {
            run.insert("User".into(), json!(u));
        }
        if !config.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> =
                config.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
            run.insert("ExposedPorts".into(), json!(ports));
        }
        let config_json = json!({
            "architecture": "amd64", "os": "linux", "config": run,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        let config_bytes = serde_json::to_vec(&config_json).expect("json");
        let config_digest = sha256(&config_bytes);
        let config_type = if docker {
            "application/vnd.docker.container.image.v1+json"
        } else {
            "application/vnd.oci.image.config.v1+json"
        };
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config_bytes.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.blob.len()})).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).expect("json");
        BuiltImage {
            manifest_digest: sha256(&manifest),
            manifest,
            manifest_media_type: media_type.to_string(),
            config: config_bytes,
            config_digest,
            layers,
        }
    }

    /// Writes an OCI image layout (for `skopeo copy oci:DIR:TAG ...`).
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let write_blob =
            |digest: &str, bytes: &[u8]| std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes);
        write_blob(&self.config_digest, &self.config)?;
        write_blob(&self.manifest_digest, &self.manifest)?;
        for layer in &self.layers {
            write_blob(&layer.digest, &layer.blob)?;
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": self.manifest_media_type, "digest": self.manifest_digest,
            "size": self.manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }
}

/// A tar of `entries`, headers written by hand where the `tar` crate would refuse.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        let (path, data): (&str, &[u8]) = match entry {
            Entry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                (path, &[])
            }
            Entry::File { path, mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                (path, data)
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                set_raw(&mut header.as_old_mut().linkname, target);
                (path, &[])
            }
            Entry::Hardlink { path, target } => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                set_raw(&mut header.as_old_mut().linkname, target);
                (path, &[])
            }
            Entry::CharDevice { path, major, minor } => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_mode(0o600);
                header.set_device_major(*major).expect("gnu header");
                header.set_device_minor(*minor).expect("gnu header");
                (path, &[])
            }
            Entry::OwnedFile { path, mode, uid, gid, data, xattrs } => {
                if !xattrs.is_empty() {
                    let pax: Vec<(String, &[u8])> =
                        xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice())).collect();
                    builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v))).expect("in memory");
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*gid);
                (path, data)
            }
        };
        set_raw(&mut header.as_old_mut().name, path);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).expect("in memory");
    }
    builder.into_inner().expect("in memory")
}

fn set_raw(field: &mut [u8], value: &str) {
    assert!(value.len() < field.len(), "test tar names are short: {value}");
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

fn zstd_frame(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("in memory")
}

/// The greeter script run by `nc -ll -e`: reads the request line, answers `Hello {input}!`.
const GREET_SH: &str = r#"#!/bin/sh
read -r method path proto
name="${path#/greet/}"
if [ "$name" = "$path" ]; then
  body="not found"
  printf 'HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
  exit 0
fi
body="Hello ${name}!"
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
"#;

/// Applets the test image links to busybox.
const APPLETS: [&str; 15] =
    ["sh", "nc", "cat", "echo", "sleep", "ls", "ps", "id", "hostname", "env", "head", "tail", "dd", "wc", "printf"];

/// The test app image: `/bin/busybox` from Debian's `busybox-static`, its applets, and
/// `/app/greet.sh` behind `nc -ll -p 3000 -e`: `GET /greet/world` answers
/// `Hello world!`. Exposes 3000/tcp; runs as root in `/app`.
pub fn busybox_hello() -> Result<BuiltImage> {
    busybox_hello_with(Vec::new())
}

/// [`busybox_hello`] with extra entries in its layer: e.g. a nonce file, which makes a
/// different layer (digest) of the same app, for cold pulls in benchmarks.
pub fn busybox_hello_with(extra: Vec<Entry>) -> Result<BuiltImage> {
    let busybox = std::fs::read("/bin/busybox")
        .map_err(|e| anyhow::anyhow!("/bin/busybox (apt-get install busybox-static): {e}"))?;
    let mut entries = vec![
        Entry::Dir { path: "bin/".into(), mode: 0o755 },
        Entry::File { path: "bin/busybox".into(), mode: 0o755, data: busybox },
    ];
    for applet in APPLETS {
        entries.push(Entry::Symlink { path: format!("bin/{applet}"), target: "busybox".into() });
    }
    for dir in ["app/", "etc/", "tmp/", "proc/", "sys/", "dev/"] {
        entries.push(Entry::Dir { path: dir.into(), mode: if dir == "tmp/" { 0o1777 } else { 0o755 } });
    }
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        mode: 0o644,
        data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
    });
    entries.push(Entry::File {
        path: "etc/group".into(),
        mode: 0o644,
        data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
    });
    entries.push(Entry::File { path: "app/greet.sh".into(), mode: 0o755, data: GREET_SH.as_bytes().to_vec() });
    entries.extend(extra);
    let config = ImageConfig {
        entrypoint: None,
        cmd: Some(vec!["/bin/sh".into(), "-c".into(), "exec nc -ll -p 3000 -e /app/greet.sh".into()]),
        env: vec!["PATH=/bin".into(), "GREETING=Hello".into()],
        working_dir: Some("/app".into()),
        user: None,
        exposed_ports: vec!["3000/tcp".into()],
    };
    Ok(BuiltImage::new(&config, vec![Layer::new(&entries, Compression::Gzip)]))
}
