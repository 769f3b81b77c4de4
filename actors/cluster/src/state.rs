//! The replicated state and the bytes it travels as.
//!
//! Raft replicates opaque entries; these are ergon's. The formats are small and hand-rolled
//! because they are a few fixed records, and every decode checks lengths: a corrupt entry or
//! snapshot is an error that names what was wrong, never a panic.
//!
//! The state machine is a [`Map`](crate::kv::Map) of keys. The tutorial's single register
//! ([`State`]) is one of its keys, the state's id; entries and snapshots written before there were
//! keys (format 1) are read as writes to that key.

use std::collections::BTreeMap;

use crate::kv::{Command, Map};
use crate::membership::{decode_members, encode_members, Member};
use crate::NodeId;

/// The replicated state, `{ id, data, version }`: the value every replica agrees on.
///
/// `version` counts the updates applied since the cluster began, so two replicas with the same
/// version hold the same data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// Which replicated state this is.
    pub id: String,
    /// The latest update's payload.
    pub data: Vec<u8>,
    /// How many updates have been applied.
    pub version: u64,
}

/// Names one proposed update across the cluster's whole life.
///
/// The incarnation changes each time a node opens its store, so a proposal left in the log by an
/// earlier run of the node can never be mistaken for one the current run is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpdateId {
    /// The node that proposed it.
    pub origin: NodeId,
    /// Which run of that node.
    pub incarnation: u64,
    /// Its number within that run.
    pub seq: u64,
}

/// An update as it sits in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Who proposed it.
    pub id: UpdateId,
    /// What it changes.
    pub command: Command,
}

/// A log entry or snapshot whose bytes are not what ergon wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what}: {problem}")]
pub struct DecodeError {
    what: &'static str,
    problem: String,
}

impl DecodeError {
    pub(crate) fn new(what: &'static str, problem: String) -> Self {
        DecodeError { what, problem }
    }
}

/// Format 1: a single register's data. Format 2: a command on the map.
const REGISTER_UPDATE: u8 = 1;
const COMMAND_UPDATE: u8 = 2;
/// Format 1: a single register. Format 2: the map. Format 3: the members, then the map.
const REGISTER_STATE: u8 = 1;
const MAP_STATE: u8 = 2;
const MEMBERS_AND_MAP_STATE: u8 = 3;

/// What a snapshot holds besides Raft's own metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshotted {
    /// The state's id (the register's key).
    pub state_id: String,
    /// The map.
    pub map: Map,
    /// What is known of each member; `None` in snapshots written before membership changed at
    /// run time (formats 1 and 2), whose members are the configured ones.
    pub members: Option<BTreeMap<NodeId, Member>>,
}

impl Update {
    /// The entry bytes: the format, the three id numbers, then the command.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(COMMAND_UPDATE);
        for n in [self.id.origin, self.id.incarnation, self.id.seq] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        self.command.encode_into(&mut out);
        out
    }

    /// Reads entry bytes written by [`Update::encode`], or by a version that had one register
    /// (whose data becomes a put of `register`).
    pub fn decode(bytes: &[u8], register: &str) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "update entry");
        let format = r.byte()?;
        let id = UpdateId { origin: r.u64()?, incarnation: r.u64()?, seq: r.u64()? };
        let command = match format {
            REGISTER_UPDATE => Command::Put { key: register.as_bytes().to_vec(), value: r.rest().to_vec() },
            COMMAND_UPDATE => Command::decode(r.rest())?,
            other => return Err(r.error(format!("format tag {other}, expected {REGISTER_UPDATE} or {COMMAND_UPDATE}"))),
        };
        Ok(Update { id, command })
    }
}

/// The snapshot bytes of the state `id`: the format, the id, the members, then the map.
pub fn encode_snapshot(id: &str, map: &Map, members: &BTreeMap<NodeId, Member>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(MEMBERS_AND_MAP_STATE);
    out.extend_from_slice(&(id.len() as u64).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    encode_members(members, &mut out);
    map.encode_into(&mut out);
    out
}

/// Reads snapshot bytes written by [`encode_snapshot`], by a version without members (format 2),
/// or by one that had one register (which becomes the map of that one key).
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshotted, DecodeError> {
    let mut r = Reader::new(bytes, "state snapshot");
    match r.byte()? {
        REGISTER_STATE => {
            let version = r.u64()?;
            let id = r.string()?;
            let data = r.rest().to_vec();
            Ok(Snapshotted { map: Map::single(id.clone().into_bytes(), data, version), state_id: id, members: None })
        }
        MAP_STATE => {
            let state_id = r.string()?;
            Ok(Snapshotted { state_id, map: Map::decode(r.rest())?, members: None })
        }
        MEMBERS_AND_MAP_STATE => {
            let state_id = r.string()?;
            let members = Some(decode_members(&mut r)?);
            Ok(Snapshotted { state_id, members, map: Map::decode(r.rest())? })
        }
        other => Err(r.error(format!("format tag {other}, expected {REGISTER_STATE}, {MAP_STATE} or {MEMBERS_AND_MAP_STATE}"))),
    }
}

impl State {
    /// The register of state `id` in `map`: its key's value, and the map's revision (the
    /// updates applied since the cluster began).
    pub fn of(id: &str, map: &Map) -> State {
        let data = map.get(id.as_bytes()).map(|v| v.value.clone()).unwrap_or_default();
        State { id: id.to_owned(), data, version: map.revision() }
    }
}

/// Reads length-checked fields off a byte slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }

    pub(crate) fn error(&self, problem: String) -> DecodeError {
        DecodeError { what: self.what, problem }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        if (self.bytes.len() as u64) < n {
            return Err(self.error(format!("needs {n} more bytes, has {}", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n as usize);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("take(8) returns 8 bytes")))
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u64()?;
        Ok(self.take(len)?.to_vec())
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes).map_err(|_| self.error("state id is not UTF-8".into()))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Checks that nothing is left.
    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(self.error(format!("{n} trailing bytes"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot bytes of format 1, which versions with one register wrote.
    fn encode_register(state: &State) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + state.id.len() + state.data.len());
        out.push(REGISTER_STATE);
        out.extend_from_slice(&state.version.to_le_bytes());
        out.extend_from_slice(&(state.id.len() as u64).to_le_bytes());
        out.extend_from_slice(state.id.as_bytes());
        out.extend_from_slice(&state.data);
        out
    }

    #[test]
    fn updates_and_snapshots_round_trip() {
        let command = Command::Put { key: b"k".to_vec(), value: b"x=1".to_vec() };
        let update = Update { id: UpdateId { origin: 3, incarnation: 2, seq: 99 }, command };
        assert_eq!(Update::decode(&update.encode(), "cluster").unwrap(), update);
        let mut map = Map::default();
        map.apply(&Command::Put { key: b"cluster".to_vec(), value: vec![0, 1, 2] });
        let members: BTreeMap<_, _> = [(4, Member { address: "127.0.0.4:7000".into(), replaces: Some(2) })].into();
        let restored = decode_snapshot(&encode_snapshot("cluster", &map, &members)).unwrap();
        assert_eq!(restored, Snapshotted { state_id: "cluster".into(), map: map.clone(), members: Some(members) });
        assert_eq!(State::of("cluster", &restored.map), State { id: "cluster".into(), data: vec![0, 1, 2], version: 1 });
    }

    #[test]
    fn a_single_registers_entries_and_snapshots_are_read_as_its_key() {
        let mut legacy = vec![REGISTER_UPDATE];
        for n in [1u64, 1, 7] {
            legacy.extend_from_slice(&n.to_le_bytes());
        }
        legacy.extend_from_slice(b"old data");
        let update = Update::decode(&legacy, "cluster").unwrap();
        assert_eq!(update.command, Command::Put { key: b"cluster".to_vec(), value: b"old data".to_vec() });
        let old = State { id: "cluster".into(), data: b"v".to_vec(), version: 5 };
        let restored = decode_snapshot(&encode_register(&old)).unwrap();
        assert_eq!((restored.state_id.as_str(), State::of(&restored.state_id, &restored.map)), ("cluster", old));
        assert_eq!(restored.members, None, "the configured members stand");
    }

    #[test]
    fn truncated_or_foreign_bytes_are_named_errors() {
        let update = Update { id: UpdateId { origin: 1, incarnation: 1, seq: 1 }, command: Command::Delete { key: vec![] } }.encode();
        let err = Update::decode(&update[..10], "c").unwrap_err();
        assert!(err.to_string().contains("corrupt update entry: needs 8 more bytes"), "{err}");
        let err = Update::decode(&[9; 30], "c").unwrap_err();
        assert!(err.to_string().contains("format tag 9"), "{err}");
        let mut state = encode_register(&State { id: "abc".into(), data: vec![], version: 1 });
        state[9] = 200; // id length beyond the end
        assert!(decode_snapshot(&state).unwrap_err().to_string().contains("corrupt state snapshot"));
        assert!(decode_snapshot(&[]).is_err());
    }
}
