//! Deployments as Marathon writes them: `/v2/deployments` (`DeploymentStepInfo` of
//! `deploymentEventsInfo.raml`), the `{"deploymentId","version"}` answer of every change
//! (`deploymentResult.raml`), the steps of a dry run, and the plan events carry.
use serde::{Deserialize, Serialize};

use super::app::App;
use super::task::TaskReadinessCheckResult;

/// `{"action": "ScaleApplication", "app": "/web"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentAction {
    pub action: String,
    pub app: String,
}

/// One step: actions that run together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStep {
    pub actions: Vec<DeploymentAction>,
}

/// A current action and the readiness of the tasks it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentActionInfo {
    pub action: String,
    pub app: String,
    pub readiness_check_results: Vec<TaskReadinessCheckResult>,
}

/// A running deployment (`GET /v2/deployments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfo {
    pub id: String,
    pub version: String,
    pub affected_apps: Vec<String>,
    pub affected_pods: Vec<String>,
    pub steps: Vec<DeploymentStep>,
    pub current_actions: Vec<DeploymentActionInfo>,
    pub current_step: usize,
    pub total_steps: usize,
}

/// What every change answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    pub deployment_id: String,
    pub version: String,
}

/// A dry run's answer (`DeploymentSteps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSteps {
    pub steps: Vec<DeploymentStep>,
}

/// A deployment plan as events carry it (Marathon 1.4: with the groups before and after).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentPlan {
    pub id: String,
    pub original: PlanGroup,
    pub target: PlanGroup,
    pub steps: Vec<DeploymentStep>,
    pub version: String,
}

/// The root group of a plan's `original` or `target`, holding the apps the plan touches
/// (Plinth's deployments are per app, so the rest of the tree is left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanGroup {
    pub id: String,
    pub apps: Vec<App>,
    pub groups: Vec<PlanGroup>,
    pub pods: Vec<serde_json::Map<String, serde_json::Value>>,
    pub dependencies: Vec<String>,
    pub version: String,
}

impl PlanGroup {
    /// The root group with these apps, at `version`.
    pub fn root(apps: Vec<App>, version: String) -> Self {
        PlanGroup { id: "/".into(), apps, groups: Vec::new(), pods: Vec::new(), dependencies: Vec::new(), version }
    }
}
