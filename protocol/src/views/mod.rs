//! Marathon's response bodies, field for field: what `/v2/...` answers, what `/v2/events`
//! and the callback subscribers receive, and `/metrics`. Each type has exactly the fields
//! of Marathon 1.x's published API definitions (the RAML types of Marathon's repository),
//! no more, so strict clients (typed models that refuse unknown fields) parse them;
//! Plinth's own additions live in [`plinth`] (`/v1/...`). Fields Marathon always writes
//! are plain fields, fields it writes only when set are `Option`s left out when `None`.
//!
//! The shapes follow Marathon 1.10's RAML, except where that shape ended or breaks the
//! widely used clients and an earlier 1.x shape does not:
//! - event subscriptions (`/v2/eventSubscriptions`, `event_subscriber` in `/v2/info`)
//!   are Marathon 1.4's: Marathon 1.5 dropped HTTP callbacks, Plinth keeps them;
//! - deployment plans in events carry `original` and `target` (Marathon 1.4), without
//!   which the Python `marathon` client cannot read any deployment event;
//! - queue items have no `role` (Marathon 1.0-1.8), which that client refuses.
//!
//! `protocol/tests/fixtures/marathon/*.json` keeps every type's field set and value types
//! as golden fixtures; the contract tests (here and in the master) compare them.
//!
//! The records behind these views (the core's apps, tasks, deployments) are turned into
//! them by the master (`master/src/api/views.rs`) and, for events, by the scheduler.
pub mod app;
pub mod deployment;
pub mod events;
pub mod group;
pub mod images;
pub mod info;
pub mod metrics;
pub mod plinth;
pub mod queue;
pub mod task;
pub mod task_stats;

use serde::{Deserialize, Serialize};

pub use app::{App, AppInfo, AppList, AppSingle, VersionList};
pub use deployment::{DeploymentAction, DeploymentActionInfo, DeploymentInfo, DeploymentResult, DeploymentStep};
pub use group::GroupInfo;
pub use info::{LeaderInfo, MarathonInfo};
pub use queue::{Queue, QueueItem};
pub use task::{Task, TaskFailure, TaskList, TaskSingle};

/// `{"id": ...}`: a deployment named by an app (`deployments` of an app, of a 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifiable {
    pub id: String,
}

/// Marathon's 409 for an app a deployment holds: the message and the deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedError {
    pub message: String,
    pub deployments: Vec<Identifiable>,
}

/// `GET /v2/eventSubscriptions` (Marathon 1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscriptions {
    pub callback_urls: Vec<String>,
}

/// A whole number of seconds (or any whole count) Plinth keeps as `f64`, written as the
/// JSON integer Marathon's integer fields hold (`1`, not `1.0`).
pub fn whole(value: f64) -> i64 {
    // why: float-to-int `as` saturates (NaN is 0); these are validated, small values.
    #[allow(clippy::cast_possible_truncation)]
    let n = value.round() as i64;
    n
}
