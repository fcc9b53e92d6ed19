//! Group versions that can be rolled back to (`PUT /v2/groups/{id}` with `{"version"}`).
//! Each new group version records a [`GroupSnapshot`]: the group's apps by app version and
//! its groups' dependencies, bounded like the versions themselves. A rollback puts those
//! definitions back as one group change (a new version, deployments for what differs).
//! An app deleted since lost its stored versions with it, so its definitions that a
//! snapshot names are kept in the group's record when it is deleted.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use plinth_protocol::{AppDefinition, AppId};

use super::{is_within, GroupError, GroupRecord, GroupRecords, GroupSnapshot};
use crate::state::Core;

impl Core {
    /// Records a snapshot for every group of `groups` that took `version` in this change,
    /// from the apps as they are now, and drops what no listed version needs any more.
    pub(super) fn record_snapshots(&self, groups: &mut GroupRecords, version: &str) {
        let dependencies: BTreeMap<String, Vec<String>> =
            groups.iter().map(|(path, record)| (path.clone(), record.dependencies.clone())).collect();
        for (path, record) in groups.iter_mut() {
            // Deletions of this change kept definitions in the core's records, not the plan's.
            for def in self.groups.get(path).map(|r| r.kept.as_slice()).unwrap_or_default() {
                if !record.kept.iter().any(|k| same_version(k, def)) {
                    record.kept.push(def.clone());
                }
            }
            if record.versions.last().map(String::as_str) == Some(version) {
                let snapshot = GroupSnapshot {
                    apps: self
                        .apps
                        .values()
                        .filter(|a| is_within(a.id.as_str(), path))
                        .map(|a| (a.id.clone(), a.version.clone()))
                        .collect(),
                    groups: dependencies
                        .iter()
                        .filter(|(group, _)| is_within(group, path))
                        .map(|(group, deps)| (group.clone(), deps.clone()))
                        .collect(),
                };
                record.snapshots.insert(version.to_string(), Arc::new(snapshot));
            }
            prune(record);
        }
    }

    /// Before an app's stored versions go with it: keeps the definitions group snapshots
    /// name, in those groups' records.
    pub(crate) fn keep_versions_for_group_snapshots(&mut self, id: &AppId) {
        let Some(versions) = self.versions.get(id) else { return };
        for (path, record) in self.groups.iter_mut() {
            let named: Vec<&String> = record.snapshots.values().filter_map(|s| s.apps.get(id)).collect();
            let mut kept = false;
            for def in named.into_iter().filter_map(|v| versions.get(v)) {
                if !record.kept.iter().any(|k| same_version(k, def)) {
                    record.kept.push(def.clone());
                    kept = true;
                }
            }
            if kept {
                self.changes.groups.insert(path.clone());
            }
        }
    }
}

fn same_version(a: &AppDefinition, b: &AppDefinition) -> bool {
    a.id == b.id && a.version == b.version
}

/// Drops snapshots of versions no longer listed and kept definitions no snapshot names.
fn prune(record: &mut GroupRecord) {
    let versions = &record.versions;
    record.snapshots.retain(|version, _| versions.contains(version));
    let named: BTreeSet<(&str, &str)> =
        record.snapshots.values().flat_map(|s| s.apps.iter().map(|(id, v)| (id.as_str(), v.as_str()))).collect();
    record.kept.retain(|def| named.contains(&(def.id.as_str(), def.version.as_deref().unwrap_or_default())));
}

/// Puts group `id` of the target state back to its snapshot at `wanted`: its apps as they
/// were (apps added since go), the dependencies of its groups as they were.
pub(super) fn apply(
    core: &Core,
    meta: &GroupRecords,
    id: &str,
    wanted: &str,
    apps: &mut BTreeMap<AppId, AppDefinition>,
    target_meta: &mut GroupRecords,
) -> Result<(), GroupError> {
    let record = meta.get(id);
    let Some(snapshot) = record.and_then(|r| r.snapshots.get(wanted)) else {
        let listed = record.is_some_and(|r| r.versions.iter().any(|v| v == wanted));
        return Err(GroupError::NotFound(if listed {
            format!("Group '{id}' version '{wanted}' was recorded without its contents (by an older Plinth) and cannot be rolled back")
        } else {
            format!("Group '{id}' has no version '{wanted}' to roll back to (GET /v2/groups{id}/versions lists them)")
        }));
    };
    let kept = |app: &AppId, version: &str| {
        meta.values()
            .flat_map(|r| r.kept.iter())
            .find(|d| d.id == app.as_str() && d.version.as_deref() == Some(version))
            .map(|d| AppDefinition::clone(d))
    };
    let mut missing = Vec::new();
    apps.retain(|app, _| !is_within(app.as_str(), id));
    for (app, version) in &snapshot.apps {
        match core.app_version(app, version).cloned().or_else(|| kept(app, version)) {
            Some(mut def) => {
                // The change gives it a new version, as any change does.
                def.version = None;
                def.version_info = None;
                apps.insert(app.clone(), def);
            }
            None => missing.push(format!("{app} at {version}")),
        }
    }
    if !missing.is_empty() {
        return Err(GroupError::Conflict(format!(
            "Group '{id}' cannot be rolled back to '{wanted}': no stored definition of {}",
            missing.join(", ")
        )));
    }
    target_meta.retain(|path, _| !is_within(path, id) || path == id || snapshot.groups.contains_key(path));
    for (path, record) in target_meta.iter_mut().filter(|(path, _)| is_within(path, id)) {
        record.dependencies = snapshot.groups.get(path).cloned().unwrap_or_default();
    }
    for (path, deps) in &snapshot.groups {
        target_meta.entry(path.clone()).or_default().dependencies = deps.clone();
    }
    Ok(())
}
