//! The replicated state machine: a map from keys to values, each with the revision that last
//! wrote it, changed by [`Command`]s that every replica applies in log order.
//!
//! It is deterministic and does no I/O: the same commands in the same order give the same map on
//! every node. A compare-and-set that does not match is an [`Outcome`], not an error: it was
//! agreed on like any other command, and every replica comes to the same answer.
//!
//! ```
//! use cluster::kv::{Command, Expected, Map, Outcome};
//!
//! let mut map = Map::default();
//! assert_eq!(map.apply(&Command::Put { key: b"a".to_vec(), value: b"1".to_vec() }), Outcome::Written { revision: 1 });
//! let stale = Command::CompareAndSet { key: b"a".to_vec(), expected: Expected::Revision(7), value: b"2".to_vec() };
//! assert!(matches!(map.apply(&stale), Outcome::Mismatch { .. }));
//! let fresh = Command::CompareAndSet { key: b"a".to_vec(), expected: Expected::Revision(1), value: b"2".to_vec() };
//! assert_eq!(map.apply(&fresh), Outcome::Written { revision: 3 });
//! assert_eq!(map.get(b"a").unwrap().value, b"2");
//! ```

use std::collections::BTreeMap;

use crate::state::DecodeError;

/// A value and the revision of the command that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The map's revision when it was written (unique, and growing with every write).
    pub revision: u64,
}

/// What a compare-and-set expects the key to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The key is absent.
    Absent,
    /// The key was last written at this revision.
    Revision(u64),
    /// The key holds this value.
    Value(Vec<u8>),
}

/// A change to the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `value` if it holds what is expected.
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// What it must hold.
        expected: Expected,
        /// Its new value.
        value: Vec<u8>,
    },
}

/// What a command did. Every command advances the map's revision, whatever its outcome, so that
/// the revision counts the commands applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key now holds the new value, written at `revision`.
    Written {
        /// The revision of the write.
        revision: u64,
    },
    /// The key was removed (`existed`: whether it was there).
    Deleted {
        /// The revision of the delete.
        revision: u64,
        /// Whether the key existed.
        existed: bool,
    },
    /// A compare-and-set found something else; nothing changed.
    Mismatch {
        /// The revision of the (refused) command.
        revision: u64,
        /// What the key held.
        current: Option<Versioned>,
    },
}

/// The map, and how many commands it has applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Map {
    entries: BTreeMap<Vec<u8>, Versioned>,
    revision: u64,
}

impl Map {
    /// Applies `command`.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        self.revision += 1;
        let revision = self.revision;
        match command {
            Command::Put { key, value } => {
                self.entries.insert(key.clone(), Versioned { value: value.clone(), revision });
                Outcome::Written { revision }
            }
            Command::Delete { key } => Outcome::Deleted { revision, existed: self.entries.remove(key).is_some() },
            Command::CompareAndSet { key, expected, value } => {
                let current = self.entries.get(key);
                let matches = match (expected, current) {
                    (Expected::Absent, None) => true,
                    (Expected::Revision(r), Some(c)) => c.revision == *r,
                    (Expected::Value(v), Some(c)) => c.value == *v,
                    _ => false,
                };
                if matches {
                    self.entries.insert(key.clone(), Versioned { value: value.clone(), revision });
                    Outcome::Written { revision }
                } else {
                    Outcome::Mismatch { revision, current: current.cloned() }
                }
            }
        }
    }

    /// What `key` holds.
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.entries.get(key)
    }

    /// How many commands have been applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A map of one key, as a snapshot of the single-register state restores (it counted
    /// `revision` updates, the last of which wrote `value`).
    pub fn single(key: Vec<u8>, value: Vec<u8>, revision: u64) -> Map {
        let mut entries = BTreeMap::new();
        if revision > 0 {
            entries.insert(key, Versioned { value, revision });
        }
        Map { entries, revision }
    }
}

// Byte formats: a tag, then length-prefixed fields (u64 little-endian lengths), checked on read.

const PUT: u8 = 1;
const DELETE: u8 = 2;
const CAS: u8 = 3;
const ABSENT: u8 = 0;
const AT_REVISION: u8 = 1;
const HOLDING: u8 = 2;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl Command {
    /// Appends the command's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Command::Put { key, value } => {
                out.push(PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Command::Delete { key } => {
                out.push(DELETE);
                put_bytes(out, key);
            }
            Command::CompareAndSet { key, expected, value } => {
                out.push(CAS);
                put_bytes(out, key);
                match expected {
                    Expected::Absent => out.push(ABSENT),
                    Expected::Revision(r) => {
                        out.push(AT_REVISION);
                        out.extend_from_slice(&r.to_le_bytes());
                    }
                    Expected::Value(v) => {
                        out.push(HOLDING);
                        put_bytes(out, v);
                    }
                }
                put_bytes(out, value);
            }
        }
    }

    /// Reads a command written by [`Command::encode_into`]; `bytes` must hold exactly one.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = crate::state::Reader::new(bytes, "command");
        let command = match r.byte()? {
            PUT => Command::Put { key: r.bytes()?, value: r.bytes()? },
            DELETE => Command::Delete { key: r.bytes()? },
            CAS => {
                let key = r.bytes()?;
                let expected = match r.byte()? {
                    ABSENT => Expected::Absent,
                    AT_REVISION => Expected::Revision(r.u64()?),
                    HOLDING => Expected::Value(r.bytes()?),
                    other => return Err(r.error(format!("expectation {other} is none of absent, revision, value"))),
                };
                Command::CompareAndSet { key, expected, value: r.bytes()? }
            }
            other => return Err(r.error(format!("command {other} is none of put, delete, compare-and-set"))),
        };
        r.end()?;
        Ok(command)
    }
}

impl Map {
    /// The snapshot bytes: the revision, the number of keys, then each key, value and revision.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (key, v) in &self.entries {
            put_bytes(out, key);
            put_bytes(out, &v.value);
            out.extend_from_slice(&v.revision.to_le_bytes());
        }
    }

    /// Reads snapshot bytes written by [`Map::encode_into`].
    pub fn decode(bytes: &[u8]) -> Result<Map, DecodeError> {
        let mut r = crate::state::Reader::new(bytes, "map snapshot");
        let revision = r.u64()?;
        let count = r.u64()?;
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            let key = r.bytes()?;
            let value = r.bytes()?;
            let written = r.u64()?;
            if written > revision {
                return Err(r.error(format!("a key written at revision {written}, after the map's {revision}")));
            }
            if entries.insert(key, Versioned { value, revision: written }).is_some() {
                return Err(r.error("a key appears twice".into()));
            }
        }
        r.end()?;
        Ok(Map { entries, revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Command {
        Command::Put { key: k.into(), value: v.into() }
    }

    #[test]
    fn commands_apply_and_every_one_advances_the_revision() {
        let mut map = Map::default();
        assert_eq!(map.apply(&put("a", "1")), Outcome::Written { revision: 1 });
        assert_eq!(map.apply(&Command::Delete { key: b"b".to_vec() }), Outcome::Deleted { revision: 2, existed: false });
        let absent = Command::CompareAndSet { key: b"a".to_vec(), expected: Expected::Absent, value: b"x".to_vec() };
        let current = Some(Versioned { value: b"1".to_vec(), revision: 1 });
        assert_eq!(map.apply(&absent), Outcome::Mismatch { revision: 3, current });
        let by_value = Command::CompareAndSet { key: b"a".to_vec(), expected: Expected::Value(b"1".to_vec()), value: b"2".to_vec() };
        assert_eq!(map.apply(&by_value), Outcome::Written { revision: 4 });
        assert_eq!(map.apply(&Command::Delete { key: b"a".to_vec() }), Outcome::Deleted { revision: 5, existed: true });
        let create = Command::CompareAndSet { key: b"a".to_vec(), expected: Expected::Absent, value: b"3".to_vec() };
        assert_eq!(map.apply(&create), Outcome::Written { revision: 6 });
        assert_eq!((map.revision(), map.len()), (6, 1));
    }

    #[test]
    fn commands_and_maps_round_trip_and_corruption_is_named() {
        let commands = [
            put("k", "v"),
            Command::Delete { key: vec![0, 255] },
            Command::CompareAndSet { key: b"k".to_vec(), expected: Expected::Absent, value: vec![] },
            Command::CompareAndSet { key: b"k".to_vec(), expected: Expected::Revision(9), value: b"z".to_vec() },
            Command::CompareAndSet { key: b"k".to_vec(), expected: Expected::Value(b"old".to_vec()), value: b"new".to_vec() },
        ];
        let mut map = Map::default();
        for c in &commands {
            let mut bytes = Vec::new();
            c.encode_into(&mut bytes);
            assert_eq!(&Command::decode(&bytes).unwrap(), c);
            let err = Command::decode(&bytes[..bytes.len() - 1]).unwrap_err();
            assert!(err.to_string().starts_with("corrupt command"), "{err}");
            bytes.push(0);
            assert!(Command::decode(&bytes).unwrap_err().to_string().contains("trailing"));
            map.apply(c);
        }
        let mut bytes = Vec::new();
        map.encode_into(&mut bytes);
        assert_eq!(Map::decode(&bytes).unwrap(), map);
        assert!(Command::decode(&[7]).unwrap_err().to_string().contains("none of put"));
        let mut huge = vec![PUT];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Command::decode(&huge).unwrap_err().to_string().contains("needs"), "a length past the end is refused, not allocated");
    }
}
