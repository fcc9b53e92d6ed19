//! `/v2/deployments`: list running deployments, roll one back or forget it (`force`).
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use plinth_protocol::views::DeploymentInfo;
use plinth_protocol::DeploymentId;

use super::{views, Params};
use crate::error::ApiError;
use crate::shell::Master;

/// `GET /v2/deployments`.
pub async fn list(State(master): State<Arc<Master>>) -> Result<Response, ApiError> {
    master
        .render(|core| {
            let list: Vec<DeploymentInfo> = core.deployments().map(|d| views::deployment(core, d)).collect();
            Ok(Json(list).into_response())
        })
        .await
}

/// `DELETE /v2/deployments/{id}`: without `force` a rollback deployment starts (200 with
/// its id); with `force=true` the deployment is just dropped (202).
pub async fn cancel(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let id = DeploymentId::new(id);
    let force = params.flag("force")?;
    let rollback = master.command(|core, now| core.cancel_deployment(&id, force, now)).await?;
    tracing::info!(deployment_id = %id, force, "deployment cancelled");
    Ok(match rollback {
        Some((deployment, version)) => Json(views::deployment_result(&deployment, &version)).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    })
}
