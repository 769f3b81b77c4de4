//! The wire format: how frames are delimited, how a connection opens, and how each kind of
//! message is encoded.
//!
//! A frame is a 4-byte big-endian length and that many bytes, at most
//! [`DEFAULT_MAX_FRAME_BYTES`] unless configured otherwise; a longer claim is refused before
//! anything is allocated for it. The first frame of a connection is a [`Hello`]: [`MAGIC`], the
//! protocol version as two big-endian bytes, then the hello itself, so that a peer of any version
//! can read the version and refuse with a message naming both. Every later frame is one tag byte
//! and a body: Raft messages in raft-rs's own protobuf encoding, everything else in postcard.

use cluster::{NodeId, RaftMessage};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use actors::managers::failure_detector::{Heartbeat, Vitals};

/// The protocol this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The first bytes of every connection.
pub const MAGIC: &[u8; 4] = b"ERGN";

/// The largest frame accepted unless configured otherwise.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 << 20;

/// The length-prefixed framing, refusing frames over `max_frame_bytes`.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_type::<u32>().max_frame_length(max_frame_bytes).new_codec()
}

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// The connection does not start with ergon's magic bytes.
    #[error("not an ergon connection (its first frame does not start with {MAGIC:?})")]
    NotErgon,
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs} (peer) is not {ours} (this node)")]
    Version {
        /// The peer's.
        theirs: u16,
        /// This build's.
        ours: u16,
    },
    /// A frame's body does not decode as what its tag says.
    #[error("undecodable {what}: {reason}")]
    Undecodable {
        /// What it should have been.
        what: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A frame whose tag names no kind of message.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A frame that decodes but says something impossible.
    #[error("{0}")]
    Invalid(String),
}

fn undecodable(what: &'static str) -> impl FnOnce(postcard::Error) -> WireError {
    move |e| WireError::Undecodable { what, reason: e.to_string() }
}

/// The two connections between a pair of nodes: control traffic never waits behind a large
/// append or a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lane {
    /// Heartbeats (the failure detector's and Raft's), votes and load adjustments.
    Control,
    /// Raft's appends, their answers, and snapshots.
    Data,
}

impl Lane {
    /// Both lanes.
    pub const ALL: [Lane; 2] = [Lane::Control, Lane::Data];

    /// Its index, for per-lane arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Who opens a connection, and for what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A member of the cluster, for one lane to the node `to`.
    Node {
        /// The dialing node; its certificate must name it.
        id: NodeId,
        /// How many times it has started: a higher one means it restarted.
        incarnation: u64,
        /// The lane this connection carries.
        lane: Lane,
        /// The node it means to reach.
        to: NodeId,
    },
    /// A caller of gated operations.
    Client {
        /// The principal it claims, proven by its certificate (`None` with a token).
        principal: Option<String>,
        /// A capability token signed for the cluster, instead of a certificate.
        token: Option<Vec<u8>>,
    },
}

/// The first frame of every connection, from the side that dialed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster it belongs to (or means to call).
    pub cluster: String,
    /// Who it is.
    pub role: Role,
}

/// The accepting side's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    /// Accepted: the acceptor's id and incarnation.
    Accepted {
        /// The acceptor.
        id: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// Refused, with the reason, before the connection closes.
    Refused(String),
}

/// Encodes the hello frame: magic, version, hello.
pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut frame = MAGIC.to_vec();
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    postcard::to_extend(hello, frame).expect("writing to a Vec cannot fail")
}

/// Decodes a hello frame.
pub fn decode_hello(frame: &[u8]) -> Result<Hello, WireError> {
    let rest = frame.strip_prefix(MAGIC).ok_or(WireError::NotErgon)?;
    let (version, body) = rest.split_at_checked(2).ok_or(WireError::NotErgon)?;
    let theirs = u16::from_be_bytes([version[0], version[1]]);
    if theirs != PROTOCOL_VERSION {
        return Err(WireError::Version { theirs, ours: PROTOCOL_VERSION });
    }
    postcard::from_bytes(body).map_err(undecodable("hello"))
}

/// Encodes an answer to a hello.
pub fn encode_welcome(welcome: &Welcome) -> Vec<u8> {
    postcard::to_stdvec(welcome).expect("writing to a Vec cannot fail")
}

/// Decodes an answer to a hello.
pub fn decode_welcome(frame: &[u8]) -> Result<Welcome, WireError> {
    postcard::from_bytes(frame).map_err(undecodable("welcome"))
}

/// What travels between two members, after the hello.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // as `Envelope`: Raft messages are the common case
pub enum PeerFrame {
    /// Raft's own traffic.
    Raft(RaftMessage),
    /// A failure detector's beat.
    Heartbeat(Heartbeat),
    /// A load distributor's share for the receiving node's worker pool. The sender's authority
    /// does not travel: the receiver acts for the authenticated peer with what it grants members.
    Adjust {
        /// The distribution.
        distribution: String,
        /// The load to take.
        share: f64,
    },
}

const RAFT: u8 = 1;
const HEARTBEAT: u8 = 2;
const ADJUST: u8 = 3;

#[derive(Serialize, Deserialize)]
struct WireAdjust {
    distribution: String,
    share: f64,
}

impl PeerFrame {
    /// The lane it travels on.
    pub fn lane(&self) -> Lane {
        use cluster::replica::MessageType::*;
        match self {
            PeerFrame::Raft(m) => match m.get_msg_type() {
                MsgAppend | MsgAppendResponse | MsgSnapshot => Lane::Data,
                _ => Lane::Control,
            },
            PeerFrame::Heartbeat(_) | PeerFrame::Adjust { .. } => Lane::Control,
        }
    }

    /// The node it claims to come from, where it names one.
    pub fn claimed_sender(&self) -> Option<NodeId> {
        match self {
            PeerFrame::Raft(m) => Some(m.from),
            PeerFrame::Heartbeat(h) => Some(h.from),
            PeerFrame::Adjust { .. } => None,
        }
    }

    /// Its encoding: a tag and a body.
    pub fn encode(&self) -> Vec<u8> {
        let frame = match self {
            PeerFrame::Raft(m) => {
                let mut frame = Vec::with_capacity(1 + m.encoded_len());
                frame.push(RAFT);
                m.encode(&mut frame).expect("a Vec grows as needed");
                return frame;
            }
            PeerFrame::Heartbeat(h) => postcard::to_extend(h, vec![HEARTBEAT]),
            PeerFrame::Adjust { distribution, share } => {
                postcard::to_extend(&WireAdjust { distribution: distribution.clone(), share: *share }, vec![ADJUST])
            }
        };
        frame.expect("writing to a Vec cannot fail")
    }

    /// Decodes a frame, refusing numbers no honest peer sends.
    pub fn decode(frame: &[u8]) -> Result<Self, WireError> {
        let (&tag, body) = frame.split_first().ok_or(WireError::Invalid("empty frame".into()))?;
        match tag {
            RAFT => RaftMessage::decode(body)
                .map(PeerFrame::Raft)
                .map_err(|e| WireError::Undecodable { what: "raft message", reason: e.to_string() }),
            HEARTBEAT => {
                let beat: Heartbeat = postcard::from_bytes(body).map_err(undecodable("heartbeat"))?;
                let Vitals { capacity, remaining_j, .. } = beat.vitals;
                if !(capacity.is_finite() && capacity >= 0.0 && remaining_j.is_finite()) {
                    return Err(WireError::Invalid(format!("heartbeat with capacity {capacity} and {remaining_j} J left")));
                }
                Ok(PeerFrame::Heartbeat(beat))
            }
            ADJUST => {
                let WireAdjust { distribution, share } = postcard::from_bytes(body).map_err(undecodable("adjustment"))?;
                if !(share.is_finite() && share >= 0.0) {
                    return Err(WireError::Invalid(format!("adjustment with share {share}")));
                }
                Ok(PeerFrame::Adjust { distribution, share })
            }
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello { cluster: "test".into(), role: Role::Node { id: 3, incarnation: 7, lane: Lane::Data, to: 1 } }
    }

    #[test]
    fn every_frame_decodes_to_what_was_encoded() {
        assert_eq!(decode_hello(&encode_hello(&hello())), Ok(hello()));
        let welcome = Welcome::Accepted { id: 1, incarnation: 2 };
        assert_eq!(decode_welcome(&encode_welcome(&welcome)), Ok(welcome));
        let mut raft = RaftMessage { from: 3, to: 1, term: 9, ..Default::default() };
        raft.set_msg_type(cluster::replica::MessageType::MsgAppend);
        let frames = [
            PeerFrame::Raft(raft),
            PeerFrame::Heartbeat(Heartbeat { from: 3, vitals: Vitals { version: 4, leader: Some(1), capacity: 2.0, remaining_j: 9.5 } }),
            PeerFrame::Adjust { distribution: "d1".into(), share: 0.25 },
        ];
        for frame in frames {
            assert_eq!(PeerFrame::decode(&frame.encode()).as_ref(), Ok(&frame));
        }
    }

    #[test]
    fn a_hello_of_another_version_is_refused_naming_both() {
        let mut frame = encode_hello(&hello());
        frame[4..6].copy_from_slice(&2u16.to_be_bytes());
        let err = decode_hello(&frame).unwrap_err();
        assert_eq!(err.to_string(), "protocol version 2 (peer) is not 1 (this node)");
        assert_eq!(decode_hello(b"GET / HTTP/1.1"), Err(WireError::NotErgon));
        assert_eq!(decode_hello(b"ERG"), Err(WireError::NotErgon));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        // Every prefix of every valid frame, and a spread of arbitrary bytes.
        let valid = [
            encode_hello(&hello()),
            PeerFrame::Heartbeat(Heartbeat { from: 3, vitals: Vitals::default() }).encode(),
            PeerFrame::Adjust { distribution: "d".into(), share: 1.0 }.encode(),
        ];
        for frame in &valid {
            for cut in 0..frame.len() {
                let _ = decode_hello(&frame[..cut]);
                let _ = PeerFrame::decode(&frame[..cut]);
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_hello(&bytes);
            let _ = PeerFrame::decode(&bytes);
            let _ = decode_welcome(&bytes);
        }
        assert_eq!(PeerFrame::decode(&[]), Err(WireError::Invalid("empty frame".into())));
        assert_eq!(PeerFrame::decode(&[99]), Err(WireError::UnknownKind(99)));
    }

    #[test]
    fn impossible_numbers_are_refused() {
        let nan = PeerFrame::Adjust { distribution: "d".into(), share: f64::NAN }.encode();
        assert!(matches!(PeerFrame::decode(&nan), Err(WireError::Invalid(_))));
        let beat = Heartbeat { from: 1, vitals: Vitals { capacity: f64::INFINITY, ..Vitals::default() } };
        assert!(matches!(PeerFrame::decode(&PeerFrame::Heartbeat(beat).encode()), Err(WireError::Invalid(_))));
    }

    #[test]
    fn votes_and_heartbeats_travel_apart_from_appends() {
        use cluster::replica::MessageType::*;
        let of = |t| {
            let mut m = RaftMessage::default();
            m.set_msg_type(t);
            PeerFrame::Raft(m).lane()
        };
        assert_eq!(of(MsgHeartbeat), Lane::Control);
        assert_eq!(of(MsgRequestVote), Lane::Control);
        assert_eq!(of(MsgAppend), Lane::Data);
        assert_eq!(of(MsgSnapshot), Lane::Data);
    }
}
