//! The response types of `plinth_protocol::views`, filled in every field, against the
//! Marathon fixtures (`tests/fixtures/marathon`): no field Marathon does not have, every
//! field it always writes, the value types it writes. The master's contract tests check
//! the same fixtures against real answers.
use serde_json::{json, Value};

use plinth_protocol::views::app::{App, AppInfo};
use plinth_protocol::views::deployment::{
    DeploymentAction, DeploymentActionInfo, DeploymentInfo, DeploymentPlan, DeploymentResult, DeploymentStep,
    DeploymentSteps, PlanGroup,
};
use plinth_protocol::views::events::{self, EventBody};
use plinth_protocol::views::info::{EventSubscriber, HttpConfig, MarathonConfig, MarathonInfo, ZooKeeperConfig};
use plinth_protocol::views::metrics::{Counter, Gauge, Metrics};
use plinth_protocol::views::queue::{DeclinedOfferStep, ProcessedOffersSummary, QueueDelay, QueueItem};
use plinth_protocol::views::task::{Health, IpAddr, Task, TaskFailure, TaskReadinessCheckResult};
use plinth_protocol::views::{GroupInfo, Identifiable};
use plinth_protocol::AppDefinition;
use plinth_testkit::contract::Fixtures;

fn fixtures() -> Fixtures {
    Fixtures::marathon().expect("the Marathon fixtures load")
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("views serialize")
}

/// A definition that uses every field Plinth reads.
fn everything() -> AppDefinition {
    let mut def = AppDefinition::from_value(json!({
        "id": "/shop/web", "cmd": "python3 -m http.server $PORT0", "user": "nobody",
        "env": {"MODE": "prod"}, "instances": 2, "cpus": 0.5, "mem": 64, "disk": 10,
        "constraints": [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "2"]],
        "uris": ["http://example.com/site.tgz"],
        "fetch": [{"uri": "http://example.com/run.sh", "executable": true, "destPath": "run.sh"}],
        "portDefinitions": [{"port": 0, "name": "http", "labels": {"vip": "1.2.3.4:80"}}],
        "backoffSeconds": 2, "backoffFactor": 1.5, "maxLaunchDelaySeconds": 600,
        "container": {"type": "DOCKER", "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RO"}],
            "docker": {"image": "busybox", "network": "BRIDGE", "privileged": true, "forcePullImage": true,
                "parameters": [{"key": "label", "value": "x"}], "pullConfig": {"secret": "pull"},
                "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10000, "name": "web",
                    "labels": {"a": "b"}}]}},
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0},
                         {"protocol": "COMMAND", "command": {"value": "true"}}],
        "readinessChecks": [{"name": "ready", "portName": "http"}],
        "dependencies": ["/shop/db"], "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2},
        "labels": {"team": "web"}, "acceptedResourceRoles": ["*"], "networks": [{"mode": "container/bridge"}],
        "taskKillGracePeriodSeconds": 5, "killSelection": "OLDEST_FIRST",
        "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120},
        "version": "2024-01-02T03:04:05.678Z",
        "versionInfo": {"lastScalingAt": "2024-01-02T03:04:05.678Z", "lastConfigChangeAt": "2024-01-02T03:04:05.678Z"}
    }))
    .expect("the definition parses");
    def.normalize();
    def
}

fn task() -> Task {
    Task {
        app_id: "/shop/web".into(),
        health_check_results: vec![Health {
            alive: true,
            consecutive_failures: 0,
            first_success: Some("2024-01-02T03:04:06.000Z".into()),
            instance_id: "shop_web.1".into(),
            last_success: Some("2024-01-02T03:04:07.000Z".into()),
            last_failure: Some("2024-01-02T03:04:05.900Z".into()),
            last_failure_cause: Some("HTTP status 503".into()),
        }],
        host: "10.0.0.3".into(),
        id: "shop_web.1".into(),
        ip_addresses: vec![IpAddr { ip_address: "10.0.0.3".into(), protocol: "IPv4".into() }],
        ports: vec![31000],
        service_ports: vec![10000],
        slave_id: Some("agent-1".into()),
        state: "TASK_RUNNING".into(),
        staged_at: Some("2024-01-02T03:04:05.700Z".into()),
        started_at: Some("2024-01-02T03:04:05.800Z".into()),
        version: Some("2024-01-02T03:04:05.678Z".into()),
        local_volumes: Vec::new(),
        region: Some("eu".into()),
        zone: Some("a".into()),
        role: "*".into(),
    }
}

fn step() -> DeploymentStep {
    DeploymentStep { actions: vec![DeploymentAction { action: "RestartApplication".into(), app: "/shop/web".into() }] }
}

fn plan() -> DeploymentPlan {
    let app = App::of(&everything());
    DeploymentPlan {
        id: "d-1".into(),
        original: PlanGroup::root(vec![app.clone()], "2024-01-02T03:04:05.000Z".into()),
        target: PlanGroup::root(vec![app], "2024-01-02T03:04:05.678Z".into()),
        steps: vec![step()],
        version: "2024-01-02T03:04:05.678Z".into(),
    }
}

#[test]
fn apps_match_marathon() {
    let f = fixtures();
    let app = App::of(&everything());
    let value = to_value(&app);
    f.assert("App", "App", &value);
    for deprecated in ["ports", "uris", "storeUrls", "ipAddress"] {
        assert!(value.get(deprecated).is_none(), "{deprecated} is input only");
    }
    assert_eq!(value["backoffSeconds"], json!(2), "integer fields are JSON integers");
    assert_eq!(value["fetch"].as_array().map(Vec::len), Some(2), "uris are folded into fetch");
    let info = AppInfo {
        tasks_staged: Some(0),
        tasks_running: Some(1),
        tasks_healthy: Some(1),
        tasks_unhealthy: Some(0),
        deployments: Some(vec![Identifiable { id: "d-1".into() }]),
        readiness_check_results: Some(vec![TaskReadinessCheckResult {
            name: "ready".into(),
            task_id: "shop_web.1".into(),
            ready: true,
        }]),
        tasks: Some(vec![task()]),
        last_task_failure: Some(TaskFailure {
            app_id: "/shop/web".into(),
            host: "10.0.0.3".into(),
            message: "exited with 1".into(),
            state: "TASK_FAILED".into(),
            task_id: "shop_web.0".into(),
            timestamp: "2024-01-02T03:04:05.000Z".into(),
            version: "2024-01-02T03:04:05.678Z".into(),
            slave_id: Some("agent-1".into()),
        }),
        ..AppInfo::bare(app.clone())
    };
    f.assert("AppInfo", "AppSingle", &json!({"app": to_value(&info)}));
    f.assert("a bare AppInfo", "AppList", &json!({"apps": [to_value(&AppInfo::bare(app))]}));
    f.assert("versions", "VersionList", &json!({"versions": ["2024-01-02T03:04:05.678Z"]}));
    let minimal = AppDefinition::from_value(json!({"id": "x", "cmd": "sleep 1"})).map(|mut d| {
        d.normalize();
        d
    });
    f.assert("a minimal App", "App", &to_value(&App::of(&minimal.expect("parses"))));
}

#[test]
fn tasks_deployments_and_queue_items_match_marathon() {
    let f = fixtures();
    f.assert("TaskList", "TaskList", &json!({"tasks": [to_value(&task())]}));
    let deployment = DeploymentInfo {
        id: "d-1".into(),
        version: "2024-01-02T03:04:05.678Z".into(),
        affected_apps: vec!["/shop/web".into()],
        affected_pods: Vec::new(),
        steps: vec![step()],
        current_actions: vec![DeploymentActionInfo {
            action: "RestartApplication".into(),
            app: "/shop/web".into(),
            readiness_check_results: Vec::new(),
        }],
        current_step: 1,
        total_steps: 1,
    };
    f.assert("deployments", "DeploymentList", &to_value(&vec![deployment]));
    let result = DeploymentResult { deployment_id: "d-1".into(), version: "2024-01-02T03:04:05.678Z".into() };
    f.assert("DeploymentResult", "DeploymentResult", &to_value(&result));
    f.assert("DeploymentSteps", "DeploymentSteps", &to_value(&DeploymentSteps { steps: vec![step()] }));
    let item = QueueItem {
        count: 2,
        delay: QueueDelay { time_left_seconds: 3, overdue: false },
        since: "2024-01-02T03:04:05.678Z".into(),
        processed_offers_summary: ProcessedOffersSummary {
            processed_offers_count: 4,
            unused_offers_count: 4,
            last_unused_offer_at: Some("2024-01-02T03:04:06.000Z".into()),
            last_used_offer_at: None,
            reject_summary_last_offers: Some(vec![DeclinedOfferStep {
                reason: "InsufficientMemory".into(),
                declined: 4,
                processed: 4,
            }]),
            reject_summary_launch_attempt: None,
        },
        last_unused_offers: Some(Vec::new()),
        app: App::of(&everything()),
    };
    f.assert("Queue", "Queue", &json!({"queue": [to_value(&item)]}));
    let group = GroupInfo {
        id: "/shop".into(),
        apps: vec![AppInfo::bare(App::of(&everything()))],
        groups: Vec::new(),
        pods: Vec::new(),
        dependencies: vec!["/db".into()],
        version: "2024-01-02T03:04:05.678Z".into(),
    };
    f.assert("GroupInfo", "GroupInfo", &to_value(&group));
}

#[test]
fn info_metrics_and_events_match_marathon() {
    let f = fixtures();
    let info = MarathonInfo {
        name: "plinth".into(),
        version: "0.1.0".into(),
        buildref: String::new(),
        elected: true,
        leader: Some("m:8080".into()),
        framework_id: Some("f".into()),
        marathon_config: MarathonConfig { features: Vec::new(), ..Default::default() },
        zookeeper_config: ZooKeeperConfig::default(),
        http_config: HttpConfig { http_port: 8080, https_port: 0 },
        event_subscriber: Some(EventSubscriber { kind: "http_callback".into(), http_endpoints: Vec::new() }),
    };
    f.assert("MarathonInfo", "MarathonInfo", &to_value(&info));
    let metrics = Metrics {
        version: plinth_protocol::views::metrics::METRICS_JSON_VERSION.into(),
        counters: [("plinth.events.published.total".to_string(), Counter { count: 3 })].into(),
        gauges: [("plinth.apps".to_string(), Gauge { value: 1.0 })].into(),
        histograms: Default::default(),
        meters: Default::default(),
        timers: Default::default(),
    };
    f.assert("Metrics", "Metrics", &to_value(&metrics));

    fn event<E: EventBody>(body: &E) -> Value {
        let mut v = to_value(body);
        v["eventType"] = json!(E::TYPE);
        v["timestamp"] = json!("2024-01-02T03:04:05.678Z");
        v
    }
    let bodies = [
        event(&events::DeploymentInfoEvent { plan: plan(), current_step: step() }),
        event(&events::DeploymentSuccess { id: "d-1".into(), plan: plan() }),
        event(&events::DeploymentFailed { id: "d-1".into(), plan: plan(), reason: Some("superseded".into()) }),
        event(&events::StatusUpdateEvent {
            slave_id: "agent-1".into(),
            task_id: "shop_web.1".into(),
            task_status: "TASK_RUNNING".into(),
            message: String::new(),
            app_id: "/shop/web".into(),
            host: "10.0.0.3".into(),
            ip_addresses: vec![IpAddr { ip_address: "10.0.0.3".into(), protocol: "IPv4".into() }],
            ports: vec![31000],
            version: "2024-01-02T03:04:05.678Z".into(),
        }),
        event(&events::FailedHealthCheckEvent {
            app_id: "/shop/web".into(),
            instance_id: "shop_web.1".into(),
            health_check: plinth_protocol::views::app::HealthCheck::of(&everything().health_checks[0]),
        }),
    ];
    for body in &bodies {
        f.assert(body["eventType"].as_str().unwrap_or("event"), "MarathonEvent", body);
    }
    assert!(events::is_marathon_event("deployment_info") && !events::is_marathon_event("image_pull_started"));
}
