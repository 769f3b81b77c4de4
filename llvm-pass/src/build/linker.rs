//! The linker part: instruments the bitcode among the link inputs, then runs the real linker.

use std::ffi::OsString;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{ENV_AFTER, ENV_BEFORE, ENV_CACHE, ENV_LINKER};
use crate::module_io::{self, is_bitcode, Emit};
use crate::{instrument_bytes, Options, PassError};

/// Why a link through `cargo-ergon` failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A module could not be instrumented.
    #[error("instrumenting {input}: {source}")]
    Instrument { input: String, source: PassError },
    /// A link input could not be read or rewritten.
    #[error("{path}: {detail}")]
    Input { path: PathBuf, detail: String },
    /// The scratch directory could not be made.
    #[error("cannot create a scratch directory: {0}")]
    Scratch(std::io::Error),
    /// The real linker could not be started.
    #[error("cannot run the linker {linker:?}: {source} (set {ENV_LINKER} to choose another)")]
    Linker { linker: String, source: std::io::Error },
}

/// Instruments and links; returns the real linker's exit code.
pub fn run(args: &[OsString]) -> i32 {
    match link(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cargo-ergon (linker): {e}");
            1
        }
    }
}

fn link(args: &[OsString]) -> Result<i32, LinkError> {
    let scratch = tempfile::Builder::new().prefix("ergon-link").tempdir().map_err(LinkError::Scratch)?;
    let mut args = expand_response_files(args)?;
    let cpu = plugin_cpu(&args).unwrap_or_else(|| "x86-64".into());
    // The plugin options were meant for an LTO linker plugin; no bitcode is left for one.
    args.retain(|a| !a.to_string_lossy().starts_with("-Wl,-plugin-opt"));
    let defaults = Options::default();
    let options = Options {
        cpu,
        before: std::env::var(ENV_BEFORE).unwrap_or(defaults.before),
        after: std::env::var(ENV_AFTER).unwrap_or(defaults.after),
    };
    let cache = std::env::var_os(ENV_CACHE).map(PathBuf::from);
    let instrumenter = Instrumenter { options, cache };

    let mut rewritten = Vec::with_capacity(args.len());
    for (i, arg) in args.into_iter().enumerate() {
        let path = Path::new(&arg);
        let replacement = if has_extension(path, &["o"]) && path.is_file() {
            instrumenter.object(path, scratch.path(), i)?
        } else if has_extension(path, &["rlib", "a"]) && path.is_file() {
            instrumenter.archive(path, scratch.path(), i)?
        } else {
            None
        };
        rewritten.push(replacement.map_or(arg, PathBuf::into_os_string));
    }

    let linker = std::env::var_os(ENV_LINKER).unwrap_or_else(|| "cc".into());
    let response = scratch.path().join("link-args");
    std::fs::write(&response, response_file(&rewritten))
        .map_err(|e| LinkError::Input { path: response.clone(), detail: e.to_string() })?;
    let mut at = OsString::from("@");
    at.push(&response);
    let status = Command::new(&linker)
        .arg(at)
        .status()
        .map_err(|source| LinkError::Linker { linker: linker.to_string_lossy().into_owned(), source })?;
    Ok(status.code().unwrap_or(1))
}

struct Instrumenter {
    options: Options,
    cache: Option<PathBuf>,
}

impl Instrumenter {
    /// An instrumented copy of a bitcode object, or `None` for native code.
    fn object(&self, path: &Path, scratch: &Path, index: usize) -> Result<Option<PathBuf>, LinkError> {
        let bytes = read(path)?;
        if !is_bitcode(&bytes) {
            return Ok(None);
        }
        let native = self.native(&bytes, &path.display().to_string())?;
        let out = scratch.join(format!("{index}-{}", file_name(path)));
        write(&out, &native)?;
        Ok(Some(out))
    }

    /// A copy of an archive whose bitcode members are instrumented, or `None` if it holds none.
    fn archive(&self, path: &Path, scratch: &Path, index: usize) -> Result<Option<PathBuf>, LinkError> {
        let bytes = read(path)?;
        let bad = |detail: String| LinkError::Input { path: path.into(), detail };
        let archive = object::read::archive::ArchiveFile::parse(&*bytes).map_err(|e| bad(format!("not an archive: {e}")))?;
        let mut members = Vec::new();
        let mut any_bitcode = false;
        for member in archive.members() {
            let member = member.map_err(|e| bad(e.to_string()))?;
            let name = String::from_utf8_lossy(member.name()).into_owned();
            let data = member.data(&*bytes).map_err(|e| bad(e.to_string()))?;
            let data = if is_bitcode(data) {
                any_bitcode = true;
                self.native(data, &format!("{}({name})", path.display()))?
            } else {
                data.to_vec()
            };
            members.push((name, data));
        }
        if !any_bitcode {
            return Ok(None);
        }
        let new_members: Vec<_> = members
            .iter()
            .map(|(name, data)| ar_archive_writer::NewArchiveMember::new(data, &ar_archive_writer::DEFAULT_OBJECT_READER, name.clone()))
            .collect();
        let mut out = Cursor::new(Vec::new());
        ar_archive_writer::write_archive_to_stream(&mut out, &new_members, ar_archive_writer::ArchiveKind::Gnu, false, None)
            .map_err(|e| bad(format!("cannot rewrite the archive: {e}")))?;
        let out_path = scratch.join(format!("{index}-{}", file_name(path)));
        write(&out_path, out.get_ref())?;
        Ok(Some(out_path))
    }

    /// Native code for one bitcode module, from the cache when the same module was instrumented
    /// with the same options before.
    fn native(&self, bitcode: &[u8], input: &str) -> Result<Vec<u8>, LinkError> {
        let key = self.cache.as_ref().map(|dir| {
            let mut h = Sha256::new();
            h.update(env!("CARGO_PKG_VERSION"));
            // A rebuilt pass may count differently: its own build time is part of the key.
            let built = std::env::current_exe().and_then(std::fs::metadata).and_then(|m| m.modified()).ok();
            h.update(format!("{built:?}"));
            h.update(format!("{:?}", self.options));
            h.update(bitcode);
            dir.join(format!("{}.o", hex(&h.finalize())))
        });
        if let Some(hit) = key.as_ref().and_then(|k| std::fs::read(k).ok()) {
            return Ok(hit);
        }
        let (native, _) = instrument_bytes(bitcode, Path::new(input), Emit::Obj, &self.options)
            .map_err(|source| LinkError::Instrument { input: input.into(), source })?;
        if let Some(key) = key {
            // A cache that cannot be written only costs time on the next link.
            let _ = key.parent().map(std::fs::create_dir_all);
            let _ = module_io::write_atomically(&key, &native);
        }
        Ok(native)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|e| LinkError::Input { path: path.into(), detail: e.to_string() })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LinkError> {
    std::fs::write(path, bytes).map_err(|e| LinkError::Input { path: path.into(), detail: e.to_string() })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e))
}

/// The CPU rustc asked the LTO plugin to generate code for (`-plugin-opt=mcpu=…`).
fn plugin_cpu(args: &[OsString]) -> Option<String> {
    args.iter().find_map(|a| {
        let a = a.to_string_lossy();
        a.split(',').find_map(|part| part.strip_prefix("-plugin-opt=mcpu=").or_else(|| part.strip_prefix("-Wl,-plugin-opt=mcpu=")).map(str::to_string))
    })
}

/// Replaces `@file` arguments by the arguments the file holds (rustc writes one when the command
/// line is too long: one argument per line, with `\` escaping backslashes and spaces).
fn expand_response_files(args: &[OsString]) -> Result<Vec<OsString>, LinkError> {
    let mut out = Vec::new();
    for arg in args {
        match arg.to_str().and_then(|a| a.strip_prefix('@')) {
            Some(file) => {
                let path = Path::new(file);
                let text = std::fs::read_to_string(path).map_err(|e| LinkError::Input { path: path.into(), detail: e.to_string() })?;
                out.extend(text.lines().map(|line| OsString::from(unescape(line))));
            }
            None => out.push(arg.clone()),
        }
    }
    Ok(out)
}

fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Arguments in the response-file format `cc` reads: one per line, escaped.
fn response_file(args: &[OsString]) -> String {
    let mut text = String::new();
    for arg in args {
        for c in arg.to_string_lossy().chars() {
            if matches!(c, '\\' | ' ' | '\'' | '"' | '\t') {
                text.push('\\');
            }
            text.push(c);
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_files_round_trip() {
        let args: Vec<OsString> = ["-o", "/tmp/a dir/out", r"C:\x", "-Wl,--as-needed"].iter().map(OsString::from).collect();
        let text = response_file(&args);
        let back: Vec<OsString> = text.lines().map(|l| OsString::from(unescape(l))).collect();
        assert_eq!(back, args);
    }

    #[test]
    fn the_plugin_cpu_is_found() {
        let args = vec![OsString::from("-Wl,-plugin-opt=O3,-plugin-opt=mcpu=znver3")];
        assert_eq!(plugin_cpu(&args).as_deref(), Some("znver3"));
        assert_eq!(plugin_cpu(&[]), None);
    }
}
