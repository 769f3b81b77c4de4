//! Energy-aware placement: how much of a load each live node gets.
//!
//! A node's share is proportional to its capacity times the joules left in its budget, so a node
//! that is running out of energy is given less work before it runs out, not after. Nodes with no
//! capacity or no energy left get nothing.
//!
//! ```
//! use cluster::placement::{distribute, Candidate};
//!
//! let shares = distribute(90.0, &[
//!     Candidate { node: 1, capacity: 1.0, remaining_j: 2_000.0 },
//!     Candidate { node: 2, capacity: 1.0, remaining_j: 1_000.0 },
//! ]).unwrap();
//! assert_eq!(shares[&1], 60.0);
//! assert_eq!(shares[&2], 30.0);
//! ```

use std::collections::BTreeMap;

use crate::NodeId;

/// A node that could take load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Its relative capacity (cores, workers: any unit, the same for every node).
    pub capacity: f64,
    /// Joules left in its budget.
    pub remaining_j: f64,
}

/// Why a load cannot be placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The load is negative, infinite or NaN.
    #[error("load {0} is not a finite, non-negative number")]
    InvalidLoad(f64),
    /// A node's capacity or remaining energy is negative, infinite or NaN.
    #[error("node {node}: capacity {capacity} and remaining energy {remaining_j} J must be finite and non-negative")]
    InvalidCandidate {
        /// The node.
        node: NodeId,
        /// Its capacity.
        capacity: f64,
        /// Its remaining energy.
        remaining_j: f64,
    },
    /// No node has both capacity and energy left.
    #[error("no live node has capacity and energy left for a load of {0}")]
    NoCapacity(f64),
}

/// Splits `load` over `candidates` in proportion to capacity x remaining energy.
pub fn distribute(load: f64, candidates: &[Candidate]) -> Result<BTreeMap<NodeId, f64>, PlacementError> {
    if !load.is_finite() || load < 0.0 {
        return Err(PlacementError::InvalidLoad(load));
    }
    let valid = |x: f64| x.is_finite() && x >= 0.0;
    if let Some(c) = candidates.iter().find(|c| !valid(c.capacity) || !valid(c.remaining_j)) {
        return Err(PlacementError::InvalidCandidate { node: c.node, capacity: c.capacity, remaining_j: c.remaining_j });
    }
    let total: f64 = candidates.iter().map(|c| c.capacity * c.remaining_j).sum();
    if total <= 0.0 || !total.is_finite() {
        return Err(PlacementError::NoCapacity(load));
    }
    Ok(candidates.iter().map(|c| (c.node, load * c.capacity * c.remaining_j / total)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(node: NodeId, capacity: f64, remaining_j: f64) -> Candidate {
        Candidate { node, capacity, remaining_j }
    }

    #[test]
    fn less_remaining_energy_gets_less_load_and_the_whole_load_is_placed() {
        let shares = distribute(100.0, &[c(1, 2.0, 1_000.0), c(2, 2.0, 250.0), c(3, 1.0, 1_000.0)]).unwrap();
        assert!(shares[&2] < shares[&3] && shares[&3] < shares[&1], "{shares:?}");
        assert!((shares.values().sum::<f64>() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn exhausted_nodes_get_nothing_and_bad_input_is_named() {
        let shares = distribute(10.0, &[c(1, 1.0, 0.0), c(2, 1.0, 5.0)]).unwrap();
        assert_eq!((shares[&1], shares[&2]), (0.0, 10.0));
        assert_eq!(distribute(1.0, &[c(1, 1.0, 0.0)]), Err(PlacementError::NoCapacity(1.0)));
        assert_eq!(distribute(1.0, &[]), Err(PlacementError::NoCapacity(1.0)));
        assert!(matches!(distribute(f64::NAN, &[c(1, 1.0, 1.0)]), Err(PlacementError::InvalidLoad(_))));
        assert!(matches!(distribute(1.0, &[c(4, -1.0, 1.0)]), Err(PlacementError::InvalidCandidate { node: 4, .. })));
    }
}
