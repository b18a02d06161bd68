//! The account store: a redb file holding the blog's `AccountBucket`.
//!
//! Keys are the account ids as strings and values are the account JSON, the
//! same layout the original Go service kept in BoltDB. Every lookup is its own
//! read transaction: the service never answers from a copy that bypasses the
//! store, so what is served is what is on disk.

use std::fmt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("AccountBucket");

/// First seeded id; the blog seeds `10000 + i` as `Person_i`.
pub const FIRST_ID: u64 = 10_000;

/// One stored account, borrowed from the value bytes where possible.
#[derive(Debug, Serialize, Deserialize)]
pub struct Account<'a> {
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub name: std::borrow::Cow<'a, str>,
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

/// A store failure, with what the store was doing when it happened.
#[derive(Debug)]
pub struct StoreError {
    doing: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    fn new(doing: impl Into<String>, source: impl Into<redb::Error>) -> Self {
        StoreError {
            doing: doing.into(),
            source: Box::new(source.into()),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.doing, self.source)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

impl Store {
    /// Opens the file, creating it when missing. `cache_bytes` bounds redb's
    /// page cache, which otherwise grows to a large default and shows up as RSS.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::new(format!("opening {}", path.display()), e))?;
        Ok(Store {
            db,
            path: path.to_owned(),
        })
    }

    /// Ensures accounts `FIRST_ID .. FIRST_ID + count` exist. Existing records
    /// are left alone, so a restart on the same file neither duplicates nor
    /// overwrites anything. Returns how many records were added.
    pub fn seed(&self, count: u64) -> Result<u64, StoreError> {
        let doing = || format!("seeding {}", self.path.display());
        let txn = self
            .db
            .begin_write()
            .map_err(|e| StoreError::new(doing(), e))?;
        let mut added = 0;
        {
            let mut table = txn
                .open_table(ACCOUNTS)
                .map_err(|e| StoreError::new(doing(), e))?;
            for i in 0..count {
                let id = (FIRST_ID + i).to_string();
                if table
                    .get(id.as_str())
                    .map_err(|e| StoreError::new(doing(), e))?
                    .is_some()
                {
                    continue;
                }
                let account = Account {
                    id: id.as_str().into(),
                    name: format!("Person_{i}").into(),
                };
                let value = serde_json::to_vec(&account).expect("an account always serialises");
                table
                    .insert(id.as_str(), value.as_slice())
                    .map_err(|e| StoreError::new(doing(), e))?;
                added += 1;
            }
        }
        txn.commit().map_err(|e| StoreError::new(doing(), e))?;
        Ok(added)
    }

    /// Looks `id` up in a fresh read transaction and hands the stored bytes to
    /// `f` while the transaction still holds them, so no copy is needed.
    pub fn with_account<R>(
        &self,
        id: &str,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        let doing = || "reading an account".to_owned();
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::new(doing(), e))?;
        let table = txn
            .open_table(ACCOUNTS)
            .map_err(|e| StoreError::new(doing(), e))?;
        let value = table.get(id).map_err(|e| StoreError::new(doing(), e))?;
        Ok(value.map(|guard| f(guard.value())))
    }

    /// Proves the store answers: a real read transaction on the table.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with_account("", |_| ()).map(|_| ())
    }

    /// Number of stored accounts.
    #[cfg(test)]
    pub fn len(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::new("counting", e))?;
        let table = txn
            .open_table(ACCOUNTS)
            .map_err(|e| StoreError::new("counting", e))?;
        table.len().map_err(|e| StoreError::new("counting", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_twice_adds_nothing_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.db");
        {
            let store = Store::open(&path, 64 * 1024).unwrap();
            assert_eq!(store.seed(100).unwrap(), 100);
        }
        let store = Store::open(&path, 64 * 1024).unwrap();
        assert_eq!(store.seed(100).unwrap(), 0);
        assert_eq!(store.len().unwrap(), 100);
        let name = store
            .with_account("10099", |raw| {
                serde_json::from_slice::<Account>(raw)
                    .unwrap()
                    .name
                    .into_owned()
            })
            .unwrap();
        assert_eq!(name.as_deref(), Some("Person_99"));
        assert!(store.with_account("10100", |_| ()).unwrap().is_none());
        store.ping().unwrap();
    }
}
