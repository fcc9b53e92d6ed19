//! Plinth's `/v1/images` (not `/v2`: that is Marathon's, and the OCI registry's on
//! `:5000`): the master registry's images for `plinth image list|pull|rm`.
//! - `GET /v1/images`: every tag with digest, size, when pulled and last used, source,
//!   and the apps whose image it is;
//! - `POST /v1/images` `{"image", "forcePull"}`: pulls into the cache and answers when the
//!   image is complete (progress goes out as `image_pull_*` events on `/v1/events`);
//! - `DELETE /v1/images/{image}[?force=true]`: removes a tag and the blobs only it
//!   reached; refused (409) while an app that wants instances names it, unless `force`.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};

use plinth_oci::ImageRef;
use plinth_protocol::views::images::{Image, ImageList, PullRequest, Pulled, Removed};
use plinth_protocol::{Timestamp, Violation};
use plinth_scheduler::Core;

use super::{Body, Params};
use crate::error::ApiError;
use crate::registry::{PullErrorKind, RepoName, StoredImage};
use crate::shell::Master;

pub fn routes() -> Router<Arc<Master>> {
    Router::new().route("/v1/images", get(list).post(pull)).route("/v1/images/{*image}", delete(remove))
}

/// An app's image as the store names it, and whether the app wants tasks of it.
struct AppImage {
    app: String,
    repository: RepoName,
    tag: Option<String>,
    digest: Option<String>,
    wanted: bool,
}

fn app_images(master: &Master, core: &Core) -> Vec<AppImage> {
    core.apps()
        .filter_map(|app| {
            let image = app.definition.container.as_ref()?.docker.as_ref()?.image.clone();
            let reference = ImageRef::parse(&image).ok()?;
            Some(AppImage {
                app: app.id.to_string(),
                repository: master.registry.stored_name(&reference).ok()?,
                tag: reference.tag().map(str::to_string),
                digest: reference.digest().map(ToString::to_string),
                wanted: app.definition.instances > 0 || !core.app_tasks(&app.id).is_empty(),
            })
        })
        .collect()
}

fn users<'a>(image: &'a StoredImage, apps: &'a [AppImage]) -> impl Iterator<Item = &'a AppImage> {
    apps.iter().filter(move |a| {
        a.repository == image.repository
            && match &a.digest {
                Some(digest) => *digest == image.record.digest.to_string(),
                None => a.tag.as_deref() == Some(image.tag.as_str()),
            }
    })
}

fn iso(time: std::time::SystemTime) -> String {
    let millis = time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX)).to_iso()
}

fn view(image: &StoredImage, apps: &[AppImage]) -> Image {
    Image {
        repository: image.repository.to_string(),
        tag: image.tag.clone(),
        digest: image.record.digest.to_string(),
        size_bytes: image.size,
        pulled_at: Timestamp::from_millis(i64::try_from(image.record.pulled_at.saturating_mul(1000)).unwrap_or(0))
            .to_iso(),
        last_used: image.last_used.map(iso),
        source: image.upstream.clone().unwrap_or_else(|| "pushed".to_string()),
        used_by: users(image, apps).map(|a| a.app.clone()).collect(),
    }
}

/// Runs a store read off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal(format!("registry store task failed: {e}")))
}

async fn list(State(master): State<Arc<Master>>) -> Result<Json<ImageList>, ApiError> {
    let registry = master.registry.clone();
    let stored = blocking(move || registry.images()).await?;
    let guard = master.read().await;
    let apps = app_images(&master, &guard.core);
    Ok(Json(ImageList { images: stored.iter().map(|image| view(image, &apps)).collect() }))
}

fn invalid_image(error: impl ToString) -> ApiError {
    ApiError::Invalid(vec![Violation { path: "/image".into(), errors: vec![error.to_string()] }])
}

async fn pull(State(master): State<Arc<Master>>, body: Body) -> Result<Json<Pulled>, ApiError> {
    let request: PullRequest = body.json()?;
    let reference = ImageRef::parse(&request.image).map_err(invalid_image)?;
    if master.registry.is_self(reference.registry()) {
        return Err(invalid_image(format!(
            "{reference} names this registry: pushed images are stored here already (see GET /v1/images)"
        )));
    }
    let repository = master.registry.stored_name(&reference).map_err(invalid_image)?;
    tracing::info!(image = %reference, force = request.force_pull, "image pull asked for");
    // Asked for through the API (with its credentials), as an app would name it.
    master.registry.allow_upstream_of(&request.image);
    let pulled = master.registry.puller.pull(&reference, request.force_pull).await.map_err(|e| match e.kind {
        PullErrorKind::NotFound => ApiError::NotFound(e.to_string()),
        PullErrorKind::Storage => ApiError::Internal(e.to_string()),
        PullErrorKind::Unauthorized | PullErrorKind::Unreachable | PullErrorKind::Invalid => {
            ApiError::BadGateway(e.to_string())
        }
    })?;
    let registry = master.registry.clone();
    let tag = reference.tag().map(str::to_string);
    let (lookup_repo, lookup_tag) = (repository.clone(), tag.clone());
    let stored = blocking(move || lookup_tag.and_then(|tag| registry.image(&lookup_repo, &tag))).await?;
    let guard = master.read().await;
    let apps = app_images(&master, &guard.core);
    let image = match stored {
        Some(stored) => view(&stored, &apps),
        // Pinned by digest: cached, but no tag names it.
        None => Image {
            repository: repository.to_string(),
            tag: String::new(),
            digest: pulled.digest.to_string(),
            size_bytes: 0,
            pulled_at: Timestamp::now().to_iso(),
            last_used: None,
            source: reference.registry().to_string(),
            used_by: Vec::new(),
        },
    };
    Ok(Json(Pulled { image, downloaded_bytes: pulled.downloaded }))
}

async fn remove(
    State(master): State<Arc<Master>>,
    Path(raw): Path<String>,
    params: Params,
) -> Result<Json<Removed>, ApiError> {
    let force = params.flag("force")?;
    let reference = ImageRef::parse(&raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Some(tag) = reference.tag().map(str::to_string) else {
        return Err(ApiError::BadRequest(format!(
            "{reference}: name the tag to remove (an image's blobs go with the last tag that reaches them)"
        )));
    };
    let repository = master.registry.stored_name(&reference).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let registry = master.registry.clone();
    let (repo, wanted_tag) = (repository.clone(), tag.clone());
    let stored = blocking(move || registry.image(&repo, &wanted_tag)).await?.ok_or_else(|| {
        ApiError::NotFound(format!("no image {repository}:{tag} in the master's registry (GET /v1/images lists them)"))
    })?;
    {
        let guard = master.read().await;
        let apps = app_images(&master, &guard.core);
        let using: Vec<String> = users(&stored, &apps).filter(|a| a.wanted).map(|a| a.app.clone()).collect();
        if !using.is_empty() && !force {
            return Err(ApiError::Conflict(format!(
                "{repository}:{tag} is the image of {}, which want(s) tasks of it; scale or destroy them first, \
                 or remove it anyway with force=true (their next launches pull it again)",
                using.join(", ")
            )));
        }
    }
    let registry = master.registry.clone();
    let (repo, removed_tag) = (repository.clone(), tag.clone());
    let removed = blocking(move || registry.remove_tag(&repo, &removed_tag)).await?.map_err(|e| match e {
        crate::registry::RegistryError::ManifestUnknown { .. } => ApiError::NotFound(e.to_string()),
        e => ApiError::Internal(plinth_protocol::error_chain(&e).to_string()),
    })?;
    Ok(Json(Removed {
        repository: repository.to_string(),
        tag,
        digest: removed.digest.to_string(),
        blobs_removed: removed.blobs_removed,
        freed_bytes: removed.freed_bytes,
    }))
}
