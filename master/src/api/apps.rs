//! `/v2/apps`: create, list, show, update (PUT/PATCH), delete, restart, an app's tasks
//! and versions. Nested ids (`/group/app`) make the path ambiguous for axum, so one
//! catch-all route dispatches on the suffix here.
use std::sync::Arc;

use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use plinth_protocol::views::app::App;
use plinth_protocol::views::{AppInfo, AppList, AppSingle, TaskList, TaskSingle, VersionList};
use plinth_protocol::{AppDefinition, AppId, BodyError, TaskId, Violation};

use super::views::{self, Embed};
use super::{parse_app_id, Body, ClientAddr, Params};
use crate::error::ApiError;
use crate::events::api_post_event;
use crate::shell::Master;
use plinth_scheduler::{Core, CoreError, KillTarget};

/// What an `/v2/apps/{*rest}` path addresses.
#[derive(Debug, PartialEq)]
enum Target {
    App(String),
    /// `/v2/apps/group/*`: every app under a group.
    Group(String),
    Restart(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
}

fn parse_target(rest: &str) -> Target {
    let rest = rest.trim_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    let join = |n: usize| segments[..segments.len() - n].join("/");
    let n = segments.len();
    match segments.as_slice() {
        [.., "*"] => Target::Group(join(1)),
        [_, .., "restart"] => Target::Restart(join(1)),
        [_, .., "tasks"] => Target::Tasks(join(1)),
        [_, .., "versions"] => Target::Versions(join(1)),
        [_, .., "tasks", task] if n >= 3 => Target::Task(join(2), task.to_string()),
        [_, .., "versions", version] if n >= 3 => Target::Version(join(2), version.to_string()),
        _ => Target::App(rest.to_string()),
    }
}

/// The catch-all for `/v2/apps/{*rest}` (axum extractors make the argument list long).
#[allow(clippy::too_many_arguments)]
pub async fn dispatch(
    State(master): State<Arc<Master>>,
    method: Method,
    axum::extract::Path(rest): axum::extract::Path<String>,
    params: Params,
    client: ClientAddr,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let uri = uri.path().to_string();
    match (method.clone(), parse_target(&rest)) {
        (Method::GET, Target::App(id)) => show(&master, &id, &params).await,
        (Method::GET, Target::Group(group)) => list_filtered(&master, &params, Some(group)).await,
        (Method::PUT, Target::App(id)) => update(&master, &id, &params, client, &uri, body, false).await,
        (Method::PATCH, Target::App(id)) => update(&master, &id, &params, client, &uri, body, true).await,
        (Method::DELETE, Target::App(id)) => destroy(&master, &id).await,
        (Method::POST, Target::Restart(id)) => restart(&master, &id, &params).await,
        (Method::GET, Target::Tasks(id)) => tasks(&master, &id, &headers).await,
        (Method::DELETE, Target::Tasks(id)) => kill_app_tasks(&master, &id, &params).await,
        (Method::DELETE, Target::Task(id, task)) => kill_one_task(&master, &id, &task, &params).await,
        (Method::GET, Target::Versions(id)) => versions(&master, &id).await,
        (Method::GET, Target::Version(id, v)) => version(&master, &id, &v).await,
        // `POST /v2/apps/x` is not a thing; a POST to `/v2/apps` creates.
        (method, _) => Err(ApiError::MethodNotAllowed(format!("{method} is not supported on {uri}"))),
    }
}

fn body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::Malformed(detail) => ApiError::InvalidJson(detail),
        BodyError::Invalid(violations) => ApiError::Invalid(violations),
    }
}

/// Parsed JSON → validated, normalised definition (nothing is touched on error).
fn definition_from_value(value: Value) -> Result<AppDefinition, ApiError> {
    let mut def = AppDefinition::from_value(value).map_err(body_error)?;
    def.validate().map_err(ApiError::Invalid)?;
    def.normalize();
    // Folding old forms can expose conflicts (e.g. ports vs health checks).
    def.validate().map_err(ApiError::Invalid)?;
    Ok(def)
}

fn created(location: &str, body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, [(header::LOCATION, location.to_string())], Json(body)).into_response()
}

/// `POST /v2/apps`.
pub async fn create(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ApiError> {
    let value = body.value()?;
    let def = definition_from_value(value)?;
    let (app, definition, deployment) = master
        .command_with(|core, now| {
            // As `/v2/groups` does: an app may not close a dependency cycle.
            if let Some(cycle) = core.dependency_cycle(&def) {
                return Err(ApiError::Invalid(vec![Violation {
                    path: "/dependencies".into(),
                    errors: vec![format!("dependency cycle: {}", cycle.join(" -> "))],
                }]));
            }
            let (record, deployment) = core.create_app(def, now)?;
            Ok((views::app_info(core, &record, Embed::list()), record.definition, deployment))
        })
        .await?;
    let id = app.app.id.clone();
    tracing::info!(app_id = %id, deployment_id = %deployment, "app created");
    master.prefetch_image(&definition);
    master.publish(api_post_event(client.ip().as_deref(), uri.path(), &definition, plinth_protocol::Timestamp::now()));
    Ok(created(&format!("/v2/apps{id}"), app))
}

/// `GET /v2/apps` with `id`, `cmd`, `label` filters and `embed`.
pub async fn list(State(master): State<Arc<Master>>, params: Params) -> Result<Response, ApiError> {
    list_filtered(&master, &params, None).await
}

/// Marathon's label selector: `key==value`, `key!=value` or `key`, comma-separated.
fn label_matches(selector: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
    selector.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("==") {
            labels.get(k.trim()).is_some_and(|x| x == v.trim())
        } else if let Some((k, v)) = term.split_once("!=") {
            labels.get(k.trim()).is_none_or(|x| x != v.trim())
        } else {
            labels.contains_key(term)
        }
    })
}

async fn list_filtered(master: &Master, params: &Params, group: Option<String>) -> Result<Response, ApiError> {
    let embed = Embed::list().with_params(params);
    let id_filter = params.get("id").map(str::to_string);
    let cmd_filter = params.get("cmd").map(str::to_string);
    let label_filter = params.get("label").map(str::to_string);
    let group = group.map(|g| format!("/{}/", g.trim_matches('/')).replace("//", "/"));
    let key = format!("apps {group:?} {embed:?} {id_filter:?} {cmd_filter:?} {label_filter:?}");
    master
        .render_shared(key, move |core| {
            let apps: Vec<AppInfo> = core
                .apps()
                .filter(|a| group.as_deref().is_none_or(|g| a.id.as_str().starts_with(g)))
                .filter(|a| id_filter.as_deref().is_none_or(|f| a.id.as_str().contains(f)))
                .filter(|a| {
                    cmd_filter.as_deref().is_none_or(|f| a.definition.cmd.as_deref().is_some_and(|c| c.contains(f)))
                })
                .filter(|a| label_filter.as_deref().is_none_or(|f| label_matches(f, &a.definition.labels)))
                .map(|a| views::app_info(core, a, embed))
                .collect();
            Ok(Json(AppList { apps }).into_response())
        })
        .await
}

async fn show(master: &Master, raw_id: &str, params: &Params) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let embed = Embed::single().with_params(params);
    master
        .render(move |core| {
            let app = core.app(&id).ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
            Ok(Json(AppSingle { app: views::app_info(core, app, embed) }).into_response())
        })
        .await
}

/// Builds the full new definition for PUT/PATCH: the body merged onto the current
/// definition (top-level keys replace), a whole replacement, or a rollback to a stored
/// version (`{"version": "..."}`).
fn merged_definition(core: &Core, id: &AppId, body: Value, partial: bool) -> Result<AppDefinition, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::Invalid(vec![Violation {
            path: "/".into(),
            errors: vec!["an app definition must be a JSON object".into()],
        }]));
    };
    let current = core.app(id);
    if let (Some(version), Some(_)) = (body.get("version").and_then(Value::as_str), current) {
        // Marathon rolls back when the body names a stored version.
        let only_version = body.keys().all(|k| k == "version" || k == "id");
        if only_version {
            let def = core
                .app_version(id, version)
                .ok_or_else(|| CoreError::VersionNotFound { app: id.clone(), version: version.to_string() })?;
            let mut def = def.clone();
            def.version = None;
            def.version_info = None;
            return Ok(def);
        }
    }
    let mut merged = match current {
        Some(app) if partial => {
            let Value::Object(mut base) = serde_json::to_value(&app.definition)
                .map_err(|e| ApiError::Internal(format!("cannot encode the current definition of {id}: {e}")))?
            else {
                return Err(ApiError::Internal(format!("the definition of {id} is not an object")));
            };
            // An old-form field in the update replaces its normalised new form.
            if body.contains_key("ports") && !body.contains_key("portDefinitions") {
                base.remove("portDefinitions");
            }
            if body.contains_key("uris") && !body.contains_key("fetch") {
                base.remove("fetch");
            }
            for (k, v) in body {
                base.insert(k, v);
            }
            base
        }
        _ => body,
    };
    merged.remove("version");
    merged.remove("versionInfo");
    merged.insert("id".into(), json!(id));
    definition_from_value(Value::Object(merged))
}

#[allow(clippy::too_many_arguments)]
async fn update(
    master: &Master,
    raw_id: &str,
    params: &Params,
    client: ClientAddr,
    uri: &str,
    body: Body,
    patch: bool,
) -> Result<Response, ApiError> {
    let id = AppId::parse(raw_id)
        .map_err(|e| ApiError::Invalid(vec![Violation { path: "/id".into(), errors: vec![e.to_string()] }]))?;
    let value = body.value()?;
    let force = params.flag("force")?;
    let partial = patch || params.get("partialUpdate") != Some("false");
    let outcome = master
        .command_with(|core, now| {
            if patch && core.app(&id).is_none() {
                return Err(CoreError::AppNotFound(id.clone()).into());
            }
            let def = merged_definition(core, &id, value, partial)?;
            Ok(core.put_app(def, now, force)?)
        })
        .await?;
    tracing::info!(app_id = %id, deployment_id = %outcome.deployment, version = %outcome.version,
        created = outcome.created, "app updated");
    master.prefetch_image(&outcome.app.definition);
    master.publish(api_post_event(
        client.ip().as_deref(),
        uri,
        &outcome.app.definition,
        plinth_protocol::Timestamp::now(),
    ));
    let body = views::deployment_result(&outcome.deployment, &outcome.version);
    if outcome.created {
        Ok(created(&format!("/v2/apps{id}"), body))
    } else {
        Ok(Json(body).into_response())
    }
}

/// `PUT /v2/apps` with an array of (partial) definitions: every item is validated and
/// checked for locks before any is applied, so a rejected batch changes nothing.
pub async fn update_many(
    State(master): State<Arc<Master>>,
    params: Params,
    client: ClientAddr,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ApiError> {
    let Value::Array(items) = body.value()? else {
        return Err(ApiError::Invalid(vec![Violation {
            path: "/".into(),
            errors: vec!["expected an array of app definitions".into()],
        }]));
    };
    let force = params.flag("force")?;
    let partial = params.get("partialUpdate") != Some("false");
    let outcomes = master
        .command_with(|core, now| {
            let mut defs = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                let raw_id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                let id = AppId::parse(raw_id).map_err(|e| {
                    ApiError::Invalid(vec![Violation { path: format!("({index})/id"), errors: vec![e.to_string()] }])
                })?;
                let deployments: Vec<_> = core.app_deployments(&id).iter().map(|d| d.id.clone()).collect();
                if !force && !deployments.is_empty() {
                    return Err(CoreError::AppLocked { app: id, deployments }.into());
                }
                defs.push(merged_definition(core, &id, item, partial)?);
            }
            defs.into_iter()
                .map(|def| core.put_app(def, now, force).map_err(ApiError::from))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    for outcome in &outcomes {
        tracing::info!(app_id = %outcome.app.id, deployment_id = %outcome.deployment, "app updated (bulk)");
        master.prefetch_image(&outcome.app.definition);
        master.publish(api_post_event(
            client.ip().as_deref(),
            uri.path(),
            &outcome.app.definition,
            plinth_protocol::Timestamp::now(),
        ));
    }
    let Some(first) = outcomes.first() else {
        return Err(ApiError::Invalid(vec![Violation {
            path: "/".into(),
            errors: vec!["expected at least one app definition".into()],
        }]));
    };
    Ok(Json(views::deployment_result(&first.deployment, &first.version)).into_response())
}

async fn destroy(master: &Master, raw_id: &str) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let (deployment, version) = master.command(|core, now| core.delete_app(&id, now)).await?;
    tracing::info!(app_id = %id, deployment_id = %deployment, "app deleted");
    Ok(Json(views::deployment_result(&deployment, &version)).into_response())
}

async fn restart(master: &Master, raw_id: &str, params: &Params) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let force = params.flag("force")?;
    let (deployment, version) = master.command(|core, now| core.restart_app(&id, now, force)).await?;
    tracing::info!(app_id = %id, deployment_id = %deployment, "app restarted");
    Ok(Json(views::deployment_result(&deployment, &version)).into_response())
}

async fn tasks(master: &Master, raw_id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let text = super::tasks::wants_text(headers);
    master
        .render(move |core| {
            let app = core.app(&id).ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
            if text {
                return Ok(super::tasks::text_response(super::tasks::endpoints_text(core, std::iter::once(app))));
            }
            let ports = core.service_ports(&id);
            let tasks = core.app_tasks(&id).iter().map(|t| views::task(t, &ports)).collect();
            Ok(Json(TaskList { tasks }).into_response())
        })
        .await
}

async fn kill_app_tasks(master: &Master, raw_id: &str, params: &Params) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let scale = params.flag("scale")?;
    let force = params.flag("force")?;
    let host = params.get("host").map(str::to_string);
    let (killed, ports) = master
        .command(|core, now| {
            if core.app(&id).is_none() {
                return Err(CoreError::AppNotFound(id.clone()));
            }
            let killed = core.kill_tasks(KillTarget::App { app: id.clone(), host }, scale, now, force)?;
            Ok((killed, core.service_ports(&id)))
        })
        .await?;
    tracing::info!(app_id = %id, killed = killed.tasks.len(), scale, "app tasks killed");
    Ok(super::tasks::killed_response(killed, &ports, scale))
}

async fn kill_one_task(master: &Master, raw_id: &str, task: &str, params: &Params) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let task_id = TaskId::new(task);
    let scale = params.flag("scale")?;
    let force = params.flag("force")?;
    let (killed, ports) = master
        .command(|core, now| {
            if core.app(&id).is_none() {
                return Err(CoreError::AppNotFound(id.clone()));
            }
            if core.task(&task_id).is_none_or(|t| t.app_id != id) {
                return Err(CoreError::TaskNotFound(task_id.clone()));
            }
            let killed = core.kill_tasks(KillTarget::Tasks(vec![task_id.clone()]), scale, now, force)?;
            Ok((killed, core.service_ports(&id)))
        })
        .await?;
    tracing::info!(app_id = %id, task_id = %task_id, scale, "task killed");
    if let (false, Some(task)) = (scale, killed.tasks.first()) {
        return Ok(Json(TaskSingle { task: views::task(task, &ports) }).into_response());
    }
    Ok(super::tasks::killed_response(killed, &ports, scale))
}

async fn versions(master: &Master, raw_id: &str) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let guard = master.read().await;
    let mut versions = guard.core.app_versions(&id).ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
    // Marathon lists the newest first.
    versions.reverse();
    Ok(Json(VersionList { versions }).into_response())
}

async fn version(master: &Master, raw_id: &str, version: &str) -> Result<Response, ApiError> {
    let id = parse_app_id(raw_id)?;
    let guard = master.read().await;
    if guard.core.app_versions(&id).is_none() {
        return Err(CoreError::AppNotFound(id).into());
    }
    let def = guard
        .core
        .app_version(&id, version)
        .ok_or_else(|| CoreError::VersionNotFound { app: id.clone(), version: version.to_string() })?;
    let mut app = App::of(def);
    app.version = Some(version.to_string());
    Ok(Json(app).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_dispatched() {
        assert_eq!(parse_target("a/b"), Target::App("a/b".into()));
        assert_eq!(parse_target("tasks"), Target::App("tasks".into()));
        assert_eq!(parse_target("a/b/tasks"), Target::Tasks("a/b".into()));
        assert_eq!(parse_target("a/tasks/a.123"), Target::Task("a".into(), "a.123".into()));
        assert_eq!(parse_target("a/restart"), Target::Restart("a".into()));
        assert_eq!(parse_target("g/a/versions"), Target::Versions("g/a".into()));
        assert_eq!(
            parse_target("a/versions/2015-01-01T00:00:00.000Z"),
            Target::Version("a".into(), "2015-01-01T00:00:00.000Z".into())
        );
        assert_eq!(parse_target("prod/*"), Target::Group("prod".into()));
    }

    #[test]
    fn label_selectors() {
        let labels: std::collections::BTreeMap<String, String> =
            [("env".to_string(), "prod".to_string()), ("tier".to_string(), "web".to_string())].into();
        assert!(label_matches("env==prod", &labels));
        assert!(label_matches("env==prod,tier", &labels));
        assert!(!label_matches("env==dev", &labels));
        assert!(label_matches("env!=dev", &labels));
        assert!(!label_matches("missing", &labels));
    }
}
