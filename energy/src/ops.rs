//! Operation counts gathered by ergon's LLVM instrumentation.
//!
//! The instrumentation pass adds, at each basic block, increments of per-thread counters for the
//! ALU, memory and floating-point operations the block executes. [`measure_ops`] reads this
//! thread's counters; the difference of two readings is what ran in between.
//!
//! Until a binary is built with the pass, there are no counters to read. [`measure_ops`] then
//! returns [`NotInstrumented`] rather than zeros, so that no caller mistakes "not counted" for
//! "nothing ran".

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

/// Dynamic operation counts by class: ALU, memory, floating point, and all instructions.
///
/// `total` counts every instruction, including those in none of the three weighted classes
/// (control flow, calls and the like), so `total >= alu + mem + fp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Integer arithmetic, logic, comparisons, casts and address arithmetic.
    pub alu: u64,
    /// Loads, stores, atomics and memory intrinsics.
    pub mem: u64,
    /// Floating-point arithmetic.
    pub fp: u64,
    /// All counted instructions.
    pub total: u64,
}

impl OpCounts {
    /// Instructions in none of the weighted classes.
    pub fn other(&self) -> u64 {
        self.total.saturating_sub(self.alu + self.mem + self.fp)
    }

    /// The counts accumulated between an earlier reading and this one.
    ///
    /// Counters only grow, so a component that went backwards means the readings came from
    /// different threads; it is clamped to zero rather than wrapped to a huge number.
    pub fn since(&self, earlier: &OpCounts) -> OpCounts {
        OpCounts {
            alu: self.alu.saturating_sub(earlier.alu),
            mem: self.mem.saturating_sub(earlier.mem),
            fp: self.fp.saturating_sub(earlier.fp),
            total: self.total.saturating_sub(earlier.total),
        }
    }
}

impl Add for OpCounts {
    type Output = OpCounts;
    fn add(self, o: OpCounts) -> OpCounts {
        OpCounts {
            alu: self.alu.saturating_add(o.alu),
            mem: self.mem.saturating_add(o.mem),
            fp: self.fp.saturating_add(o.fp),
            total: self.total.saturating_add(o.total),
        }
    }
}

impl AddAssign for OpCounts {
    fn add_assign(&mut self, o: OpCounts) {
        *self = *self + o;
    }
}

/// This binary carries no operation counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this build is not instrumented: no operation counters exist, so operation counts are \
     unknown (not zero); build with ergon's LLVM pass to count them"
)]
pub struct NotInstrumented;

/// Whether this binary counts operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrumentation {
    /// Counters exist and [`measure_ops`] returns real counts.
    Instrumented,
    /// No counters; [`measure_ops`] returns [`NotInstrumented`].
    NotInstrumented,
}

extern "C" {
    // energy/runtime/op_counters.c
    fn ergon_read_op_counters(out: *mut u64);
    fn ergon_instrumented_module_count() -> u64;
}

/// Whether this binary was built with ergon's LLVM pass.
///
/// Each instrumented module registers itself in a constructor that runs before `main`, so the
/// answer is fixed for the life of the process.
pub fn instrumentation() -> Instrumentation {
    // SAFETY: reads an integer that is only ever changed atomically.
    if unsafe { ergon_instrumented_module_count() } > 0 {
        Instrumentation::Instrumented
    } else {
        Instrumentation::NotInstrumented
    }
}

/// How many instrumented modules (crates, or codegen units) this binary holds.
pub fn instrumented_modules() -> u64 {
    // SAFETY: as in `instrumentation`.
    unsafe { ergon_instrumented_module_count() }
}

/// This thread's operation counters: everything instrumented code has executed on this thread
/// since it started.
///
/// Code the pass did not instrument (the standard library, crates left out of the build's
/// selection, C libraries) is not counted.
///
/// ```
/// match energy::measure_ops() {
///     Ok(counts) => println!("{} ALU operations so far", counts.alu),
///     // A build without ergon's LLVM pass says so instead of reporting zeros.
///     Err(not_instrumented) => println!("{not_instrumented}"),
/// }
/// ```
pub fn measure_ops() -> Result<OpCounts, NotInstrumented> {
    if instrumentation() == Instrumentation::NotInstrumented {
        return Err(NotInstrumented);
    }
    let mut raw = [0u64; 4];
    // SAFETY: writes four integers of this thread's counters into `raw`.
    unsafe { ergon_read_op_counters(raw.as_mut_ptr()) };
    Ok(OpCounts { alu: raw[0], mem: raw[1], fp: raw[2], total: raw[3] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uninstrumented_build_reports_unknown_not_zero() {
        assert_eq!(instrumentation(), Instrumentation::NotInstrumented);
        let err = measure_ops().unwrap_err();
        assert!(err.to_string().contains("not instrumented"));
    }

    #[test]
    fn deltas_clamp_instead_of_wrapping() {
        let a = OpCounts { alu: 10, mem: 4, fp: 1, total: 20 };
        let b = OpCounts { alu: 15, mem: 3, fp: 1, total: 25 };
        assert_eq!(b.since(&a), OpCounts { alu: 5, mem: 0, fp: 0, total: 5 });
        assert_eq!(a.other(), 5);
    }
}
