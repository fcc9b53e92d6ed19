//! One contract, both engines: the same checks against redb (in a temp dir) and against a
//! real etcd (Debian's `etcd-server`, started in a namespace of its own by the test kit).
use std::sync::Arc;

use plinth_protocol::{AppDefinition, AppId, Timestamp};
use plinth_scheduler::{Core, CoreConfig};

use super::etcd::{EtcdSettings, EtcdStore, Fence};
use super::{Batch, StateStore, StoreError, Subscription};

/// An engine under test: opens its store (again, as a restarted master would) and
/// damages one stored value in place.
trait Engine {
    fn open(&self) -> Arc<dyn StateStore>;
    fn damage(&self, table: &'static str, key: &str, damage: &mut dyn FnMut(&mut Vec<u8>));
}

/// redb allows one open database per file and process: "reopening" shares it (its own
/// tests in `redb.rs` reopen files for real).
struct Redb(super::Store);

impl Engine for Redb {
    fn open(&self) -> Arc<dyn StateStore> {
        Arc::new(self.0.clone())
    }
    fn damage(&self, table: &'static str, key: &str, damage: &mut dyn FnMut(&mut Vec<u8>)) {
        self.0.damage(table, key, damage);
    }
}

struct Etcd {
    settings: EtcdSettings,
    runtime: tokio::runtime::Runtime,
}

impl Etcd {
    fn store(&self) -> EtcdStore {
        self.runtime.block_on(EtcdStore::connect(&self.settings)).expect("connect to etcd")
    }
}

impl Engine for Etcd {
    fn open(&self) -> Arc<dyn StateStore> {
        Arc::new(self.store())
    }
    fn damage(&self, table: &'static str, key: &str, damage: &mut dyn FnMut(&mut Vec<u8>)) {
        let mut kv = self.store().client().kv_client();
        let full = format!("{}/{table}/{key}", self.settings.prefix);
        self.runtime.block_on(async {
            let mut got = kv.get(full.clone(), None).await.expect("get");
            let mut value = got.take_kvs().remove(0).into_key_value().1;
            damage(&mut value);
            kv.put(full, value, None).await.expect("put");
        });
    }
}

fn counter_ids() -> Box<dyn FnMut() -> uuid::Uuid + Send + Sync> {
    let mut n = 0u128;
    Box::new(move || {
        n += 1;
        uuid::Uuid::from_u128(n)
    })
}

fn app(id: &str, cmd: &str) -> AppDefinition {
    let mut def = AppDefinition::from_value(serde_json::json!({"id": id, "cmd": cmd})).unwrap();
    def.normalize();
    def
}

fn commit(store: &dyn StateStore, core: &mut Core) {
    let changes = core.take_changes();
    store.commit(&Batch::of(core, &changes).unwrap()).unwrap();
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_000_000)
}

/// Every check of the contract, in order, on one engine.
fn contract(engine: &dyn Engine) {
    writes_reload_and_deletes_remove_versions(engine);
    a_damaged_record_is_refused_naming_it(engine);
    subscriptions_survive_reopen(engine);
    a_batch_bigger_than_one_transaction_is_whole(engine);
    framework_id_is_stable(engine);
    a_table_of_several_pages_loads_whole_at_one_revision(engine);
}

fn writes_reload_and_deletes_remove_versions(engine: &dyn Engine) {
    let store = engine.open();
    let mut core = Core::new(CoreConfig::default(), counter_ids());
    core.create_app(app("/g/a", "sleep 1"), now()).unwrap();
    // An app whose id shares a prefix must keep its versions.
    core.create_app(app("/g/ab", "sleep 1"), now()).unwrap();
    commit(&*store, &mut core);
    let loaded = engine.open().load_checked().unwrap();
    assert_eq!(loaded.apps.len(), 2);
    assert_eq!(loaded.app_versions.len(), 2);
    assert_eq!(loaded.deployments.len(), 2);

    core.delete_app(&AppId::parse("/g/a").unwrap(), now().plus_millis(10)).unwrap();
    commit(&*store, &mut core);
    let loaded = engine.open().load_checked().unwrap();
    assert_eq!(loaded.apps.len(), 1);
    assert_eq!(loaded.apps[0].id.as_str(), "/g/ab");
    assert_eq!(loaded.app_versions.len(), 1, "{:?}", loaded.app_versions);
    assert_eq!(loaded.app_versions[0].0.as_str(), "/g/ab");
    let restored = Core::restore(CoreConfig::default(), counter_ids(), loaded, now());
    assert_eq!(restored.app_versions(&AppId::parse("/g/ab").unwrap()).map(|v| v.len()), Some(1));
    // Clean for the checks after this one.
    core.delete_app(&AppId::parse("/g/ab").unwrap(), now().plus_millis(20)).unwrap();
    commit(&*store, &mut core);
}

fn a_damaged_record_is_refused_naming_it(engine: &dyn Engine) {
    let store = engine.open();
    let mut core = Core::new(CoreConfig::default(), counter_ids());
    core.create_app(app("/web", "echo hello world"), now()).unwrap();
    commit(&*store, &mut core);
    // A bit flipped inside the stored command ("hello" becomes "hdllo").
    engine.damage("apps", "/web", &mut |value| {
        let at = value.windows(5).position(|w| w == b"hello").unwrap() + 1;
        value[at] ^= 0x01;
    });
    let err = engine.open().load_checked().expect_err("a damaged record is not loaded");
    assert!(matches!(&err, StoreError::Corrupt { table: "apps", key, .. } if key == "/web"), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("'/web'") && text.contains("checksum") && text.contains("backup"), "{text}");
    // Rewriting the record repairs it.
    core.delete_app(&AppId::parse("/web").unwrap(), now().plus_millis(10)).unwrap();
    commit(&*store, &mut core);
    assert!(engine.open().load_checked().unwrap().apps.is_empty());
}

fn subscriptions_survive_reopen(engine: &dyn Engine) {
    let sub = Subscription { callback_url: "http://127.0.0.1:9/cb".into(), client_ip: None, created_at: "x".into() };
    let store = engine.open();
    store.put_subscription(&sub).unwrap();
    store.put_subscription(&sub).unwrap();
    let store = engine.open();
    assert_eq!(store.subscriptions().unwrap(), vec![sub]);
    assert!(store.delete_subscription("http://127.0.0.1:9/cb").unwrap());
    assert!(!store.delete_subscription("http://127.0.0.1:9/cb").unwrap());
    assert!(engine.open().subscriptions().unwrap().is_empty());
}

/// 400 apps of 8 KiB each: over etcd's 128 operations and 1.5 MiB a transaction.
fn a_batch_bigger_than_one_transaction_is_whole(engine: &dyn Engine) {
    let store = engine.open();
    let mut core = Core::new(CoreConfig::default(), counter_ids());
    let big = "x".repeat(8 * 1024);
    for n in 0..400 {
        core.create_app(app(&format!("/big/app-{n}"), &format!("echo {big}")), now()).unwrap();
    }
    let changes = core.take_changes();
    let batch = Batch::of(&core, &changes).unwrap();
    assert!(batch.len() > 1_000, "{}", batch.len());
    store.commit(&batch).unwrap();
    let loaded = engine.open().load_checked().unwrap();
    assert_eq!(loaded.apps.len(), 400);
    assert_eq!(loaded.app_versions.len(), 400);
    assert!(loaded.app_versions.iter().all(|(_, _, def)| def.cmd.as_deref().is_some_and(|c| c.len() > 8 * 1024)));
    for n in 0..400 {
        core.delete_app(&AppId::parse(&format!("/big/app-{n}")).unwrap(), now().plus_millis(10)).unwrap();
    }
    commit(&*store, &mut core);
    let loaded = engine.open().load_checked().unwrap();
    assert!(loaded.apps.is_empty() && loaded.app_versions.is_empty(), "{}", loaded.app_versions.len());
}

fn framework_id_is_stable(engine: &dyn Engine) {
    let first = engine.open().framework_id().unwrap();
    assert!(first.ends_with("-0000"), "{first}");
    assert_eq!(engine.open().framework_id().unwrap(), first);
}

/// More apps than two of etcd's load pages (so the load cuts the tables at listed keys),
/// loaded whole while another thread keeps rewriting the first and the last version
/// record in one batch: every load sees both from the same batch.
fn a_table_of_several_pages_loads_whole_at_one_revision(engine: &dyn Engine) {
    let store = engine.open();
    let mut core = Core::new(CoreConfig::default(), counter_ids());
    let count = 2 * super::etcd_load::PAGE + 1;
    let ids: Vec<String> = (0..count).map(|n| format!("/pages/app-{n:05}")).collect();
    for id in &ids {
        core.create_app(app(id, "sleep 1"), now()).unwrap();
    }
    commit(&*store, &mut core);
    let loaded = engine.open().load_checked().unwrap();
    let loaded_ids: Vec<&str> = loaded.apps.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(loaded_ids, ids, "every app once, in key order");
    let mut versions: Vec<&str> = loaded.app_versions.iter().map(|(id, _, _)| id.as_str()).collect();
    versions.sort_unstable();
    assert_eq!(versions, ids, "every app's version once");
    assert_eq!(loaded.deployments.len(), count);

    // "/a" sorts before every app above, "/zzz" after: never in the same page.
    let pair = |generation: usize| {
        let mut batch = Batch::default();
        for id in ["/a", "/zzz"] {
            let key = super::version_key(id, "v");
            let value = super::encode("app_versions", &key, &app(id, &format!("echo {generation}"))).unwrap();
            batch.put("app_versions", key, Some(value));
        }
        batch
    };
    store.commit(&pair(0)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut generation = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                generation += 1;
                store.commit(&pair(generation)).unwrap();
            }
            generation
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let loaded = engine.open().load_checked().unwrap();
        assert_eq!(loaded.apps.len(), count);
        let cmd_of = |id: &str| {
            let found = loaded.app_versions.iter().find(|(app, _, _)| app.as_str() == id);
            found.and_then(|(_, _, def)| def.cmd.clone()).unwrap_or_else(|| panic!("{id} is loaded"))
        };
        let (first, last) = (cmd_of("/a"), cmd_of("/zzz"));
        assert_eq!(first, last, "both records of one batch, from one revision");
        seen.insert(first);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0 && seen.len() > 1, "the loads ran while batches were written ({written}, {seen:?})");
}

#[test]
fn redb_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&Redb(super::Store::open(dir.path()).unwrap()));
}

/// A real etcd in its own namespace; `check` runs on a thread inside it.
fn with_etcd(check: impl FnOnce(Etcd) + Send + 'static) {
    let etcd = plinth_testkit::Etcd::single().expect("start etcd");
    let endpoints = etcd.endpoints();
    etcd.run(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        check(Etcd { settings: EtcdSettings::new(endpoints), runtime });
    });
}

#[test]
fn etcd_keeps_the_contract() {
    with_etcd(|engine| contract(&engine));
}

#[test]
fn etcd_refuses_a_value_over_its_request_limit_and_a_foreign_prefix() {
    with_etcd(|engine| {
        let store = engine.store();
        let mut batch = Batch::default();
        batch.put("apps", "/huge", Some(vec![b'x'; 2 * 1024 * 1024]));
        let err = engine.runtime.block_on(store.commit_async(&batch)).expect_err("too big for etcd");
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("'/huge'") && err.to_string().contains("request limit"), "{err}");
        assert!(store.load_checked().unwrap().apps.is_empty(), "nothing of it was written");

        // Someone else's data under the prefix: refused, and left as it was.
        let mut kv = store.client().kv_client();
        engine.runtime.block_on(kv.put("/registry/pods/default/web", "{}", None)).unwrap();
        let foreign = EtcdSettings { prefix: "/registry".into(), ..engine.settings.clone() };
        let err = engine.runtime.block_on(EtcdStore::connect(&foreign)).expect_err("not Plinth's prefix");
        assert!(matches!(err, StoreError::Foreign { .. }) && err.to_string().contains("--etcd-prefix"), "{err}");
        let left = engine.runtime.block_on(kv.get("/registry/", Some(etcd_client::GetOptions::new().with_prefix())));
        assert_eq!(left.unwrap().kvs().len(), 1, "nothing was written under a foreign prefix");
    });
}

#[test]
fn a_fenced_write_fails_once_the_leader_key_is_gone() {
    with_etcd(|engine| {
        let store = engine.store();
        let mut kv = store.client().kv_client();
        let leader = format!("{}/leader/1", store.prefix());
        let put = engine.runtime.block_on(kv.put(leader.clone(), "http://m1:8080", None)).unwrap();
        let revision = put.header().map(|h| h.revision()).unwrap();
        store.set_fence(Some(Fence { key: leader.clone().into_bytes(), create_revision: revision }));
        let sub = Subscription { callback_url: "http://127.0.0.1:9/a".into(), client_ip: None, created_at: "x".into() };
        store.put_subscription(&sub).expect("the leader writes");
        // Deposed: the key went (its lease ended) and another master's took its place.
        engine.runtime.block_on(kv.delete(leader.clone(), None)).unwrap();
        engine.runtime.block_on(kv.put(leader, "http://m2:8080", None)).unwrap();
        let other = Subscription { callback_url: "http://127.0.0.1:9/b".into(), ..sub.clone() };
        let err = store.put_subscription(&other).expect_err("a deposed leader cannot write");
        assert!(matches!(err, StoreError::Deposed), "{err:?}");
        let mut core = Core::new(CoreConfig::default(), counter_ids());
        core.create_app(app("/late", "sleep 1"), now()).unwrap();
        let changes = core.take_changes();
        let err = store.commit(&Batch::of(&core, &changes).unwrap()).expect_err("fenced");
        assert!(matches!(err, StoreError::Deposed), "{err:?}");
        store.set_fence(None);
        assert_eq!(store.subscriptions().unwrap(), vec![sub], "only the write made while leading is there");
        assert!(store.load_checked().unwrap().apps.is_empty());
    });
}

#[test]
fn a_journal_a_crash_left_is_replayed_and_then_settled_by_the_next_leader() {
    with_etcd(|engine| {
        let store = engine.store();
        let mut core = Core::new(CoreConfig::default(), counter_ids());
        for n in 0..200 {
            core.create_app(app(&format!("/j/app-{n}"), "sleep 1"), now()).unwrap();
        }
        let changes = core.take_changes();
        let batch = Batch::of(&core, &changes).unwrap();
        engine.runtime.block_on(store.commit_journal_only(&batch)).unwrap();
        let mut kv = store.client().kv_client();
        let records = |kv: &mut etcd_client::KvClient, space: &str| {
            let prefix = format!("/plinth/{space}/");
            let options = etcd_client::GetOptions::new().with_prefix().with_count_only();
            engine.runtime.block_on(kv.get(prefix, Some(options))).unwrap().count()
        };
        assert_eq!(records(&mut kv, "apps"), 0, "the crash came before the records");
        // Any load sees the committed batch whole.
        assert_eq!(store.load_checked().unwrap().apps.len(), 200);
        assert!(records(&mut kv, "journal") > 0, "an unfenced load only reads");
        // A leader's load writes the records through and removes the journal.
        let leader = "/plinth/leader/1";
        let put = engine.runtime.block_on(kv.put(leader, "http://m1:8080", None)).unwrap();
        let revision = put.header().map(|h| h.revision()).unwrap();
        store.set_fence(Some(Fence { key: leader.as_bytes().to_vec(), create_revision: revision }));
        assert_eq!(store.load_checked().unwrap().apps.len(), 200);
        assert_eq!(records(&mut kv, "apps"), 200);
        assert_eq!(records(&mut kv, "journal"), 0);
        assert_eq!(engine.open().load_checked().unwrap().apps.len(), 200);
    });
}

/// A master of another version meets a prefix written by this one (or the reverse): it
/// refuses to start, names both versions, and writes nothing.
#[test]
fn etcd_refuses_a_prefix_of_another_schema_version_and_leaves_it_as_it_was() {
    with_etcd(|engine| {
        let mut kv = engine.store().client().kv_client();
        let newer = EtcdSettings { prefix: "/plinth-next".into(), ..engine.settings.clone() };
        engine.runtime.block_on(kv.put("/plinth-next/meta/schema_version", "2", None)).unwrap();
        engine.runtime.block_on(kv.put("/plinth-next/apps/%2Fweb", "written by version 2", None)).unwrap();
        let err = engine.runtime.block_on(EtcdStore::connect(&newer)).expect_err("another schema version");
        assert!(matches!(err, StoreError::Schema { .. }), "{err:?}");
        assert!(err.to_string().contains("is 2") && err.to_string().contains("understands 1"), "{err}");
        let left = engine.runtime.block_on(kv.get("/plinth-next/", Some(etcd_client::GetOptions::new().with_prefix())));
        let left = left.unwrap();
        assert_eq!(left.kvs().len(), 2, "nothing was added, changed or removed");
        assert!(
            left.kvs().iter().any(|k| k.value() == b"written by version 2"),
            "the other version's record is intact"
        );
    });
}
