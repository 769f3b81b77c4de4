//! One lane to one peer, decided without I/O: when to dial, how long to wait after a failure, and
//! which of two connections to keep.
//!
//! Both nodes of a pair dial each other when they have no connection, so that either can restore
//! it; when both dials succeed, both ends keep the one dialed by the lower node id and close the
//! other, so they agree without talking about it. A connection from a higher incarnation of the
//! peer (it restarted) replaces whatever was there, with nothing of the old one's queue; one from a
//! lower incarnation is a process that should not exist any more and is refused.

use std::time::Duration;

use cluster::NodeId;
use rand::Rng;

/// Reconnection delays: exponential from `initial` to `max`, each drawn uniformly from its upper
/// half so that nodes that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The delay after `failures` failed attempts in a row.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.initial.saturating_mul(1u32 << failures.min(16)).min(self.max);
        rng.gen_range(ceiling / 2..=ceiling)
    }
}

/// A connection that has passed its handshake, offered to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The transport's number for it.
    pub id: u64,
    /// Which end dialed.
    pub dialer: NodeId,
    /// The peer's incarnation, from its hello or welcome.
    pub incarnation: u64,
}

/// What to do with an offered connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Use it, and close the connection it replaces, if any.
    Install {
        /// The connection to close.
        replaces: Option<u64>,
    },
    /// Close it, for this reason.
    Refuse(String),
}

/// The state of one lane to one peer.
#[derive(Debug)]
pub struct Link {
    me: NodeId,
    peer: NodeId,
    backoff: Backoff,
    current: Option<Offer>,
    dialing: bool,
    failures: u32,
    newest_incarnation: u64,
    redial: Duration,
}

impl Link {
    /// A lane from `me` to `peer`, with no connection yet.
    pub fn new(me: NodeId, peer: NodeId, backoff: Backoff) -> Self {
        Link { me, peer, backoff, current: None, dialing: false, failures: 0, newest_incarnation: 0, redial: Duration::ZERO }
    }

    /// The connection in use.
    pub fn current(&self) -> Option<Offer> {
        self.current
    }

    /// Whether to dial now: no connection, and no dial under way. Marks a dial under way.
    pub fn start_dial(&mut self) -> bool {
        let dial = self.current.is_none() && !self.dialing;
        self.dialing |= dial;
        dial
    }

    /// This node's dial failed: how long until the next.
    pub fn dial_failed(&mut self, rng: &mut impl Rng) -> Duration {
        self.dialing = false;
        let delay = self.backoff.delay(self.failures, rng);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Decides about a connection that passed its handshake (this node's own dial, or the peer's).
    pub fn offer(&mut self, offer: Offer) -> Decision {
        if offer.dialer == self.me {
            self.dialing = false;
        }
        if offer.incarnation < self.newest_incarnation {
            return Decision::Refuse(format!(
                "node {} incarnation {} is older than incarnation {} already seen",
                self.peer, offer.incarnation, self.newest_incarnation
            ));
        }
        self.newest_incarnation = offer.incarnation;
        let preferred = self.me.min(self.peer);
        let replaces = match self.current {
            None => None,
            Some(current) if offer.incarnation > current.incarnation => Some(current.id),
            // The same end dialed again: it saw the old connection die before this end did.
            Some(current) if offer.dialer == current.dialer => Some(current.id),
            Some(current) if offer.dialer == preferred => Some(current.id),
            Some(_) => return Decision::Refuse(format!("a connection dialed by node {preferred} is up")),
        };
        self.current = Some(offer);
        self.failures = 0;
        Decision::Install { replaces }
    }

    /// Connection `id` closed. If it was the one in use, answers how long to wait before dialing
    /// again.
    pub fn closed(&mut self, id: u64, rng: &mut impl Rng) -> Option<Duration> {
        if self.current.is_some_and(|c| c.id == id) {
            self.current = None;
            self.redial = self.backoff.delay(0, rng);
            Some(self.redial)
        } else {
            None
        }
    }

    /// How long to wait before dialing after the last connection in use closed.
    pub fn redial_delay(&self) -> Duration {
        self.redial
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn simultaneous_dials_end_with_the_same_one_connection_at_both_ends() {
        // Node 1 and node 2 dial each other at once; each end sees both connections, in either
        // order. Connection 10 is 1's dial, 20 is 2's.
        let (one, two) = (Offer { id: 10, dialer: 1, incarnation: 1 }, Offer { id: 20, dialer: 2, incarnation: 1 });
        for (first, second) in [(one, two), (two, one)] {
            for me in [1, 2] {
                let mut link = Link::new(me, 3 - me, Backoff::default());
                link.offer(first);
                link.offer(second);
                assert_eq!(link.current().map(|c| c.id), Some(10), "node {me}, order {first:?} then {second:?}");
            }
        }
    }

    #[test]
    fn a_restarted_peer_replaces_its_old_connection_and_an_older_one_is_refused() {
        let mut link = Link::new(2, 1, Backoff::default());
        assert_eq!(link.offer(Offer { id: 1, dialer: 1, incarnation: 4 }), Decision::Install { replaces: None });
        // The peer restarted: its new dial wins even though this end is the higher id and would
        // otherwise keep the connection the peer dialed first.
        assert_eq!(link.offer(Offer { id: 2, dialer: 2, incarnation: 5 }), Decision::Install { replaces: Some(1) });
        let Decision::Refuse(why) = link.offer(Offer { id: 3, dialer: 1, incarnation: 4 }) else { panic!() };
        assert_eq!(why, "node 1 incarnation 4 is older than incarnation 5 already seen");
        assert_eq!(link.current().map(|c| c.id), Some(2));
    }

    #[test]
    fn a_redial_by_the_same_end_replaces_its_dead_connection() {
        let mut link = Link::new(2, 1, Backoff::default());
        link.offer(Offer { id: 1, dialer: 2, incarnation: 1 });
        assert_eq!(link.offer(Offer { id: 2, dialer: 2, incarnation: 1 }), Decision::Install { replaces: Some(1) });
        // But while it is up, a dial by the higher end cannot displace one by the lower.
        assert_eq!(link.offer(Offer { id: 3, dialer: 1, incarnation: 1 }), Decision::Install { replaces: Some(2) });
        assert!(matches!(link.offer(Offer { id: 4, dialer: 2, incarnation: 1 }), Decision::Refuse(_)));
    }

    #[test]
    fn dials_back_off_exponentially_with_jitter_and_only_one_is_under_way() {
        let mut rng = rng();
        let mut link = Link::new(1, 2, Backoff::default());
        assert!(link.start_dial());
        assert!(!link.start_dial(), "one dial at a time");
        let delays: Vec<Duration> = (0..12)
            .map(|_| {
                let d = link.dial_failed(&mut rng);
                assert!(link.start_dial());
                d
            })
            .collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100), "{delays:?}");
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)), "{delays:?}");
        assert!(delays[11] >= Duration::from_millis(2500), "{delays:?}");
        // A connection resets the back-off, and its loss asks for a prompt redial.
        assert_eq!(link.offer(Offer { id: 1, dialer: 1, incarnation: 1 }), Decision::Install { replaces: None });
        assert!(!link.start_dial(), "connected");
        assert_eq!(link.closed(99, &mut rng), None, "not the current connection");
        let redial = link.closed(1, &mut rng).unwrap();
        assert!(redial <= Duration::from_millis(100), "{redial:?}");
        assert!(link.start_dial());
        assert!(link.dial_failed(&mut rng) <= Duration::from_millis(100), "back-off starts again from the beginning");
    }
}
