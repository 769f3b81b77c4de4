//! The communication manager: channels, subscriptions and broadcasts with delivery
//! confirmation (the tutorial's section 1.2).
//!
//! A broadcast is delivered into each subscriber's mailbox without waiting for it to be handled.
//! A subscriber whose mailbox is full does not get the message, and the broadcast says so
//! (`BroadcastFailed`, naming it); one whose mailbox is closed is removed from the channel
//! (`ChannelClosed`). Nothing is dropped silently.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::SendError;
use actix::{Context, Handler, Message, Recipient};
use energy::Joules;
use security::{CapSet, Capability, SecurityContext};
use serde::Serialize;

use crate::gate::{self, Gate, Operation, Rules};
use crate::Environment;

/// The scope communication managers act in.
pub const SCOPE: &str = "communication_management";

/// Why a communication request failed (the tutorial's `CommunicationError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, strum::IntoStaticStr)]
pub enum CommunicationError {
    /// The request is malformed, or names a subscription that does not exist.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Some subscribers could not take the message (their mailbox is full).
    #[error("broadcast failed: {0}")]
    BroadcastFailed(String),
    /// Some subscribers have stopped; they were removed from the channel.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
    /// The requester or this manager lacks a required capability.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The budget cannot cover the request.
    #[error("insufficient energy: needs {needed}, {available} available")]
    InsufficientEnergy {
        /// Estimated cost.
        needed: Joules,
        /// Budget available.
        available: Joules,
    },
    /// The context presents capabilities its principal does not hold.
    #[error("invalid capabilities: {0}")]
    InvalidCapabilities(String),
    /// The context's scope does not cover the operation.
    #[error("invalid scope: {0}")]
    InvalidScope(String),
}

crate::gate_error!(CommunicationError, InvalidCapabilities, InvalidScope);

/// A message delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "()")]
pub struct Delivery {
    /// The channel.
    pub channel: Arc<str>,
    /// The broadcast's number on this manager, from 1.
    pub seq: u64,
    /// Who broadcast it.
    pub from: Arc<str>,
    /// The content.
    pub content: Arc<str>,
}

/// Subscribes an endpoint to a channel, creating the channel if needed. Requires
/// `BroadcastManagement`; answers the channel's number of subscribers.
#[derive(Clone, Message)]
#[rtype(result = "Result<usize, CommunicationError>")]
pub struct Subscribe {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The channel.
    pub channel: String,
    /// The subscriber's name, unique within the channel.
    pub subscriber: String,
    /// Where deliveries go.
    pub endpoint: Recipient<Delivery>,
}

/// Removes a subscription. Requires `BroadcastManagement`; answers the channel's number of
/// subscribers.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<usize, CommunicationError>")]
pub struct Unsubscribe {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The channel.
    pub channel: String,
    /// The subscriber's name.
    pub subscriber: String,
}

/// Sends content to every subscriber of a channel. Requires `BroadcastManagement`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BroadcastReceipt, CommunicationError>")]
pub struct Broadcast {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The channel.
    pub channel: String,
    /// The content.
    pub content: String,
}

/// Proof of delivery: which subscribers took the message into their mailbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastReceipt {
    /// The channel.
    pub channel: String,
    /// The broadcast's number.
    pub seq: u64,
    /// Subscribers that received it.
    pub delivered: Vec<String>,
}

const BROADCAST_MANAGEMENT: CapSet = CapSet::of(&[Capability::BroadcastManagement]);

impl Operation for Subscribe {
    type Output = usize;
    type Error = CommunicationError;
    const NAME: &'static str = "subscribe";
    const REQUIRES: CapSet = BROADCAST_MANAGEMENT;

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.channel
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), CommunicationError> {
        rules.id("channel", &self.channel).map_err(CommunicationError::InvalidRequest)?;
        rules.id("subscriber", &self.subscriber).map_err(CommunicationError::InvalidRequest)
    }
}

impl Operation for Unsubscribe {
    type Output = usize;
    type Error = CommunicationError;
    const NAME: &'static str = "unsubscribe";
    const REQUIRES: CapSet = BROADCAST_MANAGEMENT;

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.channel
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), CommunicationError> {
        rules.id("channel", &self.channel).map_err(CommunicationError::InvalidRequest)?;
        rules.id("subscriber", &self.subscriber).map_err(CommunicationError::InvalidRequest)
    }
}

impl Operation for Broadcast {
    type Output = BroadcastReceipt;
    type Error = CommunicationError;
    const NAME: &'static str = "broadcast";
    const REQUIRES: CapSet = BROADCAST_MANAGEMENT;

    fn context(&self) -> &SecurityContext {
        &self.ctx
    }

    fn resource(&self) -> &str {
        &self.channel
    }

    fn validate(&self, rules: &Rules<'_>) -> Result<(), CommunicationError> {
        rules.id("channel", &self.channel).map_err(CommunicationError::InvalidRequest)?;
        rules.payload("content", self.content.len()).map_err(CommunicationError::InvalidRequest)
    }
}

/// The communication manager of one node.
pub struct CommunicationManager {
    gate: Gate,
    channels: BTreeMap<String, BTreeMap<String, Recipient<Delivery>>>,
    broadcasts: u64,
}

impl CommunicationManager {
    /// Operations and their default base costs: `broadcast` is the tutorial's 5 J; the tutorial
    /// does not charge subscriptions, ergon charges them 1 J.
    pub const DEFAULT_COSTS: &'static [(&'static str, f64)] = &[
        (Broadcast::NAME, 5.0),
        (Subscribe::NAME, 1.0),
        (Unsubscribe::NAME, 1.0),
        ("top_up", 0.0),
        ("status", 0.0),
    ];

    /// The communication manager of node `node`, named `communication-manager/<node>`.
    pub fn new(env: &Environment, node: &str) -> Self {
        let config = &env.config().communication_manager;
        CommunicationManager {
            gate: env.gate(&format!("communication-manager/{node}"), SCOPE, config),
            channels: BTreeMap::new(),
            broadcasts: 0,
        }
    }
}

crate::gated_actor!(CommunicationManager);

impl Handler<Subscribe> for CommunicationManager {
    type Result = Result<usize, CommunicationError>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |actor, msg| {
            let subscribers = actor.channels.entry(msg.channel.clone()).or_default();
            if subscribers.contains_key(&msg.subscriber) {
                let reason = format!("{} is already subscribed to {}", msg.subscriber, msg.channel);
                return Err(CommunicationError::InvalidRequest(reason));
            }
            subscribers.insert(msg.subscriber, msg.endpoint);
            Ok(subscribers.len())
        })
    }
}

impl Handler<Unsubscribe> for CommunicationManager {
    type Result = Result<usize, CommunicationError>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |actor, msg| {
            let subscribers = actor.channels.get_mut(&msg.channel);
            let Some(subscribers) = subscribers.filter(|s| s.contains_key(&msg.subscriber)) else {
                let reason = format!("{} is not subscribed to {}", msg.subscriber, msg.channel);
                return Err(CommunicationError::InvalidRequest(reason));
            };
            subscribers.remove(&msg.subscriber);
            let left = subscribers.len();
            if left == 0 {
                actor.channels.remove(&msg.channel);
            }
            Ok(left)
        })
    }
}

impl Handler<Broadcast> for CommunicationManager {
    type Result = Result<BroadcastReceipt, CommunicationError>;

    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) -> Self::Result {
        gate::run(self, msg, |actor, msg| {
            actor.broadcasts += 1;
            let delivery = Delivery {
                channel: Arc::from(msg.channel.as_str()),
                seq: actor.broadcasts,
                from: msg.ctx.principal.shared(),
                content: Arc::from(msg.content),
            };
            let subscribers = actor.channels.entry(msg.channel.clone()).or_default();
            let (mut delivered, mut full, mut closed) = (Vec::new(), Vec::new(), Vec::new());
            for (name, endpoint) in subscribers.iter() {
                match endpoint.try_send(delivery.clone()) {
                    Ok(()) => delivered.push(name.clone()),
                    Err(SendError::Full(_)) => full.push(name.clone()),
                    Err(SendError::Closed(_)) => closed.push(name.clone()),
                }
            }
            for name in &closed {
                subscribers.remove(name);
            }
            let seq = delivery.seq;
            if !closed.is_empty() {
                return Err(CommunicationError::ChannelClosed(format!(
                    "broadcast {seq} on {}: subscriber {} has stopped (mailbox closed) and was removed; delivered to {}",
                    msg.channel,
                    closed.join(", "),
                    listed(&delivered)
                )));
            }
            if !full.is_empty() {
                return Err(CommunicationError::BroadcastFailed(format!(
                    "broadcast {seq} on {}: mailbox of {} is full, not delivered there; delivered to {}",
                    msg.channel,
                    full.join(", "),
                    listed(&delivered)
                )));
            }
            Ok(BroadcastReceipt { channel: msg.channel, seq, delivered })
        })
    }
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "no one".to_owned()
    } else {
        names.join(", ")
    }
}

crate::common_handlers!(CommunicationManager, CommunicationError);
