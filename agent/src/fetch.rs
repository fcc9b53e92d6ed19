//! Artifact staging, as the Mesos fetcher: every `fetch` URI of an app (Marathon's old
//! `uris` are folded into `fetch` by the master) is put into the task's sandbox before the
//! task starts. `http://` URLs are downloaded, `file://` URLs and absolute paths copied;
//! archives are extracted safely ([`crate::archive`]) when `extract` is set,
//! `executable` files made executable, and `cache` keeps a copy in the agent's fetch
//! cache (keyed by the URI's SHA-256) that later tasks reuse.
//!
//! It runs in the executor, before the task's command: slow downloads never hold up the
//! agent, and a failure ends the task like any other start failure (see
//! [`FETCH_FAILED_PREFIX`]).
use plinth_protocol::marathon::FetchUri;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::archive::{self, ArchiveError};

/// The agent's fetch cache, under its work dir.
pub const CACHE_DIR: &str = "fetch-cache";
/// Start of the task message when staging failed: `Fetch of URI failed: cause`.
pub const FETCH_FAILED_PREFIX: &str = "Fetch of ";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{reason}")]
    Unsupported { reason: String },
    #[error("destPath '{dest}' is refused: {reason}")]
    BadDestination { dest: String, reason: String },
    #[error("cannot name the downloaded file: the URI has no file name")]
    NoFileName,
    #[error("GET {url} failed")]
    Request { url: String, source: reqwest::Error },
    #[error("GET {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the download is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot read {path}")]
    ReadLocal { path: PathBuf, source: io::Error },
    #[error("{path} is refused: it is inside {hidden}, which tasks must not see")]
    Hidden { path: PathBuf, hidden: PathBuf },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot start the download runtime")]
    Runtime { source: io::Error },
    #[error("cannot extract {file}")]
    Extract { file: String, source: ArchiveError },
    #[error("the task was killed while its artifacts were being fetched")]
    Killed,
}

/// Limits and places for one task's fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where `cache: true` artifacts are kept; no caching when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Cap on each download and on what each archive expands to.
    pub max_bytes: u64,
    pub connect_timeout: Duration,
    /// A download that stalls this long fails (no total timeout: artifacts can be big).
    pub read_timeout: Duration,
    /// Local artifacts (`file://`, absolute paths) are opened with this uid/gid's file
    /// permissions (the task's user): the root executor must not copy a file the task
    /// could not read itself. `None`: the task runs as the executor's own user.
    pub local_reader: Option<(libc::uid_t, libc::gid_t)>,
    /// Local artifacts inside these are refused (the paths hidden from tasks).
    pub hidden: Vec<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            cache_dir: None,
            max_bytes: 16 << 30,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            local_reader: None,
            hidden: Vec::new(),
        }
    }
}

/// Where an artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Http(String),
    Local(PathBuf),
}

fn source_of(uri: &str) -> Result<Source, FetchError> {
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("http://") {
        Ok(Source::Http(uri.to_string()))
    } else if lower.starts_with("https://") {
        Err(FetchError::Unsupported { reason: "https:// URIs are not supported yet (this build has no TLS)".into() })
    } else if let Some(path) = uri.strip_prefix("file://") {
        Ok(Source::Local(PathBuf::from(path)))
    } else if uri.starts_with('/') {
        Ok(Source::Local(PathBuf::from(uri)))
    } else {
        Err(FetchError::Unsupported { reason: "unsupported URI (use http://, file:// or an absolute path)".into() })
    }
}

/// The last path segment, without query or fragment: what the file is called.
fn file_name_of(uri: &str) -> Result<String, FetchError> {
    let without_query = uri.split(['?', '#']).next().unwrap_or(uri);
    let after_scheme = without_query.split_once("://").map_or(without_query, |(_, rest)| rest);
    // For URLs the first segment is the host, never a file name.
    let path = if without_query.contains("://") && !uri.starts_with("file://") {
        after_scheme.split_once('/').map_or("", |(_, path)| path)
    } else {
        after_scheme
    };
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        return Err(FetchError::NoFileName);
    }
    Ok(name.to_string())
}

/// Where the artifact lands in the sandbox: `destPath` (a safe relative path) or its
/// own file name.
fn destination(sandbox: &Path, fetch: &FetchUri, file_name: &str) -> Result<PathBuf, FetchError> {
    let Some(dest) = fetch.dest_path.as_deref().filter(|d| !d.is_empty()) else {
        return Ok(sandbox.join(file_name));
    };
    let bad = |reason: String| FetchError::BadDestination { dest: dest.to_string(), reason };
    let rel = archive::safe_relative_path(Path::new(dest)).map_err(bad)?;
    if rel.as_os_str().is_empty() {
        return Err(bad("it names the sandbox itself".into()));
    }
    Ok(sandbox.join(rel))
}

/// The cache entry of a URI: `CACHE/<sha256 of the URI>/<file name>`.
pub fn cache_path(cache_dir: &Path, uri: &str, file_name: &str) -> PathBuf {
    let digest = Sha256::digest(uri.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    cache_dir.join(hex).join(file_name)
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Write { path: path.to_path_buf(), source }
}

/// A sibling temporary name, so readers see the whole file or none (two tasks filling
/// the same cache entry at once each rename a complete file).
fn temporary_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".part-{}", std::process::id()));
    path.with_file_name(name)
}

/// Stages every artifact of a task, in order. `killed` is asked between artifacts so a
/// kill does not wait for the rest. The error names the URI that failed.
pub fn fetch_all(
    uris: &[FetchUri],
    sandbox: &Path,
    options: &FetchOptions,
    killed: &dyn Fn() -> bool,
) -> Result<(), (String, FetchError)> {
    if uris.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| (uris[0].uri.clone(), FetchError::Runtime { source }))?;
    plinth_oci::tls::install_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        // Artifacts come from the master or hosts on the agent's network, never through
        // a proxy picked up from the environment.
        .no_proxy()
        .build()
        .map_err(|source| (uris[0].uri.clone(), FetchError::Request { url: uris[0].uri.clone(), source }))?;
    let fetcher = Fetcher { options, runtime, client };
    for fetch in uris {
        if killed() {
            return Err((fetch.uri.clone(), FetchError::Killed));
        }
        fetcher.fetch_one(fetch, sandbox).map_err(|err| (fetch.uri.clone(), err))?;
    }
    Ok(())
}

/// What every artifact of one task is fetched with.
struct Fetcher<'a> {
    options: &'a FetchOptions,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Fetcher<'_> {
    fn fetch_one(&self, fetch: &FetchUri, sandbox: &Path) -> Result<(), FetchError> {
        let options = self.options;
        let source = source_of(&fetch.uri)?;
        let file_name = file_name_of(&fetch.uri)?;
        let dest = destination(sandbox, fetch, &file_name)?;
        let parent = dest.parent().unwrap_or(sandbox).to_path_buf();
        fs::create_dir_all(&parent).map_err(write_error(&parent))?;
        // `executable` wins over `extract`, as in Mesos: the file is meant to be run.
        let format = match archive::format_of(&file_name) {
            Some(found) if fetch.extract && !fetch.executable => {
                Some(found.map_err(|reason| FetchError::Unsupported { reason })?)
            }
            _ => None,
        };
        match options.cache_dir.as_deref().filter(|_| fetch.cache) {
            Some(cache_dir) => {
                let cached = cache_path(cache_dir, &fetch.uri, &file_name);
                if cached.is_file() {
                    if let Source::Local(path) = &source {
                        // A copy cached for another task is no licence: this task's user
                        // must be able to read the original (a miss checks it in retrieve).
                        open_local(path, options)?;
                    }
                } else {
                    let dir = cached.parent().unwrap_or(cache_dir).to_path_buf();
                    fs::create_dir_all(&dir).map_err(write_error(&dir))?;
                    self.retrieve(&source, &cached)?;
                }
                copy_into(&cached, &dest)?;
            }
            None => self.retrieve(&source, &dest)?,
        }
        if fetch.executable {
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).map_err(write_error(&dest))?;
        }
        if let Some(format) = format {
            archive::extract(&dest, format, &parent, options.max_bytes)
                .map_err(|source| FetchError::Extract { file: file_name.clone(), source })?;
        }
        Ok(())
    }

    /// Puts the artifact at `dest` (whole or not at all).
    fn retrieve(&self, source: &Source, dest: &Path) -> Result<(), FetchError> {
        let tmp = temporary_for(dest);
        let result = match source {
            Source::Local(path) => copy_local(path, &tmp, self.options),
            Source::Http(url) => self.runtime.block_on(download(&self.client, url, &tmp, self.options.max_bytes)),
        };
        match result {
            Ok(()) => fs::rename(&tmp, dest).map_err(write_error(dest)),
            Err(err) => {
                let _ = fs::remove_file(&tmp);
                Err(err)
            }
        }
    }
}

/// Copies a cached artifact into the sandbox (a copy, not a link: the task may change it).
fn copy_into(cached: &Path, dest: &Path) -> Result<(), FetchError> {
    let tmp = temporary_for(dest);
    fs::copy(cached, &tmp).map_err(|source| FetchError::ReadLocal { path: cached.to_path_buf(), source })?;
    fs::rename(&tmp, dest).map_err(write_error(dest))
}

/// Opens a local artifact as the task may: never inside a hidden path, and with the
/// task user's permissions.
fn open_local(path: &Path, options: &FetchOptions) -> Result<File, FetchError> {
    let read_error = |source| FetchError::ReadLocal { path: path.to_path_buf(), source };
    let real = fs::canonicalize(path).map_err(read_error)?;
    for hidden in &options.hidden {
        let hidden = fs::canonicalize(hidden).unwrap_or_else(|_| hidden.clone());
        if real.starts_with(&hidden) {
            return Err(FetchError::Hidden { path: path.to_path_buf(), hidden });
        }
    }
    open_as(&real, options.local_reader).map_err(read_error)
}

fn copy_local(path: &Path, tmp: &Path, options: &FetchOptions) -> Result<(), FetchError> {
    let limit = options.max_bytes;
    let read_error = |source| FetchError::ReadLocal { path: path.to_path_buf(), source };
    let mut input = open_local(path, options)?;
    if input.metadata().map_err(read_error)?.len() > limit {
        return Err(FetchError::TooLarge { limit });
    }
    let mut output = File::create(tmp).map_err(write_error(tmp))?;
    io::copy(&mut input, &mut output).map_err(write_error(tmp))?;
    output.sync_all().map_err(write_error(tmp))
}

/// Opens `path` for reading with `reader`'s file permissions (the kernel checks every
/// component and link as that uid/gid), by switching this thread's filesystem ids and
/// the process's groups around the open.
fn open_as(path: &Path, reader: Option<(libc::uid_t, libc::gid_t)>) -> io::Result<File> {
    let Some((uid, gid)) = reader else { return File::open(path) };
    let groups = nix::unistd::getgroups().map_err(io::Error::from)?;
    // Root's supplementary groups (often 0) would still grant group access.
    nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(gid)]).map_err(io::Error::from)?;
    // SAFETY: setfsgid/setfsuid only change the calling thread's filesystem ids; they
    // are put back right after the open (they return the previous value).
    let (old_gid, old_uid) = unsafe { (libc::setfsgid(gid), libc::setfsuid(uid)) };
    let opened = File::open(path);
    // SAFETY: as above, restoring the ids saved there.
    #[allow(clippy::cast_sign_loss)]
    unsafe {
        libc::setfsuid(old_uid as libc::uid_t);
        libc::setfsgid(old_gid as libc::gid_t);
    }
    nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
    opened
}

async fn download(client: &reqwest::Client, url: &str, tmp: &Path, limit: u64) -> Result<(), FetchError> {
    let request_error = |source| FetchError::Request { url: url.to_string(), source };
    let mut response = client.get(url).send().await.map_err(request_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status { url: url.to_string(), status: status.as_u16() });
    }
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(FetchError::TooLarge { limit });
    }
    let mut output = File::create(tmp).map_err(write_error(tmp))?;
    let mut written: u64 = 0;
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        written += chunk.len() as u64;
        if written > limit {
            return Err(FetchError::TooLarge { limit });
        }
        output.write_all(&chunk).map_err(write_error(tmp))?;
    }
    output.sync_all().map_err(write_error(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(value: serde_json::Value) -> FetchUri {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn local_artifacts_are_read_with_the_task_users_permissions_and_never_from_hidden_paths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.path().join("secret.txt");
        fs::write(&secret, "root only").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let public = dir.path().join("public.txt");
        fs::write(&public, "anyone").unwrap();
        fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
        // A link the task could plant: followed as the task's user, so it gains nothing.
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let sandbox = tempfile::tempdir().unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let options = FetchOptions {
            local_reader: Some((nobody.uid.as_raw(), nobody.gid.as_raw())),
            hidden: vec![dir.path().join("hidden")],
            ..Default::default()
        };
        let fetch = |path: &Path| {
            fetch_all(&[uri(serde_json::json!({"uri": path.display().to_string()}))], sandbox.path(), &options, &|| {
                false
            })
        };
        fetch(&public).expect("a file the task may read is staged");
        assert_eq!(fs::read_to_string(sandbox.path().join("public.txt")).unwrap(), "anyone");
        for refused in [&secret, &link] {
            let (_, err) = fetch(refused).expect_err("a file the task may not read is refused");
            assert!(
                matches!(&err, FetchError::ReadLocal { source, .. } if source.kind() == io::ErrorKind::PermissionDenied),
                "{err:?}"
            );
        }
        assert!(!sandbox.path().join("secret.txt").exists() && !sandbox.path().join("link.txt").exists());
        // The executor keeps its own identity after the fetch.
        assert_eq!(fs::read_to_string(&secret).unwrap(), "root only");

        fs::create_dir(dir.path().join("hidden")).unwrap();
        let inside = dir.path().join("hidden/task.json");
        fs::write(&inside, "{}").unwrap();
        fs::set_permissions(&inside, fs::Permissions::from_mode(0o644)).unwrap();
        let root_task = FetchOptions { local_reader: None, ..options.clone() };
        let (_, err) = fetch_all(
            &[uri(serde_json::json!({"uri": inside.display().to_string()}))],
            sandbox.path(),
            &root_task,
            &|| false,
        )
        .expect_err("hidden paths are refused even for root tasks");
        assert!(matches!(err, FetchError::Hidden { .. }), "{err:?}");
    }

    #[test]
    fn sources_and_file_names() {
        assert_eq!(
            source_of("http://10.0.0.1:8080/a/app.tgz").unwrap(),
            Source::Http("http://10.0.0.1:8080/a/app.tgz".into())
        );
        assert_eq!(source_of("file:///srv/app.tgz").unwrap(), Source::Local("/srv/app.tgz".into()));
        assert_eq!(source_of("/srv/app.tgz").unwrap(), Source::Local("/srv/app.tgz".into()));
        assert!(matches!(source_of("https://example.invalid/x"), Err(FetchError::Unsupported { .. })));
        assert!(matches!(source_of("hdfs://x/y"), Err(FetchError::Unsupported { .. })));
        assert_eq!(file_name_of("http://h:1/a/app.tgz?token=1#x").unwrap(), "app.tgz");
        assert_eq!(file_name_of("file:///srv/run.sh").unwrap(), "run.sh");
        assert!(matches!(file_name_of("http://h:1/"), Err(FetchError::NoFileName)));
        assert!(matches!(file_name_of("http://host"), Err(FetchError::NoFileName)));
    }

    #[test]
    fn dest_path_stays_in_the_sandbox() {
        let sandbox = Path::new("/sb");
        assert_eq!(destination(sandbox, &uri(serde_json::json!({"uri": "/x/a"})), "a").unwrap(), Path::new("/sb/a"));
        let nested = uri(serde_json::json!({"uri": "/x/a", "destPath": "tools/b"}));
        assert_eq!(destination(sandbox, &nested, "a").unwrap(), Path::new("/sb/tools/b"));
        for hostile in ["../b", "/etc/passwd", "tools/../../b", "."] {
            let fetch = uri(serde_json::json!({"uri": "/x/a", "destPath": hostile}));
            assert!(matches!(destination(sandbox, &fetch, "a"), Err(FetchError::BadDestination { .. })), "{hostile}");
        }
    }

    fn never_killed() -> bool {
        false
    }

    #[test]
    fn local_files_are_copied_made_executable_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tool.sh");
        fs::write(&source, "#!/bin/sh\necho v1\n").unwrap();
        let cache = dir.path().join("cache");
        let options = FetchOptions { cache_dir: Some(cache.clone()), ..Default::default() };
        let fetch =
            uri(serde_json::json!({"uri": format!("file://{}", source.display()), "executable": true, "cache": true}));

        let first = dir.path().join("sb1");
        fs::create_dir(&first).unwrap();
        fetch_all(std::slice::from_ref(&fetch), &first, &options, &never_killed).unwrap();
        assert_eq!(fs::read_to_string(first.join("tool.sh")).unwrap(), "#!/bin/sh\necho v1\n");
        assert_eq!(fs::metadata(first.join("tool.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        let cached = cache_path(&cache, &fetch.uri, "tool.sh");
        assert!(cached.is_file(), "kept in the cache");

        // The cache is used: a changed source is not fetched again for the same URI.
        fs::write(&source, "#!/bin/sh\necho v2\n").unwrap();
        let second = dir.path().join("sb2");
        fs::create_dir(&second).unwrap();
        fetch_all(std::slice::from_ref(&fetch), &second, &options, &never_killed).unwrap();
        assert_eq!(fs::read_to_string(second.join("tool.sh")).unwrap(), "#!/bin/sh\necho v1\n");

        // Without `cache`, the source is read again.
        let fresh = uri(serde_json::json!({"uri": source.display().to_string()}));
        fetch_all(&[fresh], &second, &options, &never_killed).unwrap();
        assert_eq!(fs::read_to_string(second.join("tool.sh")).unwrap(), "#!/bin/sh\necho v2\n");
    }

    #[test]
    fn failures_name_the_uri_and_a_kill_stops_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let missing = uri(serde_json::json!({"uri": "/nonexistent/plinth/artifact.tgz"}));
        let (failed, err) =
            fetch_all(std::slice::from_ref(&missing), dir.path(), &FetchOptions::default(), &never_killed).unwrap_err();
        assert_eq!(failed, "/nonexistent/plinth/artifact.tgz");
        assert!(matches!(err, FetchError::ReadLocal { .. }));
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none(), "no partial file left");
        let (_, err) = fetch_all(&[missing], dir.path(), &FetchOptions::default(), &|| true).unwrap_err();
        assert!(matches!(err, FetchError::Killed));
        let xz = uri(serde_json::json!({"uri": "/srv/app.tar.xz"}));
        assert!(matches!(
            fetch_all(&[xz], dir.path(), &FetchOptions::default(), &never_killed),
            Err((_, FetchError::Unsupported { .. }))
        ));
    }
}
