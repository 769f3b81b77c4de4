//! The `RUSTC_WRAPPER` part: decides, per crate, what rustc should leave for the linker.

use std::ffi::{OsStr, OsString};
use std::process::Command;

use super::{selected, ENV_CRATES, ENV_LINKER, ENV_LINKER_ROLE};

/// What the wrapper changes in one rustc invocation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The arguments rustc gets.
    pub args: Vec<OsString>,
    /// The linker the user had chosen (`-C linker=`), to run after instrumenting.
    pub user_linker: Option<OsString>,
    /// Whether this crate is compiled to bitcode for instrumenting.
    pub instrumented: bool,
    /// Whether `cargo-ergon` is the linker of this invocation.
    pub links_through_us: bool,
}

/// Plans one rustc invocation: `args` as cargo gave them, `crates` the selection, `this` the
/// `cargo-ergon` executable.
pub fn plan(args: &[OsString], crates: &str, this: &OsStr) -> Plan {
    let probe = args.iter().any(|a| a.to_string_lossy().starts_with("--print"));
    let Some(crate_name) = value_of(args, "--crate-name").filter(|_| !probe) else {
        // `rustc -vV`, `--print`: cargo probing the compiler.
        return Plan { args: args.to_vec(), ..Plan::default() };
    };
    let proc_macro = values_of(args, "--crate-type").any(|t| t == "proc-macro");
    let build_script = crate_name.starts_with("build_script_");
    if proc_macro {
        // Loaded into rustc itself; left exactly as cargo built it.
        return Plan { args: args.to_vec(), ..Plan::default() };
    }
    let instrumented = !build_script && selected(crates, &crate_name);
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut user_linker = None;
    let mut i = 0;
    while i < args.len() {
        let (option, width) = codegen_option(args, i);
        match option.as_deref() {
            Some(o) if o.starts_with("linker=") => user_linker = Some(OsString::from(&o["linker=".len()..])),
            // Cross-crate LTO would merge instrumented and uninstrumented code; the pass works per crate.
            Some(o) if instrumented && (o == "lto" || o.starts_with("lto=")) => {}
            // cargo passes `embed-bitcode=no` when it does no LTO; bitcode objects need it on.
            Some(o) if instrumented && o.starts_with("embed-bitcode=") => {}
            // Replaced below by one unit.
            Some(o) if instrumented && o.starts_with("codegen-units=") => {}
            _ => out.extend(args[i..i + width].iter().cloned()),
        }
        i += width;
    }
    if instrumented {
        // With LTO in view, rustc no longer copies `#[inline]` functions into every codegen
        // unit, so with several units Vec and iterator methods stay calls and loops stop
        // vectorising. One unit keeps them local, as a normal release build has them.
        out.extend(["-C".into(), "linker-plugin-lto".into(), "-C".into(), "codegen-units=1".into()]);
    }
    let mut linker = OsString::from("linker=");
    linker.push(this);
    out.extend(["-C".into(), linker]);
    Plan { args: out, user_linker, instrumented, links_through_us: true }
}

/// Runs rustc as planned; returns its exit code.
pub fn run(rustc: &OsStr, args: &[OsString]) -> i32 {
    let crates = std::env::var(ENV_CRATES).unwrap_or_default();
    let this = match std::env::current_exe() {
        Ok(p) => p.into_os_string(),
        Err(e) => {
            eprintln!("cargo-ergon: cannot find its own executable to act as the linker: {e}");
            return 1;
        }
    };
    let plan = plan(args, &crates, &this);
    let mut cmd = Command::new(rustc);
    cmd.args(&plan.args);
    if plan.links_through_us {
        cmd.env(ENV_LINKER_ROLE, "1");
        if let Some(linker) = &plan.user_linker {
            cmd.env(ENV_LINKER, linker);
        }
    }
    match cmd.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("cargo-ergon: cannot run {}: {e}", rustc.to_string_lossy());
            1
        }
    }
}

/// The `-C` option at `args[i]` (`-C k=v`, `-Ck=v` or `--codegen k=v`) and how many arguments it
/// spans; `(None, 1)` for any other argument.
fn codegen_option(args: &[OsString], i: usize) -> (Option<String>, usize) {
    let arg = args[i].to_string_lossy();
    if arg == "-C" || arg == "--codegen" {
        return match args.get(i + 1) {
            Some(v) => (Some(v.to_string_lossy().into_owned()), 2),
            None => (None, 1),
        };
    }
    if let Some(v) = arg.strip_prefix("-C").or_else(|| arg.strip_prefix("--codegen=")) {
        return (Some(v.to_string()), 1);
    }
    (None, 1)
}

fn values_of<'a>(args: &'a [OsString], flag: &'a str) -> impl Iterator<Item = String> + 'a {
    args.windows(2).filter(move |w| w[0] == flag).flat_map(|w| {
        w[1].to_string_lossy().split(',').map(str::to_string).collect::<Vec<_>>()
    })
}

fn value_of(args: &[OsString], flag: &str) -> Option<String> {
    values_of(args, flag).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn text(plan: &Plan) -> String {
        plan.args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn a_selected_crate_becomes_bitcode_and_links_through_us() {
        let plan = plan(
            &args("--crate-name actors --crate-type lib -C opt-level=3 -C embed-bitcode=no -Clto=fat -C codegen-units=16 -C linker=clang"),
            "actors",
            OsStr::new("/bin/cargo-ergon"),
        );
        assert!(plan.instrumented);
        assert_eq!(plan.user_linker.as_deref(), Some(OsStr::new("clang")));
        assert_eq!(text(&plan), "--crate-name actors --crate-type lib -C opt-level=3 -C linker-plugin-lto -C codegen-units=1 -C linker=/bin/cargo-ergon");
    }

    #[test]
    fn other_crates_keep_their_code_but_link_through_us() {
        let plan = plan(&args("--crate-name serde --crate-type lib -C embed-bitcode=no"), "actors", OsStr::new("/e"));
        assert!(!plan.instrumented);
        assert_eq!(text(&plan), "--crate-name serde --crate-type lib -C embed-bitcode=no -C linker=/e");
    }

    #[test]
    fn probes_proc_macros_and_build_scripts_are_left_alone() {
        let probe = plan(&args("- --crate-name ___ --print=file-names"), "*", OsStr::new("/e"));
        assert_eq!(probe.args, args("- --crate-name ___ --print=file-names"));
        let version = plan(&args("-vV"), "*", OsStr::new("/e"));
        assert_eq!(version.args, args("-vV"));
        let pm = plan(&args("--crate-name derive --crate-type proc-macro"), "*", OsStr::new("/e"));
        assert_eq!(pm.args, args("--crate-name derive --crate-type proc-macro"));
        let bs = plan(&args("--crate-name build_script_build --crate-type bin"), "*", OsStr::new("/e"));
        assert!(!bs.instrumented);
    }
}
