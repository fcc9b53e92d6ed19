//! What an event stream sends: the `event_type` filter and Marathon's types only
//! (`/v2/events`) or all (`/v1/events`), and one event as SSE. Shared by the streams a
//! master serves from its own bus (`events.rs`) and those it relays (`event_relay.rs`).
use axum::response::sse::Event as SseEvent;

use plinth_protocol::views::events::is_marathon_event;
use plinth_scheduler::Event;

use super::Params;

pub(crate) fn sse(event: &Event) -> SseEvent {
    SseEvent::default().event(event.event_type.clone()).data(event.payload.to_string())
}

/// Which events a stream passes: Marathon's types only (`/v2/events`) or all, and the
/// `event_type` filter.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub(crate) marathon_only: bool,
    types: Vec<String>,
}

impl Selection {
    pub(crate) fn of(params: &Params, marathon_only: bool) -> Selection {
        Selection { marathon_only, types: params.all("event_type") }
    }

    pub(crate) fn passes(&self, event: &Event) -> bool {
        (!self.marathon_only || is_marathon_event(&event.event_type))
            && (self.types.is_empty() || self.types.iter().any(|t| t == &event.event_type))
    }
}
