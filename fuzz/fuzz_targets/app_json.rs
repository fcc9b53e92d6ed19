//! Bytes as a `POST /v2/apps` body, through the steps the master takes
//! (master/src/api/apps.rs `definition_from_value`: parse, validate, normalize, validate
//! again), then into the scheduler core as `create` does, placed on one agent. Nothing
//! may panic, and a definition the master accepted must read back from its own JSON (the
//! store keeps it that way) and still validate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_protocol::agent::Registration;
use plinth_protocol::{AppDefinition, BodyError, Resources, Timestamp};
use plinth_scheduler::{Core, CoreConfig};
use serde_json::Value;

const NOW: Timestamp = Timestamp(1_700_000_000_000);

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let Some(def) = accepted(value) else { return };

    let stored = serde_json::to_vec(&def).expect("an app definition serializes");
    let read_back = match AppDefinition::from_json(&stored) {
        Ok(d) => d,
        Err(e) => panic!("an accepted app does not read back from its own JSON: {e:?}"),
    };
    if let Err(violations) = read_back.validate() {
        panic!("an accepted app fails validation once stored: {violations:?}");
    }

    // The derived views the scheduler and agent read.
    let _ = def.app_id().expect("a validated id parses");
    let _ = (def.host_port_count(), def.fixed_host_ports(), def.port_names(), def.parsed_constraints());

    let mut n: u128 = 0;
    let config = CoreConfig { max_launches_per_tick: 8, ..CoreConfig::default() };
    let mut core = Core::new(
        config,
        Box::new(move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        }),
    );
    let agent = core.register_agent(
        Registration {
            agent_id: None,
            hostname: "fuzz-agent".into(),
            advertise_ip: "10.0.0.9".into(),
            http_port: 5051,
            resources: Resources::parse("cpus:8;mem:8192;disk:8192;ports:[31000-31100]").expect("resources"),
            attributes: plinth_protocol::parse_attributes("rack:r1;zone:a").expect("attributes"),
            last_generation: 0,
            tasks: vec![],
            version: "fuzz".into(),
        },
        NOW,
    );
    if core.dependency_cycle(&def).is_some() {
        return;
    }
    if core.create_app(def, NOW).is_err() {
        return;
    }
    core.tick(Timestamp(NOW.0 + 1_000));
    let _ = core.desired_state(&agent);
    let _ = core.queue(Timestamp(NOW.0 + 2_000));
});

/// What `POST /v2/apps` would store, or `None` for a 400/422.
fn accepted(value: Value) -> Option<AppDefinition> {
    let mut def = match AppDefinition::from_value(value) {
        Ok(def) => def,
        Err(BodyError::Invalid(violations)) => {
            assert!(!violations.is_empty(), "a 422 without a violation");
            return None;
        }
        Err(BodyError::Malformed(_)) => return None,
    };
    def.validate().ok()?;
    def.normalize();
    def.validate().ok()?;
    Some(def)
}
