//! The one gate every request to the master's API passes ([`require_credentials`]): once
//! the master has credentials (`access.rs`), a request without valid ones gets 401 and a
//! read-only caller's write gets 403, both with Marathon's `{"message": ...}`.
//!
//! Open whatever is configured: `/ping`, the UI's static files (`/ui/...`, and `/` for a
//! browser, which only redirects there; the page asks for credentials itself), the files
//! PXE firmware fetches (`/boot/...`: firmware has no credentials to send), and the agent
//! protocol (`/agent/v1/...`), which checks the join token itself (`agents.rs`), and the
//! cluster CA's public certificate (`/v1/ca.pem`: a client needs it before it can trust
//! the connection it would send credentials over).
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::access::{AccessConfig, Refusal, Role};
use crate::error::ApiError;
use crate::shell::Master;

/// The challenge of a 401 (Marathon's realm is its own name too).
pub const CHALLENGE: &str = r#"Basic realm="plinth""#;

/// Paths anyone may fetch, configured credentials or not.
fn is_open(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    path.starts_with("/agent/v1/")
        || (read
            && (path == "/ping"
                || path == "/v1/ca.pem"
                || path == "/ui"
                || path.starts_with("/ui/")
                || path.starts_with("/boot/")))
        || (read && path == "/" && super::ui::wants_html(headers))
}

/// A page's own script (fetch from the UI): it has a login form, so the 401 goes without
/// the challenge that would make the browser show its own dialog first (and hold the
/// request open meanwhile). The UI says so with `X-Requested-With` (browsers send
/// `Sec-Fetch-Mode` only to HTTPS or localhost origins, so that alone misses a plain-HTTP
/// master at its address). A navigation, curl or a Marathon client sends neither, or
/// `navigate`, and gets the challenge.
fn from_page_script(headers: &HeaderMap) -> bool {
    headers.contains_key("x-requested-with")
        || headers.get("sec-fetch-mode").is_some_and(|mode| mode.as_bytes() != b"navigate")
}

/// Logs once at start when the API is open to anyone who can reach it.
pub fn warn_if_open(access: &AccessConfig) {
    if access.credentials.is_empty() {
        tracing::warn!(
            "the API has no credentials: anyone who reaches this master may deploy, change and delete apps \
             (start it with --http-credentials-file or --api-token-file; see the README's Access control)"
        );
    }
}

/// The middleware: passes the request on with its caller's [`crate::access::Identity`] in
/// the extensions, or answers 401/403.
pub async fn require_credentials(State(master): State<Arc<Master>>, mut request: Request, next: Next) -> Response {
    let credentials = &master.config.access.credentials;
    if credentials.is_empty() || is_open(request.method(), request.uri().path(), request.headers()) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    let needed = Role::needed_for(request.method());
    let remote = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let presented = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    let refused = match credentials.authenticate(presented) {
        Ok(identity) if identity.role >= needed => {
            request.extensions_mut().insert(identity);
            return next.run(request).await;
        }
        Ok(identity) => {
            tracing::info!(remote_address = %remote, user = %identity.name, method = %request.method(), path = %path,
                "request refused: read-only credentials");
            ApiError::Forbidden(format!(
                "{} has read-only access; {} {path} needs an admin's credentials",
                identity.name,
                request.method()
            ))
            .into_response()
        }
        Err(refusal) => {
            let message = match refusal {
                Refusal::Missing => {
                    "Authentication required: send an admin's or a read-only user's credentials \
                                     (HTTP Basic user:password, or Authorization: Bearer TOKEN)"
                }
                Refusal::Malformed => {
                    "Malformed Authorization header: expected Basic base64(user:password) or Bearer TOKEN"
                }
                Refusal::Wrong => "Invalid username or password, or unknown token",
            };
            if refusal == Refusal::Missing {
                tracing::debug!(remote_address = %remote, method = %request.method(), path = %path,
                    "request without credentials refused");
            } else {
                tracing::warn!(remote_address = %remote, method = %request.method(), path = %path, ?refusal,
                    "request with invalid credentials refused");
            }
            let mut response = ApiError::Unauthorized(message.to_string()).into_response();
            if !from_page_script(request.headers()) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
            }
            response
        }
    };
    super::drain(request).await;
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Credentials, Role};
    use crate::shell::MasterConfig;
    use axum::body::Body;
    use base64::Engine as _;
    use serde_json::Value;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn master(dir: &std::path::Path, credentials: Credentials) -> axum::Router {
        let config = MasterConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.to_path_buf(),
            agent_timeout: Duration::from_secs(10),
            hostname: "127.0.0.1".into(),
            access: AccessConfig { credentials: Arc::new(credentials), ..Default::default() },
            ..Default::default()
        };
        crate::start::build(config, 8080, None).await.expect("master opens").1
    }

    fn credentials() -> Credentials {
        let mut c = Credentials::default();
        c.add_users("admin:adm1n", Role::Admin, "admins").unwrap();
        c.add_users("viewer:v1ew", Role::ReadOnly, "viewers").unwrap();
        c
    }

    fn basic(user_password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_password))
    }

    async fn call(router: &axum::Router, method: &str, path: &str, auth: Option<&str>) -> (u16, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status.as_u16(), parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn roles_decide_reads_and_writes_and_refusals_are_marathon_json() {
        let dir = tempfile::tempdir().unwrap();
        let router = master(dir.path(), credentials()).await;
        let (status, headers, body) = call(&router, "GET", "/v2/apps", None).await;
        assert_eq!(status, 401);
        assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), CHALLENGE);
        assert!(body["message"].as_str().unwrap().contains("Authentication required"), "{body}");
        let (status, _, body) = call(&router, "GET", "/v2/apps", Some(&basic("admin:wrong"))).await;
        assert_eq!(status, 401, "{body}");
        assert!(!body.to_string().contains("wrong"), "the secret is not echoed: {body}");
        assert_eq!(call(&router, "GET", "/v2/apps", Some(&basic("viewer:v1ew"))).await.0, 200);
        let (status, _, body) = call(&router, "DELETE", "/v2/apps/x", Some(&basic("viewer:v1ew"))).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["message"].as_str().unwrap().contains("read-only"), "{body}");
        assert_eq!(call(&router, "DELETE", "/v2/apps/x", Some(&basic("admin:adm1n"))).await.0, 404);
        // Unknown paths are no hint to a stranger: 401 like the rest.
        assert_eq!(call(&router, "GET", "/nope", None).await.0, 401);
        for open in ["/ping", "/ui/", "/ui/js/api.js"] {
            assert_eq!(call(&router, "GET", open, None).await.0, 200, "{open}");
        }
        let (status, _, body) = call(&router, "POST", "/agent/v1/register", None).await;
        assert_eq!(status, 400, "the agent protocol has its own check: {body}");
    }

    #[tokio::test]
    async fn the_ui_script_gets_no_challenge_so_its_own_form_asks() {
        let dir = tempfile::tempdir().unwrap();
        let router = master(dir.path(), credentials()).await;
        let request = Request::get("/v1/queue").header("sec-fetch-mode", "cors").body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        // Over plain HTTP to an address browsers send no Sec-Fetch-Mode: the UI's header.
        let request = Request::get("/v1/queue").header("x-requested-with", "plinth-ui").body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let curl = Request::get("/v1/queue").body(Body::empty()).unwrap();
        assert!(router.clone().oneshot(curl).await.unwrap().headers().get(header::WWW_AUTHENTICATE).is_some());
        let browser = Request::get("/").header("accept", "text/html").body(Body::empty()).unwrap();
        assert_eq!(router.oneshot(browser).await.unwrap().status(), 303, "/ sends browsers to the UI");
    }

    #[tokio::test]
    async fn without_credentials_the_api_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let router = master(dir.path(), Credentials::default()).await;
        assert_eq!(call(&router, "GET", "/v2/apps", None).await.0, 200);
    }
}
