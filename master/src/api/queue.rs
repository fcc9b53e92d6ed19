//! `/v2/queue`: apps waiting for launches and what the last offers said (Plinth's readable
//! reasons and image pulls are on `/v1/queue`).
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use plinth_protocol::views::Queue;
use plinth_protocol::Timestamp;

use super::{parse_app_id, views, Params};
use crate::error::ApiError;
use crate::shell::Master;

/// `GET /v2/queue[?embed=lastUnusedOffers]`.
pub async fn list(State(master): State<Arc<Master>>, params: Params) -> Json<Queue> {
    let offers = params.all("embed").iter().any(|e| e == "lastUnusedOffers");
    let guard = master.read().await;
    let core = &guard.core;
    let queue = core.queue(Timestamp::now()).iter().filter_map(|e| views::queue_item(core, e, offers)).collect();
    Json(Queue { queue })
}

/// `DELETE /v2/queue/{appId}/delay`: launch again now instead of after the backoff.
pub async fn reset_delay(State(master): State<Arc<Master>>, Path(rest): Path<String>) -> Result<Response, ApiError> {
    let Some(raw_id) = rest.trim_end_matches('/').strip_suffix("/delay") else {
        return Err(ApiError::NotFound(format!("no such queue resource: /v2/queue/{rest}")));
    };
    let id = parse_app_id(raw_id)?;
    master.command(|core, _| core.reset_delay(&id)).await?;
    tracing::info!(app_id = %id, "launch delay reset");
    Ok(StatusCode::NO_CONTENT.into_response())
}
