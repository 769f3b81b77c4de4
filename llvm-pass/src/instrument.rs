//! Adds per-block counts of operations to the per-thread operation counters.
//!
//! Every instrumented module refers to two symbols, both weak definitions that the linker merges
//! with the ones in ergon's run time (`energy/runtime/op_counters.c`), so an instrumented object
//! links with or without the energy crate:
//!
//! - `ergon_op_counters`, a thread-local `[4 x i64]`: ALU, memory, floating point, total;
//! - `ergon_instrumented_modules`, an `i64` that a constructor in each instrumented module
//!   increments at start-up (from `.init_array`), which is how the run time knows the counts are real.
//!
//! A function's counts gather in four local accumulators (allocas that SROA turns into
//! registers) and reach the thread's counters only where they could be read: before a block's
//! first call of anything but an intrinsic, and before the function returns or resumes
//! unwinding (a *flush*). The counters are read only by a call (the run time's
//! `ergon_read_op_counters`, or whatever calls it), so at every call and after every return they
//! hold exactly what an increment of the counters at the top of every block would.
//!
//! How each block's counts reach the accumulators is the placement module's decision, over the
//! control-flow graph: an add per class at the block's first insertion point (after its PHI
//! nodes and EH pad), or, inside a loop without hot calls, nothing per iteration. There a block
//! counts its executions (one add), or is counted by how far an induction variable it steps
//! has moved, or runs once per iteration as such a block does and follows its count; the loop's
//! exits add the run's count to the block's total, and the next flush multiplies totals by the
//! blocks' counts. A block that begins with a `catchswitch` cannot hold other instructions; it
//! is left uncounted (it holds nothing but the `catchswitch`). The counter address is computed
//! once per function, in the entry block, which dominates every other block.

use std::ffi::CString;

use llvm_sys::core::*;
use llvm_sys::prelude::*;
use llvm_sys::{LLVMAtomicOrdering, LLVMAtomicRMWBinOp, LLVMAttributeFunctionIndex, LLVMLinkage, LLVMThreadLocalMode};

use crate::classify::{classify, intrinsic_name, is_memory_intrinsic, ClassCounts};
use crate::placement::{self, Counting};
use crate::report::{FunctionReport, Report};
use crate::PassError;

/// The thread-local counters: `[alu, mem, fp, total]`.
pub const COUNTERS_SYMBOL: &str = "ergon_op_counters";
/// How many instrumented modules registered themselves at start-up.
pub const MODULES_SYMBOL: &str = "ergon_instrumented_modules";
const CTOR_NAME: &str = "ergon.register_instrumented_module";

/// Index of each class in the counter array.
const ALU: u64 = 0;
const MEM: u64 = 1;
const FP: u64 = 2;
const TOTAL: u64 = 3;

/// Instruments every defined function of `module` and returns the static report.
///
/// # Errors
/// [`PassError::AlreadyInstrumented`] if the module already carries the counters as a
/// definition of its own (instrumenting twice would count twice).
pub fn instrument(module: &inkwell::module::Module<'_>) -> Result<Report, PassError> {
    // SAFETY: every reference below comes from `module`, which outlives this call, and is used
    // according to the LLVM C API's contracts (instructions are created with a builder
    // positioned inside a block of a function of this module).
    unsafe { Instrumenter::new(module.as_mut_ptr())?.run() }
}

struct Instrumenter {
    module: LLVMModuleRef,
    ctx: LLVMContextRef,
    builder: LLVMBuilderRef,
    i64: LLVMTypeRef,
    ptr: LLVMTypeRef,
    counters: LLVMValueRef,
    tls_address: (LLVMTypeRef, LLVMValueRef),
    scopes: CounterScope,
}

/// Alias-scope metadata saying that the program's own loads and stores never touch the
/// counters, which is true (only the pass refers to them). Without it LLVM must assume that any
/// store in a loop may change a counter, and cannot keep the counters in registers there.
/// Calls are left unmarked: the callee may count.
struct CounterScope {
    alias_scope_kind: u32,
    noalias_kind: u32,
    scope: LLVMMetadataRef,
    list: LLVMValueRef,
}

impl CounterScope {
    unsafe fn new(ctx: LLVMContextRef) -> Self {
        let md_string = |s: &str| LLVMMDStringInContext2(ctx, s.as_ptr().cast(), s.len());
        let mut domain = [md_string("ergon.op_counters.domain")];
        let domain = LLVMMDNodeInContext2(ctx, domain.as_mut_ptr(), 1);
        let mut scope = [md_string("ergon.op_counters"), domain];
        let scope = LLVMMDNodeInContext2(ctx, scope.as_mut_ptr(), 2);
        let mut list = [scope];
        let list = LLVMMetadataAsValue(ctx, LLVMMDNodeInContext2(ctx, list.as_mut_ptr(), 1));
        let kind = |k: &str| LLVMGetMDKindIDInContext(ctx, k.as_ptr().cast(), k.len() as u32);
        CounterScope { alias_scope_kind: kind("alias.scope"), noalias_kind: kind("noalias"), scope, list }
    }

    /// Marks one of the pass's own counter accesses.
    unsafe fn mark_counter_access(&self, inst: LLVMValueRef) {
        LLVMSetMetadata(inst, self.alias_scope_kind, self.list);
    }

    /// Adds the counters' scope to the `!noalias` list of a program memory access.
    unsafe fn mark_program_access(&self, ctx: LLVMContextRef, inst: LLVMValueRef) {
        let old = LLVMGetMetadata(inst, self.noalias_kind);
        let list = if old.is_null() {
            self.list
        } else {
            let n = LLVMGetMDNodeNumOperands(old) as usize;
            let mut operands = vec![std::ptr::null_mut(); n];
            LLVMGetMDNodeOperands(old, operands.as_mut_ptr());
            let mut scopes: Vec<LLVMMetadataRef> = operands.into_iter().map(|v| LLVMValueAsMetadata(v)).collect();
            scopes.push(self.scope);
            LLVMMetadataAsValue(ctx, LLVMMDNodeInContext2(ctx, scopes.as_mut_ptr(), scopes.len()))
        };
        LLVMSetMetadata(inst, self.noalias_kind, list);
    }
}

/// Whether `inst` reads or writes memory other than through a call that might count.
unsafe fn is_program_memory_access(inst: LLVMValueRef) -> bool {
    use llvm_sys::LLVMOpcode::*;
    match LLVMGetInstructionOpcode(inst) {
        LLVMLoad | LLVMStore | LLVMAtomicRMW | LLVMAtomicCmpXchg => true,
        LLVMCall => intrinsic_name(inst).is_some_and(is_memory_intrinsic),
        _ => false,
    }
}

impl Drop for Instrumenter {
    fn drop(&mut self) {
        unsafe { LLVMDisposeBuilder(self.builder) }
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("symbol names hold no NUL")
}

impl Instrumenter {
    unsafe fn new(module: LLVMModuleRef) -> Result<Self, PassError> {
        let ctx = LLVMGetModuleContext(module);
        let i64 = LLVMInt64TypeInContext(ctx);
        let ptr = LLVMPointerTypeInContext(ctx, 0);
        let name = cstr(COUNTERS_SYMBOL);
        if !LLVMGetNamedGlobal(module, name.as_ptr()).is_null() {
            return Err(PassError::AlreadyInstrumented);
        }
        let array = LLVMArrayType2(i64, 4);
        let counters = LLVMAddGlobal(module, array, name.as_ptr());
        LLVMSetInitializer(counters, LLVMConstNull(array));
        LLVMSetLinkage(counters, LLVMLinkage::LLVMWeakAnyLinkage);
        // The counters live in the executable, so the initial-exec model is valid and costs a
        // fixed offset from the thread pointer (no call to `__tls_get_addr`).
        LLVMSetThreadLocalMode(counters, LLVMThreadLocalMode::LLVMInitialExecTLSModel);
        LLVMSetAlignment(counters, 8);

        let intrinsic = "llvm.threadlocal.address";
        let id = LLVMLookupIntrinsicID(intrinsic.as_ptr().cast(), intrinsic.len());
        let mut params = [ptr];
        let tls_fn = LLVMGetIntrinsicDeclaration(module, id, params.as_mut_ptr(), 1);
        let tls_ty = LLVMIntrinsicGetType(ctx, id, params.as_mut_ptr(), 1);
        let scopes = CounterScope::new(ctx);
        Ok(Instrumenter { module, ctx, builder: LLVMCreateBuilderInContext(ctx), i64, ptr, counters, tls_address: (tls_ty, tls_fn), scopes })
    }

    unsafe fn run(self) -> Result<Report, PassError> {
        let mut report = Report::default();
        let functions: Vec<LLVMValueRef> = {
            let mut all = Vec::new();
            let mut f = LLVMGetFirstFunction(self.module);
            while !f.is_null() {
                if LLVMIsDeclaration(f) == 0 {
                    all.push(f);
                }
                f = LLVMGetNextFunction(f);
            }
            all
        };
        for function in functions {
            report.functions.push(self.instrument_function(function));
        }
        self.register_module();
        report.finish();
        Ok(report)
    }

    unsafe fn instrument_function(&self, function: LLVMValueRef) -> FunctionReport {
        let blocks = basic_blocks(function);
        let counts: Vec<ClassCounts> = blocks.iter().map(|&b| block_counts(b)).collect();
        let mut total = ClassCounts::default();
        for c in &counts {
            total += *c;
        }
        if total.total() > 0 {
            // Planned before anything is inserted, so that the pass's own instructions are not
            // taken for the program's.
            let plan = Plan::new(&blocks, &counts);
            for &block in &blocks {
                for inst in instructions(block).filter(|&i| is_program_memory_access(i)) {
                    self.scopes.mark_program_access(self.ctx, inst);
                }
            }
            self.apply(&blocks, &plan);
        }
        FunctionReport::new(value_name(function), blocks.len(), total)
    }

    /// Inserts the accumulators, each counted block's count and total, their updates, the loops'
    /// folds and entries, and the flushes.
    unsafe fn apply(&self, blocks: &[LLVMBasicBlockRef], plan: &Plan) {
        let entry = blocks[0];
        LLVMPositionBuilderBefore(self.builder, LLVMGetFirstInstruction(entry));
        let alloca = |name: &std::ffi::CStr, ty: LLVMTypeRef| {
            let slot = LLVMBuildAlloca(self.builder, ty, name.as_ptr());
            LLVMSetAlignment(slot, 8);
            slot
        };
        let local = [c"ergon.alu", c"ergon.mem", c"ergon.fp", c"ergon.total"].map(|name| alloca(name, self.i64));
        // Per block counting executions or steps: where it keeps the count (and the start).
        let slots: Vec<Option<(LLVMValueRef, LLVMValueRef)>> = plan
            .placement
            .counting
            .iter()
            .zip(&plan.steppers)
            .map(|(counting, stepper)| match (counting, stepper) {
                (Counting::Executions, _) => Some((alloca(c"ergon.executions", self.i64), std::ptr::null_mut())),
                (Counting::Steps, Some(s)) => {
                    let ty = LLVMTypeOf(s.phi);
                    Some((alloca(c"ergon.stepped", ty), alloca(c"ergon.start", ty)))
                }
                _ => None,
            })
            .collect();
        // Per such block: the executions of its loop's runs since the last flush.
        let totals: Vec<Option<LLVMValueRef>> = slots.iter().map(|s| s.map(|_| alloca(c"ergon.total_runs", self.i64))).collect();
        LLVMPositionBuilderBefore(self.builder, after_allocas(entry));
        let (ty, f) = self.tls_address;
        let mut args = [self.counters];
        let base = LLVMBuildCall2(self.builder, ty, f, args.as_mut_ptr(), 1, c"ergon.ops".as_ptr());
        let counters = [ALU, MEM, FP, TOTAL].map(|index| self.counter(base, index));
        // The entry block (never in a loop: nothing branches to it) starts the accumulators.
        for (slot, n) in local.iter().zip(plan.placement.direct[0]) {
            self.store(self.int(n), *slot);
        }
        for &(count, start) in slots.iter().flatten() {
            self.clear(count);
            if !start.is_null() {
                self.clear(start);
            }
        }
        for &total in totals.iter().flatten() {
            self.clear(total);
        }
        for (i, &block) in blocks.iter().enumerate() {
            let Some(at) = insertion_point(block) else { continue };
            LLVMPositionBuilderBefore(self.builder, at);
            match (plan.placement.counting[i], slots[i]) {
                _ if i == 0 => {}
                (Counting::Follows, _) => {}
                (Counting::Executions, Some((count, _))) => self.add(count, self.int(1)),
                (Counting::Steps, Some((stepped, _))) => {
                    let next = plan.steppers[i].as_ref().expect("a stepping block has a stepper").next;
                    LLVMPositionBuilderBefore(self.builder, LLVMGetNextInstruction(next));
                    self.store(next, stepped);
                }
                _ => {
                    for (slot, n) in local.iter().zip(plan.placement.direct[i]) {
                        if n > 0 {
                            self.add(*slot, self.int(n));
                        }
                    }
                }
            }
            // Leaving a loop, or flushing inside it: what the loop's blocks ran joins their totals
            // (before the flush, after this block's own count).
            let corrections: Vec<[Option<LLVMValueRef>; 4]> = plan.placement.folds[i]
                .iter()
                .map(|f| match (f.within, f.corrections.first()) {
                    // Inside the loop the correction is this block's own.
                    (true, Some((_, c))) => c.map(|n| (n != 0).then(|| self.int(n))),
                    (true, None) => [None; 4],
                    (false, _) => self.corrections(blocks, &plan.successors, i, &f.corrections),
                })
                .collect();
            LLVMPositionBuilderBefore(self.builder, plan.flushes[i].unwrap_or(at));
            for (fold, corrections) in plan.placement.folds[i].iter().zip(corrections) {
                let b = fold.block;
                let (count, start) = slots[b].expect("folded blocks keep a count");
                let times = match &plan.steppers[b] {
                    Some(stepper) if !start.is_null() => self.steps_taken(count, start, stepper.step),
                    _ => self.opaque(self.load_as(count)),
                };
                self.add(totals[b].expect("folded blocks keep a total"), times);
                for (acc, correction) in local.iter().zip(corrections) {
                    if let Some(correction) = correction {
                        self.add(*acc, correction);
                    }
                }
                let within = fold.within;
                if start.is_null() || !within {
                    // Outside its loop a block's count is zero until an entry records a start.
                    self.clear(count);
                    if !start.is_null() {
                        self.clear(start);
                    }
                } else {
                    // The loop goes on: steps count from here.
                    let now = LLVMBuildLoad2(self.builder, LLVMGetAllocatedType(count), count, c"".as_ptr());
                    self.store(now, start);
                }
            }
            // A loop entry: where each stepping block's induction variable starts.
            for &b in &plan.placement.entries[i] {
                let (stepped, start) = slots[b].expect("stepping blocks keep a count");
                let phi = plan.steppers[b].as_ref().expect("a stepping block has a stepper").phi;
                let value = (0..LLVMCountIncoming(phi))
                    .find(|&k| LLVMGetIncomingBlock(phi, k) == block)
                    .map(|k| LLVMGetIncomingValue(phi, k))
                    .expect("an entering block is the phi's predecessor");
                LLVMPositionBuilderBefore(self.builder, LLVMGetBasicBlockTerminator(block));
                self.store(value, stepped);
                self.store(value, start);
            }
        }
        for (i, at) in plan.flushes.iter().enumerate() {
            let Some(at) = *at else { continue };
            LLVMPositionBuilderBefore(self.builder, at);
            for &b in &plan.placement.settles[i] {
                let total = totals[b].expect("settled blocks keep a total");
                let runs = self.load(total);
                for (acc, n) in local.iter().zip(plan.placement.per_execution[b]) {
                    if n > 0 {
                        self.add(*acc, LLVMBuildMul(self.builder, runs, self.int(n), c"".as_ptr()));
                    }
                }
                self.clear(total);
            }
            for ((&slot, &counter), restart) in local.iter().zip(&counters).zip(plan.placement.restarts[i]) {
                let old = self.load(counter);
                self.scopes.mark_counter_access(old);
                let new = LLVMBuildAdd(self.builder, old, self.load(slot), c"".as_ptr());
                self.scopes.mark_counter_access(self.store(new, counter));
                self.store(self.int(restart), slot);
            }
        }
    }

    /// For each class, the fold's correction at `block`: a phi of constants over the edges into
    /// it, at its top (`None` where every edge adds nothing).
    unsafe fn corrections(&self, blocks: &[LLVMBasicBlockRef], successors: &[Vec<usize>], block: usize, by_edge: &[(usize, [u64; 4])]) -> [Option<LLVMValueRef>; 4] {
        std::array::from_fn(|class| {
            if by_edge.iter().all(|(_, c)| c[class] == 0) {
                return None;
            }
            LLVMPositionBuilderBefore(self.builder, first_non_phi(blocks[block]));
            let phi = LLVMBuildPhi(self.builder, self.i64, c"ergon.correction".as_ptr());
            for (from, succs) in successors.iter().enumerate() {
                for _ in succs.iter().filter(|&&s| s == block) {
                    let value = by_edge.iter().find(|(x, _)| *x == from).map_or(0, |(_, c)| c[class]);
                    let (mut value, mut from) = ([self.int(value)], [blocks[from]]);
                    LLVMAddIncoming(phi, value.as_mut_ptr(), from.as_mut_ptr(), 1);
                }
            }
            Some(phi)
        })
    }

    /// How many times a block stepped its induction variable by `step`, from where the
    /// variable started to where it got (both `i64` or both pointers): the distance divided by
    /// `step`, exact modulo 2^64 / step (multiplying by the inverse of the step's odd part, then
    /// shifting out its powers of two).
    unsafe fn steps_taken(&self, stepped: LLVMValueRef, start: LLVMValueRef, step: i64) -> LLVMValueRef {
        let distance = LLVMBuildSub(self.builder, self.opaque(self.load_as(stepped)), self.load_as(start), c"".as_ptr());
        let step = step as u64;
        let shift = step.trailing_zeros();
        let mut times = distance;
        let odd = step >> shift;
        if odd != 1 {
            times = LLVMBuildMul(self.builder, times, self.int(inverse(odd)), c"".as_ptr());
        }
        if shift > 0 {
            times = LLVMBuildLShr(self.builder, times, self.int(shift.into()), c"".as_ptr());
        }
        times
    }

    /// `value`, through an empty inline-assembly statement that emits no code. Loop strength
    /// reduction sees a count used after its loop as a formula of the induction variable and
    /// would keep each multiple of it the folds use as an induction variable of its own (an add
    /// per iteration for each); behind this, the loop's own variable is all it sees used.
    unsafe fn opaque(&self, value: LLVMValueRef) -> LLVMValueRef {
        let mut params = [self.i64];
        let ty = LLVMFunctionType(self.i64, params.as_mut_ptr(), 1, 0);
        let constraints = "=r,0";
        let asm = LLVMGetInlineAsm(ty, c"".as_ptr(), 0, constraints.as_ptr().cast(), constraints.len(), 0, 0, llvm_sys::LLVMInlineAsmDialect::LLVMInlineAsmDialectATT, 0);
        let mut args = [value];
        LLVMBuildCall2(self.builder, ty, asm, args.as_mut_ptr(), 1, c"".as_ptr())
    }

    /// The value in `slot` (an `i64` or a pointer) as an `i64`.
    unsafe fn load_as(&self, slot: LLVMValueRef) -> LLVMValueRef {
        let value = LLVMBuildLoad2(self.builder, LLVMGetAllocatedType(slot), slot, c"".as_ptr());
        LLVMSetAlignment(value, 8);
        if LLVMTypeOf(value) == self.i64 {
            value
        } else {
            LLVMBuildPtrToInt(self.builder, value, self.i64, c"".as_ptr())
        }
    }

    /// Zero (or null) into `slot`.
    unsafe fn clear(&self, slot: LLVMValueRef) {
        self.store(LLVMConstNull(LLVMGetAllocatedType(slot)), slot);
    }

    fn int(&self, n: u64) -> LLVMValueRef {
        // SAFETY: a constant of the module's context.
        unsafe { LLVMConstInt(self.i64, n, 0) }
    }

    /// `*slot += n` at the builder's position.
    unsafe fn add(&self, slot: LLVMValueRef, n: LLVMValueRef) {
        let old = self.load(slot);
        self.store(LLVMBuildAdd(self.builder, old, n, c"".as_ptr()), slot);
    }

    /// The address of `counters[index]`.
    unsafe fn counter(&self, base: LLVMValueRef, index: u64) -> LLVMValueRef {
        if index == 0 {
            return base;
        }
        let mut idx = [LLVMConstInt(self.i64, index, 0)];
        LLVMBuildInBoundsGEP2(self.builder, self.i64, base, idx.as_mut_ptr(), 1, c"".as_ptr())
    }

    unsafe fn load(&self, slot: LLVMValueRef) -> LLVMValueRef {
        let value = LLVMBuildLoad2(self.builder, self.i64, slot, c"".as_ptr());
        LLVMSetAlignment(value, 8);
        value
    }

    unsafe fn store(&self, value: LLVMValueRef, slot: LLVMValueRef) -> LLVMValueRef {
        let store = LLVMBuildStore(self.builder, value, slot);
        LLVMSetAlignment(store, 8);
        store
    }

    /// Adds a constructor that counts this module among the instrumented ones at start-up.
    unsafe fn register_module(&self) {
        let name = cstr(MODULES_SYMBOL);
        let mut modules = LLVMGetNamedGlobal(self.module, name.as_ptr());
        if modules.is_null() {
            modules = LLVMAddGlobal(self.module, self.i64, name.as_ptr());
            LLVMSetInitializer(modules, LLVMConstNull(self.i64));
            LLVMSetLinkage(modules, LLVMLinkage::LLVMWeakAnyLinkage);
            LLVMSetAlignment(modules, 8);
        }
        let void = LLVMVoidTypeInContext(self.ctx);
        let fn_ty = LLVMFunctionType(void, std::ptr::null_mut(), 0, 0);
        let ctor_name = cstr(CTOR_NAME);
        let ctor = LLVMAddFunction(self.module, ctor_name.as_ptr(), fn_ty);
        LLVMSetLinkage(ctor, LLVMLinkage::LLVMInternalLinkage);
        let body = LLVMAppendBasicBlockInContext(self.ctx, ctor, c"entry".as_ptr());
        LLVMPositionBuilderAtEnd(self.builder, body);
        LLVMBuildAtomicRMW(
            self.builder,
            LLVMAtomicRMWBinOp::LLVMAtomicRMWBinOpAdd,
            modules,
            LLVMConstInt(self.i64, 1, 0),
            LLVMAtomicOrdering::LLVMAtomicOrderingMonotonic,
            0,
        );
        LLVMBuildRetVoid(self.builder);
        self.append_ctor(ctor);
    }

    /// Runs `ctor` at start-up through a pointer in `.init_array`, kept by `llvm.used`.
    ///
    /// `llvm.global_ctors` would be simpler, but a target machine made through the C API
    /// emits it into `.ctors`, which lld (rustc's default linker) ignores.
    unsafe fn append_ctor(&self, ctor: LLVMValueRef) {
        let slot = LLVMAddGlobal(self.module, self.ptr, c"ergon.init_array_entry".as_ptr());
        LLVMSetInitializer(slot, ctor);
        LLVMSetLinkage(slot, LLVMLinkage::LLVMInternalLinkage);
        LLVMSetGlobalConstant(slot, 1);
        LLVMSetSection(slot, c".init_array".as_ptr());
        LLVMSetAlignment(slot, 8);

        let name = c"llvm.used";
        let mut entries = Vec::new();
        let old = LLVMGetNamedGlobal(self.module, name.as_ptr());
        if !old.is_null() {
            let init = LLVMGetInitializer(old);
            let len = if init.is_null() { 0 } else { LLVMGetArrayLength2(LLVMTypeOf(init)) };
            for i in 0..len {
                entries.push(LLVMGetAggregateElement(init, i as u32));
            }
            LLVMDeleteGlobal(old);
        }
        entries.push(slot);
        let array_ty = LLVMArrayType2(self.ptr, entries.len() as u64);
        let used = LLVMAddGlobal(self.module, array_ty, name.as_ptr());
        LLVMSetInitializer(used, LLVMConstArray2(self.ptr, entries.as_mut_ptr(), entries.len() as u64));
        LLVMSetLinkage(used, LLVMLinkage::LLVMAppendingLinkage);
        LLVMSetSection(used, c"llvm.metadata".as_ptr());
    }
}

unsafe fn basic_blocks(function: LLVMValueRef) -> Vec<LLVMBasicBlockRef> {
    let mut blocks = Vec::new();
    let mut b = LLVMGetFirstBasicBlock(function);
    while !b.is_null() {
        blocks.push(b);
        b = LLVMGetNextBasicBlock(b);
    }
    blocks
}

unsafe fn instructions(block: LLVMBasicBlockRef) -> impl Iterator<Item = LLVMValueRef> {
    let mut next = LLVMGetFirstInstruction(block);
    std::iter::from_fn(move || {
        let current = next;
        if current.is_null() {
            return None;
        }
        next = LLVMGetNextInstruction(current);
        Some(current)
    })
}

/// The static counts of one block.
pub(crate) unsafe fn block_counts(block: LLVMBasicBlockRef) -> ClassCounts {
    let mut counts = ClassCounts::default();
    for inst in instructions(block) {
        if let Some((class, n)) = classify(inst) {
            counts.add(class, n);
        }
    }
    counts
}

/// Where one function's counts are kept and where they reach the thread's counters.
struct Plan {
    /// Per block: the instruction its flush goes before, if it has one.
    flushes: Vec<Option<LLVMValueRef>>,
    /// Per block: the induction variable it steps, if any.
    steppers: Vec<Option<Stepper>>,
    /// Per block: where it branches (an edge per successor, duplicates included).
    successors: Vec<Vec<usize>>,
    placement: placement::Placement,
}

/// An induction variable that a block steps: `next = phi + step`, an `add` of an `i64` or a
/// `getelementptr i8` of a pointer, where `phi` is in the header of the block's innermost loop
/// and takes `next` from every block of that loop.
struct Stepper {
    phi: LLVMValueRef,
    next: LLVMValueRef,
    step: i64,
}

impl Stepper {
    /// Which of a block's induction variables to count by: the one the loop compares to decide
    /// whether to go on (code generation keeps it in a register to the end, so reading it at the
    /// exit costs nothing), and an integer before a pointer.
    unsafe fn preference(&self) -> (bool, bool) {
        (self.compared(), LLVMGetTypeKind(LLVMTypeOf(self.phi)) == llvm_sys::LLVMTypeKind::LLVMIntegerTypeKind)
    }

    /// Whether the loop compares the stepped value (to its bound, mostly): a counted loop.
    unsafe fn compared(&self) -> bool {
        let mut user = LLVMGetFirstUse(self.next);
        while !user.is_null() {
            if !LLVMIsAICmpInst(LLVMGetUser(user)).is_null() {
                return true;
            }
            user = LLVMGetNextUse(user);
        }
        false
    }
}

impl Plan {
    unsafe fn new(blocks: &[LLVMBasicBlockRef], counts: &[ClassCounts]) -> Plan {
        let index: std::collections::HashMap<LLVMBasicBlockRef, usize> = blocks.iter().enumerate().map(|(i, &b)| (b, i)).collect();
        let flushes: Vec<Option<LLVMValueRef>> = blocks.iter().map(|&b| flush_point(b)).collect();
        let successors: Vec<Vec<usize>> = blocks
            .iter()
            .map(|&b| {
                let term = LLVMGetBasicBlockTerminator(b);
                (0..LLVMGetNumSuccessors(term)).map(|s| index[&LLVMGetSuccessor(term, s)]).collect()
            })
            .collect();
        let loops = placement::Loops::find(&successors);
        let mut steppers: Vec<Option<Stepper>> = blocks.iter().map(|_| None).collect();
        for (i, l) in loops.loops.iter().enumerate() {
            let in_loop = |b: LLVMBasicBlockRef| index.get(&b).is_some_and(|b| l.body.binary_search(b).is_ok());
            for phi in instructions(blocks[l.header]).take_while(|&i| !LLVMIsAPHINode(i).is_null()) {
                let Some(stepper) = stepper(phi, &in_loop) else { continue };
                let block = index[&LLVMGetInstructionParent(stepper.next)];
                if loops.innermost[block] == Some(i) && steppers[block].as_ref().is_none_or(|s| s.preference() < stepper.preference()) {
                    steppers[block] = Some(stepper);
                }
            }
        }
        let graph: Vec<placement::Block> = (0..blocks.len())
            .map(|b| placement::Block {
                successors: successors[b].clone(),
                flushes: flushes[b].is_some(),
                cold: flushes[b].is_some_and(|at| is_cold(at)),
                counts: insertion_point(blocks[b]).is_some().then(|| class_values(&counts[b])),
                steps: steppers[b].is_some(),
                counted: steppers[b].as_ref().is_some_and(|s| s.compared()),
            })
            .collect();
        let placement = placement::place(&graph, &loops);
        Plan { flushes, steppers, placement, successors }
    }
}

/// The stepper of the header phi `phi`, if it is an induction variable stepped by a constant
/// once per iteration, and what enters it from outside the loop can be recorded before the
/// entering block's terminator (the terminator itself is not what enters).
unsafe fn stepper(phi: LLVMValueRef, in_loop: &dyn Fn(LLVMBasicBlockRef) -> bool) -> Option<Stepper> {
    let ty = LLVMTypeOf(phi);
    let pointer = match LLVMGetTypeKind(ty) {
        llvm_sys::LLVMTypeKind::LLVMPointerTypeKind => true,
        llvm_sys::LLVMTypeKind::LLVMIntegerTypeKind if LLVMGetIntTypeWidth(ty) == 64 => false,
        _ => return None,
    };
    let mut next = None;
    for k in 0..LLVMCountIncoming(phi) {
        let (value, from) = (LLVMGetIncomingValue(phi, k), LLVMGetIncomingBlock(phi, k));
        if in_loop(from) {
            if next.is_some_and(|n| n != value) || LLVMIsAInstruction(value).is_null() {
                return None;
            }
            next = Some(value);
        } else if value == LLVMGetBasicBlockTerminator(from) {
            return None;
        }
    }
    let next = next?;
    let (base, offset) = match (LLVMGetInstructionOpcode(next), pointer) {
        (llvm_sys::LLVMOpcode::LLVMAdd, false) => {
            let (a, b) = (LLVMGetOperand(next, 0), LLVMGetOperand(next, 1));
            if a == phi { (a, b) } else { (b, a) }
        }
        (llvm_sys::LLVMOpcode::LLVMGetElementPtr, true)
            if LLVMGetNumOperands(next) == 2 && LLVMGetGEPSourceElementType(next) == LLVMInt8TypeInContext(LLVMGetTypeContext(ty)) =>
        {
            (LLVMGetOperand(next, 0), LLVMGetOperand(next, 1))
        }
        _ => return None,
    };
    if base != phi || LLVMIsAConstantInt(offset).is_null() {
        return None;
    }
    let step = LLVMConstIntGetSExtValue(offset);
    // Execution counts are recovered modulo 2^64 / step: a step below 2^16 leaves 2^48
    // iterations, more than a loop can run.
    (step != 0 && step.unsigned_abs() < 1 << 16).then_some(Stepper { phi, next, step })
}

/// The inverse of the odd number `odd` modulo 2^64 (Newton's iteration doubles the correct
/// bits each step; `odd` is its own inverse modulo 8).
fn inverse(odd: u64) -> u64 {
    let mut x = odd;
    for _ in 0..5 {
        x = x.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(x)));
    }
    x
}

/// A block's counts in counter order: ALU, memory, floating point, total.
fn class_values(c: &ClassCounts) -> [u64; 4] {
    [c.alu, c.mem, c.fp, c.total()]
}

/// Where a block's accumulated counts must be in the thread's counters: before its first
/// instruction that could lead to a read of them (a call of anything but an intrinsic, a return,
/// resuming or continuing to unwind). One flush per block is enough: nothing is added to the
/// accumulators between a block's flush and its end.
unsafe fn flush_point(block: LLVMBasicBlockRef) -> Option<LLVMValueRef> {
    use llvm_sys::LLVMOpcode::*;
    instructions(block).find(|&inst| match LLVMGetInstructionOpcode(inst) {
        LLVMRet | LLVMResume | LLVMCleanupRet => true,
        LLVMCall | LLVMInvoke | LLVMCallBr => may_call_code(inst),
        _ => false,
    })
}

/// Whether the flush before `at` is on a cold path: `at` calls a function marked `cold` (Rust's
/// `#[cold]`: panics, allocation failures, a hash table's growth) or its block ends in
/// `unreachable` (it calls something that never returns).
unsafe fn is_cold(at: LLVMValueRef) -> bool {
    if !LLVMIsAUnreachableInst(LLVMGetBasicBlockTerminator(LLVMGetInstructionParent(at))).is_null() {
        return true;
    }
    if LLVMIsACallInst(at).is_null() && LLVMIsAInvokeInst(at).is_null() {
        return false;
    }
    let cold = LLVMGetEnumAttributeKindForName(c"cold".as_ptr(), 4);
    let callee = LLVMGetCalledValue(at);
    !LLVMGetCallSiteEnumAttribute(at, LLVMAttributeFunctionIndex, cold).is_null()
        || (!LLVMIsAFunction(callee).is_null() && !LLVMGetEnumAttributeAtIndex(callee, LLVMAttributeFunctionIndex, cold).is_null())
}

/// Whether a call may run code that reads the counters: anything but an intrinsic (which LLVM
/// expands in place or turns into a call of the C library) and an empty inline-assembly
/// statement (what `std::hint::black_box` becomes).
unsafe fn may_call_code(call: LLVMValueRef) -> bool {
    if let Some(name) = intrinsic_name(call) {
        // A statepoint or patchpoint calls its target.
        return name.starts_with("llvm.experimental.gc.statepoint") || name.starts_with("llvm.experimental.patchpoint");
    }
    let callee = LLVMGetCalledValue(call);
    if callee.is_null() {
        return true;
    }
    if !LLVMIsAInlineAsm(callee).is_null() {
        let mut len = 0;
        let text = LLVMGetInlineAsmAsmString(callee, &mut len);
        return len > 0 && !std::slice::from_raw_parts(text as *const u8, len).iter().all(u8::is_ascii_whitespace);
    }
    true
}

unsafe fn first_non_phi(block: LLVMBasicBlockRef) -> LLVMValueRef {
    instructions(block).find(|&i| LLVMIsAPHINode(i).is_null()).expect("a well-formed block ends in a terminator")
}

/// Where a block's increments go: after its PHI nodes and EH pad; `None` for a `catchswitch`
/// block, which can hold nothing else.
unsafe fn insertion_point(block: LLVMBasicBlockRef) -> Option<LLVMValueRef> {
    let first = first_non_phi(block);
    if !LLVMIsACatchSwitchInst(first).is_null() {
        return None;
    }
    if !LLVMIsALandingPadInst(first).is_null() || !LLVMIsAFuncletPadInst(first).is_null() {
        return Some(LLVMGetNextInstruction(first));
    }
    Some(first)
}

/// The first instruction of the entry block after its leading allocas.
unsafe fn after_allocas(entry: LLVMBasicBlockRef) -> LLVMValueRef {
    instructions(entry).find(|&i| LLVMIsAAllocaInst(i).is_null()).expect("a well-formed block ends in a terminator")
}

unsafe fn value_name(value: LLVMValueRef) -> String {
    let mut len = 0;
    let ptr = LLVMGetValueName2(value, &mut len);
    String::from_utf8_lossy(std::slice::from_raw_parts(ptr as *const u8, len)).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn inverse_undoes_a_multiplication_by_an_odd_step() {
        for odd in [1u64, 3, 5, 7, 24_u64 >> 3, 0xFFFF, u64::MAX, 12345 * 2 + 1] {
            assert_eq!(odd.wrapping_mul(super::inverse(odd)), 1, "{odd}");
        }
        // A count recovered from how far a variable stepped by 12 = 4 * 3 moved.
        let (start, times) = (1000u64, 987_654u64);
        let moved = start.wrapping_add(times.wrapping_mul(12)).wrapping_sub(start);
        assert_eq!(moved.wrapping_mul(super::inverse(3)) >> 2, times);
    }
}
