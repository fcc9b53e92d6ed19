//! `GET /v2/groups[/{id}]` as Marathon writes it (`GroupInfo` of `group.raml`).
use serde::{Deserialize, Serialize};

use super::app::AppInfo;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: String,
    pub apps: Vec<AppInfo>,
    pub groups: Vec<GroupInfo>,
    /// Plinth runs no pods: always empty.
    pub pods: Vec<serde_json::Map<String, serde_json::Value>>,
    pub dependencies: Vec<String>,
    pub version: String,
}
