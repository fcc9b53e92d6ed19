//! The HA store: the core's records in etcd (`etcd-client`), one key per record under a
//! prefix (`{prefix}/{table}/{key}`, the tables of `redb.rs`), each value sealed like
//! redb's (`checksum.rs`). A batch is one etcd transaction, so a 2xx means committed to an
//! etcd quorum. A batch over etcd's per-transaction limits (128 operations, 1.5 MiB by
//! default) stays atomic through a journal: its operations are written in parts under
//! `{prefix}/journal/{id}/`, then one small transaction writes the manifest
//! `{prefix}/journal/{id}` (the commit point), then the records are written and the
//! journal removed; a load replays any journal left by a crash in between. Every write of
//! a leader carries its [`Fence`]: the transaction holds only while the leader key
//! it won still exists with the same create revision, so a deposed master never writes.
//! Loads read the whole prefix at one revision, in parallel ranges (`etcd_load.rs`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};
use serde::{Deserialize, Serialize};

use plinth_scheduler::Snapshot;

use super::etcd_load::{self as load, prefix_end};
use super::{decode, encode, snapshot_from, Batch, StateStore, StoreError, Subscription};
use super::{RECORD_TABLES, SUBSCRIPTIONS_TABLE};

const SCHEMA_VERSION: &str = "1";
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// What one transaction may carry, below etcd's default `--max-request-bytes` (1.5 MiB)
/// with room for the request's own framing.
pub const MAX_TXN_BYTES: usize = 1_400_000;
/// Per-key overhead counted against [`MAX_TXN_BYTES`].
const OP_OVERHEAD: usize = 64;
/// A load may read answers this big (etcd sends up to 2 GiB; a page that is bigger is
/// read again in halves, `etcd_load.rs`).
const MAX_DECODE_BYTES: usize = 512 * 1024 * 1024;

/// How to reach etcd (`plinth master --etcd ...`).
#[derive(Debug, Clone, Default)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster's state, without a trailing `/` (default `/plinth`).
    pub prefix: String,
    /// PEM CA certificate that signed the etcd servers' certificates.
    pub cacert: Option<PathBuf>,
    /// PEM client certificate and key (etcd's `--client-cert-auth`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// User and password (etcd's auth), the password read from a file or the environment.
    pub user: Option<(String, String)>,
    /// Time limit of one request, so a lost etcd fails a request instead of hanging it.
    pub request_timeout: Duration,
}

impl EtcdSettings {
    pub fn new(endpoints: Vec<String>) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            prefix: "/plinth".to_string(),
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        }
    }
}

/// The leader key a master won and its create revision: a fenced transaction holds only
/// while that very key exists (a new leader's key has another revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// The etcd store. Cheap to clone (the client is a shared channel).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: String,
    fence: Arc<RwLock<Option<Fence>>>,
    /// The runtime the client's connections live on; blocking calls wait on it.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).field("prefix", &self.prefix).finish()
    }
}

/// A write to a record key below the prefix: its sealed value, or `None` for a delete.
type Write = (String, Option<Vec<u8>>);

/// One write of a journal: a record key (below the prefix) and its sealed value, or a delete.
#[derive(Debug, Serialize, Deserialize)]
struct JournalOp {
    key: String,
    /// Base64 of the sealed value; absent for a delete.
    value: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalManifest {
    parts: usize,
}

fn etcd_err(operation: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |source| StoreError::Etcd { operation, source }
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::Import { path: path.clone(), source })
}

impl EtcdStore {
    /// Connects, checks the prefix holds Plinth's state (or nothing: a new cluster, whose
    /// schema and framework id are written then) and that its schema is this master's.
    pub async fn connect(settings: &EtcdSettings) -> Result<EtcdStore, StoreError> {
        let endpoints = settings.endpoints.join(",");
        let connect_err = |source| StoreError::EtcdConnect { endpoints: endpoints.clone(), source };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(settings.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_require_leader(true);
        if let Some((user, password)) = &settings.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if settings.cacert.is_some() || settings.cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &settings.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read_file(ca)?));
            }
            if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
                tls = tls.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&settings.endpoints, Some(options)).await.map_err(connect_err)?;
        let store = EtcdStore {
            client,
            prefix: settings.prefix.trim_end_matches('/').to_string(),
            endpoints: endpoints.clone(),
            fence: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        };
        store.init().await.map_err(|e| match e {
            StoreError::Etcd { source, .. } => connect_err(source),
            other => other,
        })?;
        Ok(store)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key the masters of this cluster campaign on.
    pub fn election_name(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// From now on every write holds only while `fence` does (`None`: unfenced).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.write().expect("the fence lock is never poisoned") = fence;
    }

    fn key(&self, space: &str, key: &str) -> Vec<u8> {
        format!("{}/{space}/{key}", self.prefix).into_bytes()
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_DECODE_BYTES)
    }

    async fn get_value(&self, key: Vec<u8>, operation: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut response = self.kv().get(key, None).await.map_err(etcd_err(operation))?;
        Ok(response.take_kvs().into_iter().next().map(|kv| kv.into_key_value().1))
    }

    async fn init(&self) -> Result<(), StoreError> {
        const OP: &str = "checking the store";
        let schema_key = self.key("meta", "schema_version");
        match self.get_value(schema_key.clone(), OP).await? {
            Some(found) if found == SCHEMA_VERSION.as_bytes() => return Ok(()),
            Some(found) => {
                return Err(StoreError::Schema {
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: SCHEMA_VERSION.to_string(),
                })
            }
            None => {}
        }
        // A new cluster only where the prefix is empty: anything else there is not ours.
        let root = format!("{}/", self.prefix).into_bytes();
        let mut others = self
            .kv()
            .get(root.clone(), Some(GetOptions::new().with_range(prefix_end(&root)).with_limit(1).with_keys_only()))
            .await
            .map_err(etcd_err(OP))?;
        if let Some(kv) = others.take_kvs().into_iter().next() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if !key.starts_with(&self.election_name()) {
                return Err(StoreError::Foreign { key, reason: "the prefix has no Plinth schema version".into() });
            }
        }
        // Marathon keeps one framework id for the life of the cluster.
        let id = format!("{}-0000", uuid::Uuid::new_v4());
        let txn = Txn::new().when([Compare::create_revision(schema_key.clone(), CompareOp::Equal, 0)]).and_then([
            TxnOp::put(schema_key, SCHEMA_VERSION, None),
            TxnOp::put(self.key("meta", "framework_id"), id, None),
        ]);
        // Another master creating the same cluster at once wins the race: both then use its id.
        self.kv().txn(txn).await.map_err(etcd_err(OP))?;
        Ok(())
    }

    pub async fn framework_id_async(&self) -> Result<String, StoreError> {
        let value = self.get_value(self.key("meta", "framework_id"), "reading the framework id").await?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default())
    }

    /// The journals a crash left committed (manifest written, records maybe not), oldest
    /// first, as their operations; parts without a manifest are dropped.
    fn journals(rows: &BTreeMap<String, Vec<u8>>) -> Result<Vec<(String, Vec<JournalOp>)>, StoreError> {
        let mut journals = Vec::new();
        for (key, value) in rows.range("journal/".to_string()..) {
            let Some(id) = key.strip_prefix("journal/") else { break };
            if id.contains('/') {
                continue;
            }
            let manifest: JournalManifest = decode("journal", key, value)?;
            let mut sealed = Vec::new();
            for part in 0..manifest.parts {
                let part_key = format!("{key}/{part:06}");
                let bytes = rows.get(&part_key).ok_or_else(|| StoreError::Foreign {
                    key: part_key.clone(),
                    reason: "a committed journal misses a part".into(),
                })?;
                sealed.extend_from_slice(bytes);
            }
            let ops: Vec<JournalOp> = decode("journal", key, &sealed)?;
            journals.push((id.to_string(), ops));
        }
        Ok(journals)
    }

    /// The records, with any journal left by a crash applied (and, when `settle`, written
    /// through and removed, under the fence).
    pub async fn load_async(&self, settle: bool) -> Result<Snapshot, StoreError> {
        let root = format!("{}/", self.prefix).into_bytes();
        let ranges = load::ranges(&root);
        let journal = ranges.iter().find(|r| r.space == load::Space::Journal).expect("the ranges name the journal");
        let (reader, journal_keys) = load::Reader::pinned_at_count_of(self.kv(), journal).await?;
        let records: Vec<load::Range> = ranges.iter().filter(|r| r.space != load::Space::Ignored).cloned().collect();
        if journal_keys == 0 {
            let started = std::time::Instant::now();
            let snapshot = load::read_decoded(&reader, &records, root.len()).await?;
            tracing::debug!(
                revision = reader.revision(),
                load_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "snapshot read from etcd"
            );
            return Ok(snapshot);
        }
        // A crash left a journal: rare, so the rows are replayed over in one map.
        let mut rows = load::read_rows(&reader, &records, root.len()).await?;
        let journals = Self::journals(&rows)?;
        let mut ops = Vec::new();
        for (id, journal) in &journals {
            tracing::info!(journal = %id, writes = journal.len(), "replaying a journal left by a crash");
            for op in journal {
                let value = op.value.as_deref().map(decode_b64).transpose()?;
                match &value {
                    Some(v) => rows.insert(op.key.clone(), v.clone()),
                    None => rows.remove(&op.key),
                };
                ops.push((op.key.clone(), value));
            }
        }
        if settle && !journals.is_empty() {
            self.write_through(&ops).await?;
            for (id, _) in &journals {
                self.fenced(
                    vec![TxnOp::delete(self.key("journal", id), Some(etcd_client::DeleteOptions::new().with_prefix()))],
                    "removing a journal",
                )
                .await?;
            }
        }
        let mut tables: BTreeMap<&str, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for (key, value) in rows {
            let (space, record) = key.split_once('/').unwrap_or((key.as_str(), ""));
            if let Some(table) = RECORD_TABLES.iter().find(|t| **t == space) {
                tables.entry(table).or_default().push((record.to_string(), value));
            } else if !matches!(space, "meta" | "leader" | "journal" | SUBSCRIPTIONS_TABLE) {
                return Err(StoreError::Foreign {
                    key: format!("{}/{key}", self.prefix),
                    reason: format!("'{space}' is not a table of Plinth's"),
                });
            }
        }
        snapshot_from(|table| Ok(tables.remove(table).unwrap_or_default()))
    }

    /// Runs `ops` in one transaction, under the fence when there is one.
    async fn fenced(&self, ops: Vec<TxnOp>, operation: &'static str) -> Result<Vec<TxnOpResponse>, StoreError> {
        let fence = self.fence.read().expect("the fence lock is never poisoned").clone();
        let mut txn = Txn::new();
        if let Some(fence) = &fence {
            txn = txn.when([Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.create_revision)]);
        }
        let response = self.kv().txn(txn.and_then(ops)).await.map_err(etcd_err(operation))?;
        if !response.succeeded() {
            return Err(StoreError::Deposed);
        }
        Ok(response.op_responses())
    }

    /// Writes record keys (below the prefix) in as few transactions as the limits allow.
    async fn write_through(&self, ops: &[Write]) -> Result<(), StoreError> {
        for chunk in chunks(ops) {
            let txn_ops = chunk.iter().map(|(key, value)| self.op(key, value.as_deref())).collect();
            self.fenced(txn_ops, "writing changes").await?;
        }
        Ok(())
    }

    fn op(&self, key: &str, value: Option<&[u8]>) -> TxnOp {
        let full = format!("{}/{key}", self.prefix).into_bytes();
        match value {
            Some(v) => TxnOp::put(full, v.to_vec(), None),
            None => TxnOp::delete(full, None),
        }
    }

    /// The batch as record-key writes, each key once (the last write wins, as in one
    /// redb transaction): dropped versions become deletes of the keys stored now.
    async fn batch_ops(&self, batch: &Batch) -> Result<Vec<Write>, StoreError> {
        let mut order: Vec<String> = Vec::new();
        let mut writes: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut write = |key: String, value: Option<Vec<u8>>| {
            if writes.insert(key.clone(), value).is_none() {
                order.push(key);
            }
        };
        for app in batch.dropped_versions() {
            let start = self.key("app_versions", &format!("{app}\0"));
            let end = self.key("app_versions", &format!("{app}\u{1}"));
            let mut stored = self
                .kv()
                .get(start, Some(GetOptions::new().with_range(end).with_keys_only()))
                .await
                .map_err(etcd_err("listing the versions of a deleted app"))?;
            for kv in stored.take_kvs() {
                let key = String::from_utf8_lossy(&kv.key()[self.prefix.len() + 1..]).into_owned();
                write(key, None);
            }
        }
        for (table, key, value) in batch.puts() {
            if let Some(v) = value {
                if v.len() + key.len() + OP_OVERHEAD > MAX_TXN_BYTES {
                    return Err(StoreError::TooLarge { table, key: key.clone(), size: v.len(), limit: MAX_TXN_BYTES });
                }
            }
            write(format!("{table}/{key}"), value.clone());
        }
        Ok(order
            .into_iter()
            .map(|key| {
                let value = writes.remove(&key).flatten();
                (key, value)
            })
            .collect())
    }

    pub async fn commit_async(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ops = self.batch_ops(batch).await?;
        if chunks(&ops).len() <= 1 {
            let txn_ops = ops.iter().map(|(key, value)| self.op(key, value.as_deref())).collect();
            self.fenced(txn_ops, "writing changes").await?;
            return Ok(());
        }
        self.commit_journaled(&ops).await
    }

    /// A batch too big for one transaction: journal parts, manifest (the commit point),
    /// records, then the journal goes.
    async fn commit_journaled(&self, ops: &[Write]) -> Result<(), StoreError> {
        let id = self.write_journal(ops).await?;
        self.write_through(ops).await?;
        self.fenced(
            vec![TxnOp::delete(self.key("journal", &id), Some(etcd_client::DeleteOptions::new().with_prefix()))],
            "removing a journal",
        )
        .await?;
        Ok(())
    }

    /// A crash right after a big batch's commit point: its journal written, its records not.
    #[cfg(test)]
    pub(super) async fn commit_journal_only(&self, batch: &Batch) -> Result<(), StoreError> {
        let ops = self.batch_ops(batch).await?;
        self.write_journal(&ops).await.map(drop)
    }

    /// The journal's parts, then its manifest (the commit point); returns its id.
    async fn write_journal(&self, ops: &[Write]) -> Result<String, StoreError> {
        let id = format!("{:013}-{}", chrono::Utc::now().timestamp_millis(), uuid::Uuid::new_v4().simple());
        let journal: Vec<JournalOp> = ops
            .iter()
            .map(|(key, value)| JournalOp {
                key: key.clone(),
                value: value.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
            })
            .collect();
        let sealed = encode("journal", &id, &journal)?;
        let part_size = MAX_TXN_BYTES / 2;
        let parts: Vec<&[u8]> = sealed.chunks(part_size).collect();
        for (n, part) in parts.iter().enumerate() {
            let key = self.key("journal", &format!("{id}/{n:06}"));
            self.fenced(vec![TxnOp::put(key, part.to_vec(), None)], "writing a journal part").await?;
        }
        let manifest = encode("journal", &id, &JournalManifest { parts: parts.len() })?;
        self.fenced(vec![TxnOp::put(self.key("journal", &id), manifest, None)], "committing a journal").await?;
        tracing::debug!(journal = %id, writes = ops.len(), parts = parts.len(), "big batch committed through a journal");
        Ok(id)
    }

    pub async fn subscriptions_async(&self) -> Result<Vec<Subscription>, StoreError> {
        let start = self.key(SUBSCRIPTIONS_TABLE, "");
        let mut response = self
            .kv()
            .get(start.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd_err("reading event subscriptions"))?;
        response
            .take_kvs()
            .into_iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(&kv.key()[start.len()..]).into_owned();
                decode(SUBSCRIPTIONS_TABLE, &key, kv.value())
            })
            .collect()
    }

    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }
}

fn decode_b64(value: &str) -> Result<Vec<u8>, StoreError> {
    base64::engine::general_purpose::STANDARD.decode(value).map_err(|e| StoreError::Foreign {
        key: "journal".into(),
        reason: format!("a journal value is not base64: {e}"),
    })
}

/// Splits writes into runs that fit one transaction each.
fn chunks(ops: &[Write]) -> Vec<&[Write]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (key, value)) in ops.iter().enumerate() {
        let size = key.len() + value.as_ref().map_or(0, Vec::len) + OP_OVERHEAD;
        if i > start && (i - start >= MAX_TXN_OPS || bytes + size > MAX_TXN_BYTES) {
            out.push(&ops[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

impl StateStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }
    fn describe(&self) -> String {
        format!("etcd {} prefix {}", self.endpoints, self.prefix)
    }
    fn framework_id(&self) -> Result<String, StoreError> {
        self.block_on(self.framework_id_async())
    }
    fn load_checked(&self) -> Result<Snapshot, StoreError> {
        let settle = self.fence.read().expect("the fence lock is never poisoned").is_some();
        self.block_on(self.load_async(settle))
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.block_on(self.commit_async(batch))
    }
    fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.block_on(self.subscriptions_async())
    }
    fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let bytes = encode(SUBSCRIPTIONS_TABLE, &sub.callback_url, sub)?;
        let op = TxnOp::put(self.key(SUBSCRIPTIONS_TABLE, &sub.callback_url), bytes, None);
        self.block_on(self.fenced(vec![op], "adding an event subscription")).map(drop)
    }
    fn delete_subscription(&self, callback_url: &str) -> Result<bool, StoreError> {
        let op = TxnOp::delete(self.key(SUBSCRIPTIONS_TABLE, callback_url), None);
        let responses = self.block_on(self.fenced(vec![op], "removing an event subscription"))?;
        Ok(responses.iter().any(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0)))
    }
}
