//! What a remote caller may ask of a node, and what it is answered: the wire form of the managers'
//! operations. A call carries no authority of its own; the node acts for the principal the
//! connection proved (see [`crate::service`]).

use actors::gate::GateStatus;
use actors::managers::node_manager::Node;
use actors::security::CapSet;
use actors::managers::state_replicator::{Consistency, Read};
use cluster::{Expected, Outcome, State};
use serde::{Deserialize, Serialize};

use crate::wire::WireError;

/// A node's managers, by the name of their configuration section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    /// The node manager.
    NodeManager,
    /// The communication manager.
    CommunicationManager,
    /// The leader election manager.
    LeaderElection,
    /// The state replication manager.
    StateReplicator,
    /// The failure detector.
    FailureDetector,
    /// The recovery manager.
    RecoveryManager,
    /// The load distributor.
    LoadDistributor,
    /// The resource scaler.
    ResourceScaler,
    /// The worker pool.
    WorkerPool,
}

/// One request to a node's managers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Call {
    /// Replaces the replicated state's data; answered once a quorum committed it.
    Replicate {
        /// The new data.
        data: Vec<u8>,
    },
    /// The replicated state as the node has applied it.
    ReadState,
    /// Who leads, as the node knows it.
    Leader,
    /// Publishes on a channel of the node's communication manager.
    Broadcast {
        /// The channel.
        channel: String,
        /// The content.
        content: String,
    },
    /// A manager's budget, counters and operations.
    Status {
        /// Which.
        manager: Manager,
    },
    /// Asks the node manager to admit a node.
    Join {
        /// The node's id; it becomes the principal `node:<id>`.
        id: String,
        /// What kind of node (`worker`, `storage`).
        kind: String,
        /// The energy it brings, joules.
        energy_budget_j: f64,
        /// The capabilities it asks for.
        capabilities: CapSet,
        /// The scope it asks for, within `node_management`.
        scope: String,
        /// Set when the node joins the replicated state too (its id is then its node number):
        /// answered once it is a voter.
        raft: Option<RaftJoin>,
    },
    /// Asks the node manager to remove a node (by the principal that joined it, or the node);
    /// a member of the replicated state leaves Raft's configuration, answered once it has.
    Leave {
        /// The node's id.
        id: String,
    },
    /// The node manager's members.
    ListNodes,
    /// The node's view of Raft: term, leader, commit and applied index, voters.
    RaftStatus,
    /// Sets a key of the replicated map; answered once committed.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// Reads a key, linearizably or from the node's applied map (stale).
    Get {
        /// The key.
        key: Vec<u8>,
        /// How fresh the answer must be.
        consistency: Consistency,
    },
    /// Removes a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets a key if it holds what is expected.
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// What it must hold.
        expected: Expect,
        /// Its new value.
        value: Vec<u8>,
    },
}

/// How a joining node takes part in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftJoin {
    /// Where its peers reach it (`host:port`).
    pub address: String,
    /// A voter it replaces, removed when it is promoted.
    pub replaces: Option<u64>,
}

/// A node's view of Raft and of the membership it has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftView {
    /// The node.
    pub id: u64,
    /// Its term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// The voters its configuration lists (the incoming ones, during a joint change).
    pub voters: Vec<u64>,
    /// The outgoing voters during a joint change; else empty.
    pub outgoing: Vec<u64>,
    /// Members receiving the log without a vote: nodes joining.
    pub learners: Vec<u64>,
    /// Where members are reached, where known.
    pub addresses: Vec<(u64, String)>,
}

impl RaftView {
    /// Where member `id` is reached, if known.
    pub fn address(&self, id: u64) -> Option<&str> {
        self.addresses.iter().find(|(m, _)| *m == id).map(|(_, a)| a.as_str())
    }
}

/// What a compare-and-set expects (`cluster::Expected` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The key is absent.
    Absent,
    /// The key was last written at this revision.
    Revision(u64),
    /// The key holds this value.
    Value(Vec<u8>),
}

impl From<Expect> for Expected {
    fn from(e: Expect) -> Self {
        match e {
            Expect::Absent => Expected::Absent,
            Expect::Revision(r) => Expected::Revision(r),
            Expect::Value(v) => Expected::Value(v),
        }
    }
}

/// A member, as the node manager records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// The energy it brought, joules.
    pub energy_budget_j: f64,
    /// What it was granted.
    pub capabilities: CapSet,
    /// Where it may act.
    pub scope: String,
    /// The principal on whose authority it joined.
    pub joined_by: String,
}

impl From<Node> for NodeInfo {
    fn from(n: Node) -> Self {
        NodeInfo {
            id: n.id,
            kind: n.kind,
            energy_budget_j: n.energy_budget.get(),
            capabilities: n.capabilities,
            scope: n.scope.as_str().to_owned(),
            joined_by: n.joined_by.to_string(),
        }
    }
}

/// What a successful call answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// The replicated state.
    State {
        /// Its version: the number of updates applied.
        version: u64,
        /// Its data.
        data: Vec<u8>,
    },
    /// The leader and its term, if one is known.
    Leader(Option<(u64, u64)>),
    /// A broadcast's number and the subscribers that took it.
    Receipt {
        /// The broadcast's number on its channel.
        seq: u64,
        /// Who received it.
        delivered: Vec<String>,
    },
    /// A manager's gate.
    Status(StatusReport),
    /// A node admitted, and the peers that confirmed it.
    Joined {
        /// The node as recorded.
        node: NodeInfo,
        /// The node managers that confirmed the join.
        confirmed_by: Vec<String>,
    },
    /// A node removed, or listed.
    Node(NodeInfo),
    /// The members.
    Nodes(Vec<NodeInfo>),
    /// A node's view of Raft.
    Raft(RaftView),
    /// A write to a key committed: its revision.
    Written {
        /// The revision of the write.
        revision: u64,
    },
    /// A key removed (`existed`: whether it was there).
    Deleted {
        /// The revision of the delete.
        revision: u64,
        /// Whether the key existed.
        existed: bool,
    },
    /// A compare-and-set that found something else: what the key holds (value, revision).
    Mismatch {
        /// The revision of the refused command.
        revision: u64,
        /// What the key held.
        current: Option<(Vec<u8>, u64)>,
    },
    /// A key read: its value and the revision that wrote it, the map's revision, the level it
    /// was served at, and how many committed entries the node had not yet applied.
    Read {
        /// Value and revision.
        value: Option<(Vec<u8>, u64)>,
        /// The map's revision read at.
        revision: u64,
        /// How fresh.
        level: Consistency,
        /// Committed entries not yet applied.
        behind: u64,
    },
}

impl From<Outcome> for Answer {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Written { revision } => Answer::Written { revision },
            Outcome::Deleted { revision, existed } => Answer::Deleted { revision, existed },
            Outcome::Mismatch { revision, current } => Answer::Mismatch { revision, current: current.map(|c| (c.value, c.revision)) },
        }
    }
}

impl From<Read> for Answer {
    fn from(read: Read) -> Self {
        Answer::Read { value: read.value.map(|v| (v.value, v.revision)), revision: read.revision, level: read.level, behind: read.behind }
    }
}

/// A manager's gate, as a remote caller sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The actor (`state-replicator/1`).
    pub actor: String,
    /// Budget capacity, joules.
    pub total_j: f64,
    /// Budget remaining, joules.
    pub remaining_j: f64,
    /// What its meter measures with.
    pub source: String,
    /// Requests that ran and succeeded, ran and failed, and were refused.
    pub allowed: u64,
    /// See `allowed`.
    pub failed: u64,
    /// See `allowed`.
    pub denied: u64,
    /// Energy charged, joules.
    pub charged_j: f64,
    /// Per operation: name, base cost (J), runs, mean measured cost (J).
    pub operations: Vec<(String, f64, u64, f64)>,
}

impl From<GateStatus> for StatusReport {
    fn from(s: GateStatus) -> Self {
        StatusReport {
            actor: s.actor,
            total_j: s.total.get(),
            remaining_j: s.remaining.get(),
            source: s.source.to_string(),
            allowed: s.counters.allowed,
            failed: s.counters.failed,
            denied: s.counters.denied,
            charged_j: s.counters.charged.get(),
            operations: s.operations.into_iter().map(|(name, base, runs, mean)| (name, base.get(), runs, mean.get())).collect(),
        }
    }
}

impl From<State> for Answer {
    fn from(state: State) -> Self {
        Answer::State { version: state.version, data: state.data }
    }
}

/// Why a call failed: the manager's error variant (`PermissionDenied`, `InsufficientEnergy`,
/// `ReplicaUpdateFailed`, …) and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Failure {
    /// The error variant's name.
    pub code: String,
    /// What it says.
    pub message: String,
}

impl Failure {
    /// A failure with this code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Failure { code: code.to_owned(), message: message.into() }
    }
}

/// A call with the number its answer will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; answers may come in any order.
    pub id: u64,
    /// The call.
    pub call: Call,
}

/// The answer to request `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's number.
    pub id: u64,
    /// Its outcome.
    pub result: Result<Answer, Failure>,
}

macro_rules! codec {
    ($type:ty, $what:literal) => {
        impl $type {
            /// Its encoding.
            pub fn encode(&self) -> Result<Vec<u8>, WireError> {
                postcard::to_stdvec(self).map_err(|e| WireError::Invalid(format!("cannot encode {}: {e}", $what)))
            }

            /// Decodes one from a frame.
            pub fn decode(frame: &[u8]) -> Result<Self, WireError> {
                postcard::from_bytes(frame).map_err(|e| WireError::Undecodable { what: $what, reason: e.to_string() })
            }
        }
    };
}

codec!(Request, "request");
codec!(Response, "response");

#[cfg(test)]
mod tests {
    use actors::security::Capability;

    use super::*;

    #[test]
    fn every_call_and_answer_survives_the_wire() {
        let node = NodeInfo {
            id: "w1".into(),
            kind: "worker".into(),
            energy_budget_j: 5.0,
            capabilities: CapSet::of(&[Capability::StateManagement, Capability::NodeManagement]),
            scope: "node_management.w1".into(),
            joined_by: "user:operator".into(),
        };
        let calls = [
            Call::Replicate { data: vec![1, 2, 3] },
            Call::ReadState,
            Call::Leader,
            Call::Broadcast { channel: "c".into(), content: "hi".into() },
            Call::Status { manager: Manager::WorkerPool },
            Call::Join { id: "w1".into(), kind: "worker".into(), energy_budget_j: 5.0, capabilities: node.capabilities, scope: "node_management".into(), raft: None },
            Call::Join {
                id: "4".into(),
                kind: "voter".into(),
                energy_budget_j: 5.0,
                capabilities: node.capabilities,
                scope: "node_management".into(),
                raft: Some(RaftJoin { address: "127.0.0.4:7001".into(), replaces: Some(2) }),
            },
            Call::Leave { id: "w1".into() },
            Call::ListNodes,
            Call::RaftStatus,
            Call::Put { key: b"k".to_vec(), value: b"v".to_vec() },
            Call::Get { key: b"k".to_vec(), consistency: Consistency::Stale },
            Call::Delete { key: b"k".to_vec() },
            Call::CompareAndSet { key: b"k".to_vec(), expected: Expect::Value(b"old".to_vec()), value: b"new".to_vec() },
            Call::CompareAndSet { key: b"k".to_vec(), expected: Expect::Revision(4), value: vec![] },
        ];
        for (id, call) in calls.into_iter().enumerate() {
            let request = Request { id: id as u64, call };
            assert_eq!(Request::decode(&request.encode().unwrap()), Ok(request));
        }
        let answers = [
            Ok(Answer::State { version: 3, data: b"x".to_vec() }),
            Ok(Answer::Leader(Some((2, 7)))),
            Ok(Answer::Receipt { seq: 1, delivered: vec!["a".into()] }),
            Ok(Answer::Joined { node: node.clone(), confirmed_by: vec!["node-manager/2".into()] }),
            Ok(Answer::Node(node.clone())),
            Ok(Answer::Nodes(vec![node])),
            Ok(Answer::Raft(RaftView {
                id: 1,
                term: 3,
                leader: Some(2),
                commit_index: 9,
                applied_index: 8,
                voters: vec![1, 2, 4],
                outgoing: vec![1, 2, 3],
                learners: vec![],
                addresses: vec![(4, "127.0.0.4:7001".into())],
            })),
            Ok(Answer::Written { revision: 4 }),
            Ok(Answer::Deleted { revision: 5, existed: true }),
            Ok(Answer::Mismatch { revision: 6, current: Some((b"v".to_vec(), 4)) }),
            Ok(Answer::Read { value: None, revision: 6, level: Consistency::Linearizable, behind: 0 }),
            Err(Failure::new("PermissionDenied", "no")),
        ];
        for (id, result) in answers.into_iter().enumerate() {
            let response = Response { id: id as u64, result };
            assert_eq!(Response::decode(&response.encode().unwrap()), Ok(response));
        }
        assert!(Request::decode(&[0xff; 9]).is_err());
    }
}
