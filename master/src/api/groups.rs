//! `/v2/groups`: routing and rendering of Marathon's application groups (their bodies are
//! parsed by `group_body.rs`). The
//! planner, the group records (explicit groups, group dependencies, versions) and their
//! persistence live in the scheduler core (`plinth_scheduler::groups`): a group request is
//! one core command, so its app changes and group records land in one store transaction.
//! (Over 600 lines only through its in-process API tests at the bottom; the code is ~400.)
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{OriginalUri, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use plinth_protocol::views::{AppInfo, GroupInfo};
use plinth_protocol::{Timestamp, Violation};
use plinth_scheduler::groups::{is_within, parent, resolve};
use plinth_scheduler::{AppRecord, Core, GroupRequest, GroupSpec};

use super::group_body::parse_group_body;
use super::views::{self, Embed};
use super::{Body, Params};
use crate::error::ApiError;
use crate::shell::Master;

fn invalid(path: impl Into<String>, error: impl Into<String>) -> ApiError {
    ApiError::Invalid(vec![Violation { path: path.into(), errors: vec![error.into()] }])
}

// ---------------------------------------------------------------------------------------
// Handlers

/// `/v2/groups` and `/v2/groups/{*rest}` (nested ids make the path ambiguous for axum).
pub async fn dispatch_root(
    State(master): State<Arc<Master>>,
    method: Method,
    params: Params,
    uri: OriginalUri,
    body: Body,
) -> Result<Response, ApiError> {
    route(&master, method, "", &params, &uri.0, body).await
}

pub async fn dispatch(
    State(master): State<Arc<Master>>,
    method: Method,
    axum::extract::Path(rest): axum::extract::Path<String>,
    params: Params,
    uri: OriginalUri,
    body: Body,
) -> Result<Response, ApiError> {
    route(&master, method, &rest, &params, &uri.0, body).await
}

async fn route(
    master: &Master,
    method: Method,
    rest: &str,
    params: &Params,
    uri: &axum::http::Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let rest = rest.trim_matches('/');
    let (raw_id, versions) = match rest.strip_suffix("versions") {
        Some(group) if group.is_empty() || group.ends_with('/') => (group.trim_end_matches('/'), true),
        _ => (rest, false),
    };
    let id = resolve("/", if raw_id.is_empty() { "/" } else { raw_id })
        .map_err(|e| ApiError::NotFound(format!("Group '/{raw_id}' does not exist ({e})")))?;
    match (method, versions) {
        (Method::GET, false) => show(master, &id, params).await,
        (Method::GET, true) => list_versions(master, &id).await,
        (Method::POST, false) => create(master, &id, params, body).await,
        (Method::PUT, false) => update(master, &id, params, body).await,
        (Method::DELETE, false) => destroy(master, &id).await,
        (method, _) => Err(ApiError::MethodNotAllowed(format!("{method} is not supported on {}", uri.path()))),
    }
}

/// Which app details to embed (`embed=group.apps.tasks`, `group.apps.lastTaskFailure`...).
fn embed_of(params: &Params) -> Embed {
    Embed::list().with_params(params)
}

struct Tree<'a> {
    core: &'a Core,
    groups: BTreeSet<String>,
    apps_by_group: BTreeMap<&'a str, Vec<&'a AppRecord>>,
    embed: Embed,
    fallback_version: String,
}

impl<'a> Tree<'a> {
    fn new(core: &'a Core, embed: Embed, fallback_version: String) -> Self {
        let groups = core.group_paths();
        let mut apps_by_group: BTreeMap<&str, Vec<&AppRecord>> = BTreeMap::new();
        for app in core.apps() {
            apps_by_group.entry(app.id.parent()).or_default().push(app);
        }
        Tree { core, groups, apps_by_group, embed, fallback_version }
    }

    /// The group's view and its version (the newest change in it).
    fn view(&self, id: &str) -> (GroupInfo, String) {
        let record = self.core.group_records().get(id);
        let mut version = record.and_then(|r| r.versions.last().cloned()).unwrap_or_default();
        let apps: Vec<AppInfo> = self
            .apps_by_group
            .get(id)
            .into_iter()
            .flatten()
            .map(|app| {
                version = version.clone().max(app.version.clone());
                views::app_info(self.core, app, self.embed)
            })
            .collect();
        let mut groups = Vec::new();
        for child in self.groups.iter().filter(|g| *g != "/" && parent(g) == id) {
            let (value, child_version) = self.view(child);
            version = version.max(child_version);
            groups.push(value);
        }
        if version.is_empty() {
            version = self.fallback_version.clone();
        }
        let dependencies = record.map(|r| r.dependencies.clone()).unwrap_or_default();
        let group =
            GroupInfo { id: id.to_string(), apps, groups, pods: Vec::new(), dependencies, version: version.clone() };
        (group, version)
    }
}

async fn show(master: &Master, id: &str, params: &Params) -> Result<Response, ApiError> {
    let (id, embed, started) = (id.to_string(), embed_of(params), master.started_at.to_iso());
    let key = format!("groups {id:?} {embed:?}");
    master
        .render_shared(key, move |core| {
            let tree = Tree::new(core, embed, started);
            if !tree.groups.contains(&id) {
                return Err(ApiError::NotFound(format!("Group '{id}' does not exist")));
            }
            Ok(Json(tree.view(&id).0).into_response())
        })
        .await
}

async fn list_versions(master: &Master, id: &str) -> Result<Response, ApiError> {
    let guard = master.read().await;
    let core = &guard.core;
    if !core.group_paths().contains(id) {
        return Err(ApiError::NotFound(format!("Group '{id}' does not exist")));
    }
    let mut versions: BTreeSet<String> =
        core.group_records().get(id).map(|r| r.versions.iter().cloned().collect()).unwrap_or_default();
    for app in core.apps().filter(|a| is_within(a.id.as_str(), id)) {
        versions.extend(core.app_versions(&app.id).unwrap_or_default());
    }
    // Newest first, as Marathon lists versions.
    Ok(Json(versions.into_iter().rev().collect::<Vec<_>>()).into_response())
}

async fn create(master: &Master, url_id: &str, params: &Params, body: Body) -> Result<Response, ApiError> {
    let value = body.value()?;
    let raw = value.get("id").and_then(Value::as_str);
    let id = match (url_id, raw) {
        (_, Some(raw)) => resolve(url_id, raw).map_err(|e| invalid("/id", e))?,
        ("/", None) => return Err(invalid("/id", "a new group needs an id")),
        (url_id, None) => url_id.to_string(),
    };
    if id == "/" {
        return Err(ApiError::Conflict("The root group always exists. Use PUT to change it.".into()));
    }
    let spec = parse_body(&value, id.clone())?;
    let dry_run = params.flag("dryRun")?;
    let answer = change(master, GroupRequest::Create(spec), false, dry_run).await?;
    let status = if dry_run { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, [(header::LOCATION, format!("/v2/groups{id}"))], answer).into_response())
}

async fn update(master: &Master, id: &str, params: &Params, body: Body) -> Result<Response, ApiError> {
    let value = body.value()?;
    let force = params.flag("force")?;
    let dry_run = params.flag("dryRun")?;
    let has_content = ["apps", "groups", "dependencies"].iter().any(|k| value.get(k).is_some());
    let request = if let Some(factor) = value.get("scaleBy") {
        let factor = factor
            .as_f64()
            .filter(|f| f.is_finite() && *f > 0.0)
            .ok_or_else(|| invalid("/scaleBy", "must be a number greater than 0"))?;
        if has_content {
            return Err(invalid("/scaleBy", "cannot be combined with apps, groups or dependencies"));
        }
        GroupRequest::Scale { id: id.to_string(), factor, force }
    } else {
        match value.get("version") {
            // Marathon's rollback: the group as it was at one of its versions.
            Some(version) if !has_content => {
                let version = version
                    .as_str()
                    .filter(|v| Timestamp::parse_iso(v).is_some())
                    .ok_or_else(|| invalid("/version", "must be a version of the group (an ISO 8601 timestamp)"))?;
                GroupRequest::Rollback { id: id.to_string(), version: version.to_string(), force }
            }
            Some(_) => return Err(invalid("/version", "cannot be combined with apps, groups or dependencies")),
            None => GroupRequest::Update { spec: parse_body(&value, id.to_string())?, force },
        }
    };
    Ok(change(master, request, force, dry_run).await?.into_response())
}

async fn destroy(master: &Master, id: &str) -> Result<Response, ApiError> {
    Ok(change(master, GroupRequest::Delete { id: id.to_string() }, true, false).await?.into_response())
}

fn parse_body(value: &Value, id: String) -> Result<GroupSpec, ApiError> {
    parse_group_body(value, id).map_err(ApiError::Invalid)
}

/// The header naming every deployment a group change started (Marathon's answer names one).
pub const DEPLOYMENT_IDS_HEADER: &str = "plinth-deployment-ids";

/// Plans a request and, unless `dry_run`, applies it: one core command, so the app
/// changes and the group records are written in one store transaction. A dry run answers
/// the steps; a change Marathon's `{"deploymentId","version"}`, with every deployment it
/// started in the `Plinth-Deployment-Ids` header.
async fn change(master: &Master, request: GroupRequest, force: bool, dry_run: bool) -> Result<Response, ApiError> {
    if dry_run {
        let guard = master.read().await;
        let plan = guard.core.plan_groups(&request, Timestamp::now())?;
        return Ok(Json(plan.steps_view()).into_response());
    }
    let change = master.command_with(|core, now| Ok(core.change_groups(&request, force, now)?)).await?;
    tracing::info!(group_id = %change.group, version = %change.plan.version, apps_changed = change.deployments.len(),
        "group changed");
    {
        let guard = master.read().await;
        for app in guard.core.apps().filter(|a| is_within(a.id.as_str(), &change.group)) {
            master.prefetch_image(&app.definition);
        }
    }
    // One id to follow, as Marathon answers; a change without app changes gets a fresh
    // id that is already finished.
    let ids = change.deployments.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let body = views::deployment_result(&change.deployment, &change.plan.version);
    Ok(([(DEPLOYMENT_IDS_HEADER, ids)], Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_violations_carry_nested_paths() {
        let body = json!({"id": "/prod", "apps": [{"id": "db", "cmd": "x", "cpus": 0}],
            "groups": [{"id": "web", "apps": [{"id": "a", "cmd": "x", "constraints": [["hostname", "SOMETIMES"]]},
                                               {"id": "/prod/web/a", "cmd": "x"}]},
                       {"id": "/elsewhere"}]});
        let Err(ApiError::Invalid(v)) = parse_body(&body, "/prod".into()) else { panic!("expected 422") };
        let paths: Vec<&str> = v.iter().map(|x| x.path.as_str()).collect();
        for expected in ["/apps(0)/cpus", "/groups(0)/apps(0)/constraints(0)", "/groups(0)/apps(1)/id", "/groups(1)/id"]
        {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
    }
}

#[cfg(test)]
mod api_tests {
    use std::time::Duration;

    use axum::body::Body as HttpBody;
    use axum::http::Request as HttpRequest;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::shell::MasterConfig;

    fn config(dir: &std::path::Path) -> MasterConfig {
        MasterConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.to_path_buf(),
            agent_timeout: Duration::from_secs(10),
            token: None,
            hostname: "127.0.0.1".into(),
            registry: Default::default(),
            ..Default::default()
        }
    }

    /// The master's router as `start::build` composes it (it holds the master: dropping it
    /// closes the store).
    async fn master(dir: &std::path::Path) -> axum::Router {
        crate::start::build(config(dir), 8080, None).await.expect("master opens").1
    }

    /// Opens the master again once the dropped one's in-flight round has let go of the
    /// store (a round holds the master until its write lands).
    async fn reopen(dir: &std::path::Path) -> axum::Router {
        for _ in 0..100 {
            if let Ok((_, router)) = crate::start::build(config(dir), 8080, None).await {
                return router;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        master(dir).await
    }

    async fn call(router: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let request = HttpRequest::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map_or_else(HttpBody::empty, |b| HttpBody::from(b.to_string())))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn app(id: &str, deps: &[&str]) -> Value {
        json!({"id": id, "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "dependencies": deps})
    }

    fn app_ids(group: &Value) -> Vec<String> {
        let mut ids: Vec<String> = group["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["id"].as_str().unwrap_or("").to_string())
            .collect();
        for g in group["groups"].as_array().into_iter().flatten() {
            ids.extend(app_ids(g));
        }
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn groups_are_created_shown_scaled_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = master(dir.path()).await;
        let product = json!({"id": "/product", "dependencies": [],
            "groups": [
                {"id": "/product/database", "apps": [app("mongo", &[]), app("mysql", &[])]},
                {"id": "/product/service", "dependencies": ["/product/database"],
                 "apps": [app("rails-app", &[]), app("play-app", &["rails-app"])]}]});
        let (status, body) = call(&m, "POST", "/v2/groups?dryRun=true", Some(product.clone())).await;
        assert_eq!(status, 200, "{body}");
        let steps: Vec<Vec<String>> = body["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| {
                s["actions"]
                    .as_array()
                    .expect("actions")
                    .iter()
                    .map(|a| a["app"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .collect();
        let step_of = |app: &str| steps.iter().position(|s| s.iter().any(|a| a == app)).expect(app);
        assert!(step_of("/product/database/mongo") < step_of("/product/service/rails-app"), "{steps:?}");
        assert!(step_of("/product/service/rails-app") < step_of("/product/service/play-app"), "{steps:?}");
        assert_eq!(call(&m, "GET", "/v2/apps", None).await.1["apps"], json!([]), "a dry run changes nothing");

        let (status, body) = call(&m, "POST", "/v2/groups", Some(product.clone())).await;
        assert_eq!(status, 201, "{body}");
        assert!(body["deploymentId"].is_string() && body["version"].is_string(), "{body}");
        let (status, again) = call(&m, "POST", "/v2/groups", Some(product)).await;
        assert_eq!(status, 409, "{again}");

        let (_, root) = call(&m, "GET", "/v2/groups", None).await;
        assert_eq!(root["id"], "/");
        assert_eq!(app_ids(&root).len(), 4, "{root}");
        let (status, service) = call(&m, "GET", "/v2/groups/product/service", None).await;
        assert_eq!(status, 200, "{service}");
        assert_eq!(service["dependencies"], json!(["/product/database"]));
        assert_eq!(app_ids(&service), vec!["/product/service/play-app", "/product/service/rails-app"]);
        let play = service["apps"]
            .as_array()
            .expect("apps")
            .iter()
            .find(|a| a["id"] == "/product/service/play-app")
            .expect("play");
        assert_eq!(
            play["dependencies"],
            json!(["/product/service/rails-app"]),
            "relative dependencies are stored absolute"
        );
        assert_eq!(call(&m, "GET", "/v2/groups/nothing", None).await.0, 404);

        // scaleBy doubles every app of the group (nested too).
        let (status, body) = call(&m, "PUT", "/v2/groups/product?force=true", Some(json!({"scaleBy": 2}))).await;
        assert_eq!(status, 200, "{body}");
        let (_, mongo) = call(&m, "GET", "/v2/apps/product/database/mongo", None).await;
        assert_eq!(mongo["app"]["instances"], 2);
        let (_, versions) = call(&m, "GET", "/v2/groups/product/versions", None).await;
        assert!(versions.as_array().is_some_and(|v| v.len() >= 2), "{versions}");

        // The metadata survives a restart of the master.
        drop(m);
        let m = reopen(dir.path()).await;
        let (_, service) = call(&m, "GET", "/v2/groups/product/service", None).await;
        assert_eq!(service["dependencies"], json!(["/product/database"]));

        let (status, body) = call(&m, "DELETE", "/v2/groups/product", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(call(&m, "GET", "/v2/apps", None).await.1["apps"], json!([]));
        assert_eq!(call(&m, "GET", "/v2/groups/product", None).await.0, 404);
    }

    #[tokio::test]
    async fn cycles_unknown_targets_and_bad_apps_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = master(dir.path()).await;
        let (status, _) = call(&m, "POST", "/v2/apps", Some(app("/shop/db", &[]))).await;
        assert_eq!(status, 201);
        let before = (call(&m, "GET", "/v2/apps", None).await.1, call(&m, "GET", "/v2/groups", None).await.1);

        let cycle = json!({"id": "/loop", "groups": [
            {"id": "a", "dependencies": ["/loop/b"], "apps": [app("x", &[])]},
            {"id": "b", "dependencies": ["/loop/a"], "apps": [app("y", &[])]}]});
        let (status, body) = call(&m, "POST", "/v2/groups", Some(cycle)).await;
        assert_eq!(status, 422, "{body}");
        let detail = &body["details"][0];
        assert!(
            detail["path"].as_str().is_some_and(|p| p.starts_with("/groups(") && p.ends_with("/dependencies")),
            "{body}"
        );
        assert!(
            detail["errors"][0]
                .as_str()
                .is_some_and(|e| e.contains("cycle") && e.contains("/loop/a") && e.contains("/loop/b")),
            "{body}"
        );

        // A cycle through an existing app: /shop/db is changed to depend on the new /shop/web.
        let through = json!({"apps": [app("db", &["web"]), app("web", &["db"])]});
        let (status, body) = call(&m, "PUT", "/v2/groups/shop", Some(through)).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["details"][0]["path"].as_str().is_some_and(|p| p.starts_with("/apps(")), "{body}");

        let unknown = json!({"id": "/u", "apps": [app("x", &["/nowhere"])]});
        let (status, body) = call(&m, "POST", "/v2/groups", Some(unknown)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["details"][0]["path"], "/apps(0)/dependencies", "{body}");

        let bad = json!({"id": "/bad", "apps": [app("ok", &[]), {"id": "cpu", "cmd": "x", "cpus": -1}]});
        let (status, body) = call(&m, "POST", "/v2/groups", Some(bad)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["details"][0]["path"], "/apps(1)/cpus", "{body}");

        let dup = json!({"id": "/dup", "apps": [app("a", &[]), app("/dup/a", &[])]});
        assert_eq!(call(&m, "POST", "/v2/groups", Some(dup)).await.0, 422);
        assert_eq!(call(&m, "PUT", "/v2/groups/shop", Some(json!({"scaleBy": 0}))).await.0, 422);

        let after = (call(&m, "GET", "/v2/apps", None).await.1, call(&m, "GET", "/v2/groups", None).await.1);
        assert_eq!(before, after, "rejected requests change nothing");
    }

    #[tokio::test]
    async fn put_replaces_the_apps_of_a_group_and_stops_dependents_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = master(dir.path()).await;
        let group = json!({"id": "/g", "apps": [app("db", &[]), app("api", &["db"]), app("web", &["api"])]});
        assert_eq!(call(&m, "POST", "/v2/groups", Some(group)).await.0, 201);
        let (status, plan) = call(&m, "DELETE", "/v2/groups/g", None).await;
        assert_eq!(status, 200, "{plan}");
        assert_eq!(
            call(&m, "POST", "/v2/groups", Some(json!({"id": "/g", "apps": [app("db", &[]), app("api", &["db"])]})))
                .await
                .0,
            201
        );

        // Without `web`... and with `api` gone: a dry run shows stop then start/update.
        let update = json!({"apps": [app("db", &[]), app("cache", &["db"])]});
        let (status, plan) = call(&m, "PUT", "/v2/groups/g?dryRun=true&force=true", Some(update.clone())).await;
        assert_eq!(status, 200, "{plan}");
        let actions: Vec<(String, String)> = plan["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .flat_map(|s| s["actions"].as_array().cloned().unwrap_or_default())
            .map(|a| (a["action"].as_str().unwrap_or("").to_string(), a["app"].as_str().unwrap_or("").to_string()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("StopApplication".to_string(), "/g/api".to_string()),
                ("StartApplication".to_string(), "/g/cache".to_string())
            ],
            "unchanged /g/db is left alone"
        );
        // A deployment runs for /g/db: changing it needs force.
        let (status, _) = call(
            &m,
            "PUT",
            "/v2/groups/g",
            Some(json!({"apps": [{"id": "db", "cmd": "sleep 5", "cpus": 0.1, "mem": 16}]})),
        )
        .await;
        assert_eq!(status, 409);
        let (status, body) = call(&m, "PUT", "/v2/groups/g?force=true", Some(update)).await;
        assert_eq!(status, 200, "{body}");
        let (_, g) = call(&m, "GET", "/v2/groups/g", None).await;
        assert_eq!(app_ids(&g), vec!["/g/cache", "/g/db"]);
    }

    fn cmd_of(group: &Value, id: &str) -> String {
        let apps = group["apps"].as_array().cloned().unwrap_or_default();
        let app = apps.iter().find(|a| a["id"] == id).unwrap_or_else(|| panic!("{id} in {group}"));
        app["cmd"].as_str().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn a_group_rolls_back_to_a_version_even_after_a_restart_and_deleted_apps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = master(dir.path()).await;
        let first = json!({"id": "/shop", "apps": [app("db", &[]), app("web", &["db"])]});
        let (status, created) = call(&m, "POST", "/v2/groups", Some(first)).await;
        assert_eq!(status, 201, "{created}");
        let v1 = created["version"].as_str().expect("a version").to_string();
        // The second version changes db, drops web (deleted with its versions), adds cache.
        let second = json!({"apps": [{"id": "db", "cmd": "sleep 200", "cpus": 0.1, "mem": 16}, app("cache", &[])]});
        let (status, changed) = call(&m, "PUT", "/v2/groups/shop?force=true", Some(second)).await;
        assert_eq!(status, 200, "{changed}");
        let v2 = changed["version"].as_str().expect("a version").to_string();
        assert_eq!(app_ids(&call(&m, "GET", "/v2/groups/shop", None).await.1), vec!["/shop/cache", "/shop/db"]);

        let (status, rolled) = call(&m, "PUT", "/v2/groups/shop?force=true", Some(json!({"version": v1}))).await;
        assert_eq!(status, 200, "{rolled}");
        assert!(rolled["deploymentId"].is_string() && rolled["version"].as_str() > Some(v2.as_str()), "{rolled}");
        let (_, shop) = call(&m, "GET", "/v2/groups/shop", None).await;
        assert_eq!(app_ids(&shop), vec!["/shop/db", "/shop/web"], "web is back, cache is gone");
        assert_eq!(cmd_of(&shop, "/shop/db"), "sleep 100", "db as it was at {v1}");
        let web = shop["apps"].as_array().and_then(|a| a.iter().find(|a| a["id"] == "/shop/web")).cloned();
        assert_eq!(web.expect("web")["dependencies"], json!(["/shop/db"]));

        // The snapshots (and cache's kept definition) survive a restart of the master.
        drop(m);
        let m = reopen(dir.path()).await;
        let (status, body) = call(&m, "PUT", "/v2/groups/shop?force=true", Some(json!({"version": v2}))).await;
        assert_eq!(status, 200, "{body}");
        let (_, shop) = call(&m, "GET", "/v2/groups/shop", None).await;
        assert_eq!(app_ids(&shop), vec!["/shop/cache", "/shop/db"]);
        assert_eq!(cmd_of(&shop, "/shop/db"), "sleep 200");

        // Bad rollbacks change nothing and say why.
        let before = call(&m, "GET", "/v2/groups", None).await.1;
        let unknown = "2001-01-01T00:00:00.000Z";
        let (status, body) = call(&m, "PUT", "/v2/groups/shop", Some(json!({"version": unknown}))).await;
        assert_eq!(status, 404, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(unknown) && m.contains("versions")), "{body}");
        let (status, body) = call(&m, "PUT", "/v2/groups/shop", Some(json!({"version": 7}))).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["details"][0]["path"], "/version", "{body}");
        let (status, _) = call(&m, "PUT", "/v2/groups/shop", Some(json!({"version": v1, "apps": []}))).await;
        assert_eq!(status, 422);
        assert_eq!(call(&m, "PUT", "/v2/groups/nothing", Some(json!({"version": v1}))).await.0, 404);
        assert_eq!(before, call(&m, "GET", "/v2/groups", None).await.1, "refused rollbacks change nothing");
    }
}
