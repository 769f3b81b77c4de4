//! The communication manager: channels, subscriptions and broadcasts with delivery
//! confirmation.
//!
//! A broadcast is delivered into each subscriber's mailbox without waiting for it to be handled.
//! A subscriber whose mailbox is full does not get the message, and the broadcast says so
//! (`BroadcastFailed`, naming it); one whose mailbox is closed is removed from the channel
//! (`ChannelClosed`). Nothing is dropped silently.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::SendError;
use actix::{Message, Recipient};
use security::SecurityContext;
use serde::Serialize;

use crate::gate::Gate;
use crate::{gate_error, gated, Environment};

/// The scope communication managers act in.
pub const SCOPE: &str = "communication_management";

/// Why a communication request failed, besides the gate's refusals; `InvalidRequest` also covers
/// a subscription that does not exist, or exists already.
#[gate_error(InvalidCapabilities, InvalidScope)]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommunicationError {
    /// Some subscribers could not take the message (their mailbox is full).
    #[error("broadcast failed: {0}")]
    BroadcastFailed(String),
    /// Some subscribers have stopped; they were removed from the channel.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
}

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
#[derive(Clone)]
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
#[derive(Debug, Clone)]
pub struct Unsubscribe {
    /// Who asks.
    pub ctx: SecurityContext,
    /// The channel.
    pub channel: String,
    /// The subscriber's name.
    pub subscriber: String,
}

/// Sends content to every subscriber of a channel. Requires `BroadcastManagement`.
#[derive(Debug, Clone)]
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

/// The communication manager of one node.
pub struct CommunicationManager {
    gate: Gate,
    channels: BTreeMap<String, BTreeMap<String, Recipient<Delivery>>>,
    broadcasts: u64,
}

impl CommunicationManager {
    /// The communication manager of node `node`, named `communication-manager/<node>`.
    pub fn new(env: &Environment, node: &str) -> Self {
        let config = &env.config().communication_manager;
        CommunicationManager {
            gate: env.gate::<Self>(&format!("communication-manager/{node}"), config),
            channels: BTreeMap::new(),
            broadcasts: 0,
        }
    }
}

/// The communication manager's operations: a broadcast costs 5 J by default, a subscription or
/// its removal 1 J.
#[gated(error = CommunicationError, scope = SCOPE, budget = 1000.0, grants = [BroadcastManagement, EnergyManagement])]
impl CommunicationManager {
    /// Subscribes an endpoint to a channel, creating the channel if needed.
    #[operation(requires = [BroadcastManagement], cost = 1.0, resource = &msg.channel, validate = subscription(rules, &msg.channel, &msg.subscriber))]
    fn subscribe(&mut self, msg: Subscribe) -> Result<usize, CommunicationError> {
        let subscribers = self.channels.entry(msg.channel.clone()).or_default();
        if subscribers.contains_key(&msg.subscriber) {
            let reason = format!("{} is already subscribed to {}", msg.subscriber, msg.channel);
            return Err(CommunicationError::InvalidRequest(reason));
        }
        subscribers.insert(msg.subscriber, msg.endpoint);
        Ok(subscribers.len())
    }

    /// Removes a subscription.
    #[operation(requires = [BroadcastManagement], cost = 1.0, resource = &msg.channel, validate = subscription(rules, &msg.channel, &msg.subscriber))]
    fn unsubscribe(&mut self, msg: Unsubscribe) -> Result<usize, CommunicationError> {
        let subscribers = self.channels.get_mut(&msg.channel);
        let Some(subscribers) = subscribers.filter(|s| s.contains_key(&msg.subscriber)) else {
            let reason = format!("{} is not subscribed to {}", msg.subscriber, msg.channel);
            return Err(CommunicationError::InvalidRequest(reason));
        };
        subscribers.remove(&msg.subscriber);
        let left = subscribers.len();
        if left == 0 {
            self.channels.remove(&msg.channel);
        }
        Ok(left)
    }

    /// Delivers content into every subscriber's mailbox, without waiting for it to be handled.
    #[operation(
        requires = [BroadcastManagement],
        cost = 5.0,
        resource = &msg.channel,
        validate = {
            rules.id("channel", &msg.channel)?;
            Ok(rules.payload("content", msg.content.len())?)
        }
    )]
    fn broadcast(&mut self, msg: Broadcast) -> Result<BroadcastReceipt, CommunicationError> {
        self.broadcasts += 1;
        let delivery = Delivery {
            channel: Arc::from(msg.channel.as_str()),
            seq: self.broadcasts,
            from: msg.ctx.principal().shared(),
            content: Arc::from(msg.content),
        };
        let subscribers = self.channels.entry(msg.channel.clone()).or_default();
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
    }
}

/// A subscription names a channel and a subscriber.
fn subscription(rules: &crate::gate::Rules<'_>, channel: &str, subscriber: &str) -> Result<(), CommunicationError> {
    rules.id("channel", channel)?;
    Ok(rules.id("subscriber", subscriber)?)
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "no one".to_owned()
    } else {
        names.join(", ")
    }
}
