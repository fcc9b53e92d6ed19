//! Bodies of `POST /v2/groups` and `PUT /v2/groups/{id}`: a group tree with its apps,
//! nested groups and dependencies, every id made absolute and every app parsed, validated
//! and normalised as `POST /v2/apps` does; every violation is collected with its JSON
//! path. Pure (no master state), so the fuzz target `group_body` calls it as the API does.
use std::collections::BTreeSet;

use serde_json::{json, Value};

use plinth_protocol::{AppDefinition, AppId, BodyError, Violation};
use plinth_scheduler::groups::{parent, resolve, under};
use plinth_scheduler::{AppSpec, GroupSpec};

/// The group `id` (absolute, already resolved from the URL and the body's `id`) as
/// `value` describes it, or every violation (Marathon's 422 details).
pub fn parse_group_body(value: &Value, id: String) -> Result<GroupSpec, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut seen = BTreeSet::from([id.clone()]);
    let spec = parse_group(value, id, String::new(), &mut seen, &mut violations);
    if violations.is_empty() {
        Ok(spec)
    } else {
        Err(violations)
    }
}

/// Parses a group body whose id is already known (`id`), collecting every violation.
fn parse_group(
    value: &Value,
    id: String,
    json_path: String,
    seen: &mut BTreeSet<String>,
    v: &mut Vec<Violation>,
) -> GroupSpec {
    let mut add = |path: String, error: String| v.push(Violation { path, errors: vec![error] });
    let mut spec =
        GroupSpec { id: id.clone(), json_path: json_path.clone(), apps: None, groups: None, dependencies: None };
    let Some(body) = value.as_object() else {
        add(under(&json_path, "/"), "a group must be a JSON object".into());
        return spec;
    };
    if body.get("pods").and_then(Value::as_array).is_some_and(|p| !p.is_empty()) {
        add(under(&json_path, "/pods"), "pods are not supported; use apps".into());
    }
    if let Some(deps) = body.get("dependencies") {
        spec.dependencies = Some(parse_dependencies(deps, &id, &under(&json_path, "/dependencies"), v));
    }
    if let Some(items) = array_field(body, "apps", &json_path, v) {
        let mut parsed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = under(&json_path, &format!("/apps({i})"));
            if let Some(app) = parse_app(item, &id, &path, seen, v) {
                parsed.push(app);
            }
        }
        spec.apps = Some(parsed);
    }
    if let Some(items) = array_field(body, "groups", &json_path, v) {
        let mut parsed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = under(&json_path, &format!("/groups({i})"));
            let Some(raw) = item.get("id").and_then(Value::as_str) else {
                v.push(Violation { path: format!("{path}/id"), errors: vec!["a nested group needs an id".into()] });
                continue;
            };
            match resolve(&id, raw) {
                Ok(child) if parent(&child) == id && child != "/" => {
                    if !seen.insert(child.clone()) {
                        v.push(Violation {
                            path: format!("{path}/id"),
                            errors: vec![format!("'{child}' is given twice")],
                        });
                        continue;
                    }
                    parsed.push(parse_group(item, child, path, seen, v));
                }
                Ok(child) => v.push(Violation {
                    path: format!("{path}/id"),
                    errors: vec![format!("group '{child}' is not a direct child of '{id}'")],
                }),
                Err(e) => v.push(Violation { path: format!("{path}/id"), errors: vec![e] }),
            }
        }
        spec.groups = Some(parsed);
    }
    spec
}

/// The array under `key` when given; anything else there is a violation.
fn array_field<'a>(
    body: &'a serde_json::Map<String, Value>,
    key: &str,
    json_path: &str,
    v: &mut Vec<Violation>,
) -> Option<&'a Vec<Value>> {
    let value = body.get(key)?;
    if value.is_null() {
        return None;
    }
    let items = value.as_array();
    if items.is_none() {
        v.push(Violation {
            path: under(json_path, &format!("/{key}")),
            errors: vec![format!("must be an array of {key}")],
        });
    }
    items
}

/// Dependencies of a group or app, resolved against `base` (the group holding them).
fn parse_dependencies(value: &Value, base: &str, path: &str, v: &mut Vec<Violation>) -> Vec<String> {
    let Some(items) = value.as_array() else {
        v.push(Violation { path: path.into(), errors: vec!["must be an array of ids".into()] });
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}({i})");
        match item.as_str().map(|raw| resolve(base, raw)) {
            Some(Ok(dep)) if dep == "/" => {
                v.push(Violation { path: item_path, errors: vec!["cannot depend on the root group".into()] })
            }
            Some(Ok(dep)) => out.push(dep),
            Some(Err(e)) => v.push(Violation { path: item_path, errors: vec![e] }),
            None => v.push(Violation { path: item_path, errors: vec!["must be a string".into()] }),
        }
    }
    out
}

/// An app of a group body: its id and dependencies made absolute, then parsed,
/// validated and normalised as `POST /v2/apps` does, violations under `path`.
fn parse_app(
    value: &Value,
    group: &str,
    path: &str,
    seen: &mut BTreeSet<String>,
    v: &mut Vec<Violation>,
) -> Option<AppSpec> {
    let Some(body) = value.as_object() else {
        v.push(Violation { path: path.into(), errors: vec!["an app definition must be a JSON object".into()] });
        return None;
    };
    let Some(raw_id) = body.get("id").and_then(Value::as_str) else {
        v.push(Violation { path: format!("{path}/id"), errors: vec!["an app in a group needs an id".into()] });
        return None;
    };
    let id = match resolve(group, raw_id).and_then(|id| AppId::parse(&id).map_err(|e| e.to_string())) {
        Ok(id) if id.parent() == group => id,
        Ok(id) => {
            v.push(Violation {
                path: format!("{path}/id"),
                errors: vec![format!("app '{id}' is not a direct child of group '{group}'; put it in a nested group")],
            });
            return None;
        }
        Err(e) => {
            v.push(Violation { path: format!("{path}/id"), errors: vec![e] });
            return None;
        }
    };
    if !seen.insert(id.to_string()) {
        v.push(Violation { path: format!("{path}/id"), errors: vec![format!("'{id}' is given twice")] });
        return None;
    }
    let mut body = body.clone();
    body.insert("id".into(), json!(id));
    if let Some(deps) = body.get("dependencies").cloned() {
        let before = v.len();
        let resolved = parse_dependencies(&deps, group, &format!("{path}/dependencies"), v);
        if v.len() > before {
            return None;
        }
        body.insert("dependencies".into(), json!(resolved));
    }
    let prefixed = |violations: Vec<Violation>| {
        violations.into_iter().map(|x| Violation { path: under(path, &x.path), errors: x.errors }).collect::<Vec<_>>()
    };
    let mut def = match AppDefinition::from_value(Value::Object(body)) {
        Ok(def) => def,
        Err(BodyError::Invalid(violations)) => {
            v.extend(prefixed(violations));
            return None;
        }
        Err(BodyError::Malformed(detail)) => {
            v.push(Violation { path: path.into(), errors: vec![detail] });
            return None;
        }
    };
    // Validate before and after folding old forms (which can expose conflicts).
    let checked = def.validate().and_then(|()| {
        def.normalize();
        def.validate()
    });
    if let Err(violations) = checked {
        v.extend(prefixed(violations));
        return None;
    }
    Some(AppSpec { id, json_path: path.into(), def })
}
