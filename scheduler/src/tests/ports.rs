//! Service ports: assigned from the range, stable, unique; explicit ones checked.
use serde_json::json;

use super::*;

fn bridge(id: &str, service_port: i64) -> AppDefinition {
    app(
        json!({"id": id, "instances": 1, "container": {"type": "DOCKER", "docker": {"image": "greeter", "network": "BRIDGE"},
        "portMappings": [{"containerPort": 3000, "hostPort": 0, "servicePort": service_port, "protocol": "tcp"}]}}),
    )
}

#[test]
fn an_explicit_service_port_of_another_app_is_refused_naming_both_apps() {
    let mut c = core();
    c.create_app(bridge("/hello", 9000), t(1)).unwrap();
    let err = c.create_app(bridge("/other", 9000), t(2)).unwrap_err();
    assert_eq!(
        err,
        CoreError::ServicePortClash {
            port: 9000,
            app: AppId::parse("/other").unwrap(),
            other: AppId::parse("/hello").unwrap()
        }
    );
    let message = err.to_string();
    assert!(message.contains("/other") && message.contains("/hello") && message.contains("9000"), "{message}");
    assert!(c.app(&AppId::parse("/other").unwrap()).is_none(), "nothing created");
    // The same app keeps its own port across versions.
    let mut again = bridge("/hello", 9000);
    again.instances = 2;
    c.put_app(again, t(3), true).unwrap();
    // A port named later is never the one a 0 got: the explicit claim wins the check.
    c.create_app(bridge("/zero", 0), t(4)).unwrap();
    let err = c.create_app(bridge("/late", 10_000), t(5)).unwrap_err();
    assert!(matches!(err, CoreError::ServicePortClash { port: 10_000, .. }), "{err:?}");
}

#[test]
fn an_explicit_service_port_above_the_range_is_refused_and_zero_is_assigned_from_it() {
    let mut c = core();
    let err = c.create_app(bridge("/high", 31_005), t(1)).unwrap_err();
    assert!(matches!(err, CoreError::ServicePortOutOfRange { port: 31_005, low: 10_000, high: 20_000, .. }), "{err:?}");
    assert!(err.to_string().contains("/high"));
    let (a, _) = c.create_app(bridge("/a", 0), t(2)).unwrap();
    let (b, _) = c.create_app(bridge("/b", 0), t(3)).unwrap();
    let port = |r: &AppRecord| r.definition.container_port_mappings().unwrap()[0].service_port;
    assert_eq!((port(&a), port(&b)), (10_000, 10_001));
    let mut next = AppDefinition::clone(&a.definition);
    next.cmd = Some("changed".into());
    let outcome = c.put_app(next, t(4), true).unwrap();
    assert_eq!(port(&outcome.app), 10_000, "stable across versions");
}

#[test]
fn require_ports_definitions_are_host_ports_and_never_clash_as_service_ports() {
    let mut c = core();
    let fixed = |id: &str| {
        app(json!({"id": id, "cmd": "x", "instances": 1, "portDefinitions": [{"port": 31001}], "requirePorts": true}))
    };
    c.create_app(fixed("/one"), t(1)).unwrap();
    c.create_app(fixed("/two"), t(2)).expect("host ports compete for agents, not for service ports");
    assert!(c.service_table().services.is_empty(), "no balancer listens on a task's own host port");
}
