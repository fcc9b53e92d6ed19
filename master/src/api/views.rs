//! The core's records as Marathon's JSON: apps with what `embed` asks for, tasks,
//! deployments, queue items, `/v2/info`, and Plinth's own `/v1` views of them. The response
//! types are `plinth_protocol::views` (Marathon's field sets, checked against the golden
//! fixtures); this module only fills them in, so every handler answers through here.
use serde_json::Value;

use plinth_protocol::views::app::{App, AppInfo};
use plinth_protocol::views::deployment::{DeploymentActionInfo, DeploymentInfo, DeploymentResult};
use plinth_protocol::views::info::{EventSubscriber, HttpConfig, MarathonConfig, MarathonInfo, ZooKeeperConfig};
use plinth_protocol::views::plinth::{
    ImagePull, Info as PlinthInfo, PlinthDeployment, PlinthQueueItem, PlinthTask, RegistryInfo, Storage,
};
use plinth_protocol::views::queue::{DeclinedOfferStep, ProcessedOffersSummary, QueueDelay, QueueItem};
use plinth_protocol::views::task::{Health, Task, TaskFailure, TaskReadinessCheckResult};
use plinth_protocol::views::{self, Identifiable};
use plinth_protocol::{TaskState, Timestamp};
use plinth_scheduler::{AppRecord, Core, DeploymentRecord, QueueEntry, TaskRecord};

use super::Params;
use crate::shell::Master;

/// The Marathon version whose API `/v2` follows (its RAML; see `plinth_protocol::views`).
pub const MARATHON_API_VERSION: &str = "1.10";
/// `/v2/info`'s `version`: the Marathon release whose RAML the fixtures follow. Clients
/// compare it as a Marathon version (`LooseVersion`, semver) to pick features, so it is
/// one; Plinth's own version is `/v1/info`'s.
pub const MARATHON_VERSION: &str = "1.10.26";

/// What to embed in app JSON (Marathon's `embed=app.tasks`, `apps.counts`, ...).
#[derive(Debug, Default, Clone, Copy)]
pub struct Embed {
    pub tasks: bool,
    pub counts: bool,
    pub deployments: bool,
    pub last_task_failure: bool,
    pub readiness: bool,
    pub task_stats: bool,
}

impl Embed {
    /// `GET /v2/apps` without `embed`: counts and deployments (Marathon adds them always).
    pub fn list() -> Self {
        Embed { counts: true, deployments: true, ..Default::default() }
    }

    /// `GET /v2/apps/{id}`: Marathon adds tasks, counts, deployments and the last failure.
    pub fn single() -> Self {
        Embed { tasks: true, counts: true, deployments: true, last_task_failure: true, ..Default::default() }
    }

    /// Adds what `embed=apps.tasks,apps.counts,...` asks for (the `app.` and `group.apps.`
    /// prefixes too, or none, as Marathon accepts).
    pub fn with_params(mut self, params: &Params) -> Self {
        for item in params.all("embed") {
            let item = ["group.apps.", "apps.", "app."].iter().find_map(|p| item.strip_prefix(p)).unwrap_or(&item);
            match item {
                // Marathon adds deployments to tasks (a deprecated habit clients rely on).
                "tasks" => {
                    self.tasks = true;
                    self.deployments = true;
                }
                "counts" => self.counts = true,
                "taskStats" => self.task_stats = true,
                "deployments" => self.deployments = true,
                "lastTaskFailure" => self.last_task_failure = true,
                "readiness" => self.readiness = true,
                "failures" => {
                    self.tasks = true;
                    self.last_task_failure = true;
                    self.deployments = true;
                }
                _ => {}
            }
        }
        self
    }
}

/// Marathon's `AppInfo` of an app: its definition and what `embed` asks for.
pub fn app_info(core: &Core, app: &AppRecord, embed: Embed) -> AppInfo {
    let mut info = AppInfo::bare(App::of(&app.definition));
    info.app.id = app.id.to_string();
    info.app.version = Some(app.version.clone());
    let tasks = core.app_tasks(&app.id);
    if embed.counts {
        let has_hc = !app.definition.health_checks.is_empty();
        let count = |f: &dyn Fn(&TaskRecord) -> bool| tasks.iter().filter(|t| f(t)).count();
        info.tasks_staged = Some(count(&|t| matches!(t.state, TaskState::TaskStaging | TaskState::TaskStarting)));
        info.tasks_running = Some(count(&|t| t.state == TaskState::TaskRunning));
        info.tasks_healthy = Some(count(&|t| t.state == TaskState::TaskRunning && has_hc && t.healthy == Some(true)));
        info.tasks_unhealthy = Some(count(&|t| has_hc && t.healthy == Some(false)));
    }
    if embed.deployments {
        info.deployments =
            Some(core.app_deployments(&app.id).iter().map(|d| Identifiable { id: d.id.to_string() }).collect());
    }
    if embed.tasks {
        let ports = core.service_ports(&app.id);
        info.tasks = Some(tasks.iter().map(|t| task(t, &ports)).collect());
    }
    if embed.readiness {
        info.readiness_check_results = Some(readiness(core, app));
    }
    if embed.last_task_failure {
        info.last_task_failure = app.last_task_failure.as_ref().and_then(task_failure);
    }
    if embed.task_stats {
        info.task_stats = core.task_stats(&app.id, Timestamp::now());
    }
    info
}

/// The readiness of an app's live tasks, per readiness check (Plinth knows the summary
/// the agent last reported: every check ready or not).
fn readiness(core: &Core, app: &AppRecord) -> Vec<TaskReadinessCheckResult> {
    let checks = &app.definition.readiness_checks;
    core.app_tasks(&app.id)
        .into_iter()
        .filter(|t| !t.state.is_terminal())
        .flat_map(|t| {
            checks.iter().map(move |c| TaskReadinessCheckResult {
                name: c.name.clone(),
                task_id: t.id.to_string(),
                ready: t.ready == Some(true),
            })
        })
        .collect()
}

/// Marathon's JSON of a task.
pub fn task(t: &TaskRecord, service_ports: &[u16]) -> Task {
    Task {
        app_id: t.app_id.to_string(),
        health_check_results: health(t.health.as_ref()),
        host: t.host.clone(),
        id: t.id.to_string(),
        ip_addresses: t.addresses(),
        ports: t.ports.clone(),
        service_ports: service_ports.to_vec(),
        slave_id: Some(t.agent_id.to_string()),
        state: t.visible_state().as_str().to_string(),
        staged_at: Some(t.staged_at.to_iso()),
        started_at: t.started_at.map(Timestamp::to_iso),
        version: Some(t.version.clone()),
        local_volumes: Vec::new(),
        region: None,
        zone: None,
        role: views::app::DEFAULT_ROLE.to_string(),
    }
}

/// The agent's `healthCheckResults` as Marathon's `Health` entries (what does not parse,
/// e.g. from an older agent, is left out).
fn health(results: Option<&Value>) -> Vec<Health> {
    results
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|r| serde_json::from_value(r.clone()).ok()).collect())
        .unwrap_or_default()
}

/// The recorded last failure as Marathon's `TaskFailure` (its reason and exit code are
/// Plinth's: `/v1/apps/{id}`).
pub fn task_failure(record: &Value) -> Option<TaskFailure> {
    let text = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_string);
    Some(TaskFailure {
        app_id: text("appId")?,
        host: text("host").unwrap_or_default(),
        message: text("message").filter(|m| !m.is_empty()).or_else(|| text("reason")).unwrap_or_default(),
        state: text("state")?,
        task_id: text("taskId")?,
        timestamp: text("timestamp")?,
        version: text("version")?,
        slave_id: text("slaveId"),
    })
}

/// Marathon's JSON of a running deployment.
pub fn deployment(core: &Core, d: &DeploymentRecord) -> DeploymentInfo {
    let readiness = core.app(&d.app_id).map(|app| readiness(core, app)).unwrap_or_default();
    DeploymentInfo {
        id: d.id.to_string(),
        version: d.version.clone(),
        affected_apps: vec![d.app_id.to_string()],
        affected_pods: Vec::new(),
        steps: d.steps_view(),
        current_actions: d
            .current_actions()
            .iter()
            .map(|a| DeploymentActionInfo {
                action: a.name().to_string(),
                app: d.app_id.to_string(),
                readiness_check_results: readiness.clone(),
            })
            .collect(),
        current_step: d.current_step,
        total_steps: d.steps.len(),
    }
}

/// `GET /v1/deployments`: the deployment and why it waits.
pub fn plinth_deployment(core: &Core, d: &DeploymentRecord) -> PlinthDeployment {
    PlinthDeployment { deployment: deployment(core, d), blocked_reason: d.blocked_reason.clone() }
}

/// `{"deploymentId","version"}`.
pub fn deployment_result(deployment: &impl ToString, version: &str) -> DeploymentResult {
    DeploymentResult { deployment_id: deployment.to_string(), version: version.to_string() }
}

/// The answer of a change that changed nothing (e.g. `scale=true` with no task left to
/// kill): as for a group change without app changes, a fresh id that is already finished.
pub fn no_change_result() -> DeploymentResult {
    DeploymentResult { deployment_id: uuid::Uuid::new_v4().to_string(), version: Timestamp::now().to_iso() }
}

/// `GET /v1/tasks`: the task and what Plinth knows beyond Marathon's fields.
pub fn plinth_task(t: &TaskRecord, service_ports: &[u16]) -> PlinthTask {
    PlinthTask {
        task: task(t, service_ports),
        agent_id: t.agent_id.to_string(),
        message: t.message.clone(),
        healthy: t.healthy,
        ready: t.ready,
        kill_reason: t.kill_reason.clone(),
    }
}

/// Marathon's decline reasons, always listed so clients see zeros too.
const REASONS: [&str; 10] = [
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
];

fn delay(entry: &QueueEntry) -> QueueDelay {
    // why: a whole number of seconds from milliseconds, far inside i64.
    #[allow(clippy::cast_possible_truncation)]
    let time_left_seconds = (entry.delay_left_ms.max(0) as f64 / 1000.0).ceil() as i64;
    QueueDelay { time_left_seconds, overdue: entry.delay_left_ms <= 0 }
}

fn offers_summary(entry: &QueueEntry) -> ProcessedOffersSummary {
    let stats = &entry.stats;
    let step = |reason: &str, declined: u64| DeclinedOfferStep {
        reason: reason.to_string(),
        declined,
        processed: stats.last_round_processed,
    };
    let mut summary: Vec<DeclinedOfferStep> =
        REASONS.iter().map(|r| step(r, stats.last_round.get(*r).map_or(0, |(n, _)| *n))).collect();
    for (reason, (declined, _)) in &stats.last_round {
        if !REASONS.contains(&reason.as_str()) {
            summary.push(step(reason, *declined));
        }
    }
    ProcessedOffersSummary {
        processed_offers_count: stats.processed,
        unused_offers_count: stats.unused,
        last_unused_offer_at: stats.last_unused_at.map(Timestamp::to_iso),
        last_used_offer_at: stats.last_used_at.map(Timestamp::to_iso),
        reject_summary_last_offers: Some(summary),
        reject_summary_launch_attempt: None,
    }
}

/// Marathon's queue item of an app waiting for launches (`None` for an app the core no
/// longer has). `last_unused_offers`: `embed=lastUnusedOffers` (Plinth keeps the counts
/// per reason, not the offers, so the list is empty).
pub fn queue_item(core: &Core, entry: &QueueEntry, last_unused_offers: bool) -> Option<QueueItem> {
    let app = core.app(&entry.app_id)?;
    Some(QueueItem {
        count: entry.count,
        delay: delay(entry),
        since: entry.since.to_iso(),
        processed_offers_summary: offers_summary(entry),
        last_unused_offers: last_unused_offers.then(Vec::new),
        app: App::of(&app.definition),
    })
}

/// `GET /v1/queue`: the queue item with readable reasons and the image pull.
pub fn plinth_queue_item(master: &Master, core: &Core, entry: &QueueEntry) -> PlinthQueueItem {
    // The core says why (declines, backoff, dependencies); only an empty round needs words here.
    let mut reasons: Vec<String> = entry.stats.last_round.values().map(|(_, message)| message.clone()).collect();
    if entry.stats.last_round.is_empty() {
        let active = core.agents().filter(|a| a.record.active && !a.record.draining).count();
        reasons.push(if active == 0 {
            "no active agents: nothing to offer".to_string()
        } else {
            "no offers processed yet".to_string()
        });
    }
    let image = core
        .app(&entry.app_id)
        .and_then(|a| a.definition.container.as_ref())
        .and_then(|c| c.docker.as_ref())
        .map(|d| d.image.clone());
    let pull = image.and_then(|image| master.registry.pull_status(&image));
    if let Some(status) = pull.as_ref().filter(|s| s.state == "failed") {
        // No offer can help an app whose image cannot be had: that goes first.
        reasons.insert(0, format!("image pull failed: {}", status.message.clone().unwrap_or_default()));
    }
    PlinthQueueItem {
        app_id: entry.app_id.to_string(),
        count: entry.count,
        delay: delay(entry),
        since: entry.since.to_iso(),
        processed_offers_summary: offers_summary(entry),
        reasons,
        last_image_pull: pull.map(|s| ImagePull { state: s.state, message: s.message, digest: s.digest, at: s.at }),
    }
}

/// The API's port from `host:port`.
fn api_port(master: &Master) -> u16 {
    master.leader.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8080)
}

/// `GET /v2/info`: Marathon's shape with Plinth's values; `null` where Plinth has no such
/// setting, Marathon's defaults where a value is required and Plinth behaves so.
pub fn info(master: &Master, core: &Core) -> MarathonInfo {
    let (service_min, service_max) = core.config().service_ports;
    let config = MarathonConfig {
        checkpoint: Some(true),
        executor: Some("//cmd".into()),
        features: Vec::new(),
        framework_name: Some("marathon".into()),
        ha: Some(false),
        hostname: Some(master.config.hostname.clone()),
        local_port_max: Some(service_max),
        local_port_min: Some(service_min),
        master: Some(format!("plinth://{}", master.leader)),
        mesos_leader_ui_url: Some(format!("http://{}/", master.leader)),
        mesos_role: Some(views::app::DEFAULT_ROLE.into()),
        mesos_user: Some("root".into()),
        reconciliation_initial_delay: Some(15_000),
        reconciliation_interval: Some(600_000),
        task_launch_timeout: Some(300_000),
        task_lost_expunge_initial_delay: 300_000,
        task_lost_expunge_interval: 30_000,
        task_reservation_timeout: Some(20_000),
        ..MarathonConfig::default()
    };
    MarathonInfo {
        name: "plinth".into(),
        version: MARATHON_VERSION.into(),
        buildref: String::new(),
        elected: true,
        leader: Some(master.leader.clone()),
        framework_id: Some(master.framework_id.clone()),
        marathon_config: config,
        zookeeper_config: ZooKeeperConfig {
            zk: String::new(),
            zk_connection_timeout: 10_000,
            zk_max_versions: 50,
            zk_session_timeout: 10_000,
            zk_timeout: 10_000,
            ..ZooKeeperConfig::default()
        },
        http_config: HttpConfig { http_port: api_port(master), https_port: 0 },
        event_subscriber: Some(EventSubscriber {
            kind: "http_callback".into(),
            http_endpoints: master.callbacks.urls(),
        }),
    }
}

/// `GET /v1/info`: what `/v2/info` has no field for.
pub fn plinth_info(master: &Master) -> PlinthInfo {
    let registry = &master.config.registry;
    PlinthInfo {
        name: "plinth".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        leader: master.leader.clone(),
        framework_id: master.framework_id.clone(),
        marathon_api: MARATHON_API_VERSION.into(),
        storage: Storage { kind: master.store().kind().into(), path: master.store().describe() },
        registry: RegistryInfo {
            listen: registry.listen.to_string(),
            insecure: registry.insecure.clone(),
            aliases: registry.aliases.clone(),
        },
        agent_timeout_ms: u64::try_from(master.config.agent_timeout.as_millis()).unwrap_or(u64::MAX),
    }
}
