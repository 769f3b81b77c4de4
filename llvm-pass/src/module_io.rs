//! Reading modules, optimising them and writing bitcode or object code, with errors that name
//! the problem.

use std::path::Path;

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::OptimizationLevel;

use crate::{producer, PassError};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// LLVM bitcode.
    Bc,
    /// A native object file.
    Obj,
    /// Textual IR, for reading what the pass did.
    Ll,
}

/// The LLVM this library runs on, as `major.minor.patch`.
pub fn llvm_version() -> (u32, u32, u32) {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    // SAFETY: writes three integers.
    unsafe { llvm_sys::core::LLVMGetVersion(&mut major, &mut minor, &mut patch) };
    (major, minor, patch)
}

fn reader_version() -> String {
    let (major, minor, patch) = llvm_version();
    format!("LLVM {major}.{minor}.{patch}")
}

/// Whether `bytes` are LLVM bitcode (bare or in the wrapper Apple's tools write).
pub fn is_bitcode(bytes: &[u8]) -> bool {
    bytes.starts_with(b"BC\xC0\xDE") || bytes.starts_with(&[0xDE, 0xC0, 0x17, 0x0B])
}

/// Reads a module from a `.bc` or `.ll` file.
pub fn load<'ctx>(ctx: &'ctx Context, path: &Path) -> Result<Module<'ctx>, PassError> {
    let bytes = std::fs::read(path).map_err(|source| PassError::Read { path: path.into(), source })?;
    parse(ctx, &bytes, path)
}

/// Parses bitcode or textual IR and checks it (the pass walks its control flow, which must be
/// well formed); `path` names the input in errors.
pub fn parse<'ctx>(ctx: &'ctx Context, bytes: &[u8], path: &Path) -> Result<Module<'ctx>, PassError> {
    let module = parse_unchecked(ctx, bytes, path)?;
    module.verify().map_err(|e| PassError::Malformed { path: path.into(), detail: format!("it does not verify: {e}") })?;
    Ok(module)
}

fn parse_unchecked<'ctx>(ctx: &'ctx Context, bytes: &[u8], path: &Path) -> Result<Module<'ctx>, PassError> {
    if bytes.is_empty() {
        return Err(PassError::Empty { path: path.into() });
    }
    let name = path.display().to_string();
    let buffer = MemoryBuffer::create_from_memory_range_copy(bytes, &name);
    if is_bitcode(bytes) {
        return Module::parse_bitcode_from_buffer(&buffer, ctx).map_err(|message| {
            let producer = producer::producer(bytes);
            let ours = llvm_version().0;
            match producer {
                Some(producer) if producer::major_version(&producer) != Some(ours) => {
                    PassError::VersionMismatch { path: path.into(), producer, reader: reader_version() }
                }
                _ => PassError::Malformed { path: path.into(), detail: message.to_string() },
            }
        });
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(PassError::Malformed {
            path: path.into(),
            detail: "neither LLVM bitcode (no `BC` magic) nor textual IR (not UTF-8)".into(),
        });
    }
    ctx.create_module_from_ir(buffer)
        .map_err(|message| PassError::Malformed { path: path.into(), detail: message.to_string() })
}

/// A target machine for the module's own triple, as rustc configures it for executables
/// (position-independent code, the given CPU, full optimisation).
pub fn target_machine(module: &Module<'_>, cpu: &str) -> Result<TargetMachine, PassError> {
    Target::initialize_x86(&InitializationConfig::default());
    let triple = module.get_triple();
    let triple = if triple.as_str().to_bytes().is_empty() { TargetMachine::get_default_triple() } else { triple };
    let target = Target::from_triple(&triple).map_err(|e| PassError::Target {
        triple: triple_text(&triple),
        detail: format!("{e} (this build of ergon-instrument generates x86 code only)"),
    })?;
    target
        .create_target_machine(&triple, cpu, "", OptimizationLevel::Aggressive, RelocMode::PIC, CodeModel::Default)
        .ok_or_else(|| PassError::Target { triple: triple_text(&triple), detail: format!("LLVM could not create a machine for CPU {cpu:?}") })
}

fn triple_text(triple: &TargetTriple) -> String {
    triple.as_str().to_string_lossy().into_owned()
}

/// Runs an LLVM pass pipeline (`opt -passes=` syntax) over the module.
pub fn run_pipeline(module: &Module<'_>, machine: &TargetMachine, pipeline: &str) -> Result<(), PassError> {
    module
        .run_passes(pipeline, machine, PassBuilderOptions::create())
        .map_err(|e| PassError::Pipeline { pipeline: pipeline.into(), detail: e.to_string() })
}

/// Checks the module; a failure here is a bug in the pass, so nothing is written.
pub fn verify(module: &Module<'_>) -> Result<(), PassError> {
    module.verify().map_err(|e| PassError::Verify { detail: e.to_string() })
}

/// The module as bitcode or as an object file, in memory.
pub fn emit(module: &Module<'_>, machine: &TargetMachine, emit: Emit) -> Result<Vec<u8>, PassError> {
    Ok(match emit {
        Emit::Bc => module.write_bitcode_to_memory().as_slice().to_vec(),
        Emit::Ll => module.print_to_string().to_bytes().to_vec(),
        Emit::Obj => machine
            .write_to_memory_buffer(module, FileType::Object)
            .map_err(|e| PassError::Codegen { detail: e.to_string() })?
            .as_slice()
            .to_vec(),
    })
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file beside it, then renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PassError> {
    let fail = |source| PassError::Write { path: path.into(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        fail(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the output path names no file"))
    })?;
    let tmp = dir.join(format!(".{}.{}.tmp", file_name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}
