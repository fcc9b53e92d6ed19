//! Marathon v2 JSON: app definitions with Marathon's field names and defaults, and
//! their validation into Marathon's 422 shape (`{"message","details":[{"path","errors"}]}`).
//! Unknown fields are accepted and ignored, as Marathon clients expect.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::AppId;

fn default_instances() -> i64 {
    1
}
fn default_cpus() -> f64 {
    1.0
}
fn default_mem() -> f64 {
    128.0
}
fn default_backoff_seconds() -> f64 {
    1.0
}
fn default_backoff_factor() -> f64 {
    1.15
}
fn default_max_launch_delay() -> f64 {
    300.0
}
fn default_one() -> f64 {
    1.0
}
fn default_kill_grace() -> f64 {
    3.0
}
fn default_kill_selection() -> String {
    "YOUNGEST_FIRST".into()
}
fn default_protocol() -> String {
    "tcp".into()
}
fn default_hc_protocol() -> String {
    "HTTP".into()
}
fn default_hc_path() -> Option<String> {
    Some("/".into())
}
fn default_grace() -> u64 {
    300
}
fn default_interval() -> u64 {
    60
}
fn default_timeout() -> u64 {
    20
}
fn default_max_failures() -> u32 {
    3
}
fn default_delay() -> u64 {
    15
}
fn default_volume_mode() -> String {
    "RW".into()
}
fn default_container_type() -> String {
    "DOCKER".into()
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// A Marathon app definition, as POSTed to `/v2/apps` and returned by `GET /v2/apps/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Values are strings; Marathon also allows `{"secret": ...}` references, which are
    /// rejected by validation because no secret store exists.
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    #[serde(default = "default_instances")]
    pub instances: i64,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub gpus: f64,
    #[serde(default)]
    pub executor: String,
    #[serde(default)]
    pub constraints: Vec<Vec<Value>>,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub fetch: Vec<FetchUri>,
    #[serde(default)]
    pub store_urls: Vec<String>,
    /// Old form of `portDefinitions`; folded into it by [`AppDefinition::normalize`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default = "default_backoff_seconds")]
    pub backoff_seconds: f64,
    #[serde(default = "default_backoff_factor")]
    pub backoff_factor: f64,
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default)]
    pub networks: Vec<Network>,
    #[serde(default = "default_kill_grace")]
    pub task_kill_grace_period_seconds: f64,
    #[serde(default = "default_kill_selection")]
    pub kill_selection: String,
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    /// Set by the master; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    #[serde(default)]
    pub executable: bool,
    #[serde(default = "default_true")]
    pub extract: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: i64,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type", default = "default_container_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerContainer>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// New form: port mappings on the container rather than on `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerContainer {
    pub image: String,
    /// Old form: `HOST`, `BRIDGE`, `USER` or `NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(default)]
    pub parameters: Vec<DockerParameter>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_pull_image: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_config: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default)]
    pub service_port: i64,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default = "default_volume_mode")]
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default = "default_network_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
fn default_network_mode() -> String {
    "host".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default = "default_hc_protocol")]
    pub protocol: String,
    #[serde(default = "default_hc_path", skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default = "default_grace")]
    pub grace_period_seconds: u64,
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_max_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default = "default_delay")]
    pub delay_seconds: u64,
    #[serde(default)]
    pub ignore_http1xx: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    #[serde(default = "default_readiness_name")]
    pub name: String,
    #[serde(default = "default_readiness_protocol")]
    pub protocol: String,
    #[serde(default = "default_readiness_path")]
    pub path: String,
    #[serde(default)]
    pub port_name: String,
    #[serde(default = "default_readiness_interval")]
    pub interval_seconds: u64,
    #[serde(default = "default_readiness_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_ready_codes")]
    pub http_status_codes_for_ready: Vec<u16>,
    #[serde(default)]
    pub preserve_last_response: bool,
}
fn default_readiness_name() -> String {
    "readinessCheck".into()
}
fn default_readiness_protocol() -> String {
    "HTTP".into()
}
fn default_readiness_path() -> String {
    "/".into()
}
fn default_readiness_interval() -> u64 {
    30
}
fn default_readiness_timeout() -> u64 {
    10
}
fn default_ready_codes() -> Vec<u16> {
    vec![200]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "default_one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "default_one")]
    pub maximum_over_capacity: f64,
}
impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0 }
    }
}

/// `{"inactiveAfterSeconds":0,"expungeAfterSeconds":0}` or the string `"disabled"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    Enabled {
        #[serde(rename = "inactiveAfterSeconds", default)]
        inactive_after_seconds: f64,
        #[serde(rename = "expungeAfterSeconds", default)]
        expunge_after_seconds: f64,
    },
    Disabled(String),
}
impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled { inactive_after_seconds: 0.0, expunge_after_seconds: 0.0 }
    }
}

/// One entry of a 422 answer: a JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub errors: Vec<String>,
}

/// Marathon's error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Violation>,
}

/// Constraint operators, in Marathon's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConstraintOperator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

impl ConstraintOperator {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "UNIQUE" => Self::Unique,
            "CLUSTER" => Self::Cluster,
            "GROUP_BY" => Self::GroupBy,
            "LIKE" => Self::Like,
            "UNLIKE" => Self::Unlike,
            "MAX_PER" => Self::MaxPer,
            "IS" => Self::Is,
            _ => return None,
        })
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unique => "UNIQUE",
            Self::Cluster => "CLUSTER",
            Self::GroupBy => "GROUP_BY",
            Self::Like => "LIKE",
            Self::Unlike => "UNLIKE",
            Self::MaxPer => "MAX_PER",
            Self::Is => "IS",
        }
    }
}

/// A validated constraint: `[field, operator, value?]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub field: String,
    pub operator: ConstraintOperator,
    pub value: Option<String>,
}

impl Constraint {
    /// Parses one `["field","OP","value"]` entry; the error says what is wrong.
    pub fn parse(raw: &[Value]) -> Result<Self, String> {
        let strings: Option<Vec<&str>> = raw.iter().map(Value::as_str).collect();
        let Some(parts) = strings else {
            return Err("constraint entries must be strings".into());
        };
        let (field, op, value) = match parts.as_slice() {
            [field, op] => (*field, *op, None),
            [field, op, value] => (*field, *op, Some(value.to_string())),
            _ => return Err("a constraint is [field, operator] or [field, operator, value]".into()),
        };
        if field.is_empty() {
            return Err("constraint field must not be empty".into());
        }
        let operator = ConstraintOperator::parse(op).ok_or_else(|| {
            format!("unknown constraint operator '{op}' (known: UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS)")
        })?;
        match operator {
            ConstraintOperator::Like | ConstraintOperator::Unlike => {
                let Some(pattern) = &value else {
                    return Err(format!("{} requires a regular expression", operator.as_str()));
                };
                regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("'{pattern}' is not a valid regular expression: {e}"))?;
            }
            ConstraintOperator::MaxPer => match value.as_deref().map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => {}
                _ => return Err("MAX_PER requires a positive integer value".into()),
            },
            ConstraintOperator::GroupBy => {
                if let Some(v) = &value {
                    if !matches!(v.parse::<u32>(), Ok(n) if n > 0) {
                        return Err("GROUP_BY value must be a positive integer".into());
                    }
                }
            }
            ConstraintOperator::Is => {
                if value.is_none() {
                    return Err("IS requires a value".into());
                }
            }
            ConstraintOperator::Unique | ConstraintOperator::Cluster => {}
        }
        Ok(Constraint { field: field.to_string(), operator, value })
    }
}

/// How the app's tasks are networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NetworkMode {
    Host,
    Bridge,
    None,
}

impl AppDefinition {
    /// Parses a request body: a syntax error is `Err(None)`-free 400 material, a shape
    /// error (wrong types) carries the JSON path for a 422.
    pub fn from_json(body: &[u8]) -> Result<Self, BodyError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, BodyError> {
        if !value.is_object() {
            return Err(BodyError::Invalid(vec![Violation {
                path: "/".into(),
                errors: vec!["an app definition must be a JSON object".into()],
            }]));
        }
        if let Some(violation) = pre_1_0_container(&value) {
            return Err(BodyError::Invalid(vec![violation]));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = format!("/{}", e.path()).replace('.', "/");
            let path = if path == "/." { "/".to_string() } else { path };
            BodyError::Invalid(vec![Violation { path, errors: vec![e.inner().to_string()] }])
        })
    }

    /// The app id, already validated by [`AppDefinition::validate`].
    pub fn app_id(&self) -> Result<AppId, crate::ProtocolError> {
        AppId::parse(&self.id)
    }

    /// Folds old forms into the new ones: `ports` into `portDefinitions`,
    /// `uris` into `fetch`, and gives apps without ports Marathon's default single port.
    pub fn normalize(&mut self) {
        if let Ok(id) = AppId::parse(&self.id) {
            self.id = id.to_string();
        }
        if self.port_definitions.is_none() {
            let defs = match self.ports.take() {
                Some(ports) => ports
                    .into_iter()
                    .map(|port| PortDefinition { port, protocol: "tcp".into(), name: None, labels: BTreeMap::new() })
                    .collect(),
                None if self.container_port_mappings().is_some() || self.network_mode() == NetworkMode::Bridge => {
                    Vec::new()
                }
                None => vec![PortDefinition { port: 0, protocol: "tcp".into(), name: None, labels: BTreeMap::new() }],
            };
            self.port_definitions = Some(defs);
        }
        self.ports = None;
        for uri in std::mem::take(&mut self.uris) {
            let extract = is_archive(&uri);
            self.fetch.push(FetchUri { uri, executable: false, extract, cache: false, dest_path: None });
        }
    }

    /// The port mappings of a container app, in either the old or the new place.
    pub fn container_port_mappings(&self) -> Option<&Vec<PortMapping>> {
        let container = self.container.as_ref()?;
        container.port_mappings.as_ref().or_else(|| container.docker.as_ref().and_then(|d| d.port_mappings.as_ref()))
    }

    /// HOST unless the app asks for a bridge (old `docker.network` or new `networks`).
    pub fn network_mode(&self) -> NetworkMode {
        if let Some(network) = self.networks.first() {
            return match network.mode.as_str() {
                "container/bridge" => NetworkMode::Bridge,
                "container" => NetworkMode::None,
                _ => NetworkMode::Host,
            };
        }
        match self.container.as_ref().and_then(|c| c.docker.as_ref()).and_then(|d| d.network.as_deref()) {
            Some("BRIDGE") | Some("USER") => NetworkMode::Bridge,
            Some("NONE") => NetworkMode::None,
            _ => NetworkMode::Host,
        }
    }

    /// In BRIDGE mode, the port mappings that take a host port (`hostPort` present, 0 =
    /// any), in the order the task's host ports are assigned to them.
    pub fn host_port_mappings(&self) -> Vec<&PortMapping> {
        match (self.network_mode(), self.container_port_mappings()) {
            (NetworkMode::Bridge, Some(mappings)) => mappings.iter().filter(|m| m.host_port.is_some()).collect(),
            _ => Vec::new(),
        }
    }

    /// Number of host ports each task needs.
    pub fn host_port_count(&self) -> usize {
        match self.network_mode() {
            NetworkMode::Host => match self.container_port_mappings() {
                Some(mappings) if self.port_definitions.as_ref().is_none_or(Vec::is_empty) => mappings.len(),
                _ => self.port_definitions.as_ref().map_or(0, Vec::len),
            },
            NetworkMode::Bridge => self.host_port_mappings().len(),
            NetworkMode::None => 0,
        }
    }

    /// Host ports requested explicitly (non-zero, with `requirePorts` or a mapping's hostPort);
    /// one out of range (refused by `validate`) is left out.
    pub fn fixed_host_ports(&self) -> Vec<u16> {
        let mut fixed = Vec::new();
        if self.require_ports {
            for def in self.port_definitions.iter().flatten() {
                if let Some(port) = u16::try_from(def.port).ok().filter(|p| *p > 0) {
                    fixed.push(port);
                }
            }
        }
        if let Some(mappings) = self.container_port_mappings() {
            for m in mappings {
                if let Some(port) = m.host_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
                    fixed.push(port);
                }
            }
        }
        fixed
    }

    /// Port names in order, for `PORT_<NAME>` variables.
    pub fn port_names(&self) -> Vec<Option<String>> {
        match (self.network_mode(), self.container_port_mappings()) {
            (NetworkMode::Bridge, Some(_)) => self.host_port_mappings().iter().map(|p| p.name.clone()).collect(),
            _ => self.port_definitions.iter().flatten().map(|d| d.name.clone()).collect(),
        }
    }

    pub fn parsed_constraints(&self) -> Vec<Constraint> {
        self.constraints.iter().filter_map(|c| Constraint::parse(c).ok()).collect()
    }

    /// Checks every rule; all violations are reported at once.
    pub fn validate(&self) -> Result<(), Vec<Violation>> {
        let mut v = Vec::<Violation>::new();
        let mut add = |path: &str, error: String| {
            if let Some(existing) = v.iter_mut().find(|x| x.path == path) {
                existing.errors.push(error);
            } else {
                v.push(Violation { path: path.to_string(), errors: vec![error] });
            }
        };
        if let Err(e) = AppId::parse(&self.id) {
            add("/id", e.to_string());
        } else if let Err(e) = crate::check_id_bounds(&self.id) {
            add("/id", e);
        }
        if self.instances < 0 {
            add("/instances", "must be greater than or equal to 0".into());
        }
        for (path, error) in bounds::violations(self).into_iter().chain(lb_labels::violations(&self.labels)) {
            add(&path, error);
        }
        if self.cpus <= 0.0 || !self.cpus.is_finite() {
            add("/cpus", "must be greater than 0".into());
        }
        if self.mem < 0.0 || !self.mem.is_finite() {
            add("/mem", "must be greater than or equal to 0".into());
        }
        if self.disk < 0.0 || !self.disk.is_finite() {
            add("/disk", "must be greater than or equal to 0".into());
        }
        if self.gpus != 0.0 {
            add("/gpus", "GPU resources are not offered by Plinth agents".into());
        }
        let has_cmd = self.cmd.as_deref().is_some_and(|c| !c.trim().is_empty());
        let has_args = self.args.as_ref().is_some_and(|a| !a.is_empty());
        if has_cmd && has_args {
            add("/", "AppDefinition must not contain both 'cmd' and 'args'".into());
        }
        if !has_cmd && !has_args && self.container.is_none() {
            add("/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'".into());
        }
        for (name, value) in &self.env {
            if !value.is_string() {
                add(&format!("/env/{name}"), "environment values must be strings (secrets are not supported)".into());
            }
        }
        if self.backoff_seconds.is_nan() || self.backoff_seconds < 0.0 {
            add("/backoffSeconds", "must be greater than or equal to 0".into());
        }
        if self.backoff_factor.is_nan() || self.backoff_factor < 1.0 {
            add("/backoffFactor", "must be greater than or equal to 1".into());
        }
        if self.max_launch_delay_seconds.is_nan() || self.max_launch_delay_seconds < 0.0 {
            add("/maxLaunchDelaySeconds", "must be greater than or equal to 0".into());
        }
        if self.task_kill_grace_period_seconds.is_nan() || self.task_kill_grace_period_seconds < 0.0 {
            add("/taskKillGracePeriodSeconds", "must be greater than or equal to 0".into());
        }
        let us = &self.upgrade_strategy;
        if !(0.0..=1.0).contains(&us.minimum_health_capacity) {
            add("/upgradeStrategy/minimumHealthCapacity", "must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&us.maximum_over_capacity) {
            add("/upgradeStrategy/maximumOverCapacity", "must be between 0 and 1".into());
        }
        if !matches!(self.kill_selection.as_str(), "YOUNGEST_FIRST" | "OLDEST_FIRST") {
            add("/killSelection", "must be YOUNGEST_FIRST or OLDEST_FIRST".into());
        }
        if let UnreachableStrategy::Disabled(s) = &self.unreachable_strategy {
            if s != "disabled" {
                add("/unreachableStrategy", "must be an object or \"disabled\"".into());
            }
        }
        if let UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds } =
            &self.unreachable_strategy
        {
            if *inactive_after_seconds < 0.0 || *expunge_after_seconds < 0.0 {
                add("/unreachableStrategy", "seconds must be non-negative".into());
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(e) = Constraint::parse(c) {
                add(&format!("/constraints({i})"), e);
            }
        }
        for (i, port) in self.ports.iter().flatten().enumerate() {
            if !(0..=65535).contains(port) {
                add(&format!("/ports({i})"), "must be between 0 and 65535".into());
            }
        }
        let mut names = Vec::new();
        for (i, def) in self.port_definitions.iter().flatten().enumerate() {
            if !(0..=65535).contains(&def.port) {
                add(&format!("/portDefinitions({i})/port"), "must be between 0 and 65535".into());
            }
            if !matches!(def.protocol.as_str(), "tcp" | "udp" | "udp,tcp" | "tcp,udp") {
                add(&format!("/portDefinitions({i})/protocol"), "must be tcp, udp or udp,tcp".into());
            }
            if let Some(name) = &def.name {
                if names.contains(name) {
                    add(&format!("/portDefinitions({i})/name"), format!("port name '{name}' is used twice"));
                }
                names.push(name.clone());
            }
        }
        if let Some(container) = &self.container {
            if !matches!(container.kind.as_str(), "DOCKER" | "MESOS") {
                add("/container/type", "must be DOCKER or MESOS".into());
            }
            match &container.docker {
                Some(d) if d.image.trim().is_empty() => add("/container/docker/image", "must not be empty".into()),
                // Refused here, not at pull time: a name no registry can serve never deploys.
                Some(d) => {
                    if let Err(e) = plinth_oci::ImageRef::parse(&d.image) {
                        add("/container/docker/image", format!("is not a valid image name: {e}"))
                    }
                }
                None if !has_cmd && !has_args => {
                    add("/container/docker", "a container without an image needs 'cmd' or 'args'".into())
                }
                _ => {}
            }
            for (i, m) in self.container_port_mappings().into_iter().flatten().enumerate() {
                if !(0..=65535).contains(&m.container_port) {
                    add(&format!("/container/portMappings({i})/containerPort"), "must be between 0 and 65535".into());
                }
                if let Some(hp) = m.host_port {
                    if !(0..=65535).contains(&hp) {
                        add(&format!("/container/portMappings({i})/hostPort"), "must be between 0 and 65535".into());
                    }
                }
                if !(0..=65535).contains(&m.service_port) {
                    add(&format!("/container/portMappings({i})/servicePort"), "must be between 0 and 65535".into());
                }
            }
            for (i, vol) in container.volumes.iter().enumerate() {
                if !vol.container_path.starts_with('/') && vol.host_path.is_some() {
                    add(&format!("/container/volumes({i})/containerPath"), "must be an absolute path".into());
                }
                if !matches!(vol.mode.as_str(), "RO" | "RW") {
                    add(&format!("/container/volumes({i})/mode"), "must be RO or RW".into());
                }
            }
        }
        for (i, net) in self.networks.iter().enumerate() {
            if !matches!(net.mode.as_str(), "host" | "container/bridge" | "container") {
                add(&format!("/networks({i})/mode"), "must be host, container/bridge or container".into());
            }
        }
        let port_count =
            self.port_definitions.as_ref().map_or_else(|| self.ports.as_ref().map_or(1, Vec::len), Vec::len);
        let port_count = port_count.max(self.container_port_mappings().map_or(0, Vec::len));
        for (i, hc) in self.health_checks.iter().enumerate() {
            let path = format!("/healthChecks({i})");
            let protocol = hc.protocol.as_str();
            if !matches!(protocol, "HTTP" | "HTTPS" | "TCP" | "COMMAND" | "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP") {
                add(&format!("{path}/protocol"), format!("unknown health check protocol '{protocol}'"));
            }
            if protocol == "COMMAND" {
                if hc.command.as_ref().is_none_or(|c| c.value.trim().is_empty()) {
                    add(&format!("{path}/command"), "COMMAND health checks need command.value".into());
                }
            } else {
                match (hc.port_index, hc.port) {
                    (Some(_), Some(_)) => add(&path, "use either portIndex or port, not both".into()),
                    (Some(index), None) if !usize::try_from(index).is_ok_and(|i| i < port_count) => add(
                        &format!("{path}/portIndex"),
                        format!("portIndex {index} is beyond the app's {port_count} port(s)"),
                    ),
                    (None, Some(port)) if !(1..=65535).contains(&port) => {
                        add(&format!("{path}/port"), "must be between 1 and 65535".into())
                    }
                    (None, None) if port_count == 0 => {
                        add(&path, "the app has no ports to check; set port or define ports".into())
                    }
                    _ => {}
                }
            }
            if hc.interval_seconds == 0 {
                add(&format!("{path}/intervalSeconds"), "must be greater than 0".into());
            }
            if hc.timeout_seconds == 0 {
                add(&format!("{path}/timeoutSeconds"), "must be greater than 0".into());
            }
        }
        for (i, dep) in self.dependencies.iter().enumerate() {
            if let Err(e) = AppId::parse(dep) {
                add(&format!("/dependencies({i})"), e.to_string());
            }
        }
        for (i, f) in self.fetch.iter().enumerate() {
            if f.uri.trim().is_empty() {
                add(&format!("/fetch({i})/uri"), "must not be empty".into());
            }
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(v)
        }
    }
}

/// A container in the form of Marathon before 1.0 (`"container": {"image":
/// "docker:///busybox", "options": [...]}`), which 1.x reads as a Docker container without
/// an image: said as such, with the 1.x form to write instead.
fn pre_1_0_container(value: &Value) -> Option<Violation> {
    let container = value.get("container")?.as_object()?;
    let image = container.get("image");
    if image.is_none() && !container.contains_key("options") {
        return None;
    }
    let image = image
        .and_then(Value::as_str)
        .map(|i| i.trim_start_matches("docker:").trim_start_matches('/').to_string())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| "IMAGE".into());
    let options = if container.contains_key("options") {
        "; Docker options go in \"docker\": {\"parameters\": [{\"key\": \"...\", \"value\": \"...\"}]}"
    } else {
        ""
    };
    Some(Violation {
        path: "/container".into(),
        errors: vec![format!(
            "this is the container format of Marathon before 1.0 (container.image, container.options), \
             which Marathon 1.x and Plinth no longer read; write it as \
             \"container\": {{\"type\": \"DOCKER\", \"docker\": {{\"image\": \"{image}\"}}}}{options}"
        )],
    })
}

fn is_archive(uri: &str) -> bool {
    [".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip", ".tar"].iter().any(|s| uri.ends_with(s))
}

/// Why a request body could not become an app definition.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Not JSON at all (HTTP 400).
    Malformed(String),
    /// JSON of the wrong shape or values (HTTP 422).
    Invalid(Vec<Violation>),
}

pub mod bounds;
pub mod lb_labels;
mod task_state;
pub use task_state::TaskState;

#[cfg(test)]
mod tests;
