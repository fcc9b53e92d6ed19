//! An event's JSON body, built on first use: most events (a status update per task
//! change) have nobody listening, and the core should not spend its time building JSON
//! no one reads. Reading the body (it derefs to a [`Value`]) builds it once; the typed
//! body stays readable without JSON ([`Payload::body`]).
use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

use plinth_protocol::views::events::EventBody;
use plinth_protocol::Timestamp;

/// A typed body waiting to be rendered.
trait Pending: Send + Sync {
    fn render(&self) -> Value;
    fn as_any(&self) -> &dyn Any;
}

struct Typed<E> {
    body: E,
    at: Timestamp,
}

impl<E: EventBody + Send + Sync + 'static> Pending for Typed<E> {
    fn render(&self) -> Value {
        // A body of plain fields always serializes; an empty object would only drop fields.
        let mut payload = serde_json::to_value(&self.body).unwrap_or_else(|_| json!({}));
        stamp(&mut payload, E::TYPE, self.at);
        payload
    }
    fn as_any(&self) -> &dyn Any {
        &self.body
    }
}

/// Puts `eventType` and `timestamp` into a body, as every Marathon event has them.
pub(crate) fn stamp(payload: &mut Value, event_type: &str, at: Timestamp) {
    payload["eventType"] = json!(event_type);
    payload["timestamp"] = json!(at.to_iso());
}

/// The full JSON body of an event, including `eventType` and `timestamp`.
#[derive(Clone, Default)]
pub struct Payload {
    json: OnceLock<Value>,
    pending: Option<Arc<dyn Pending>>,
}

impl Payload {
    /// A body already in JSON.
    pub fn json(value: Value) -> Self {
        Payload { json: OnceLock::from(value), pending: None }
    }

    /// A typed body, rendered when first read. Only for bodies that carry no app
    /// definition: the bus redacts `env` values in rendered bodies only.
    pub fn lazy<E: EventBody + Send + Sync + 'static>(at: Timestamp, body: E) -> Self {
        Payload { json: OnceLock::new(), pending: Some(Arc::new(Typed { body, at })) }
    }

    /// The typed body, when it was made from one of type `E` (no JSON is built).
    pub fn body<E: 'static>(&self) -> Option<&E> {
        self.pending.as_ref().and_then(|p| p.as_any().downcast_ref())
    }

    /// The JSON body if it was built (or given) already.
    pub fn rendered_mut(&mut self) -> Option<&mut Value> {
        self.json.get_mut()
    }
}

impl std::ops::Deref for Payload {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.json.get_or_init(|| self.pending.as_ref().map_or(Value::Null, |p| p.render()))
    }
}

impl std::ops::DerefMut for Payload {
    fn deref_mut(&mut self) -> &mut Value {
        let _ = &**self;
        self.json.get_mut().expect("rendered just above")
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Payload::json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_protocol::views::events::AgentLostEvent;

    #[test]
    fn a_lazy_body_renders_as_an_eager_one_and_stays_readable_typed() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let body = AgentLostEvent { agent_id: "a1".into() };
        let lazy = Payload::lazy(at, body.clone());
        assert!(lazy.json.get().is_none(), "nothing is rendered before someone reads it");
        assert_eq!(lazy.body::<AgentLostEvent>(), Some(&body));
        let mut eager = serde_json::to_value(&body).unwrap();
        stamp(&mut eager, "agent_lost_event", at);
        assert_eq!(*lazy, eager);
        assert_eq!(lazy["eventType"], "agent_lost_event");
        assert_eq!(serde_json::to_value(&lazy).unwrap(), eager);
    }
}
