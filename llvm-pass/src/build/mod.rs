//! `cargo ergon`: building a cargo project with chosen crates instrumented, on stable rustc.
//!
//! One executable, `cargo-ergon`, plays three parts:
//!
//! 1. **The cargo subcommand** ([`subcommand`]): `cargo ergon build --instrument CRATES …` runs
//!    cargo with itself as `RUSTC_WRAPPER`, in its own target directory (`target/ergon`).
//! 2. **The rustc wrapper** ([`rustc_wrapper`]): for a selected crate it adds
//!    `-C linker-plugin-lto`, so that rustc leaves LLVM bitcode where the object code would be
//!    (in the crate's rlib, or beside a binary); for every crate it makes itself the linker.
//! 3. **The linker** ([`linker`]): it finds the bitcode among the link inputs, instruments each
//!    module (finishing its optimisation first), generates native objects, rewrites the
//!    archives that held them, and runs the real linker (`cc`, or `ERGON_LINKER`).
//!
//! Crates outside the selection, and the standard library, are compiled and linked as usual:
//! their object code never passes through the pass. Cargo tracks the selection through
//! `--cfg ergon_instrument=…` in the rustflags, so changing it rebuilds what it must.

pub mod linker;
pub mod rustc_wrapper;
pub mod subcommand;

/// The crates to instrument (comma-separated crate names), for the rustc wrapper.
pub const ENV_CRATES: &str = "ERGON_INSTRUMENT_CRATES";
/// Set by the rustc wrapper for rustc, so that the linker it runs knows its part.
pub const ENV_LINKER_ROLE: &str = "ERGON_LINKER_ROLE";
/// The linker to run after instrumenting (default `cc`).
pub const ENV_LINKER: &str = "ERGON_LINKER";
/// Overrides the LLVM pipeline run before counting ([`Options::before`](crate::Options)).
pub const ENV_BEFORE: &str = "ERGON_PASS_BEFORE";
/// Overrides the LLVM pipeline run after instrumenting ([`Options::after`](crate::Options)).
pub const ENV_AFTER: &str = "ERGON_PASS_AFTER";
/// Where instrumented objects are kept between links, keyed by their bitcode.
pub const ENV_CACHE: &str = "ERGON_CACHE_DIR";

/// Whether `crates` (a comma-separated list) names `crate_name`; `*` names every crate.
pub fn selected(crates: &str, crate_name: &str) -> bool {
    crates.split(',').map(str::trim).any(|c| c == "*" || c.replace('-', "_") == crate_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_normalises_dashes() {
        assert!(selected("ergon-actors,cluster_demo", "ergon_actors"));
        assert!(selected("a, cluster_demo", "cluster_demo"));
        assert!(selected("*", "anything"));
        assert!(!selected("actors", "actors_x"));
        assert!(!selected("", "actors"));
    }
}
