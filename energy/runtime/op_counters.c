/* ergon's operation counters: the run-time half of the LLVM pass (llvm-pass/src/instrument.rs).
 *
 * Stable Rust cannot declare an extern thread-local, so the counters are defined here and read
 * through two functions. Both symbols are weak, as in every instrumented module, so the linker
 * merges them into one definition whether or not any instrumented code is linked.
 */
#include <stdint.h>

/* alu, mem, fp, total; incremented by instrumented code, per thread. */
__attribute__((weak, tls_model("initial-exec"), aligned(8)))
__thread uint64_t ergon_op_counters[4];

/* Incremented once at start-up by a constructor in each instrumented module. */
__attribute__((weak, aligned(8)))
uint64_t ergon_instrumented_modules;

void ergon_read_op_counters(uint64_t out[4]) {
    out[0] = ergon_op_counters[0];
    out[1] = ergon_op_counters[1];
    out[2] = ergon_op_counters[2];
    out[3] = ergon_op_counters[3];
}

uint64_t ergon_instrumented_module_count(void) {
    return __atomic_load_n(&ergon_instrumented_modules, __ATOMIC_RELAXED);
}
