//! Histories of client operations on the keyed store, and the check that they are linearizable.
//!
//! A client records each operation when it is invoked and when its answer arrives
//! ([`Recorder`]); [`check`] asks whether some order of the operations, each placed between its
//! invocation and its answer, explains every answer under the store's sequential rules. The search
//! is todc-utils' Wing-Gong-Lowe checker ([`WGLChecker`]); linearizability is local, so each key is
//! checked on its own (P-compositionality), which keeps the search small.
//!
//! An operation whose answer never came (the client gave up) may or may not have taken effect:
//! it is given an answer at the end of time, so the checker may place it anywhere after its
//! invocation, the end included, where it affects nothing observed. A read that never answered
//! says nothing and is left out.
//!
//! ```
//! use cluster::linearizable::{check, KvOp, KvResult, Recorder};
//!
//! let mut h = Recorder::default();
//! let w = h.invoke(b"k", KvOp::Put(b"1".to_vec()), 0);
//! h.complete(w, KvResult::Done, 10);
//! let r = h.invoke(b"k", KvOp::Get, 20);
//! h.complete(r, KvResult::Value(None), 30); // reads the past after the write answered
//! assert!(check(h.operations()).is_err());
//! ```

use std::collections::BTreeMap;

use todc_utils::linearizability::history::{Action, History};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

/// An operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Write a value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Write `value` if the key holds `expected` (`None`: absent).
    Cas {
        /// What the key must hold.
        expected: Option<Vec<u8>>,
        /// The value to write.
        value: Vec<u8>,
    },
    /// Read the key.
    Get,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// A put or delete was acknowledged.
    Done,
    /// A compare-and-set wrote (`true`) or found something else (`false`).
    Cas(bool),
    /// A read answered this value.
    Value(Option<Vec<u8>>),
    /// No answer: the client gave up, or the operation failed in a way that does not say whether
    /// it took effect.
    Unknown,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The key.
    pub key: Vec<u8>,
    /// What was asked.
    pub op: KvOp,
    /// What was answered.
    pub result: KvResult,
    /// When it was invoked, in any clock that only moves forward.
    pub invoked: u64,
    /// When the answer arrived; `None` if it never did.
    pub answered: Option<u64>,
}

/// Records operations as they are invoked and answered.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    ops: Vec<Operation>,
}

impl Recorder {
    /// Records an invocation at time `at`; returns its number for [`Recorder::complete`].
    pub fn invoke(&mut self, key: &[u8], op: KvOp, at: u64) -> usize {
        self.ops.push(Operation { key: key.to_vec(), op, result: KvResult::Unknown, invoked: at, answered: None });
        self.ops.len() - 1
    }

    /// Records the answer to invocation `n` at time `at`.
    pub fn complete(&mut self, n: usize, result: KvResult, at: u64) {
        if let Some(op) = self.ops.get_mut(n) {
            op.result = result;
            op.answered = Some(at);
        }
    }

    /// Every operation recorded.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// How many operations were answered.
    pub fn answered(&self) -> usize {
        self.ops.iter().filter(|o| o.answered.is_some()).count()
    }
}

/// A key whose operations no sequential order explains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the history of key {key:?} is not linearizable ({} operations):\n{}", .operations.len(), describe(.operations))]
pub struct NotLinearizable {
    /// The key, lossily as text.
    pub key: String,
    /// Its operations, in invocation order.
    pub operations: Vec<Operation>,
}

fn describe(ops: &[Operation]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    ops.iter()
        .map(|o| {
            let answered = o.answered.map_or("never".to_string(), |t| t.to_string());
            let op = match &o.op {
                KvOp::Put(v) => format!("put {}", text(v)),
                KvOp::Delete => "delete".into(),
                KvOp::Cas { expected, value } => format!("cas {:?} -> {}", expected.as_deref().map(text), text(value)),
                KvOp::Get => "get".into(),
            };
            format!("  [{} .. {answered}] {op} => {:?}", o.invoked, o.result)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The store's sequential rules for one key, as the checker's model.
struct Register;

impl Specification for Register {
    type State = Option<Vec<u8>>;
    type Operation = (KvOp, KvResult);

    fn init() -> Self::State {
        None
    }

    fn apply((op, result): &Self::Operation, state: &Self::State) -> (bool, Self::State) {
        match (op, result) {
            (KvOp::Put(v), _) => (true, Some(v.clone())),
            (KvOp::Delete, _) => (true, None),
            (KvOp::Cas { expected, value }, KvResult::Cas(true)) => (state == expected, Some(value.clone())),
            (KvOp::Cas { expected, .. }, KvResult::Cas(false)) => (state != expected, state.clone()),
            (KvOp::Cas { expected, value }, _) => (true, if state == expected { Some(value.clone()) } else { state.clone() }),
            (KvOp::Get, KvResult::Value(seen)) => (seen == state, state.clone()),
            (KvOp::Get, _) => (true, state.clone()),
        }
    }
}

/// Checks that `ops` are linearizable, key by key.
pub fn check(ops: &[Operation]) -> Result<(), NotLinearizable> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        let unanswered_read = op.op == KvOp::Get && op.answered.is_none();
        if !unanswered_read {
            by_key.entry(&op.key).or_default().push(op);
        }
    }
    for (key, ops) in by_key {
        // (time, calls before answers at the same time: operations that touch are concurrent,
        // which only ever allows more orders) -> the action.
        let mut events: Vec<((u64, u8, usize), Action<(KvOp, KvResult)>)> = Vec::with_capacity(2 * ops.len());
        for (process, op) in ops.iter().enumerate() {
            let item = (op.op.clone(), op.result.clone());
            events.push(((op.invoked, 0, process), Action::Call(item.clone())));
            let answered = op.answered.filter(|_| op.result != KvResult::Unknown).unwrap_or(u64::MAX);
            events.push(((answered, 1, process), Action::Response(item)));
        }
        events.sort_by_key(|(k, _)| *k);
        let actions = events.into_iter().map(|((_, _, process), action)| (process, action)).collect();
        if !WGLChecker::<Register>::is_linearizable(History::from_actions(actions)) {
            let mut operations: Vec<Operation> = ops.into_iter().cloned().collect();
            operations.sort_by_key(|o| o.invoked);
            return Err(NotLinearizable { key: String::from_utf8_lossy(key).into_owned(), operations });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(h: &mut Recorder, v: &str, from: u64, to: Option<u64>) {
        let n = h.invoke(b"k", KvOp::Put(v.into()), from);
        if let Some(to) = to {
            h.complete(n, KvResult::Done, to);
        }
    }

    fn get(h: &mut Recorder, seen: Option<&str>, from: u64, to: u64) {
        let n = h.invoke(b"k", KvOp::Get, from);
        h.complete(n, KvResult::Value(seen.map(Into::into)), to);
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let mut h = Recorder::default();
        put(&mut h, "1", 0, Some(100));
        get(&mut h, None, 10, 20);
        get(&mut h, Some("1"), 30, 40);
        check(h.operations()).unwrap();
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let mut h = Recorder::default();
        put(&mut h, "1", 0, Some(10));
        put(&mut h, "2", 20, Some(30));
        get(&mut h, Some("1"), 40, 50);
        let err = check(h.operations()).unwrap_err();
        assert_eq!(err.key, "k");
        assert!(err.to_string().contains("get => Value(Some([49]))"), "{err}");
    }

    #[test]
    fn a_write_without_an_answer_may_have_happened_or_not() {
        let mut h = Recorder::default();
        put(&mut h, "1", 0, None);
        get(&mut h, None, 10, 20);
        get(&mut h, Some("1"), 30, 40);
        check(h.operations()).unwrap();
        // But once seen, it cannot be unseen.
        get(&mut h, None, 50, 60);
        assert!(check(h.operations()).is_err());
    }

    #[test]
    fn compare_and_set_answers_are_checked_against_the_order() {
        let mut h = Recorder::default();
        put(&mut h, "a", 0, Some(10));
        let won = h.invoke(b"k", KvOp::Cas { expected: Some("a".into()), value: "b".into() }, 20);
        h.complete(won, KvResult::Cas(true), 30);
        // Two compare-and-sets from "a" cannot both win.
        let also = h.invoke(b"k", KvOp::Cas { expected: Some("a".into()), value: "c".into() }, 40);
        h.complete(also, KvResult::Cas(true), 50);
        assert!(check(h.operations()).is_err());
        h.ops.last_mut().unwrap().result = KvResult::Cas(false);
        check(h.operations()).unwrap();
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut h = Recorder::default();
        let a = h.invoke(b"a", KvOp::Put(b"1".to_vec()), 0);
        h.complete(a, KvResult::Done, 1);
        let b = h.invoke(b"b", KvOp::Get, 2);
        h.complete(b, KvResult::Value(None), 3);
        check(h.operations()).unwrap();
        let c = h.invoke(b"b", KvOp::Get, 4);
        h.complete(c, KvResult::Value(Some(b"1".to_vec())), 5);
        assert_eq!(check(h.operations()).unwrap_err().key, "b");
    }
}
