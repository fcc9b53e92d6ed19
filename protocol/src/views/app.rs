//! Apps as Marathon writes them: `App` (a definition, e.g. `/v2/apps/{id}/versions/{v}`,
//! queue items, `api_post_event`) and `AppInfo` (an app with what `embed` adds:
//! `/v2/apps`, `/v2/apps/{id}`, groups). Marathon 1.10's `app.raml` and the types it uses.
//! Deprecated input forms (`ports`, `uris`, `ipAddress`, `docker.network`-era defaults)
//! are not written back, as Marathon does not.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::task::{Task, TaskFailure, TaskReadinessCheckResult};
use super::task_stats::TaskStatsByVersion;
use super::{whole, Identifiable};
use crate::marathon::{self as def, AppDefinition};

/// The role Plinth offers every resource under (Mesos' default role).
pub const DEFAULT_ROLE: &str = "*";

/// An app definition (`App` in the RAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    pub backoff_factor: f64,
    pub backoff_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    pub constraints: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    pub cpus: f64,
    pub dependencies: Vec<String>,
    pub disk: f64,
    pub env: BTreeMap<String, Value>,
    pub executor: String,
    pub fetch: Vec<Artifact>,
    pub gpus: i64,
    pub health_checks: Vec<HealthCheck>,
    pub instances: i64,
    pub labels: BTreeMap<String, String>,
    pub max_launch_delay_seconds: i64,
    pub mem: f64,
    pub networks: Vec<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    pub readiness_checks: Vec<ReadinessCheck>,
    pub require_ports: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<i64>,
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
    pub kill_selection: String,
    pub unreachable_strategy: UnreachableStrategy,
    pub role: String,
}

/// `AppInfo`: an app and what the request embedded (`embed=app.tasks`, counts, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    #[serde(flatten)]
    pub app: App,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_staged: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_running: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_healthy: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_unhealthy: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<Vec<Identifiable>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_check_results: Option<Vec<TaskReadinessCheckResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<TaskFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_stats: Option<TaskStatsByVersion>,
}

impl AppInfo {
    /// The app with nothing embedded.
    pub fn bare(app: App) -> Self {
        AppInfo {
            app,
            tasks_staged: None,
            tasks_running: None,
            tasks_healthy: None,
            tasks_unhealthy: None,
            deployments: None,
            readiness_check_results: None,
            tasks: None,
            last_task_failure: None,
            task_stats: None,
        }
    }
}

/// `GET /v2/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppInfo>,
}

/// `GET /v2/apps/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSingle {
    pub app: AppInfo,
}

/// `GET /v2/apps/{id}/versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionList {
    pub versions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerContainer>,
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerContainer {
    pub force_pull_image: bool,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub parameters: Vec<DockerParameter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_config: Option<DockerPullConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

/// `{"secret": NAME}`: the Docker `config.json` held as a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerPullConfig {
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: String,
    pub service_port: i64,
}

/// A host volume (`AppHostVolume`; `hostPath` is left out for a volume that has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    pub port: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub mode: String,
}

/// A fetched URI (`Artifact`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub uri: String,
    pub extract: bool,
    pub executable: bool,
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

/// `AppHealthCheck`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    pub grace_period_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_http1xx: Option<bool>,
    pub interval_seconds: u64,
    pub max_consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    pub protocol: String,
    pub ip_protocol: String,
    pub timeout_seconds: u64,
    pub delay_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    pub name: String,
    pub protocol: String,
    pub path: String,
    pub port_name: String,
    pub interval_seconds: u64,
    pub timeout_seconds: u64,
    pub http_status_codes_for_ready: Vec<u16>,
    pub preserve_last_response: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    pub maximum_over_capacity: f64,
    pub minimum_health_capacity: f64,
}

/// `{"inactiveAfterSeconds","expungeAfterSeconds"}` or `"disabled"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    Enabled {
        #[serde(rename = "inactiveAfterSeconds")]
        inactive_after_seconds: i64,
        #[serde(rename = "expungeAfterSeconds")]
        expunge_after_seconds: i64,
    },
    Disabled(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

/// A constraint entry as text (`["hostname","UNIQUE"]`); validation keeps them strings.
fn constraint_text(entry: &[Value]) -> Vec<String> {
    entry.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect()
}

fn port_mapping(m: &def::PortMapping) -> PortMapping {
    PortMapping {
        container_port: m.container_port,
        host_port: m.host_port,
        labels: m.labels.clone(),
        name: m.name.clone(),
        protocol: m.protocol.clone(),
        service_port: m.service_port,
    }
}

fn container(c: &def::Container) -> Container {
    Container {
        kind: c.kind.clone(),
        docker: c.docker.as_ref().map(|d| DockerContainer {
            force_pull_image: d.force_pull_image,
            image: d.image.clone(),
            network: d.network.clone(),
            parameters: d
                .parameters
                .iter()
                .map(|p| DockerParameter { key: p.key.clone(), value: p.value.clone() })
                .collect(),
            port_mappings: d.port_mappings.as_ref().map(|ms| ms.iter().map(port_mapping).collect()),
            privileged: d.privileged,
            pull_config: d
                .pull_config
                .as_ref()
                .and_then(|p| p.get("secret"))
                .and_then(Value::as_str)
                .map(|secret| DockerPullConfig { secret: secret.to_string() }),
        }),
        volumes: c
            .volumes
            .iter()
            .map(|v| Volume {
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone(),
                mode: v.mode.clone(),
            })
            .collect(),
        port_mappings: c.port_mappings.as_ref().map(|ms| ms.iter().map(port_mapping).collect()),
    }
}

fn health_check(hc: &def::HealthCheck) -> HealthCheck {
    HealthCheck {
        command: hc.command.as_ref().map(|c| CommandCheck { value: c.value.clone() }),
        grace_period_seconds: hc.grace_period_seconds,
        ignore_http1xx: Some(hc.ignore_http1xx),
        interval_seconds: hc.interval_seconds,
        max_consecutive_failures: hc.max_consecutive_failures,
        // A path only means something to HTTP checks.
        path: hc.path.clone().filter(|_| hc.protocol.contains("HTTP")),
        port: hc.port,
        port_index: hc.port_index,
        protocol: hc.protocol.clone(),
        ip_protocol: "IPv4".into(),
        timeout_seconds: hc.timeout_seconds,
        delay_seconds: hc.delay_seconds,
    }
}

impl HealthCheck {
    /// The view of one of an app's health checks (`failed_health_check_event` carries it).
    pub fn of(hc: &def::HealthCheck) -> Self {
        health_check(hc)
    }
}

impl App {
    /// Marathon's JSON of a (normalised) definition.
    pub fn of(d: &AppDefinition) -> Self {
        App {
            id: d.id.clone(),
            accepted_resource_roles: d.accepted_resource_roles.clone(),
            args: d.args.clone().filter(|a| !a.is_empty()),
            backoff_factor: d.backoff_factor,
            backoff_seconds: whole(d.backoff_seconds),
            cmd: d.cmd.clone(),
            constraints: d.constraints.iter().map(|c| constraint_text(c)).collect(),
            container: d.container.as_ref().map(container),
            cpus: d.cpus,
            dependencies: d.dependencies.clone(),
            disk: d.disk,
            env: d.env.clone(),
            executor: d.executor.clone(),
            fetch: d
                .fetch
                .iter()
                .map(|f| Artifact {
                    uri: f.uri.clone(),
                    extract: f.extract,
                    executable: f.executable,
                    cache: f.cache,
                    dest_path: f.dest_path.clone(),
                })
                .collect(),
            gpus: whole(d.gpus),
            health_checks: d.health_checks.iter().map(health_check).collect(),
            instances: d.instances,
            labels: d.labels.clone(),
            max_launch_delay_seconds: whole(d.max_launch_delay_seconds),
            mem: d.mem,
            networks: d.networks.iter().map(|n| Network { name: n.name.clone(), mode: n.mode.clone() }).collect(),
            port_definitions: d.port_definitions.as_ref().map(|defs| {
                defs.iter()
                    .map(|p| PortDefinition {
                        port: p.port,
                        labels: p.labels.clone(),
                        name: p.name.clone(),
                        protocol: p.protocol.clone(),
                    })
                    .collect()
            }),
            readiness_checks: d
                .readiness_checks
                .iter()
                .map(|r| ReadinessCheck {
                    name: r.name.clone(),
                    protocol: r.protocol.clone(),
                    path: r.path.clone(),
                    port_name: r.port_name.clone(),
                    interval_seconds: r.interval_seconds,
                    timeout_seconds: r.timeout_seconds,
                    http_status_codes_for_ready: r.http_status_codes_for_ready.clone(),
                    preserve_last_response: r.preserve_last_response,
                })
                .collect(),
            require_ports: d.require_ports,
            task_kill_grace_period_seconds: Some(whole(d.task_kill_grace_period_seconds)),
            upgrade_strategy: UpgradeStrategy {
                maximum_over_capacity: d.upgrade_strategy.maximum_over_capacity,
                minimum_health_capacity: d.upgrade_strategy.minimum_health_capacity,
            },
            user: d.user.clone(),
            version: d.version.clone(),
            version_info: d.version_info.as_ref().map(|v| VersionInfo {
                last_scaling_at: v.last_scaling_at.clone(),
                last_config_change_at: v.last_config_change_at.clone(),
            }),
            kill_selection: d.kill_selection.clone(),
            unreachable_strategy: match &d.unreachable_strategy {
                def::UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds } => {
                    UnreachableStrategy::Enabled {
                        inactive_after_seconds: whole(*inactive_after_seconds),
                        expunge_after_seconds: whole(*expunge_after_seconds),
                    }
                }
                def::UnreachableStrategy::Disabled(s) => UnreachableStrategy::Disabled(s.clone()),
            },
            role: DEFAULT_ROLE.to_string(),
        }
    }
}
