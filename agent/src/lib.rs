//! The agent: registers with the master, reconciles its desired task set against the
//! tasks it runs, runs each under its own executor process (a Docker task as a container
//! inside it), serves their state and logs.
//!
//! Layout:
//! - start-up and configuration: `start` ([`run`], [`run_with`]: builds the node, spawns
//!   the loops, serves the API) and [`config`];
//! - the shell: `node` (the node state that the loops, the API and the checks share; it
//!   carries out the reconciler's decisions and checkpoints into [`state`]),
//!   `master_link` (register, sync and the status outbox, through `client`; `join` the
//!   first start's exchange of a PXE bootstrap token), `api` (the
//!   HTTP API on `:5051`), `checks` (the loop that probes tasks), [`lb`] (the service
//!   balancer: every app's service ports, fed by the master's service table);
//! - the pure cores: [`reconciler`] (desired vs observed → actions) and [`health`] (the
//!   health and readiness check state machine);
//! - running tasks: [`runtime`] (the `TaskRuntime` trait with the process and fake
//!   runtimes), [`executor_contract`] (the sandbox files agent and executor exchange),
//!   [`executor`] (the per-task supervisor process), [`container`] (Docker tasks as youki
//!   containers), [`image`] (the image store), [`fetch`] and [`archive`] (artifacts),
//!   [`cgroup`], [`logs`], [`taskenv`] (command and environment), [`inspect`];
//! - confining tasks: [`sandbox_fs`] (files in a sandbox, never through a link) and
//!   `confine` (the command task's PID and mount namespaces, user, capabilities),
//!   [`task_init`] (the PID 1 of a command task's namespace), [`userns`] (containers'
//!   `--userns-remap`);
//! - naming: `dns` (the DNS server over the master's Mesos-DNS records, long-polled
//!   through `client`).
//!
//! The test doubles (`runtime::FakeRuntime`, `testing`) are compiled only for tests and
//! with the `testing` feature, which the product binary does not enable.
mod api;
pub mod archive;
pub mod cgroup;
mod checks;
mod client;
pub mod config;
mod confine;
pub mod container;
mod dns;
mod error;
pub mod executor;
pub mod executor_contract;
pub mod executor_news;
pub mod fetch;
mod fsutil;
pub mod health;
mod identity;
pub mod image;
pub mod inspect;
mod join;
pub mod lb;
pub mod logs;
mod master_link;
mod node;
mod partition;
pub mod reconciler;
mod resources;
pub mod runtime;
pub mod sandbox_fs;
mod start;
pub mod state;
pub mod task_init;
pub mod taskenv;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod userns;

pub use config::{
    AgentConfig, AgentOptions, ContainerSettings, DEFAULT_BRIDGE, DEFAULT_CONTAINER_SUBNET, DEFAULT_LISTEN,
    DEFAULT_MAX_LAYER_BYTES, DEFAULT_WORK_DIR, IMAGES_DIR, REGISTRY_PORT,
};
pub use config::{TaskConfinement, DEFAULT_TASK_USER};
pub use error::AgentError;
pub use lb::LbSettings;
pub use resources::{detect_resources, resources_from_totals, DEFAULT_PORTS};
pub use start::{run, run_with};
