//! `kiln check`: parse and check a Kilnfile or Dockerfile, report diagnostics.

use std::collections::BTreeMap;
use std::process::ExitCode;

use kiln_frontend::{Diagnostics, Options};

/// Check a Kilnfile for errors without building anything
///
/// Parses the Kilnfile, checks every binding, step and option, and reports
/// each problem as `file:line:col` with the source line, a caret under the
/// spot and a `help:` line saying what to do. Exits 0 when there are no
/// errors (warnings are still shown) and 1 otherwise. Nothing is built,
/// pulled or read besides the Kilnfile itself.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: super::args::BuildFileArgs,

    #[command(flatten)]
    pub target: super::args::TargetArg,

    /// Make the lints' warnings (root user, unpinned base, could ship on
    /// `static_base()`) errors
    #[arg(long)]
    pub strict: bool,
}

/// Reports the seeds' lints of `def` (`kiln_frontend::lint`), errors under
/// `strict`; true when one is an error.
pub fn lints(
    file: &super::buildfile::BuildFile,
    def: &kiln_frontend::Definition,
    strict: bool,
    json: bool,
) -> bool {
    let dockerfile = file.kind == super::buildfile::Kind::Dockerfile;
    // a tag the build file's lock pins is not unpinned
    let lock = super::lock::load(file).ok().flatten();
    let locked = |reference: &str| {
        let r = kiln_registry::Reference::parse(reference).map(|r| r.normalized().to_string());
        lock.as_ref()
            .zip(r.ok())
            .is_some_and(|(l, r)| l.image(&r).is_some())
    };
    let mut found =
        kiln_frontend::lint::lint_locked(&file.name, &file.text, def, dockerfile, &locked);
    if strict {
        for d in &mut found {
            d.severity = kiln_frontend::Severity::Error;
        }
    }
    let diags = Diagnostics::new(&file.name, std::sync::Arc::from(file.text.as_str()), found);
    if json {
        report_json(&diags);
    } else {
        report(&diags);
    }
    diags.has_errors()
}

pub use super::buildfile::LoadError;

/// `NAME=VALUE` pairs; a bare `NAME` takes the environment's value, as
/// `docker build` does (and is skipped when the variable is unset).
pub fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>, LoadError> {
    let mut out = BTreeMap::new();
    for a in args {
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), std::env::var(a).ok()),
        };
        if k.is_empty() {
            return Err(LoadError::BuildArg { arg: a.clone() });
        }
        if let Some(v) = v {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// Writes every diagnostic to stderr through miette's handler.
pub fn report(diags: &Diagnostics) {
    use std::fmt::Write as _;
    for (d, located) in diags.items.iter().zip(diags.located()) {
        let mut out = String::new();
        // A renderer that fails must not become a panic inside `eprintln!`.
        if write!(out, "{:?}", miette::Report::new(located)).is_err() {
            out = diags.summary_of(d);
        }
        eprintln!("{out}");
    }
}

/// Every diagnostic as one JSON object per line on stderr, for
/// `--progress json` (where every line of stderr is an event).
pub fn report_json(diags: &Diagnostics) {
    let idx = kiln_frontend::span::LineIndex::new(&diags.source);
    for d in &diags.items {
        let location = d.span.map(|s| {
            let lc = idx.line_col(&diags.source, s.start as usize);
            format!("{}:{}:{}", diags.file_name, lc.line, lc.col)
        });
        let event = serde_json::json!({
            "event": "diagnostic",
            "severity": if d.is_error() { "error" } else { "warning" },
            "code": d.code,
            "message": d.message,
            "location": location,
            "help": d.help,
        });
        eprintln!("{event}");
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let file = super::buildfile::load(args.input.file.as_deref(), &args.input.context)?;
    let name = &file.name;
    let opts = Options {
        target: args.target.target,
        build_args: parse_build_args(&args.input.build_args)?,
        platform: None,
        build_platform: None,
        ..Default::default()
    };
    // One pass: compiling reports what checking does, and gives the
    // lowered graph the lints read (nothing is pulled: a Dockerfile's bases
    // are not looked up).
    let compiled = match file.compile(&opts, &kiln_dockerfile::NoBaseImages) {
        Ok(c) => c,
        Err(diags) => {
            report(&diags);
            let n = diags.errors().count();
            eprintln!("error: {name}: {n} error{}", if n == 1 { "" } else { "s" });
            return Ok(ExitCode::FAILURE);
        }
    };
    report(&compiled.warnings);
    if lints(&file, &compiled.definition, args.strict, false) {
        eprintln!("error: {name}: lint errors");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
