//! `/v2/queue`: apps waiting for launches and why offers were declined.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use plinth_protocol::Timestamp;

use super::{app_json, parse_app_id, Embed};
use crate::error::ApiError;
use crate::shell::Master;
use plinth_scheduler::{Core, QueueEntry};

/// Marathon's decline reasons, always listed so clients see zeros too.
const REASONS: [&str; 10] = [
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
];

fn iso(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_iso()))
}

/// One queue entry in Marathon's shape, plus `reasons`: readable sentences saying why
/// the app is not (fully) running.
pub fn entry_json(core: &Core, entry: &QueueEntry) -> Value {
    let stats = &entry.stats;
    let mut summary: Vec<Value> = REASONS
        .iter()
        .map(|r| {
            let declined = stats.last_round.get(*r).map_or(0, |(n, _)| *n);
            json!({"reason": r, "declined": declined, "processed": stats.last_round_processed})
        })
        .collect();
    for (reason, (declined, _)) in &stats.last_round {
        if !REASONS.contains(&reason.as_str()) {
            summary.push(json!({"reason": reason, "declined": declined, "processed": stats.last_round_processed}));
        }
    }
    // The core says why (declines, backoff, dependencies); only an empty round needs words here.
    let mut reasons: Vec<String> = stats.last_round.values().map(|(_, message)| message.clone()).collect();
    if stats.last_round.is_empty() {
        let active = core.agents().filter(|a| a.record.active && !a.record.draining).count();
        reasons.push(if active == 0 {
            "no active agents: nothing to offer".to_string()
        } else {
            "no offers processed yet".to_string()
        });
    }
    let app = core
        .app(&entry.app_id)
        .map_or(Value::Null, |a| app_json(core, a, Embed { counts: true, deployments: true, ..Default::default() }));
    // why: a whole number of seconds from milliseconds, far inside i64.
    #[allow(clippy::cast_possible_truncation)]
    let time_left_seconds = (entry.delay_left_ms.max(0) as f64 / 1000.0).ceil() as i64;
    json!({
        "count": entry.count,
        "delay": {
            "timeLeftSeconds": time_left_seconds,
            "overdue": entry.delay_left_ms <= 0,
        },
        "since": entry.since.to_iso(),
        "role": "*",
        "app": app,
        "processedOffersSummary": {
            "processedOffersCount": stats.processed,
            "unusedOffersCount": stats.unused,
            "lastUnusedOfferAt": iso(stats.last_unused_at),
            "lastUsedOfferAt": iso(stats.last_used_at),
            "rejectSummaryLastOffers": summary,
        },
        "lastUnusedOffers": [],
        "reasons": reasons,
    })
}

/// Adds `lastImagePull` for apps with a Docker image, and puts a failed pull first
/// among the reasons: no offer can help an app whose image cannot be had.
fn add_image_pull(master: &Master, core: &Core, entry: &QueueEntry, item: &mut Value) {
    let image = core
        .app(&entry.app_id)
        .and_then(|a| a.definition.container.as_ref())
        .and_then(|c| c.docker.as_ref())
        .map(|d| d.image.clone());
    let Some(status) = image.and_then(|image| master.registry.pull_status(&image)) else { return };
    if status.state == "failed" {
        let message = format!("image pull failed: {}", status.message.clone().unwrap_or_default());
        if let Some(reasons) = item.get_mut("reasons").and_then(Value::as_array_mut) {
            reasons.insert(0, json!(message));
        }
    }
    item["lastImagePull"] = json!(status);
}

/// `GET /v2/queue`.
pub async fn list(State(master): State<Arc<Master>>) -> Json<Value> {
    let guard = master.read().await;
    let core = &guard.core;
    let now = Timestamp::now();
    let entries = core.queue(now);
    let queue: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut item = entry_json(core, e);
            add_image_pull(&master, core, e, &mut item);
            item
        })
        .collect();
    Json(json!({"queue": queue}))
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
