//! `ergon-instrument` end to end: a real rustc module in, an object and a report out, and a
//! clear error (and no output file) for every bad input.

use std::path::Path;
use std::process::{Command, Output};

fn instrument(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ergon-instrument")).args(args).output().expect("ergon-instrument runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Bitcode whose identification block names `producer` and which has no module after it.
fn bitcode_from(producer: &str) -> Vec<u8> {
    struct Bits(Vec<u8>, usize);
    impl Bits {
        fn fixed(&mut self, value: u64, width: u32) {
            for i in 0..width {
                if self.1 % 8 == 0 {
                    self.0.push(0);
                }
                let last = self.0.len() - 1;
                self.0[last] |= (((value >> i) & 1) as u8) << (self.1 % 8);
                self.1 += 1;
            }
        }
        fn vbr(&mut self, mut value: u64, width: u32) {
            let high = 1 << (width - 1);
            loop {
                if value < high {
                    return self.fixed(value, width);
                }
                self.fixed((value & (high - 1)) | high, width);
                value >>= width - 1;
            }
        }
        fn align32(&mut self) {
            while self.1 % 32 != 0 {
                self.fixed(0, 1);
            }
        }
    }
    let mut b = Bits(b"BC\xC0\xDE".to_vec(), 32);
    b.fixed(1, 2); // ENTER_SUBBLOCK
    b.vbr(13, 8); // IDENTIFICATION_BLOCK
    b.vbr(5, 4); // abbreviation width inside
    b.align32();
    b.fixed(8, 32); // length in words
    b.fixed(3, 5); // UNABBREV_RECORD
    b.vbr(1, 6); // STRING
    b.vbr(producer.len() as u64, 6);
    for c in producer.bytes() {
        b.vbr(c.into(), 6);
    }
    b.fixed(3, 5);
    b.vbr(2, 6); // EPOCH
    b.vbr(1, 6);
    b.vbr(0, 6);
    b.fixed(0, 5); // END_BLOCK
    b.align32();
    b.0
}

#[test]
fn a_rustc_module_becomes_an_object_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("work.rs");
    std::fs::write(&src, "#[no_mangle] pub fn work(n: u64) -> f64 { (0..n).map(|i| i as f64).sum() }\n").unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["-O", "--emit=llvm-bc", "--crate-type=lib", "-o"])
        .arg(dir.path().join("work.bc"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    let (obj, report) = (dir.path().join("work.o"), dir.path().join("work.json"));
    let out = instrument(&[dir.path().join("work.bc").as_os_str(), "-o".as_ref(), obj.as_os_str(), "--emit".as_ref(), "obj".as_ref(), "--report".as_ref(), report.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&obj).unwrap().starts_with(b"\x7fELF"));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let work = report["functions"].as_array().unwrap().iter().find(|f| f["name"] == "work").expect("work is reported");
    assert!(work["fp"].as_u64().unwrap() >= 1, "{work}");
    assert!(work["blocks"].as_u64().unwrap() >= 2, "{work}");
    // Bitcode out is valid input again, but refused a second instrumentation.
    let bc = dir.path().join("again.bc");
    assert!(instrument(&[dir.path().join("work.bc").as_os_str(), "-o".as_ref(), bc.as_os_str()]).status.success());
    let twice = instrument(&[bc.as_os_str(), "-o".as_ref(), dir.path().join("x.bc").as_os_str()]);
    assert!(!twice.status.success());
    assert!(stderr(&twice).contains("already instrumented"), "{}", stderr(&twice));
}

/// The blocks of the function whose name contains `name` that branch back to themselves (the
/// bodies of single-block loops), in the textual IR `ll`.
fn self_loops<'a>(ll: &'a str, name: &str) -> Vec<&'a str> {
    let start = ll.lines().position(|l| l.starts_with("define") && l.contains(name)).unwrap_or_else(|| panic!("no function {name}"));
    let body: Vec<&str> = ll.lines().skip(start + 1).take_while(|l| *l != "}").collect();
    let mut blocks = Vec::new();
    let mut begin = 0;
    for (i, line) in body.iter().enumerate() {
        let label = line.split(':').next().unwrap_or_default();
        if !line.starts_with(' ') && line.contains(':') && !label.is_empty() {
            begin = i;
        }
        if line.trim_start().starts_with("br ") && line.contains(&format!("%{}", body[begin].split(':').next().unwrap())) {
            let text = &ll[ll.find(body[begin]).unwrap()..];
            let end = text.find(line.trim_start()).unwrap() + line.trim_start().len();
            blocks.push(&text[..end]);
        }
    }
    blocks
}

/// The pass's own instructions in a block: increments of its accumulators and counts, their
/// values carried around a loop, accesses to the thread's counters (all named `ergon…`).
fn counting_work(block: &str) -> usize {
    block.lines().filter(|l| l.contains("%ergon") || l.contains("@ergon_op_counters")).count()
}

#[test]
fn counts_leave_loops_without_calls_early_exit_included() {
    // The exactness fixtures' own functions (`cargo test --test exactness` runs them
    // instrumented with the same default pipeline and checks their counts): a counted loop, one
    // that returns early at a known iteration, and one of volatile loads and stores.
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/src/lib.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let bc = dir.path().join("fixtures.bc");
    let status = Command::new(rustc).args(["-O", "--emit=llvm-bc", "--crate-type=lib", "--crate-name=fixtures", "-o"]).arg(&bc).arg(&src).status().unwrap();
    assert!(status.success());
    let ll = |after: Option<&str>| {
        let out_path = dir.path().join("out.ll");
        let mut args: Vec<&std::ffi::OsStr> = vec![bc.as_os_str(), "-o".as_ref(), out_path.as_os_str(), "--emit".as_ref(), "ll".as_ref()];
        if let Some(after) = after {
            args.push("--after".as_ref());
            args.push(std::ffi::OsStr::new(after));
        }
        let out = instrument(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read_to_string(&out_path).unwrap()
    };
    // Without the after-pipeline the pass's increments stand where it put them, in every block.
    let as_inserted = ll(Some(""));
    let optimised = ll(None);
    for function in ["fp_adds", "early_return", "loads_and_stores"] {
        let inserted: usize = self_loops(&as_inserted, function).iter().map(|b| counting_work(b)).sum();
        assert!(inserted > 0, "{function}: as inserted, every iteration counts");
        let loops = self_loops(&optimised, function);
        assert!(!loops.is_empty(), "{function} still loops");
        for body in loops {
            assert_eq!(counting_work(body), 0, "{function}: the loop still counts in every iteration:\n{body}");
        }
    }
}

fn refused(input: &Path, output: &Path) -> String {
    let out = instrument(&[input.as_os_str(), "-o".as_ref(), output.as_os_str()]);
    assert!(!out.status.success());
    assert!(!output.exists(), "nothing is written on failure");
    stderr(&out)
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bc");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    let e = refused(&dir.path().join("missing.bc"), &out);
    assert!(e.contains("cannot read") && e.contains("missing.bc"), "{e}");

    let e = refused(&write("empty.bc", b""), &out);
    assert!(e.contains("empty.bc is empty"), "{e}");

    let e = refused(&write("garbage.bc", &[0xff, 0xfe, 0x00, 0x42, 0x99]), &out);
    assert!(e.contains("garbage.bc is not a valid LLVM module") && e.contains("neither LLVM bitcode"), "{e}");

    let e = refused(&write("broken.ll", b"define i32 @f( {\n"), &out);
    assert!(e.contains("broken.ll is not a valid LLVM module"), "{e}");

    // Parses, but a value is used before it is defined: the verifier says so before the pass
    // walks its control flow.
    let e = refused(&write("undominated.ll", b"define i32 @f() {\n  %a = add i32 %b, 1\n  %b = add i32 1, 1\n  ret i32 %a\n}\n"), &out);
    assert!(e.contains("undominated.ll is not a valid LLVM module") && e.contains("does not verify"), "{e}");

    let e = refused(&write("truncated.bc", b"BC\xC0\xDE\x35\x14\x00\x00"), &out);
    assert!(e.contains("truncated.bc is not a valid LLVM module"), "{e}");

    let e = refused(&write("newer.bc", &bitcode_from("LLVM99.0.0-rust-2.0.0-nightly")), &out);
    assert!(e.contains("written by LLVM99.0.0-rust-2.0.0-nightly") && e.contains("runs on LLVM 22."), "{e}");
}

#[test]
fn an_unwritable_output_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.ll");
    std::fs::write(&input, "define void @f() {\n  ret void\n}\n").unwrap();
    let output = dir.path().join("no-such-dir").join("out.o");
    let e = refused(&input, &output);
    assert!(e.contains("cannot write") && e.contains("no-such-dir"), "{e}");
}
