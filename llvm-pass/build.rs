//! Links the LLVM 22 that rustc itself uses.
//!
//! The rustup toolchain ships `libLLVM-22-rust-<version>.so` in its sysroot; it exports the LLVM
//! C API and is exactly the LLVM that wrote the bitcode we read, so no system LLVM is needed.
//! Without it (a toolchain not installed by rustup), Debian's `llvm-22-dev` in
//! `/usr/lib/llvm-22/lib` is used. `ERGON_LLVM_LIB_DIR` (with `ERGON_LLVM_LIB`, the library name
//! without `lib` and `.so`) points the build at any other LLVM 22.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ERGON_LLVM_LIB_DIR");
    println!("cargo:rerun-if-env-changed=ERGON_LLVM_LIB");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let (dir, lib) = match std::env::var_os("ERGON_LLVM_LIB_DIR") {
        Some(dir) => {
            let lib = std::env::var("ERGON_LLVM_LIB").unwrap_or_else(|_| "LLVM-22".into());
            (PathBuf::from(dir), lib)
        }
        None => sysroot_llvm().or_else(|problem| debian_llvm().ok_or(problem)).unwrap_or_else(|problem| {
            panic!(
                "\n\nergon-llvm-pass needs LLVM 22 as a shared library, and {problem}.\n\
                 With rustup, the toolchain's own copy is used: `rustup component list --installed` \
                 should show the rust-std and rustc components of 1.95.\n\
                 Otherwise install Debian's LLVM 22 (`apt-get update && apt-get install llvm-22-dev`) \
                 and build with ERGON_LLVM_LIB_DIR=/usr/lib/llvm-22/lib ERGON_LLVM_LIB=LLVM-22.\n\n"
            )
        }),
    };
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib={lib}");
    // The binaries find the library where it was at build time, without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:rustc-env=ERGON_LLVM_LIB_DIR={}", dir.display());
}

/// The sysroot's `lib/libLLVM-22-rust-*.so`, as `(dir, link name)`.
fn sysroot_llvm() -> Result<(PathBuf, String), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("`{rustc} --print sysroot` could not run ({e})"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = sysroot.join("lib");
    find_llvm_in(&dir).ok_or_else(|| format!("{} holds no libLLVM-22-rust-*.so", dir.display()))
        .map(|lib| (dir, lib))
}

/// Debian's `llvm-22-dev`, for toolchains installed without rustup.
fn debian_llvm() -> Option<(PathBuf, String)> {
    let dir = PathBuf::from("/usr/lib/llvm-22/lib");
    dir.join("libLLVM-22.so").exists().then(|| (dir, "LLVM-22".to_string()))
}

fn find_llvm_in(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let stem = name.strip_prefix("lib")?.strip_suffix(".so")?;
        stem.starts_with("LLVM-22").then(|| stem.to_string())
    })
}
