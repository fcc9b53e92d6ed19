//! The master: scheduler core (allocator, offers, app supervisor, deployments), durable store, Marathon v2 API and agent protocol endpoints.
pub mod core;
