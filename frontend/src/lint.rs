//! The seeds' lints, on the lowered graph so a Kilnfile and a Dockerfile
//! get the same ones: each finding is placed at the vertex's `Meta`
//! location and says what to do.
//!
//! - `lint::run-without-shell` (error): a step runs on a distroless-style
//!   base (`gcr.io/distroless/*`, `cgr.dev/chainguard/static`), which has
//!   no `/bin/sh` or any program to run. (`scratch` and `static_base()`
//!   are refused by each frontend already, and so is a Kilnfile's
//!   `image(..)` of such a base, through `no_shell`.)
//! - `lint::root-user` (warning): the image runs as root: no user set, or
//!   `root`/`0`, on a base not known to set a non-root user.
//! - `lint::unpinned-base` (warning): a base image by tag, not digest.
//! - `lint::could-be-static` (warning, a hint): the final stage starts
//!   from a full image (with a shell and a package manager) but runs
//!   nothing in it, so it could ship on `static_base()`.

use std::collections::HashMap;

use kiln_dag::{Definition, Digest, Location, Op, SourceOp};

use crate::diag::Diagnostic;
use crate::span::Span;

/// Bases with no shell or any program (besides `scratch`/`static_base()`).
pub(crate) fn no_shell(reference: &str) -> bool {
    let name = reference.split(['@', ':']).next().unwrap_or(reference);
    reference.starts_with("gcr.io/distroless/")
        || name == "cgr.dev/chainguard/static"
        || reference.starts_with("cgr.dev/chainguard/static:")
        || reference.starts_with("cgr.dev/chainguard/static@")
}

/// Bases known to set a non-root user.
fn non_root_base(op: &Op) -> bool {
    match op {
        Op::Source(SourceOp::StaticBase { .. }) => true,
        Op::Source(SourceOp::Image { reference, .. }) => {
            reference.contains(":nonroot")
                || reference.contains("-nonroot")
                || reference.starts_with("cgr.dev/chainguard/")
        }
        _ => false,
    }
}

fn is_root(user: &str) -> bool {
    let u = user.split(':').next().unwrap_or(user);
    u.is_empty() || u == "root" || u == "0"
}

/// The byte span of a location's line and column in `src` (one character).
fn span_at(src: &str, loc: &Location) -> Option<Span> {
    let mut start = 0usize;
    for (i, line) in src.split_inclusive('\n').enumerate() {
        if i + 1 == loc.line as usize {
            let col = (loc.column as usize).saturating_sub(1);
            let off = line
                .char_indices()
                .nth(col)
                .map_or(line.trim_end_matches('\n').len(), |(o, _)| o);
            let at = start + off;
            let end = line[off..]
                .find(char::is_whitespace)
                .map_or(start + line.len(), |e| at + e.max(1));
            return Some(Span::new(at, end));
        }
        start += line.len();
    }
    None
}

fn placed(
    src: &str,
    file: &str,
    error: bool,
    code: &'static str,
    loc: Option<&Location>,
    message: String,
) -> Diagnostic {
    match loc.filter(|l| l.file == file).and_then(|l| span_at(src, l)) {
        Some(span) if error => Diagnostic::error(code, span, message),
        Some(span) => Diagnostic::warning(code, span, message),
        None => {
            let mut d = Diagnostic::global(code, message);
            if !error {
                d.severity = crate::Severity::Warning;
            }
            d
        }
    }
}

/// The lints of `def`, built from the file `file` with text `src`;
/// `dockerfile` picks the wording of the fixes.
pub fn lint(file: &str, src: &str, def: &Definition, dockerfile: bool) -> Vec<Diagnostic> {
    lint_locked(file, src, def, dockerfile, &|_| false)
}

/// [`lint`] where `locked(reference)` says a lock file pins that tag (such
/// a base is not reported as unpinned).
pub fn lint_locked(
    file: &str,
    src: &str,
    def: &Definition,
    dockerfile: bool,
    locked: &dyn Fn(&str) -> bool,
) -> Vec<Diagnostic> {
    let by_digest: HashMap<Digest, &kiln_dag::Vertex> =
        def.vertices.iter().map(|v| (v.digest, v)).collect();
    let mut out = Vec::new();
    // Steps on a base with no shell.
    for v in &def.vertices {
        let Op::Exec(e) = &v.op else { continue };
        let base = e
            .config_from
            .and_then(|i| v.inputs.get(i))
            .and_then(|d| by_digest.get(d));
        if let Some(b) = base
            && let Op::Source(SourceOp::Image { reference, .. }) = &b.op
            && no_shell(reference)
        {
            let fix = if dockerfile {
                "run the command in a builder stage and `COPY --from=builder` its output into this one"
            } else {
                "run the command in a builder stage and `.copy(builder.path(\"/out\"), \"/dest\")` its output here"
            };
            out.push(
                placed(
                    src,
                    file,
                    true,
                    "lint::run-without-shell",
                    v.meta.location.as_ref(),
                    format!("a step runs on `{reference}`, which has no `/bin/sh` or any program to run it"),
                )
                .help(fix),
            );
        }
    }
    // Base images by tag.
    for v in &def.vertices {
        if let Op::Source(SourceOp::Image { reference, .. }) = &v.op
            && !reference.contains("@sha256:")
            && !locked(reference)
        {
            out.push(
                placed(
                    src,
                    file,
                    false,
                    "lint::unpinned-base",
                    v.meta.location.as_ref(),
                    format!("`{reference}` is referenced by tag: the build changes when the tag moves"),
                )
                .help(format!(
                    "pin it by digest (`{reference}@sha256:...`, `kiln pull` prints it) or record it with `kiln lock`"
                )),
            );
        }
    }
    let base = by_digest.get(&def.config_from);
    let base_loc = base.and_then(|b| b.meta.location.as_ref());
    // Root at run time.
    let user = def.config.user.as_deref();
    let root = match user {
        Some(u) => is_root(u),
        None => !base.is_some_and(|b| non_root_base(&b.op)),
    };
    if root {
        let (fix, what) = if dockerfile {
            (
                "add `USER 65532:65532` (or a named non-root user the image has) at the end of the final stage",
                "USER",
            )
        } else {
            (
                "add `.user(\"65532:65532\")` (or a named non-root user the image has) to the final stage",
                ".user",
            )
        };
        let message = match user {
            Some(u) => format!("the image runs as root (`{what} {u}`)"),
            None => "the image runs as root: no user is set".to_string(),
        };
        out.push(placed(src, file, false, "lint::root-user", base_loc, message).help(fix));
    }
    // A final stage that could be static_base().
    if let Some(b) = base
        && let Op::Source(SourceOp::Image { reference, .. }) = &b.op
        && !no_shell(reference)
    {
        // Walk the final chain (first inputs) back to its base.
        let mut runs = false;
        let mut cur = by_digest.get(&def.root);
        while let Some(v) = cur {
            if v.digest == b.digest {
                break;
            }
            if matches!(v.op, Op::Exec(_)) {
                runs = true;
                break;
            }
            cur = v.inputs.first().and_then(|d| by_digest.get(d));
        }
        if !runs {
            let fix = if dockerfile {
                "if what you copy in is static, start the final stage `FROM gcr.io/distroless/static` (or convert with `kiln convert` and use `static_base()`)"
            } else {
                "if what you copy in is static, start the final stage from `static_base()`"
            };
            out.push(
                placed(
                    src,
                    file,
                    false,
                    "lint::could-be-static",
                    base_loc,
                    format!("the final image keeps the shell and package manager of `{reference}` but runs nothing in them"),
                )
                .help(fix),
            );
        }
    }
    out
}
