//! Adds per-block increments of the per-thread operation counters.
//!
//! Every instrumented module refers to two symbols, both weak definitions that the linker merges
//! with the ones in ergon's run time (`energy/runtime/op_counters.c`), so an instrumented object
//! links with or without the energy crate:
//!
//! - `ergon_op_counters`, a thread-local `[4 x i64]`: ALU, memory, floating point, total;
//! - `ergon_instrumented_modules`, an `i64` that a constructor in each instrumented module
//!   increments at start-up (from `.init_array`), which is how the run time knows the counts are real.
//!
//! At the first insertion point of each block (after its PHI nodes and its EH pad, if any) the
//! pass adds the block's static counts to the counters. A block that begins with a
//! `catchswitch` cannot hold other instructions; it is left uncounted (it holds nothing but the
//! `catchswitch`). The counter address is computed once per function, in the entry block, which
//! dominates every other block.

use std::ffi::CString;

use llvm_sys::core::*;
use llvm_sys::prelude::*;
use llvm_sys::{LLVMAtomicOrdering, LLVMAtomicRMWBinOp, LLVMLinkage, LLVMThreadLocalMode};

use crate::classify::{classify, intrinsic_name, is_memory_intrinsic, ClassCounts};
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
            for &block in &blocks {
                for inst in instructions(block).filter(|&i| is_program_memory_access(i)) {
                    self.scopes.mark_program_access(self.ctx, inst);
                }
            }
            let entry = blocks[0];
            LLVMPositionBuilderBefore(self.builder, after_allocas(entry));
            let (ty, f) = self.tls_address;
            let mut args = [self.counters];
            let base = LLVMBuildCall2(self.builder, ty, f, args.as_mut_ptr(), 1, c"ergon.ops".as_ptr());
            for (&block, c) in blocks.iter().zip(&counts) {
                if c.total() == 0 {
                    continue;
                }
                if block == entry {
                    // After the counter address, which is computed here.
                    LLVMPositionBuilderBefore(self.builder, LLVMGetNextInstruction(base));
                } else {
                    let Some(at) = insertion_point(block) else { continue };
                    LLVMPositionBuilderBefore(self.builder, at);
                }
                self.bump(base, ALU, c.alu);
                self.bump(base, MEM, c.mem);
                self.bump(base, FP, c.fp);
                self.bump(base, TOTAL, c.total());
            }
        }
        FunctionReport::new(value_name(function), blocks.len(), total)
    }

    /// `counters[index] += n` at the builder's position.
    unsafe fn bump(&self, base: LLVMValueRef, index: u64, n: u64) {
        if n == 0 {
            return;
        }
        let slot = if index == 0 {
            base
        } else {
            let mut idx = [LLVMConstInt(self.i64, index, 0)];
            LLVMBuildInBoundsGEP2(self.builder, self.i64, base, idx.as_mut_ptr(), 1, c"".as_ptr())
        };
        let old = LLVMBuildLoad2(self.builder, self.i64, slot, c"".as_ptr());
        LLVMSetAlignment(old, 8);
        self.scopes.mark_counter_access(old);
        let new = LLVMBuildAdd(self.builder, old, LLVMConstInt(self.i64, n, 0), c"".as_ptr());
        let store = LLVMBuildStore(self.builder, new, slot);
        LLVMSetAlignment(store, 8);
        self.scopes.mark_counter_access(store);
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
