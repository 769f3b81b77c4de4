//! From operation counts to joules.

use serde::{Deserialize, Serialize};

use crate::{Joules, OpCounts};

/// Relative energy of one operation of each class, ALU = 1.
///
/// The defaults are the reference design's thermal-design-power factors (see the README): a memory
/// operation costs five ALU operations and a floating-point one three. Instructions in no class are not weighted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpWeights {
    /// Weight of an ALU operation.
    pub alu: f64,
    /// Weight of a memory operation.
    pub mem: f64,
    /// Weight of a floating-point operation.
    pub fp: f64,
}

impl Default for OpWeights {
    fn default() -> Self {
        OpWeights { alu: 1.0, mem: 5.0, fp: 3.0 }
    }
}

impl OpWeights {
    /// `alu × w_alu + mem × w_mem + fp × w_fp`: the counts in ALU-operation equivalents.
    pub fn weighted(&self, ops: &OpCounts) -> f64 {
        ops.alu as f64 * self.alu + ops.mem as f64 * self.mem + ops.fp as f64 * self.fp
    }
}

/// `cost = Σ ops[class] × weight[class] × unit_energy`.
///
/// The reference design charges "1 joule per ALU operation", which is not physical. The default unit energy
/// is 70 pJ per ALU-equivalent operation: Horowitz's estimate ("Computing's energy problem",
/// ISSCC 2014) of the energy of one simple instruction on a 45 nm core, where fetch, decode and
/// control dominate the arithmetic itself. Calibrate it against a real meter
/// with [`calibration`](crate::calibration) where the machine has one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostModel {
    /// Per-class weights.
    pub weights: OpWeights,
    /// Energy of one ALU-equivalent operation.
    pub unit_energy: Joules,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            weights: OpWeights::default(),
            unit_energy: Joules::new(70e-12).expect("a positive constant"),
        }
    }
}

impl CostModel {
    /// The energy of `ops` under this model.
    pub fn cost(&self, ops: &OpCounts) -> Joules {
        self.unit_energy.scale(self.weights.weighted(ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(alu: u64, mem: u64, fp: u64) -> OpCounts {
        OpCounts { alu, mem, fp, total: alu + mem + fp }
    }

    #[test]
    fn cost_uses_the_reference_weights() {
        let model = CostModel { unit_energy: Joules::new(1.0).unwrap(), ..CostModel::default() };
        // 10 ALU × 1 + 2 mem × 5 + 3 fp × 3 = 29 ALU-equivalents.
        assert_eq!(model.cost(&ops(10, 2, 3)).get(), 29.0);
    }

    #[test]
    fn an_extreme_profile_makes_work_dear_not_free() {
        let mut model = CostModel::default();
        model.weights.mem = f64::MAX;
        assert_eq!(model.cost(&ops(0, 10, 0)), Joules::MAX);
        assert_eq!(model.cost(&ops(0, 0, 0)), Joules::ZERO);
    }
}
