//! Building and running the fixtures instrumented, through the one command users run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("llvm-pass sits in the workspace").to_path_buf()
}

/// Builds `ergon-pass-fixtures` with `cargo ergon`, it and the calibration workloads instrumented
/// (once per test binary), and returns the
/// directory that holds its executables.
pub fn instrumented_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO_BIN_EXE_cargo-ergon"))
            .current_dir(workspace())
            .args(["ergon", "build", "--release", "--locked", "-p", "ergon-pass-fixtures", "--instrument", "ergon-pass-fixtures,ergon-workloads"])
            .status()
            .expect("cargo-ergon runs");
        assert!(status.success(), "cargo ergon build of the fixtures failed: {status}");
        workspace().join("target/ergon/release")
    })
}
