use super::*;
use serde_json::json;

fn app(value: Value) -> AppDefinition {
    AppDefinition::from_value(value).expect("parses")
}

#[test]
fn marathon_defaults_apply_and_unknown_fields_are_ignored() {
    let mut a = app(json!({"id": "hello", "cmd": "echo hi", "someFutureField": {"x": 1}}));
    a.normalize();
    assert_eq!(a.id, "/hello");
    assert_eq!(a.instances, 1);
    assert_eq!(a.cpus, 1.0);
    assert_eq!(a.mem, 128.0);
    assert_eq!(a.backoff_seconds, 1.0);
    assert_eq!(a.backoff_factor, 1.15);
    assert_eq!(a.max_launch_delay_seconds, 300.0);
    assert_eq!(a.upgrade_strategy, UpgradeStrategy::default());
    assert_eq!(a.port_definitions.as_ref().map(Vec::len), Some(1));
    assert!(a.validate().is_ok());
    let hc: HealthCheck = serde_json::from_value(json!({"protocol": "HTTP"})).unwrap();
    assert_eq!((hc.grace_period_seconds, hc.interval_seconds, hc.timeout_seconds), (300, 60, 20));
    assert_eq!(hc.max_consecutive_failures, 3);
}

#[test]
fn invalid_values_are_reported_with_paths() {
    let a = app(json!({"id": "Bad Id", "cmd": "x", "instances": -1, "cpus": 0,
        "upgradeStrategy": {"minimumHealthCapacity": 1.5},
        "constraints": [["hostname", "SOMETIMES"], ["rack", "LIKE"]],
        "healthChecks": [{"protocol": "HTTP", "portIndex": 3}]}));
    let violations = a.validate().unwrap_err();
    let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
    for expected in [
        "/id",
        "/instances",
        "/cpus",
        "/upgradeStrategy/minimumHealthCapacity",
        "/constraints(0)",
        "/constraints(1)",
        "/healthChecks(0)/portIndex",
    ] {
        assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
    }
}

#[test]
fn wrong_types_and_syntax_errors_are_told_apart() {
    assert!(matches!(AppDefinition::from_json(b"{not json"), Err(BodyError::Malformed(_))));
    match AppDefinition::from_json(br#"{"id":"a","cmd":"x","instances":"three"}"#) {
        Err(BodyError::Invalid(v)) => assert_eq!(v[0].path, "/instances"),
        other => panic!("expected a 422, got {other:?}"),
    }
    assert!(matches!(AppDefinition::from_json(b"[1,2]"), Err(BodyError::Invalid(_))));
}

#[test]
fn app_without_command_or_container_is_rejected() {
    let a = app(json!({"id": "x"}));
    assert!(a.validate().is_err());
}

#[test]
fn docker_bridge_apps_take_ports_from_mappings() {
    let mut a = app(json!({"id":"hello-sinatra","cpus":0.5,"mem":128,"instances":1,
        "container":{"type":"DOCKER","docker":{"image":"127.0.0.1:5000/demo/hello","network":"BRIDGE",
        "portMappings":[{"containerPort":3000,"hostPort":0,"servicePort":9000,"protocol":"tcp"}]}}}));
    a.normalize();
    assert!(a.validate().is_ok(), "{:?}", a.validate());
    assert_eq!(a.network_mode(), NetworkMode::Bridge);
    assert_eq!(a.host_port_count(), 1);
    assert!(a.fixed_host_ports().is_empty());
}

#[test]
fn pre_1_0_containers_are_named_as_such_with_the_1_x_form() {
    let old = json!({"id": "old", "cmd": "x",
        "container": {"image": "docker:///libmesos/ubuntu", "options": ["--privileged"]}});
    let Err(BodyError::Invalid(v)) = AppDefinition::from_value(old) else { panic!("expected a 422") };
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "/container");
    let message = &v[0].errors[0];
    assert!(message.contains("before 1.0"), "{message}");
    assert!(message.contains(r#""docker": {"image": "libmesos/ubuntu"}"#), "{message}");
    assert!(message.contains("\"type\": \"DOCKER\"") && message.contains("parameters"), "{message}");
    let only_options = json!({"id": "old", "cmd": "x", "container": {"options": []}});
    let Err(BodyError::Invalid(v)) = AppDefinition::from_value(only_options) else { panic!("expected a 422") };
    assert!(v[0].errors[0].contains(r#""image": "IMAGE""#), "{v:?}");
    let new = json!({"id": "new", "container": {"type": "DOCKER", "docker": {"image": "busybox"}}});
    assert!(AppDefinition::from_value(new).is_ok());
}

#[test]
fn invalid_image_names_are_refused() {
    for bad in ["UPPER/case", "a//b", "demo/app:bad tag", "x@sha256:zz"] {
        let a = app(json!({"id":"x","container":{"type":"DOCKER","docker":{"image":bad}}}));
        let errors = a.validate().expect_err(bad);
        assert!(errors.iter().any(|v| v.path == "/container/docker/image"), "{bad}: {errors:?}");
    }
}
