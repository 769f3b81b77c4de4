//! Compiles the run-time half of ergon's LLVM pass: the per-thread operation counters.
fn main() {
    println!("cargo:rerun-if-changed=runtime/op_counters.c");
    cc::Build::new().file("runtime/op_counters.c").opt_level(2).compile("ergon_op_counters");
}
