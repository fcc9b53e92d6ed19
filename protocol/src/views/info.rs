//! `GET /v2/info` and `GET /v2/leader` as Marathon writes them (`info.raml`; the
//! `event_subscriber` of Marathon 1.4). Marathon writes every configuration key, `null`
//! for what is not set; so does Plinth, with `null` where it has nothing to say.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub leader: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarathonInfo {
    pub name: String,
    pub version: String,
    pub buildref: String,
    pub elected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(rename = "frameworkId", default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<String>,
    pub marathon_config: MarathonConfig,
    pub zookeeper_config: ZooKeeperConfig,
    pub http_config: HttpConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_subscriber: Option<EventSubscriber>,
}

/// The scheduler's settings (Marathon's command line flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MarathonConfig {
    pub access_control_allow_origin: Option<Vec<String>>,
    pub checkpoint: Option<bool>,
    pub decline_offer_duration: Option<u64>,
    pub default_network_name: Option<String>,
    pub env_vars_prefix: Option<String>,
    pub executor: Option<String>,
    pub failover_timeout: Option<u64>,
    pub features: Vec<String>,
    pub framework_name: Option<String>,
    pub ha: Option<bool>,
    pub hostname: Option<String>,
    pub launch_token: Option<u64>,
    pub launch_token_refresh_interval: Option<u64>,
    pub leader_proxy_connection_timeout_ms: Option<u64>,
    pub leader_proxy_read_timeout_ms: Option<u64>,
    pub local_port_max: Option<u16>,
    pub local_port_min: Option<u16>,
    pub master: Option<String>,
    pub max_instances_per_offer: Option<u64>,
    pub mesos_bridge_name: Option<String>,
    pub mesos_heartbeat_failure_threshold: Option<u64>,
    pub mesos_heartbeat_interval: Option<u64>,
    pub mesos_leader_ui_url: Option<String>,
    pub mesos_role: Option<String>,
    pub mesos_user: Option<String>,
    pub min_revive_offers_interval: Option<u64>,
    pub offer_matching_timeout: Option<u64>,
    pub on_elected_prepare_timeout: Option<u64>,
    pub reconciliation_initial_delay: Option<u64>,
    pub reconciliation_interval: Option<u64>,
    pub scale_apps_initial_delay: Option<u64>,
    pub scale_apps_interval: Option<u64>,
    pub store_cache: Option<bool>,
    pub task_launch_confirm_timeout: Option<u64>,
    pub task_launch_timeout: Option<u64>,
    pub task_lost_expunge_initial_delay: u64,
    pub task_lost_expunge_interval: u64,
    pub task_reservation_timeout: Option<u64>,
    pub webui_url: Option<String>,
}

/// Marathon's state store settings. Plinth keeps its state in its own store, not in
/// ZooKeeper: `zk` is empty and the rest are Marathon's defaults, which change nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZooKeeperConfig {
    pub zk: String,
    pub zk_compression: Option<bool>,
    pub zk_compression_threshold: Option<u64>,
    pub zk_connection_timeout: u64,
    pub zk_max_node_size: Option<u64>,
    pub zk_max_versions: u64,
    pub zk_session_timeout: u64,
    pub zk_timeout: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpConfig {
    pub http_port: u16,
    /// 0: no HTTPS listener.
    pub https_port: u16,
}

/// HTTP callback subscribers (`--event_subscriber http_callback`, Marathon 1.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSubscriber {
    #[serde(rename = "type")]
    pub kind: String,
    pub http_endpoints: Vec<String>,
}
