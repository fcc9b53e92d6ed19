//! Upstream pulls. `oci-client` speaks the protocol (token auth, redirects); every blob
//! is checked by the store's [`BlobWriter`](plinth_oci::store::BlobWriter) while it
//! streams, and manifests are hashed before anything refers to them. Content lands in
//! dependency order (blobs, child manifest, index, then the tag), so a tag never points
//! at something missing.
//!
//! Single flight: one spawned task per image (name + reference + force) and one per blob
//! digest; later callers await the same shared result, and a caller that goes away does
//! not cancel a download others wait for.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use tokio::sync::broadcast;

use plinth_oci::manifest::{self, Parsed};
use plinth_oci::{Digest, ImageRef};
use plinth_protocol::{error_chain, Timestamp};

use super::credentials::DockerCredentials;
use super::pull_error::{upstream_chain, PullError, PullErrorKind};
use super::store::{RegistryStore, RepoName};
use super::{PullStatus, RegistryMetrics, MAX_MANIFEST_BYTES};
use plinth_scheduler::Event;

/// Progress events per image at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// What a pull produced: the manifest (or index) the reference resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub digest: Digest,
    pub media_type: String,
    /// Bytes downloaded from upstream by this pull (0 when served from the cache).
    pub downloaded: u64,
}

type SharedResult<T> = Shared<BoxFuture<'static, Result<T, PullError>>>;
/// Running tasks by key, for single flight.
type Flights<K, T> = Mutex<HashMap<K, SharedResult<T>>>;

struct Inner {
    client: Client,
    store: RegistryStore,
    credentials: DockerCredentials,
    max_blob_bytes: u64,
    metrics: Arc<RegistryMetrics>,
    events: broadcast::Sender<Event>,
    statuses: Arc<Mutex<HashMap<String, PullStatus>>>,
    images: Flights<String, Pulled>,
    blobs: Flights<Digest, u64>,
}

/// Pulls images from upstream registries into the store.
#[derive(Clone)]
pub struct Puller {
    inner: Arc<Inner>,
}

/// Per-image progress, throttled.
struct Progress {
    image: String,
    layers_total: usize,
    layers_done: usize,
    last_sent: Option<Instant>,
}

impl Puller {
    pub(crate) fn new(
        store: RegistryStore,
        insecure: &[String],
        credentials: DockerCredentials,
        max_blob_bytes: u64,
        metrics: Arc<RegistryMetrics>,
        events: broadcast::Sender<Event>,
        statuses: Arc<Mutex<HashMap<String, PullStatus>>>,
    ) -> Self {
        plinth_oci::tls::install_provider();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        Puller {
            inner: Arc::new(Inner {
                client,
                store,
                credentials,
                max_blob_bytes,
                metrics,
                events,
                statuses,
                images: Mutex::new(HashMap::new()),
                blobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether any pull is running (garbage collection waits).
    pub fn busy(&self) -> bool {
        !self.inner.images.lock().expect("never poisoned").is_empty()
            || !self.inner.blobs.lock().expect("never poisoned").is_empty()
    }

    /// Resolves `image` to a complete image in the store: from the cache when its tag
    /// (or digest) is there and complete and `force` is off, else from upstream.
    pub async fn pull(&self, image: &ImageRef, force: bool) -> Result<Pulled, PullError> {
        if !force {
            if let Some(cached) = self.inner.cached(image) {
                return Ok(cached);
            }
        }
        let key = format!("{image}{}", if force { "#force" } else { "" });
        let (image, task_key) = (image.clone(), key.clone());
        let (shared, _) = single_flight(
            &self.inner,
            |inner| &inner.images,
            key,
            &image.to_string(),
            move |inner| {
                async move {
                    let result = inner.pull_reporting(&image).await;
                    inner.images.lock().expect("never poisoned").remove(&task_key);
                    result
                }
                .boxed()
            },
        );
        shared.await
    }

    /// Waits for a blob download in progress, if any; true when the blob is now stored.
    pub async fn wait_blob(&self, digest: &Digest) -> bool {
        let running = self.inner.blobs.lock().expect("never poisoned").get(digest).cloned();
        if let Some(running) = running {
            let _ = running.await;
        }
        self.inner.store.blobs().contains(digest)
    }
}

impl Inner {
    fn publish(&self, event_type: &str, payload: serde_json::Value) {
        // No subscriber (tests, no master) is fine.
        let _ = self.events.send(Event::new(event_type, Timestamp::now(), payload));
    }

    fn set_status(&self, image: &ImageRef, state: &str, message: Option<String>, digest: Option<&Digest>) {
        let status = PullStatus {
            state: state.to_string(),
            message,
            digest: digest.map(|d| d.to_string()),
            at: Timestamp::now().to_iso(),
        };
        self.statuses.lock().expect("never poisoned").insert(image.to_string(), status);
    }

    /// The image as the cache has it, if complete.
    fn cached(&self, image: &ImageRef) -> Option<Pulled> {
        let repo = RepoName::parse(&image.name()).ok()?;
        let (digest, media_type) = match (image.digest(), image.tag()) {
            (Some(d), _) => (d.clone(), None),
            (None, Some(tag)) => {
                let record = self.store.tag(&repo, tag)?;
                (record.digest, Some(record.media_type))
            }
            (None, None) => return None,
        };
        let bytes = self.store.blobs().read(&digest).ok()?;
        if !complete(&self.store, &bytes) {
            return None;
        }
        self.store.blobs().touch(&digest);
        let media_type = media_type.unwrap_or_else(|| manifest::media_type_of(&bytes).to_string());
        Some(Pulled { digest, media_type, downloaded: 0 })
    }

    async fn pull_reporting(self: &Arc<Self>, image: &ImageRef) -> Result<Pulled, PullError> {
        let started = Instant::now();
        RegistryMetrics::add(&self.metrics.pulls, 1);
        self.set_status(image, "pulling", None, None);
        self.publish("image_pull_started", json!({"image": image.to_string()}));
        tracing::info!(image = %image, "pulling image from upstream");
        let mut progress = Progress { image: image.to_string(), layers_total: 0, layers_done: 0, last_sent: None };
        match self.fetch(image, &mut progress).await {
            Ok(pulled) => {
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(image = %image, digest = %pulled.digest, bytes = pulled.downloaded, seconds, "image pulled");
                self.set_status(image, "completed", None, Some(&pulled.digest));
                self.publish(
                    "image_pull_completed",
                    json!({"image": image.to_string(), "digest": pulled.digest.to_string(),
                        "bytes": pulled.downloaded, "seconds": seconds}),
                );
                Ok(pulled)
            }
            Err(error) => {
                RegistryMetrics::add(&self.metrics.pulls_failed, 1);
                tracing::warn!(image = %image, error = %error.message, "image pull failed");
                self.set_status(image, "failed", Some(error.message.clone()), None);
                self.publish("image_pull_failed", json!({"image": image.to_string(), "message": error.message}));
                Err(error)
            }
        }
    }

    async fn fetch(self: &Arc<Self>, image: &ImageRef, progress: &mut Progress) -> Result<Pulled, PullError> {
        let repo =
            RepoName::parse(&image.name()).map_err(|e| PullError::new(image, PullErrorKind::Invalid, e.to_string()))?;
        let auth = self.credentials.auth_for(image.registry());
        let reference = match image.digest() {
            Some(d) => Reference::with_digest(image.registry().into(), image.repository().into(), d.to_string()),
            None => Reference::with_tag(image.registry().into(), image.repository().into(), image.reference()),
        };
        let bytes = self.manifest(image, &reference, &auth, image.digest()).await?;
        let digest = Digest::of(&bytes);
        let mut downloaded = 0;
        match manifest::parse(&bytes, None).map_err(|e| PullError::content(image, e))? {
            Parsed::Image(m) => downloaded += self.image_blobs(image, &reference, &m, progress).await?,
            Parsed::Index(index) => {
                let child = manifest::select_platform(&index).map_err(|e| PullError::content(image, e))?;
                let child_digest = manifest::descriptor_digest(&child).map_err(|e| PullError::content(image, e))?;
                let child_ref = reference.clone_with_digest(child_digest.to_string());
                let child_bytes = self.manifest(image, &child_ref, &auth, Some(&child_digest)).await?;
                let Parsed::Image(m) = manifest::parse(&child_bytes, None).map_err(|e| PullError::content(image, e))?
                else {
                    return Err(PullError::new(image, PullErrorKind::Invalid, "an index entry is itself an index"));
                };
                downloaded += self.image_blobs(image, &child_ref, &m, progress).await?;
                self.store.blobs().put(&child_bytes).map_err(|e| PullError::content(image, e))?;
            }
        }
        self.store.blobs().put(&bytes).map_err(|e| PullError::content(image, e))?;
        let media_type = manifest::media_type_of(&bytes).to_string();
        if let (None, Some(tag)) = (image.digest(), image.tag()) {
            self.store
                .set_tag(&repo, tag, &digest, &media_type)
                .map_err(|e| PullError::new(image, PullErrorKind::Storage, error_chain(&e).to_string()))?;
        }
        Ok(Pulled { digest, media_type, downloaded })
    }

    /// Fetches manifest bytes, checked against `expected` when pinned.
    async fn manifest(
        &self,
        image: &ImageRef,
        reference: &Reference,
        auth: &RegistryAuth,
        expected: Option<&Digest>,
    ) -> Result<Vec<u8>, PullError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, auth, &manifest::ACCEPTED)
            .await
            .map_err(|e| PullError::upstream(image, e))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(PullError::new(
                image,
                PullErrorKind::Invalid,
                format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let actual = Digest::of(&bytes);
        if let Some(expected) = expected {
            if &actual != expected {
                return Err(PullError::new(
                    image,
                    PullErrorKind::Invalid,
                    format!("manifest does not match its digest: expected {expected}, got {actual}"),
                ));
            }
        }
        Ok(bytes.to_vec())
    }

    async fn image_blobs(
        self: &Arc<Self>,
        image: &ImageRef,
        reference: &Reference,
        m: &oci_spec::image::ImageManifest,
        progress: &mut Progress,
    ) -> Result<u64, PullError> {
        let mut wanted = vec![m.config().clone()];
        wanted.extend(m.layers().iter().cloned());
        progress.layers_total = wanted.len();
        let mut downloaded = 0;
        for descriptor in wanted {
            let digest = manifest::descriptor_digest(&descriptor).map_err(|e| PullError::content(image, e))?;
            let size = descriptor.size();
            if size > self.max_blob_bytes {
                return Err(PullError::new(
                    image,
                    PullErrorKind::Invalid,
                    format!("blob {digest} is {size} bytes, over the {}-byte limit", self.max_blob_bytes),
                ));
            }
            downloaded += self.blob(image, reference, &digest, size, progress).await?;
            progress.layers_done += 1;
        }
        Ok(downloaded)
    }

    /// One blob, single-flight by digest. Returns the bytes this call downloaded.
    async fn blob(
        self: &Arc<Self>,
        image: &ImageRef,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        progress: &mut Progress,
    ) -> Result<u64, PullError> {
        if self.store.blobs().contains(digest) {
            self.store.blobs().touch(digest);
            return Ok(0);
        }
        // Progress of a shared download goes to the image that started it.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (task_image, reference, task_digest) = (image.clone(), reference.clone(), digest.clone());
        let (shared, started_here) = single_flight(
            self,
            |inner| &inner.blobs,
            digest.clone(),
            &image.to_string(),
            move |inner| {
                async move {
                    let result = inner.download(&task_image, &reference, &task_digest, size, tx).await;
                    inner.blobs.lock().expect("never poisoned").remove(&task_digest);
                    result
                }
                .boxed()
            },
        );
        let mine = started_here.then_some(rx);
        if let Some(mut rx) = mine {
            while let Some(done) = rx.recv().await {
                self.report(progress, digest, done, size, false);
            }
            self.report(progress, digest, size, size, true);
        }
        let downloaded = shared.await?;
        Ok(if started_here { downloaded } else { 0 })
    }

    fn report(&self, progress: &mut Progress, digest: &Digest, done: u64, total: u64, last: bool) {
        let now = Instant::now();
        if !last && progress.last_sent.is_some_and(|t| now.duration_since(t) < PROGRESS_INTERVAL) {
            return;
        }
        if last && progress.last_sent.is_some_and(|t| now.duration_since(t) < PROGRESS_INTERVAL) {
            // The completion event carries the totals; skip a burst of tiny layers.
            return;
        }
        progress.last_sent = Some(now);
        self.publish(
            "image_pull_progress",
            json!({"image": progress.image, "digest": digest.to_string(), "layer": digest.short(),
                "bytesDone": done, "bytesTotal": total,
                "layersDone": progress.layers_done + usize::from(last), "layersTotal": progress.layers_total}),
        );
    }

    async fn download(
        &self,
        image: &ImageRef,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        progress: tokio::sync::mpsc::UnboundedSender<u64>,
    ) -> Result<u64, PullError> {
        let mut stream = self
            .client
            .pull_blob_stream(reference, digest.as_str())
            .await
            .map_err(|e| PullError::upstream(image, e))?;
        let mut writer = self.store.blobs().writer(digest, Some(size)).map_err(|e| PullError::content(image, e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let kind = if e.to_string().to_ascii_lowercase().contains("digest") {
                    PullErrorKind::Invalid
                } else {
                    PullErrorKind::Unreachable
                };
                PullError::new(image, kind, format!("downloading blob {digest}: {}", upstream_chain(&e)))
            })?;
            RegistryMetrics::add(&self.metrics.upstream_bytes, chunk.len() as u64);
            // Small chunks onto the local disk: cheap enough for the async worker.
            writer.write_chunk(&chunk).map_err(|e| PullError::content(image, e))?;
            let _ = progress.send(writer.bytes_written());
        }
        let written = writer.bytes_written();
        tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| PullError::new(image, PullErrorKind::Storage, format!("blob commit task failed: {e}")))?
            .map_err(|e| PullError::content(image, e))?;
        tracing::debug!(image = %image, digest = %digest, bytes = written, "blob pulled");
        Ok(written)
    }
}

/// Joins the task running under `key` in the map `map` picks, or spawns `work` there.
/// The task itself removes its entry when done; callers that go away do not cancel it.
/// Returns the shared result and whether this call started the work.
fn single_flight<K, T>(
    inner: &Arc<Inner>,
    map: fn(&Inner) -> &Flights<K, T>,
    key: K,
    image: &str,
    work: impl FnOnce(Arc<Inner>) -> BoxFuture<'static, Result<T, PullError>>,
) -> (SharedResult<T>, bool)
where
    K: std::hash::Hash + Eq,
    T: Clone + Send + Sync + 'static,
{
    let mut running = map(inner).lock().expect("never poisoned");
    if let Some(shared) = running.get(&key) {
        return (shared.clone(), false);
    }
    let task = tokio::spawn(work(inner.clone()));
    let image = image.to_string();
    let shared = async move {
        task.await.unwrap_or_else(|e| {
            Err(PullError { image, kind: PullErrorKind::Storage, message: format!("pull task failed: {e}") })
        })
    }
    .boxed()
    .shared();
    running.insert(key, shared.clone());
    (shared, true)
}

/// Whether everything a stored manifest needs is in the store (an index: its
/// linux/amd64 child and that child's blobs).
pub fn complete(store: &RegistryStore, manifest_bytes: &[u8]) -> bool {
    match manifest::parse(manifest_bytes, None) {
        Ok(Parsed::Image(m)) => std::iter::once(m.config())
            .chain(m.layers().iter())
            .all(|d| manifest::descriptor_digest(d).is_ok_and(|d| store.blobs().contains(&d))),
        Ok(Parsed::Index(index)) => {
            let Ok(child) = manifest::select_platform(&index) else { return false };
            let Ok(digest) = manifest::descriptor_digest(&child) else { return false };
            store.blobs().read(&digest).is_ok_and(|bytes| {
                matches!(manifest::parse(&bytes, None), Ok(Parsed::Image(_))) && complete(store, &bytes)
            })
        }
        Err(_) => false,
    }
}
