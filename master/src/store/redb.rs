//! The embedded store of a single master: a transactional database (`redb`) in the data dir holding
//! the core's records as JSON (tasks in a compact form, `task_codec.rs`), each behind a checksum (`checksum.rs`) verified on read. Every batch of changes is written in one transaction with
//! immediate durability, so a 2xx answer given after [`Store::commit`] survives `kill -9`.
//! Group records (explicit groups, group dependencies and versions) are records like the
//! others, written in the same transaction as the apps a group request changes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;

use plinth_scheduler::{Changes, Core, GroupRecord, Snapshot};

use super::{decode, encode, snapshot_from, Batch, StateStore, StoreError, Subscription};

/// File name of the database inside the data dir.
pub const DB_FILE: &str = "plinth.redb";
/// Written beside the store when a cluster is created: a data dir that has it but no store
/// lost its store (a new cluster would make every agent kill its tasks), so start-up refuses.
pub const CLUSTER_MARKER: &str = "plinth.cluster";

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// Key: `"{app id}\0{version}"`.
const APP_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("app_versions");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
/// Key: the group's absolute path.
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
const SUBSCRIPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("event_subscriptions");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// redb's page cache. The core holds every record in memory and the store is read once, at
/// start: a big cache (redb's default is 1 GiB) would only duplicate the core, about
/// 0.5 KB per task at 1M tasks. Writes touching pages outside it read them from the file.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const SCHEMA_KEY: &str = "schema_version";
const SCHEMA_VERSION: &[u8] = b"1";
const FRAMEWORK_ID_KEY: &str = "framework_id";

/// Where `/v2/groups` kept group records beside the store before they moved into it;
/// imported once at open, then renamed to `groups.json.imported`.
pub const OLD_GROUPS_FILE: &str = "groups.json";

fn restrict(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| StoreError::Permissions { path: path.to_path_buf(), source })
}

/// What a caught panic said, for an error message.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic inside the storage engine".to_string())
}

fn txn_err(operation: &'static str) -> impl FnOnce(::redb::Error) -> StoreError {
    move |source| StoreError::Transaction { operation, source }
}

/// Shorthand for converting any redb error into [`StoreError::Transaction`].
macro_rules! tx {
    ($op:expr, $e:expr) => {
        $e.map_err(|e| txn_err($op)(e.into()))
    };
}

/// The store. Cheap to clone (the database is shared).
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn table_def(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

impl Store {
    /// Opens (or creates) `{dir}/plinth.redb` and makes sure every table exists.
    /// Opens the store in `dir`, creating a new cluster only where there never was one: an
    /// empty store file, or a missing one beside the cluster marker, is refused, and a
    /// damaged one is an error naming it (redb panics on some damaged pages: caught here).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let new_dir = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        if new_dir {
            // Made here: the master's alone. A dir the operator chose keeps its mode.
            restrict(dir, 0o700)?;
        }
        let path = dir.join(DB_FILE);
        let marker = dir.join(CLUSTER_MARKER);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => return Err(StoreError::Empty { path, marker }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && marker.exists() => {
                return Err(StoreError::Lost { path, marker })
            }
            _ => {}
        }
        let opened = std::panic::catch_unwind(|| -> Result<Store, StoreError> {
            let db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|source| StoreError::Open { path: path.clone(), source })?;
            let store = Store { db: Arc::new(db), path: path.clone() };
            store.init()?;
            store.import_groups_file(dir)?;
            Ok(store)
        })
        .map_err(|panic| StoreError::Damaged { path: path.clone(), reason: panic_text(&*panic) })??;
        // Apps' env secrets live here: the master's alone, whatever the umask.
        restrict(&path, 0o600)?;
        if !marker.exists() {
            let id = opened.framework_id()?;
            std::fs::write(&marker, format!("{id}\n")).map_err(|source| StoreError::Marker { path: marker, source })?;
        }
        Ok(opened)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(&self) -> Result<(), StoreError> {
        const OP: &str = "creating the tables";
        let txn = tx!(OP, self.db.begin_write())?;
        {
            for table in [APPS, APP_VERSIONS, TASKS, AGENTS, DEPLOYMENTS, GROUPS, SUBSCRIPTIONS] {
                tx!(OP, txn.open_table(table))?;
            }
            let mut meta = tx!(OP, txn.open_table(META))?;
            let schema = tx!(OP, meta.get(SCHEMA_KEY))?.map(|v| v.value().to_vec());
            match schema {
                None => {
                    tx!(OP, meta.insert(SCHEMA_KEY, SCHEMA_VERSION))?;
                }
                Some(found) if found == SCHEMA_VERSION => {}
                Some(found) => {
                    return Err(StoreError::Schema {
                        found: String::from_utf8_lossy(&found).into_owned(),
                        expected: String::from_utf8_lossy(SCHEMA_VERSION).into_owned(),
                    })
                }
            }
            if tx!(OP, meta.get(FRAMEWORK_ID_KEY))?.is_none() {
                // Marathon keeps one framework id for the life of the cluster.
                let id = format!("{}-0000", uuid::Uuid::new_v4());
                tx!(OP, meta.insert(FRAMEWORK_ID_KEY, id.as_bytes()))?;
            }
        }
        tx!(OP, txn.commit())
    }

    /// Imports the group records of an older master's `groups.json` (written beside the
    /// store, outside its transactions) in one transaction, then renames the file so the
    /// import happens once. A crash before the rename imports the same records again.
    fn import_groups_file(&self, dir: &Path) -> Result<(), StoreError> {
        const OP: &str = "importing groups.json";
        #[derive(Deserialize)]
        struct OldGroups {
            #[serde(default)]
            groups: BTreeMap<String, GroupRecord>,
        }
        let path = dir.join(OLD_GROUPS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StoreError::Import { path, source }),
        };
        let old: OldGroups = serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
            table: OLD_GROUPS_FILE,
            key: path.display().to_string(),
            source,
        })?;
        let mut txn = tx!(OP, self.db.begin_write())?;
        tx!(OP, txn.set_durability(Durability::Immediate))?;
        {
            let mut table = tx!(OP, txn.open_table(GROUPS))?;
            for (group, record) in &old.groups {
                let bytes = encode("groups", group, record)?;
                tx!(OP, table.insert(group.as_str(), bytes.as_slice()))?;
            }
        }
        tx!(OP, txn.commit())?;
        let imported = dir.join(format!("{OLD_GROUPS_FILE}.imported"));
        std::fs::rename(&path, &imported).map_err(|source| StoreError::Import { path: path.clone(), source })?;
        tracing::info!(groups = old.groups.len(), from = %path.display(), "group records imported into the store");
        Ok(())
    }

    /// The cluster's framework id (created with the store, also written to the marker). It
    /// is the cluster id too: agents keep it and follow no master with another one.
    pub fn framework_id(&self) -> Result<String, StoreError> {
        const OP: &str = "reading the framework id";
        let txn = tx!(OP, self.db.begin_read())?;
        let meta = tx!(OP, txn.open_table(META))?;
        let value = tx!(OP, meta.get(FRAMEWORK_ID_KEY))?;
        Ok(value.map(|v| String::from_utf8_lossy(v.value()).into_owned()).unwrap_or_default())
    }

    /// [`Store::load`], with a panic of the storage engine on a damaged page turned into
    /// [`StoreError::Damaged`].
    pub fn load_checked(&self) -> Result<Snapshot, StoreError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load()))
            .map_err(|panic| StoreError::Damaged { path: self.path.clone(), reason: panic_text(&*panic) })?
    }

    /// Everything the core needs to restore itself.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        const OP: &str = "loading the snapshot";
        let txn = tx!(OP, self.db.begin_read())?;
        let read_all = |name: &'static str| -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            let table = tx!(OP, txn.open_table(table_def(name)))?;
            let mut rows = Vec::new();
            for row in tx!(OP, table.iter())? {
                let (k, v) = tx!(OP, row)?;
                rows.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(rows)
        };
        snapshot_from(read_all)
    }

    /// The batch of a command's changes ([`Batch::of`]), for callers that name the store.
    pub fn batch(core: &Core, changes: &Changes) -> Result<Batch, StoreError> {
        Batch::of(core, changes)
    }

    /// Writes a batch in one transaction with immediate durability (blocking: fsync).
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        const OP: &str = "writing changes";
        if batch.is_empty() {
            return Ok(());
        }
        let mut txn = tx!(OP, self.db.begin_write())?;
        tx!(OP, txn.set_durability(Durability::Immediate))?;
        {
            for app in &batch.drop_versions_of {
                let mut versions = tx!(OP, txn.open_table(APP_VERSIONS))?;
                let start = format!("{app}\0");
                let end = format!("{app}\u{1}");
                tx!(OP, versions.retain_in(start.as_str()..end.as_str(), |_, _| false))?;
            }
            // Open each table once per transaction, not once per record.
            let mut open: Vec<(&str, ::redb::Table<'_, &'static str, &'static [u8]>)> = Vec::new();
            for (table, key, value) in &batch.puts {
                let index = match open.iter().position(|(name, _)| name == table) {
                    Some(i) => i,
                    None => {
                        open.push((table, tx!(OP, txn.open_table(table_def(table)))?));
                        open.len() - 1
                    }
                };
                let t = &mut open[index].1;
                match value {
                    Some(bytes) => {
                        tx!(OP, t.insert(key.as_str(), bytes.as_slice()))?;
                    }
                    None => {
                        tx!(OP, t.remove(key.as_str()))?;
                    }
                }
            }
        }
        tx!(OP, txn.commit())
    }

    /// [`Store::batch`] + [`Store::commit`] in one call (for synchronous callers).
    pub fn apply(&self, core: &Core, changes: &Changes) -> Result<(), StoreError> {
        self.commit(&Self::batch(core, changes)?)
    }

    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        const OP: &str = "reading event subscriptions";
        let txn = tx!(OP, self.db.begin_read())?;
        let table = tx!(OP, txn.open_table(SUBSCRIPTIONS))?;
        let mut subs = Vec::new();
        for row in tx!(OP, table.iter())? {
            let (k, v) = tx!(OP, row)?;
            subs.push(decode("event_subscriptions", k.value(), v.value())?);
        }
        Ok(subs)
    }

    /// Adds (or replaces) a subscription; durable on return.
    pub fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        const OP: &str = "adding an event subscription";
        let bytes = encode("event_subscriptions", &sub.callback_url, sub)?;
        let mut txn = tx!(OP, self.db.begin_write())?;
        tx!(OP, txn.set_durability(Durability::Immediate))?;
        {
            let mut table = tx!(OP, txn.open_table(SUBSCRIPTIONS))?;
            tx!(OP, table.insert(sub.callback_url.as_str(), bytes.as_slice()))?;
        }
        tx!(OP, txn.commit())
    }

    /// Removes a subscription; returns whether it existed.
    pub fn delete_subscription(&self, callback_url: &str) -> Result<bool, StoreError> {
        const OP: &str = "removing an event subscription";
        let mut txn = tx!(OP, self.db.begin_write())?;
        tx!(OP, txn.set_durability(Durability::Immediate))?;
        let existed = {
            let mut table = tx!(OP, txn.open_table(SUBSCRIPTIONS))?;
            let removed = tx!(OP, table.remove(callback_url))?;
            removed.is_some()
        };
        tx!(OP, txn.commit())?;
        Ok(existed)
    }
}

#[cfg(test)]
impl Store {
    /// Changes one stored value in place (tests of damage detection).
    pub(super) fn damage(&self, table: &'static str, key: &str, damage: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut txn = self.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table_def(table)).unwrap();
            let mut value = t.get(key).unwrap().unwrap().value().to_vec();
            damage(&mut value);
            t.insert(key, value.as_slice()).unwrap();
        }
        txn.set_durability(Durability::Immediate).unwrap();
        txn.commit().unwrap();
    }
}

impl StateStore for Store {
    fn kind(&self) -> &'static str {
        "redb"
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn framework_id(&self) -> Result<String, StoreError> {
        Store::framework_id(self)
    }
    fn load_checked(&self) -> Result<Snapshot, StoreError> {
        Store::load_checked(self)
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        Store::commit(self, batch)
    }
    fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        Store::subscriptions(self)
    }
    fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        Store::put_subscription(self, sub)
    }
    fn delete_subscription(&self, callback_url: &str) -> Result<bool, StoreError> {
        Store::delete_subscription(self, callback_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_lost_store_is_refused_and_a_damaged_one_is_an_error_not_a_panic() {
        let parent = tempfile::tempdir().unwrap();
        let dir = tempfile::TempDir::new_in(parent.path()).unwrap();
        std::fs::remove_dir(dir.path()).unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            // Enough records for several pages of tables.
            for n in 0..300 {
                let url = format!("http://127.0.0.1:9/cb/{n}/{}", "x".repeat(100));
                store
                    .put_subscription(&Subscription { callback_url: url, client_ip: None, created_at: "x".into() })
                    .unwrap();
            }
        }
        assert!(dir.path().join(CLUSTER_MARKER).exists(), "a new cluster leaves its marker");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(DB_FILE)), 0o600, "the store is the master's alone");
        assert_eq!(mode(dir.path()), 0o700);
        let db = dir.path().join(DB_FILE);
        let good = std::fs::read(&db).unwrap();

        std::fs::write(&db, b"").unwrap();
        let Err(err) = Store::open(dir.path()) else { panic!("a 0-byte store is refused") };
        assert!(matches!(err, StoreError::Empty { .. }) && err.to_string().contains("0 bytes"), "{err}");
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "the refusal writes nothing");

        std::fs::remove_file(&db).unwrap();
        let Err(err) = Store::open(dir.path()) else { panic!("a lost store is refused") };
        assert!(matches!(err, StoreError::Lost { .. }), "{err}");
        assert!(!db.exists(), "no new, empty store is created");

        // Every page zeroed in turn: a clear error or a good open, never a panic.
        let page = 4096;
        for start in (0..good.len()).step_by(page) {
            let mut damaged = good.clone();
            let end = (start + page).min(damaged.len());
            damaged[start..end].fill(0);
            std::fs::write(&db, &damaged).unwrap();
            let opened = std::panic::catch_unwind(|| {
                Store::open(dir.path()).and_then(|s| s.load_checked().and_then(|_| s.subscriptions()).map(drop))
            });
            assert!(opened.is_ok(), "page at {start}: opening or loading the store panicked");
        }

        // Removing both is the explicit way to start over.
        std::fs::remove_file(&db).unwrap();
        std::fs::remove_file(dir.path().join(CLUSTER_MARKER)).unwrap();
        assert!(Store::open(dir.path()).is_ok());
    }

    #[test]
    fn subscriptions_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let sub =
                Subscription { callback_url: "http://127.0.0.1:9/cb".into(), client_ip: None, created_at: "x".into() };
            store.put_subscription(&sub).unwrap();
            store.put_subscription(&sub).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.subscriptions().unwrap().len(), 1);
        assert!(store.delete_subscription("http://127.0.0.1:9/cb").unwrap());
        assert!(!store.delete_subscription("http://127.0.0.1:9/cb").unwrap());
        assert!(store.subscriptions().unwrap().is_empty());
    }

    fn counter_ids() -> Box<dyn FnMut() -> uuid::Uuid + Send + Sync> {
        let mut n = 0u128;
        Box::new(move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        })
    }

    #[test]
    fn changes_are_written_and_deletes_remove_versions() {
        use plinth_protocol::{AppDefinition, AppId, Timestamp};
        use plinth_scheduler::CoreConfig;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut core = Core::new(CoreConfig::default(), counter_ids());
        let mut def = AppDefinition::from_value(serde_json::json!({"id": "/g/a", "cmd": "sleep 1"})).unwrap();
        def.normalize();
        let now = Timestamp::from_millis(1_000_000);
        core.create_app(def.clone(), now).unwrap();
        // A second app whose id shares a prefix must keep its versions.
        def.id = "/g/ab".into();
        core.create_app(def, now).unwrap();
        let changes = core.take_changes();
        store.apply(&core, &changes).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.apps.len(), 2);
        assert_eq!(loaded.app_versions.len(), 2);
        assert_eq!(loaded.deployments.len(), 2);

        let id = AppId::parse("/g/a").unwrap();
        core.delete_app(&id, now.plus_millis(10)).unwrap();
        let changes = core.take_changes();
        store.apply(&core, &changes).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.apps.len(), 1);
        assert_eq!(loaded.apps[0].id.as_str(), "/g/ab");
        assert!(loaded.app_versions.iter().all(|(app, _, _)| app.as_str() == "/g/ab"), "{:?}", loaded.app_versions);
        assert_eq!(loaded.app_versions.len(), 1);

        // The snapshot restores an equal core.
        let restored = Core::restore(CoreConfig::default(), counter_ids(), loaded, now);
        assert_eq!(restored.apps().count(), 1);
        assert_eq!(restored.app_versions(&AppId::parse("/g/ab").unwrap()).map(|v| v.len()), Some(1));
    }

    #[test]
    fn a_store_whose_tasks_an_earlier_version_wrote_as_json_opens_with_every_task() {
        use plinth_protocol::agent::Registration;
        use plinth_protocol::{AppDefinition, Resources, Timestamp};
        use plinth_scheduler::CoreConfig;
        let dir = tempfile::tempdir().unwrap();
        let mut core = Core::new(CoreConfig::default(), counter_ids());
        let now = Timestamp::from_millis(1_000_000);
        core.register_agent(
            Registration {
                agent_id: None,
                hostname: "a1".into(),
                advertise_ip: "10.0.0.1".into(),
                http_port: 5051,
                resources: Resources::parse("cpus:4;mem:4096;disk:0;ports:[31000-31100]").unwrap(),
                attributes: Default::default(),
                last_generation: 0,
                tasks: vec![],
                version: "test".into(),
            },
            now,
        );
        let mut def = AppDefinition::from_value(
            serde_json::json!({"id": "/web", "cmd": "sleep 1", "instances": 3, "cpus": 0.1, "mem": 16}),
        )
        .unwrap();
        def.normalize();
        core.create_app(def, now).unwrap();
        core.tick(now.plus_millis(100));
        let tasks: Vec<_> = core.tasks().cloned().collect();
        assert_eq!(tasks.len(), 3);
        {
            let store = Store::open(dir.path()).unwrap();
            let changes = core.take_changes();
            store.apply(&core, &changes).unwrap();
            // As the previous version wrote them: checksummed JSON, and bare JSON from before checksums.
            let mut old = Batch::default();
            let checksummed = crate::checksum::seal(&serde_json::to_vec(&tasks[0]).unwrap());
            old.put("tasks", tasks[0].id.as_str(), Some(checksummed));
            old.put("tasks", tasks[1].id.as_str(), Some(serde_json::to_vec(&tasks[1]).unwrap()));
            store.commit(&old).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut loaded = store.load_checked().unwrap().tasks;
        let mut expected = tasks.clone();
        loaded.sort_by(|a, b| a.id.cmp(&b.id));
        expected.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(loaded, expected, "old JSON tasks and new compact ones load alike");
        let restored = Core::restore(CoreConfig::default(), counter_ids(), store.load().unwrap(), now);
        assert_eq!(restored.tasks().count(), 3);
    }

    #[test]
    fn a_flipped_bit_in_a_stored_record_is_an_error_naming_it_never_served() {
        use plinth_protocol::{AppDefinition, Timestamp};
        use plinth_scheduler::CoreConfig;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut core = Core::new(CoreConfig::default(), counter_ids());
            let mut def =
                AppDefinition::from_value(serde_json::json!({"id": "/web", "cmd": "echo hello world"})).unwrap();
            def.normalize();
            core.create_app(def, Timestamp::from_millis(1_000_000)).unwrap();
            let changes = core.take_changes();
            store.apply(&core, &changes).unwrap();
            // A bit flipped inside the stored command ("hello" becomes "hdllo").
            let mut txn = store.db.begin_write().unwrap();
            {
                let mut apps = txn.open_table(APPS).unwrap();
                let mut value = apps.get("/web").unwrap().unwrap().value().to_vec();
                let at = value.windows(5).position(|w| w == b"hello").unwrap() + 1;
                value[at] ^= 0x01;
                apps.insert("/web", value.as_slice()).unwrap();
            }
            txn.set_durability(Durability::Immediate).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let err = store.load_checked().expect_err("a damaged record is not loaded");
        assert!(matches!(&err, StoreError::Corrupt { table: "apps", key, .. } if key == "/web"), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("'/web'") && text.contains("checksum") && text.contains("backup"), "{text}");
    }

    #[test]
    fn a_group_change_and_its_apps_land_in_one_transaction() {
        use plinth_protocol::{AppDefinition, AppId, Timestamp};
        use plinth_scheduler::{AppSpec, CoreConfig, GroupRequest, GroupSpec};
        let dir = tempfile::tempdir().unwrap();
        let mut def = AppDefinition::from_value(serde_json::json!({"id": "/shop/db", "cmd": "sleep 1"})).unwrap();
        def.normalize();
        let empty = GroupSpec {
            id: "/shop/empty".into(),
            json_path: "/groups(0)".into(),
            apps: None,
            groups: None,
            dependencies: Some(vec!["/shop/db".into()]),
        };
        let spec = GroupSpec {
            id: "/shop".into(),
            json_path: String::new(),
            apps: Some(vec![AppSpec { id: AppId::parse("/shop/db").unwrap(), json_path: "/apps(0)".into(), def }]),
            groups: Some(vec![empty]),
            dependencies: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let mut core = Core::new(CoreConfig::default(), counter_ids());
            let change =
                core.change_groups(&GroupRequest::Create(spec), false, Timestamp::from_millis(1_000_000)).unwrap();
            let changes = core.take_changes();
            assert!(!changes.apps.is_empty() && !changes.groups.is_empty(), "{changes:?}");
            assert!(changes.events.iter().any(|e| e.event_type == "group_change_success"));
            // One batch, committed once: one transaction.
            let batch = Store::batch(&core, &changes).unwrap();
            store.commit(&batch).unwrap();
            assert_eq!(change.deployments.len(), 1);
        }
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.apps.len(), 1);
        let groups: BTreeMap<String, GroupRecord> = loaded.groups.iter().cloned().collect();
        assert_eq!(groups["/shop/empty"].dependencies, vec!["/shop/db".to_string()]);
        assert!(groups.contains_key("/shop") && groups.contains_key("/"), "{groups:?}");
        let restored = Core::restore(CoreConfig::default(), counter_ids(), loaded, Timestamp::from_millis(2_000_000));
        assert!(restored.group_paths().contains("/shop/empty"), "the empty group survives a restart");
    }

    #[test]
    fn an_old_groups_json_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = serde_json::json!({"groups": {"/prod": {"dependencies": ["/db"], "versions": ["2024-01-01T00:00:00.000Z"]}}});
        std::fs::write(dir.path().join(OLD_GROUPS_FILE), old.to_string()).unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let loaded = store.load().unwrap();
            assert_eq!(loaded.groups.len(), 1);
            assert_eq!(loaded.groups[0].0, "/prod");
            assert_eq!(loaded.groups[0].1.dependencies, vec!["/db".to_string()]);
            assert!(!dir.path().join(OLD_GROUPS_FILE).exists());
            assert!(dir.path().join("groups.json.imported").exists());
            // The group is removed afterwards: a reopen must not bring it back.
            let mut core = Core::restore(
                plinth_scheduler::CoreConfig::default(),
                counter_ids(),
                loaded,
                plinth_protocol::Timestamp::from_millis(1),
            );
            let spec = plinth_scheduler::GroupRequest::Delete { id: "/prod".into() };
            core.change_groups(&spec, true, plinth_protocol::Timestamp::from_millis(2)).unwrap();
            let changes = core.take_changes();
            store.apply(&core, &changes).unwrap();
        }
        let loaded = Store::open(dir.path()).unwrap().load().unwrap();
        assert!(loaded.groups.iter().all(|(path, _)| path != "/prod"), "{:?}", loaded.groups);
    }

    #[test]
    fn framework_id_is_stable_and_empty_store_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap().framework_id().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.framework_id().unwrap(), first);
        let snapshot = store.load().unwrap();
        assert!(snapshot.apps.is_empty() && snapshot.tasks.is_empty());
    }
}
