//! The Kilnfile frontend: lexer, parser, checker and lowering to `kiln-dag`.
//! It never panics, never prints and never touches the filesystem or network:
//! callers pass the text in and get a [`Compiled`] graph or [`Diagnostics`].
//!
//! ```
//! let src = r#"
//! let build = image("docker.io/library/debian:bookworm").run("echo hi > /out");
//! let app = static_base().copy(build.path("/out"), "/out");
//! "#;
//! let compiled = kiln_frontend::compile("Kilnfile", src, &Default::default()).unwrap();
//! assert_eq!(compiled.target, "app");
//! assert_eq!(compiled.targets, ["build", "app"]);
//! ```
//!
//! [`lint`] holds the seeds' lints (a step on a distroless base, a root
//! user, a base by tag, a final stage that could be `static_base()`). They
//! read a lowered [`Definition`], so a Dockerfile (`kiln-dockerfile`) gets
//! the same ones; the CLI's `check` and `build` run them.

pub mod ast;
pub mod diag;
mod eval;

pub use eval::{did_you_mean, parse_duration};
pub mod lexer;
pub mod lint;
pub mod outline;
pub mod parser;
pub mod span;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use kiln_dag::{Definition, Platform, State};

/// Inputs are refused above this size (spans are 32-bit).
pub const MAX_SOURCE_LEN: usize = 64 << 20;

/// How to compile: which target, build arg values, default platform.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The binding to build; `None` means the last image binding.
    pub target: Option<String>,
    /// Values for `arg("NAME")`, overriding defaults.
    pub build_args: BTreeMap<String, String>,
    /// Platform for `image(..)` sources that do not name one.
    pub platform: Option<Platform>,
    /// The machine that runs the build (`build_platform()`, a Dockerfile's
    /// `BUILDPLATFORM`); `None` is this host. Tests set it so that graphs
    /// pinned by snapshots do not depend on the host's architecture.
    pub build_platform: Option<Platform>,
    /// `--add-host`, `--ulimit`, `--shm-size`: given to every `run` step.
    pub run: kiln_dag::RunSettings,
}

/// A compiled target.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The selected target's name.
    pub target: String,
    /// Every target (top-level image binding) in file order.
    pub targets: Vec<String>,
    /// The selected target's graph.
    pub definition: Definition,
    /// The selected target as a `State`, for further lowering (e.g. LLB).
    pub state: State,
    /// The `// syntax=` directive, if any.
    pub syntax: Option<String>,
    /// Warnings (never errors).
    pub warnings: Diagnostics,
}

/// Parse only: the tree and the syntax diagnostics.
pub fn parse(src: &str) -> (ast::File, Vec<Diagnostic>) {
    parser::parse(src)
}

struct Checked {
    file: ast::File,
    targets: Vec<(String, span::Span, State)>,
    selected: Option<usize>,
    diags: Vec<Diagnostic>,
}

fn run(file_name: &str, src: &str, opts: &Options, names: bool) -> Checked {
    if src.len() > MAX_SOURCE_LEN {
        let d = Diagnostic::global(
            "kiln::too-large",
            format!("the Kilnfile is larger than {} MiB", MAX_SOURCE_LEN >> 20),
        )
        .help("split the build or generate a smaller file");
        return Checked {
            file: ast::File {
                syntax: None,
                items: Vec::new(),
            },
            targets: Vec::new(),
            selected: None,
            diags: vec![d],
        };
    }
    let (file, mut diags) = parser::parse(src);
    let evaluated = eval::Eval::new(file_name, src, opts, names).run(&file);
    diags.extend(evaluated.diags);
    let targets = evaluated.targets;
    let names: Vec<&str> = targets.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut selected = None;
    match &opts.target {
        Some(t) => match names.iter().position(|n| n == t) {
            Some(i) => selected = Some(i),
            None => {
                let list = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                };
                let help = match eval::did_you_mean(t, names.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`? targets in this Kilnfile: {list}"),
                    None => format!("targets in this Kilnfile: {list}"),
                };
                diags.push(
                    Diagnostic::global("kiln::unknown-target", format!("unknown target `{t}`"))
                        .help(help),
                );
            }
        },
        None if names.is_empty() => {
            // Only worth saying when nothing else went wrong.
            if !diags.iter().any(Diagnostic::is_error) {
                diags.push(
                    Diagnostic::global("kiln::no-target", "this Kilnfile defines no image to build").help(
                        "bind an image at the top level, e.g. `let app = static_base().copy(context().path(\"app\"), \"/app\");`",
                    ),
                );
            }
        }
        None => selected = Some(names.len() - 1),
    }
    Checked {
        file,
        targets,
        selected,
        diags,
    }
}

/// Parse and check: every error and warning, in source order.
pub fn check(file_name: &str, src: &str, opts: &Options) -> Diagnostics {
    let checked = run(file_name, src, opts, false);
    Diagnostics::new(file_name, Arc::from(src), checked.diags)
}

/// Compile a Kilnfile to the graph of one target. Errors (with any warnings)
/// come back as `Err`; warnings of a successful compile are in `Compiled`.
pub fn compile(file_name: &str, src: &str, opts: &Options) -> Result<Compiled, Diagnostics> {
    let checked = run(file_name, src, opts, true);
    let source: Arc<str> = Arc::from(src);
    let has_errors = checked.diags.iter().any(Diagnostic::is_error);
    let diags = Diagnostics::new(file_name, source, checked.diags);
    let Some(i) = checked.selected.filter(|_| !has_errors) else {
        return Err(diags);
    };
    let (name, _, state) = &checked.targets[i];
    Ok(Compiled {
        target: name.clone(),
        targets: checked.targets.iter().map(|(n, _, _)| n.clone()).collect(),
        definition: state.definition(),
        state: state.clone(),
        syntax: checked.file.syntax.map(|s| s.value),
        warnings: diags,
    })
}
