//! The Raft log, hard state and snapshot of one node: raft-rs's `Storage`, kept durable.
//!
//! raft-rs reads the log through its [`Storage`] trait and leaves writing to the caller: what a
//! `Ready` says to persist must be on disk before the messages that depend on it are sent. This
//! store keeps the whole unsnapshotted log in memory for reads and writes every change through to
//! [redb](https://docs.rs/redb), one transaction per `Ready`, so a node that crashes and reopens
//! its data directory has every entry it acknowledged.
//!
//! [`LogStore::in_memory`] keeps no files. The deterministic simulation uses it as a model of a disk:
//! the simulation holds on to the store when it crashes a node, so what was persisted survives
//! and everything else (the Raft node, the state machine, pending proposals) is lost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// What can go wrong opening or writing a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened, read or written.
    #[error("raft store {path}: {source}")]
    Disk {
        /// The store's file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// The file holds something this store did not write.
    #[error("raft store {path} is corrupt: {problem}")]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// What was wrong.
        problem: String,
    },
}

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAPSHOT: &str = "snapshot";
const INCARNATION: &str = "incarnation";

/// One node's Raft storage; cheap to clone, clones share it.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<RwLock<Inner>>,
}

struct Inner {
    core: Core,
    disk: Option<Disk>,
}

/// Every transaction is fsynced before it returns: a machine that loses power loses nothing that
/// was acknowledged.
struct Disk {
    db: Database,
    path: PathBuf,
}

/// What the store holds, in memory.
#[derive(Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot; index 0 when there is none.
    snapshot: Snapshot,
    /// Every entry after the snapshot, contiguous.
    entries: Vec<Entry>,
    incarnation: u64,
}

/// Everything one `Ready` asks to persist, written in one transaction.
#[derive(Default)]
pub struct Persist<'a> {
    /// A snapshot received from the leader, replacing the log.
    pub snapshot: Option<&'a Snapshot>,
    /// New entries; any existing entries from the first one's index on are replaced.
    pub entries: &'a [Entry],
    /// The new hard state.
    pub hard_state: Option<&'a HardState>,
    /// A new commit index alone (from a `LightReady`). It is recorded in memory and reaches the
    /// disk with the next transaction, not one of its own: Raft needs no durable commit index (a
    /// restarted node relearns it from the leader), and a second fsync per `Ready` would double
    /// the cost of every replicated update.
    pub commit: Option<u64>,
    /// A snapshot this node made of its own state; the log up to its index is dropped.
    pub compact: Option<Snapshot>,
}

impl Persist<'_> {
    fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.commit.is_none()
            && self.compact.is_none()
    }
}

impl LogStore {
    /// A store that keeps nothing on disk, for the simulation and unit tests.
    pub fn in_memory(voters: &[u64]) -> Self {
        let mut core = Core::default();
        core.conf_state.voters = voters.to_vec();
        core.incarnation = 1;
        LogStore { inner: Arc::new(RwLock::new(Inner { core, disk: None })) }
    }

    /// Opens (or creates) the store in `dir`, whose cluster is `voters` when it is new.
    ///
    /// Each open starts a new incarnation of the node (see [`UpdateId`](crate::UpdateId)).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<Self, StoreError> {
        let path = dir.join("raft.redb");
        let disk_err = |source: redb::Error| StoreError::Disk { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|e| disk_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| disk_err(e.into()))?;
        let mut core = load(&db).map_err(|e| match e {
            Loaded::Disk(e) => disk_err(e),
            Loaded::Corrupt(problem) => StoreError::Corrupt { path: path.clone(), problem },
        })?;
        if core.conf_state.voters.is_empty() {
            core.conf_state.voters = voters.to_vec();
        }
        core.incarnation += 1;
        let store = LogStore { inner: Arc::new(RwLock::new(Inner { core, disk: Some(Disk { db, path }) })) };
        store.write_meta_all()?;
        Ok(store)
    }

    /// This run's incarnation number.
    pub fn incarnation(&self) -> u64 {
        self.read().core.incarnation
    }

    /// The latest snapshot (index 0 when none).
    pub fn snapshot_now(&self) -> Snapshot {
        self.read().core.snapshot.clone()
    }

    /// The hard state as last recorded (its commit index may be ahead of the disk's).
    pub fn hard_state(&self) -> HardState {
        self.read().core.hard_state.clone()
    }

    /// Writes what a `Ready` asks for: on disk when this returns, then in memory (a commit index
    /// alone stays in memory until the next write; see [`Persist::commit`]).
    pub fn persist(&self, p: Persist<'_>) -> Result<(), StoreError> {
        if p.is_empty() {
            return Ok(());
        }
        let mut inner = self.write();
        let commit_only = p.snapshot.is_none() && p.entries.is_empty() && p.hard_state.is_none() && p.compact.is_none();
        if let (true, Some(commit)) = (commit_only, p.commit) {
            inner.core.hard_state.commit = commit;
            return Ok(());
        }
        let mut core = std::mem::take(&mut inner.core);
        let old_snapshot = core.snapshot.get_metadata().index;
        if let Some(snapshot) = p.snapshot {
            core.install(snapshot.clone());
        }
        let first_new = p.entries.first().map(|e| e.index);
        if !p.entries.is_empty() {
            core.append(p.entries);
        }
        if let Some(hs) = p.hard_state {
            core.hard_state = hs.clone();
        }
        if let Some(commit) = p.commit {
            core.hard_state.commit = commit;
        }
        if let Some(snapshot) = p.compact {
            core.compact(snapshot);
        }
        let result = match &inner.disk {
            Some(disk) => disk.write(&core, old_snapshot, first_new, p.entries),
            None => Ok(()),
        };
        inner.core = core;
        // A failed write leaves memory ahead of the disk; the caller stops the node, and reopening
        // reads the disk again, so nothing unpersisted is ever acknowledged.
        result
    }

    fn write_meta_all(&self) -> Result<(), StoreError> {
        let inner = self.read();
        match &inner.disk {
            Some(disk) => disk.write_meta(&inner.core),
            None => Ok(()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Core {
    fn first_index(&self) -> u64 {
        self.entries.first().map_or(self.snapshot.get_metadata().index + 1, |e| e.index)
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    fn append(&mut self, new: &[Entry]) {
        let first = new[0].index;
        let keep = first.saturating_sub(self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(new);
    }

    fn install(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
    }

    fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        if index <= self.snapshot.get_metadata().index {
            return;
        }
        self.entries.retain(|e| e.index > index);
        // Raft restores the configuration of the snapshot's index and replays the entries after
        // it, so the configuration stored is the snapshot's, never a later one.
        self.conf_state = snapshot.get_metadata().get_conf_state().clone();
        self.snapshot = snapshot;
    }
}

impl Disk {
    /// One transaction bringing the file up to `core`: entries dropped by a snapshot newer than
    /// `old_snapshot` or replaced by a conflicting append are removed, new ones inserted, and the
    /// metadata rewritten.
    fn write(&self, core: &Core, old_snapshot: u64, first_new: Option<u64>, new: &[Entry]) -> Result<(), StoreError> {
        let err = |e: redb::Error| StoreError::Disk { path: self.path.clone(), source: e };
        let mut tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        tx.set_durability(Durability::Immediate).map_err(|e| err(redb::Error::from(e)))?;
        {
            let mut table = tx.open_table(ENTRIES).map_err(|e| err(e.into()))?;
            let new_snapshot = core.snapshot.get_metadata().index;
            if new_snapshot > old_snapshot {
                // Everything at or below the snapshot, or everything if the snapshot came from
                // the leader and replaced the log.
                let upto = if core.entries.is_empty() { u64::MAX } else { new_snapshot };
                table.retain_in(..=upto, |_, _| false).map_err(|e| err(e.into()))?;
            }
            if let Some(first) = first_new {
                table.retain_in(first.., |_, _| false).map_err(|e| err(e.into()))?;
                for entry in new {
                    table.insert(entry.index, entry.encode_to_vec().as_slice()).map_err(|e| err(e.into()))?;
                }
            }
        }
        write_meta(&tx, core).map_err(err)?;
        tx.commit().map_err(|e| err(e.into()))
    }

    fn write_meta(&self, core: &Core) -> Result<(), StoreError> {
        let err = |e: redb::Error| StoreError::Disk { path: self.path.clone(), source: e };
        let mut tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        tx.set_durability(Durability::Immediate).map_err(|e| err(redb::Error::from(e)))?;
        write_meta(&tx, core).map_err(err)?;
        tx.commit().map_err(|e| err(e.into()))
    }
}

fn write_meta(tx: &redb::WriteTransaction, core: &Core) -> Result<(), redb::Error> {
    let mut meta = tx.open_table(META)?;
    meta.insert(HARD_STATE, core.hard_state.encode_to_vec().as_slice())?;
    meta.insert(CONF_STATE, core.conf_state.encode_to_vec().as_slice())?;
    meta.insert(SNAPSHOT, core.snapshot.encode_to_vec().as_slice())?;
    meta.insert(INCARNATION, core.incarnation.to_le_bytes().as_slice())?;
    Ok(())
}

enum Loaded {
    Disk(redb::Error),
    Corrupt(String),
}

impl<E: Into<redb::Error>> From<E> for Loaded {
    fn from(e: E) -> Self {
        Loaded::Disk(e.into())
    }
}

fn load(db: &Database) -> Result<Core, Loaded> {
    let mut core = Core::default();
    let tx = db.begin_read()?;
    let meta = match tx.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(core),
        Err(e) => return Err(e.into()),
    };
    fn decode<M: prost::Message + Default>(what: &str, bytes: Option<redb::AccessGuard<'_, &[u8]>>) -> Result<M, Loaded> {
        match bytes {
            None => Ok(M::default()),
            Some(b) => M::decode(b.value()).map_err(|e| Loaded::Corrupt(format!("{what}: {e}"))),
        }
    }
    core.hard_state = decode("hard state", meta.get(HARD_STATE)?)?;
    core.conf_state = decode("conf state", meta.get(CONF_STATE)?)?;
    core.snapshot = decode("snapshot", meta.get(SNAPSHOT)?)?;
    core.incarnation = match meta.get(INCARNATION)? {
        None => 0,
        Some(b) => u64::from_le_bytes(
            b.value().try_into().map_err(|_| Loaded::Corrupt("incarnation is not 8 bytes".into()))?,
        ),
    };
    let entries = match tx.open_table(ENTRIES) {
        Ok(entries) => entries,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(core),
        Err(e) => return Err(e.into()),
    };
    for (expected, row) in (core.snapshot.get_metadata().index + 1..).zip(entries.iter()?) {
        let (index, bytes) = row?;
        let entry = Entry::decode(bytes.value()).map_err(|e| Loaded::Corrupt(format!("entry {}: {e}", index.value())))?;
        if entry.index != index.value() || entry.index != expected {
            return Err(Loaded::Corrupt(format!(
                "log is not contiguous: found entry {} (keyed {}) where {expected} was expected",
                entry.index,
                index.value()
            )));
        }
        core.entries.push(entry);
    }
    Ok(core)
}

fn unavailable(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let inner = self.read();
        Ok(RaftState { hard_state: inner.core.hard_state.clone(), conf_state: inner.core.conf_state.clone() })
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let inner = self.read();
        let core = &inner.core;
        if low < core.first_index() {
            return Err(unavailable(StorageError::Compacted));
        }
        if high > core.last_index() + 1 {
            return Err(unavailable(StorageError::Unavailable));
        }
        let offset = core.first_index();
        let mut out = core.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        if let Some(max) = max_size.into() {
            // raft-rs's own rule: always at least one entry, then as many as fit.
            let mut size = 0u64;
            let keep = out
                .iter()
                .take_while(|e| {
                    size += e.encoded_len() as u64;
                    size <= max
                })
                .count()
                .max(1);
            out.truncate(keep);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let inner = self.read();
        let core = &inner.core;
        let snapshot = core.snapshot.get_metadata();
        if idx == snapshot.index {
            return Ok(snapshot.term);
        }
        if idx < core.first_index() {
            return Err(unavailable(StorageError::Compacted));
        }
        if idx > core.last_index() {
            return Err(unavailable(StorageError::Unavailable));
        }
        Ok(core.entries[(idx - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().core.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().core.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let inner = self.read();
        let snapshot = &inner.core.snapshot;
        if snapshot.get_metadata().index < request_index || snapshot.get_metadata().index == 0 {
            // The replica compacts as it applies; the leader asks again on a later heartbeat.
            return Err(unavailable(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8], ..Default::default() }
    }

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut s = Snapshot { data: data.to_vec(), ..Default::default() };
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store.read().core.entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn reopened_store_has_entries_hard_state_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(store.incarnation(), 1);
        let entries: Vec<_> = (1..=5).map(|i| entry(i, 1)).collect();
        let hs = HardState { term: 2, vote: 3, commit: 4 };
        store.persist(Persist { entries: &entries, hard_state: Some(&hs), ..Default::default() }).unwrap();
        // A conflicting append from a new leader replaces the suffix.
        store.persist(Persist { entries: &[entry(4, 2)], ..Default::default() }).unwrap();
        store.persist(Persist { compact: Some(snapshot(2, 1, b"state")), ..Default::default() }).unwrap();
        drop(store);

        let store = LogStore::open(dir.path(), &[9]).unwrap();
        assert_eq!(store.incarnation(), 2);
        assert_eq!(indexes(&store), vec![3, 4]);
        assert_eq!(store.term(4).unwrap(), 2);
        assert_eq!(store.term(2).unwrap(), 1, "the snapshot's own index keeps its term");
        assert!(matches!(store.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        assert_eq!(store.hard_state(), hs);
        assert_eq!(store.initial_state().unwrap().conf_state.voters, vec![1, 2, 3], "voters of a new store only");
        assert_eq!(&store.snapshot(2, 0).unwrap().data[..], b"state");
    }

    #[test]
    fn a_commit_index_alone_rides_along_with_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), &[1]).unwrap();
        store.persist(Persist { entries: &[entry(1, 1), entry(2, 1)], ..Default::default() }).unwrap();
        store.persist(Persist { commit: Some(2), ..Default::default() }).unwrap();
        assert_eq!(store.hard_state().commit, 2);
        drop(store);
        let store = LogStore::open(dir.path(), &[1]).unwrap();
        assert_eq!(store.hard_state().commit, 0, "no transaction of its own");
        store.persist(Persist { commit: Some(2), ..Default::default() }).unwrap();
        store.persist(Persist { entries: &[entry(3, 1)], ..Default::default() }).unwrap();
        drop(store);
        let store = LogStore::open(dir.path(), &[1]).unwrap();
        assert_eq!(store.hard_state().commit, 2, "written with the next transaction");
    }

    #[test]
    fn a_leaders_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), &[1, 2, 3]).unwrap();
        let entries: Vec<_> = (1..=3).map(|i| entry(i, 1)).collect();
        store.persist(Persist { entries: &entries, ..Default::default() }).unwrap();
        let snap = snapshot(10, 3, b"s");
        store.persist(Persist { snapshot: Some(&snap), ..Default::default() }).unwrap();
        store.persist(Persist { entries: &[entry(11, 3)], ..Default::default() }).unwrap();
        drop(store);
        let store = LogStore::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(indexes(&store), vec![11]);
        assert_eq!(store.first_index().unwrap(), 11);
        assert_eq!(store.hard_state().commit, 10);
    }

    #[test]
    fn entries_respect_bounds_and_size() {
        let store = LogStore::in_memory(&[1]);
        let entries: Vec<_> = (1..=4).map(|i| entry(i, 1)).collect();
        store.persist(Persist { entries: &entries, ..Default::default() }).unwrap();
        let ctx = GetEntriesContext::empty(false);
        assert_eq!(store.entries(2, 4, None, ctx).unwrap().len(), 2);
        let ctx = GetEntriesContext::empty(false);
        assert_eq!(store.entries(1, 5, 1, ctx).unwrap().len(), 1, "at least one entry, whatever the limit");
        let ctx = GetEntriesContext::empty(false);
        assert!(store.entries(1, 9, None, ctx).is_err(), "beyond the end is an error, not a panic");
        assert!(matches!(store.snapshot(1, 2), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))));
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("raft.redb"), b"this is not a database").unwrap();
        let err = LogStore::open(dir.path(), &[1]).err().expect("garbage must not open");
        assert!(err.to_string().contains("raft.redb"), "{err}");
    }
}
