//! Helpers for tests and benchmarks that need task specs without a master.
use plinth_protocol::agent::TaskSpec;
use plinth_protocol::{AppDefinition, AppId, TaskId};

/// A task spec for an app given as Marathon JSON (normalised, as the master sends it).
///
/// Panics on an invalid app: callers pass literals.
pub fn task_spec(task_id: &str, app: serde_json::Value, host_ports: Vec<u16>) -> TaskSpec {
    let mut app = AppDefinition::from_value(app).expect("test app definition parses");
    app.normalize();
    TaskSpec {
        task_id: TaskId::new(task_id),
        app_id: AppId::parse(&app.id).expect("test app id is valid"),
        version: "2024-01-01T00:00:00.000Z".into(),
        app,
        host_ports,
        kill: false,
    }
}
