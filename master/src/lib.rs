//! The master: the shell around the scheduler core (`plinth-scheduler`): the durable store, Marathon v2 API and agent protocol endpoints, and the image registry (pull-through cache and push target on `:5000`).
pub mod api;
pub mod bench;
pub mod boot;
pub mod error;
pub mod events;
pub mod ids;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;

pub use error::{ApiError, MasterError};
pub use server::{run, serve, Master, MasterConfig};
pub use store::{Store, StoreError};
