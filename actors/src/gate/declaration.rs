//! What an actor declares to the gate: its operations (written by [`gated`](crate::gated)), and
//! what validation may consult.

use actix::{Actor, Context, Message, ResponseActFuture};
use energy::Joules;
use security::{CapSet, Capability, Scope, SecurityContext};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ActorConfig, Gate, GateError, Limits};

/// A request to a gated actor: what it is called, what it needs, and what makes it valid.
///
/// [`gated`](crate::gated) implements it for each operation an actor declares.
pub trait Operation: Message<Result = Result<Self::Output, Self::Error>> + 'static {
    /// What a successful run returns.
    type Output: 'static;
    /// The actor's typed error.
    type Error: GateError;
    /// The operation's name in configuration, scopes and the audit log: the snake_case of the
    /// message type (`join` for `Join`).
    const NAME: &'static str;
    /// Where the operation stands in its actor's [`GatedActor::OPERATIONS`].
    const INDEX: usize;
    /// Capabilities that both the requester and the actor must hold.
    const REQUIRES: CapSet;

    /// The authority the request carries.
    fn context(&self) -> &SecurityContext;
    /// What the request is about, for the audit log (a node id, a channel).
    fn resource(&self) -> &str;
    /// Checks the request itself: ids, sizes, numbers, what it asks to be granted.
    fn validate(&self, _rules: &Rules<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What an asynchronous operation's body returns: a future on the actor that ends in the
/// operation's result.
pub type Pending<A, T, E> = ResponseActFuture<A, Result<T, E>>;

/// One operation in an actor's table: its name, default base cost and required capabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Declared {
    /// The operation's name.
    pub name: &'static str,
    /// Its default base cost in joules (checked finite and non-negative when it was declared).
    pub cost: f64,
    /// What it requires.
    pub requires: CapSet,
}

impl Declared {
    /// [`TopUp`](super::TopUp), first in every actor's table.
    pub const TOP_UP: Declared = Declared { name: "top_up", cost: 0.0, requires: CapSet::of(&[Capability::EnergyManagement]) };
    /// [`Status`](super::Status), second in every actor's table.
    pub const STATUS: Declared = Declared { name: "status", cost: 0.0, requires: CapSet::of(&[Capability::EnergyManagement]) };

    /// How many operations every table starts with ([`TOP_UP`](Self::TOP_UP) and
    /// [`STATUS`](Self::STATUS)). They are charged what they cost, but never refused for lack of
    /// energy: an exhausted budget can always be read and refilled.
    pub const COMMON: usize = 2;

    /// The default base cost.
    pub fn base(&self) -> Joules {
        Joules::new(self.cost).unwrap_or(Joules::ZERO)
    }
}

/// An actor whose messages pass the gate. [`gated`](crate::gated) implements it.
pub trait GatedActor: Actor<Context = Context<Self>> {
    /// The actor's own settings, beside its budget in its configuration section.
    type Settings: Default + Clone + Serialize + DeserializeOwned;
    /// The scope the actor acts in (`node_management`).
    const SCOPE: &'static str;
    /// Every operation the actor answers, [`TopUp`](super::TopUp) and [`Status`](super::Status)
    /// first, in [`Operation::INDEX`] order.
    const OPERATIONS: &'static [Declared];

    /// The actor's gate.
    fn gate(&mut self) -> &mut Gate;
    /// The actor's gate, to read.
    fn gate_ref(&self) -> &Gate;
    /// The configuration the actor declares: its budget, grants, costs and timeouts.
    fn default_config() -> ActorConfig<Self::Settings>;
}

/// A request that validation refused, and why. `?` turns it into the actor's `InvalidRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// What validation may consult.
pub struct Rules<'a> {
    /// Size limits.
    pub limits: &'a Limits,
    /// The capabilities the actor holds (and so may delegate).
    pub actor_grants: CapSet,
    /// The actor's scope.
    pub actor_scope: &'a Scope,
}

impl Rules<'_> {
    /// Checks an identifier: non-empty, at most `limits.max_id_bytes`, of `A-Z a-z 0-9 . _ - : /`.
    pub fn id(&self, what: &str, value: &str) -> Result<(), Invalid> {
        if value.is_empty() {
            return Err(Invalid(format!("{what} is empty")));
        }
        if value.len() > self.limits.max_id_bytes {
            return Err(Invalid(format!("{what} is {} bytes long; the limit is {}", value.len(), self.limits.max_id_bytes)));
        }
        match value.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-:/".contains(*c))) {
            Some(c) => Err(Invalid(format!("{what} {value:?} contains {c:?}; use letters, digits and . _ - : /"))),
            None => Ok(()),
        }
    }

    /// Checks a payload's size against `limits.max_payload_bytes`.
    pub fn payload(&self, what: &str, len: usize) -> Result<(), Invalid> {
        if len > self.limits.max_payload_bytes {
            return Err(Invalid(format!("{what} is {len} bytes; the limit is {}", self.limits.max_payload_bytes)));
        }
        Ok(())
    }

    /// Checks a key of the replicated map: not empty, at most `limits.max_key_bytes`.
    pub fn key(&self, key: &[u8]) -> Result<(), Invalid> {
        if key.is_empty() {
            return Err(Invalid("the key is empty".into()));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(Invalid(format!("the key is {} bytes; the limit is {} (limits.max_key_bytes)", key.len(), self.limits.max_key_bytes)));
        }
        Ok(())
    }

    /// Checks that a number is finite and not negative.
    pub fn non_negative(&self, what: &str, value: f64) -> Result<(), Invalid> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(Invalid(format!("{what} {value} is not a finite, non-negative number")));
        }
        Ok(())
    }
}
