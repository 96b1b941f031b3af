//! The Dockerfile frontend: BuildKit's `dockerfile:1` syntax lowered to the
//! same `kiln-dag` graph a Kilnfile gives, so the cache, outputs, secrets,
//! cache mounts, `--target`, `--build-arg` and `--platform` work the same.
//!
//! Parsing is `parse-dockerfile`'s (directives, continuations, heredocs,
//! JSON and shell forms); this crate adds what BuildKit's dispatcher does:
//! variable expansion on the instructions that expand (`shell.rs`), ARG
//! scoping and the automatic platform args, stages by name and index, and
//! the lowering of each instruction (`lower.rs`, `run.rs`, `copy.rs`).
//! Like the Kilnfile frontend it never panics, prints or touches the
//! filesystem or network: what it needs to know of a base image (its
//! environment and working directory, which `ENV PATH=/x:$PATH` and a
//! relative `WORKDIR` read) comes through [`BaseImages`], which the caller
//! answers from its store or a registry.
//!
//! What kiln cannot do yet is a located error that says so, never ignored.
//!
//! [`convert`] (`convert.rs`) writes a Dockerfile out as an idiomatic
//! Kilnfile that lowers to the same graph (`kiln convert`).

mod convert;
mod copy;
mod lower;
mod outline;
mod run;
pub mod shell;
mod text;

use std::sync::Arc;

pub use convert::{Converted, convert};
use kiln_frontend::{Compiled, Diagnostic, Diagnostics, Options};
pub use kiln_frontend::{Platform, State};
pub use outline::outline;

/// What the frontend asks of a base image named by `FROM`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseConfig {
    /// `KEY=VALUE` as in the image config.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// The image's `ONBUILD` triggers, which a stage built on it must run.
    pub onbuild: Vec<String>,
}

/// Answers [`BaseConfig`] for an image reference (normalized) and platform:
/// `Ok(None)` when it is not looked up (the expansion then sees no
/// variables of the base, as with `kiln check`), `Err` with the reason when
/// the lookup failed (a located error at the `FROM`).
pub trait BaseImages {
    fn config(&self, reference: &str, platform: &Platform) -> Result<Option<BaseConfig>, String>;
}

/// No base image is known: for checks that must not reach a registry.
pub struct NoBaseImages;

impl BaseImages for NoBaseImages {
    fn config(&self, _: &str, _: &Platform) -> Result<Option<BaseConfig>, String> {
        Ok(None)
    }
}

/// Whether `text` is a Dockerfile rather than a Kilnfile: its first line
/// that is neither blank nor a `#` comment or directive starts with a
/// Dockerfile instruction. A Kilnfile's comments are `//` and its first
/// item is a `let`, so the two never overlap.
pub fn looks_like_dockerfile(text: &str) -> bool {
    const INSTRUCTIONS: &[&str] = &[
        "FROM",
        "ARG",
        "RUN",
        "COPY",
        "ADD",
        "ENV",
        "LABEL",
        "WORKDIR",
        "USER",
        "CMD",
        "ENTRYPOINT",
        "EXPOSE",
        "VOLUME",
        "SHELL",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "ONBUILD",
        "MAINTAINER",
    ];
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let word = t.split(|c: char| c.is_whitespace()).next().unwrap_or("");
        return INSTRUCTIONS.iter().any(|i| i.eq_ignore_ascii_case(word));
    }
    false
}

/// Compiles a Dockerfile to the graph of one target stage (the last one
/// unless `opts.target` names another).
pub fn compile(
    file_name: &str,
    src: &str,
    opts: &Options,
    bases: &dyn BaseImages,
) -> Result<Compiled, Diagnostics> {
    // The parser's offsets count from after a byte order mark.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let source: Arc<str> = Arc::from(src);
    let out = lower::lower(file_name, src, opts, bases);
    let has_errors = out.diags.iter().any(Diagnostic::is_error);
    let diags = Diagnostics::new(file_name, source, out.diags);
    match out.selected {
        Some((name, state)) if !has_errors => Ok(Compiled {
            target: name,
            targets: out.targets,
            definition: state.definition(),
            state,
            syntax: out.syntax,
            warnings: diags,
        }),
        _ => Err(diags),
    }
}

/// Parses and checks: every error and warning, in source order.
pub fn check(file_name: &str, src: &str, opts: &Options, bases: &dyn BaseImages) -> Diagnostics {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let out = lower::lower(file_name, src, opts, bases);
    Diagnostics::new(file_name, Arc::from(src), out.diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_dockerfiles_from_kilnfiles() {
        assert!(looks_like_dockerfile(
            "# syntax=docker/dockerfile:1\n\nFROM x\n"
        ));
        assert!(looks_like_dockerfile("from x"));
        assert!(looks_like_dockerfile("ARG A=1\nFROM x"));
        assert!(!looks_like_dockerfile(
            "// syntax=k\nlet app = scratch();\n"
        ));
        assert!(!looks_like_dockerfile("let app = scratch();"));
        assert!(!looks_like_dockerfile(""));
    }
}
