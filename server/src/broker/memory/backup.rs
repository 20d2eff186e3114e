//! A consistent copy of the data file while the server runs (the file is
//! locked by the server: no other process may open it meanwhile). The copy
//! is one snapshot (a read transaction: appends go on beside it), written as
//! a redb file of its own that a server started on it reads as it would the
//! original.

use super::durable::{Store, EVENTS, HOOKS, IDS, ROOMS, SANCTIONS, SLOW};
use anyhow::Context;
use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    Value, WriteTransaction,
};
use std::fs::File;

/// Rows copied per commit of the copy: its memory stays bounded however
/// big the file is.
const CHUNK: usize = 50_000;

impl Store {
    /// Writes the copy beside the file, and returns it open and already
    /// unlinked: it goes away with the handle, whatever happens to the
    /// caller.
    pub fn backup(&self) -> anyhow::Result<File> {
        let dir = self
            .path
            .parent()
            .context("the data file has a directory")?;
        let path = dir.join(format!(".backup-{}.redb", uuid::Uuid::new_v4()));
        let copied = self.copy_to(&path);
        let file = copied.and_then(|()| {
            File::open(&path).with_context(|| format!("cannot read {}", path.display()))
        });
        let _ = std::fs::remove_file(&path);
        file
    }

    fn copy_to(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let target = Database::create(path)
            .with_context(|| format!("cannot make the copy {}", path.display()))?;
        let snapshot = self.db.begin_read()?;
        copy(&snapshot, &target, ROOMS)?;
        copy(&snapshot, &target, EVENTS)?;
        copy(&snapshot, &target, SANCTIONS)?;
        copy(&snapshot, &target, SLOW)?;
        copy(&snapshot, &target, HOOKS)?;
        copy(&snapshot, &target, IDS)?;
        // The chunks were not synced one by one: this one syncs them all.
        target.begin_write()?.commit()?;
        Ok(())
    }
}

fn copy<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &Database,
    table: TableDefinition<K, V>,
) -> Result<(), redb::Error> {
    let source = from.open_table(table)?;
    let mut rows = source.iter()?;
    loop {
        let mut txn: WriteTransaction = to.begin_write()?;
        txn.set_durability(Durability::None)?;
        let mut copied = 0;
        {
            let mut target = txn.open_table(table)?;
            for row in rows.by_ref().take(CHUNK) {
                let (key, value) = row?;
                target.insert(key.value(), value.value())?;
                copied += 1;
            }
        }
        txn.commit()?;
        if copied < CHUNK {
            return Ok(());
        }
    }
}
