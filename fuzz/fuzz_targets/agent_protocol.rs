//! Bytes as agent-protocol bodies (protocol/src/agent.rs). The input is a stream of JSON
//! documents; each is decoded as the master's handlers decode `POST /agent/v1/register`,
//! `/sync` and `/status` (master/src/api/agents.rs: JSON value, then the type) and applied
//! to a scheduler core that runs one app, in order, with a tick after each; and as the
//! agent decodes the master's answers (`SyncResponse`, `Registered`, `StatusAck`).
//! Nothing may panic, every decoded body reads back from its own JSON unchanged, and an
//! agent's generation never goes down (it would ignore every newer desired state).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_protocol::agent::{Registered, Registration, StatusAck, StatusBatch, SyncRequest, SyncResponse};
use plinth_protocol::{AgentId, AppDefinition, Timestamp};
use plinth_scheduler::{Core, CoreConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const APP: &str = r#"{"id": "/web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}"#;

fuzz_target!(|data: &[u8]| {
    let mut core = core();
    let mut now = 1_700_000_000_000i64;
    for value in serde_json::Deserializer::from_slice(data).into_iter::<Value>().take(16) {
        let Ok(value) = value else { break };
        now += 500;
        let at = Timestamp(now);
        if let Some(registration) = decode::<Registration>(&value) {
            let before = generation(&core, registration.agent_id.as_ref());
            let id = core.register_agent(registration, at);
            assert_above(&core, &id, before, "a registration");
        }
        if let Some(request) = decode::<SyncRequest>(&value) {
            let before = generation(&core, Some(&request.agent_id));
            let response = core.sync_agent(&request, at);
            assert_above(&core, &request.agent_id, before, "a sync");
            round_trip(&response);
        }
        if let Some(batch) = decode::<StatusBatch>(&value) {
            let _ = core.apply_status_updates(&batch.agent_id, batch.updates, at);
        }
        let _ = decode::<SyncResponse>(&value);
        let _ = decode::<Registered>(&value);
        let _ = decode::<StatusAck>(&value);
        core.tick(at);
        let _ = core.queue(at);
    }
});

fn core() -> Core {
    let mut n: u128 = 0;
    let mut core = Core::new(
        CoreConfig { max_launches_per_tick: 8, ..CoreConfig::default() },
        Box::new(move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        }),
    );
    let mut app = AppDefinition::from_json(APP.as_bytes()).expect("the app parses");
    app.normalize();
    app.validate().expect("the app is valid");
    core.create_app(app, Timestamp(1_700_000_000_000)).expect("the app is created");
    core
}

/// The master's way (`Body::json`), then the agent's way (`reqwest`'s `json`: straight
/// from the bytes) on the same text; both must agree, and the value must read back.
fn decode<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(value: &Value) -> Option<T> {
    let decoded: T = serde_json::from_value(value.clone()).ok()?;
    let text = serde_json::to_vec(value).expect("a JSON value serializes");
    let direct: T = serde_json::from_slice(&text).expect("what decodes from a value decodes from its text");
    assert_eq!(direct, decoded, "the master and the agent read the same body differently");
    round_trip(&decoded);
    Some(decoded)
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(value: &T) {
    let json = serde_json::to_vec(value).expect("a protocol message serializes");
    match serde_json::from_slice::<T>(&json) {
        Ok(back) => assert_eq!(&back, value, "a message reads back changed from {}", String::from_utf8_lossy(&json)),
        Err(e) => panic!("a message does not read back from its own JSON {}: {e}", String::from_utf8_lossy(&json)),
    }
}

fn generation(core: &Core, agent: Option<&AgentId>) -> Option<u64> {
    core.agent(agent?).map(|a| a.record.generation)
}

fn assert_above(core: &Core, agent: &AgentId, before: Option<u64>, what: &str) {
    if let (Some(before), Some(after)) = (before, generation(core, Some(agent))) {
        assert!(after >= before, "{what} took agent {agent}'s generation from {before} down to {after}");
    }
}
