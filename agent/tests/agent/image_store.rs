//! The agent's image store against a real registry (Debian's docker-registry) and real
//! tar streams: pulls, unpacking, overlay rootfs, hostile layers, tampering, concurrency
//! and gc. Runs as root (mounts, chown, trusted xattrs).
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use plinth_agent::image::{
    unmount_rootfs, GcPolicy, ImageError, ImageStore, ImageStoreOptions, PullProgress, RegistrySource,
};
use plinth_oci::{Digest, ImageRef};
use plinth_testkit::{busybox_hello, BuiltImage, Compression, Entry, ImageConfig, Layer, Registry};

fn free_addr() -> String {
    format!("127.0.0.1:{}", plinth_testkit::free_port())
}

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        // The testkit's HTTP client needs a TLS provider even for plain HTTP.
        plinth_oci::tls::install_provider();
        let registry = Registry::start(None, &free_addr()).unwrap();
        Setup { registry, dir: tempfile::tempdir().unwrap() }
    }

    fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    fn store(&self, max_layer_bytes: u64) -> ImageStore {
        ImageStore::open(self.images(), ImageStoreOptions { max_layer_bytes, ..Default::default() }).unwrap()
    }

    fn push(&self, repo: &str, image: &BuiltImage) {
        self.registry.push(repo, "latest", image).unwrap();
    }

    fn pull(
        &self,
        store: &ImageStore,
        repo: &str,
        force: bool,
    ) -> Result<plinth_agent::image::PulledImage, ImageError> {
        let reference = ImageRef::parse(&format!("{}/{repo}", self.registry.addr)).unwrap();
        store.pull(&RegistrySource::direct(&self.registry.url(), repo), &reference, force, &mut |_| {})
    }

    /// Layer dirs, temp dirs included: what the store's layers dir holds.
    fn layer_entries(&self) -> Vec<String> {
        fs::read_dir(self.images().join("layers"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }
}

/// Unmounts a task's rootfs even when the test fails.
struct MountGuard(PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount_rootfs(&self.0);
    }
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

fn image_of(layers: Vec<Layer>) -> BuiltImage {
    BuiltImage::new(&ImageConfig { cmd: Some(vec!["/bin/sh".into()]), ..Default::default() }, layers)
}

#[test]
fn busybox_is_pulled_unpacked_once_and_mounted_as_overlay() {
    let setup = Setup::new();
    let image = busybox_hello().unwrap();
    setup.push("demo/hello", &image);
    let store = setup.store(1 << 30);

    let reference = ImageRef::parse(&format!("{}/demo/hello", setup.registry.addr)).unwrap();
    let mut events: Vec<PullProgress> = Vec::new();
    let pulled = store
        .pull(&RegistrySource::direct(&setup.registry.url(), "demo/hello"), &reference, false, &mut |p| events.push(p))
        .unwrap();
    assert_eq!(pulled.manifest_digest, digest(&image.manifest_digest));
    assert_eq!(pulled.layers.len(), 1);
    assert_eq!(pulled.stats.layers_unpacked, 1);
    assert_eq!(pulled.stats.blobs_downloaded, 2, "config and layer");
    assert_eq!(pulled.config.config().as_ref().unwrap().working_dir().as_deref(), Some("/app"));
    let last = events.last().unwrap();
    assert_eq!((last.layers_done, last.layers_total), (1, 1));
    assert_eq!(last.bytes_done, image.layers[0].blob.len() as u64);

    let layer = &pulled.layers[0];
    assert_eq!(layer, &store.layer_dir(&digest(&image.layers[0].diff_id)));
    let busybox = fs::symlink_metadata(layer.join("bin/busybox")).unwrap();
    assert!(busybox.is_file() && busybox.permissions().mode() & 0o111 != 0);
    assert_eq!(fs::read_link(layer.join("bin/sh")).unwrap(), PathBuf::from("busybox"));
    assert_eq!(fs::symlink_metadata(layer.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    assert_eq!(fs::symlink_metadata(layer.join("app/greet.sh")).unwrap().mtime(), 1_700_000_000);

    // Again: not forced, the registry is not even asked; forced, it is but nothing is downloaded.
    let again = setup.pull(&store, "demo/hello", false).unwrap();
    assert!(!again.stats.contacted_registry);
    assert_eq!(again.layers, pulled.layers);
    let forced = setup.pull(&store, "demo/hello", true).unwrap();
    assert!(forced.stats.contacted_registry);
    assert_eq!((forced.stats.blobs_downloaded, forced.stats.layers_unpacked), (0, 0));
    assert_eq!(forced.manifest_digest, pulled.manifest_digest);

    // By digest too (verified against the manifest bytes).
    let pinned = reference.with_digest(pulled.manifest_digest.clone());
    let by_digest =
        store.pull(&RegistrySource::direct(&setup.registry.url(), "demo/hello"), &pinned, true, &mut |_| {}).unwrap();
    assert_eq!(by_digest.layers, pulled.layers);

    let task_dir = setup.dir.path().join("task-1");
    let _guard = MountGuard(task_dir.clone());
    let rootfs = store.mount_rootfs(&pulled, &task_dir, "task-1").unwrap();
    assert_eq!(rootfs, task_dir.join("rootfs"));
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(fs::read_to_string(rootfs.join("etc/group")).unwrap(), "root:x:0:\nnogroup:x:65534:\n");
    fs::write(rootfs.join("tmp/hello"), b"written by the task").unwrap();
    fs::remove_file(rootfs.join("etc/passwd")).unwrap();
    assert!(task_dir.join("upper/tmp/hello").is_file(), "writes land in the upper dir");
    assert!(!layer.join("tmp/hello").exists(), "the layer is never written");
    assert!(layer.join("etc/passwd").is_file());

    unmount_rootfs(&task_dir).unwrap();
    assert!(!task_dir.join("upper").exists() && !task_dir.join("rootfs").exists());
    unmount_rootfs(&task_dir).unwrap(); // idempotent
    assert!(layer.join("bin/busybox").is_file());
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_content() {
    let setup = Setup::new();
    let file = |path: &str| Entry::File { path: path.into(), mode: 0o644, data: path.as_bytes().to_vec() };
    let dir = |path: &str| Entry::Dir { path: path.into(), mode: 0o755 };
    let bottom =
        Layer::new(&[dir("d/"), file("d/a"), file("d/b"), dir("o/"), file("o/old"), file("x")], Compression::Gzip);
    let top = Layer::new(
        &[file(".wh.x"), file("d/.wh.a"), dir("o/"), file("o/.wh..wh..opq"), file("o/new")],
        Compression::Gzip,
    );
    setup.push("demo/whiteout", &image_of(vec![bottom, top]));
    let store = setup.store(1 << 30);
    let pulled = setup.pull(&store, "demo/whiteout", false).unwrap();
    assert_eq!(pulled.layers.len(), 2);
    let upper_layer = &pulled.layers[1];
    let whiteout = fs::symlink_metadata(upper_layer.join("x")).unwrap();
    assert_eq!((whiteout.mode() & libc::S_IFMT, whiteout.rdev()), (libc::S_IFCHR, 0));
    assert_eq!(xattr::get(upper_layer.join("o"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()));

    let task_dir = setup.dir.path().join("task-w");
    let _guard = MountGuard(task_dir.clone());
    let rootfs = store.mount_rootfs(&pulled, &task_dir, "task-w").unwrap();
    assert!(!rootfs.join("x").exists());
    assert!(!rootfs.join("d/a").exists());
    assert_eq!(fs::read_to_string(rootfs.join("d/b")).unwrap(), "d/b");
    assert!(!rootfs.join("o/old").exists());
    assert_eq!(fs::read_to_string(rootfs.join("o/new")).unwrap(), "o/new");
}

#[test]
fn gzip_zstd_and_plain_layers_keep_owners_modes_and_xattrs() {
    let setup = Setup::new();
    let owned = Entry::OwnedFile {
        path: "home/user/data".into(),
        mode: 0o640,
        uid: 1000,
        gid: 1000,
        data: b"mine".to_vec(),
        xattrs: vec![("user.test".into(), b"value".to_vec())],
    };
    let layers = vec![
        Layer::new(&[owned], Compression::Gzip),
        Layer::new(&[Entry::File { path: "usr/bin/su".into(), mode: 0o4755, data: b"#!".to_vec() }], Compression::Zstd),
        Layer::new(
            &[
                Entry::Dir { path: "plain/".into(), mode: 0o1777 },
                Entry::File { path: "/abs/file".into(), mode: 0o600, data: b"abs".to_vec() },
            ],
            Compression::None,
        ),
    ];
    setup.push("demo/formats", &image_of(layers));
    let store = setup.store(1 << 30);
    let pulled = setup.pull(&store, "demo/formats", false).unwrap();
    let data = fs::symlink_metadata(pulled.layers[0].join("home/user/data")).unwrap();
    assert_eq!((data.uid(), data.gid(), data.mode() & 0o7777), (1000, 1000, 0o640));
    assert_eq!(xattr::get(pulled.layers[0].join("home/user/data"), "user.test").unwrap(), Some(b"value".to_vec()));
    assert_eq!(fs::symlink_metadata(pulled.layers[1].join("usr/bin/su")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::symlink_metadata(pulled.layers[2].join("plain")).unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(fs::read(pulled.layers[2].join("abs/file")).unwrap(), b"abs", "a leading / is stripped");
}

/// A gzip layer of one `size`-byte file of zeros, streamed (never whole in memory).
fn zeros_bomb(size: u64) -> Layer {
    use sha2::{Digest as _, Sha256};
    struct Both<W: Write>(Sha256, W);
    impl<W: Write> Write for Both<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            self.1.write_all(buf)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.1.flush()
        }
    }
    let mut out = Both(Sha256::new(), flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    out.write_all(header.as_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap();
        out.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    out.write_all(&[0u8; 1024]).unwrap(); // end of archive
    let diff_id = format!("sha256:{:x}", out.0.finalize());
    let blob = out.1.finish().unwrap();
    Layer {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: plinth_testkit::image::sha256(&blob),
        blob,
        diff_id,
    }
}

#[test]
fn hostile_layers_are_refused_and_nothing_lands_outside() {
    let setup = Setup::new();
    let outside = tempfile::tempdir().unwrap();
    let outside_path = outside.path().to_str().unwrap().to_string();
    let file = |path: &str| Entry::File { path: path.into(), mode: 0o644, data: b"pwned".to_vec() };
    let cases: Vec<(&str, Layer, &str)> = vec![
        ("dotdot", Layer::new(&[file("../escape")], Compression::Gzip), "`..`"),
        ("deep-dotdot", Layer::new(&[file("a/../../escape")], Compression::Gzip), "`..`"),
        (
            "write-through",
            Layer::new(
                &[Entry::Symlink { path: "evil".into(), target: outside_path.clone() }, file("evil/x")],
                Compression::Gzip,
            ),
            "writing through",
        ),
        (
            "symlink-escape",
            Layer::new(
                &[Entry::Symlink { path: "evil".into(), target: "../../../../../tmp".into() }, file("evil/x")],
                Compression::Gzip,
            ),
            "escapes the layer root",
        ),
        (
            "hardlink-escape",
            Layer::new(&[Entry::Hardlink { path: "pw".into(), target: "../../etc/passwd".into() }], Compression::Gzip),
            "`..`",
        ),
        (
            "hardlink-absent",
            Layer::new(&[Entry::Hardlink { path: "pw".into(), target: "/etc/passwd".into() }], Compression::Gzip),
            "not (yet) in this layer",
        ),
        (
            "device",
            Layer::new(&[Entry::CharDevice { path: "null".into(), major: 1, minor: 3 }], Compression::Gzip),
            "character device 1:3",
        ),
        ("bomb", zeros_bomb(1 << 30), "decompression bomb"),
    ];
    let store = setup.store(10 << 20);
    for (name, layer, expected) in cases {
        let diff_id = digest(&layer.diff_id);
        let good = Layer::new(&[file("ok")], Compression::Gzip);
        setup.push(&format!("hostile/{name}"), &image_of(vec![good, layer]));
        let err = setup.pull(&store, &format!("hostile/{name}"), false).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.contains("refused"), "{name}: {message}");
        assert!(!store.layer_dir(&diff_id).exists(), "{name}: no layer dir");
        assert!(
            setup.layer_entries().iter().all(|e| !e.starts_with('.')),
            "{name}: no partial dir: {:?}",
            setup.layer_entries()
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "{name}: nothing written outside");
    }
    assert!(!Path::new("/tmp/x").exists() || fs::read("/tmp/x").unwrap() != b"pwned");
}

#[test]
fn a_tampered_blob_is_refused_and_not_kept() {
    let setup = Setup::new();
    let layer = Layer::new(&[Entry::File { path: "f".into(), mode: 0o644, data: b"real".to_vec() }], Compression::Gzip);
    let tampered = digest(&layer.digest);
    let image = image_of(vec![layer]);
    setup.push("demo/tampered", &image);
    let path = setup.registry.blob_path(tampered.as_str());
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // same size, other content
    fs::write(&path, bytes).unwrap();

    let store = setup.store(1 << 30);
    let err = setup.pull(&store, "demo/tampered", false).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(tampered.as_str()) && message.contains("does not match"), "{message}");
    assert!(!store.blobs().contains(&tampered));
    assert!(setup.layer_entries().is_empty());
}

#[test]
fn unknown_images_and_unreachable_registries_fail_clearly() {
    let setup = Setup::new();
    let store = setup.store(1 << 30);
    let reference = ImageRef::parse(&format!("{}/nope", setup.registry.addr)).unwrap();
    let err = store
        .pull(&RegistrySource::direct(&setup.registry.url(), "nope"), &reference, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("image {}/nope:latest not found: ", setup.registry.addr)), "{err}");
    assert!(err.contains("unknown"), "{err}");

    let closed = format!("http://{}", free_addr());
    let err = store.pull(&RegistrySource::direct(&closed, "nope"), &reference, false, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImageError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&closed), "{err}");
}

#[test]
fn concurrent_pulls_unpack_each_layer_once() {
    let setup = Setup::new();
    let layers = (0..3u8)
        .map(|i| {
            let entries: Vec<Entry> = (0..200)
                .map(|j| Entry::File { path: format!("l{i}/f{j}"), mode: 0o644, data: vec![i; 4096] })
                .collect();
            Layer::new(&entries, Compression::Gzip)
        })
        .collect();
    setup.push("demo/concurrent", &image_of(layers));
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let setup = &setup;
                scope.spawn(move || {
                    let store = setup.store(1 << 30);
                    setup.pull(&store, "demo/concurrent", true).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unpacked: usize = results.iter().map(|r| r.stats.layers_unpacked).sum();
    assert_eq!(unpacked, 3, "each layer unpacked once");
    for r in &results {
        assert_eq!(r.layers, results[0].layers);
        for (i, layer) in r.layers.iter().enumerate() {
            assert_eq!(fs::read_dir(layer.join(format!("l{i}"))).unwrap().count(), 200);
        }
    }
    assert!(setup.layer_entries().iter().all(|e| !e.starts_with('.')));
}

#[test]
fn gc_keeps_pinned_images_and_removes_the_rest() {
    let setup = Setup::new();
    let one = |name: &str| {
        image_of(vec![Layer::new(
            &[Entry::File { path: name.into(), mode: 0o644, data: vec![7; 10_000] }],
            Compression::Gzip,
        )])
    };
    setup.push("demo/kept", &one("kept"));
    setup.push("demo/dropped", &one("dropped"));
    let store = setup.store(1 << 30);
    let kept = setup.pull(&store, "demo/kept", false).unwrap();
    let dropped = setup.pull(&store, "demo/dropped", false).unwrap();
    store.pin("task-kept", &kept).unwrap();
    // What a crash in the middle of an unpack leaves behind.
    let leftover = setup.images().join("layers").join(format!(".tmp-{}-1-1", kept.diff_ids[0].hex()));
    fs::create_dir_all(leftover.join("half")).unwrap();

    // Within the grace period nothing goes, whatever the age limit.
    let report =
        store.gc(GcPolicy { max_age: Duration::ZERO, high_water_bytes: 0, grace: Duration::from_secs(600) }).unwrap();
    assert_eq!((report.removed_layers, report.removed_blobs), (0, 0));

    let report =
        store.gc(GcPolicy { max_age: Duration::ZERO, high_water_bytes: u64::MAX, grace: Duration::ZERO }).unwrap();
    assert_eq!((report.removed_layers, report.removed_blobs), (1, 2), "{report:?}");
    assert!(report.freed_bytes > 10_000);
    assert!(kept.layers[0].join("kept").is_file());
    assert!(!leftover.exists(), "crash leftovers go");
    assert!(!dropped.layers[0].exists());
    assert!(!store.blobs().contains(&dropped.layer_blobs[0]) && !store.blobs().contains(&dropped.config_digest));
    assert!(store.blobs().contains(&kept.layer_blobs[0]));

    // A collected image is pulled again when asked for.
    let again = setup.pull(&store, "demo/dropped", false).unwrap();
    assert_eq!(again.stats.layers_unpacked, 1);

    // Over the high-water mark: unpinned content goes even if young, pinned stays.
    store.unpin("task-kept").unwrap();
    store.pin("task-dropped", &again).unwrap();
    let report =
        store.gc(GcPolicy { max_age: Duration::from_secs(3600), high_water_bytes: 0, grace: Duration::ZERO }).unwrap();
    assert_eq!((report.removed_layers, report.removed_blobs), (1, 2), "{report:?}");
    assert!(!kept.layers[0].exists());
    assert!(again.layers[0].join("dropped").is_file());
}

#[test]
fn an_index_resolves_to_linux_amd64() {
    let setup = Setup::new();
    let one = |name: &str| {
        image_of(vec![Layer::new(&[Entry::File { path: name.into(), mode: 0o644, data: vec![1] }], Compression::Gzip)])
    };
    let (arm, amd) = (one("arm64"), one("amd64"));
    setup.registry.push("demo/multi", "arm", &arm).unwrap();
    setup.registry.push("demo/multi", "amd", &amd).unwrap();
    let entry = |image: &BuiltImage, arch: &str| {
        serde_json::json!({"mediaType": image.manifest_media_type, "digest": image.manifest_digest,
            "size": image.manifest.len(), "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")]}))
    .unwrap();
    let reply = reqwest::blocking::Client::new()
        .put(format!("{}/v2/demo/multi/manifests/latest", setup.registry.url()))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .unwrap();
    assert!(reply.status().is_success(), "{}", reply.text().unwrap());

    let store = setup.store(1 << 30);
    let pulled = setup.pull(&store, "demo/multi", false).unwrap();
    assert_eq!(pulled.manifest_digest, Digest::of(&index), "the index's digest is what the tag resolved to");
    assert!(pulled.layers[0].join("amd64").is_file());
    assert!(!pulled.layers[0].join("arm64").exists());
}

#[test]
fn many_layers_mount_through_short_names() {
    let setup = Setup::new();
    let layers: Vec<Layer> = (0..60)
        .map(|i| {
            Layer::new(
                &[Entry::File { path: format!("layer-{i}"), mode: 0o644, data: i.to_string().into_bytes() }],
                Compression::Gzip,
            )
        })
        .collect();
    setup.push("demo/tall", &image_of(layers));
    let store = setup.store(1 << 30);
    let pulled = setup.pull(&store, "demo/tall", false).unwrap();
    assert_eq!(pulled.layers.len(), 60);
    let task_dir = setup.dir.path().join("task-tall");
    let _guard = MountGuard(task_dir.clone());
    let rootfs = store.mount_rootfs(&pulled, &task_dir, "task-tall").unwrap();
    for i in [0, 30, 59] {
        assert_eq!(fs::read_to_string(rootfs.join(format!("layer-{i}"))).unwrap(), i.to_string());
    }
    assert!(setup.images().join("l").read_dir().unwrap().count() >= 60, "short names were used");
}
