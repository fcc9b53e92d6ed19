//! Bytes as a `POST /v2/groups` body, through the steps the master takes
//! (master/src/api/groups.rs `create`: the id from the body resolved against the root,
//! then `plinth_master::api::group_body::parse_group_body`, the API's own parser), then
//! into the scheduler core as that group change, and the same body again as a `PUT`.
//! Nothing may panic; a refused body names at least one violation; an accepted tree
//! holds each id once, apps and groups directly under their group, absolute
//! dependencies and apps that validate; a change the core refuses leaves no app.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use plinth_master::api::group_body::parse_group_body;
use plinth_protocol::Timestamp;
use plinth_scheduler::groups::{is_within, parent, resolve};
use plinth_scheduler::{Core, CoreConfig, GroupRequest, GroupSpec};
use serde_json::Value;

const NOW: Timestamp = Timestamp(1_700_000_000_000);

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let id = match value.get("id").and_then(Value::as_str) {
        Some(raw) => match resolve("/", raw) {
            Ok(id) if id != "/" => id,
            _ => return,
        },
        None => "/fuzz".to_string(),
    };
    let spec = match parse_group_body(&value, id.clone()) {
        Ok(spec) => spec,
        Err(violations) => {
            assert!(!violations.is_empty(), "a 422 without a violation");
            return;
        }
    };
    check_tree(&spec, &mut BTreeSet::from([id.clone()]));

    let mut n: u128 = 0;
    let mut core = Core::new(
        CoreConfig::default(),
        Box::new(move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        }),
    );
    match core.change_groups(&GroupRequest::Create(spec), false, NOW) {
        Ok(change) => {
            assert!(core.apps().all(|a| is_within(a.id.as_str(), &change.group)), "an app outside the group");
            core.tick(Timestamp(NOW.0 + 1_000));
        }
        Err(_) => assert_eq!(core.apps().count(), 0, "a refused group change left apps behind"),
    }
    let spec = parse_group_body(&value, id).expect("the same body parses the same way");
    let _ = core.change_groups(&GroupRequest::Update { spec, force: true }, true, Timestamp(NOW.0 + 2_000));
    core.tick(Timestamp(NOW.0 + 3_000));
});

/// What an accepted body must hold, group by group.
fn check_tree(spec: &GroupSpec, seen: &mut BTreeSet<String>) {
    for app in spec.apps.iter().flatten() {
        assert_eq!(app.id.parent(), spec.id, "app {} is not directly in {}", app.id, spec.id);
        assert!(seen.insert(app.id.to_string()), "{} accepted twice", app.id);
        assert_eq!(app.def.id, app.id.as_str(), "the definition carries the absolute id");
        if let Err(violations) = app.def.validate() {
            panic!("an accepted app fails validation: {violations:?}");
        }
    }
    for dependency in spec.dependencies.iter().flatten() {
        assert!(dependency.starts_with('/') && dependency != "/", "dependency {dependency:?}");
    }
    for group in spec.groups.iter().flatten() {
        assert_eq!(parent(&group.id), spec.id, "group {} is not directly in {}", group.id, spec.id);
        assert!(seen.insert(group.id.clone()), "{} accepted twice", group.id);
        check_tree(group, seen);
    }
}
