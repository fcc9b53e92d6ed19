//! Errors of the master shell, and the one place where API errors become HTTP answers.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use plinth_protocol::views::{Identifiable, LockedError};
use plinth_protocol::{ErrorBody, Violation};

use crate::store::StoreError;
use plinth_scheduler::{CoreError, GroupError};

/// Why the master could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot open the image registry")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("PXE boot server")]
    Provisioning(#[from] plinth_provisioning::serve::ServeError),
    #[error("the API's TLS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the cluster CA")]
    ClusterCa(#[from] crate::ca::CaError),
}

/// A request the API refuses. Converted to Marathon's status codes and bodies in
/// [`IntoResponse`] below.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The body is not JSON at all (400).
    #[error("Invalid JSON")]
    InvalidJson(String),
    /// The JSON has the wrong shape or invalid values (422).
    #[error("Object is not valid")]
    Invalid(Vec<Violation>),
    #[error("Request body too large: the limit is {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Something with that id exists already (409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// A request line or headers past the master's limits (414, 431).
    #[error("{message}")]
    TooLong { status: StatusCode, message: String },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Internal(String),
    /// An upstream (registry) failed or refused (502).
    #[error("{0}")]
    BadGateway(String),
    /// Too many expensive reads waiting (429 with `Retry-After`, see `read_model.rs`).
    #[error("Too many requests are waiting; retry in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    /// No leader to act (an election under way, etcd unreachable): 503 with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Core(e) => match e {
                CoreError::AppExists(_) | CoreError::AppLocked { .. } => StatusCode::CONFLICT,
                CoreError::AppNotFound(_)
                | CoreError::TaskNotFound(_)
                | CoreError::DeploymentNotFound(_)
                | CoreError::UnknownAgent(_)
                | CoreError::VersionNotFound { .. } => StatusCode::NOT_FOUND,
                CoreError::ServicePortsExhausted(..)
                | CoreError::ServicePortClash { .. }
                | CoreError::ServicePortOutOfRange { .. }
                | CoreError::InvalidApp(_) => StatusCode::UNPROCESSABLE_ENTITY,
            },
            ApiError::InvalidJson(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLong { status, .. } => *status,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::Conflict(message) => ApiError::Conflict(message),
            GroupError::NotFound(message) => ApiError::NotFound(message),
            GroupError::Invalid(violations) => ApiError::Invalid(violations),
            GroupError::Core(e) => ApiError::Core(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Core(CoreError::AppLocked { deployments, .. }) => serde_json::to_value(LockedError {
                message: self.to_string(),
                deployments: deployments.iter().map(|id| Identifiable { id: id.to_string() }).collect(),
            })
            .unwrap_or_default(),
            ApiError::Core(
                e @ (CoreError::ServicePortsExhausted(..)
                | CoreError::ServicePortClash { .. }
                | CoreError::ServicePortOutOfRange { .. }
                | CoreError::InvalidApp(_)),
            ) => {
                let path = if matches!(e, CoreError::InvalidApp(_)) { "/" } else { "/portDefinitions" };
                serde_json::to_value(ErrorBody {
                    message: "Object is not valid".into(),
                    details: vec![Violation { path: path.into(), errors: vec![e.to_string()] }],
                })
                .unwrap_or_default()
            }
            ApiError::InvalidJson(detail) => serde_json::to_value(ErrorBody {
                message: "Invalid JSON".into(),
                details: vec![Violation { path: "/".into(), errors: vec![detail.clone()] }],
            })
            .unwrap_or_default(),
            ApiError::Invalid(details) => {
                serde_json::to_value(ErrorBody { message: "Object is not valid".into(), details: details.clone() })
                    .unwrap_or_default()
            }
            _ => serde_json::to_value(ErrorBody { message: self.to_string(), details: Vec::new() }).unwrap_or_default(),
        };
        if status.is_server_error() {
            tracing::error!(error = %plinth_protocol::error_chain(&self), "request failed");
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::Busy { retry_after_secs } = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        if let ApiError::Unavailable(_) = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, 1.into());
        }
        response
    }
}
