//! The drain record of a task taken out of the service table before its kill, and how
//! long its drain may last. Kept apart from `services.rs` so the core's state can hold
//! drains without depending on the service table's code.
use std::sync::Arc;

use plinth_protocol::marathon::lb_labels::DRAIN_SECONDS_LABEL;
use plinth_protocol::AppDefinition;

/// A task taken out of the service table before its kill.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    /// The first table generation without it (`None` until the table is next refreshed).
    pub generation: Option<u64>,
    /// The definition it runs, kept for its desired state even when the app is deleted.
    pub definition: Arc<AppDefinition>,
}

/// An app's drain timeout: its `PLINTH_DRAIN_SECONDS` label (validated by the API), else the default.
pub(crate) fn drain_timeout_ms(def: &AppDefinition, default_ms: i64) -> i64 {
    match def.labels.get(DRAIN_SECONDS_LABEL).and_then(|v| v.trim().parse::<f64>().ok()) {
        // why: float-to-int `as` saturates; the value is checked finite and non-negative.
        #[allow(clippy::cast_possible_truncation)]
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => (seconds * 1000.0) as i64,
        _ => default_ms,
    }
}
