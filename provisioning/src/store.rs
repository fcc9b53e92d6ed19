//! Durable provisioning state in its own redb file in the master's data dir
//! (`provisioning.redb`): machine profiles, the DHCP lease table, and the machines
//! that booted (MAC, address, when).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::dhcp::LeaseTable;
use crate::mac::MacAddr;
use crate::profile::MachineProfile;

pub const DB_FILE: &str = "provisioning.redb";

const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("machine_profiles");
const SEEN: TableDefinition<&str, &[u8]> = TableDefinition::new("machines_seen");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("provisioning_state");
const LEASES_KEY: &str = "leases";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the provisioning store {path}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("provisioning store: {operation} failed")]
    Transaction { operation: &'static str, source: redb::Error },
    #[error("provisioning store: record {key} is corrupt")]
    Corrupt { key: String, source: serde_json::Error },
}

fn txn(operation: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |source| StoreError::Transaction { operation, source }
}

macro_rules! try_db {
    ($op:expr, $e:expr) => {
        $e.map_err(|e| txn($op)(redb::Error::from(e)))
    };
}

/// A machine that asked to boot: when, and the address it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenMachine {
    pub ip: Option<Ipv4Addr>,
    /// Milliseconds since the epoch of the last boot request (DHCP or iPXE script).
    pub last_boot_ms: u64,
    /// How it last asked: "dhcp", "ipxe-script".
    pub via: String,
}

#[derive(Clone)]
pub struct ProvisioningStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl ProvisioningStore {
    pub fn open(dir: &Path) -> Result<ProvisioningStore, StoreError> {
        let path = dir.join(DB_FILE);
        if let Err(source) = std::fs::create_dir_all(dir) {
            return Err(StoreError::Open {
                path,
                source: redb::DatabaseError::Storage(redb::StorageError::Io(source)),
            });
        }
        let db = Database::create(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let write = try_db!("creating tables", db.begin_write())?;
        {
            try_db!("creating tables", write.open_table(PROFILES))?;
            try_db!("creating tables", write.open_table(SEEN))?;
            try_db!("creating tables", write.open_table(STATE))?;
        }
        try_db!("creating tables", write.commit())?;
        Ok(ProvisioningStore { db: Arc::new(db), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<BTreeMap<MacAddr, T>, StoreError> {
        let read = try_db!("reading", self.db.begin_read())?;
        let table = try_db!("reading", read.open_table(table))?;
        let mut out = BTreeMap::new();
        for row in try_db!("reading", table.iter())? {
            let (key, value) = try_db!("reading", row)?;
            let Ok(mac) = key.value().parse::<MacAddr>() else { continue };
            let record = serde_json::from_slice(value.value())
                .map_err(|source| StoreError::Corrupt { key: key.value().to_string(), source })?;
            out.insert(mac, record);
        }
        Ok(out)
    }

    fn put(&self, table: TableDefinition<&str, &[u8]>, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let write = try_db!("writing", self.db.begin_write())?;
        {
            let mut t = try_db!("writing", write.open_table(table))?;
            try_db!("writing", t.insert(key, value))?;
        }
        try_db!("writing", write.commit())
    }

    pub fn profiles(&self) -> Result<BTreeMap<MacAddr, MachineProfile>, StoreError> {
        self.all(PROFILES)
    }

    pub fn put_profile(&self, mac: MacAddr, profile: &MachineProfile) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(profile).expect("a profile always encodes");
        self.put(PROFILES, &mac.to_string(), &bytes)
    }

    /// Removes a profile; false when there was none.
    pub fn delete_profile(&self, mac: MacAddr) -> Result<bool, StoreError> {
        let write = try_db!("deleting", self.db.begin_write())?;
        let existed = {
            let mut t = try_db!("deleting", write.open_table(PROFILES))?;
            let existed = try_db!("deleting", t.remove(mac.to_string().as_str()))?.is_some();
            existed
        };
        try_db!("deleting", write.commit())?;
        Ok(existed)
    }

    pub fn seen(&self) -> Result<BTreeMap<MacAddr, SeenMachine>, StoreError> {
        self.all(SEEN)
    }

    pub fn put_seen(&self, mac: MacAddr, seen: &SeenMachine) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(seen).expect("a seen record always encodes");
        self.put(SEEN, &mac.to_string(), &bytes)
    }

    pub fn leases(&self) -> Result<LeaseTable, StoreError> {
        let read = try_db!("reading leases", self.db.begin_read())?;
        let table = try_db!("reading leases", read.open_table(STATE))?;
        match try_db!("reading leases", table.get(LEASES_KEY))? {
            Some(v) => serde_json::from_slice(v.value())
                .map_err(|source| StoreError::Corrupt { key: LEASES_KEY.into(), source }),
            None => Ok(LeaseTable::default()),
        }
    }

    pub fn put_leases(&self, leases: &LeaseTable) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(leases).expect("a lease table always encodes");
        self.put(STATE, LEASES_KEY, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::Lease;

    #[test]
    fn profiles_leases_and_seen_machines_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mac: MacAddr = "52:54:00:00:00:01".parse().expect("mac");
        {
            let store = ProvisioningStore::open(dir.path()).expect("open");
            let profile = MachineProfile { attributes: "rack:r2".into(), ..Default::default() };
            store.put_profile(mac, &profile).expect("put");
            let mut leases = LeaseTable::default();
            leases.leases.insert(mac, Lease { ip: Ipv4Addr::new(10, 0, 0, 3), expires: 9, bound: true });
            store.put_leases(&leases).expect("leases");
            store.put_seen(mac, &SeenMachine { ip: None, last_boot_ms: 1, via: "dhcp".into() }).expect("seen");
        }
        let store = ProvisioningStore::open(dir.path()).expect("reopen");
        assert_eq!(store.profiles().expect("profiles")[&mac].attributes, "rack:r2");
        assert_eq!(store.leases().expect("leases").leases[&mac].ip, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(store.seen().expect("seen")[&mac].via, "dhcp");
        assert!(store.delete_profile(mac).expect("delete"));
        assert!(!store.delete_profile(mac).expect("delete again"));
        assert!(store.profiles().expect("profiles").is_empty());
    }
}
