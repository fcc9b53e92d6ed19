//! Safe extraction of fetched archives (`.tar`, `.tar.gz`/`.tgz`, `.zip`, plain `.gz`)
//! into a task sandbox. Artifacts come from anywhere, so every entry is checked before
//! anything is written: no absolute paths, no `..`, no symlink that points outside the
//! destination, no writing through a symlink, no device nodes, and a cap on the bytes
//! written (archive bombs). A refused entry fails the whole extraction.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("entry '{entry}' is refused: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("symlink '{entry}' points outside the destination ('{target}')")]
    EscapingLink { entry: String, target: String },
    #[error("entry '{entry}' would be written through the symlink '{link}'")]
    ThroughSymlink { entry: String, link: String },
    #[error("the archive expands to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot read the archive {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot read the zip archive {path}")]
    Zip { path: PathBuf, source: zip::result::ZipError },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
}

/// Archive formats the agent can extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    Zip,
    /// A single gzip-compressed file: decompressed next to it, without the `.gz`.
    Gz,
}

/// The format of an archive by its file name: `None` when it is not an archive,
/// `Some(Err(..))` for an archive kind that cannot be extracted here.
pub fn format_of(file_name: &str) -> Option<Result<Format, String>> {
    let name = file_name.to_ascii_lowercase();
    let found = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Ok(Format::TarGz)
    } else if name.ends_with(".tar") {
        Ok(Format::Tar)
    } else if name.ends_with(".zip") {
        Ok(Format::Zip)
    } else if name.ends_with(".gz") {
        Ok(Format::Gz)
    } else if [".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".bz2", ".xz"].iter().any(|s| name.ends_with(s)) {
        Err(format!("'{file_name}' cannot be extracted: only .tar, .tar.gz, .tgz, .zip and .gz archives are supported"))
    } else {
        return None;
    };
    Some(found)
}

/// `raw` as a path inside some root: relative, without `..`. `.` parts are dropped; an
/// empty result means the root itself.
pub fn safe_relative_path(raw: &Path) -> Result<PathBuf, String> {
    let mut path = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute".into()),
        }
    }
    Ok(path)
}

/// Whether a symlink at `link` (relative to the root) with this target stays inside the
/// root. Only leading `..` parts are allowed, at most as many as `link` has parent
/// directories: after a normal part, a `..` could climb out through another symlink.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let depth = link.parent().map_or(0, |p| p.components().count());
    let mut ups = 0;
    let mut descended = false;
    for component in target.components() {
        match component {
            Component::ParentDir if !descended => ups += 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
            Component::CurDir => {}
            Component::Normal(_) => descended = true,
        }
    }
    ups <= depth
}

/// Writes entries under `root`, enforcing the rules above.
struct Writer<'a> {
    root: &'a Path,
    written: u64,
    limit: u64,
}

impl Writer<'_> {
    fn write_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        move |source| ArchiveError::Write { path: path.to_path_buf(), source }
    }

    /// Creates the directories of `rel` (all of it when `include_last`), refusing to go
    /// through any symlink.
    fn make_dirs(&self, entry: &str, rel: &Path, include_last: bool) -> Result<(), ArchiveError> {
        let parts: Vec<Component> = rel.components().collect();
        let count = if include_last { parts.len() } else { parts.len().saturating_sub(1) };
        let mut current = self.root.to_path_buf();
        for part in &parts[..count] {
            current.push(part);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ArchiveError::ThroughSymlink {
                        entry: entry.to_string(),
                        link: current.strip_prefix(self.root).unwrap_or(&current).display().to_string(),
                    })
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(ArchiveError::UnsafeEntry {
                        entry: entry.to_string(),
                        reason: format!("'{}' is a file, not a directory", current.display()),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(Self::write_error(&current))?;
                }
                Err(source) => return Err(ArchiveError::Write { path: current, source }),
            }
        }
        Ok(())
    }

    /// Makes room for a new non-directory entry at `rel`: a file or symlink already there
    /// is replaced (never written through).
    fn prepare(&self, entry: &str, rel: &Path) -> Result<PathBuf, ArchiveError> {
        self.make_dirs(entry, rel, false)?;
        let path = self.root.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => Err(ArchiveError::UnsafeEntry {
                entry: entry.to_string(),
                reason: "a directory of the same name was extracted before".into(),
            }),
            Ok(_) => fs::remove_file(&path).map(|()| path.clone()).map_err(Self::write_error(&path)),
            Err(_) => Ok(path),
        }
    }

    fn directory(&mut self, entry: &str, rel: &Path) -> Result<(), ArchiveError> {
        self.make_dirs(entry, rel, true)
    }

    fn file(&mut self, entry: &str, rel: &Path, mode: u32, contents: &mut dyn Read) -> Result<(), ArchiveError> {
        let path = self.prepare(entry, rel)?;
        // Permission bits only (no setuid/setgid/sticky); the owner can always read and write.
        let mode = (mode & 0o777) | 0o600;
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).map_err(Self::write_error(&path))?;
        let allowed = self.limit.saturating_sub(self.written);
        let copied =
            io::copy(&mut contents.take(allowed.saturating_add(1)), &mut file).map_err(Self::write_error(&path))?;
        if copied > allowed {
            return Err(ArchiveError::TooLarge { limit: self.limit });
        }
        self.written += copied;
        // The umask may have cut bits the archive asked for (e.g. group execute).
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(Self::write_error(&path))
    }

    fn symlink(&mut self, entry: &str, rel: &Path, target: &Path) -> Result<(), ArchiveError> {
        if !link_stays_inside(rel, target) {
            return Err(ArchiveError::EscapingLink { entry: entry.to_string(), target: target.display().to_string() });
        }
        let path = self.prepare(entry, rel)?;
        std::os::unix::fs::symlink(target, &path).map_err(Self::write_error(&path))
    }

    /// A tar hard link: `target` is another entry's path, relative to the root.
    fn hard_link(&mut self, entry: &str, rel: &Path, target: &Path) -> Result<(), ArchiveError> {
        let refused = |reason: &str| ArchiveError::UnsafeEntry { entry: entry.to_string(), reason: reason.to_string() };
        let target = safe_relative_path(target).map_err(|reason| refused(&format!("link target: {reason}")))?;
        // The target's directories must be real ones, and the target a plain file.
        self.make_dirs(entry, &target, false)?;
        let source = self.root.join(&target);
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_file() => {}
            _ => return Err(refused("a hard link must point to a file extracted before")),
        }
        let path = self.prepare(entry, rel)?;
        fs::hard_link(&source, &path).map_err(Self::write_error(&path))
    }
}

/// Extracts `archive` into `dest` (created if needed); returns the bytes written.
pub fn extract(archive: &Path, format: Format, dest: &Path, limit: u64) -> Result<u64, ArchiveError> {
    fs::create_dir_all(dest).map_err(|source| ArchiveError::Write { path: dest.to_path_buf(), source })?;
    let mut writer = Writer { root: dest, written: 0, limit };
    let read_error = |source| ArchiveError::Read { path: archive.to_path_buf(), source };
    let file = File::open(archive).map_err(read_error)?;
    match format {
        Format::Tar => extract_tar(tar::Archive::new(io::BufReader::new(file)), &mut writer, archive)?,
        Format::TarGz => extract_tar(
            tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file))),
            &mut writer,
            archive,
        )?,
        Format::Zip => extract_zip(file, &mut writer, archive)?,
        Format::Gz => {
            let name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let stem = name.strip_suffix(".gz").or_else(|| name.strip_suffix(".GZ")).unwrap_or(&name).to_string();
            let rel =
                safe_relative_path(Path::new(&stem)).ok().filter(|p| p.components().count() == 1).ok_or_else(|| {
                    ArchiveError::UnsafeEntry { entry: stem.clone(), reason: "not a plain file name".into() }
                })?;
            let mut decoder = flate2::read::GzDecoder::new(io::BufReader::new(file));
            writer.file(&stem, &rel, 0o644, &mut decoder)?;
        }
    }
    Ok(writer.written)
}

fn extract_tar<R: Read>(mut tar: tar::Archive<R>, writer: &mut Writer<'_>, archive: &Path) -> Result<(), ArchiveError> {
    let read_error = |source| ArchiveError::Read { path: archive.to_path_buf(), source };
    for entry in tar.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let raw = entry.path().map_err(read_error)?.into_owned();
        let name = raw.display().to_string();
        let rel =
            safe_relative_path(&raw).map_err(|reason| ArchiveError::UnsafeEntry { entry: name.clone(), reason })?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            // `./` itself: the destination exists already.
            if kind.is_dir() {
                continue;
            }
            return Err(ArchiveError::UnsafeEntry { entry: name, reason: "an entry without a name".into() });
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        let link_target = || -> Result<PathBuf, ArchiveError> {
            Ok(entry.link_name().map_err(read_error)?.map(|p| p.into_owned()).unwrap_or_default())
        };
        match kind {
            tar::EntryType::Directory => writer.directory(&name, &rel)?,
            tar::EntryType::Symlink => {
                let target = link_target()?;
                writer.symlink(&name, &rel, &target)?;
            }
            tar::EntryType::Link => {
                let target = link_target()?;
                writer.hard_link(&name, &rel, &target)?;
            }
            kind if kind.is_file() || kind == tar::EntryType::Continuous => {
                writer.file(&name, &rel, mode, &mut entry)?
            }
            // Devices, fifos and the like have no place in an artifact; skipping them is
            // harmless, creating them (as root) is not.
            _ => {}
        }
    }
    Ok(())
}

fn extract_zip(file: File, writer: &mut Writer<'_>, archive: &Path) -> Result<(), ArchiveError> {
    let zip_error = |source| ArchiveError::Zip { path: archive.to_path_buf(), source };
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(zip_error)?;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(zip_error)?;
        let name = entry.name().to_string();
        let rel = safe_relative_path(Path::new(&name))
            .map_err(|reason| ArchiveError::UnsafeEntry { entry: name.clone(), reason })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        if entry.is_dir() {
            writer.directory(&name, &rel)?;
        } else if entry.is_symlink() {
            // A zip symlink's contents are its target.
            let mut target = String::new();
            entry
                .by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|source| ArchiveError::Read { path: archive.to_path_buf(), source })?;
            writer.symlink(&name, &rel, Path::new(&target))?;
        } else {
            let mode = entry.unix_mode().unwrap_or(0o644);
            writer.file(&name, &rel, mode, &mut entry)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMIT: u64 = 1 << 20;

    /// A tar with raw (unchecked) entry names; `(name, kind, body or link target)`.
    fn tar_bytes(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            // set_path refuses '..' and absolute paths: write the name bytes directly to
            // build hostile archives.
            {
                let gnu = header.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_mode(0o755);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    header.set_link_name(data).unwrap();
                    header.set_size(0);
                    header.set_cksum();
                    builder.append(&header, io::empty()).unwrap();
                }
                _ => {
                    header.set_size(data.len() as u64);
                    header.set_cksum();
                    builder.append(&header, data.as_bytes()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    struct Scene {
        dir: tempfile::TempDir,
    }

    impl Scene {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("sandbox")).unwrap();
            Scene { dir }
        }
        fn sandbox(&self) -> PathBuf {
            self.dir.path().join("sandbox")
        }
        fn extract(&self, name: &str, bytes: &[u8]) -> Result<u64, ArchiveError> {
            let path = self.dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            let format = format_of(name).unwrap().unwrap();
            extract(&path, format, &self.sandbox(), LIMIT)
        }
        /// Everything outside the sandbox besides the archives the test wrote.
        fn outside(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != "sandbox" && !n.starts_with("archive"))
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(format_of("app.tar.gz"), Some(Ok(Format::TarGz)));
        assert_eq!(format_of("APP.TGZ"), Some(Ok(Format::TarGz)));
        assert_eq!(format_of("a.tar"), Some(Ok(Format::Tar)));
        assert_eq!(format_of("a.zip"), Some(Ok(Format::Zip)));
        assert_eq!(format_of("a.json.gz"), Some(Ok(Format::Gz)));
        assert!(matches!(format_of("a.tar.xz"), Some(Err(_))));
        assert_eq!(format_of("run.sh"), None);
    }

    #[test]
    fn a_tar_gz_with_dirs_files_links_and_modes_is_extracted() {
        let scene = Scene::new();
        let bytes = gzip(&tar_bytes(&[
            ("./", tar::EntryType::Directory, ""),
            ("app/", tar::EntryType::Directory, ""),
            ("app/run.sh", tar::EntryType::Regular, "#!/bin/sh\necho hi\n"),
            ("app/latest", tar::EntryType::Symlink, "run.sh"),
            ("app/bin/up", tar::EntryType::Symlink, "../run.sh"),
            ("app/copy.sh", tar::EntryType::Link, "app/run.sh"),
        ]));
        let written = scene.extract("archive.tgz", &bytes).unwrap();
        assert_eq!(written, 18);
        let sandbox = scene.sandbox();
        assert_eq!(fs::read_to_string(sandbox.join("app/latest")).unwrap(), "#!/bin/sh\necho hi\n");
        assert_eq!(fs::read_to_string(sandbox.join("app/bin/up")).unwrap(), "#!/bin/sh\necho hi\n");
        assert_eq!(fs::read_to_string(sandbox.join("app/copy.sh")).unwrap(), "#!/bin/sh\necho hi\n");
        let mode = fs::metadata(sandbox.join("app/run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(scene.outside(), Vec::<String>::new());
    }

    #[test]
    fn hostile_tar_entries_are_refused_and_nothing_lands_outside() {
        type Case<'a> = (&'a str, Vec<(&'a str, tar::EntryType, &'a str)>);
        let cases: Vec<Case> = vec![
            ("dot-dot", vec![("../evil", tar::EntryType::Regular, "x")]),
            ("nested dot-dot", vec![("a/../../evil", tar::EntryType::Regular, "x")]),
            ("absolute", vec![("/tmp/plinth-evil-absolute", tar::EntryType::Regular, "x")]),
            ("absolute link", vec![("etc", tar::EntryType::Symlink, "/etc")]),
            ("escaping link", vec![("up", tar::EntryType::Symlink, "../")]),
            (
                "climb after descend",
                vec![("self", tar::EntryType::Symlink, "."), ("out", tar::EntryType::Symlink, "self/..")],
            ),
            (
                "write through link",
                vec![
                    ("dir", tar::EntryType::Symlink, "sub"),
                    ("sub/", tar::EntryType::Directory, ""),
                    ("dir/evil", tar::EntryType::Regular, "x"),
                ],
            ),
            ("hard link out", vec![("h", tar::EntryType::Link, "../secret")]),
            ("hard link absolute", vec![("h", tar::EntryType::Link, "/etc/passwd")]),
        ];
        for (what, entries) in cases {
            let scene = Scene::new();
            fs::write(scene.dir.path().join("secret"), "s").unwrap();
            let result = scene.extract("archive.tar", &tar_bytes(&entries));
            assert!(result.is_err(), "{what}: must be refused");
            assert_eq!(scene.outside(), vec!["secret".to_string()], "{what}: nothing written outside");
            assert!(!Path::new("/tmp/plinth-evil-absolute").exists());
            assert!(!scene.sandbox().join("dir/evil").exists() && !scene.sandbox().join("sub/evil").exists());
        }
    }

    #[test]
    fn an_existing_symlink_is_replaced_not_written_through() {
        let scene = Scene::new();
        let bytes = tar_bytes(&[("f", tar::EntryType::Symlink, "g"), ("f", tar::EntryType::Regular, "data")]);
        scene.extract("archive.tar", &bytes).unwrap();
        let meta = fs::symlink_metadata(scene.sandbox().join("f")).unwrap();
        assert!(meta.is_file());
        assert!(!scene.sandbox().join("g").exists());
    }

    #[test]
    fn archive_bombs_stop_at_the_limit() {
        let scene = Scene::new();
        let big = "x".repeat(usize::try_from(LIMIT).unwrap() + 1);
        let err =
            scene.extract("archive.tar.gz", &gzip(&tar_bytes(&[("big", tar::EntryType::Regular, &big)]))).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { .. }));
    }

    fn zip_bytes(build: impl FnOnce(&mut zip::ZipWriter<io::Cursor<Vec<u8>>>)) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        build(&mut writer);
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn zips_are_extracted_and_hostile_ones_refused() {
        let options = || zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        let good = zip_bytes(|w| {
            w.add_directory("tools/", options()).unwrap();
            w.start_file("tools/run.sh", options()).unwrap();
            w.write_all(b"#!/bin/sh\n").unwrap();
            w.add_symlink("tools/run", "run.sh", options()).unwrap();
        });
        let scene = Scene::new();
        scene.extract("archive.zip", &good).unwrap();
        assert_eq!(fs::read_to_string(scene.sandbox().join("tools/run")).unwrap(), "#!/bin/sh\n");
        assert_eq!(fs::metadata(scene.sandbox().join("tools/run.sh")).unwrap().permissions().mode() & 0o777, 0o755);

        let escaping = zip_bytes(|w| {
            w.add_symlink("etc", "/etc", options()).unwrap();
        });
        let scene = Scene::new();
        assert!(matches!(scene.extract("archive.zip", &escaping), Err(ArchiveError::EscapingLink { .. })));
        let dotdot = zip_bytes(|w| {
            w.start_file("../evil", options()).unwrap();
            w.write_all(b"x").unwrap();
        });
        let scene = Scene::new();
        assert!(matches!(scene.extract("archive.zip", &dotdot), Err(ArchiveError::UnsafeEntry { .. })));
        assert_eq!(scene.outside(), Vec::<String>::new());
    }

    #[test]
    fn a_plain_gz_is_decompressed_next_to_it() {
        let scene = Scene::new();
        scene.extract("archive.json.gz", &gzip(b"{}")).unwrap();
        assert_eq!(fs::read_to_string(scene.sandbox().join("archive.json")).unwrap(), "{}");
    }

    #[test]
    fn link_rules() {
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../../x")));
        assert!(!link_stays_inside(Path::new("a/b/l"), Path::new("../../../x")));
        assert!(link_stays_inside(Path::new("l"), Path::new("./x/y")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("x/../..")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("/x")));
    }
}
