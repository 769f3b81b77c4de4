//! Who is in the cluster, and the rules for changing it.
//!
//! Membership lives in the Raft log (raft-rs `ConfChangeV2` entries) and in snapshots, so every
//! node agrees on it and a restart restores it. A node joins as a learner, which receives the log
//! but does not vote; the leader promotes it once it has caught up, in the same change removing
//! the voter it replaces, if any (two voters changing at once go through joint consensus). A
//! node leaves by being removed.
//!
//! This module decides and does nothing: [`plan`] checks a requested [`Change`] against the
//! configuration and the leader's view of its followers and gives the `ConfChangeV2` to propose
//! or the refusal; [`promotion`] says when a learner is ready. The [`Replica`](crate::Replica)
//! proposes and applies what they give.

use std::collections::{BTreeMap, BTreeSet};

use raft::prelude::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState};

use crate::state::{DecodeError, Reader};
use crate::NodeId;

/// A learner is promoted once it is at most this many entries behind the leader's commit index:
/// close enough that it will not slow the quorum, without waiting for an idle moment that a
/// busy cluster never has.
pub const PROMOTION_LAG: u64 = 64;

/// The longest address a member may have, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// What the cluster knows of one member beyond its id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    /// Where its peers reach it (`host:port` for TCP nodes; empty in one process).
    pub address: String,
    /// While it is a learner: the voter it replaces when it is promoted.
    pub replaces: Option<NodeId>,
}

/// The configuration the cluster agreed on, as this node has applied it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// The voters (of the incoming configuration, while joint).
    pub voters: BTreeSet<NodeId>,
    /// The voters of the outgoing configuration while a joint change is under way; else empty.
    pub outgoing: BTreeSet<NodeId>,
    /// Members that receive the log and do not vote: nodes joining.
    pub learners: BTreeSet<NodeId>,
    /// What is known of each member.
    pub members: BTreeMap<NodeId, Member>,
}

impl Membership {
    /// The membership of `conf`, with what `members` knows of each.
    pub fn of(conf: &ConfState, members: &BTreeMap<NodeId, Member>) -> Self {
        let mut membership = Membership {
            voters: conf.voters.iter().copied().collect(),
            outgoing: conf.voters_outgoing.iter().copied().collect(),
            learners: conf.learners.iter().chain(&conf.learners_next).copied().collect(),
            members: BTreeMap::new(),
        };
        membership.members = members.iter().filter(|(id, _)| membership.contains(**id)).map(|(&id, m)| (id, m.clone())).collect();
        membership
    }

    /// Whether a joint change is under way.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` is a voter (of either configuration) or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id) || self.learners.contains(&id)
    }

    /// Every member: voters of both configurations and learners.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.voters.iter().chain(&self.outgoing).chain(&self.learners).copied().collect()
    }

    /// Where member `id` is reached, if known.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.members.get(&id).map(|m| m.address.as_str()).filter(|a| !a.is_empty())
    }
}

/// A change an operator or a joining node asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Node `id`, reached at `address`, joins as a learner and becomes a voter once caught up;
    /// with `replaces`, that voter is removed in the same step.
    Join {
        /// The new node.
        id: NodeId,
        /// Where its peers reach it.
        address: String,
        /// A voter to remove when it is promoted (replacing a dead node).
        replaces: Option<NodeId>,
    },
    /// Node `id` is removed.
    Leave {
        /// The node to remove.
        id: NodeId,
    },
}

/// Why a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader can check a change against its followers; ask it.
    #[error("this node is not the leader (the leader is {})", leader.map_or("not known".to_string(), |l| format!("node {l}")))]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// One change at a time: the cluster is in the middle of one.
    #[error("a membership change is in progress ({what}); try again once it has finished")]
    InProgress {
        /// Which.
        what: String,
    },
    /// The node asked to join is already a voter or learner.
    #[error("node {0} is already a member of the cluster")]
    AlreadyMember(NodeId),
    /// The node asked to leave (or to be replaced) is not a member.
    #[error("node {0} is not a member of the cluster")]
    NotMember(NodeId),
    /// Removing the node would leave a configuration whose reachable voters are not a majority.
    #[error("removing node {id} would leave no quorum: {reachable} of the {remaining} remaining voters are reachable, {needed} are needed")]
    NoQuorum {
        /// The node asked to leave.
        id: NodeId,
        /// Voters after the change.
        remaining: usize,
        /// Of those, how many the leader heard from recently.
        reachable: usize,
        /// A majority of the remaining voters.
        needed: usize,
    },
    /// Raft's node ids start at 1.
    #[error("node id 0 is reserved")]
    ReservedId,
    /// An address must be short enough to travel in a log entry.
    #[error("address of {len} bytes; at most {MAX_ADDRESS_BYTES}")]
    AddressTooLong {
        /// Its length.
        len: usize,
    },
    /// A member's address is `host:port` with a numeric host (or empty, in one process).
    #[error("address {0:?} is not an IP address and port (HOST:PORT)")]
    BadAddress(String),
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Follower {
    /// The highest log index known to be replicated on it.
    pub matched: u64,
    /// Whether the leader heard from it within the last election timeout.
    pub active: bool,
}

/// The leader's view when it checks a change.
pub struct View<'a> {
    /// The leader's id.
    pub leader: NodeId,
    /// The configuration as applied.
    pub membership: &'a Membership,
    /// Whether a configuration change is proposed and not yet applied.
    pub pending: bool,
    /// The commit index.
    pub committed: u64,
    /// Each follower, by id.
    pub followers: &'a dyn Fn(NodeId) -> Follower,
}

impl View<'_> {
    fn reachable(&self, voters: &BTreeSet<NodeId>) -> usize {
        voters.iter().filter(|&&v| v == self.leader || (self.followers)(v).active).count()
    }
}

/// The configuration change that carries out `change`, or why it is refused.
pub fn plan(change: &Change, view: &View<'_>) -> Result<ConfChangeV2, MembershipError> {
    let m = view.membership;
    let busy = if view.pending {
        Some("a configuration change is proposed and not yet applied".to_string())
    } else if m.is_joint() {
        Some("the cluster is in a joint configuration".to_string())
    } else {
        m.learners.first().map(|l| format!("node {l} is joining as a learner"))
    };
    match change {
        Change::Join { id, address, replaces } => {
            if *id == 0 {
                return Err(MembershipError::ReservedId);
            }
            if address.len() > MAX_ADDRESS_BYTES {
                return Err(MembershipError::AddressTooLong { len: address.len() });
            }
            if !address.is_empty() && address.parse::<std::net::SocketAddr>().is_err() {
                return Err(MembershipError::BadAddress(address.clone()));
            }
            if m.contains(*id) {
                return Err(MembershipError::AlreadyMember(*id));
            }
            if let Some(old) = replaces.filter(|old| !m.voters.contains(old)) {
                return Err(MembershipError::NotMember(old));
            }
            if let Some(what) = busy {
                return Err(MembershipError::InProgress { what });
            }
            let context = Context { address: address.clone(), replaces: *replaces }.encode();
            Ok(conf_change(&[(*id, ConfChangeType::AddLearnerNode)], context))
        }
        Change::Leave { id } => {
            if !m.contains(*id) {
                return Err(MembershipError::NotMember(*id));
            }
            // A learner that never catches up must be removable, or it would block every change.
            let abandoning_a_learner = m.learners.contains(id) && !view.pending && !m.is_joint();
            if let (Some(what), false) = (busy, abandoning_a_learner) {
                return Err(MembershipError::InProgress { what });
            }
            let mut remaining = m.voters.clone();
            remaining.remove(id);
            let needed = remaining.len() / 2 + 1;
            let reachable = view.reachable(&remaining);
            if m.voters.contains(id) && (remaining.is_empty() || reachable < needed) {
                return Err(MembershipError::NoQuorum { id: *id, remaining: remaining.len(), reachable, needed });
            }
            Ok(conf_change(&[(*id, ConfChangeType::RemoveNode)], Vec::new()))
        }
    }
}

/// The change that promotes a caught-up learner (removing the voter it replaces, through joint
/// consensus), if one is ready and the result would have a reachable quorum.
pub fn promotion(view: &View<'_>) -> Option<ConfChangeV2> {
    let m = view.membership;
    if view.pending || m.is_joint() {
        return None;
    }
    m.learners.iter().find_map(|&learner| {
        let f = (view.followers)(learner);
        if !f.active || f.matched == 0 || f.matched + PROMOTION_LAG < view.committed {
            return None;
        }
        let mut changes = vec![(learner, ConfChangeType::AddNode)];
        let mut next = m.voters.clone();
        next.insert(learner);
        if let Some(old) = m.members.get(&learner).and_then(|l| l.replaces).filter(|old| m.voters.contains(old)) {
            changes.push((old, ConfChangeType::RemoveNode));
            next.remove(&old);
        }
        (view.reachable(&next) > next.len() / 2).then(|| conf_change(&changes, Vec::new()))
    })
}

/// The change that leaves a joint configuration (raft-rs proposes it by itself, unless the
/// leader that entered it stepped down first).
pub fn leave_joint() -> ConfChangeV2 {
    ConfChangeV2::default()
}

pub(crate) fn conf_change(changes: &[(NodeId, ConfChangeType)], context: Vec<u8>) -> ConfChangeV2 {
    let single = |&(node_id, ty): &(NodeId, ConfChangeType)| {
        let mut single = ConfChangeSingle { node_id, ..Default::default() };
        single.set_change_type(ty);
        single
    };
    let mut cc = ConfChangeV2 { changes: changes.iter().map(single).collect(), context, ..Default::default() };
    cc.set_transition(ConfChangeTransition::Auto);
    cc
}

/// Applies the record-keeping of an applied change to `members`: a learner's address and what it
/// replaces come with it; a promotion clears `replaces`. Members no longer in `conf` are dropped.
pub fn record(members: &mut BTreeMap<NodeId, Member>, cc: &ConfChangeV2, conf: &ConfState) -> Result<(), DecodeError> {
    for single in &cc.changes {
        match single.get_change_type() {
            ConfChangeType::AddLearnerNode => {
                let Context { address, replaces } = Context::decode(&cc.context)?;
                members.insert(single.node_id, Member { address, replaces });
            }
            ConfChangeType::AddNode => {
                members.entry(single.node_id).or_default().replaces = None;
            }
            ConfChangeType::RemoveNode => {}
        }
    }
    let present = Membership::of(conf, &BTreeMap::new());
    members.retain(|id, _| present.contains(*id));
    Ok(())
}

/// What a learner's `ConfChangeV2` carries besides its id.
struct Context {
    address: String,
    replaces: Option<NodeId>,
}

const CONTEXT_FORMAT: u8 = 1;

impl Context {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.address.len());
        out.push(CONTEXT_FORMAT);
        out.extend_from_slice(&self.replaces.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(self.address.len() as u64).to_le_bytes());
        out.extend_from_slice(self.address.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "membership change");
        let format = r.byte()?;
        if format != CONTEXT_FORMAT {
            return Err(r.error(format!("format tag {format}, expected {CONTEXT_FORMAT}")));
        }
        let replaces = Some(r.u64()?).filter(|&id| id != 0);
        let address = String::from_utf8(r.bytes()?).map_err(|_| r.error("address is not UTF-8".into()))?;
        r.end()?;
        Ok(Context { address, replaces })
    }
}

/// Writes `members` into snapshot bytes.
pub(crate) fn encode_members(members: &BTreeMap<NodeId, Member>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(members.len() as u64).to_le_bytes());
    for (id, m) in members {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&m.replaces.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(m.address.len() as u64).to_le_bytes());
        out.extend_from_slice(m.address.as_bytes());
    }
}

/// Reads what [`encode_members`] wrote.
pub(crate) fn decode_members(r: &mut Reader<'_>) -> Result<BTreeMap<NodeId, Member>, DecodeError> {
    let n = r.u64()?;
    let mut members = BTreeMap::new();
    for _ in 0..n {
        let id = r.u64()?;
        let replaces = Some(r.u64()?).filter(|&id| id != 0);
        let address = String::from_utf8(r.bytes()?).map_err(|_| r.error("member address is not UTF-8".into()))?;
        members.insert(id, Member { address, replaces });
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership { voters: [1, 2, 3].into(), ..Membership::default() }
    }

    fn view<'a>(m: &'a Membership, followers: &'a dyn Fn(NodeId) -> Follower) -> View<'a> {
        View { leader: 1, membership: m, pending: false, committed: 100, followers }
    }

    fn all_up(_: NodeId) -> Follower {
        Follower { matched: 100, active: true }
    }

    fn join(id: NodeId) -> Change {
        Change::Join { id, address: format!("127.0.0.{id}:7000"), replaces: None }
    }

    #[test]
    fn a_join_adds_a_learner_with_its_address() {
        let m = three();
        let cc = plan(&join(4), &view(&m, &all_up)).unwrap();
        assert_eq!(cc.changes.len(), 1);
        assert_eq!(cc.changes[0].get_change_type(), ConfChangeType::AddLearnerNode);
        let conf = ConfState { voters: vec![1, 2, 3], learners: vec![4], ..Default::default() };
        let mut members = BTreeMap::new();
        record(&mut members, &cc, &conf).unwrap();
        assert_eq!(members[&4].address, "127.0.0.4:7000");
    }

    #[test]
    fn refusals_name_their_reason() {
        let m = three();
        assert_eq!(plan(&join(2), &view(&m, &all_up)), Err(MembershipError::AlreadyMember(2)));
        assert_eq!(plan(&join(0), &view(&m, &all_up)), Err(MembershipError::ReservedId));
        let nowhere = Change::Join { id: 4, address: "localhost:7000".into(), replaces: None };
        assert!(plan(&nowhere, &view(&m, &all_up)).unwrap_err().to_string().contains("is not an IP address and port"));
        assert_eq!(plan(&Change::Leave { id: 9 }, &view(&m, &all_up)), Err(MembershipError::NotMember(9)));
        let replace = Change::Join { id: 4, address: String::new(), replaces: Some(9) };
        assert_eq!(plan(&replace, &view(&m, &all_up)), Err(MembershipError::NotMember(9)));
        let pending = View { pending: true, ..view(&m, &all_up) };
        assert!(matches!(plan(&join(4), &pending), Err(MembershipError::InProgress { .. })));

        // Node 3 is down: removing node 2 leaves {1, 3}, of which only the leader is reachable.
        let three_down = |id| Follower { matched: 100, active: id != 3 };
        let err = plan(&Change::Leave { id: 2 }, &view(&m, &three_down)).unwrap_err();
        assert_eq!(err, MembershipError::NoQuorum { id: 2, remaining: 2, reachable: 1, needed: 2 });
        assert!(err.to_string().contains("1 of the 2 remaining voters are reachable"), "{err}");
        // Removing the dead node itself is fine.
        assert!(plan(&Change::Leave { id: 3 }, &view(&m, &three_down)).is_ok());
        let alone = Membership { voters: [1].into(), ..Membership::default() };
        assert!(matches!(plan(&Change::Leave { id: 1 }, &view(&alone, &all_up)), Err(MembershipError::NoQuorum { remaining: 0, .. })));
    }

    #[test]
    fn a_learner_blocks_other_changes_but_can_itself_be_abandoned() {
        let m = Membership { learners: [4].into(), ..three() };
        assert!(matches!(plan(&join(5), &view(&m, &all_up)), Err(MembershipError::InProgress { .. })));
        assert!(matches!(plan(&Change::Leave { id: 2 }, &view(&m, &all_up)), Err(MembershipError::InProgress { .. })));
        assert!(plan(&Change::Leave { id: 4 }, &view(&m, &all_up)).is_ok());
    }

    #[test]
    fn a_learner_is_promoted_once_caught_up_replacing_through_joint_consensus() {
        let mut m = Membership { learners: [4].into(), ..three() };
        m.members.insert(4, Member { address: String::new(), replaces: Some(3) });
        let behind = |id| Follower { matched: if id == 4 { 10 } else { 100 }, active: true };
        assert_eq!(promotion(&view(&m, &behind)), None, "90 entries behind");
        let cc = promotion(&view(&m, &all_up)).expect("caught up");
        let kinds: Vec<_> = cc.changes.iter().map(|c| (c.node_id, c.get_change_type())).collect();
        assert_eq!(kinds, [(4, ConfChangeType::AddNode), (3, ConfChangeType::RemoveNode)]);
        assert_eq!(cc.enter_joint(), Some(true), "two voters change: joint, left automatically");
        // {1, 2, 4} needs two reachable: not if 2 and 4 are both silent.
        let silent = |id| Follower { matched: 100, active: id != 2 && id != 4 };
        assert_eq!(promotion(&view(&m, &silent)), None);
    }

    #[test]
    fn contexts_and_member_lists_round_trip_and_garbage_is_named() {
        let ctx = Context { address: "a:1".into(), replaces: Some(7) }.encode();
        let back = Context::decode(&ctx).unwrap();
        assert_eq!((back.address.as_str(), back.replaces), ("a:1", Some(7)));
        let err = Context::decode(&ctx[..5]).err().unwrap();
        assert!(err.to_string().contains("membership change"), "{err}");
        let members: BTreeMap<_, _> = [(1, Member { address: "x".into(), replaces: None }), (4, Member { address: String::new(), replaces: Some(2) })].into();
        let mut out = Vec::new();
        encode_members(&members, &mut out);
        assert_eq!(decode_members(&mut Reader::new(&out, "members")).unwrap(), members);
    }
}
