//! `plinth-image.toml`: what goes into the image. Unknown keys are rejected so a typo
//! never silently builds a different image.
//!
//! ```toml
//! role = "agent"                       # preset: adds plinth.role=agent to the command line
//! cmdline = "plinth.master=http://192.168.76.1:8080"
//! modules = ["dummy", "wireguard"]     # in addition to the default set
//! default_modules = true               # include the default NIC/disk/container modules
//! strip = true                         # strip debug info from /init
//! busybox = true                       # /bin/sh + applets for command apps (busybox-static)
//! etcd = false                         # /usr/bin/etcd (etcd-server), for masters that form their own etcd
//! compression = "zstd"                # or "gzip"
//! formats = ["iso", "disk", "box"]     # besides vmlinuz + initramfs.img + cmdline
//!
//! [[files]]
//! source = "motd"                      # relative to the manifest
//! dest = "/etc/motd"
//! mode = "0644"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ImageError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub role: Option<String>,
    pub cmdline: Option<String>,
    #[serde(default)]
    pub modules: Vec<String>,
    pub default_modules: Option<bool>,
    pub strip: Option<bool>,
    /// Include busybox (static) as /bin/sh and its applets, so command apps have a shell.
    pub busybox: Option<bool>,
    /// Include Debian's `/usr/bin/etcd` and its libraries, so master nodes started with
    /// `plinth.etcd_initial_cluster=` run their own etcd member (off by default: 21 MB).
    pub etcd: Option<bool>,
    /// initramfs compression: "zstd" (default, fastest to unpack) or "gzip".
    pub compression: Option<Compression>,
    #[serde(default)]
    pub formats: Vec<Format>,
    #[serde(default)]
    pub files: Vec<ExtraFile>,
}

/// Outputs beyond the kernel, initramfs and command line (always built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Hybrid ISO, BIOS + UEFI (grub-mkrescue).
    Iso,
    /// Raw and qcow2 disk images.
    Disk,
    /// Vagrant libvirt box.
    Box,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "iso" => Ok(Format::Iso),
            "disk" => Ok(Format::Disk),
            "box" => Ok(Format::Box),
            other => Err(format!("unknown format {other:?}; use iso, disk or box")),
        }
    }
}

/// How initramfs.img is compressed; both are in Debian's kernel (CONFIG_RD_ZSTD, CONFIG_RD_GZIP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    pub source: PathBuf,
    pub dest: String,
    /// Octal, e.g. "0644"; default 0644.
    pub mode: Option<String>,
}

impl ExtraFile {
    pub fn mode_bits(&self) -> Result<u32, ImageError> {
        match &self.mode {
            None => Ok(0o644),
            Some(m) => {
                u32::from_str_radix(m.trim_start_matches("0o"), 8).ok().filter(|b| *b <= 0o7777).ok_or_else(|| {
                    ImageError::Manifest {
                        path: PathBuf::from(&self.dest),
                        reason: format!("mode {m:?} is not an octal permission like \"0644\""),
                    }
                })
            }
        }
    }
}

impl Manifest {
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ImageError> {
        let m: Manifest = toml::from_str(text)
            .map_err(|e| ImageError::Manifest { path: path.to_path_buf(), reason: e.to_string() })?;
        if let Some(role) = &m.role {
            if !matches!(role.as_str(), "master" | "agent" | "standalone") {
                return Err(ImageError::Manifest {
                    path: path.to_path_buf(),
                    reason: format!("role {role:?} is not master, agent or standalone"),
                });
            }
        }
        for f in &m.files {
            if !f.dest.starts_with('/') {
                return Err(ImageError::Manifest {
                    path: path.to_path_buf(),
                    reason: format!("files.dest {:?} must be an absolute path", f.dest),
                });
            }
            f.mode_bits()?;
        }
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Manifest, ImageError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ImageError::Read { path: path.to_path_buf(), source })?;
        let mut m = Manifest::parse(&text, path)?;
        // Extra files are relative to the manifest's directory.
        let base = path.parent().unwrap_or(Path::new("."));
        for f in &mut m.files {
            if f.source.is_relative() {
                f.source = base.join(&f.source);
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest_parses() {
        let m = Manifest::parse(
            "role = \"agent\"\ncmdline = \"plinth.master=http://10.1.1.1:8080\"\nmodules = [\"dummy\"]\nformats = [\"iso\", \"box\"]\n[[files]]\nsource = \"motd\"\ndest = \"/etc/motd\"\nmode = \"0600\"\n",
            Path::new("m.toml"),
        )
        .expect("valid manifest");
        assert_eq!(m.role.as_deref(), Some("agent"));
        assert_eq!(m.formats, [Format::Iso, Format::Box]);
        assert_eq!(m.files[0].mode_bits().expect("mode"), 0o600);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_the_reason() {
        let err = Manifest::parse("modules = []\nmodule = [\"x\"]\n", Path::new("m.toml")).expect_err("typo");
        assert!(err.to_string().contains("unknown field `module`"), "{err}");
        let err = Manifest::parse("role = \"boss\"\n", Path::new("m.toml")).expect_err("bad role");
        assert!(err.to_string().contains("\"boss\" is not master, agent or standalone"), "{err}");
        let err = Manifest::parse("[[files]]\nsource = \"a\"\ndest = \"etc/a\"\n", Path::new("m.toml"))
            .expect_err("relative");
        assert!(err.to_string().contains("must be an absolute path"), "{err}");
        let err = Manifest::parse("[[files]]\nsource = \"a\"\ndest = \"/a\"\nmode = \"rw\"\n", Path::new("m.toml"))
            .expect_err("mode");
        assert!(err.to_string().contains("not an octal permission"), "{err}");
        let err = Manifest::parse("formats = [\"floppy\"]\n", Path::new("m.toml")).expect_err("format");
        assert!(err.to_string().contains("floppy"), "{err}");
    }
}
