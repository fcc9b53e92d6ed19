//! The master: scheduler core (allocator, offers, app supervisor, deployments), durable store, Marathon v2 API and agent protocol endpoints, and the image registry (pull-through cache and push target on `:5000`).
pub mod api;
pub mod bench;
pub mod boot;
pub mod core;
pub mod error;
pub mod events;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;

pub use error::{ApiError, MasterError};
pub use server::{run, serve, Master, MasterConfig};
pub use store::{Store, StoreError};
