//! Who leads, as this master sees it ([`Role`]), Marathon's leader headers, and the 503
//! of a request that needs the leader. Shared by the election (`leader.rs`), the
//! proxy to the leader (`leader_proxy.rs`) and the core's shell, so it depends on none.
use plinth_protocol::Timestamp;
use plinth_scheduler::Event;

use crate::error::ApiError;

/// Who leads, as this master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// redb: the only master, always leading.
    Single,
    /// Won the election; its lease is alive.
    Leading,
    /// Another master leads (its URL), or no one does yet.
    Following(Option<String>),
}

impl Role {
    pub fn leads(&self) -> bool {
        matches!(self, Role::Single | Role::Leading)
    }
}

pub const VIA: &str = "x-marathon-via";
pub const LEADER: &str = "x-marathon-leader";

/// The 503 of a request that needs the leader when this master is not it.
pub fn not_leading(role: &Role) -> ApiError {
    match role {
        Role::Following(Some(leader)) => {
            ApiError::Unavailable(format!("this master is not the leader ({leader} is); retry there or here"))
        }
        _ => ApiError::Unavailable(
            "no master is the leader at the moment (an election is under way, or etcd cannot be reached); \
             retry in a few seconds"
                .into(),
        ),
    }
}

/// `host:port` of a master's URL.
pub fn address_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/')
}

pub fn leader_event(event_type: &str, url: &str) -> Event {
    Event::new(event_type, Timestamp::now(), serde_json::json!({ "leader": address_of(url) }))
}
