//! The cgroup limits from the app's `cpus` and `mem` (and the device rules).
use plinth_protocol::AppDefinition;
use serde_json::{json, Value};

use super::security;

const CFS_PERIOD_US: u64 = 100_000;
const MIN_CFS_QUOTA_US: i64 = 1_000;

/// The spec's `linux.resources`: CPU shares and quota from `cpus`, a memory limit from
/// `mem`, the device cgroup.
pub(super) fn resources(app: &AppDefinition, privileged: bool) -> Value {
    let mut resources = json!({});
    let cpus = app.cpus.max(0.0);
    if cpus > 0.0 {
        // why: float-to-int `as` saturates; cpus is validated finite and positive.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (shares, quota) = (
            ((cpus * 1024.0).round() as u64).max(2),
            ((cpus * CFS_PERIOD_US as f64).round() as i64).max(MIN_CFS_QUOTA_US),
        );
        resources["cpu"] = json!({
            "shares": shares,
            "quota": quota,
            "period": CFS_PERIOD_US,
        });
    }
    if app.mem > 0.0 {
        // why: float-to-int `as` saturates; mem is validated finite.
        #[allow(clippy::cast_possible_truncation)]
        let limit = (app.mem * 1024.0 * 1024.0) as i64;
        resources["memory"] = json!({"limit": limit});
    }
    resources["devices"] = security::devices(privileged);
    resources
}
