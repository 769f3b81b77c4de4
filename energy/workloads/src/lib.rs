//! Micro-workloads that stress one class of operation each, run in chosen mixes.
//!
//! Calibration (`ergon energy calibrate`) runs them in a build where this crate is instrumented
//! by ergon's LLVM pass (`make calibrate`), so that the operations they execute are counted
//! exactly, and sets the counts beside what the machine's energy counter measured. They live in a
//! crate of their own so that instrumenting them instruments nothing else.
//!
//! ```
//! use std::time::{Duration, Instant};
//! let mut work = workloads::Workloads::new();
//! let rounds = work.run([2, 1, 1], Instant::now() + Duration::from_millis(5));
//! assert!(rounds >= 1);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

use std::hint::black_box;
use std::ptr::{read_volatile, write_volatile};
use std::time::Instant;

/// Iterations of each kernel per unit of work: a few microseconds, so a round of a mix is short
/// next to a calibration run.
pub const ITERATIONS_PER_UNIT: u64 = 4096;

/// Integer arithmetic on registers: shifts, xors and additions.
#[inline(never)]
pub fn alu(units: u32, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..u64::from(units) * ITERATIONS_PER_UNIT {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(0x9E37_79B9);
    }
    black_box(x)
}

/// Loads and stores at scattered places of a buffer far larger than the caches.
#[inline(never)]
pub fn memory(units: u32, buffer: &mut [u64]) {
    if buffer.is_empty() {
        return;
    }
    // The largest power of two that fits, less one: indices masked with it stay in the buffer.
    let mask = (buffer.len() + 1).next_power_of_two() / 2 - 1;
    let mut i = black_box(1usize);
    for _ in 0..u64::from(units) * ITERATIONS_PER_UNIT {
        i = (i.wrapping_mul(0x5851_F42D_4C95_7F2D).wrapping_add(0x1405_7B7E_F767_814F)) & mask;
        // SAFETY: `i` is at most `mask`, which is below the buffer's length.
        unsafe {
            let cell = buffer.as_mut_ptr().add(i);
            write_volatile(cell, read_volatile(cell).wrapping_add(1));
        }
    }
}

/// Floating-point multiplications and additions in two dependent chains.
#[inline(never)]
pub fn fp(units: u32, seed: f64) -> f64 {
    let (mut x, mut y) = (seed, seed + 1.0);
    for _ in 0..u64::from(units) * ITERATIONS_PER_UNIT {
        x = x * 1.000_000_1 + 1e-9;
        y = y * 0.999_999_9 - 1e-9;
    }
    black_box(x + y)
}

/// The kernels and the buffer the memory kernel walks.
pub struct Workloads {
    buffer: Vec<u64>,
}

impl Default for Workloads {
    fn default() -> Self {
        Workloads::new()
    }
}

impl Workloads {
    /// Allocates and touches a 64 MiB buffer for the memory kernel.
    pub fn new() -> Self {
        Workloads { buffer: vec![1; 8 << 20] }
    }

    /// Runs rounds of `[alu, memory, fp]` units until `deadline`; returns how many.
    pub fn run(&mut self, mix: [u32; 3], deadline: Instant) -> u64 {
        let mut rounds = 0;
        let mut seed = 0x2545_F491_4F6C_DD1D;
        loop {
            seed = alu(mix[0], seed);
            memory(mix[1], &mut self.buffer);
            black_box(fp(mix[2], seed as f64 * 1e-20));
            rounds += 1;
            if Instant::now() >= deadline {
                return rounds;
            }
        }
    }
}
