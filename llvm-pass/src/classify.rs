//! Which class of operation each LLVM instruction is.
//!
//! | Instructions | Class |
//! |---|---|
//! | integer arithmetic and logic (`add` … `xor`, shifts, divisions), `icmp`, `select` | ALU |
//! | integer casts (`trunc`, `zext`, `sext`, `ptrtoint`, `ptrtoaddr`, `inttoptr`) | ALU |
//! | `getelementptr` (address arithmetic) | ALU |
//! | integer intrinsics (`llvm.ctpop`, `llvm.umax`, `llvm.sadd.with.overflow`, `llvm.bswap`, …) | ALU |
//! | `load`, `store`, `atomicrmw`, `cmpxchg`, `fence`, `va_arg` | memory |
//! | `llvm.memcpy`, `llvm.memmove`, `llvm.memset` (one operation each, whatever the length), masked, gather and scatter loads and stores, `llvm.prefetch` | memory |
//! | `fadd`, `fsub`, `fmul`, `fdiv`, `frem`, `fneg`, `fcmp`, FP casts (`fptrunc`, `fpext`, `fptosi`, `fptoui`, `sitofp`, `uitofp`) | floating point |
//! | intrinsics on floating-point values (`llvm.sqrt`, `llvm.fma`, `llvm.fmuladd`, `llvm.fabs`, `llvm.floor`, …) | floating point |
//! | calls and invokes of functions (the callee's own instructions are counted where it is instrumented), `br`, `switch`, `indirectbr`, `ret`, `resume`, `unreachable`, `callbr` | other |
//! | `phi`, `alloca`, `bitcast`, `addrspacecast`, `freeze`, `extractvalue`, `insertvalue`, `extractelement`, `insertelement`, `shufflevector` | other |
//! | `landingpad`, `cleanuppad`, `catchpad`, `catchswitch`, `cleanupret`, `catchret` | other |
//! | markers that emit no code: `llvm.dbg.*`, `llvm.lifetime.*`, `llvm.assume`, `llvm.expect`, `llvm.experimental.noalias.scope.decl`, `llvm.invariant.*`, `llvm.*annotation`, `llvm.sideeffect`, `llvm.pseudoprobe`, `llvm.donothing`, `llvm.objectsize`, `llvm.is.constant`, `llvm.threadlocal.address`, `llvm.type.test` | not counted |
//!
//! A vector instruction counts one operation per lane, so a loop counts the same whether or not
//! the optimiser vectorised it (a scalable vector counts its minimum lane count). Atomic
//! operations are memory operations like any other access; `llvm.fmuladd` and `llvm.fma` are one
//! floating-point operation, as the hardware executes them.

use llvm_sys::core::*;
use llvm_sys::prelude::*;
use llvm_sys::{LLVMOpcode, LLVMTypeKind};
use serde::{Deserialize, Serialize};

/// The classes the cost model weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Integer arithmetic, logic, comparisons, casts and address arithmetic.
    Alu,
    /// Loads, stores, atomics and memory intrinsics.
    Mem,
    /// Floating-point arithmetic, comparisons and conversions.
    Fp,
    /// Control flow, calls, data movement between registers.
    Other,
}

/// Static operation counts, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    /// ALU operations.
    pub alu: u64,
    /// Memory operations.
    pub mem: u64,
    /// Floating-point operations.
    pub fp: u64,
    /// Everything else that emits code.
    pub other: u64,
}

impl ClassCounts {
    /// Adds `n` operations of `class`.
    pub fn add(&mut self, class: OpClass, n: u64) {
        match class {
            OpClass::Alu => self.alu += n,
            OpClass::Mem => self.mem += n,
            OpClass::Fp => self.fp += n,
            OpClass::Other => self.other += n,
        }
    }

    /// All four classes together.
    pub fn total(&self) -> u64 {
        self.alu + self.mem + self.fp + self.other
    }
}

impl std::ops::AddAssign for ClassCounts {
    fn add_assign(&mut self, o: ClassCounts) {
        self.alu += o.alu;
        self.mem += o.mem;
        self.fp += o.fp;
        self.other += o.other;
    }
}

/// The class of `inst` and how many operations it is (its lane count), or `None` for a marker
/// that emits no code.
///
/// # Safety
/// `inst` must be a live instruction.
pub unsafe fn classify(inst: LLVMValueRef) -> Option<(OpClass, u64)> {
    use LLVMOpcode::*;
    let class = match LLVMGetInstructionOpcode(inst) {
        LLVMAdd | LLVMSub | LLVMMul | LLVMUDiv | LLVMSDiv | LLVMURem | LLVMSRem | LLVMShl | LLVMLShr
        | LLVMAShr | LLVMAnd | LLVMOr | LLVMXor | LLVMICmp | LLVMSelect | LLVMTrunc | LLVMZExt
        | LLVMSExt | LLVMPtrToInt | LLVMPtrToAddr | LLVMIntToPtr | LLVMGetElementPtr => OpClass::Alu,
        LLVMLoad | LLVMStore | LLVMAtomicRMW | LLVMAtomicCmpXchg | LLVMFence | LLVMVAArg => OpClass::Mem,
        LLVMFAdd | LLVMFSub | LLVMFMul | LLVMFDiv | LLVMFRem | LLVMFNeg | LLVMFCmp | LLVMFPTrunc
        | LLVMFPExt | LLVMFPToSI | LLVMFPToUI | LLVMSIToFP | LLVMUIToFP => OpClass::Fp,
        LLVMCall | LLVMInvoke | LLVMCallBr => match intrinsic_name(inst) {
            Some(name) => classify_intrinsic(inst, name)?,
            None => return Some((OpClass::Other, 1)),
        },
        _ => OpClass::Other,
    };
    let lanes = if class == OpClass::Other { 1 } else { lanes(inst) };
    Some((class, lanes))
}

/// The name of the intrinsic `call` calls, if it calls one directly.
pub(crate) unsafe fn intrinsic_name<'a>(call: LLVMValueRef) -> Option<&'a str> {
    let callee = LLVMGetCalledValue(call);
    if callee.is_null() || LLVMIsAFunction(callee).is_null() || LLVMGetIntrinsicID(callee) == 0 {
        return None;
    }
    let mut len = 0;
    let ptr = LLVMGetValueName2(callee, &mut len);
    std::str::from_utf8(std::slice::from_raw_parts(ptr as *const u8, len)).ok()
}

const MARKERS: &[&str] = &[
    "llvm.dbg.",
    "llvm.lifetime.",
    "llvm.assume",
    "llvm.expect",
    "llvm.experimental.noalias.scope.decl",
    "llvm.invariant.",
    "llvm.launder.invariant.group",
    "llvm.strip.invariant.group",
    "llvm.var.annotation",
    "llvm.ptr.annotation",
    "llvm.annotation",
    "llvm.codeview.annotation",
    "llvm.sideeffect",
    "llvm.pseudoprobe",
    "llvm.donothing",
    "llvm.objectsize",
    "llvm.is.constant",
    "llvm.threadlocal.address",
    "llvm.type.test",
    "llvm.public.type.test",
];

const MEMORY: &[&str] = &[
    "llvm.memcpy",
    "llvm.memmove",
    "llvm.memset",
    "llvm.masked.",
    "llvm.vp.load",
    "llvm.vp.store",
    "llvm.vp.gather",
    "llvm.vp.scatter",
    "llvm.prefetch",
];

/// Whether the intrinsic `name` reads or writes memory (`llvm.memcpy`, masked loads, …).
pub(crate) fn is_memory_intrinsic(name: &str) -> bool {
    MEMORY.iter().any(|m| name.starts_with(m))
}

unsafe fn classify_intrinsic(inst: LLVMValueRef, name: &str) -> Option<OpClass> {
    if MARKERS.iter().any(|m| name.starts_with(m)) {
        return None;
    }
    if is_memory_intrinsic(name) {
        return Some(OpClass::Mem);
    }
    if involves_fp(inst) {
        return Some(OpClass::Fp);
    }
    if name.starts_with("llvm.trap") || name.starts_with("llvm.debugtrap") || name.starts_with("llvm.stack") {
        return Some(OpClass::Other);
    }
    Some(OpClass::Alu)
}

/// Every type the instruction touches: its result and its operands (a call's callee excluded).
unsafe fn types(inst: LLVMValueRef) -> impl Iterator<Item = LLVMTypeRef> {
    let operands = LLVMGetNumOperands(inst).max(0) as u32;
    let operands = match LLVMGetInstructionOpcode(inst) {
        LLVMOpcode::LLVMCall | LLVMOpcode::LLVMInvoke | LLVMOpcode::LLVMCallBr => LLVMGetNumArgOperands(inst),
        _ => operands,
    };
    std::iter::once(LLVMTypeOf(inst)).chain((0..operands).map(move |i| LLVMTypeOf(LLVMGetOperand(inst, i))))
}

unsafe fn involves_fp(inst: LLVMValueRef) -> bool {
    types(inst).any(|ty| is_fp(element(ty)))
}

/// The lane count: the longest vector the instruction reads or writes, else 1.
unsafe fn lanes(inst: LLVMValueRef) -> u64 {
    types(inst)
        .map(|ty| match LLVMGetTypeKind(ty) {
            LLVMTypeKind::LLVMVectorTypeKind | LLVMTypeKind::LLVMScalableVectorTypeKind => LLVMGetVectorSize(ty) as u64,
            _ => 1,
        })
        .max()
        .unwrap_or(1)
        .max(1)
}

unsafe fn element(ty: LLVMTypeRef) -> LLVMTypeRef {
    match LLVMGetTypeKind(ty) {
        LLVMTypeKind::LLVMVectorTypeKind | LLVMTypeKind::LLVMScalableVectorTypeKind => LLVMGetElementType(ty),
        _ => ty,
    }
}

unsafe fn is_fp(ty: LLVMTypeRef) -> bool {
    use LLVMTypeKind::*;
    matches!(
        LLVMGetTypeKind(ty),
        LLVMHalfTypeKind | LLVMBFloatTypeKind | LLVMFloatTypeKind | LLVMDoubleTypeKind | LLVMX86_FP80TypeKind | LLVMFP128TypeKind | LLVMPPC_FP128TypeKind
    )
}
