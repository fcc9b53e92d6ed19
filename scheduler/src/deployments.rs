//! Deployments: plans of steps moving an app to a target version and size, their
//! progress (a step is done when the app converged), why one waits, and their events.
use std::collections::HashSet;

use plinth_protocol::views::app::App;
use plinth_protocol::views::deployment::{DeploymentPlan, DeploymentStep, PlanGroup};
use plinth_protocol::views::events::{
    DeploymentFailed, DeploymentInfoEvent, DeploymentStepFailure, DeploymentStepSuccess, DeploymentSuccess,
};
use plinth_protocol::{AppDefinition, AppId, DeploymentId, Timestamp};

use crate::health::failures_per_check;
use crate::model::{DeploymentAction, DeploymentRecord, Readiness, TaskRecord};
use crate::placement::summarize_declines;
use crate::state::Core;
use crate::supervision::instance_count;

impl Core {
    pub(crate) fn new_deployment(
        &mut self,
        app_id: &AppId,
        version: &str,
        steps: Vec<Vec<DeploymentAction>>,
        previous: Option<(AppDefinition, String)>,
        now: Timestamp,
    ) -> DeploymentId {
        let id = DeploymentId::new(self.uuid().to_string());
        let (previous, previous_config_version) = match previous {
            Some((def, v)) => (Some(def), Some(v)),
            None => (None, None),
        };
        let deployment = DeploymentRecord {
            id: id.clone(),
            version: version.to_string(),
            app_id: app_id.clone(),
            steps,
            current_step: 1,
            started_at: now,
            previous,
            previous_config_version,
            blocked_reason: None,
        };
        let plan = self.plan_view(&deployment);
        let current_step = plan.steps.first().cloned().unwrap_or(DeploymentStep { actions: Vec::new() });
        self.emit(now, &DeploymentInfoEvent { plan, current_step });
        self.deployments.insert(id.clone(), deployment);
        self.changes.deployments.insert(id.clone());
        self.needs_supervision.insert(app_id.clone());
        id
    }

    /// Ends deployments of an app that a newer command supersedes.
    pub(crate) fn supersede_deployments(&mut self, app: &AppId, reason: &str, now: Timestamp) {
        let ids: Vec<DeploymentId> =
            self.deployments.values().filter(|d| &d.app_id == app).map(|d| d.id.clone()).collect();
        for id in ids {
            if let Some(d) = self.deployments.remove(&id) {
                self.changes.deployments.insert(id.clone());
                self.emit_deployment_failed(&d, reason, now);
            }
        }
    }

    /// The plan as Marathon's events carry it: the steps, and the root group before and
    /// after holding the app (its previous definition; the current one unless it is stopped).
    pub(crate) fn plan_view(&self, d: &DeploymentRecord) -> DeploymentPlan {
        let previous_version = d.previous.as_ref().and_then(|p| p.version.clone()).unwrap_or_else(|| d.version.clone());
        let original = PlanGroup::root(d.previous.iter().map(App::of).collect(), previous_version);
        let stopping = d.steps.iter().flatten().any(|a| *a == DeploymentAction::StopApplication);
        let target_apps = match self.apps.get(&d.app_id) {
            Some(app) if !stopping => vec![App::of(&app.definition)],
            _ => Vec::new(),
        };
        DeploymentPlan {
            id: d.id.to_string(),
            original,
            target: PlanGroup::root(target_apps, d.version.clone()),
            steps: d.steps_view(),
            version: d.version.clone(),
        }
    }

    /// The step `index` (0-based) of a plan, empty past its end.
    fn step_of(plan: &DeploymentPlan, index: usize) -> DeploymentStep {
        plan.steps.get(index).cloned().unwrap_or(DeploymentStep { actions: Vec::new() })
    }

    /// Marathon's pair of events for a deployment that ends without success.
    pub(crate) fn emit_deployment_failed(&mut self, d: &DeploymentRecord, reason: &str, now: Timestamp) {
        let plan = self.plan_view(d);
        let current_step = Self::step_of(&plan, d.current_step.saturating_sub(1));
        self.emit(now, &DeploymentStepFailure { plan: plan.clone(), current_step });
        self.emit(now, &DeploymentFailed { id: d.id.to_string(), plan, reason: Some(reason.to_string()) });
    }

    pub(crate) fn progress_deployments(&mut self, apps: &HashSet<AppId>, now: Timestamp) {
        let ids: Vec<DeploymentId> =
            self.deployments.values().filter(|d| apps.contains(&d.app_id)).map(|d| d.id.clone()).collect();
        for id in ids {
            // Finished steps cascade within one tick.
            while let Some(d) = self.deployments.get(&id).cloned() {
                let done = match d.current_actions().first() {
                    // Marathon's start step creates the app with no tasks: done at once.
                    Some(DeploymentAction::StartApplication) => true,
                    Some(DeploymentAction::StopApplication) => {
                        self.tasks_by_app.get(&d.app_id).is_none_or(HashSet::is_empty)
                    }
                    Some(_) => self.app_converged(&d.app_id),
                    None => true,
                };
                if done && d.current_step < d.steps.len() {
                    let d = self.deployments.get_mut(&id).expect("present above");
                    d.current_step += 1;
                    let d = d.clone();
                    let plan = self.plan_view(&d);
                    self.changes.deployments.insert(id.clone());
                    // The step that just completed is the one before the new current step.
                    let current_step = Self::step_of(&plan, d.current_step.saturating_sub(2));
                    self.emit(now, &DeploymentStepSuccess { plan, current_step });
                    continue;
                }
                if done {
                    self.deployments.remove(&id);
                    self.changes.deployments.insert(id.clone());
                    let plan = self.plan_view(&d);
                    self.emit(now, &DeploymentSuccess { id: id.to_string(), plan });
                    break;
                }
                let blocked = self
                    .offer_stats
                    .get(&d.app_id)
                    .map(|(_, s)| summarize_declines(s))
                    .or_else(|| self.readiness_gap(&d.app_id));
                if blocked != d.blocked_reason {
                    if let Some(d) = self.deployments.get_mut(&id) {
                        d.blocked_reason = blocked;
                    }
                    self.changes.deployments.insert(id.clone());
                }
                break;
            }
        }
    }

    /// Why launched tasks of the current version do not count yet (not running, not
    /// healthy, not ready), e.g. `waiting for 2 of 4 new tasks to become healthy (last
    /// failure: HTTP 500)`.
    pub(crate) fn readiness_gap(&self, app_id: &AppId) -> Option<String> {
        let app = self.apps.get(app_id)?;
        let needs = Readiness::of(&app.definition);
        let target = instance_count(&app.definition);
        let new: Vec<&TaskRecord> = self
            .app_tasks(app_id)
            .into_iter()
            .filter(|t| !t.kill_requested && t.version == app.config_version)
            .collect();
        if new.is_empty() {
            return None;
        }
        let ready = new.iter().filter(|t| t.is_ready(needs)).count();
        if ready >= target {
            return None;
        }
        let running = new.iter().filter(|t| t.is_running()).count();
        if running < new.len() {
            return Some(format!(
                "waiting for {} of {target} new tasks to start running",
                target - running.min(target)
            ));
        }
        let what = if needs.health_checks { "healthy" } else { "ready" };
        let cause = new
            .iter()
            .filter_map(|t| t.health.as_ref())
            .flat_map(|h| failures_per_check(Some(h)))
            .map(|(_, cause)| cause)
            .find(|c| !c.is_empty());
        let mut text = format!("waiting for {} of {target} new tasks to become {what}", target - ready);
        if let Some(cause) = cause {
            text.push_str(&format!(" (last failure: {cause})"));
        }
        Some(text)
    }

    /// All of the app's tasks run its current config, are ready, and number `instances`.
    pub(crate) fn app_converged(&self, app_id: &AppId) -> bool {
        let Some(app) = self.apps.get(app_id) else { return true };
        let needs = Readiness::of(&app.definition);
        let mut count = 0;
        for task in self.tasks_by_app.get(app_id).into_iter().flatten().filter_map(|t| self.tasks.get(t)) {
            if task.state.is_terminal() {
                continue;
            }
            if task.version != app.config_version || !task.is_ready(needs) {
                return false;
            }
            count += 1;
        }
        count == instance_count(&app.definition)
    }
}
