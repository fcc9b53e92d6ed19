//! The supervisor: each tick decides, per app that needs it, which tasks to kill (scale
//! down, rolling replacement within `upgradeStrategy`) and how many to launch, holding
//! launches back for dependencies and backoff; a task that ends unasked starts the
//! app's backoff.
use std::collections::{BTreeSet, HashSet};

use serde_json::json;

use plinth_protocol::{AppDefinition, AppId, TaskId, TaskState, Timestamp};

use crate::model::{Readiness, TaskRecord};
use crate::placement::OfferRound;
use crate::state::Core;

impl Core {
    /// One scheduling round: lost agents, supervision (launch via offers, kill
    /// surplus), deployment progress.
    pub fn tick(&mut self, now: Timestamp) {
        self.detect_lost_agents(now);
        self.expunge_unreachable(now);
        self.release_drained(now);
        let mut todo: BTreeSet<AppId> = std::mem::take(&mut self.needs_supervision).into_iter().collect();
        todo.extend(self.offer_stats.keys().cloned());
        let mut offers = OfferRound::new(self);
        let mut budget = self.config.max_launches_per_tick;
        let mut looked_at = HashSet::with_capacity(todo.len());
        for app_id in todo {
            if budget == 0 {
                // Out of launch tokens this round: look again next tick.
                self.needs_supervision.insert(app_id);
                continue;
            }
            self.supervise(&app_id, &mut offers, &mut budget, now);
            looked_at.insert(app_id);
        }
        // A deployment can only have moved if its app was looked at.
        self.progress_deployments(&looked_at, now);
    }

    /// Decides launches and kills for one app.
    pub(crate) fn supervise(&mut self, app_id: &AppId, offers: &mut OfferRound, budget: &mut usize, now: Timestamp) {
        let Some(app) = self.apps.get(app_id) else { return };
        let target = instance_count(&app.definition);
        let config_version = app.config_version.clone();
        let has_checks = Readiness::of(&app.definition);
        let strategy = app.definition.upgrade_strategy.clone();
        let oldest_first = app.definition.kill_selection == "OLDEST_FIRST";
        let unreachable_strategy = app.definition.unreachable_strategy.clone();
        let all: Vec<&TaskRecord> =
            self.app_tasks(app_id).into_iter().filter(|t| !self.is_inactive(t, &unreachable_strategy, now)).collect();
        let total = all.len();
        let any_unreachable = all.iter().any(|t| t.unreachable_since.is_some());
        // Tasks on a draining agent are replaced like tasks of an old version: within the
        // upgrade strategy, replacements ready before they stop.
        let draining = |t: &TaskRecord| self.agents.get(&t.agent_id).is_some_and(|a| a.record.draining);
        let current = |t: &TaskRecord| t.version == config_version && !draining(t);
        let mut new: Vec<&TaskRecord> = all.iter().copied().filter(|t| !t.kill_requested && current(t)).collect();
        let old: Vec<&TaskRecord> = all.iter().copied().filter(|t| !t.kill_requested && !current(t)).collect();
        let mut kills: Vec<(TaskId, &'static str)> = Vec::new();
        let launches;
        if old.is_empty() {
            if new.len() > target {
                // Scale down: not-yet-running tasks first, then by killSelection.
                new.sort_by(|a, b| {
                    a.is_running().cmp(&b.is_running()).then_with(|| {
                        if oldest_first {
                            a.staged_at.cmp(&b.staged_at)
                        } else {
                            b.staged_at.cmp(&a.staged_at)
                        }
                    })
                });
                for t in new.iter().take(new.len() - target) {
                    kills.push((t.id.clone(), "scaling down"));
                }
            }
            launches = target.saturating_sub(new.len());
        } else {
            // Rolling replacement within upgradeStrategy.
            // why: float-to-int `as` saturates (NaN is 0); both capacities are validated in 0..=1.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let max_total = ((target as f64) * (1.0 + strategy.maximum_over_capacity)).floor() as usize;
            let max_total = max_total.max(target);
            // why: as above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let min_ready = ((target as f64) * strategy.minimum_health_capacity).ceil() as usize;
            let ready_new = new.iter().filter(|t| t.is_ready(has_checks)).count();
            let ready_old = old.iter().filter(|t| t.is_ready(has_checks)).count();
            let want_new = target.saturating_sub(new.len());
            let mut launch = want_new.min(max_total.saturating_sub(total));
            let mut killable = (ready_new + ready_old).saturating_sub(min_ready);
            // Old tasks that serve nothing can go at once.
            for t in old.iter().filter(|t| !t.is_ready(has_checks)) {
                kills.push((t.id.clone(), "replaced by a new version"));
            }
            let mut ready_old_sorted: Vec<&&TaskRecord> = old.iter().filter(|t| t.is_ready(has_checks)).collect();
            ready_old_sorted.sort_by_key(|t| t.staged_at);
            // Never leave more old tasks than the new version still lacks.
            let excess_old = (ready_old + new.len()).saturating_sub(target);
            for (killed_ready, t) in ready_old_sorted.iter().enumerate() {
                if killable == 0 || killed_ready >= excess_old.max(if new.len() >= target { ready_old } else { 0 }) {
                    break;
                }
                kills.push((t.id.clone(), "replaced by a new version"));
                killable -= 1;
            }
            let transitional = all.iter().any(|t| t.kill_requested || !t.is_ready(has_checks));
            if launch == 0 && kills.is_empty() && !transitional && !ready_old_sorted.is_empty() {
                // maximumOverCapacity 0 with minimumHealthCapacity 1 would never move: make room for one.
                kills.push((ready_old_sorted[0].id.clone(), "replaced by a new version"));
                launch = 0;
            }
            launches = launch;
        }
        for (id, reason) in kills {
            self.request_kill(&id, reason, now);
        }
        if launches == 0 {
            self.offer_stats.remove(app_id);
            if any_unreachable {
                // Look again when inactiveAfterSeconds passes.
                self.needs_supervision.insert(app_id.clone());
            }
            return;
        }
        let backoff_until = self.apps.get(app_id).map_or(Timestamp(0), |a| a.backoff.not_before);
        let since = self.offer_stats.get(app_id).map_or(now, |(s, _)| *s);
        let mut stats = self.offer_stats.remove(app_id).map(|(_, s)| s).unwrap_or_default();
        if let Some(dependency) = self.unsettled_dependency(app_id) {
            // Dependencies order start and upgrade: launch only once they serve.
            stats.last_round.clear();
            stats.last_round.insert(
                "Dependency".into(),
                (0, format!("waiting for dependency {dependency} to be running and healthy")),
            );
            self.offer_stats.insert(app_id.clone(), (since, stats));
            return;
        }
        if now < backoff_until {
            stats.last_round.clear();
            stats.last_round.insert(
                "Backoff".into(),
                (
                    0,
                    format!(
                        "launch delayed by backoff for {:.1}s after task failures",
                        backoff_until.seconds_since(now)
                    ),
                ),
            );
            self.offer_stats.insert(app_id.clone(), (since, stats));
            return;
        }
        let wanted = launches.min(*budget);
        let placed = self.place(app_id, wanted, offers, &mut stats, now);
        *budget -= placed;
        if placed < wanted {
            self.offer_stats.insert(app_id.clone(), (since, stats));
        } else if placed < launches {
            self.needs_supervision.insert(app_id.clone());
        }
    }

    /// A task reached a terminal state: report it, apply backoff when it was not
    /// asked to stop, and drop it (its resources return to the agent).
    pub(crate) fn finish_task(&mut self, id: &TaskId, state: TaskState, message: Option<String>, now: Timestamp) {
        let Some(mut task) = self.remove_task(id) else { return };
        task.state = state;
        task.updated_at = now;
        if message.is_some() {
            task.message = message;
        }
        self.emit_status(&task, now);
        if task.kill_requested {
            return;
        }
        if let Some(app) = self.apps.get_mut(&task.app_id) {
            let def = &app.definition;
            app.backoff.failures += 1;
            // why: at most 64.
            #[allow(clippy::cast_possible_wrap)]
            let exponent = app.backoff.failures.saturating_sub(1).min(64) as i32;
            let delay = (def.backoff_seconds * def.backoff_factor.powi(exponent)).min(def.max_launch_delay_seconds);
            // why: float-to-int `as` saturates (NaN is 0); the delay is validated non-negative.
            #[allow(clippy::cast_possible_truncation)]
            let delay_ms = (delay * 1000.0) as i64;
            app.backoff.not_before = now.plus_millis(delay_ms);
            app.last_task_failure = Some(json!({
                "appId": task.app_id, "host": task.host, "message": task.message.clone().unwrap_or_default(),
                "state": state, "taskId": task.id, "timestamp": now.to_iso(), "version": task.version,
                "slaveId": task.agent_id,
            }));
            self.changes.apps.insert(task.app_id.clone());
        }
    }

    /// The first of an app's `dependencies` that is not settled: short of its instances
    /// of ready tasks, or in a deployment. Unknown dependencies do not hold anything back.
    pub(crate) fn unsettled_dependency(&self, app_id: &AppId) -> Option<AppId> {
        let app = self.apps.get(app_id)?;
        app.definition.dependencies.iter().filter_map(|d| AppId::parse(d).ok()).find(|dep| {
            dep != app_id
                && self.apps.contains_key(dep)
                && (!self.app_converged(dep) || self.deployments.values().any(|d| &d.app_id == dep))
        })
    }
}

/// `instances` as a count (negative, which the API refuses, counts as 0).
pub(crate) fn instance_count(def: &AppDefinition) -> usize {
    usize::try_from(def.instances.max(0)).unwrap_or(usize::MAX)
}
