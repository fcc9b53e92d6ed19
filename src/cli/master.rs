//! The master's API as the client commands call it: one request with a readable error
//! (Marathon's message and details), and waiting for a deployment to finish.
use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

use super::credentials::{resolve, Auth, Login};
use super::progress::show_pull_progress;
use super::render::text;
use super::ClientArgs;

/// How long one request to the master or an agent may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEPLOYMENT_POLL: Duration = Duration::from_millis(500);

/// An error answer from the master, shown as Marathon gives it.
#[derive(Debug)]
pub(super) struct ApiError {
    method: Method,
    path: String,
    pub(super) status: StatusCode,
    message: String,
    details: Vec<(String, Vec<String>)>,
    /// What to do about it (how to log in, for a 401).
    hint: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query string is noise here; the path says what was asked for.
        let path = self.path.split('?').next().unwrap_or_default();
        write!(f, "{} {path} failed with {}: {}", self.method, self.status, self.message)?;
        for (path, errors) in &self.details {
            write!(f, "\n  {path}: {}", errors.join("; "))?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

pub(super) fn api_error(method: Method, path: &str, status: StatusCode, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().chars().take(500).collect());
    let details = parsed
        .as_ref()
        .and_then(|v| v.get("details"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|d| {
                    let path = text(d, "path");
                    let errors = d
                        .get("errors")
                        .and_then(Value::as_array)
                        .map(|e| {
                            e.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect()
                        })
                        .unwrap_or_default();
                    (path, errors)
                })
                .collect()
        })
        .unwrap_or_default();
    ApiError { method, path: path.to_string(), status, message, details, hint: None }
}

/// The client of the master's API (not the master itself: that is `plinth_master::Master`).
pub(super) struct MasterClient {
    /// `--master A,B,C` (HA masters): calls go to the first that answers; followers proxy
    /// to the leader, and one that answers 503 (no leader there) passes to the next.
    bases: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    /// For the master's API; agents get no credentials (they are not the master's to give).
    pub(super) http: reqwest::Client,
    login: Login,
}

impl MasterClient {
    pub(super) fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let bases: Vec<String> = args.master.split(',').map(|m| m.trim().trim_end_matches('/').to_string()).collect();
        for base in &bases {
            if !base.starts_with("http://") && !base.starts_with("https://") {
                bail!("--master must be an http:// URL (or several, comma-separated), got '{base}'");
            }
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path).with_context(|| format!("cannot read the CA file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no usable PEM CA certificate", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().context("cannot create the HTTP client")?;
        let login = resolve(args, &bases[0])?;
        Ok(MasterClient { bases, current: Default::default(), http, login })
    }

    fn base(&self) -> &str {
        &self.bases[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()]
    }

    /// A request to the master's API, with the client's credentials.
    pub(super) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base()));
        match &self.login.auth {
            Some(Auth::Basic { user, password }) => request.basic_auth(user, Some(password)),
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One API call; the answer's JSON (`null` for an empty body) or a readable error.
    pub(super) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.send(method, path, body, REQUEST_TIMEOUT).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>, timeout: Duration) -> anyhow::Result<Value> {
        let first = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut attempt = 0;
        let response = loop {
            let mut request = self.request(method.clone(), path).timeout(timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            let last = attempt + 1 >= self.bases.len();
            match request.send().await {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE && !last => {}
                Ok(response) => break response,
                Err(e) if e.is_connect() && !last => {}
                Err(e) => return Err(self.unreachable(e)),
            }
            attempt += 1;
            self.current.store((first + attempt) % self.bases.len(), std::sync::atomic::Ordering::Relaxed);
        };
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            let mut error = api_error(method, path, status, &bytes);
            error.hint = self.login.hint(status);
            return Err(error.into());
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {path}: the master answered with invalid JSON"))
    }

    /// A POST that makes the master pull images (`/v1/images`): image pull progress bars on
    /// stderr meanwhile, and `timeout` instead of the usual request timeout.
    pub(super) async fn call_showing_pulls(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let events = self.request(Method::GET, "/v1/events").header("accept", "text/event-stream");
        let _progress = AbortOnDrop(tokio::spawn(show_pull_progress(events)));
        self.send(Method::POST, path, Some(body), timeout).await
    }

    fn unreachable(&self, err: reqwest::Error) -> anyhow::Error {
        anyhow::Error::new(err).context(format!("cannot reach the master at {}", self.base()))
    }

    /// Polls `/v2/deployments` until the deployment is gone (finished or replaced).
    pub(super) async fn wait_for_deployment(&self, deployment_id: &str, timeout: Duration) -> anyhow::Result<()> {
        let events = self.request(Method::GET, "/v1/events").header("accept", "text/event-stream");
        let _progress = AbortOnDrop(tokio::spawn(show_pull_progress(events)));
        let started = Instant::now();
        loop {
            let deployments = self.call(Method::GET, "/v2/deployments", None).await?;
            let running = deployments
                .as_array()
                .is_some_and(|list| list.iter().any(|d| d.get("id").and_then(Value::as_str) == Some(deployment_id)));
            if !running {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                bail!(
                    "deployment {deployment_id} is still running after {}s (see `plinth queue` for apps waiting for resources)",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(DEPLOYMENT_POLL).await;
        }
    }
}

/// Stops a background task when the waiting ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_status_message_and_paths() {
        let body = br#"{"message":"Object is not valid","details":[{"path":"/cpus","errors":["must be > 0"]}]}"#;
        let err = api_error(Method::POST, "/v2/apps", StatusCode::UNPROCESSABLE_ENTITY, body).to_string();
        assert_eq!(
            err,
            "POST /v2/apps failed with 422 Unprocessable Entity: Object is not valid\n  /cpus: must be > 0"
        );
        let err = api_error(Method::GET, "/x", StatusCode::BAD_GATEWAY, b"upstream down").to_string();
        assert!(err.ends_with("502 Bad Gateway: upstream down"), "{err}");
    }
}
