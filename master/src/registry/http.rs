//! The distribution v2 API: reads (with pull-through), pushes, and the one place where
//! [`RegistryError`]s become the registry's JSON errors.
//!
//! Repository names contain `/`, so one wildcard route takes everything under `/v2/` and
//! the path is split on its last `/manifests/`, `/blobs/`, `/blobs/uploads`, `/tags/list`.
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::json;

use plinth_oci::manifest::{self, Parsed};
use plinth_oci::reference::names_registry;
use plinth_oci::{Digest, ImageRef};

use super::pull_error::PullErrorKind;
use super::store::{validate_tag, RepoName};
use super::{Registry, RegistryError, RegistryMetrics, FORCE_PULL_HEADER, MAX_MANIFEST_BYTES};
use crate::access::Role;

const DIGEST_HEADER: &str = "docker-content-digest";

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*rest}", any(dispatch))
        .with_state(registry)
}

/// `GET /v2/`, the ping. With credentials configured it wants valid ones: push clients
/// (skopeo, docker) send theirs only after the ping challenged them. Agents never ping.
async fn base(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let credentials = &registry.config.push_credentials;
    if !credentials.is_empty()
        && credentials.authenticate(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes)).is_err()
    {
        return RegistryError::Unauthorized.into_response();
    }
    ([("docker-distribution-api-version", "registry/2.0")], Json(json!({}))).into_response()
}

impl RegistryError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use RegistryError as E;
        match self {
            E::NameInvalid { .. } => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            E::TagInvalid { .. } => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            E::ManifestUnknown { .. } => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            E::BlobUnknown { .. } => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            E::UploadUnknown { .. } => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            E::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            E::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            E::ManifestBlobUnknown { .. } => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            E::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            E::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            E::Body(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            E::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            E::Denied | E::UpstreamNotAllowed { .. } => (StatusCode::FORBIDDEN, "DENIED"),
            // Agents only need to know the image is not to be had, and why (the message).
            E::Pull(e) => match e.kind {
                PullErrorKind::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
                PullErrorKind::Storage => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
                _ => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            },
            E::Io { .. } | E::Oci(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = plinth_protocol::error_chain(&self).to_string();
        let detail = match &self {
            RegistryError::Pull(e) => json!({"image": e.image, "upstream": e.message}),
            _ => serde_json::Value::Null,
        };
        if status.is_server_error() {
            tracing::error!(error = %message, "registry request failed");
        } else {
            tracing::debug!(error = %message, code, "registry request refused");
        }
        let mut response =
            (status, Json(json!({"errors": [{"code": code, "message": message, "detail": detail}]}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // What makes docker and skopeo send the credentials they were given.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="plinth""#));
        }
        response
    }
}

/// Bodies of refused pushes are read up to this much, so the client reads the refusal.
const REFUSED_BODY_DRAIN: usize = 1 << 20;

/// Pushes need an admin once the master has credentials; pulls stay open for agents.
fn check_push(registry: &Registry, method: &Method, headers: &HeaderMap) -> Result<()> {
    let credentials = &registry.config.push_credentials;
    if credentials.is_empty() || Role::needed_for(method) == Role::ReadOnly {
        return Ok(());
    }
    match credentials.authenticate(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes)) {
        Ok(identity) if identity.role == Role::Admin => Ok(()),
        Ok(identity) => {
            tracing::info!(user = %identity.name, "registry push refused: read-only credentials");
            Err(RegistryError::Denied)
        }
        Err(refusal) => {
            tracing::debug!(?refusal, "registry push refused: no valid credentials");
            Err(RegistryError::Unauthorized)
        }
    }
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

async fn dispatch(
    State(registry): State<Arc<Registry>>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refused) = check_push(&registry, &method, &headers) {
        let _ = axum::body::to_bytes(body, REFUSED_BODY_DRAIN).await;
        return refused.into_response();
    }
    let query = Query::parse(query.as_deref());
    let result = route(&registry, &method, &rest, &query, &headers, body).await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route(
    registry: &Arc<Registry>,
    method: &Method,
    rest: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    if rest == "_catalog" {
        return catalog(registry);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return tags(registry, name);
    }
    if let Some(at) = rest.rfind("/blobs/uploads") {
        let (name, tail) = (&rest[..at], &rest[at + "/blobs/uploads".len()..]);
        let upload = tail.trim_start_matches('/');
        return uploads(registry, method, name, upload, query, body).await;
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return match *method {
            Method::GET | Method::HEAD => get_manifest(registry, method, name, reference, headers).await,
            Method::PUT => put_manifest(registry, name, reference, headers, body).await,
            _ => Err(RegistryError::Unsupported(format!("{method} on manifests"))),
        };
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return match *method {
            Method::GET | Method::HEAD => get_blob(registry, method, name, digest).await,
            _ => Err(RegistryError::Unsupported(format!("{method} on blobs"))),
        };
    }
    Err(RegistryError::ManifestUnknown { name: rest.to_string(), reference: String::new() })
}

/// The few query parameters the API uses.
#[derive(Default)]
struct Query {
    digest: Option<String>,
    mount: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in raw.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.replace("%3A", ":").replace("%3a", ":");
            match key {
                "digest" => q.digest = Some(value),
                "mount" => q.mount = Some(value),
                _ => {}
            }
        }
        q
    }
}

fn parse_digest(raw: &str) -> Result<Digest> {
    raw.parse().map_err(|e: plinth_oci::OciError| RegistryError::DigestInvalid(e.to_string()))
}

/// Where a repository name points.
enum Source {
    /// Pushed here: `demo/app`, or `<this registry>/demo/app`.
    Local(RepoName),
    /// Mirrored from an upstream registry: `docker.io/library/busybox`.
    Upstream(RepoName),
}

fn source(registry: &Registry, name: &str) -> Result<Source> {
    let repo = RepoName::parse(name)?;
    match repo.split_first() {
        Some((first, rest)) if names_registry(first) => {
            if registry.is_self(first) {
                Ok(Source::Local(RepoName::parse(rest)?))
            } else {
                Ok(Source::Upstream(repo))
            }
        }
        _ => Ok(Source::Local(repo)),
    }
}

/// Pushes go to local repositories only (a push to `docker.io/...` here is a mistake).
fn local_repo(registry: &Registry, name: &str) -> Result<RepoName> {
    match source(registry, name)? {
        Source::Local(repo) => Ok(repo),
        Source::Upstream(repo) => Err(RegistryError::NameInvalid {
            name: repo.to_string(),
            reason: "names another registry; this registry only mirrors it (push to a name without a registry)".into(),
        }),
    }
}

fn manifest_response(
    method: &Method,
    registry: &Registry,
    digest: &Digest,
    bytes: Vec<u8>,
    media_type: &str,
) -> Response {
    let len = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        RegistryMetrics::add(&registry.metrics.served_bytes, len as u64);
        Body::from(bytes)
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(DIGEST_HEADER, header_value(digest.as_str()));
    h.insert(header::ETAG, header_value(&format!("\"{digest}\"")));
    response
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn get_manifest(
    registry: &Arc<Registry>,
    method: &Method,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
) -> Result<Response> {
    let source = source(registry, name)?;
    let unknown = || RegistryError::ManifestUnknown { name: name.to_string(), reference: reference.to_string() };
    let by_digest = reference.starts_with("sha256:") || reference.contains(':');
    if by_digest {
        let digest = parse_digest(reference)?;
        if let Ok(bytes) = registry.store.blobs().read(&digest) {
            if manifest::parse(&bytes, None).is_ok() {
                let media_type = manifest::media_type_of(&bytes);
                return Ok(manifest_response(method, registry, &digest, bytes, media_type));
            }
        }
    } else {
        validate_tag(reference)?;
    }
    let (digest, media_type) = match source {
        Source::Local(repo) => {
            if by_digest {
                return Err(unknown());
            }
            let record = registry.store.tag(&repo, reference).ok_or_else(unknown)?;
            (record.digest, record.media_type)
        }
        Source::Upstream(repo) => {
            let separator = if by_digest { '@' } else { ':' };
            let image = ImageRef::parse(&format!("{repo}{separator}{reference}"))
                .map_err(|e| RegistryError::NameInvalid { name: name.to_string(), reason: e.to_string() })?;
            registry.check_upstream(image.registry())?;
            let force = headers
                .get(FORCE_PULL_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            let pulled = registry.puller.pull(&image, force).await?;
            (pulled.digest, pulled.media_type)
        }
    };
    let bytes = registry.store.blobs().read(&digest).map_err(|_| unknown())?;
    Ok(manifest_response(method, registry, &digest, bytes, &media_type))
}

async fn get_blob(registry: &Arc<Registry>, method: &Method, name: &str, digest: &str) -> Result<Response> {
    RepoName::parse(name)?;
    let digest = parse_digest(digest)?;
    let blobs = registry.store.blobs();
    if !blobs.contains(&digest) && !registry.puller.wait_blob(&digest).await {
        return Err(RegistryError::BlobUnknown { digest: digest.to_string() });
    }
    let path = blobs.path(&digest);
    let file =
        tokio::fs::File::open(&path).await.map_err(|_| RegistryError::BlobUnknown { digest: digest.to_string() })?;
    let len = file.metadata().await.map_err(|source| RegistryError::Io { path: path.clone(), source })?.len();
    blobs.touch(&digest);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let metrics = registry.metrics.clone();
        let stream = futures::stream::unfold(file, move |mut file| {
            let metrics = metrics.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 64 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        RegistryMetrics::add(&metrics.served_bytes, n as u64);
                        Some((Ok::<_, std::io::Error>(bytes_of(buf)), file))
                    }
                    Err(e) => Some((Err(e), file)),
                }
            }
        });
        Body::from_stream(stream)
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(DIGEST_HEADER, header_value(digest.as_str()));
    Ok(response)
}

fn bytes_of(buf: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(buf)
}

fn tags(registry: &Registry, name: &str) -> Result<Response> {
    let repo = match source(registry, name)? {
        Source::Local(repo) | Source::Upstream(repo) => repo,
    };
    let tags = registry.store.tags(&repo);
    if tags.is_empty() {
        return Err(RegistryError::ManifestUnknown { name: name.to_string(), reference: "(any tag)".into() });
    }
    Ok(Json(json!({"name": name, "tags": tags})).into_response())
}

fn catalog(registry: &Registry) -> Result<Response> {
    let repos: Vec<String> = registry.store.repositories().iter().map(|r| r.to_string()).collect();
    Ok(Json(json!({"repositories": repos})).into_response())
}

// ---- pushes ----

fn upload_path(registry: &Registry, upload: &str) -> Result<PathBuf> {
    let id = uuid::Uuid::parse_str(upload).map_err(|_| RegistryError::UploadUnknown { upload: upload.to_string() })?;
    Ok(registry.store.uploads_dir().join(id.to_string()))
}

fn upload_response(status: StatusCode, name: &str, upload: &str, size: u64) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{name}/blobs/uploads/{upload}")));
    h.insert("docker-upload-uuid", header_value(upload));
    h.insert(header::RANGE, header_value(&format!("0-{}", size.saturating_sub(1))));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::CREATED;
    let h = response.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{name}/blobs/{digest}")));
    h.insert(DIGEST_HEADER, header_value(digest.as_str()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

async fn uploads(
    registry: &Arc<Registry>,
    method: &Method,
    name: &str,
    upload: &str,
    query: &Query,
    body: Body,
) -> Result<Response> {
    local_repo(registry, name)?;
    match (method.clone(), upload.is_empty()) {
        (Method::POST, true) => {
            if let Some(mount) = &query.mount {
                let digest = parse_digest(mount)?;
                if registry.store.blobs().contains(&digest) {
                    return Ok(blob_created(name, &digest));
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            let path = registry.store.uploads_dir().join(&id);
            std::fs::File::create(&path).map_err(|source| RegistryError::Io { path: path.clone(), source })?;
            if let Some(digest) = &query.digest {
                // Monolithic upload: POST with the digest and the whole body.
                return finish_upload(registry, name, &path, digest, body).await;
            }
            Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
        }
        (Method::PATCH, false) => {
            let path = upload_path(registry, upload)?;
            let size = append(registry, &path, body).await?;
            Ok(upload_response(StatusCode::ACCEPTED, name, upload, size))
        }
        (Method::PUT, false) => {
            let path = upload_path(registry, upload)?;
            let digest =
                query.digest.clone().ok_or_else(|| RegistryError::DigestInvalid("PUT needs ?digest=".into()))?;
            finish_upload(registry, name, &path, &digest, body).await
        }
        (Method::GET, false) => {
            let path = upload_path(registry, upload)?;
            let size = std::fs::metadata(&path)
                .map_err(|_| RegistryError::UploadUnknown { upload: upload.to_string() })?
                .len();
            Ok(upload_response(StatusCode::NO_CONTENT, name, upload, size))
        }
        (Method::DELETE, false) => {
            let path = upload_path(registry, upload)?;
            std::fs::remove_file(&path).map_err(|_| RegistryError::UploadUnknown { upload: upload.to_string() })?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(RegistryError::Unsupported(format!("{method} on blob uploads"))),
    }
}

/// Appends a request body to an upload, within the blob size cap; returns the new size.
async fn append(registry: &Registry, path: &PathBuf, body: Body) -> Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|_| RegistryError::UploadUnknown { upload: path.display().to_string() })?;
    let mut size = file.metadata().map_err(|source| RegistryError::Io { path: path.clone(), source })?.len();
    let limit = registry.config.max_blob_bytes;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(RegistryError::TooLarge { limit });
        }
        file.write_all(&chunk).map_err(|source| RegistryError::Io { path: path.clone(), source })?;
        RegistryMetrics::add(&registry.metrics.pushed_bytes, chunk.len() as u64);
    }
    Ok(size)
}

/// Appends the last chunk, then moves the upload into the store through the verifying
/// writer; the upload file is gone afterwards whatever happened.
async fn finish_upload(registry: &Registry, name: &str, path: &PathBuf, digest: &str, body: Body) -> Result<Response> {
    let result = async {
        let digest = parse_digest(digest)?;
        append(registry, path, body).await?;
        let (store, source_path, target) = (registry.store.blobs().clone(), path.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(&source_path)
                .map_err(|source| RegistryError::Io { path: source_path.clone(), source })?;
            store.put_verified(&target, None, &mut file).map_err(|e| match e {
                plinth_oci::OciError::DigestMismatch { .. } | plinth_oci::OciError::SizeMismatch { .. } => {
                    RegistryError::DigestInvalid(e.to_string())
                }
                other => RegistryError::Oci(other),
            })
        })
        .await
        .map_err(|e| RegistryError::Body(format!("upload task failed: {e}")))??;
        Ok::<_, RegistryError>(digest)
    }
    .await;
    let _ = std::fs::remove_file(path);
    let digest = result?;
    tracing::debug!(repository = name, digest = %digest, "blob pushed");
    Ok(blob_created(name, &digest))
}

async fn put_manifest(
    registry: &Arc<Registry>,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let repo = local_repo(registry, name)?;
    let pinned = if reference.contains(':') { Some(parse_digest(reference)?) } else { None };
    if pinned.is_none() {
        validate_tag(reference)?;
    }
    let bytes = axum::body::to_bytes(body, usize::try_from(MAX_MANIFEST_BYTES).unwrap_or(usize::MAX))
        .await
        .map_err(|_| RegistryError::TooLarge { limit: MAX_MANIFEST_BYTES })?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(&bytes, content_type).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
    let referenced: Vec<_> = match &parsed {
        Parsed::Image(m) => std::iter::once(m.config()).chain(m.layers().iter()).cloned().collect(),
        Parsed::Index(index) => index.manifests().clone(),
    };
    for descriptor in &referenced {
        let digest =
            manifest::descriptor_digest(descriptor).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        if !registry.store.blobs().contains(&digest) {
            return Err(RegistryError::ManifestBlobUnknown { digest: digest.to_string() });
        }
    }
    let digest = Digest::of(&bytes);
    if let Some(pinned) = &pinned {
        if pinned != &digest {
            return Err(RegistryError::DigestInvalid(format!("the manifest is {digest}, not {pinned}")));
        }
    }
    registry.store.blobs().put(&bytes)?;
    let media_type = match content_type.map(|c| c.split(';').next().unwrap_or(c).trim()) {
        Some(c) if manifest::ACCEPTED.contains(&c) => c.to_string(),
        _ => manifest::media_type_of(&bytes).to_string(),
    };
    if pinned.is_none() {
        registry.store.set_tag(&repo, reference, &digest, &media_type)?;
    }
    tracing::info!(repository = %repo, reference, digest = %digest, "manifest pushed");
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::CREATED;
    let h = response.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{name}/manifests/{digest}")));
    h.insert(DIGEST_HEADER, header_value(digest.as_str()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(response)
}
