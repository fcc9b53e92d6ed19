//! The master's registry against Debian's `docker-registry` as the upstream: pull-through
//! (tags, indexes, compressions, outages, tampering, single flight), pushes (skopeo and
//! by hand) and bad input. Everything on loopback; the upstream dies with its handle.
// why: test code (a panic is a failed test); clippy's allow-unwrap-in-tests covers only
// #[test] functions, not the helpers of an integration test.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use plinth_master::registry::{http, Registry, RegistryConfig};
use plinth_testkit::image::{Compression, Entry, ImageConfig, Layer, DOCKER_MANIFEST};
use plinth_testkit::{busybox_hello, BuiltImage};

use plinth_testkit::free_port;

fn upstream() -> plinth_testkit::Registry {
    plinth_oci::tls::install_provider();
    plinth_testkit::Registry::start(None, &format!("127.0.0.1:{}", free_port())).expect("docker-registry starts")
}

/// An upstream registry holding the busybox greeter as `demo/hello:latest`.
async fn upstream_with_hello() -> Result<plinth_testkit::Registry> {
    let hello = busybox_hello()?;
    Ok(tokio::task::spawn_blocking(move || {
        let up = upstream();
        up.push("demo/hello", "latest", &hello).unwrap();
        up
    })
    .await?)
}

fn small_image(marker: &str, compression: Compression) -> BuiltImage {
    let layer = Layer::new(
        &[Entry::File { path: format!("{marker}.txt"), mode: 0o644, data: marker.repeat(1000).into_bytes() }],
        compression,
    );
    BuiltImage::new(&ImageConfig { cmd: Some(vec![marker.into()]), ..Default::default() }, vec![layer])
}

struct Master {
    registry: Arc<Registry>,
    base: String,
    addr: SocketAddr,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Master {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn master(insecure: &[&str]) -> Master {
    master_with(RegistryConfig { insecure: insecure.iter().map(|s| s.to_string()).collect(), ..Default::default() })
        .await
}

async fn master_with(config: RegistryConfig) -> Master {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = RegistryConfig { listen: addr, ..config };
    let registry = Registry::open(config, dir.path().join("registry"), addr).unwrap();
    let app = http::router(registry.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Master { registry, base: format!("http://{addr}"), addr, client: reqwest::Client::new(), _dir: dir, server }
}

impl Master {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).send().await.unwrap()
    }

    /// GETs a manifest and checks the registry headers; returns (status, digest header, body).
    async fn manifest(&self, name: &str, reference: &str) -> (u16, String, Vec<u8>) {
        let reply = self.get(&format!("/v2/{name}/manifests/{reference}")).await;
        let status = reply.status().as_u16();
        let digest = reply.headers().get("docker-content-digest").map(|v| v.to_str().unwrap().to_string());
        let body = reply.bytes().await.unwrap().to_vec();
        (status, digest.unwrap_or_default(), body)
    }

    async fn blob_ok(&self, name: &str, digest: &str) {
        let reply = self.get(&format!("/v2/{name}/blobs/{digest}")).await;
        assert_eq!(reply.status(), 200, "blob {digest}");
        let body = reply.bytes().await.unwrap();
        assert_eq!(plinth_testkit::image::sha256(&body), digest);
    }

    fn has(&self, digest: &str) -> bool {
        self.registry.store.blobs().contains(&digest.parse().unwrap())
    }

    fn upstream_bytes(&self) -> u64 {
        self.registry.metrics.upstream_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn error_code(body: &[u8]) -> (String, Value) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("registry error JSON: {}", String::from_utf8_lossy(body)));
    (v["errors"][0]["code"].as_str().unwrap_or_default().to_string(), v["errors"][0].clone())
}

fn image_bytes(image: &BuiltImage) -> u64 {
    (image.config.len() + image.layers.iter().map(|l| l.blob.len()).sum::<usize>()) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_registry_not_named_insecure_gets_a_message_naming_the_flag() -> Result<()> {
    let up = upstream_with_hello().await?;
    let m = master_with(RegistryConfig { allowed: vec![up.addr.clone()], ..Default::default() }).await;
    let (status, _, body) = m.manifest(&format!("{}/demo/hello", up.addr), "latest").await;
    let body = String::from_utf8_lossy(&body);
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("plain HTTP") && body.contains(&format!("--insecure-registry {}", up.addr)), "{body}");
    assert_eq!(m.upstream_bytes(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_make_the_master_pull_from_an_upstream_no_app_or_operator_named() -> Result<()> {
    let up = upstream_with_hello().await?;
    // Plain HTTP is allowed for a different host only: naming a protocol is not allowing a pull.
    let m = master(&["127.0.0.9:1"]).await;
    let (status, _, body) = m.manifest(&format!("{}/demo/hello", up.addr), "latest").await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (code, error) = error_code(&body);
    assert_eq!(code, "DENIED");
    assert!(
        error["message"].as_str().unwrap_or_default().contains(&format!("--allow-registry {}", up.addr)),
        "{error}"
    );
    assert_eq!(m.upstream_bytes(), 0, "the master never connected");

    // Once an app names an image there (apps are posted with the API's credentials), the
    // master tries it (and says plain HTTP needs --insecure-registry).
    let named = master(&[]).await;
    named.registry.allow_upstream_of(&format!("{}/demo/hello:latest", up.addr));
    let (status, _, body) = named.manifest(&format!("{}/demo/hello", up.addr), "latest").await;
    assert_ne!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("--insecure-registry"), "{}", String::from_utf8_lossy(&body));
    // An upstream the operator named insecure is one the operator allowed.
    let insecure = master(&[&up.addr]).await;
    let (status, _, _) = insecure.manifest(&format!("{}/demo/hello", up.addr), "latest").await;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_through_caches_and_survives_an_upstream_outage() -> Result<()> {
    let up = tokio::task::spawn_blocking(upstream).await?;
    let hello = busybox_hello()?;
    let other = small_image("other", Compression::Gzip);
    let (h, o) = (hello.clone(), other.clone());
    let up = tokio::task::spawn_blocking(move || {
        up.push("demo/hello", "latest", &h).unwrap();
        up.push("demo/other", "v1", &o).unwrap();
        up
    })
    .await?;
    let m = master(&[&up.addr]).await;
    let mut events = m.registry.subscribe();
    let name = format!("{}/demo/hello", up.addr);

    let (status, digest, body) = m.manifest(&name, "latest").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(digest, hello.manifest_digest);
    assert_eq!(body, hello.manifest);
    let head = m.client.head(format!("{}/v2/{name}/manifests/latest", m.base)).send().await?;
    assert_eq!(head.headers()["content-type"], hello.manifest_media_type.as_str());
    assert_eq!(head.headers()["content-length"], hello.manifest.len().to_string().as_str());
    m.blob_ok(&name, &hello.config_digest).await;
    for layer in &hello.layers {
        m.blob_ok(&name, &layer.digest).await;
        // Blobs are served by digest whatever the repository name.
        m.blob_ok("any/name", &layer.digest).await;
    }
    assert_eq!(m.upstream_bytes(), image_bytes(&hello));
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event.event_type.clone());
    }
    assert!(
        seen.contains(&"image_pull_started".to_string())
            && seen.contains(&"image_pull_progress".to_string())
            && seen.contains(&"image_pull_completed".to_string()),
        "{seen:?}"
    );
    let status = m.registry.pull_status(&format!("{name}:latest")).context("a pull status")?;
    assert_eq!(status.state, "completed");

    // Catalog and tags show the mirrored repository.
    let tags: Value = m.get(&format!("/v2/{name}/tags/list")).await.json().await?;
    assert_eq!(tags["tags"], json!(["latest"]));
    let catalog: Value = m.get("/v2/_catalog").await.json().await?;
    assert_eq!(catalog["repositories"], json!([name.clone()]));

    // Upstream gone: the cached tag is still served, an uncached one fails clearly.
    let mut up = up;
    up.stop();
    let (status, digest, _) = m.manifest(&name, "latest").await;
    assert_eq!((status, digest.as_str()), (200, hello.manifest_digest.as_str()));
    m.blob_ok(&name, &hello.layers[0].digest).await;
    let (status, _, body) = m.manifest(&format!("{}/demo/other", up.addr), "v1").await;
    assert_eq!(status, 404);
    let (code, error) = error_code(&body);
    assert_eq!(code, "MANIFEST_UNKNOWN");
    assert!(!error["detail"]["upstream"].as_str().unwrap_or_default().is_empty(), "{error}");
    let failed = m.registry.pull_status(&format!("{}/demo/other:v1", up.addr)).context("a status")?;
    assert_eq!(failed.state, "failed");
    // Forcing a re-resolution needs the upstream.
    let forced = m
        .client
        .get(format!("{}/v2/{name}/manifests/latest", m.base))
        .header("x-plinth-force-pull", "true")
        .send()
        .await?;
    assert_eq!(forced.status(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_lists_zstd_uncompressed_and_docker_schema2() -> Result<()> {
    let amd64 = small_image("amd", Compression::Zstd);
    let arm64 = small_image("arm", Compression::Gzip);
    let raw = small_image("raw", Compression::None);
    let docker = BuiltImage::with_media_type(
        &ImageConfig::default(),
        vec![Layer::new(&[Entry::File { path: "d".into(), mode: 0o644, data: b"docker".to_vec() }], Compression::Gzip)],
        DOCKER_MANIFEST,
    );
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": arm64.manifest_media_type, "digest": arm64.manifest_digest, "size": arm64.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": amd64.manifest_media_type, "digest": amd64.manifest_digest, "size": amd64.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]}))?;
    let index_digest = plinth_testkit::image::sha256(&index);
    let (a, b, r, d, i) = (amd64.clone(), arm64.clone(), raw.clone(), docker.clone(), index.clone());
    let up = tokio::task::spawn_blocking(move || {
        let up = upstream();
        up.push("demo/multi", "amd64", &a).unwrap();
        up.push("demo/multi", "arm64", &b).unwrap();
        up.push("demo/raw", "v1", &r).unwrap();
        up.push("demo/docker", "v1", &d).unwrap();
        let reply = reqwest::blocking::Client::new()
            .put(format!("{}/v2/demo/multi/manifests/latest", up.url()))
            .header("content-type", "application/vnd.oci.image.index.v1+json")
            .body(i)
            .send()
            .unwrap();
        assert!(reply.status().is_success(), "index push: {}", reply.text().unwrap_or_default());
        up
    })
    .await?;
    let m = master(&[&up.addr]).await;

    let (status, digest, body) = m.manifest(&format!("{}/demo/multi", up.addr), "latest").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(digest, index_digest);
    assert!(m.has(&amd64.manifest_digest) && m.has(&amd64.config_digest) && m.has(&amd64.layers[0].digest));
    assert!(!m.has(&arm64.layers[0].digest) && !m.has(&arm64.manifest_digest), "only linux/amd64 is pulled");
    // The child manifest is served by digest, with its media type.
    let (status, digest, _) = m.manifest(&format!("{}/demo/multi", up.addr), &amd64.manifest_digest).await;
    assert_eq!((status, digest.as_str()), (200, amd64.manifest_digest.as_str()));

    for (repo, tag, image) in [("demo/raw", "v1", &raw), ("demo/docker", "v1", &docker)] {
        let name = format!("{}/{repo}", up.addr);
        let reply = m.get(&format!("/v2/{name}/manifests/{tag}")).await;
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.headers()["content-type"], image.manifest_media_type.as_str());
        assert_eq!(reply.headers()["docker-content-digest"], image.manifest_digest.as_str());
        m.blob_ok(&name, &image.layers[0].digest).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blobs_never_land_and_concurrent_pulls_share_one_download() -> Result<()> {
    let good = small_image("good", Compression::Gzip);
    let evil = small_image("evil", Compression::Gzip);
    let (g, e) = (good.clone(), evil.clone());
    let up = tokio::task::spawn_blocking(move || {
        let up = upstream();
        up.push("demo/good", "v1", &g).unwrap();
        up.push("demo/evil", "v1", &e).unwrap();
        // Same length, other bytes: only the digest check can tell.
        let path = up.blob_path(&e.layers[0].digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        up
    })
    .await?;
    let m = master(&[&up.addr]).await;

    let (status, _, body) = m.manifest(&format!("{}/demo/evil", up.addr), "v1").await;
    assert_eq!(status, 404);
    let (_, error) = error_code(&body);
    assert!(error.to_string().to_lowercase().contains("digest"), "a digest mismatch: {error}");
    assert!(!m.has(&evil.layers[0].digest), "the tampered blob must not land");
    assert!(m.registry.store.tags(&format!("{}/demo/evil", up.addr).parse_repo()).is_empty());
    let tmp = m.registry.store.blobs().root().join("tmp");
    assert_eq!(std::fs::read_dir(tmp)?.count(), 0, "no temp file left");

    // Five agents at once: one download.
    let before = m.upstream_bytes();
    let name = format!("{}/demo/good", up.addr);
    let pulls = (0..5).map(|_| {
        let (client, url) = (m.client.clone(), format!("{}/v2/{name}/manifests/v1", m.base));
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    });
    for pull in futures::future::join_all(pulls).await {
        let reply = pull?;
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.headers()["docker-content-digest"], good.manifest_digest.as_str());
    }
    assert_eq!(m.upstream_bytes() - before, image_bytes(&good), "every blob crossed the uplink once");
    assert_eq!(
        m.registry.metrics.pulls.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "one pull each for evil and good"
    );
    Ok(())
}

trait ParseRepo {
    fn parse_repo(&self) -> plinth_master::registry::RepoName;
}

impl ParseRepo for String {
    fn parse_repo(&self) -> plinth_master::registry::RepoName {
        plinth_master::registry::RepoName::parse(self).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_bad_pushes_are_refused() -> Result<()> {
    let m = master(&[]).await;
    let image = small_image("pushed", Compression::Gzip);
    let layout = tempfile::tempdir()?;
    image.write_oci_layout(layout.path(), "v1")?;
    let dest = format!("docker://{}/demo/app:v1", m.addr);
    let output = tokio::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", layout.path().display()), &dest])
        .output()
        .await?;
    assert!(output.status.success(), "skopeo: {}", String::from_utf8_lossy(&output.stderr));
    // Skopeo may rewrite the manifest (e.g. its media type); read what it stored.
    let (status, digest, body) = m.manifest("demo/app", "v1").await;
    assert_eq!(status, 200);
    assert_eq!(digest, plinth_testkit::image::sha256(&body));
    m.blob_ok("demo/app", &image.layers[0].digest).await;
    // The master's own address as the registry component means the pushed repository.
    let (status, same, _) = m.manifest(&format!("{}/demo/app", m.addr), "v1").await;
    assert_eq!((status, same.as_str()), (200, digest.as_str()));
    assert_eq!(m.upstream_bytes(), 0);

    // Monolithic upload with a wrong digest.
    let wrong = plinth_testkit::image::sha256(b"something else");
    let reply = m
        .client
        .post(format!("{}/v2/demo/app/blobs/uploads/?digest={wrong}", m.base))
        .body(b"content".to_vec())
        .send()
        .await?;
    assert_eq!(reply.status(), 400);
    assert_eq!(error_code(&reply.bytes().await?).0, "DIGEST_INVALID");
    assert!(!m.has(&wrong));
    // Chunked upload: POST, PATCH, PUT with the wrong digest, then the right one.
    for (digest, expected) in [(wrong.clone(), 400), (plinth_testkit::image::sha256(b"chunk1chunk2"), 201)] {
        let start = m.client.post(format!("{}/v2/demo/app/blobs/uploads/", m.base)).send().await?;
        assert_eq!(start.status(), 202);
        let location = start.headers()["location"].to_str()?.to_string();
        let patch = m.client.patch(format!("{}{location}", m.base)).body(b"chunk1".to_vec()).send().await?;
        assert_eq!((patch.status().as_u16(), patch.headers()["range"].to_str()?), (202, "0-5"));
        let put = m.client.put(format!("{}{location}?digest={digest}", m.base)).body(b"chunk2".to_vec()).send().await?;
        assert_eq!(put.status().as_u16(), expected);
    }
    assert_eq!(std::fs::read_dir(m.registry.store.uploads_dir())?.count(), 0, "uploads are cleaned up");

    // A manifest naming a blob the registry lacks, and garbage.
    let missing = small_image("missing", Compression::Gzip);
    for (body, code) in
        [(missing.manifest.clone(), "MANIFEST_BLOB_UNKNOWN"), (b"{not json".to_vec(), "MANIFEST_INVALID")]
    {
        let reply = m
            .client
            .put(format!("{}/v2/demo/app/manifests/v2", m.base))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .await?;
        assert_eq!(reply.status(), 400);
        assert_eq!(error_code(&reply.bytes().await?).0, code);
    }
    assert!(m.registry.store.tag(&"demo/app".to_string().parse_repo(), "v2").is_none());

    // Names that try to climb out of the store.
    for path in [
        "/v2/../../etc/manifests/latest",
        "/v2/demo/%2e%2e/x/manifests/latest",
        "/v2/demo/..%2f..%2fescape/blobs/uploads/",
        "/v2/demo/app/manifests/..%2f..%2fescape",
    ] {
        let reply = m.client.put(format!("{}{path}", m.base)).body(missing.manifest.clone()).send().await?;
        assert!(matches!(reply.status().as_u16(), 400 | 404 | 405), "{path}: {}", reply.status());
        let reply = m.client.post(format!("{}{path}", m.base)).send().await?;
        assert!(matches!(reply.status().as_u16(), 400 | 404 | 405), "{path}: {}", reply.status());
    }
    let root = m.registry.store.root().parent().context("data dir")?.to_path_buf();
    let entries: Vec<_> = std::fs::read_dir(&root)?.flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("registry")], "nothing written beside the store");
    assert!(!root.parent().context("tmp")?.join("escape").exists());

    // Unknown images, local or not.
    for path in ["/v2/demo/nothing/manifests/latest", "/v2/demo/app/manifests/nope"] {
        let reply = m.get(path).await;
        assert_eq!(reply.status(), 404);
        assert_eq!(error_code(&reply.bytes().await?).0, "MANIFEST_UNKNOWN");
    }
    let reply = m.get(&format!("/v2/demo/app/blobs/{wrong}")).await;
    assert_eq!((reply.status().as_u16(), error_code(&reply.bytes().await?).0.as_str()), (404, "BLOB_UNKNOWN"));
    let base: Value = m.get("/v2/").await.json().await?;
    assert_eq!(base, json!({}));
    Ok(())
}

/// Waits for an event of `event_type` about `image` on the master's bus.
async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<Arc<plinth_scheduler::Event>>,
    event_type: &str,
    image: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {event_type} for {image}"))
            .expect("the bus stays open");
        if event.event_type == event_type && event.payload["image"].as_str().is_some_and(|i| i.starts_with(image)) {
            return (*event.payload).clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_prefetch_their_images_and_the_queue_says_when_a_pull_failed() -> Result<()> {
    let hello = small_image("prefetched", Compression::Gzip);
    let h = hello.clone();
    let up = tokio::task::spawn_blocking(move || {
        let up = upstream();
        up.push("demo/hello", "latest", &h).unwrap();
        up
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = api.local_addr()?;
    let config = plinth_master::MasterConfig {
        listen: addr,
        data_dir: dir.path().to_path_buf(),
        hostname: "127.0.0.1".into(),
        registry: RegistryConfig {
            listen: "127.0.0.1:0".parse()?,
            insecure: vec![up.addr.clone()],
            ..Default::default()
        },
        ..Default::default()
    };
    let (master, app) = plinth_master::build(config, addr.port(), None).await?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(api, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let (client, url) = (client.clone(), format!("http://{addr}/v2/apps"));
        async move { client.post(url).json(&body).send().await.unwrap() }
    };
    let mut events = master.events.subscribe();

    let image = format!("{}/demo/hello", up.addr);
    let reply = post(json!({"id": "/hello", "container": {"type": "DOCKER", "docker": {"image": image}}})).await;
    assert_eq!(reply.status(), 201, "{}", reply.text().await?);
    wait_event(&mut events, "image_pull_started", &image).await;
    let done = wait_event(&mut events, "image_pull_completed", &image).await;
    assert_eq!(done["digest"], hello.manifest_digest.as_str());
    assert!(
        master.registry.store.blobs().contains(&hello.layers[0].digest.parse()?),
        "layers are here before any agent asks"
    );

    let missing = format!("{}/demo/missing:v9", up.addr);
    let reply = post(json!({"id": "/missing", "container": {"type": "DOCKER", "docker": {"image": missing}}})).await;
    assert_eq!(reply.status(), 201);
    let failed = wait_event(&mut events, "image_pull_failed", &missing).await;
    assert!(!failed["message"].as_str().unwrap_or_default().is_empty(), "{failed}");
    // Plinth's queue (`/v1/queue`) has the pull and says why in words.
    let queue: Value = client.get(format!("http://{addr}/v1/queue")).send().await?.json().await?;
    let item = queue["queue"]
        .as_array()
        .and_then(|q| q.iter().find(|i| i["appId"] == "/missing"))
        .unwrap_or_else(|| panic!("/missing queued: {queue}"))
        .clone();
    assert_eq!(item["lastImagePull"]["state"], "failed", "{item}");
    assert!(item["reasons"][0].as_str().unwrap_or_default().starts_with("image pull failed"), "{item}");

    let reply = post(json!({"id": "/bad", "container": {"type": "DOCKER", "docker": {"image": "UPPER/case"}}})).await;
    assert_eq!(reply.status(), 422);
    let body: Value = reply.json().await?;
    assert_eq!(body["details"][0]["path"], "/container/docker/image", "{body}");
    let metrics = client.get(format!("http://{addr}/metrics/prometheus")).send().await?.text().await?;
    assert!(metrics.contains("plinth_registry_pulls_total 2"), "{metrics}");
    assert!(metrics.contains("plinth_registry_pulls_failed_total 1"), "{metrics}");
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_blobs_over_the_cap_are_refused_and_dropped() -> Result<()> {
    let m = master_with(RegistryConfig { max_blob_bytes: 10, ..Default::default() }).await;
    let start = m.client.post(format!("{}/v2/demo/big/blobs/uploads/", m.base)).send().await?;
    let location = start.headers()["location"].to_str()?.to_string();
    let patch = m.client.patch(format!("{}{location}", m.base)).body(vec![0u8; 11]).send().await?;
    assert_eq!(patch.status(), 413);
    assert_eq!(error_code(&patch.bytes().await?).0, "SIZE_INVALID");
    assert_eq!(std::fs::read_dir(m.registry.store.uploads_dir())?.count(), 0, "the upload is dropped");
    // Aborting an upload removes it too.
    let start = m.client.post(format!("{}/v2/demo/big/blobs/uploads/", m.base)).send().await?;
    let location = start.headers()["location"].to_str()?.to_string();
    assert_eq!(m.client.delete(format!("{}{location}", m.base)).send().await?.status(), 204);
    assert_eq!(std::fs::read_dir(m.registry.store.uploads_dir())?.count(), 0);
    let gone = m.client.patch(format!("{}{location}", m.base)).body(vec![1u8]).send().await?;
    assert_eq!(gone.status(), 404);
    Ok(())
}
