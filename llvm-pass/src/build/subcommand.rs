//! The cargo subcommand part: `cargo ergon <cargo command> [--instrument CRATES] [cargo args]`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

use super::{ENV_AFTER, ENV_BEFORE, ENV_CACHE, ENV_CRATES};

/// What to build and which crates to instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The cargo command (`build`, `test`, `run`, `bench`, …).
    pub command: OsString,
    /// Crate or package names to instrument; empty means every crate of the workspace.
    pub instrument: Vec<String>,
    /// Everything else, passed to cargo as given.
    pub cargo_args: Vec<OsString>,
}

/// Why `cargo ergon` could not start the build.
#[derive(Debug, thiserror::Error)]
pub enum SubcommandError {
    /// `cargo metadata` failed.
    #[error("`cargo metadata` failed: {0}")]
    Metadata(String),
    /// cargo could not be run.
    #[error("cannot run cargo: {0}")]
    Cargo(std::io::Error),
    /// This executable could not be found.
    #[error("cannot find the cargo-ergon executable: {0}")]
    Exe(std::io::Error),
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    target_directory: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

impl Metadata {
    fn read(manifest: Option<&OsString>) -> Result<Metadata, SubcommandError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["metadata", "--no-deps", "--format-version", "1"]);
        if let Some(m) = manifest {
            cmd.arg("--manifest-path").arg(m);
        }
        let out = cmd.output().map_err(SubcommandError::Cargo)?;
        if !out.status.success() {
            return Err(SubcommandError::Metadata(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| SubcommandError::Metadata(e.to_string()))
    }

    /// The crate names of a package's compiled targets (not its build script or proc macros).
    fn crates_of(package: &Package) -> impl Iterator<Item = String> + '_ {
        package
            .targets
            .iter()
            .filter(|t| !t.kind.iter().any(|k| k == "custom-build" || k == "proc-macro"))
            .map(|t| t.name.replace('-', "_"))
    }

    /// Crate names for the request: the named crates (a package name stands for its crates), or
    /// every crate of the workspace.
    fn resolve(&self, names: &[String]) -> BTreeSet<String> {
        let members: Vec<&Package> = self.packages.iter().filter(|p| self.workspace_members.contains(&p.id)).collect();
        if names.is_empty() {
            return members.iter().flat_map(|p| Self::crates_of(p)).collect();
        }
        names
            .iter()
            .flat_map(|name| match self.packages.iter().find(|p| &p.name == name) {
                Some(p) => Self::crates_of(p).collect::<Vec<_>>(),
                None => vec![name.replace('-', "_")],
            })
            .collect()
    }
}

/// Splits `cargo ergon` arguments: `--instrument` (anywhere before `--`) is ours, the rest is
/// cargo's.
pub fn parse(args: &[OsString]) -> Option<Request> {
    let mut args = args.iter().cloned().peekable();
    let mut instrument = Vec::new();
    let mut rest = Vec::new();
    let mut passthrough = false;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if passthrough {
            rest.push(arg);
        } else if text == "--" {
            passthrough = true;
            rest.push(arg);
        } else if text == "--instrument" {
            instrument.extend(split(&args.next()?.to_string_lossy()));
        } else if let Some(v) = text.strip_prefix("--instrument=") {
            instrument.extend(split(v));
        } else {
            rest.push(arg);
        }
    }
    let mut rest = rest.into_iter();
    let command = rest.next()?;
    Some(Request { command, instrument, cargo_args: rest.collect() })
}

fn split(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Runs cargo for the request; returns cargo's exit code.
pub fn run(request: &Request) -> Result<i32, SubcommandError> {
    let manifest = request.cargo_args.windows(2).find(|w| w[0] == "--manifest-path").map(|w| &w[1]);
    let metadata = Metadata::read(manifest)?;
    let crates = metadata.resolve(&request.instrument);
    let crates = crates.into_iter().collect::<Vec<_>>().join(",");
    let user_target_dir = request.cargo_args.iter().any(|a| a.to_string_lossy().starts_with("--target-dir"))
        || std::env::var_os("CARGO_TARGET_DIR").is_some();
    let target_dir = metadata.target_directory.join("ergon");
    let this = std::env::current_exe().map_err(SubcommandError::Exe)?;

    eprintln!("cargo-ergon: instrumenting crates: {crates}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg(&request.command).args(&request.cargo_args);
    cmd.env("RUSTC_WRAPPER", &this).env(ENV_CRATES, &crates);
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags(&crates, &pass_identity(&this)));
    if !user_target_dir {
        cmd.env("CARGO_TARGET_DIR", &target_dir);
    }
    cmd.env(ENV_CACHE, target_dir.join("ergon-cache"));
    let status = cmd.status().map_err(SubcommandError::Cargo)?;
    Ok(status.code().unwrap_or(1))
}

/// This build of the pass: its version, when its executable was built and the pipelines it was
/// told to run (`ERGON_PASS_BEFORE`, `ERGON_PASS_AFTER`), so that changing any of them relinks.
fn pass_identity(exe: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let built = std::fs::metadata(exe)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let pipelines = [ENV_BEFORE, ENV_AFTER].map(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()));
    let digest = Sha256::digest(format!("{pipelines:?}"));
    let pipelines: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{built}-{pipelines}", env!("CARGO_PKG_VERSION"))
}

/// The user's rustflags plus `--cfg ergon_instrument="…"` and `--cfg ergon_pass="…"`, which make
/// cargo rebuild when the selection or the pass changes (cargo does not see what the wrapper
/// adds, nor which linker instruments).
fn rustflags(crates: &str, pass: &str) -> String {
    let mut flags: Vec<String> = match std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        Ok(encoded) if !encoded.is_empty() => encoded.split('\x1f').map(str::to_string).collect(),
        _ => std::env::var("RUSTFLAGS").unwrap_or_default().split_whitespace().map(str::to_string).collect(),
    };
    flags.push("--cfg".into());
    flags.push(format!("ergon_instrument=\"{crates}\""));
    flags.push("--cfg".into());
    flags.push(format!("ergon_pass=\"{pass}\""));
    flags.join("\x1f")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn instrument_is_ours_anywhere_before_the_separator() {
        let r = parse(&args("build --release --instrument actors,cluster-demo -p ergon-examples")).unwrap();
        assert_eq!(r.command, "build");
        assert_eq!(r.instrument, ["actors", "cluster-demo"]);
        assert_eq!(r.cargo_args, args("--release -p ergon-examples"));
        let r = parse(&args("--instrument=a test -- --instrument b")).unwrap();
        assert_eq!(r.command, "test");
        assert_eq!(r.instrument, ["a"]);
        assert_eq!(r.cargo_args, args("-- --instrument b"));
        assert!(parse(&args("--instrument")).is_none());
        assert!(parse(&[]).is_none());
    }

    #[test]
    fn package_names_stand_for_their_crates() {
        let metadata: Metadata = serde_json::from_str(
            r#"{"packages":[{"id":"a","name":"ergon-actors","targets":[{"name":"actors","kind":["lib"]},{"name":"build-script-build","kind":["custom-build"]}]},
                            {"id":"b","name":"ergon-examples","targets":[{"name":"cluster-demo","kind":["bin"]}]}],
                "workspace_members":["a","b"],"target_directory":"/t"}"#,
        )
        .unwrap();
        assert_eq!(metadata.resolve(&[]), ["actors", "cluster_demo"].map(String::from).into());
        assert_eq!(metadata.resolve(&["ergon-actors".into(), "serde".into()]), ["actors", "serde"].map(String::from).into());
    }
}
