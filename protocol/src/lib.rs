//! Wire types shared by master, agent and CLI: typed ids, resources, Marathon DTOs (app
//! definitions in, Marathon's response bodies out: [`views`]) and the agent protocol; and
//! [`error_chain()`], the one way every crate prints an error with its causes. No I/O
//! lives here.
pub mod agent;
mod error_chain;
pub mod ids;
pub mod marathon;
pub mod resources;
pub mod time;
pub mod views;

pub use error_chain::{error_chain, ErrorChain};
pub use ids::{check_id_bounds, is_valid_hostname, AgentId, AppId, ClusterId, DeploymentId, OfferId, TaskId};
pub use marathon::{
    AppDefinition, BodyError, Constraint, ConstraintOperator, ErrorBody, NetworkMode, TaskState, Violation,
};
pub use resources::{parse_attributes, Attributes, PortRanges, Resources};
pub use time::Timestamp;

/// Errors from parsing wire values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid id '{id}': {reason}")]
    InvalidId { id: String, reason: String },
    #[error("invalid resources '{input}': {reason}")]
    InvalidResources { input: String, reason: String },
    #[error("invalid attributes '{input}': {reason}")]
    InvalidAttributes { input: String, reason: String },
}
