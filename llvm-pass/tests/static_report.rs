//! The static report agrees with a hand count, and instrumented IR with PHI nodes and every kind
//! of EH pad still verifies.

use inkwell::context::Context;
use llvm_pass::classify::ClassCounts;
use llvm_pass::{instrument_module, module_io, Options};

/// Counting the module as written, without optimising it first.
fn as_written() -> Options {
    Options { before: String::new(), ..Options::default() }
}

const MIX: &str = r#"
target triple = "x86_64-unknown-linux-gnu"

declare i64 @ext(i64)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare double @llvm.sqrt.f64(double)
declare void @llvm.assume(i1)
declare void @llvm.lifetime.start.p0(ptr)

define double @mix(ptr %p, i64 %n, double %x) {
entry:
  %slot = alloca i64                                 ; other
  call void @llvm.lifetime.start.p0(ptr %slot)       ; not counted
  %a = add i64 %n, 1                                 ; alu
  %c = icmp eq i64 %a, 0                             ; alu
  br i1 %c, label %zero, label %work                 ; other
work:
  call void @llvm.assume(i1 true)                    ; not counted
  %v = load double, ptr %p                           ; mem
  %f = fadd double %v, %x                            ; fp
  %g = fmul double %f, %f                            ; fp
  %lt = fcmp olt double %f, %x                       ; fp
  %t = fptosi double %g to i64                       ; fp
  store double %g, ptr %p                            ; mem
  %q = getelementptr i8, ptr %p, i64 8               ; alu
  %w = load <4 x float>, ptr %q                      ; mem x4
  %w2 = fadd <4 x float> %w, %w                      ; fp x4
  store <4 x float> %w2, ptr %q                      ; mem x4
  call void @llvm.memcpy.p0.p0.i64(ptr %p, ptr %q, i64 16, i1 false)   ; mem
  %s = call double @llvm.sqrt.f64(double %g)         ; fp
  %old = atomicrmw add ptr %slot, i64 1 seq_cst      ; mem
  %z = zext i1 %lt to i64                            ; alu
  %r = call i64 @ext(i64 %z)                         ; other
  br label %zero                                     ; other
zero:
  %phi = phi double [ 0.0, %entry ], [ %s, %work ]   ; other
  ret double %phi                                    ; other
}
"#;

#[test]
fn the_report_matches_a_hand_count() {
    let ctx = Context::create();
    let module = module_io::parse(&ctx, MIX.as_bytes(), "mix.ll".as_ref()).unwrap();
    let report = instrument_module(&module, &as_written()).unwrap();
    let mix = report.function("mix").expect("mix is reported");
    assert_eq!(mix.blocks, 3);
    assert_eq!(mix.counts, ClassCounts { alu: 4, mem: 12, fp: 9, other: 6 });
    assert_eq!(report.totals, mix.counts);
    assert_eq!(report.functions.len(), 1, "declarations have no body to report");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["functions"][0]["alu"], 4);
    assert_eq!(json["functions"][0]["demangled"], "mix");
}

#[test]
fn rust_symbols_are_demangled() {
    let ir = "define void @_ZN5ergon4gate3run17h0123456789abcdefE() {\n  ret void\n}\n";
    let ctx = Context::create();
    let module = module_io::parse(&ctx, ir.as_bytes(), "m.ll".as_ref()).unwrap();
    let report = instrument_module(&module, &as_written()).unwrap();
    assert_eq!(report.functions[0].demangled, "ergon::gate::run");
}

/// Landing pads (Itanium EH, as on Linux) and funclet pads (Windows EH), with PHI nodes before
/// them: the increments must go after the PHIs and the pad, or the module does not verify.
const EH: &str = r#"
target triple = "x86_64-unknown-linux-gnu"

declare i32 @__gxx_personality_v0(...)
declare i32 @__CxxFrameHandler3(...)
declare void @may_throw(i64)

define i64 @itanium(i64 %n) personality ptr @__gxx_personality_v0 {
entry:
  %a = add i64 %n, 1
  invoke void @may_throw(i64 %a) to label %ok unwind label %pad
ok:
  %b = mul i64 %a, 3
  invoke void @may_throw(i64 %b) to label %done unwind label %pad
pad:
  %which = phi i64 [ %a, %entry ], [ %b, %ok ]
  %lp = landingpad { ptr, i32 } cleanup
  %c = add i64 %which, 7
  resume { ptr, i32 } %lp
done:
  ret i64 %b
}

define void @windows(i64 %n) personality ptr @__CxxFrameHandler3 {
entry:
  invoke void @may_throw(i64 %n) to label %ok unwind label %dispatch
dispatch:
  %cs = catchswitch within none [label %catch] unwind label %cleanup
catch:
  %cp = catchpad within %cs [ptr null, i32 64, ptr null]
  %x = add i64 %n, 1
  catchret from %cp to label %ok
cleanup:
  %cl = cleanuppad within none []
  %y = mul i64 %n, 2
  cleanupret from %cl unwind to caller
ok:
  ret void
}
"#;

#[test]
fn eh_pads_and_phis_keep_the_module_valid() {
    let ctx = Context::create();
    let module = module_io::parse(&ctx, EH.as_bytes(), "eh.ll".as_ref()).unwrap();
    let report = instrument_module(&module, &as_written()).expect("instrumented EH code verifies");
    let itanium = report.function("itanium").unwrap();
    assert_eq!(itanium.blocks, 4);
    assert_eq!(itanium.counts, ClassCounts { alu: 3, mem: 0, fp: 0, other: 6 });
    let windows = report.function("windows").unwrap();
    assert_eq!(windows.blocks, 5);
    // The catchswitch block holds only the catchswitch and gets no increment; it is still
    // reported statically.
    assert_eq!(windows.counts, ClassCounts { alu: 2, mem: 0, fp: 0, other: 7 });
    // And the result compiles to an object.
    let machine = module_io::target_machine(&module, "x86-64").unwrap();
    let object = module_io::emit(&module, &machine, module_io::Emit::Obj).unwrap();
    assert!(object.starts_with(b"\x7fELF"));
}

#[test]
fn instrumenting_twice_is_refused() {
    let ctx = Context::create();
    let module = module_io::parse(&ctx, MIX.as_bytes(), "mix.ll".as_ref()).unwrap();
    instrument_module(&module, &as_written()).unwrap();
    let err = instrument_module(&module, &as_written()).unwrap_err();
    assert!(err.to_string().contains("already instrumented"), "{err}");
}
