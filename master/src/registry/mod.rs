//! The master's image registry: a pull-through cache of upstream registries and a
//! private push target, served to agents as an OCI distribution v2 registry (`:5000`).
//!
//! - [`store`]: blobs (layers, configs, manifests) by digest, tags, uploads on disk.
//! - [`pull`]: upstream pulls with `oci-client`, every blob verified while it streams,
//!   one download per image and per blob however many ask; [`pull_error`] why one
//!   failed, [`credentials`] the logins from a Docker `config.json`.
//! - [`http`]: the v2 API (read, pull-through, push), errors in the registry's JSON.
//! - [`gc`]: removes blobs no tag reaches, oldest first, above a high-water mark.
//! - [`images`]: the tags as `/v1/images` lists them (size, use, source) and their removal.
//!
//! How agents ask: `GET /v2/<registry>/<repository>/manifests/<tag>` (e.g.
//! `/v2/docker.io/library/busybox/manifests/latest`) pulls through; a repository
//! without a registry component (`demo/app`), or whose registry component is one of the
//! master's own names, is a pushed one. `X-Plinth-Force-Pull: true` re-resolves the tag
//! upstream. Blobs are served by digest for any repository name.
//!
//! Pulls are open, as agents pull without credentials; once the master has credentials
//! (`access.rs`), pushes (anything but `GET`/`HEAD`) need an admin's, over HTTP Basic or a
//! bearer token, as `skopeo --dest-creds` and `docker login` send them.
pub mod credentials;
pub mod gc;
pub mod http;
pub mod images;
pub mod pull;
pub mod pull_error;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::access::Credentials;
use plinth_oci::{ImageRef, OciError};
use plinth_protocol::error_chain;

pub use gc::{gc, GcReport};
pub use images::{RemovedTag, StoredImage};
use plinth_scheduler::Event;
pub use pull::{Pulled, Puller};
pub use pull_error::{PullError, PullErrorKind};
pub use store::{RegistryStore, RepoName, TagRecord};

/// Default cap on one pushed blob.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 10 << 30;
/// Default high-water mark of the blob store for garbage collection.
pub const DEFAULT_MAX_STORE_BYTES: u64 = 20 << 30;
/// Manifests are small; anything bigger is refused.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Request header that makes a pull-through manifest GET re-resolve the tag upstream.
pub const FORCE_PULL_HEADER: &str = "x-plinth-force-pull";

/// How the registry runs (`plinth master --registry-*` flags).
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub listen: SocketAddr,
    /// `HOST:PORT` of upstream registries spoken to over plain HTTP (allowed upstreams too).
    pub insecure: Vec<String>,
    /// Upstream registries (as image names spell them: `docker.io`, `quay.io`,
    /// `HOST:PORT`) pulled from even before an app names them (`--allow-registry`).
    pub allowed: Vec<String>,
    /// A Docker `config.json` with `auths.<registry>.auth` credentials for upstreams.
    pub docker_config: Option<PathBuf>,
    /// Extra names agents may use for this registry (first path component).
    pub aliases: Vec<String>,
    pub max_blob_bytes: u64,
    pub max_store_bytes: u64,
    /// Unreferenced blobs older than this are collected even below the high-water mark.
    pub max_unused_age: Duration,
    /// Who may push: the master's API credentials (empty: anyone).
    pub push_credentials: Arc<Credentials>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5000)),
            insecure: Vec::new(),
            allowed: Vec::new(),
            docker_config: None,
            aliases: Vec::new(),
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_store_bytes: DEFAULT_MAX_STORE_BYTES,
            max_unused_age: Duration::from_secs(7 * 24 * 3600),
            push_credentials: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid repository name {name:?}: {reason}")]
    NameInvalid { name: String, reason: String },
    #[error("invalid tag {tag:?}")]
    TagInvalid { tag: String },
    #[error("manifest unknown: {name}:{reference}")]
    ManifestUnknown { name: String, reference: String },
    #[error("blob unknown: {digest}")]
    BlobUnknown { digest: String },
    #[error("blob upload unknown: {upload}")]
    UploadUnknown { upload: String },
    #[error("invalid digest: {0}")]
    DigestInvalid(String),
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    #[error("manifest references {digest}, which this registry does not have")]
    ManifestBlobUnknown { digest: String },
    #[error("content is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("registry storage at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry storage")]
    Oci(#[from] OciError),
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("this registry takes pushes only with an admin's credentials (pulls need none)")]
    Unauthorized,
    #[error("these credentials are read-only; pushing needs an admin's")]
    Denied,
    #[error(
        "this master pulls from {registry} only once an app names an image there or it is started with \
         --allow-registry {registry}"
    )]
    UpstreamNotAllowed { registry: String },
}

/// The outcome of the last pull of one image (`/v2/queue` shows failures).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PullStatus {
    /// `pulling`, `completed` or `failed`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub at: String,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RegistryMetrics {
    pub pulls: AtomicU64,
    pub pulls_failed: AtomicU64,
    pub upstream_bytes: AtomicU64,
    pub served_bytes: AtomicU64,
    pub pushed_bytes: AtomicU64,
}

impl RegistryMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text for these counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, counter) in [
            ("plinth_registry_pulls_total", "Upstream image pulls started.", &self.pulls),
            ("plinth_registry_pulls_failed_total", "Upstream image pulls that failed.", &self.pulls_failed),
            (
                "plinth_registry_upstream_bytes_total",
                "Blob bytes downloaded from upstream registries.",
                &self.upstream_bytes,
            ),
            ("plinth_registry_served_bytes_total", "Blob and manifest bytes served to clients.", &self.served_bytes),
            ("plinth_registry_pushed_bytes_total", "Blob bytes received by pushes.", &self.pushed_bytes),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// The registry service: store, puller, names it answers to, events and statuses.
pub struct Registry {
    pub config: RegistryConfig,
    pub store: RegistryStore,
    pub puller: Puller,
    pub metrics: Arc<RegistryMetrics>,
    /// First path components that mean "this registry" (its own listen address etc.).
    self_names: Vec<String>,
    /// The address bound: on an unspecified address, every local `ip:port` is also this registry.
    listen: SocketAddr,
    events: broadcast::Sender<Event>,
    statuses: Arc<Mutex<HashMap<String, PullStatus>>>,
    /// Upstreams this master may connect to: the operator's (`allowed`, `insecure`) and
    /// those named by apps (posted with the API's credentials), never one a client of
    /// `:5000` names — else anyone could make the master connect anywhere.
    upstreams: Mutex<std::collections::BTreeSet<String>>,
}

impl Registry {
    /// Opens the store under `root` (normally `DATA_DIR/registry`). `listen` is the
    /// address actually bound (tests bind port 0), for the names this registry answers to.
    pub fn open(config: RegistryConfig, root: PathBuf, listen: SocketAddr) -> Result<Arc<Registry>, RegistryError> {
        let store = RegistryStore::open(root)?;
        let metrics = Arc::new(RegistryMetrics::default());
        let (events, _) = broadcast::channel(1024);
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        let credentials = match &config.docker_config {
            Some(path) => credentials::DockerCredentials::load(path)?,
            None => credentials::DockerCredentials::default(),
        };
        let puller = Puller::new(
            store.clone(),
            &config.insecure,
            credentials,
            config.max_blob_bytes,
            metrics.clone(),
            events.clone(),
            statuses.clone(),
        );
        let self_names = self_names(listen, &config.aliases);
        tracing::info!(root = %store.root().display(), names = ?self_names, insecure = ?config.insecure, "registry store opened");
        let upstreams = Mutex::new(config.allowed.iter().chain(&config.insecure).cloned().collect());
        Ok(Arc::new(Registry { config, store, puller, metrics, self_names, listen, events, statuses, upstreams }))
    }

    /// Events (`image_pull_*`) for the master's bus.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Whether an image name's registry part (`host:port`) means this registry: a name it
    /// was given, or, when it listens on every address, any address of this machine at its
    /// port. Interfaces are read at each call: addresses come and go (DHCP, init's network).
    pub fn is_self(&self, first_component: &str) -> bool {
        if self.self_names.iter().any(|n| n == first_component) {
            return true;
        }
        let Ok(named) = first_component.parse::<SocketAddr>() else { return false };
        self.listen.ip().is_unspecified() && named.port() == self.listen.port() && is_local_address(named.ip())
    }

    /// Allows pulls from the registry `image` names (called for the images of apps, which
    /// only the API's users can post).
    pub fn allow_upstream_of(&self, image: &str) {
        let Ok(reference) = ImageRef::parse(image) else { return };
        if self.is_self(reference.registry()) {
            return;
        }
        let mut upstreams = self.upstreams.lock().expect("upstream set is never poisoned");
        if upstreams.insert(reference.registry().to_string()) {
            tracing::info!(registry = %reference.registry(), "upstream registry allowed (named by an app)");
        }
    }

    /// Refuses upstreams neither the operator nor an app named.
    pub fn check_upstream(&self, registry: &str) -> Result<(), RegistryError> {
        if self.upstreams.lock().expect("upstream set is never poisoned").contains(registry) {
            Ok(())
        } else {
            Err(RegistryError::UpstreamNotAllowed { registry: registry.to_string() })
        }
    }

    /// The last pull outcome of `image` as an app names it.
    pub fn pull_status(&self, image: &str) -> Option<PullStatus> {
        let key = ImageRef::parse(image).map(|r| r.to_string()).unwrap_or_else(|_| image.to_string());
        self.statuses.lock().expect("status map is never poisoned").get(&key).cloned()
    }

    /// Starts a background pull of an app's image (shared with any pull already running).
    /// Images that name this registry itself are pushed ones: nothing to fetch.
    pub fn prefetch(self: &Arc<Self>, image: &str, force: bool) {
        let Ok(reference) = ImageRef::parse(image) else { return };
        if self.is_self(reference.registry()) {
            return;
        }
        self.allow_upstream_of(image);
        let registry = self.clone();
        tokio::spawn(async move {
            if let Err(e) = registry.puller.pull(&reference, force).await {
                tracing::warn!(image = %reference, error = %error_chain(&e), "image prefetch failed");
            }
        });
    }
}

/// `host:port` forms clients may use for this registry.
fn self_names(listen: SocketAddr, aliases: &[String]) -> Vec<String> {
    let port = listen.port();
    let mut names = vec![listen.to_string()];
    if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        names.push(format!("127.0.0.1:{port}"));
        names.push(format!("localhost:{port}"));
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(format!("{host}:{port}"));
        }
    }
    names.extend(aliases.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Whether `ip` is an address of one of this machine's interfaces.
fn is_local_address(ip: std::net::IpAddr) -> bool {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else { return false };
    addresses.filter_map(|interface| interface.address).any(|address| {
        address.as_sockaddr_in().map(|a| std::net::IpAddr::V4(a.ip())) == Some(ip)
            || address.as_sockaddr_in6().map(|a| std::net::IpAddr::V6(a.ip())) == Some(ip)
    })
}

/// Binds `config.listen` and serves the registry until the server fails.
pub async fn run(registry: Arc<Registry>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "registry serving");
    axum::serve(listener, http::router(registry)).await
}

/// Runs [`gc`] every `interval` while the registry lives.
pub fn spawn_gc(registry: &Arc<Registry>, interval: Duration) {
    let weak = Arc::downgrade(registry);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(registry) = weak.upgrade() else { return };
            if registry.puller.busy() {
                continue;
            }
            let (store, max, age) =
                (registry.store.clone(), registry.config.max_store_bytes, registry.config.max_unused_age);
            match tokio::task::spawn_blocking(move || gc(&store, max, age)).await {
                Ok(report) if report.removed > 0 => {
                    tracing::info!(removed = report.removed, freed = report.freed_bytes, "registry blobs collected")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %error_chain(&e), "registry garbage collection panicked"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_local_address_names_a_registry_listening_everywhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |listen: &str| {
            Registry::open(RegistryConfig::default(), dir.path().join(listen), listen.parse().expect("address"))
                .expect("open the registry")
        };
        let everywhere = open("0.0.0.0:5000");
        assert!(everywhere.is_self("127.0.0.1:5000"));
        assert!(everywhere.is_self("[::1]:5000") == is_local_address("::1".parse().expect("ip")));
        assert!(!everywhere.is_self("127.0.0.1:5001"), "another port is another registry");
        assert!(!everywhere.is_self("192.0.2.7:5000"), "an address of no interface here");
        assert!(!everywhere.is_self("docker.io"));
        let loopback_only = open("127.0.0.1:5000");
        assert!(loopback_only.is_self("127.0.0.1:5000"));
        assert!(!loopback_only.is_self("192.0.2.7:5000"));
    }
}
