//! The fault model of a simulated or in-process network: which messages are lost, how late the
//! others arrive, and which nodes cannot reach each other. One model, used by the deterministic
//! [`Sim`](crate::sim::Sim) and by ergon-actors' in-process transport alike.

use std::collections::BTreeSet;

use rand::Rng;

use crate::NodeId;

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// It arrives after this many milliseconds.
    After(u64),
    /// It is lost: dropped at random, or the two nodes are partitioned.
    Lost,
}

/// Loss, latency and partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// The chance that a message is lost.
    pub drop_rate: f64,
    /// One-way delay in milliseconds, drawn uniformly from this inclusive range.
    pub latency_ms: (u64, u64),
    /// The nodes cut off from the rest; empty when there is no partition.
    minority: BTreeSet<NodeId>,
}

impl Default for Faults {
    /// No loss, no delay, no partition.
    fn default() -> Self {
        Faults::new(0.0, (0, 0))
    }
}

impl Faults {
    /// Losing `drop_rate` of messages and delaying the rest by `latency_ms`, unpartitioned.
    pub fn new(drop_rate: f64, latency_ms: (u64, u64)) -> Self {
        Faults { drop_rate, latency_ms, minority: BTreeSet::new() }
    }

    /// Cuts `minority` off from every other node; they can still reach each other.
    pub fn partition(&mut self, minority: &[NodeId]) {
        self.minority = minority.iter().copied().collect();
    }

    /// Removes any partition.
    pub fn heal(&mut self) {
        self.minority.clear();
    }

    /// Whether `a` and `b` can reach each other.
    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.minority.contains(&a) == self.minority.contains(&b)
    }

    /// Decides one message's fate, drawing from `rng`.
    pub fn route(&self, rng: &mut impl Rng, from: NodeId, to: NodeId) -> Route {
        if !self.connected(from, to) || rng.gen_bool(self.drop_rate.clamp(0.0, 1.0)) {
            return Route::Lost;
        }
        let (lo, hi) = self.latency_ms;
        Route::After(rng.gen_range(lo..=hi.max(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cut_both_ways_and_heal() {
        let mut f = Faults::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        f.partition(&[4, 5]);
        assert_eq!(f.route(&mut rng, 1, 4), Route::Lost);
        assert_eq!(f.route(&mut rng, 5, 2), Route::Lost);
        assert_eq!(f.route(&mut rng, 4, 5), Route::After(0));
        f.heal();
        assert_eq!(f.route(&mut rng, 1, 4), Route::After(0));
    }

    #[test]
    fn loss_and_latency_follow_the_settings() {
        let f = Faults::new(0.25, (2, 9));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let routes: Vec<Route> = (0..4000).map(|_| f.route(&mut rng, 1, 2)).collect();
        let lost = routes.iter().filter(|r| **r == Route::Lost).count();
        assert!((800..1200).contains(&lost), "{lost} of 4000 lost at 25%");
        assert!(routes.iter().all(|r| matches!(r, Route::Lost | Route::After(2..=9))));
    }
}
