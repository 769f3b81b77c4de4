//! What a gate is configured with: an actor's budget, grants and base costs, and the size limits
//! validation applies. The actor declares the defaults ([`GatedActor::default_config`]); the
//! configuration file overrides what it names.

use std::collections::BTreeMap;

use energy::{Joules, Watts};
use security::CapSet;
use serde::{Deserialize, Serialize};

use super::GatedActor;

/// One actor's budget, grants and costs, and its own settings (`S`), all in one section of the
/// configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorConfig<S = NoSettings> {
    /// The initial (and, with a refill, the maximum) budget.
    pub budget_joules: Joules,
    /// Refill rate: with it the budget is a power cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill_watts: Option<Watts>,
    /// Capabilities the actor holds, and so may exercise and delegate.
    pub grants: CapSet,
    /// Base cost of each operation.
    pub costs: BTreeMap<String, Joules>,
    /// Messages the actor's mailbox holds before senders wait (actix's default is 16).
    pub mailbox_capacity: usize,
    /// How long the actor waits for a peer's reply.
    pub reply_timeout_ms: u64,
    /// What only this actor has (the detector's heartbeat settings, the pool's size).
    #[serde(flatten)]
    pub settings: S,
}

/// The settings of an actor that has none of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoSettings {}

impl<S: Default> ActorConfig<S> {
    /// The defaults `A` declares: its budget and grants, and each operation's declared cost.
    pub fn declared<A: GatedActor>(budget_joules: f64, grants: CapSet, mailbox_capacity: usize, reply_timeout_ms: u64) -> Self {
        ActorConfig {
            budget_joules: Joules::new(budget_joules).unwrap_or(Joules::ZERO),
            refill_watts: None,
            grants,
            costs: A::OPERATIONS.iter().map(|op| (op.name.to_owned(), op.base())).collect(),
            mailbox_capacity,
            reply_timeout_ms,
            settings: S::default(),
        }
    }
}

/// Size limits that validation applies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest identifier (node, channel, subscriber), in bytes.
    pub max_id_bytes: usize,
    /// Largest message payload (and value of the replicated map), in bytes.
    pub max_payload_bytes: usize,
    /// Longest key of the replicated map, in bytes.
    #[serde(default = "default_max_key_bytes")]
    pub max_key_bytes: usize,
    /// Refusals of one principal an actor writes to the audit log per second; the rest are
    /// counted, and one entry says how many were left out.
    pub max_refusals_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_id_bytes: 128, max_payload_bytes: 64 << 10, max_key_bytes: default_max_key_bytes(), max_refusals_per_second: 100 }
    }
}

fn default_max_key_bytes() -> usize {
    1024
}
