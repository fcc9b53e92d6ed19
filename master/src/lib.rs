//! The master: the shell around the scheduler core (`plinth-scheduler`). It owns the shared
//! state of a running master and the ticker (`shell.rs`), the durable store (`store/`: redb
//! or etcd), which master leads and the followers' proxy (`leader.rs`),
//! the Marathon v2 API, agent protocol and operator endpoints (`api/`), events, metrics,
//! the image registry (pull-through cache and push target on `:5000`), the HTTP side of
//! PXE provisioning (`pxe.rs`), who may use the API (`access.rs`), the API's TLS (`tls.rs`),
//! the master's part of each task's start timeline (`timeline.rs`)
//! and the one way to start it all (`start.rs`).
pub mod access;
pub mod api;
pub mod ca;
pub mod checksum;
pub mod dns;
pub mod error;
pub mod events;
pub mod ids;
pub mod leader;
pub mod leader_proxy;
pub mod metrics;
pub mod pxe;
pub mod read_model;
pub mod registry;
pub mod role;
pub mod shell;
pub mod start;
pub mod store;
pub mod timeline;
pub mod tls;

pub use error::{ApiError, MasterError};
pub use shell::{Master, MasterConfig};
pub use start::{build, run, serve};
pub use store::{StateStore, Store, StoreError};
