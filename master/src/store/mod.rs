//! The master's durable state behind one contract ([`StateStore`]), with two engines:
//! redb in the data dir (`redb.rs`, one master, the default) and etcd (`etcd.rs`, any
//! number of masters, one of them leading). Both hold the same records (apps, versions,
//! tasks, agents, deployments, groups, event subscriptions, the framework id) in the
//! same encoding: `P1` + CRC-32 + JSON (`checksum.rs`), verified on load, except task
//! records, whose payload is compact (`task_codec.rs`). A [`Batch`]
//! (a command's changes, read back from the core under its lock) is one transaction in
//! either engine, so a 2xx answer given after [`StateStore::commit`] is durable: on
//! disk with fsync (redb), or committed to an etcd quorum.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use plinth_protocol::AppDefinition;
use plinth_scheduler::{AgentRecord, AppRecord, Changes, Core, DeploymentRecord, GroupRecord, Snapshot};

pub mod etcd;
mod etcd_load;
pub mod redb;
pub mod task_codec;
pub mod writer;

pub use self::etcd::{EtcdSettings, EtcdStore, Fence};
pub use self::redb::{panic_text, Store, CLUSTER_MARKER, DB_FILE, OLD_GROUPS_FILE};

/// The tables (redb) or key spaces (etcd) of the core's records, in load order.
pub const RECORD_TABLES: [&str; 6] = ["apps", "app_versions", "tasks", "agents", "deployments", "groups"];
/// Callback subscriptions, kept beside the records.
pub const SUBSCRIPTIONS_TABLE: &str = "event_subscriptions";

/// What the master needs of its store. Calls block (redb fsyncs, etcd answers over the
/// network): the shell makes them from the blocking pool.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// `redb` or `etcd`.
    fn kind(&self) -> &'static str;
    /// Where the state lives (a path, or etcd endpoints and prefix).
    fn describe(&self) -> String;
    /// The cluster's framework id, made once with the store: agents follow no master with another.
    fn framework_id(&self) -> Result<String, StoreError>;
    /// Everything the core needs to restore itself; a damaged record is an error naming it.
    fn load_checked(&self) -> Result<Snapshot, StoreError>;
    /// Writes a batch in one transaction; durable on return.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;
    /// Adds (or replaces) a subscription; durable on return.
    fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError>;
    /// Removes a subscription; returns whether it existed.
    fn delete_subscription(&self, callback_url: &str) -> Result<bool, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data dir {path}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the store {path}")]
    Open { path: PathBuf, source: ::redb::DatabaseError },
    #[error("store transaction failed while {operation}")]
    Transaction { operation: &'static str, source: ::redb::Error },
    #[error("cannot encode {table} record '{key}'")]
    Encode { table: &'static str, key: String, source: serde_json::Error },
    #[error("cannot decode {table} record '{key}' (the store is damaged or from a newer version)")]
    Decode { table: &'static str, key: String, source: serde_json::Error },
    #[error("cannot encode {table} record '{key}' in its compact form")]
    EncodeCompact { table: &'static str, key: String, source: postcard::Error },
    #[error(
        "cannot decode {table} record '{key}' from its compact form (the store is damaged or from a newer version)"
    )]
    DecodeCompact { table: &'static str, key: String, source: postcard::Error },
    #[error("the {table} record '{key}' is damaged: {source}; restore the store from a backup")]
    Corrupt { table: &'static str, key: String, source: crate::checksum::ChecksumError },
    #[error("cannot import {path}")]
    Import { path: PathBuf, source: std::io::Error },
    #[error("the store schema version is {found}, this master understands {expected}")]
    Schema { found: String, expected: String },
    #[error(
        "the store {path} is empty (0 bytes): it is damaged, not a new cluster; restore it from a backup \
         (or remove it and {marker} to start a new, empty cluster)"
    )]
    Empty { path: PathBuf, marker: PathBuf },
    #[error(
        "the store {path} is missing but {marker} says this data dir held a cluster: restore the store \
         from a backup (or remove {marker} to start a new, empty cluster)"
    )]
    Lost { path: PathBuf, marker: PathBuf },
    #[error("the store {path} is damaged ({reason}): restore it from a backup")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot make {path} private to the master")]
    Permissions { path: PathBuf, source: std::io::Error },
    #[error("cannot write the cluster marker {path}")]
    Marker { path: PathBuf, source: std::io::Error },
    #[error("cannot reach etcd at {endpoints}")]
    EtcdConnect { endpoints: String, source: etcd_client::Error },
    #[error("etcd request failed while {operation}")]
    Etcd { operation: &'static str, source: etcd_client::Error },
    #[error(
        "the {table} record '{key}' is {size} bytes, over etcd's request limit of {limit} bytes: \
         it is refused rather than written in part"
    )]
    TooLarge { table: &'static str, key: String, size: usize, limit: usize },
    #[error("this master is no longer the leader: its write was refused by etcd (another master leads now)")]
    Deposed,
    #[error("the etcd key '{key}' under the prefix is not one of Plinth's records ({reason}): wrong --etcd-prefix?")]
    Foreign { key: String, reason: String },
}

/// A persisted HTTP callback subscription (`POST /v2/eventSubscriptions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub callback_url: String,
    pub client_ip: Option<String>,
    pub created_at: String,
}

/// Writes to make in one transaction: `(table, key, Some(json) | None for delete)`.
/// Built from the core under its lock (cheap), committed off the async threads.
#[derive(Debug, Default)]
pub struct Batch {
    puts: Vec<(&'static str, String, Option<Vec<u8>>)>,
    /// Apps whose every stored version is deleted (the app is gone).
    drop_versions_of: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.drop_versions_of.is_empty()
    }
    pub fn len(&self) -> usize {
        self.puts.len() + self.drop_versions_of.len()
    }
    /// The record writes, in order: `(table, key, Some(sealed value) | None for delete)`.
    pub fn puts(&self) -> &[(&'static str, String, Option<Vec<u8>>)] {
        &self.puts
    }
    /// Apps whose stored versions all go (applied before [`Batch::puts`]).
    pub fn dropped_versions(&self) -> &[String] {
        &self.drop_versions_of
    }
    /// Adds a later batch's writes after this one's, as if both were one batch in order.
    /// A later drop of an app's versions also covers the versions written here.
    pub fn append(&mut self, later: Batch) {
        for app in &later.drop_versions_of {
            let prefix = version_key(app, "");
            self.puts.retain(|(table, key, _)| !(*table == "app_versions" && key.starts_with(&prefix)));
        }
        self.drop_versions_of.extend(later.drop_versions_of);
        self.puts.extend(later.puts);
    }

    /// A batch of raw writes (tests, tools).
    pub fn put(&mut self, table: &'static str, key: impl Into<String>, value: Option<Vec<u8>>) {
        self.puts.push((table, key.into(), value));
    }

    /// Reads the dirty records back from the core: a key the core no longer has is a delete.
    pub fn of(core: &Core, changes: &Changes) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        for id in &changes.apps {
            let key = id.as_str().to_string();
            match core.app(id) {
                Some(app) => {
                    let bytes = encode("apps", &key, app)?;
                    batch.puts.push(("apps", key, Some(bytes)));
                }
                None => {
                    batch.puts.push(("apps", key.clone(), None));
                    batch.drop_versions_of.push(key);
                }
            }
        }
        for (id, version) in &changes.app_versions {
            let key = version_key(id.as_str(), version);
            let bytes = core.app_version(id, version).map(|def| encode("app_versions", &key, def)).transpose()?;
            batch.puts.push(("app_versions", key, bytes));
        }
        for id in &changes.tasks {
            let key = id.as_str().to_string();
            let bytes = core
                .task(id)
                .map(|t| task_codec::encode_task(&key, t).map(|payload| crate::checksum::seal(&payload)))
                .transpose()?;
            batch.puts.push(("tasks", key, bytes));
        }
        for id in &changes.agents {
            let key = id.as_str().to_string();
            let bytes = core.agent(id).map(|a| encode("agents", &key, &a.record)).transpose()?;
            batch.puts.push(("agents", key, bytes));
        }
        for id in &changes.deployments {
            let key = id.as_str().to_string();
            let bytes = core.deployment(id).map(|d| encode("deployments", &key, d)).transpose()?;
            batch.puts.push(("deployments", key, bytes));
        }
        for path in &changes.groups {
            let bytes = core.group_records().get(path).map(|g| encode("groups", path, g)).transpose()?;
            batch.puts.push(("groups", path.clone(), bytes));
        }
        Ok(batch)
    }
}

/// The records of a snapshot back from `(key, sealed value)` rows of each table in
/// [`RECORD_TABLES`]: both engines decode through here ([`decode_rows`]), so they load alike.
pub fn snapshot_from(
    mut rows_of: impl FnMut(&'static str) -> Result<Vec<(String, Vec<u8>)>, StoreError>,
) -> Result<Snapshot, StoreError> {
    let mut snapshot = Snapshot::default();
    for table in RECORD_TABLES {
        decode_rows(table, rows_of(table)?, &mut snapshot)?;
    }
    Ok(snapshot)
}

/// Decodes rows of one record table (keys below the table, sealed values), in order, onto
/// the end of `into`'s records of that table. Any run of a table's rows decodes alone, so
/// a load can split a table across threads and append the parts in key order.
pub fn decode_rows<K: AsRef<str>, V: AsRef<[u8]>>(
    table: &'static str,
    rows: impl IntoIterator<Item = (K, V)>,
    into: &mut Snapshot,
) -> Result<(), StoreError> {
    for (k, v) in rows {
        let (k, v) = (k.as_ref(), v.as_ref());
        match table {
            "apps" => into.apps.push(decode::<AppRecord>("apps", k, v)?),
            "app_versions" => {
                let def: AppDefinition = decode("app_versions", k, v)?;
                let Some((app, version)) = k.split_once('\0') else {
                    return Err(StoreError::Schema {
                        found: format!("app_versions key {k:?}"),
                        expected: "app\\0version".into(),
                    });
                };
                let app = plinth_protocol::AppId::parse(app).map_err(|e| StoreError::Decode {
                    table: "app_versions",
                    key: k.to_string(),
                    source: serde::de::Error::custom(e),
                })?;
                into.app_versions.push((app, version.to_string(), def));
            }
            "tasks" => {
                let payload = crate::checksum::open(v).map_err(|source| StoreError::Corrupt {
                    table: "tasks",
                    key: k.to_string(),
                    source,
                })?;
                into.tasks.push(task_codec::decode_task(k, payload)?);
            }
            "agents" => into.agents.push(decode::<AgentRecord>("agents", k, v)?),
            "deployments" => into.deployments.push(decode::<DeploymentRecord>("deployments", k, v)?),
            "groups" => into.groups.push((k.to_string(), decode::<GroupRecord>("groups", k, v)?)),
            other => unreachable!("{other} is not one of RECORD_TABLES"),
        }
    }
    Ok(())
}

pub(crate) fn encode<T: Serialize>(table: &'static str, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    let json =
        serde_json::to_vec(value).map_err(|source| StoreError::Encode { table, key: key.to_string(), source })?;
    Ok(crate::checksum::seal(&json))
}

/// A stored record back: its checksum verified, then its JSON decoded.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: &str,
    stored: &[u8],
) -> Result<T, StoreError> {
    let json =
        crate::checksum::open(stored).map_err(|source| StoreError::Corrupt { table, key: key.to_string(), source })?;
    serde_json::from_slice(json).map_err(|source| StoreError::Decode { table, key: key.to_string(), source })
}

pub(crate) fn version_key(app: &str, version: &str) -> String {
    format!("{app}\0{version}")
}

#[cfg(test)]
mod contract;
