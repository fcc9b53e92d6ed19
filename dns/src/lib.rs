//! Mesos-DNS names for Plinth's apps, served by the master and by every agent.
//!
//! Pure parts (clock, entropy and spawning banned, see ARCHITECTURE.md): `records.rs`,
//! `builder.rs`, `http_api.rs`.
//!
//! - `records.rs`: the record set (names relative to the DNS domain) and its wire form,
//!   [`DnsRecords`], which the master sends agents (`GET /agent/v1/dns`).
//! - `builder.rs` (pure): the cluster as the master sees it ([`ClusterView`]) → the
//!   Mesos-DNS record set: `<app>.marathon`, `_<app>._tcp.marathon`, `leader`,
//!   `master`, `<host>.slave`, ...
//! - `http_api.rs` (pure): Mesos-DNS's HTTP answers (`/v1/hosts/{host}`,
//!   `/v1/services/{service}`) from a record set.
//! - `server.rs`: the DNS server (hickory-server, UDP and TCP): names in the domain from
//!   the record set, everything else forwarded.
//! - `forward.rs`: the upstream resolvers (the host's resolv.conf without loopback stubs)
//!   and the caching forwarder (hickory-resolver).

pub mod builder;
pub mod forward;
pub mod http_api;
pub mod records;
pub mod server;

pub use builder::{build, AgentNode, ClusterView, PortProtocol, TaskNode, TaskPort};
pub use records::{DnsRecords, RecordSet, SrvTarget};
pub use server::{serve, DnsSettings, DEFAULT_DOMAIN, DEFAULT_PORT, DEFAULT_TTL_SECS};
