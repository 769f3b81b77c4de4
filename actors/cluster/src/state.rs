//! The replicated state and the bytes it travels as.
//!
//! Raft replicates opaque entries; these are ergon's. The formats are small and hand-rolled
//! because they are two fixed records, and every decode checks lengths: a corrupt entry or
//! snapshot is an error that names what was wrong, never a panic.

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
    /// The new data.
    pub data: Vec<u8>,
}

/// A log entry or snapshot whose bytes are not what ergon wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what}: {problem}")]
pub struct DecodeError {
    what: &'static str,
    problem: String,
}

const UPDATE_TAG: u8 = 1;
const STATE_TAG: u8 = 1;

impl Update {
    /// The entry bytes: a tag, the three id numbers, then the data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25 + self.data.len());
        out.push(UPDATE_TAG);
        for n in [self.id.origin, self.id.incarnation, self.id.seq] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads entry bytes written by [`Update::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, what: "update entry" };
        r.tag(UPDATE_TAG)?;
        let id = UpdateId { origin: r.u64()?, incarnation: r.u64()?, seq: r.u64()? };
        Ok(Update { id, data: r.rest().to_vec() })
    }
}

impl State {
    /// The snapshot bytes: a tag, the version, the id's length and bytes, then the data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.id.len() + self.data.len());
        out.push(STATE_TAG);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.id.len() as u64).to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads snapshot bytes written by [`State::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, what: "state snapshot" };
        r.tag(STATE_TAG)?;
        let version = r.u64()?;
        let id_len = r.u64()?;
        let id = r.take(id_len)?;
        let id = String::from_utf8(id.to_vec()).map_err(|_| r.error("state id is not UTF-8".into()))?;
        Ok(State { id, data: r.rest().to_vec(), version })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn error(&self, problem: String) -> DecodeError {
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

    fn tag(&mut self, expected: u8) -> Result<(), DecodeError> {
        let tag = self.take(1)?[0];
        if tag == expected {
            Ok(())
        } else {
            Err(self.error(format!("format tag {tag}, expected {expected}")))
        }
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("take(8) returns 8 bytes")))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_and_state_round_trip() {
        let update = Update { id: UpdateId { origin: 3, incarnation: 2, seq: 99 }, data: b"x=1".to_vec() };
        assert_eq!(Update::decode(&update.encode()).unwrap(), update);
        let state = State { id: "cluster".into(), data: vec![0, 1, 2], version: 7 };
        assert_eq!(State::decode(&state.encode()).unwrap(), state);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_named_errors() {
        let update = Update { id: UpdateId { origin: 1, incarnation: 1, seq: 1 }, data: vec![] }.encode();
        let err = Update::decode(&update[..10]).unwrap_err();
        assert!(err.to_string().contains("corrupt update entry: needs 8 more bytes"), "{err}");
        let err = Update::decode(&[9]).unwrap_err();
        assert!(err.to_string().contains("format tag 9"), "{err}");
        let mut state = State { id: "abc".into(), data: vec![], version: 1 }.encode();
        state[9] = 200; // id length beyond the end
        assert!(State::decode(&state).unwrap_err().to_string().contains("corrupt state snapshot"));
        assert!(State::decode(&[]).is_err());
    }
}
