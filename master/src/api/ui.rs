//! The web UI at `/ui/`: plain JavaScript modules, HTML and CSS from the workspace's `ui/`
//! directory, compiled into the binary (nothing is fetched at run time), and `/`, which
//! sends browsers there. `PLINTH_UI_DIR` (read when the router is built) serves the files
//! from a directory instead, so the UI can be worked on without rebuilding.
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::shell::Master;

/// The environment variable naming a directory to serve the UI from (development).
pub const DIR_ENV: &str = "PLINTH_UI_DIR";

/// Every file of the UI, by its path under `ui/`. A file added there is added here too
/// (a test checks that the two agree).
pub const FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../../../ui/index.html")),
    ("style.css", include_bytes!("../../../ui/style.css")),
    ("favicon.svg", include_bytes!("../../../ui/favicon.svg")),
    ("js/api.js", include_bytes!("../../../ui/js/api.js")),
    ("js/diff.js", include_bytes!("../../../ui/js/diff.js")),
    ("js/dom.js", include_bytes!("../../../ui/js/dom.js")),
    ("js/events.js", include_bytes!("../../../ui/js/events.js")),
    ("js/main.js", include_bytes!("../../../ui/js/main.js")),
    ("js/model.js", include_bytes!("../../../ui/js/model.js")),
    ("js/views/app.js", include_bytes!("../../../ui/js/views/app.js")),
    ("js/views/apps.js", include_bytes!("../../../ui/js/views/apps.js")),
    ("js/views/deployments.js", include_bytes!("../../../ui/js/views/deployments.js")),
    ("js/views/form.js", include_bytes!("../../../ui/js/views/form.js")),
    ("js/views/logs.js", include_bytes!("../../../ui/js/views/logs.js")),
    ("js/views/nodes.js", include_bytes!("../../../ui/js/views/nodes.js")),
    ("js/views/queue.js", include_bytes!("../../../ui/js/views/queue.js")),
    ("js/widgets.js", include_bytes!("../../../ui/js/widgets.js")),
];

/// Scripts, styles and API calls from this origin only; no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Where the UI's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The copy compiled into the binary ([`FILES`]).
    Embedded,
    /// A directory laid out like `ui/`, read on every request.
    Dir(PathBuf),
}

impl Source {
    /// [`Source::Dir`] when `PLINTH_UI_DIR` is set, else the embedded copy.
    pub fn from_env() -> Source {
        match std::env::var_os(DIR_ENV) {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                tracing::info!(dir = %dir.display(), "serving the web UI from a directory ({DIR_ENV})");
                Source::Dir(dir)
            }
            _ => Source::Embedded,
        }
    }

    async fn load(&self, path: &str) -> Option<Vec<u8>> {
        match self {
            Source::Embedded => FILES.iter().find(|(name, _)| *name == path).map(|(_, bytes)| bytes.to_vec()),
            Source::Dir(dir) => {
                let relative = safe_relative(path)?;
                tokio::fs::read(dir.join(relative)).await.ok()
            }
        }
    }
}

/// `path` as a relative path with plain components only (no `..`, no root, no `.`).
fn safe_relative(path: &str) -> Option<PathBuf> {
    let candidate = Path::new(path);
    let plain = !path.is_empty()
        && !path.contains('\\')
        && candidate.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    plain.then(|| candidate.to_path_buf())
}

/// The Content-Type of a UI file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The UI's routes: `/ui` (to `/ui/`), `/ui/` (the page) and `/ui/{*path}` (its files).
pub fn routes<S: Clone + Send + Sync + 'static>(source: Source) -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|State(source): State<Arc<Source>>| async move { serve(&source, "index.html").await }))
        .route(
            "/ui/{*path}",
            get(|State(source): State<Arc<Source>>, UrlPath(path): UrlPath<String>| async move {
                serve(&source, &path).await
            }),
        )
        .with_state(Arc::new(source))
}

async fn serve(source: &Source, path: &str) -> Result<Response, ApiError> {
    let bytes = source.load(path).await.ok_or_else(|| ApiError::NotFound(format!("no such resource: /ui/{path}")))?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    // Revalidate every time: a new master binary brings new files under the same names.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    Ok(response)
}

/// True when the client prefers a page: it accepts `text/html` and does not name JSON
/// before it (browsers do; curl's `*/*` and API clients do not).
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let position = |needle: &str| accept.find(needle);
    match (position("text/html"), position("application/json")) {
        (Some(html), Some(json)) => html < json,
        (Some(_), None) => true,
        _ => false,
    }
}

/// `GET /`: browsers go to the UI; every other client gets the landing answer as before.
pub async fn root(state: State<Arc<Master>>, headers: HeaderMap) -> Response {
    if wants_html(&headers) {
        return Redirect::to("/ui/").into_response();
    }
    super::misc::landing(state).await.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn ui_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui")
    }

    async fn get(router: Router, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, body.to_vec())
    }

    /// Every file under `ui/` (but the README and its screenshots) is embedded, and
    /// every embedded file is there.
    #[test]
    fn every_ui_file_is_embedded() {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let relative = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                if relative == "screenshots" || relative.ends_with(".md") {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(relative);
                }
            }
        }
        let mut on_disk = Vec::new();
        walk(&ui_dir(), &ui_dir(), &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(name, _)| name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "ui/ and ui::FILES disagree");
        for (name, bytes) in FILES {
            assert_eq!(std::fs::read(ui_dir().join(name)).unwrap(), *bytes, "{name}");
        }
    }

    #[tokio::test]
    async fn files_have_their_type_and_are_revalidated() {
        let (status, headers, body) = get(routes(Source::Embedded), "/ui/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert!(String::from_utf8_lossy(&body).contains("<script type=\"module\""));
        for (path, kind) in [
            ("/ui/js/main.js", "text/javascript; charset=utf-8"),
            ("/ui/style.css", "text/css; charset=utf-8"),
            ("/ui/favicon.svg", "image/svg+xml"),
            ("/ui/index.html", "text/html; charset=utf-8"),
        ] {
            let (status, headers, _) = get(routes(Source::Embedded), path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], kind, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
        }
        let (status, headers, _) = get(routes(Source::Embedded), "/ui").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/ui/");
    }

    #[tokio::test]
    async fn unknown_paths_are_marathon_404s() {
        for path in ["/ui/nope.js", "/ui/js/../index.html", "/ui/js/", "/ui/%2e%2e/Cargo.toml"] {
            let (status, headers, body) = get(routes(Source::Dir(ui_dir())), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{path}");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(body["message"].as_str().unwrap().contains("no such resource"), "{path}: {body}");
        }
        let (status, _, _) = get(routes(Source::Embedded), "/ui/missing.html").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_directory_source_serves_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("js")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>dev</p>").unwrap();
        std::fs::write(dir.path().join("js/main.js"), "export {};").unwrap();
        let source = Source::Dir(dir.path().to_path_buf());
        let (status, _, body) = get(routes(source.clone()), "/ui/").await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, b"<p>dev</p>".as_slice()));
        let (status, headers, _) = get(routes(source.clone()), "/ui/js/main.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        std::fs::write(dir.path().join("index.html"), "<p>changed</p>").unwrap();
        let (_, _, body) = get(routes(source), "/ui/").await;
        assert_eq!(body, b"<p>changed</p>");
    }

    #[test]
    fn browsers_want_html_and_api_clients_do_not() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
            wants_html(&headers)
        };
        assert!(accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
        assert!(!accept("*/*"));
        assert!(!accept("application/json"));
        assert!(!accept("application/json, text/html"));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn only_plain_relative_paths_are_read_from_a_directory() {
        assert!(safe_relative("js/main.js").is_some());
        for bad in ["", "/etc/passwd", "../x", "js/../x", "js//x", "./x", "js/", "a\\b"] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
